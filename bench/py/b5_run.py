#!/usr/bin/env python3
"""B5 (bench/run.sh): watcher login and roster bootstrap while K contacts are online.

  b5_run.py prosody --server-pid PID --k 1000 --impls imstatus,raw,slix --runs 3

gen.py logs K contacts in once (each with one initial presence 'l <i> <t_ns>'); then each watcher
(watcher.py --impl raw|slix, or imstatus's bench/src/bin/xmpp_watcher.rs via $IMSTATUS_WATCHER)
logs in as `watcher` (5,001-item roster) in turn and is stopped when it knows all K presences.
Per watcher session, one 'FLAT {json}' line:
  ready_s      process spawn -> READY line (imstatus: hub start -> synced; slix/raw: roster
               fetched and presence sent); login_s = the watcher's own figure (from its start)
  all_known_s  process spawn -> the K-th contact presence received (the watcher's own receive stamp
               of the last 'l' marker, CLOCK_MONOTONIC as here)
  rss_mb       the watcher's RSS when the driver saw it knew all K (within 0.25 s)
"""
import argparse, asyncio, json, os, sys, time
sys.dont_write_bytecode = True  # importing ingest_run must not leave bench/py/__pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from xmpputil import rss_kb
from ingest_run import Gen, Watcher, PIDFILES


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('server', choices=PIDFILES)
    ap.add_argument('--k', type=int, default=1000)
    ap.add_argument('--impls', default='imstatus,raw,slix')
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--concurrency', type=int, default=50)
    ap.add_argument('--server-pid', type=int)
    ap.add_argument('--timeout', type=float, default=60)
    a = ap.parse_args()
    g = Gen(); await g.start(a)
    t0 = time.monotonic()
    while 'login_done' not in g.ev:
        if g.p.returncode is not None or time.monotonic() - t0 > 300:
            sys.exit('gen.py did not log in')
        await asyncio.sleep(0.05)
    login = g.ev['login_done']
    print('login', json.dumps(login), flush=True)
    await asyncio.sleep(0.5)
    for run in range(1, a.runs + 1):
        for impl in a.impls.split(','):
            w = Watcher(); await w.start(impl, a.server, dict(os.environ))
            ok = await w.wait_count('l', a.k, a.timeout)
            rss = rss_kb(w.p.pid)
            await w.stop()
            lk = w.res.get('l', {})
            login_s = float(w.ready.split('login_s=')[1].split()[0])
            f = {'impl': impl, 'run': run, 'k': a.k, 'known': lk.get('n', 0),
                 'ready_s': round((w.t_ready - w.t_spawn) / 1e9, 4), 'login_s': login_s,
                 'all_known_s': round((lk['last_recv'] - w.t_spawn) / 1e9, 4) if ok and lk else None,
                 'rss_mb': round(rss / 1024, 1), 'valid': 1 if ok and not login['errors'] else 0}
            print('FLAT ' + json.dumps(f), flush=True)
            await asyncio.sleep(0.3)
    await g.quit()

if __name__ == '__main__':
    asyncio.run(main())
