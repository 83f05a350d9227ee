#!/usr/bin/env python3
"""B9 (bench/run.sh): flap storm with a broken watcher connection in the middle.

  b9_run.py prosody --server-pid PID --k 1000 --storm 50000 --impls imstatus,slix --runs 3

gen.py logs K contacts in once. Per watcher session (imstatus's bench/src/bin/xmpp_watcher.rs via
$IMSTATUS_WATCHER, or watcher.py --impl slix --reconnect): the watcher logs in as `watcher`, then
the storm is injected: a blast of 1..4 fifths of K (varying per session), then CHUNKS blasts,
back to back (sizes storm/CHUNKS + i*K/(CHUNKS+1)), so that the contacts end in different states, every contact cycling away -> xa -> dnd -> unavailable ->
available. When the watcher has received half of the storm (its 'P' total), the watcher's TCP
connection is destroyed under the live process with `ss -K` (the kernel aborts the socket and
resets the peer: Prosody ends the session at once, the watcher's next read fails); the watcher
has to notice and log in again by itself. After the storm (every blast sent, the watcher back and heard from since, then quiet
for QUIET s), the watcher is stopped and dumps its final contact states (--dump), which are
compared, contact by contact, with the last presence the generator sent to each of u0001..uK
(state and marker; 'unavailable' must be offline) and, for the other roster contacts, offline.
One 'FLAT {json}' line per session: mismatches, recovery_s (connection destroyed -> the watcher
synced again: imstatus's session known again, slixmpp's session_start), storm_s, delivered.
"""
import argparse, asyncio, json, os, subprocess, sys, time
sys.dont_write_bytecode = True  # importing ingest_run must not leave bench/py/__pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from xmpputil import SERVERS
from ingest_run import Gen, Watcher, PIDFILES

CYCLE = ['away', 'xa', 'dnd', 'unavailable', 'available']


def watcher_socket(pid, port):
    """The watcher process's TCP connection to the server: its local port."""
    out = subprocess.run(['ss', '-tnpH', 'state', 'established', 'dport = :%d' % port],
                         capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        if 'pid=%d,' % pid in line:
            return int(line.split()[2].rsplit(':', 1)[1])
    return None


def break_tcp(pid, port):
    lport = watcher_socket(pid, port)
    if lport is None:
        return None
    r = subprocess.run(['ss', '-K', '-tnH', 'sport = :%d and dport = :%d' % (lport, port)],
                       capture_output=True, text=True, timeout=10)
    return lport if r.returncode == 0 else None


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('server', choices=PIDFILES)
    ap.add_argument('--k', type=int, default=1000)
    ap.add_argument('--storm', type=int, default=50000)
    ap.add_argument('--chunks', type=int, default=4)
    ap.add_argument('--impls', default='imstatus,slix')
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--concurrency', type=int, default=50)
    ap.add_argument('--server-pid', type=int)
    ap.add_argument('--quiet', type=float, default=1.0)
    ap.add_argument('--timeout', type=float, default=90)
    ap.add_argument('--dir', default='/tmp')
    a = ap.parse_args()
    dom, _, port = SERVERS[a.server]
    g = Gen(); await g.start(a)
    t0 = time.monotonic()
    while 'login_done' not in g.ev:
        if g.p.returncode is not None or time.monotonic() - t0 > 300:
            sys.exit('gen.py did not log in')
        await asyncio.sleep(0.05)
    login = g.ev['login_done']
    print('login', json.dumps(login), flush=True)
    # What the generator last sent to each contact (gen.py's own bookkeeping, replayed here).
    idx = [0] * a.k
    last = [('available', 'l', i) for i in range(a.k)]
    letters = iter('abcdefghijkmnopqrstuvwxyz' * 8)
    sizes = [a.storm // a.chunks + (c + 1) * a.k // (a.chunks + 1) for c in range(a.chunks)]
    for run in range(1, a.runs + 1):
        for impl in a.impls.split(','):
            dump = os.path.join(a.dir, 'b9-%s-%d-%d.dump' % (impl, run, os.getpid()))
            extra = ['--dump', dump] + (['--reconnect'] if impl != 'imstatus' else [])
            w = Watcher(); await w.start(impl, a.server, dict(os.environ), extra)
            await asyncio.sleep(0.5)
            base = w.total
            # a leading blast of 1..4 fifths of K, varying per session, so that the contacts'
            # final states stay spread over the five states across sessions
            session = (run - 1) * len(a.impls.split(',')) + a.impls.split(',').index(impl)
            plan = [(session % 4 + 1) * a.k // 5] + sizes
            total = sum(plan)
            n_blast0 = sum(1 for e in g.log if e['ev'] == 'blast_sent')
            t_storm = time.monotonic_ns()
            for m in plan:
                kind = next(letters)
                await g.cmd('BLAST %d %s' % (m, kind))
                for j in range(m):
                    i = j % a.k
                    last[i] = (CYCLE[idx[i] % 5], kind, j)
                    idx[i] += 1
            # break the connection once the watcher has received half of the storm
            t_lim = time.monotonic() + a.timeout
            while w.total - base < total // 2 and time.monotonic() < t_lim:
                await asyncio.sleep(0.01)
            got_at_break = w.total - base
            t_break = time.monotonic_ns()
            lport = break_tcp(w.p.pid, port)
            # the watcher must come back by itself
            while lport and not any(ln.startswith('RECONNECTED') for _, ln in w.lines) and time.monotonic() < t_lim:
                await asyncio.sleep(0.01)
            # ... and hear from the server again (the presences it replays after the login)
            at_rec, t_rec = w.total, time.monotonic()
            while lport and w.total == at_rec and time.monotonic() - t_rec < 10 and time.monotonic() < t_lim:
                await asyncio.sleep(0.01)
            # the storm is over when every blast was sent and the watcher has been quiet
            await g.wait_ev('blast_sent', n_blast0 + len(plan), a.timeout)
            last_total, last_change = w.total, time.monotonic()
            while time.monotonic() - last_change < a.quiet and time.monotonic() < t_lim:
                await asyncio.sleep(0.05)
                if w.total != last_total:
                    last_total, last_change = w.total, time.monotonic()
            t_end = last_change
            await w.stop()
            rec = [ln for t, ln in w.lines if ln.startswith('RECONNECTED')]
            rec_ns = int(rec[0].split()[1]) if rec else None
            down = [ln for t, ln in w.lines if ln.startswith('DOWN')]
            down_ns = int(down[0].split()[1]) if down else None
            got = {}
            try:
                for ln in open(dump):
                    jid, state, msg = (ln.rstrip('\n').split('\t') + ['', ''])[:3]
                    got[jid] = (state, msg)
                os.unlink(dump)
            except OSError:
                pass
            mism, examples = 0, []
            for i in range(a.k):
                jid = 'u%04d@%s' % (i + 1, dom)
                st, kind, j = last[i]
                want = (st, '' if st == 'unavailable' else '%s %d ' % (kind, j))
                have = got.get(jid, ('missing', ''))
                if have[0] != want[0] or not have[1].startswith(want[1]):
                    mism += 1
                    if len(examples) < 5:
                        examples.append({'jid': jid, 'want': list(want), 'have': list(have)})
            def gen_contact(jid):
                return jid.startswith('u') and jid[1:5].isdigit() and int(jid[1:5]) <= a.k
            others = sum(1 for jid, (st, _) in got.items()
                         if st != 'unavailable' and not gen_contact(jid) and not jid.startswith('alice@'))
            f = {'impl': impl, 'run': run, 'k': a.k, 'storm': total, 'final_states': {s: sum(1 for i in range(a.k) if last[i][0] == s) for s in CYCLE},
                 'mismatches': mism + others, 'mismatch_examples': examples, 'dumped': len(got),
                 'broken': 1 if lport else 0, 'received_at_break': got_at_break,
                 'recovery_s': round((rec_ns - t_break) / 1e9, 4) if rec_ns and lport else None,
                 'detect_s': round((down_ns - t_break) / 1e9, 4) if down_ns and lport else None,
                 'reconnects': len(rec), 'storm_s': round((t_end * 1e9 - t_storm) / 1e9, 3) if t_end else None,
                 'received': w.total - base, 'valid': 1 if lport and got and not login['errors'] else 0}
            print('FLAT ' + json.dumps(f), flush=True)
            await asyncio.sleep(0.5)
    await g.quit()

if __name__ == '__main__':
    asyncio.run(main())
