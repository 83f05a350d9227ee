# bench/parts/b2.sh — B2: contact presence latency (alice → watcher via the roster), sourced by bench/run.sh.
#
# imstatus: bench/src/bin/xmpp_latency.rs --observer roster (the XMPP source logs in as
# `watcher`, contacts = true, visible, 5,001-item roster; a hub subscriber stamps the
# `contact_status_changed` of alice whose message is the toggle's marker). Peers:
# bench/py/latency.py prosody --observer roster --impl raw|slix. alice/desk toggles between
# away and available, B2_N times (quick 200, full 500), closed loop with 5 ms gaps, as B1.
NEEDS_B2=prosody
b2() {
  local r out impl n=${B2_N:-$([ "$MODE" = quick ] && echo 200 || echo 500)}
  for r in $(seq "$RUNS"); do
    log "B2 run $r/$RUNS: imstatus (task, main), raw, slixmpp as watcher ($n toggles of alice each)"
    for on in worker main; do   # as B1: a spawned task's subscriber, and the main thread's
      out=$(timeout 120 "$LATENCY_BIN" --port "$BENCH_PROSODY_PORT" --domain p.test --observer roster --n "$n" --gap-ms 5 --on $on)
      emit B2 "$([ $on = main ] && echo imstatus-main || echo imstatus)" "$r" "$out"
    done
    for impl in raw slix; do
      out=$(timeout 120 "$PY" "$HERE/py/latency.py" prosody --observer roster --impl $impl --n "$n" --gap-ms 5 --states away,available)
      emit B2 "$impl" "$r" "$out"
    done
  done
}
