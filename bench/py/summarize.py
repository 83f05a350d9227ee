#!/usr/bin/env python3
"""bench/run.sh helper: reads the raw JSON lines of one suite run (one line per benchmark run:
{"bench", "impl", "run", metrics...}), takes the median of every numeric metric per (bench, impl),
writes the machine-readable result and prints a markdown table with ratios to imstatus.
  summarize.py RAW.jsonl OUT.json MODE [PARTS_DIR]

An impl may be "name@variant" (e.g. "imstatus@c64"); its ratios are then taken against
"imstatus@variant". Table columns for a benchmark not in COLS come from PARTS_DIR/<bench>.cols.json,
a list of [metric, label, lower_is_better]; without one, every numeric metric is shown."""
import json, statistics, sys, platform, os, time

raw, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
parts = sys.argv[4] if len(sys.argv) > 4 else None
rows = [json.loads(l) for l in open(raw) if l.strip()]
cells = {}
for r in rows:
    cells.setdefault((r['bench'], r['impl']), []).append(r)
med = {}
for (b, i), rs in cells.items():
    m = {'runs': len(rs)}
    keys = sorted({k for r in rs for k, v in r.items() if isinstance(v, (int, float)) and k != 'run'})
    for k in keys:
        vals = [r[k] for r in rs if isinstance(r.get(k), (int, float))]
        m[k] = statistics.median(vals)
    med.setdefault(b, {})[i] = m
meta = {'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'mode': mode,
        'machine': {'cpus': os.cpu_count(), 'kernel': platform.release(),
                    'mem_gib': round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30, 1)}}
json.dump({'meta': meta, 'median': med, 'runs': rows}, open(out, 'w'), indent=1)

COLS = {  # bench -> (metric, label, lower_is_better)
    'B1': [('p50_us', 'p50 µs', True), ('p99_us', 'p99 µs', True), ('p90_us', 'p90 µs', True), ('lost', 'lost', True)],
    'B3': [('rate', 'presence/s', False), ('cpu_us_per_stanza', 'CPU µs/stanza', True), ('rss_mb', 'RSS MB', True)],
    'B8': [('idle_rss_kb', 'idle RSS KB', True), ('small_rss_kb', 'RSS, 1-item roster KB', True),
           ('big_rss_kb', 'RSS, big roster KB (5,001 items; @nN: N)', True), ('bytes_per_contact', 'bytes/contact', True),
           ('sync_s', 'spawn → synced s (peers: READY)', True)],
}
print('\n%s, %s, median of runs (%s)\n' % (meta['time'], mode, ', '.join('%s=%s' % kv for kv in meta['machine'].items())))
for b in sorted(med):
    cols = COLS.get(b)
    if cols is None and parts and os.path.exists(os.path.join(parts, b + '.cols.json')):
        cols = [tuple(c) for c in json.load(open(os.path.join(parts, b + '.cols.json')))]
    if cols is None:
        cols = [(k, k, True) for k in sorted({k for m in med[b].values() for k in m if k != 'runs'})]
    print('### %s\n' % b)
    print('| impl | runs | ' + ' | '.join(c[1] for c in cols) + ' | ' +
          ' | '.join('%s ÷ imstatus' % c[1] for c in cols[:2]) + ' |')
    print('|---' * (2 + len(cols) + min(2, len(cols))) + '|')
    def variant(i):
        return i.split('@', 1)[1] if '@' in i else ''
    for i in sorted(med[b], key=lambda x: (variant(x), x.split('@')[0] != 'imstatus', x)):
        m = med[b][i]
        base = med[b].get('imstatus' + ('@' + variant(i) if variant(i) else ''), {})
        vals = ['%.1f' % m[c[0]] if isinstance(m.get(c[0]), float) else str(m.get(c[0], '—')) for c in cols]
        rat = []
        for c in cols[:2]:
            a, z = m.get(c[0]), base.get(c[0])
            rat.append('%.2f' % (a / z) if isinstance(a, (int, float)) and z else '—')
        print('| %s | %d | %s | %s |' % (i, m['runs'], ' | '.join(vals), ' | '.join(rat)))
    print()
print('raw runs and medians: %s' % out)
