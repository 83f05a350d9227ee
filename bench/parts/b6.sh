# bench/parts/b6.sh — B6: the gateway's REST read path under wrk (sourced by bench/run.sh).
#
# wrk (Debian `wrk`) at 1, 16 and 64 connections (-t1 at 1, -t2 otherwise), B6_SECS each
# (quick 3 s, full 10 s; quick is short to keep the whole quick suite within 10 min), against three servers, each its own process on 127.0.0.1:
#   imstatus  bench/src/bin/gateway_server.rs --accounts 2000: the real gateway (axum
#             router, bearer token check, hub snapshot, serde) over a hub fed by the process, holding
#             2,000 accounts u0001…u2000, each signed in from `desk` (away, a message,
#             priority 5) with 3 contacts; `GET /v1/accounts/u<random>` with
#             `Authorization: Bearer bench-token` (bench/wrk/imstatus_get.lua), ~650-byte answer
#   floor     bench/src/bin/http_floor.rs: axum + tokio, 2 workers, a fixed ~70-byte JSON
#             (same lua), i.e. the HTTP stack alone
#   ejabberd  mod_http_api POST /api/get_presence for a random u0001…u2000 (bench/wrk/
#             get_presence.lua, the perf-baselines §3c script) with 2,000 raw sessions online
#             and away (bench/py/hold_sessions.py)
# "list all" (variant list-c16, B6_LIST_SECS: quick 2 s, first run only unless set; full 10 s): GET /v1/accounts (2,000 snapshots,
# ~1.3 MB), the floor's fixed 2,000-entry array (~140 KB), ejabberd's connected_users (2,000 JIDs).
# Per cell: req/s, p50/p90/p99, server CPU µs per request (utime+stime of the server PID from
# /proc over the wrk run / requests), non-2xx and socket errors (both must be 0).
# Knobs: B6_SECS, B6_LIST_SECS, B6_CONNS ("1 16 64"), B6_IMPLS ("imstatus floor ejabberd"),
# B6_PORT (25470; +1 floor), WORKERS (server tokio workers, 2).
NEEDS_B6=ejabberd

cpu_ticks() { # pid -> utime+stime in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

b6_cell() { # impl variant run pid url lua conns secs
  local impl=$1 variant=$2 r=$3 pid=$4 url=$5 lua=$6 c=$7 secs=$8 t f c0 c1 out
  t=$(( c < 2 ? 1 : 2 ))
  f=$WORK/b6-$impl-$variant-$r.txt
  c0=$(cpu_ticks "$pid")
  NUSERS=2000 XMPP_HOST=e.test TOKEN=bench-token \
    timeout $((secs + 20)) wrk -t"$t" -c"$c" -d"${secs}s" --latency -s "$HERE/wrk/$lua" "$url" > "$f" 2>&1 ||
    { cat "$f" >&2; echo "B6: wrk failed ($impl $variant)" >&2; exit 1; }
  c1=$(cpu_ticks "$pid")
  out=$("$PY" "$HERE/py/wrk_json.py" "$f" $((c1 - c0)) "$(getconf CLK_TCK)")
  emit B6 "$impl@$variant" "$r" "$out"
  log "B6 $impl@$variant: $out"
}

b6() {
  ensure_apt wrk wrk
  local secs list_secs conns impls port=${B6_PORT:-25470}
  if [ "$MODE" = quick ]; then secs=${B6_SECS:-3}; list_secs=${B6_LIST_SECS:-2}; else secs=${B6_SECS:-10}; list_secs=${B6_LIST_SECS:-10}; fi
  conns=${B6_CONNS:-1 16 64}; impls=${B6_IMPLS:-imstatus floor ejabberd}
  local ims_pid floor_pid hold_pid c r impl pid url one all server floor
  server=$(bench_bin gateway_server); floor=$(bench_bin http_floor)
  "$server" 127.0.0.1:$port --accounts 2000 > "$WORK/b6-imstatus.log" 2>&1 &
  ims_pid=$!; PIDS+=("$ims_pid")
  "$floor" 127.0.0.1:$((port + 1)) > "$WORK/b6-floor.log" 2>&1 &
  floor_pid=$!; PIDS+=("$floor_pid")
  wait_port $port $ims_pid && wait_port $((port + 1)) $floor_pid ||
    { cat "$WORK"/b6-*.log >&2; echo "B6: a server did not start" >&2; exit 1; }
  hold_pid=
  if [[ " $impls " == *" ejabberd "* ]]; then
    "$PY" "$HERE/py/hold_sessions.py" ejabberd --n 2000 --hold 900 > "$WORK/b6-hold.log" 2>&1 &
    hold_pid=$!; PIDS+=("$hold_pid")
    for _ in $(seq 600); do grep -q '^READY' "$WORK/b6-hold.log" && break; kill -0 $hold_pid 2>/dev/null || break; sleep 0.1; done
    grep -q '^READY' "$WORK/b6-hold.log" || { cat "$WORK/b6-hold.log" >&2; echo "B6: ejabberd sessions did not log in" >&2; exit 1; }
    log "B6: $(cat "$WORK/b6-hold.log") sessions online on ejabberd"
  fi
  for r in $(seq "$RUNS"); do
    log "B6 run $r/$RUNS: wrk ${secs}s at $conns connections + list-all ${list_secs}s: $impls"
    for impl in $impls; do
      case $impl in
        imstatus) pid=$ims_pid; url=http://127.0.0.1:$port ;;
        floor) pid=$floor_pid; url=http://127.0.0.1:$((port + 1)) ;;
        ejabberd) pid=$EJABBERD_PID; url=http://127.0.0.1:$BENCH_EJABBERD_HTTP_PORT ;;
      esac
      if [ $impl = ejabberd ]; then one=get_presence.lua; all=connected_users.lua; else one=imstatus_get.lua; all=imstatus_list.lua; fi
      for c in $conns; do
        b6_cell $impl c$c "$r" "$pid" "$url" $one "$c" "$secs"
      done
      # quick: the list-all cells in the first run only (time budget)
      [ "$MODE" = quick ] && [ "$r" -gt 1 ] && [ -z "${B6_LIST_SECS:-}" ] && continue
      b6_cell $impl list-c16 "$r" "$pid" "$url" $all 16 "$list_secs"
    done
  done
  log "B6: RSS imstatus $(rss_kb $ims_pid) KB, floor $(rss_kb $floor_pid) KB, ejabberd $(rss_kb "${EJABBERD_PID:-0}") KB"
  kill $ims_pid $floor_pid ${hold_pid:+$hold_pid} 2>/dev/null || true
  wait $ims_pid $floor_pid ${hold_pid:+$hold_pid} 2>/dev/null || true
}
