# bench/parts/b5.sh — B5: login and roster bootstrap (sourced by bench/run.sh).
#
# bench/py/b5_run.py: gen.py logs K contacts in (quick 1000, full 1000 and 5000 as variants @k…),
# then each watcher in turn — imstatus (bench/src/bin/xmpp_watcher.rs: the XMPP source in a hub,
# contacts = true), raw and slix (bench/py/watcher.py) — logs in as `watcher` (5,001-item roster)
# and is stopped once it knows all K presences; RUNS rounds. ready_s = process spawn → READY
# (imstatus: synced; peers: roster fetched, presence sent); all_known_s = spawn → the K-th
# contact presence received; rss_mb at that point.
NEEDS_B5=prosody
b5() {
  local ks k out
  export IMSTATUS_WATCHER; IMSTATUS_WATCHER=$(bench_bin xmpp_watcher)
  if [ "$MODE" = quick ]; then ks=${B5_K:-1000}; else ks=${B5_K:-"1000 5000"}; fi
  for k in $ks; do
    log "B5 K=$k: imstatus, raw, slixmpp log in as watcher (5001-item roster), $RUNS rounds"
    out=$(timeout $((300 + RUNS * 3 * 60)) "$PY" "$HERE/py/b5_run.py" prosody --server-pid "$PROSODY_PID" \
      --impls imstatus,raw,slix --runs "$RUNS" --k "$k" 2>"$WORK/b5-$k.err") || { tail -20 "$WORK/b5-$k.err" >&2; echo "B5 failed" >&2; exit 1; }
    while IFS= read -r line; do
      emit B5 "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["impl"])' "$line")@k$k" \
        "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["run"])' "$line")" "$line"
    done < <(echo "$out" | grep '^FLAT ' | sed 's/^FLAT //')
  done
}
