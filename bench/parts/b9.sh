# bench/parts/b9.sh — B9: flap storm with the watcher's connection broken in the middle
# (sourced by bench/run.sh).
#
# bench/py/b9_run.py: gen.py logs K contacts in; per watcher session (imstatus's
# bench/src/bin/xmpp_watcher.rs, slixmpp's bench/py/watcher.py --reconnect) a storm of 5 blasts
# back to back (quick ~31,000 changes from 1,000 contacts; full ~110,000 from 5,000), every
# contact cycling away/xa/dnd/unavailable/available. When the watcher has received half of it,
# its TCP connection is destroyed with `ss -K` under the live process; the watcher must log in
# again by itself. After the storm, its final state of every contact (imstatus: the hub's
# snapshot; slixmpp: client_roster) is compared with the last presence the generator sent.
# mismatches must be 0; recovery_s = connection destroyed → synced again. RUNS rounds.
NEEDS_B9=prosody
b9() {
  ensure_apt ss iproute2
  local k storm out
  export IMSTATUS_WATCHER; IMSTATUS_WATCHER=$(bench_bin xmpp_watcher)
  if [ "$MODE" = quick ]; then k=${B9_K:-1000}; storm=${B9_STORM:-30000}; else k=${B9_K:-5000}; storm=${B9_STORM:-100000}; fi
  log "B9 K=$k: flap storm of ~$storm with a broken connection, imstatus and slixmpp, $RUNS rounds"
  out=$(timeout $((300 + RUNS * 2 * 120)) "$PY" "$HERE/py/b9_run.py" prosody --server-pid "$PROSODY_PID" \
    --impls imstatus,slix --runs "$RUNS" --k "$k" --storm "$storm" --dir "$WORK" 2>"$WORK/b9.err") || { tail -20 "$WORK/b9.err" >&2; echo "B9 failed" >&2; exit 1; }
  while IFS= read -r line; do
    emit B9 "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["impl"])' "$line")@k$k" \
      "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["run"])' "$line")" "$line"
  done < <(echo "$out" | grep '^FLAT ' | sed 's/^FLAT //')
}
