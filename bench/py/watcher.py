#!/usr/bin/env python3
"""Watcher under test for 3b: logs in as watcher@dom, fetches roster, sends presence and tracks
contacts' presence. --impl slix: slixmpp ClientXMPP (client_roster tracks resources/show/status,
our handler parses the status marker).  --impl raw: raw socket + regex floor (no DOM).

Status markers sent by gen.py: '<kind> <seq> <send_monotonic_ns>'; kinds l=login f=blast r=rate.
Prints 'READY' when online, 'P <recv_total> <l> <f> <r>' progress lines (every 0.25 s) and,
on SIGTERM/SIGINT, one 'RESULT {json}' line (latency percentiles per kind, first/last recv).
bench/run.sh additions (B9): --reconnect (slix: connect again when the connection is lost, print
'DOWN <t_ns>' and 'RECONNECTED <t_ns> <down_t_ns>'), --dump FILE (slix: at the end, write every
roster contact's presence as 'jid TAB show|available|unavailable TAB status').
"""
import argparse, asyncio, json, os, signal, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xmpputil import SERVERS, make_client, pct, rss_kb, cpu_s
import rawxmpp


class Stats:
    def __init__(self):
        self.total = 0
        self.kinds = {}            # kind -> dict(n, first, last, lat list)

    def mark(self, kind, seq, t_send, recv_ns):
        k = self.kinds.get(kind)
        if k is None:
            k = self.kinds[kind] = {'n': 0, 'first': recv_ns, 'last': recv_ns, 'lat': [], 'first_send': t_send, 'recv': []}
        k['n'] += 1
        k['last'] = recv_ns
        if t_send < k['first_send']:
            k['first_send'] = t_send
        k['lat'].append((recv_ns - t_send) / 1000.0)
        k['recv'].append(recv_ns)

    def progress(self):
        return 'P %d %s' % (self.total, ' '.join('%s=%d' % (k, v['n']) for k, v in sorted(self.kinds.items())))

    def result(self):
        out = {'total_presence': self.total}
        for kind, v in self.kinds.items():
            lat = sorted(v['lat'])
            r = v['recv']; n = len(r)
            i10, i90 = n // 10, (n * 9) // 10
            mid80 = (i90 - i10) / ((r[i90 - 1] - r[i10]) / 1e9) if n >= 20 and r[i90 - 1] > r[i10] else None
            out[kind] = {'n': v['n'], 'first_recv': v['first'], 'last_recv': v['last'], 'first_send': v['first_send'],
                         'rate_mid80': mid80, 'p50_us': pct(lat, 50), 'p90_us': pct(lat, 90), 'p99_us': pct(lat, 99), 'max_us': lat[-1]}
        out['rss_kb'] = rss_kb(); out['cpu_s'] = cpu_s()
        return out


RECONNECT = {'on': False, 'down': None, 'stopping': False}


async def run_slix(dom, host, port, st, ready):
    c = make_client('%s@%s/w' % (os.environ.get('WATCHER_USER', 'watcher'), dom), 'pw')
    async def on_start(_):
        await c.get_roster()
        c.send_presence()
        if ready.done():  # a reconnect (--reconnect)
            print('RECONNECTED %d %d' % (time.monotonic_ns(), RECONNECT['down'] or 0), flush=True)
            RECONNECT['down'] = None
            return
        ready.set_result(len(c.client_roster))
    def on_disconnected(_):
        if RECONNECT['on'] and not RECONNECT['stopping'] and ready.done():
            RECONNECT['down'] = time.monotonic_ns()
            print('DOWN %d' % RECONNECT['down'], flush=True)
            c.connect(host, port)
    c.add_event_handler('disconnected', on_disconnected)
    def on_pres(p):
        st.total += 1
        s = p['status']
        if len(s) > 2 and s[1] == ' ':
            kind, seq, ts = s.split(' ')
            st.mark(kind, int(seq), int(ts), time.monotonic_ns())
    c.add_event_handler('session_start', on_start)
    c.add_event_handler('presence', on_pres)
    c.connect(host, port)
    return c


async def run_raw(dom, host, port, st, ready):
    c = await rawxmpp.connect(host, port)
    await c.login(dom, os.environ.get('WATCHER_USER', 'watcher'), 'pw', 'w')
    n = await c.roster_get()
    c.send('<presence/>')
    sc = rawxmpp.PresenceScanner(on_mark=lambda k, s, t, r: st.mark(k.decode(), s, t, r))
    def feed(data, recv_ns):
        before = sc.count
        sc.feed(data, recv_ns)
        st.total += sc.count - before
    c.start_streaming(feed)
    ready.set_result(n)
    return c


async def run_count(dom, host, port, st, ready):
    """'count' impl: only counts b'<presence' per chunk (bytes.count in C) -> reader/replay ceiling."""
    c = await rawxmpp.connect(host, port)
    await c.login(dom, 'watcher', 'pw', 'w')
    n = await c.roster_get()
    c.send('<presence/>')
    def feed(data, recv_ns):
        k = data.count(b'<presence')
        if k:
            st.total += k
            v = st.kinds.get('f')
            if v is None:
                v = st.kinds['f'] = {'n': 0, 'first': recv_ns, 'last': recv_ns, 'lat': [0.0], 'first_send': recv_ns, 'recv': []}
            v['n'] += k; v['last'] = recv_ns
            for _ in range(k // 100):
                v['recv'].append(recv_ns)
    c.start_streaming(feed)
    ready.set_result(n)
    return c


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('server', choices=SERVERS)
    ap.add_argument('--impl', choices=['slix', 'raw', 'count'], default='slix')
    ap.add_argument('--reconnect', action='store_true')
    ap.add_argument('--dump')
    a = ap.parse_args()
    RECONNECT['on'] = a.reconnect
    dom, host, port = SERVERS[a.server]
    loop = asyncio.get_running_loop()
    st = Stats(); ready = loop.create_future(); stop = loop.create_future()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, lambda: stop.done() or stop.set_result(True))
    t0 = time.monotonic()
    c = await {'slix': run_slix, 'raw': run_raw, 'count': run_count}[a.impl](dom, host, port, st, ready)
    n = await asyncio.wait_for(ready, 120)
    print('READY roster=%d login_s=%.3f rss_kb=%d' % (n, time.monotonic() - t0, rss_kb()), flush=True)
    while not stop.done():
        print(st.progress(), flush=True)
        await asyncio.wait([stop], timeout=0.25)
    RECONNECT['stopping'] = True
    print('RESULT ' + json.dumps(st.result()), flush=True)
    if a.dump and a.impl == 'slix':
        with open(a.dump, 'w') as f:
            for jid in c.client_roster:
                res = c.client_roster[jid].resources
                if not res:
                    f.write('%s\tunavailable\t\n' % jid)
                    continue
                best = max(res.values(), key=lambda r: r.get('priority', 0))
                f.write('%s\t%s\t%s\n' % (jid, best.get('show') or 'available', best.get('status', '')))
    try:
        c.disconnect() if a.impl == 'slix' else c.close()  # raw/count
    except Exception:
        pass
    await asyncio.sleep(0.2)

if __name__ == '__main__':
    if os.environ.get('WATCHER_UVLOOP'):
        import uvloop; uvloop.install()
    asyncio.run(main())
