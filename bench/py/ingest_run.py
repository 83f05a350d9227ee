#!/usr/bin/env python3
"""3b. Watcher ingest benchmark orchestrator (from shared/bench-reference/ingest_run.py).

  ingest_run.py prosody|ejabberd --impl slix|raw|imstatus --k 1000 --blast 20000 --rates 1000,2000,4000 --rate-secs 5
  ingest_run.py prosody --impls imstatus,raw,slix --runs 3 --k 1000 --blast 20000 --rates 1000,2000,4000 --rate-secs 3

Runs the watcher (process under test) and gen.py (raw-socket generator) as separate processes and
samples CPU seconds / RSS of watcher, generator and server from /proc at phase boundaries.
Phases: login (K contacts come online), blast (M changes injected at once -> drain throughput =
pipeline ceiling), rate ladder (open loop R/s for D s -> latency & CPU at a given load; stops when
the watcher can no longer keep up).

Additions for bench/run.sh (the reference behaviour is unchanged with --impl and no new option):
  --impl imstatus     the watcher is bench/src/bin/xmpp_watcher.rs ($IMSTATUS_WATCHER, the bench
                      executable), which honours the same READY / P / RESULT contract as watcher.py
  --server-pid PID    the server's PID (instead of the shared e2e-d pidfiles)
  --impls a,b --runs N  one generator for all: K contacts log in once, then each watcher in turn
                      (N rounds over the impls) logs in, gets the blasts and the rate ladder, and is
                      stopped. Every watcher session uses its own marker letters, so presences of an
                      earlier session that the server replays at login are not counted.
  --gap S             pause before each phase (default 1.0 s)
Every session prints 'RESULT {json}' and 'FLAT {json}' (the table's metrics, flat), including the
generator's validity per perf-baselines.md section 4 rule 2 (gen <= 50 % of a core in every phase,
rate_sent.secs <= 1.02 D, no login errors).
"""
import argparse, asyncio, json, os, signal, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from xmpputil import SERVERS, rss_kb, cpu_s

PIDFILES = {'prosody': '/tmp/e2e-d/prosody/prosody.pid', 'ejabberd': '/tmp/e2e-d/ejabberd/ejabberd.pid'}
# marker letters for the phases ('l' is the generator's login kind)
LETTERS = 'abcdefghijkmnopqrstuvwxyz'


def snap(pids):
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = (cpu_s(pid), rss_kb(pid))
        except Exception:
            out[name] = (float('nan'), 0)
    out['_t'] = time.monotonic_ns()
    return out


def delta(a, b):
    secs = (b['_t'] - a['_t']) / 1e9
    return {n: {'cpu_s': round(b[n][0] - a[n][0], 3), 'cpu_pct': round(100 * (b[n][0] - a[n][0]) / secs, 1),
                'rss_mb': round(b[n][1] / 1024, 1)} for n in a if n != '_t' and n in b} | {'wall_s': round(secs, 3)}


def watcher_cmd(impl, server, extra=()):
    if impl == 'imstatus':
        exe = os.environ.get('IMSTATUS_WATCHER')
        if not exe:
            sys.exit('--impl imstatus needs IMSTATUS_WATCHER (bench/src/bin/xmpp_watcher.rs, built)')
        dom, _, port = SERVERS[server]
        return [exe, '--port', str(port), '--domain', dom, *extra]
    return [sys.executable, os.path.join(HERE, 'watcher.py'), server, '--impl', impl, *extra]


class Gen:
    """gen.py as a subprocess: its JSON events, in order."""
    async def start(self, a):
        self.p = await asyncio.create_subprocess_exec(sys.executable, os.path.join(HERE, 'gen.py'), a.server, '--k', str(a.k),
                                                      '--concurrency', str(a.concurrency),
                                                      stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self.ev = {}
        self.log = []
        async def read():
            async for ln in self.p.stdout:
                e = json.loads(ln)
                self.ev[e['ev']] = e
                self.log.append(e)
        self.task = asyncio.create_task(read())

    async def cmd(self, line):
        self.p.stdin.write(line.encode() + b'\n'); await self.p.stdin.drain()

    async def wait_ev(self, name, count, timeout):
        t0 = time.monotonic()
        while sum(1 for e in self.log if e['ev'] == name) < count and time.monotonic() - t0 < timeout:
            await asyncio.sleep(0.02)
        evs = [e for e in self.log if e['ev'] == name]
        return evs[count - 1] if len(evs) >= count else None

    async def quit(self):
        await self.cmd('QUIT')
        await self.p.wait(); await self.task


class Watcher:
    async def start(self, impl, server, env, extra=()):
        self.t_spawn = time.monotonic_ns()
        self.p = await asyncio.create_subprocess_exec(*watcher_cmd(impl, server, extra), stdout=asyncio.subprocess.PIPE, env=env)
        line = (await asyncio.wait_for(self.p.stdout.readline(), 120)).decode().strip()
        assert line.startswith('READY'), line
        self.t_ready = time.monotonic_ns()
        self.ready = line
        self.prog = {}
        self.total = 0
        self.res = {}
        self.lines = []
        async def read():
            async for ln in self.p.stdout:
                ln = ln.decode().strip()
                if ln.startswith('P '):
                    f = ln.split()
                    self.total = int(f[1])
                    for kv in f[2:]:
                        k, v = kv.split('='); self.prog[k] = int(v)
                elif ln.startswith('RESULT '):
                    self.res.update(json.loads(ln[7:]))
                else:
                    self.lines.append((time.monotonic_ns(), ln))
        self.task = asyncio.create_task(read())

    async def wait_count(self, kind, n, timeout):
        t0 = time.monotonic(); last = -1; last_change = t0
        while self.prog.get(kind, 0) < n:
            now = time.monotonic()
            if self.prog.get(kind, 0) != last:
                last = self.prog.get(kind, 0); last_change = now
            if now - t0 > timeout or now - last_change > 15:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.p.wait(), 30)
        except asyncio.TimeoutError:
            self.p.kill(); await self.p.wait()
        await self.task


async def phases(a, g, w, pids, letters, result):
    """The blasts and the rate ladder against one running watcher; returns the per-kind records."""
    kinds = {}
    for b in range(a.blasts if a.blast else 0):
        await asyncio.sleep(a.gap)
        kind = next(letters)
        sa = snap(pids)
        await g.cmd('BLAST %d %s' % (a.blast, kind))
        ok = await w.wait_count(kind, a.blast, 180)
        sb = snap(pids)
        kinds[kind] = ('blast', a.blast, sa, sb, ok, await g.wait_ev('blast_sent', len([e for e in g.log if e['ev'] == 'blast_start']), 10))
    for r in [float(x) for x in a.rates.split(',') if x]:
        await asyncio.sleep(a.gap)
        kind = next(letters)
        m = int(r * a.rate_secs)
        sa = snap(pids)
        await g.cmd('RATE %g %g %s' % (r, a.rate_secs, kind))
        ok = await w.wait_count(kind, m, a.rate_secs + 30)
        sb = snap(pids)
        kinds[kind] = ('rate%g' % r, m, sa, sb, ok, await g.wait_ev('rate_sent', len([e for e in g.log if e['ev'] == 'rate_start']), a.rate_secs + 10))
        if not ok or w.prog.get(kind, 0) < m:
            break
    return kinds


def collect(kinds, wres, result, a):
    invalid = []
    for kind, (name, m, sa, sb, ok, gsent) in kinds.items():
        wk = wres.get(kind, {})
        n = wk.get('n', 0)
        span = (wk.get('last_recv', 0) - wk.get('first_send', 0)) / 1e9 if n else float('nan')
        recv_span = (wk.get('last_recv', 0) - wk.get('first_recv', 0)) / 1e9 if n else float('nan')
        ph = {'kind': kind, 'sent': m, 'recv': n, 'complete': ok, 'span_s': round(span, 3),
              'throughput_per_s': round(n / span, 0) if n else 0,
              'recv_rate_per_s': round(n / recv_span, 0) if n and recv_span > 0 else None,
              'recv_rate_mid80_per_s': round(wk['rate_mid80']) if wk.get('rate_mid80') else None,
              'lat_p50_us': wk.get('p50_us'), 'lat_p90_us': wk.get('p90_us'), 'lat_p99_us': wk.get('p99_us'), 'lat_max_us': wk.get('max_us'),
              'usage': delta(sa, sb)}
        for who in ('watcher', 'server', 'gen'):
            if n and who in ph['usage']:
                ph['usage'][who]['cpu_us_per_stanza'] = round(1e6 * ph['usage'][who]['cpu_s'] / n, 1)
        # perf-baselines.md section 4, rule 2
        if ph['usage'].get('gen', {}).get('cpu_pct', 0) > 50:
            invalid.append('%s: generator at %.0f %% of a core' % (name, ph['usage']['gen']['cpu_pct']))
        if name.startswith('rate'):
            if gsent is None:
                invalid.append('%s: no rate_sent from the generator' % name)
            elif gsent['secs'] > 1.02 * a.rate_secs:
                invalid.append('%s: rate_sent.secs %.3f > 1.02 x %g' % (name, gsent['secs'], a.rate_secs))
            ph['gen_secs'] = round(gsent['secs'], 3) if gsent else None
        if not ok:
            invalid.append('%s: incomplete (%d of %d received)' % (name, n, m))
        result['phases'][name + ('' if name not in result['phases'] else '_' + kind)] = ph
        print(name, json.dumps(ph), flush=True)
    return invalid


def flat(result):
    """The benchmark table's metrics (bench/parts/B4.cols.json)."""
    f = {'impl': result['impl'], 'k': result['k']}
    ph = result['phases']
    if 'blast' in ph:
        f['blast_per_s'] = ph['blast']['throughput_per_s']
        f['blast_drain_per_s'] = ph['blast']['recv_rate_per_s']
        f['blast_cpu_us'] = ph['blast']['usage']['watcher'].get('cpu_us_per_stanza')
    for name, p in ph.items():
        if name.startswith('rate'):
            r = int(float(name[4:]) / 1000)
            f['r%dk_per_s' % r] = round(p['recv'] / max(1e-9, p['usage']['wall_s']), 0) if p['recv'] else 0
            f['r%dk_p50_ms' % r] = round(p['lat_p50_us'] / 1000, 3) if p['lat_p50_us'] is not None else None
            f['r%dk_p99_ms' % r] = round(p['lat_p99_us'] / 1000, 3) if p['lat_p99_us'] is not None else None
            f['r%dk_cpu_pct' % r] = p['usage']['watcher']['cpu_pct']
            f['r%dk_cpu_us' % r] = p['usage']['watcher'].get('cpu_us_per_stanza')
    f['rss_mb'] = result.get('watcher_final_rss_mb')
    f['valid'] = 1 if result['valid'] else 0
    f['invalid'] = result.get('invalid', [])
    for k in ('resyncs', 'pending_offline', 'offline_counted'):
        if k in result.get('watcher_extra', {}):
            f[k] = result['watcher_extra'][k]
    f['watcher_ready'] = result.get('watcher_ready')
    return f


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('server', choices=PIDFILES)
    ap.add_argument('--impl', default='slix', choices=['slix', 'raw', 'imstatus'])
    ap.add_argument('--impls', help='comma-separated; one generator for all (see the module doc)')
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--k', type=int, default=1000)
    ap.add_argument('--blast', type=int, default=0)
    ap.add_argument('--blasts', type=int, default=1)
    ap.add_argument('--rates', default='')
    ap.add_argument('--rate-secs', type=float, default=5)
    ap.add_argument('--gap', type=float, default=1.0)
    ap.add_argument('--concurrency', type=int, default=50)
    ap.add_argument('--server-pid', type=int)
    ap.add_argument('--uvloop', action='store_true', help='run the slixmpp watcher on uvloop')
    ap.add_argument('--out')
    a = ap.parse_args()
    spid = a.server_pid or int(open(PIDFILES[a.server]).read().strip())
    env = dict(os.environ)
    if a.uvloop:
        env['WATCHER_UVLOOP'] = '1'

    if a.impls:
        await shared(a, spid, env)
        return

    result = {'server': a.server, 'impl': a.impl + ('+uvloop' if a.uvloop else ''), 'k': a.k, 'phases': {}}
    pids = {'server': spid}
    s_before = snap(pids)
    w = Watcher(); await w.start(a.impl, a.server, env)
    result['watcher_ready'] = w.ready
    pids['watcher'] = w.p.pid
    s0 = snap(pids)
    g = Gen(); await g.start(a)
    pids['gen'] = g.p.pid
    s0['gen'] = (0.0, 0)
    while 'login_done' not in g.ev:
        await asyncio.sleep(0.05)
    ok = await w.wait_count('l', a.k, 120)
    s1 = snap(pids)
    result['phases']['login'] = {'gen': g.ev['login_done'] | {'t': None}, 'watcher_got_all': ok, 'watcher_l': w.prog.get('l', 0),
                                 'usage': delta(s0, s1),
                                 'server_rss_per_session_kb': round((s1['server'][1] - s_before['server'][1]) / a.k, 1)}
    print('login', json.dumps(result['phases']['login']), flush=True)
    kinds = await phases(a, g, w, pids, iter(LETTERS), result)
    await g.quit()
    await asyncio.sleep(0.5)
    await w.stop()
    wres = w.res
    result['watcher_final_rss_mb'] = round(wres.get('rss_kb', 0) / 1024, 1)
    lk = wres.get('l', {})
    result['phases']['login']['watcher'] = {'n': lk.get('n'), 'span_s': round((lk.get('last_recv', 0) - lk.get('first_send', 0)) / 1e9, 3),
                                            'p50_us': lk.get('p50_us'), 'p99_us': lk.get('p99_us')}
    invalid = collect(kinds, wres, result, a)
    if g.ev['login_done']['errors']:
        invalid.append('login errors: %d' % g.ev['login_done']['errors'])
    result['valid'] = not invalid
    result['invalid'] = invalid
    print('RESULT ' + json.dumps(result), flush=True)
    print('FLAT ' + json.dumps(flat(result)), flush=True)
    if a.out:
        with open(a.out, 'a') as f:
            f.write(json.dumps(result) + '\n')


async def shared(a, spid, env):
    """One generator (K contacts log in once), then each watcher session in turn."""
    g = Gen(); await g.start(a)
    while 'login_done' not in g.ev:
        if g.p.returncode is not None:
            sys.exit('gen.py exited before login_done')
        await asyncio.sleep(0.05)
    login = g.ev['login_done']
    print('login', json.dumps(login), flush=True)
    # 24 letters are cycled, 5 or fewer per session: a session never uses the letter of the
    # previous session's last phase (the contacts' current presence, replayed at login).
    pool = LETTERS
    i = 0
    for run in range(1, a.runs + 1):
        for impl in a.impls.split(','):
            n_phases = (a.blasts if a.blast else 0) + len([x for x in a.rates.split(',') if x])
            letters = iter([pool[(i + j) % len(pool)] for j in range(n_phases)])
            i += n_phases
            result = {'server': a.server, 'impl': impl, 'run': run, 'k': a.k, 'phases': {}, 'login': login}
            pids = {'server': spid, 'gen': g.p.pid}
            w = Watcher(); await w.start(impl, a.server, env)
            pids['watcher'] = w.p.pid
            result['watcher_ready'] = w.ready
            kinds = await phases(a, g, w, pids, letters, result)
            await asyncio.sleep(0.3)
            await w.stop()
            result['watcher_final_rss_mb'] = round(w.res.get('rss_kb', 0) / 1024, 1)
            result['watcher_extra'] = {k: v for k, v in w.res.items() if not isinstance(v, dict)}
            invalid = collect(kinds, w.res, result, a)
            if login['errors']:
                invalid.append('login errors: %d' % login['errors'])
            result['valid'] = not invalid
            result['invalid'] = invalid
            print('RESULT ' + json.dumps(result), flush=True)
            print('FLAT ' + json.dumps(flat(result)), flush=True)
            if a.out:
                with open(a.out, 'a') as f:
                    f.write(json.dumps(result) + '\n')
    await g.quit()

if __name__ == '__main__':
    asyncio.run(main())
