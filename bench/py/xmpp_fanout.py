#!/usr/bin/env python3
"""bench B7 peer: ejabberd delivering the same changes to N XMPP sessions.

u0001..uN log in with the raw client (rawxmpp.py: plaintext, SASL PLAIN, bind, an available
presence) and read with a C regex; `watcher` (on every u's roster, subscription both) then sends
R presences a second for D seconds (open loop, 1 ms ticks with catch-up, stopped after D + 1 s),
each with <status>b SEQ CLOCK_MONOTONIC_NS</status>; ejabberd broadcasts every one to all N.
Prints one JSON line with the keys of bench/src/bin/sse_fanout.rs (lost, p50/p90/p99
over what arrived within --drain s after the last one, server CPU and RSS per session from /proc).
  xmpp_fanout.py --n 100 --rate 1000 --secs 2 --drain 1 --pid EJABBERD_PID"""
import argparse, asyncio, json, os, sys, time
HERE = os.path.dirname(os.path.abspath(__file__)); sys.path.insert(0, HERE)
import rawxmpp

DOM, HOST, PORT = 'e.test', '127.0.0.1', int(os.environ.get('BENCH_EJABBERD_PORT', '25323'))


def cpu_rss(pid):
    with open('/proc/%s/stat' % pid) as f:
        p = f.read().rsplit(')', 1)[1].split()
    cpu = (int(p[11]) + int(p[12])) / os.sysconf('SC_CLK_TCK')
    rss = 0
    with open('/proc/%s/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
    return cpu, rss


def pct(v, p):
    return v[min(len(v) - 1, round((len(v) - 1) * p / 100))] if v else 0


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=100); ap.add_argument('--rate', type=int, default=1000)
    ap.add_argument('--secs', type=float, default=2); ap.add_argument('--drain', type=float, default=1)
    ap.add_argument('--pid', required=True); ap.add_argument('--concurrency', type=int, default=50)
    a = ap.parse_args()
    total = round(a.rate * a.secs)
    seen = [bytearray(total) for _ in range(a.n)]
    lat = []
    state = {'delivered': 0, 'dup': 0, 'oor': 0}
    _, rss0 = cpu_rss(a.pid)
    sem = asyncio.Semaphore(a.concurrency)
    conns = []

    def receiver(i):
        def on_mark(kind, seq, ns, recv_ns):
            if kind != b'b' or seq >= total:
                state['oor'] += 1
                return
            if seen[i][seq]:
                state['dup'] += 1
                return
            seen[i][seq] = 1
            state['delivered'] += 1
            lat.append((recv_ns - ns) // 1000)
        return rawxmpp.PresenceScanner(on_mark)

    async def one(i):
        async with sem:
            c = await rawxmpp.connect(HOST, PORT)
            await c.login(DOM, 'u%04d' % (i + 1), 'pw', 'fan', timeout=60)
            sc = receiver(i)
            c.start_streaming(sc.feed)
            c.send('<presence/>')
            conns.append(c)

    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(a.n))), 120)
    sender = await rawxmpp.connect(HOST, PORT)
    await sender.login(DOM, 'watcher', 'pw', 'src', timeout=60)
    sender.start_streaming(lambda d, t: None)
    sender.send('<presence/>')
    connect_s = time.monotonic() - t0
    await asyncio.sleep(0.5)
    state['delivered'] = 0; lat.clear()
    _, rss_subs = cpu_rss(a.pid)
    c0, _ = cpu_rss(a.pid); me0 = time.process_time()
    start = time.monotonic(); sent = 0
    while sent < total and time.monotonic() - start < a.secs + 1:
        due = min(total, int((time.monotonic() - start) * a.rate) + 1)
        while sent < due:
            show = 'away' if sent % 2 == 0 else 'dnd'
            sender.send('<presence><show>%s</show><status>b %d %d</status></presence>' % (show, sent, time.monotonic_ns()))
            sent += 1
        await asyncio.sleep(0.001)
    flow_s = time.monotonic() - start
    expected = a.n * sent
    deadline = time.monotonic() + a.drain
    while state['delivered'] < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    window = time.monotonic() - start
    c1, rss_after = cpu_rss(a.pid); me1 = time.process_time()
    delivered = state['delivered']
    lat.sort()
    print(json.dumps({
        'n': a.n, 'connected': len(conns), 'rate': a.rate, 'secs': a.secs, 'sent': sent,
        'expected': expected, 'delivered': delivered, 'lost': max(0, expected - delivered),
        'dup': state['dup'], 'resyncs': 0, 'out_of_range': state['oor'],
        'p50_us': pct(lat, 50), 'p90_us': pct(lat, 90), 'p99_us': pct(lat, 99), 'max_us': lat[-1] if lat else 0,
        'connect_s': round(connect_s, 3), 'flow_s': round(flow_s, 3), 'window_s': round(window, 3),
        'rate_achieved': round(sent / flow_s), 'delivered_pct': round(delivered * 100 / expected, 2) if expected else 0,
        'server_cpu_pct': round((c1 - c0) / window * 100, 1),
        'server_cpu_us_per_delivery': round((c1 - c0) * 1e6 / delivered, 1) if delivered else 0,
        'client_cpu_pct': round((me1 - me0) / window * 100, 1),
        'rss_kb_before': rss0, 'rss_kb_subs': rss_subs, 'rss_kb_after': rss_after,
        'kb_per_sub': round((rss_subs - rss0) / a.n, 1), 'kb_per_sub_after': round((rss_after - rss0) / a.n, 1),
    }), flush=True)
    for c in conns + [sender]:
        c.close()


if __name__ == '__main__':
    asyncio.run(main())
