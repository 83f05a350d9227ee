"""Shared helpers for the slixmpp baseline scripts (plaintext loopback, no TLS)."""
import asyncio, logging, os, time
import slixmpp

SERVERS = {
    # name: (domain, host, port)
    # bench/run.sh sets the ports (defaults differ from the shared e2e-d instance's 25222/25290)
    'prosody':  ('p.test', '127.0.0.1', int(os.environ.get('BENCH_PROSODY_PORT', '25322'))),
    'ejabberd': ('e.test', '127.0.0.1', int(os.environ.get('BENCH_EJABBERD_PORT', '25323'))),
    'replay':   ('r.test', '127.0.0.1', int(os.environ.get('BENCH_REPLAY_PORT', '25390'))),   # replay_server.py (fake server, client-only ceiling)
}

def make_client(jid, password, cls=slixmpp.ClientXMPP, mech='PLAIN', plugins=(), **kw):
    c = cls(jid, password, sasl_mech=mech, **kw)
    c.enable_direct_tls = False
    c.enable_starttls = False
    c.enable_plaintext = True
    c['feature_mechanisms'].unencrypted_plain = True
    c['feature_mechanisms'].unencrypted_scram = True
    for p in plugins:
        c.register_plugin(p)
    return c

def rss_kb(pid='self'):
    with open('/proc/%s/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0

def cpu_s(pid='self'):
    """user+system CPU seconds of a process (from /proc/<pid>/stat)."""
    with open('/proc/%s/stat' % pid) as f:
        parts = f.read().rsplit(')', 1)[1].split()
    tck = os.sysconf('SC_CLK_TCK')
    return (int(parts[11]) + int(parts[12])) / tck

def pct(sorted_vals, p):
    if not sorted_vals:
        return float('nan')
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]
