# bench/parts/b7.sh — B7: Server-Sent Events fan-out (sourced by bench/run.sh).
#
# N subscribers (quick: 1,000 and 5,000; full: 100, 1,000, 5,000) on one tokio runtime
# (bench/src/bin/sse_fanout.rs, hyper-util client, 1 worker) read the event stream of
# a server in another process while the server makes B7_RATE (1,000) contact status changes a
# second for B7_SECS seconds (quick 2, full 5). Servers, each started fresh per cell:
#   imstatus  bench/src/bin/gateway_server.rs --contacts 50: the real gateway
#             (`GET /v1/events` with a bearer token) over a scripted hub; the changes are
#             contact presences of account alice (`contact_status_changed`, ~300 bytes each)
#             fed into the hub by the same process
#   floor     bench/src/bin/http_floor.rs: a minimal tokio broadcast → SSE server (each
#             event formatted once, shared Bytes, axum streaming body)
# Each change carries `b7 <seq> <CLOCK_MONOTONIC ns>` stamped just before it enters the hub
# (or the broadcast); the client stamps each chunk on arrival with the same clock.
# Metrics per cell: lost (N × sent − distinct deliveries; must be 0), delivery latency
# p50/p90/p99, resyncs, server CPU (% of one core and µs per delivery, from /proc, over the
# flow and the drain), server RSS per subscriber (RSS with N subscribers and their snapshots
# read − RSS before, / N; and the same after the flow).
#   ejabberd  (full mode, or when B7_IMPLS names it; only for N <= B7_EJ_MAX, default 100):
#             the same changes as XMPP presences of `watcher` (on every u's roster, both),
#             broadcast by the private ejabberd to N raw sessions u0001…uN; sender and
#             receivers in bench/py/xmpp_fanout.py (marker in <status>, regex reader)
# Knobs: B7_NS, B7_RATE, B7_SECS, B7_DRAIN (seconds to wait for stragglers after the last change: quick 1, full 10; a
# server that cannot send R changes/s stops its flow after B7_SECS + 1 s and reports what it sent),
# B7_IMPLS (quick "imstatus floor", full "imstatus floor ejabberd"), B7_EJ_MAX,
# B7_PORT (25480; control port +2).
NEEDS_B7=
[ "$MODE" = full ] && NEEDS_B7=ejabberd
case " ${B7_IMPLS:-} " in *" ejabberd "*) NEEDS_B7=ejabberd ;; esac

b7() {
  local ns secs drain rate=${B7_RATE:-1000} impls port=${B7_PORT:-25480} ej_max=${B7_EJ_MAX:-100}
  local r n impl pid out tok server floor client
  if [ "$MODE" = quick ]; then ns=${B7_NS:-1000 5000}; secs=${B7_SECS:-2}; drain=${B7_DRAIN:-1}; impls=${B7_IMPLS:-imstatus floor}
  else ns=${B7_NS:-100 1000 5000}; secs=${B7_SECS:-5}; drain=${B7_DRAIN:-10}; impls=${B7_IMPLS:-imstatus floor ejabberd}; fi
  server=$(bench_bin gateway_server); floor=$(bench_bin http_floor); client=$(bench_bin sse_fanout)
  for r in $(seq "$RUNS"); do
    for n in $ns; do
      log "B7 run $r/$RUNS: $n SSE subscribers, $rate changes/s for ${secs}s: $impls"
      for impl in $impls; do
        if [ "$impl" = ejabberd ]; then
          [ "$n" -le "$ej_max" ] || continue
          out=$(timeout $((secs + drain + 150)) "$PY" "$HERE/py/xmpp_fanout.py" --n "$n" --rate "$rate" --secs "$secs" \
            --drain "$drain" --pid "$EJABBERD_PID" 2> "$WORK/b7-client.log") ||
            { cat "$WORK/b7-client.log" >&2; echo "B7: xmpp_fanout failed (n=$n)" >&2; exit 1; }
          emit B7 "$impl@n$n" "$r" "$out"
          log "B7 $impl@n$n: $out"
          continue
        fi
        case $impl in
          imstatus) "$server" 127.0.0.1:$port --contacts 50 --control 127.0.0.1:$((port + 2)) > "$WORK/b7-$impl.log" 2>&1 & tok="--token bench-token" ;;
          floor) "$floor" 127.0.0.1:$port --control 127.0.0.1:$((port + 2)) > "$WORK/b7-$impl.log" 2>&1 & tok= ;;
          *) echo "B7: unknown impl $impl" >&2; exit 1 ;;
        esac
        pid=$!; PIDS+=("$pid")
        wait_port $port $pid && wait_port $((port + 2)) $pid || { cat "$WORK/b7-$impl.log" >&2; echo "B7: $impl did not start" >&2; exit 1; }
        # shellcheck disable=SC2086
        out=$(timeout $((secs + drain + 60)) "$client" --url http://127.0.0.1:$port/v1/events $tok \
          --n "$n" --control 127.0.0.1:$((port + 2)) --rate "$rate" --secs "$secs" --drain "$drain" \
          --connect-timeout 30 --pid "$pid" 2> "$WORK/b7-client.log") ||
          { cat "$WORK/b7-client.log" >&2; echo "B7: sse_fanout failed ($impl, n=$n)" >&2; kill $pid; exit 1; }
        kill -9 $pid 2>/dev/null || true  # nothing to drain: the client is gone
        wait $pid 2>/dev/null || true
        emit B7 "$impl@n$n" "$r" "$out"
        log "B7 $impl@n$n: $out"
      done
    done
  done
}
