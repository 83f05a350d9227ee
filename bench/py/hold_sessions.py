#!/usr/bin/env python3
"""bench B6 helper: log in u0001..uN to a server with the raw client (rawxmpp.py, plaintext,
SASL PLAIN, bind), send one away presence each (like perf-baselines §3c's
`idle_sessions.py --hold`), print READY <n> <seconds>, then hold the sessions until SIGTERM or
--hold seconds. Incoming data is discarded.
  hold_sessions.py ejabberd|prosody --n 2000 [--concurrency 50] [--hold 600]"""
import argparse, asyncio, os, signal, sys, time
HERE = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, HERE)
import rawxmpp

SERVERS = {
    'prosody': ('p.test', '127.0.0.1', int(os.environ.get('BENCH_PROSODY_PORT', '25322'))),
    'ejabberd': ('e.test', '127.0.0.1', int(os.environ.get('BENCH_EJABBERD_PORT', '25323'))),
}


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('server', choices=SERVERS); ap.add_argument('--n', type=int, default=2000)
    ap.add_argument('--concurrency', type=int, default=50); ap.add_argument('--hold', type=float, default=600)
    a = ap.parse_args()
    dom, host, port = SERVERS[a.server]
    sem = asyncio.Semaphore(a.concurrency)
    conns = []

    async def one(i):
        async with sem:
            c = await rawxmpp.connect(host, port)
            await c.login(dom, 'u%04d' % i, 'pw', 'idle', timeout=60)
            c.start_streaming(lambda d, t: None)
            c.send("<presence><show>away</show><status>idle session %d</status></presence>" % i)
            conns.append(c)

    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1, a.n + 1))), 120)
    print('READY %d %.2f' % (len(conns), time.monotonic() - t0), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), a.hold)
    except asyncio.TimeoutError:
        pass
    for c in conns:
        c.close()


if __name__ == '__main__':
    asyncio.run(main())
