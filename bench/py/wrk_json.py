#!/usr/bin/env python3
"""bench B6 helper: one wrk --latency output → one JSON line.
  wrk_json.py WRK_OUTPUT SERVER_CPU_TICKS [CLK_TCK]
Fields: rps, requests, p50_us, p90_us, p99_us, max_us, non2xx, socket_errors, secs,
cpu_us_per_req (server user+system CPU over the run / requests), server_cpu_pct."""
import json, re, sys

text = open(sys.argv[1]).read()
ticks = float(sys.argv[2]); tck = float(sys.argv[3]) if len(sys.argv) > 3 else 100.0
UNIT = {'us': 1.0, 'ms': 1e3, 's': 1e6, 'm': 6e7}

def dur(v):
    m = re.fullmatch(r'([\d.]+)(us|ms|s|m)', v)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None

d = {}
m = re.search(r'Requests/sec:\s+([\d.]+)', text); d['rps'] = round(float(m.group(1))) if m else 0
m = re.search(r'(\d+) requests in ([\d.]+)(us|ms|s|m)', text)
d['requests'] = int(m.group(1)) if m else 0
d['secs'] = round(dur(m.group(2) + m.group(3)) / 1e6, 3) if m else 0
for p in ('50', '90', '99'):
    m = re.search(r'^\s+%s%%\s+(\S+)' % p, text, re.M)
    d['p%s_us' % p] = round(dur(m.group(1)), 1) if m else None
m = re.search(r'Latency\s+\S+\s+\S+\s+(\S+)', text); d['max_us'] = round(dur(m.group(1)), 1) if m else None
m = re.search(r'Non-2xx or 3xx responses: (\d+)', text); d['non2xx'] = int(m.group(1)) if m else 0
m = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', text)
d['socket_errors'] = sum(int(x) for x in m.groups()) if m else 0
cpu_s = ticks / tck
d['cpu_us_per_req'] = round(cpu_s * 1e6 / d['requests'], 2) if d['requests'] else None
d['server_cpu_pct'] = round(cpu_s / d['secs'] * 100, 1) if d['secs'] else None
print(json.dumps(d))
