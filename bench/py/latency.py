#!/usr/bin/env python3
"""3a. Presence propagation latency, closed loop (one toggle in flight at a time).

alice/desk cycles available -> away -> unavailable (N toggles); the observer timestamps arrival.
  --observer self   : alice/observer (same account, priority -1)   [own-sessions tracking]
  --observer roster : watcher (alice on its roster, subscription both) [contact tracking]
  --impl slix|raw   : slixmpp client (independent library) or raw-socket floor (regex on bytes)
  --impl watch      : `imstatus watch --json` (--imstatus PATH) as a child process; the arrival
                      is when its JSON line comes out of its stdout pipe (JSON writing included)
  --impl pipe       : the floor of `watch`: the raw observer in a child process that writes one
                      line per marked presence to its stdout pipe, read the same way
Both ends live in this process and use CLOCK_MONOTONIC, so latency = recv_ns - send_ns (for
watch and pipe, the receive stamp is taken when this process reads the child's line).
Usage: latency.py prosody|ejabberd --observer self --impl slix --n 500 [--gap-ms 5] [--json out]
"""
import argparse, asyncio, json, os, re, statistics, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmpputil import SERVERS, make_client, pct
import rawxmpp

STATES = ['available', 'away', 'unavailable']  # default; bench/run.sh B1 uses --states away,available


async def slix_client(jid, dom, host, port, priority=None, roster=True):
    c = make_client(jid, 'pw')
    ready = asyncio.get_running_loop().create_future()
    async def on_start(_):
        if roster:
            await c.get_roster()
        if priority is None:
            c.send_presence()
        else:
            c.send_presence(ppriority=priority)
        ready.set_result(True)
    c.add_event_handler('session_start', on_start)
    c.add_event_handler('failed_auth', lambda e: ready.set_exception(PermissionError(jid)))
    c.connect(host, port)
    await asyncio.wait_for(ready, 30)
    return c


async def raw_client(user, dom, host, port, resource, priority=None, roster=True):
    c = await rawxmpp.connect(host, port)
    await c.login(dom, user, 'pw', resource)
    if roster:
        await c.roster_get()
    c.send("<presence><priority>%d</priority></presence>" % priority if priority is not None else "<presence/>")
    return c


RE_LINE_MARK = re.compile(rb"x (\d+) (\d+)")


async def pipe_child(dom, host, port):
    """The pipe floor's child: alice/observer (priority -1), one stdout line per marked presence."""
    out = sys.stdout.buffer
    obs = await raw_client('alice', dom, host, port, 'observer', priority=-1)
    def on_mark(kind, seq, t, r):
        if kind == b'x':
            out.write(b'x %d %d\n' % (seq, t))
            out.flush()
    obs.start_streaming(rawxmpp.PresenceScanner(on_mark=on_mark).feed)
    out.write(b'READY\n')
    out.flush()
    await obs.lost


async def child_observer(a, dom, host, port, on_mark):
    """Starts the child of --impl watch|pipe and a task that stamps its marked lines; returns
    (process, task) once the child reports it is ready."""
    if a.impl == 'watch':
        tmp = tempfile.mkdtemp(prefix='b1watch-')
        pw = os.path.join(tmp, 'alice.pw')
        with open(pw, 'w') as f:
            f.write('pw\n')
        os.chmod(pw, 0o600)
        cfg = os.path.join(tmp, 'config.toml')
        with open(cfg, 'w') as f:
            f.write('[[account]]\nname = "alice"\nsource = "xmpp"\njid = "alice@%s"\n'
                    'password_file = "%s"\nserver = "%s:%d"\ntls = "insecure-plaintext"\n'
                    % (dom, pw, host, port))
        cmd = [a.imstatus, '--config', cfg, 'watch', '--json']
        ready = b'"event":"snapshot"'
    else:
        cmd = [sys.executable, os.path.abspath(__file__), a.server, '--pipe-child']
        ready = b'READY'
    env = dict(os.environ, XDG_CONFIG_HOME='/nonexistent')
    env.pop('IMSTATUS_CONFIG', None)
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, env=env)
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError('%s ended before it was ready' % cmd[0])
        if ready in line:
            break
    async def read():
        while True:
            line = await proc.stdout.readline()
            now = time.monotonic_ns()
            if not line:
                return
            # The highest marker of the line (a status change also names the previous one).
            best = max(((int(m.group(1)), int(m.group(2))) for m in RE_LINE_MARK.finditer(line)),
                       default=None)
            if best is not None:
                on_mark('x', best[0], best[1], now)
    return proc, asyncio.ensure_future(read())


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('server', choices=SERVERS)
    ap.add_argument('--observer', choices=['self', 'roster'], default='self')
    ap.add_argument('--impl', choices=['slix', 'raw', 'watch', 'pipe'], default='slix')
    ap.add_argument('--imstatus', help='the imstatus binary, for --impl watch')
    ap.add_argument('--pipe-child', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--n', type=int, default=500)
    ap.add_argument('--gap-ms', type=float, default=5.0)
    ap.add_argument('--json')
    ap.add_argument('--states', default=','.join(STATES))
    a = ap.parse_args()
    states = a.states.split(',')
    dom, host, port = SERVERS[a.server]
    if a.pipe_child:
        await pipe_child(dom, host, port)
        return
    if a.impl in ('watch', 'pipe') and a.observer != 'self':
        ap.error('--impl watch|pipe measure the own-resource case only (--observer self)')
    if a.impl == 'watch' and not a.imstatus:
        ap.error('--impl watch needs --imstatus PATH')
    loop = asyncio.get_running_loop()
    pending = {}                    # seq -> future
    lat = []

    def on_mark(kind, seq, t_send, recv_ns):
        f = pending.pop(seq, None)
        if f is not None and not f.done():
            f.set_result(recv_ns)

    # observer
    if a.impl == 'slix':
        if a.observer == 'self':
            obs = await slix_client('alice@%s/observer' % dom, dom, host, port, priority=-1)
        else:
            obs = await slix_client('watcher@%s/lat' % dom, dom, host, port)
        def on_pres(p):
            if p['from'].resource != 'desk':
                return
            st = p['status']
            if st.startswith('x '):
                _, seq, ts = st.split()
                on_mark('x', int(seq), int(ts), time.monotonic_ns())
        obs.add_event_handler('presence', on_pres)
        desk = await slix_client('alice@%s/desk' % dom, dom, host, port)
        def send(state, seq):
            t = time.monotonic_ns()
            st = 'x %d %d' % (seq, t)
            if state == 'unavailable':
                desk.send_presence(ptype='unavailable', pstatus=st)
            elif state == 'away':
                desk.send_presence(pshow='away', pstatus=st)
            else:
                desk.send_presence(pstatus=st)
            return t
    else:
        child = None
        if a.impl in ('watch', 'pipe'):
            child = await child_observer(a, dom, host, port, on_mark)
            obs = None
        elif a.observer == 'self':
            obs = await raw_client('alice', dom, host, port, 'observer', priority=-1)
        else:
            obs = await raw_client('watcher', dom, host, port, 'lat')
        if obs is not None:
            sc = rawxmpp.PresenceScanner(on_mark=lambda k, s, t, r: on_mark(k, s, t, r) if k == b'x' else None)
            obs.start_streaming(sc.feed)
        desk = await raw_client('alice', dom, host, port, 'desk')
        desk.start_streaming(lambda d, t: None)
        def send(state, seq):
            t = time.monotonic_ns()
            st = 'x %d %d' % (seq, t)
            if state == 'unavailable':
                desk.send("<presence type='unavailable'><status>%s</status></presence>" % st)
            elif state == 'away':
                desk.send("<presence><show>away</show><status>%s</status></presence>" % st)
            else:
                desk.send("<presence><status>%s</status></presence>" % st)
            return t
    await asyncio.sleep(0.5)
    lost = 0
    per_state = {s: [] for s in states}
    for i in range(a.n):
        state = states[i % len(states)]
        f = loop.create_future(); pending[i] = f
        t = send(state, i)
        try:
            r = await asyncio.wait_for(f, 2.0)
            us = (r - t) / 1000.0
            lat.append(us); per_state[state].append(us)
        except asyncio.TimeoutError:
            lost += 1; pending.pop(i, None)
        await asyncio.sleep(a.gap_ms / 1000.0)
    lat.sort()
    res = {'server': a.server, 'observer': a.observer, 'impl': a.impl, 'n': a.n, 'lost': lost,
           'p50_us': pct(lat, 50), 'p90_us': pct(lat, 90), 'p99_us': pct(lat, 99), 'max_us': lat[-1] if lat else None,
           'mean_us': statistics.mean(lat) if lat else None,
           'per_state_p50_us': {s: pct(sorted(v), 50) for s, v in per_state.items()}}
    print(json.dumps(res))
    if a.json:
        with open(a.json, 'a') as f:
            f.write(json.dumps(res) + '\n')
    for c in (obs, desk):
        if c is None:
            continue
        try:
            c.disconnect() if a.impl == 'slix' else c.close()
        except Exception:
            pass
    if a.impl in ('watch', 'pipe'):
        proc, reader = child
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        reader.cancel()
    await asyncio.sleep(0.3)

if __name__ == '__main__':
    asyncio.run(main())
