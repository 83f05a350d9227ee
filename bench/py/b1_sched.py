#!/usr/bin/env python3
"""Where B1's latency goes inside imstatus, from scheduler tracepoints (no hardware counters
needed). Record while `bench/run.sh quick B1` runs its `imstatus-main` side:

  perf record -e sched:sched_switch,sched:sched_wakeup -a -o b1sched.data -- sleep 10
  perf script -i b1sched.data -F comm,tid,time,event,trace > b1sched.txt
  python3 bench/py/b1_sched.py b1sched.txt

It assumes `xmpp_latency --on main` (the `imstatus-main` row): a main thread (the sender of the
toggles and the hub subscriber that stamps the event) and one tokio worker (the XMPP source: socket read, tokio-xmpp parse, translate, hub).
Per toggle: send (main wakes Prosody) -> the worker is scheduled -> the worker wakes the main
thread (the event is published) -> the main thread runs (stamp). Prints p50/p90 of each step."""
import re, sys

ev = []
for l in open(sys.argv[1]):
    m = re.match(r'\s*(.+?)\s+(\d+)\s+([\d.]+):\s+sched:(\w+):\s+(.*)', l)
    if m:
        comm, tid, t, e, tr = m.groups()
        ev.append((float(t), comm, tid, e, tr))
main = next(tid for t, comm, tid, e, tr in ev if comm.startswith('xmpp_latency'))
worker = next(re.search(r'next_pid=(\d+)', tr).group(1) for t, comm, tid, e, tr in ev
              if tid == main and e == 'sched_switch' and 'next_comm=tokio-rt-worker' in tr)
sends = [t for t, c, tid, e, tr in ev if tid == main and e == 'sched_wakeup' and 'comm=lua' in tr]
steps = []
for s in sends:
    after = [x for x in ev if x[0] > s]
    on = next((t for t, c, tid, e, tr in after if e == 'sched_switch' and 'next_pid=%s ' % worker in tr + ' '), None)
    wk = next((t for t, c, tid, e, tr in after if tid == worker and e == 'sched_wakeup' and 'pid=%s ' % main in tr + ' '), None)
    if on is None or wk is None or wk - s > 0.005 or wk < on:
        continue
    run = next((t for t, c, tid, e, tr in after if t >= wk and e == 'sched_switch' and 'next_pid=%s ' % main in tr + ' '), None)
    steps.append(((on - s) * 1e6, (wk - on) * 1e6, ((run - wk) * 1e6) if run else None, (wk - s) * 1e6))
print('%d toggles (main thread %s, worker %s)' % (len(steps), main, worker))
for i, name in enumerate(['send -> worker scheduled (Prosody + wake)',
                          'worker scheduled -> subscriber woken (read, parse, hub)',
                          'subscriber woken -> running', 'send -> subscriber woken']):
    v = sorted(x[i] for x in steps if x[i] is not None)
    print('%-58s p50 %5.0f µs  p90 %5.0f µs' % (name, v[len(v) // 2], v[int(len(v) * .9)]))
