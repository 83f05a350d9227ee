# bench/parts/p.sh — "P": the libpurple source against a real finch (sourced by bench/run.sh).
#
# bench/src/bin/purple_latency.rs starts its own world (a private dbus-daemon, a private
# Prosody, finch in tmux; all through imstatus-testkit), then measures, per run:
#   oneshot         hub start → synced (what `imstatus status` waits for), 20 times
#   saved_status    SavedstatusChanged received by a plain D-Bus connection → status_changed, 100 toggles
#   account_status  AccountStatusChanged (first signal of a change) → status_changed
#   activate        SavedstatusActivate sent → status_changed (includes finch's own work)
#   signed_off/on   AccountSignedOff/On received → signed_out/signed_in, 20 each
#   kill            kill -9 of finch → client_shutdown, 10 kills; `floor@kill` is the same kill
#                   seen by a plain D-Bus connection (NameOwnerChanged), the physical limit.
# The "received by a plain connection" stamps are the floor of the signal rows: the numbers are
# imstatus's own cost on top of D-Bus delivery.
NEEDS_P=
p() {
  ensure_apt finch finch
  ensure_apt dbus-daemon dbus
  ensure_apt tmux tmux
  local exe r out
  exe=$(bench_bin purple_latency)
  for r in $(seq "$RUNS"); do
    log "P run $r/$RUNS: libpurple source against a real finch"
    out=$(timeout 240 "$exe" 2>"$WORK/p-$r.log") ||
      { cat "$WORK/p-$r.log" >&2; echo "P: the purple bench failed" >&2; exit 1; }
    while IFS= read -r line; do
      case "$line" in '{"impl"'*) emit P "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["impl"])' "$line")" "$r" "$line" ;; esac
    done <<< "$out"
  done
}
