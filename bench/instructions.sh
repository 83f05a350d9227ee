#!/usr/bin/env bash
# B6 counted in instructions: user-space instructions per `GET /v1/accounts/{name}` of the
# gateway against the floor's, under valgrind's callgrind. On this 2-core machine wrk's rates
# move by 10-25 % between 3-second cells (the floor's own from 72k to 105k req/s), more than
# what separates the two servers; an instruction count does not move with the neighbours.
#
#   bench/instructions.sh                    # gateway_server and http_floor (release builds)
#   OLD=/path/to/gateway_server bench/instructions.sh   # and an older gateway_server beside them
#   DUMPS=/some/dir bench/instructions.sh    # keeps the callgrind dumps there, for
#                                            # `callgrind_annotate --threshold=100 DIR/gateway.*.1`
#
# Each server runs alone under callgrind (threads serialised: counts, not contention), on
# 127.0.0.1:25490-25492, with 2,000 accounts for the gateway, as in B6. wrk warms it up for
# 3 s, the counters are zeroed (`callgrind_control -z`), wrk sends bench/wrk/imstatus_get.lua
# at 4 connections for SECS (10) seconds, the counters are dumped and divided by wrk's request
# count. Callgrind's CPU has no SHA instructions (the sha2 crate then hashes in software, as
# on processors without them); the kernel's share (syscalls) is not counted. Every process is
# stopped by its PID; the loops are bounded.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT"
. scripts/lib.sh
ensure_debs valgrind wrk curl
SECS=${SECS:-10}
cargo build --release --locked -q -p imstatus-bench --bin gateway_server --bin http_floor
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
WORK=$(mktemp -d /tmp/imstatus-instr.XXXXXX)
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# control -z|-d NAME: zeroes or dumps the counters of the process under callgrind ($PID).
control() {
  timeout 60 callgrind_control "$1" "$PID" >> "$WORK/$2.log" 2>&1 ||
    { cat "$WORK/$2.log" >&2; echo "instructions: callgrind_control $1 failed for $2" >&2; exit 1; }
}

# count NAME PORT BINARY ARGS...: appends "NAME requests instructions instructions/request"
# to $WORK/results.
count() {
  local name=$1 port=$2 bin=$3 out reqs ir
  shift 3
  if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "instructions: 127.0.0.1:$port is already taken" >&2; exit 1
  fi
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.%p" "$bin" 127.0.0.1:"$port" "$@" \
    > "$WORK/$name.log" 2>&1 &
  PID=$!
  local up=false
  for _ in $(seq 300); do
    kill -0 "$PID" 2>/dev/null || break
    if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then up=true; break; fi
    sleep 0.2
  done
  $up && kill -0 "$PID" 2>/dev/null ||
    { cat "$WORK/$name.log" >&2; echo "instructions: $name did not start on $port" >&2; exit 1; }
  NUSERS=2000 TOKEN=bench-token timeout 30 wrk -t1 -c4 -d3s \
    -s bench/wrk/imstatus_get.lua "http://127.0.0.1:$port" > /dev/null
  control -z "$name"
  out=$(NUSERS=2000 TOKEN=bench-token timeout $((SECS + 30)) wrk -t1 -c4 -d"${SECS}s" \
    -s bench/wrk/imstatus_get.lua "http://127.0.0.1:$port")
  control -d "$name"
  local dump=$WORK/$name.$PID.1   # the first dump; the one at exit has no suffix
  for _ in $(seq 100); do [ -s "$dump" ] && break; sleep 0.1; done
  [ -s "$dump" ] || { echo "instructions: callgrind wrote no dump for $name" >&2; exit 1; }
  if [ -n "${DUMPS:-}" ]; then mkdir -p "$DUMPS" && cp "$dump" "$DUMPS/"; fi
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
  if echo "$out" | grep -Eq 'Non-2xx|Socket errors'; then
    echo "$out" >&2; echo "instructions: $name answered errors" >&2; exit 1
  fi
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  ir=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  [[ $reqs =~ ^[0-9]+$ && $reqs -gt 0 && $ir =~ ^[0-9]+$ ]] ||
    { echo "instructions: no count for $name (requests '$reqs', instructions '$ir')" >&2; exit 1; }
  echo "$name $reqs $ir $((ir / reqs))" >> "$WORK/results"
}

count gateway 25490 "$TARGET_DIR/release/gateway_server" --accounts 2000
count floor 25491 "$TARGET_DIR/release/http_floor"
if [ -n "${OLD:-}" ]; then count old 25492 "$OLD" --accounts 2000; fi
awk '
  { name[NR] = $1; reqs[NR] = $2; ir[NR] = $3; per[NR] = $4 }
  END {
    printf "%-8s %9s %15s %13s %10s\n", "server", "requests", "instructions", "per request", "÷ floor"
    for (i = 1; i <= NR; i++)
      printf "%-8s %9d %15d %13d %10.2f\n", name[i], reqs[i], ir[i], per[i], per[i] / per[2]
  }' "$WORK/results"
