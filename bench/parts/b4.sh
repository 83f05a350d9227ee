# bench/parts/b4.sh — B4: ingest through the real server (sourced by bench/run.sh).
#
# bench/py/ingest_run.py (the team's reference orchestrator, shared generator mode): gen.py logs
# K contacts in once, then each watcher in turn — imstatus (bench/src/bin/xmpp_watcher.rs, the
# XMPP source + hub + a subscriber, same READY/P/RESULT contract as watcher.py), raw and slix
# (bench/py/watcher.py) — logs in as `watcher`, gets one blast of 20,000 presence changes and a
# rate ladder (open loop, 1 ms ticks), and is stopped; RUNS rounds over the three. Metrics per
# session: blast delivered/s (20,000 / (last receive − first send)), p50/p99 latency at each
# rate (generator's CLOCK_MONOTONIC send stamp in the status → the watcher's receive stamp), the
# watcher's CPU % and CPU µs/stanza (/proc, per phase). Validity per perf-baselines §4 rule 2
# (generator ≤ 50 % of a core, rate_sent ≤ 1.02 D, no login errors) is recorded as `valid`.
# quick: K=1000, rates 1k/2k/4k/s × 2 s (B4_SECS=3 for 3 s); full: K=1000/2000/5000 (variants @k…), 1k/2k/4k/8k × 5 s.
NEEDS_B4=prosody
xb_uvloop() { # gen.py runs on uvloop when it is there (as in perf-baselines §4)
  "$PY" -c 'import uvloop' 2>/dev/null || "$HERE/.venv/bin/pip" install -q uvloop >&2 || true
}
b4() {
  xb_uvloop
  local ks rates secs k out
  export IMSTATUS_WATCHER; IMSTATUS_WATCHER=$(bench_bin xmpp_watcher)
  if [ "$MODE" = quick ]; then ks=${B4_K:-1000}; rates=${B4_RATES:-1000,2000,4000}; secs=${B4_SECS:-2}
  else ks=${B4_K:-"1000 2000 5000"}; rates=${B4_RATES:-1000,2000,4000,8000}; secs=${B4_SECS:-5}; fi
  for k in $ks; do
    log "B4 K=$k: imstatus, raw, slixmpp watchers, $RUNS rounds: blast 20000, rates $rates × ${secs}s"
    out=$(timeout $((300 + RUNS * 3 * 120)) "$PY" "$HERE/py/ingest_run.py" prosody --server-pid "$PROSODY_PID" \
      --impls imstatus,raw,slix --runs "$RUNS" --k "$k" --blast 20000 --blasts 1 --rates "$rates" \
      --rate-secs "$secs" --gap 0.3 2>"$WORK/b4-$k.err") || { tail -20 "$WORK/b4-$k.err" >&2; echo "B4 failed" >&2; exit 1; }
    echo "$out" | grep '^RESULT ' | sed 's/^RESULT //' > "$WORK/b4-$k.results.jsonl"
    while IFS= read -r line; do
      emit B4 "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["impl"])' "$line")@k$k" \
        "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1]).get("run", 1))' "$line")" "$line"
    done < <(echo "$out" | grep '^FLAT ' | sed 's/^FLAT //' | "$PY" -c '
import json, sys
runs = {}
for l in sys.stdin:
    d = json.loads(l); runs[d["impl"]] = runs.get(d["impl"], 0) + 1; d["run"] = runs[d["impl"]]; print(json.dumps(d))')
  done
}
