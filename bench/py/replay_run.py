#!/usr/bin/env python3
"""Client-only ingest ceiling: watcher.py against replay_server.py (no real XMPP server in the path).
  replay_run.py --impl slix|raw [--uvloop] --k 2000 --m 100000
Reports presence stanzas/s processed (mid-80% window and first->last), CPU us/stanza, RSS."""
import argparse, asyncio, json, os, signal, sys, time
HERE = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, HERE)
from xmpputil import cpu_s, rss_kb

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--impl', default='slix'); ap.add_argument('--uvloop', action='store_true')
    ap.add_argument('--k', type=int, default=2000); ap.add_argument('--m', type=int, default=100000)
    ap.add_argument('--out')
    a = ap.parse_args()
    srv = await asyncio.create_subprocess_exec(sys.executable, os.path.join(HERE, 'replay_server.py'), '--port', os.environ.get('BENCH_REPLAY_PORT', '25390'), '--k', str(a.k), '--m', str(a.m),
                                               stdout=asyncio.subprocess.PIPE)
    await srv.stdout.readline()
    env = dict(os.environ)
    if a.uvloop: env['WATCHER_UVLOOP'] = '1'
    w = await asyncio.create_subprocess_exec(sys.executable, os.path.join(HERE, 'watcher.py'), 'replay', '--impl', a.impl,
                                             stdout=asyncio.subprocess.PIPE, env=env)
    ready = (await w.stdout.readline()).decode().strip()
    c0 = cpu_s(w.pid); t0 = time.monotonic(); res = {}; cnt = [0]
    async def rd():
        async for ln in w.stdout:
            ln = ln.decode().strip()
            if ln.startswith('P '):
                for kv in ln.split()[2:]:
                    k, v = kv.split('=')
                    if k == 'f': cnt[0] = int(v)
            elif ln.startswith('RESULT '):
                res.update(json.loads(ln[7:]))
    rt = asyncio.create_task(rd())
    while cnt[0] < a.m and time.monotonic() - t0 < 300:
        await asyncio.sleep(0.05)
    c1 = cpu_s(w.pid); rss = rss_kb(w.pid)
    w.send_signal(signal.SIGTERM); await w.wait(); await rt
    srv.send_signal(signal.SIGTERM); await srv.wait()
    f = res.get('f', {})
    span = (f['last_recv'] - f['first_recv']) / 1e9
    out = {'impl': a.impl + ('+uvloop' if a.uvloop else ''), 'k': a.k, 'm': a.m, 'recv': f.get('n'), 'ready': ready,
           'rate_first_last': round(f['n'] / span), 'rate_mid80': round(f['rate_mid80']) if f.get('rate_mid80') and a.impl != 'count' else None,
           'cpu_us_per_stanza': round(1e6 * (c1 - c0) / f['n'], 1), 'rss_mb': round(rss / 1024, 1)}
    print(json.dumps(out))
    if a.out:
        open(a.out, 'a').write(json.dumps(out) + '\n')

asyncio.run(main())
