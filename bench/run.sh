#!/usr/bin/env bash
# imstatus benchmark suite: imstatus side by side with its peers, one command.
#
#   bench/run.sh [quick|full] [B1 … B9 P]      (default: quick, every benchmark)
#
# Installs what it needs when missing (Debian: prosody, ejabberd, wrk, finch, dbus, tmux,
# python3-venv; bench/.venv with slixmpp==1.17 and uvloop), builds the release binaries
# (imstatus, and the drivers of bench/src/bin: package imstatus-bench), runs each selected
# benchmark RUNS times (3) per implementation, writes bench/results/<timestamp>.json (raw runs
# + medians) and prints a markdown table. Everything listens on and talks to 127.0.0.1 only; every loop is bounded in
# count and time; every process started here is stopped by its PID on exit.
#
# Benchmarks: B1, B3 and B8 are defined here; every other one lives in bench/parts/<name>.sh,
# which defines a function `bN` (lower-case) and may set NEEDS_BN="prosody ejabberd wrk ...".
# Results: one JSON line per run via `emit BENCH IMPL RUN JSON`; IMPL may be "name@variant"
# (ratios are then taken against "imstatus@variant"). Columns of the table:
# bench/parts/<BENCH>.cols.json (see summarize.py). See docs/benchmarks.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
MODE=quick
SEL=()
for a in "$@"; do
  case "$a" in
    quick|full) MODE=$a ;;
    B[0-9]*|P) SEL+=("$a") ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
ALL=(B1 B2 B3 B4 B5 B6 B7 B8 B9 P)
[ ${#SEL[@]} -eq 0 ] && SEL=("${ALL[@]}")
RUNS=${RUNS:-3}
if [ "$MODE" = quick ]; then B1_N=${B1_N:-200}; B3_M=${B3_M:-100000}; else B1_N=${B1_N:-500}; B3_M=${B3_M:-300000}; fi
B3_K=${B3_K:-2000}; B8_N=${B8_N:-5000}; B8_BIG=${B8_BIG:-100000}
export BENCH_PROSODY_PORT=${BENCH_PROSODY_PORT:-25322} BENCH_REPLAY_PORT=${BENCH_REPLAY_PORT:-25390}

WORK=$(mktemp -d /tmp/imstatus-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo

# ---------------------------------------------------------------- dependencies
# ensure_apt COMMAND PACKAGE...: install the Debian packages when COMMAND is missing.
APT_UPDATED=0
apt_install() {
  log "installing $*"
  [ $APT_UPDATED = 1 ] || { $SUDO apt-get update -qq; APT_UPDATED=1; }
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
ensure_apt() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null || apt_install "$@"
}
ensure_apt prosody prosody
PY=$HERE/.venv/bin/python
if ! [ -x "$PY" ] || ! "$PY" -c 'import slixmpp' 2>/dev/null; then
  log "creating bench/.venv with slixmpp==1.17"
  ensure_apt python3 python3
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv   # Debian's python3
  python3 -m venv "$HERE/.venv"
  "$HERE/.venv/bin/pip" install -q slixmpp==1.17
fi
log "building release binaries"
# The product binary on its own, exactly as a user builds it (B8 measures it; built together
# with the drivers, its dependencies would get the drivers' features), then the drivers.
(cd "$ROOT" && cargo build --release --locked -q -p imstatus && cargo build --release --locked -q -p imstatus-bench --bins)
# Where cargo puts its output (CARGO_TARGET_DIR or the workspace's target/); parts use it too.
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
IMSTATUS=$TARGET_DIR/release/imstatus
# bench_bin NAME: the path of a driver (bench/src/bin/NAME.rs), run directly so that `timeout`
# and the EXIT trap reach the measuring process itself.
bench_bin() {
  local exe=$TARGET_DIR/release/$1
  [ -x "$exe" ] || { echo "bench driver $exe not built" >&2; exit 1; }
  echo "$exe"
}
LATENCY_BIN=$(bench_bin xmpp_latency); INGEST_BIN=$(bench_bin xmpp_ingest)

wait_port() { # port pid
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
ts() { date -u +%Y%m%dT%H%M%SZ; }
RAW=$WORK/raw.jsonl; : > "$RAW"
emit() { # bench impl run json-object-line  -> adds bench/impl/run
  local line; line=$(echo "$4" | tail -1)
  echo "$line" | "$PY" -c 'import json,sys; d=json.loads(sys.stdin.read()); d.update(bench=sys.argv[1], impl=sys.argv[2], run=int(sys.argv[3])); print(json.dumps(d))' "$1" "$2" "$3" >> "$RAW"
}

# ---------------------------------------------------------------- prosody (private, loopback)
PROSODY_PID=
start_prosody() {
  [ -n "$PROSODY_PID" ] && return 0
  local d=$WORK/prosody
  mkdir -p "$d/data" "$d/certs"
  cat > "$d/prosody.cfg.lua" <<LUA
-- bench/run.sh: private Prosody, loopback only; like shared/bench-reference/configs/prosody-nodelay.cfg.lua
pidfile = "$d/prosody.pid"
data_path = "$d/data"
certificates = "$d/certs"
run_as_root = true
daemonize = false
network_backend = "epoll"
network_settings = { nagle = false }
interfaces = { "127.0.0.1" }; local_interfaces = { "127.0.0.1" }
c2s_ports = { $BENCH_PROSODY_PORT }; c2s_direct_tls_ports = { }; s2s_ports = { }; http_ports = { }; https_ports = { }
modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "carbons"; "lastactivity"; "posix" }
modules_disabled = { "s2s"; "s2s_auth_certs"; "offline" }
allow_registration = false
c2s_require_encryption = false; s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
c2s_timeout = 600
log = { warn = "$d/prosody.log" }
VirtualHost "p.test"
LUA
  local big=()
  # B8's big-roster cells: users r50k and r$B8_BIG with 50,000 and B8_BIG contacts (~8 s).
  [[ " ${SEL[*]} " == *" B8 "* ]] && big=(--big "$B8_BIG")
  "$PY" "$HERE/py/mk_prosody_users.py" "$d/data" p.test "$B8_N" "${big[@]}" >&2
  prosody --config "$d/prosody.cfg.lua" -F > "$d/stdout.log" 2>&1 < /dev/null &
  PROSODY_PID=$!; PIDS+=("$PROSODY_PID")
  wait_port "$BENCH_PROSODY_PORT" "$PROSODY_PID" || { cat "$d/stdout.log" >&2; echo "prosody did not start" >&2; exit 1; }
  log "prosody pid $PROSODY_PID on 127.0.0.1:$BENCH_PROSODY_PORT ($B8_N contacts provisioned)"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- B1
b1() {
  local r out
  for r in $(seq "$RUNS"); do
    log "B1 run $r/$RUNS: imstatus (task, main), raw, slixmpp, pipe, watch ($B1_N toggles each)"
    # imstatus: the subscriber in a spawned task (where the gateway's, MQTT's and watch's
    # consumers run); imstatus-main: the same loop on the main thread's `block_on`, which a
    # tokio worker has to wake across threads (docs/benchmarks.md, B1).
    for on in worker main; do
      out=$(timeout 120 "$LATENCY_BIN" --port "$BENCH_PROSODY_PORT" --domain p.test --n "$B1_N" --gap-ms 5 --on $on)
      emit B1 "$([ $on = main ] && echo imstatus-main || echo imstatus)" "$r" "$out"
    done
    for impl in raw slix pipe watch; do
      # watch: `imstatus watch --json` read from its stdout pipe; pipe: its floor, a raw
      # reader process writing one line per presence to its stdout pipe (issue: latency to
      # the user, not just to the hub).
      out=$(timeout 120 "$PY" "$HERE/py/latency.py" prosody --observer self --impl $impl --n "$B1_N" --gap-ms 5 --states away,available --imstatus "$IMSTATUS")
      emit B1 "$impl" "$r" "$out"
    done
  done
}

# ---------------------------------------------------------------- B3
replay_server() { # -> REPLAY_PID
  "$PY" "$HERE/py/replay_server.py" --port "$BENCH_REPLAY_PORT" --k "$B3_K" --m "$B3_M" > "$WORK/replay.log" 2>&1 &
  REPLAY_PID=$!; PIDS+=("$REPLAY_PID")
  wait_port "$BENCH_REPLAY_PORT" "$REPLAY_PID" || { echo "replay server did not start" >&2; exit 1; }
}
b3() {
  local r out
  for r in $(seq "$RUNS"); do
    log "B3 run $r/$RUNS: imstatus and slixmpp against replay_server.py (K=$B3_K, M=$B3_M)"
    replay_server
    out=$(timeout 180 "$INGEST_BIN" --port "$BENCH_REPLAY_PORT" --k "$B3_K" --m "$B3_M")
    kill "$REPLAY_PID"; wait "$REPLAY_PID" 2>/dev/null || true
    emit B3 imstatus "$r" "$out"
    for impl in slix raw; do
      out=$(timeout 300 "$PY" "$HERE/py/replay_run.py" --impl $impl --k "$B3_K" --m "$B3_M")
      out=$(echo "$out" | tail -1 | "$PY" -c 'import json,sys; d=json.loads(sys.stdin.read()); d["rate"]=d["rate_first_last"]; print(json.dumps(d))')
      emit B3 "$impl" "$r" "$out"
    done
  done
}

# ---------------------------------------------------------------- B8
# B8_SYNC: seconds from the last spawn to its first snapshot (imstatus) or READY (peers),
# polled every 0.05 s; set by the two functions below (they run in this shell, not a subshell).
B8_SYNC=0; B8_RSS=0
now_s() { date +%s.%N; }
b8_wait() { # pid file pattern t0: waits (up to 60 s) for pattern in file, sets B8_SYNC; 1 if not seen
  local i
  for i in $(seq 1200); do
    grep -q "$3" "$2" 2>/dev/null && { B8_SYNC=$(awk -v a="$(now_s)" -v b="$4" 'BEGIN { printf "%.2f", a - b }'); return 0; }
    kill -0 "$1" 2>/dev/null || break; sleep 0.05
  done
  return 1
}
imstatus_rss() { # user contacts(true|false) -> B8_RSS (KB, 3 s after synced), B8_SYNC
  local user=$1 contacts=$2 d=$WORK/b8-$1-$2 pid t0
  mkdir -p "$d"; echo pw > "$d/pw"; chmod 600 "$d/pw"
  cat > "$d/config.toml" <<TOML
[[account]]
name = "$user"
source = "xmpp"
jid = "$user@p.test"
password_file = "$d/pw"
server = "127.0.0.1:$BENCH_PROSODY_PORT"
tls = "insecure-plaintext"
visibility = "visible"
contacts = $contacts
TOML
  t0=$(now_s)
  RUST_LOG=warn,imstatus_xmpp::source=debug,imstatus_hub=debug \
    "$IMSTATUS" --config "$d/config.toml" watch --json > "$d/out.jsonl" 2> "$d/err.log" &
  pid=$!; PIDS+=("$pid")
  # Synced: logged in, the whole roster known (offline contacts too), the initial presences in.
  b8_wait $pid "$d/err.log" 'XMPP source synced' "$t0" || { tail -n 5 "$d/err.log" "$d/out.jsonl" >&2; echo "B8: imstatus as $user did not sync" >&2; exit 1; }
  sleep 3
  B8_RSS=$(rss_kb $pid)
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
}
peer_rss() { # impl(slix|raw) user -> B8_RSS (KB, 3 s after READY: roster fetched, presence sent), B8_SYNC
  local impl=$1 user=$2 pid f=$WORK/$1-$2.out t0
  t0=$(now_s)
  WATCHER_USER=$user "$PY" "$HERE/py/watcher.py" prosody --impl "$impl" > "$f" 2>&1 &
  pid=$!; PIDS+=("$pid")
  b8_wait $pid "$f" '^READY' "$t0" || { tail -5 "$f" >&2; echo "B8: $impl as $user did not log in" >&2; exit 1; }
  sleep 3
  B8_RSS=$(rss_kb $pid)
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
}
b8() {
  local r idle small big n user sync
  for r in $(seq "$RUNS"); do
    log "B8 run $r/$RUNS: RSS of imstatus and slixmpp, idle and with a $((B8_N + 1))-item roster"
    imstatus_rss alice false; idle=$B8_RSS; imstatus_rss alice true; small=$B8_RSS
    imstatus_rss watcher true; big=$B8_RSS; sync=$B8_SYNC
    emit B8 imstatus "$r" "{\"idle_rss_kb\": $idle, \"small_rss_kb\": $small, \"big_rss_kb\": $big, \"bytes_per_contact\": $(( (big - small) * 1024 / B8_N )), \"sync_s\": $sync}"
    peer_rss slix alice; small=$B8_RSS; peer_rss slix watcher; big=$B8_RSS; sync=$B8_SYNC
    emit B8 slix "$r" "{\"idle_rss_kb\": $small, \"small_rss_kb\": $small, \"big_rss_kb\": $big, \"bytes_per_contact\": $(( (big - small) * 1024 / B8_N )), \"sync_s\": $sync}"
    # The big rosters: memory per contact at 50,000 and B8_BIG (100,000), and the time to a
    # synced login (imstatus: the whole roster known, offline contacts included; the peers:
    # roster fetched and presence sent; raw = regex over the socket, no DOM).
    for n in 50000 "$B8_BIG"; do
      user=r$n; [ "$n" = 50000 ] && user=r50k
      log "B8 run $r/$RUNS: imstatus, slixmpp and raw as $user ($n-item roster)"
      imstatus_rss alice true; small=$B8_RSS; imstatus_rss "$user" true; big=$B8_RSS; sync=$B8_SYNC
      emit B8 "imstatus@n$n" "$r" "{\"small_rss_kb\": $small, \"big_rss_kb\": $big, \"bytes_per_contact\": $(( (big - small) * 1024 / n )), \"sync_s\": $sync}"
      for impl in slix raw; do
        peer_rss $impl alice; small=$B8_RSS; peer_rss $impl "$user"; big=$B8_RSS; sync=$B8_SYNC
        emit B8 "$impl@n$n" "$r" "{\"small_rss_kb\": $small, \"big_rss_kb\": $big, \"bytes_per_contact\": $(( (big - small) * 1024 / n )), \"sync_s\": $sync}"
      done
    done
  done
}

# ---------------------------------------------------------------- parts
NEEDS_B1=prosody; NEEDS_B3=; NEEDS_B8=prosody
for f in "$HERE"/parts/*.sh; do [ -e "$f" ] && . "$f"; done

# ---------------------------------------------------------------- run
RUN_SEL=(); NEEDS=" "
for b in "${SEL[@]}"; do
  fn=$(echo "$b" | tr 'A-Z' 'a-z')
  if declare -F "$fn" >/dev/null; then
    RUN_SEL+=("$b"); v=NEEDS_$b; NEEDS+="${!v:-} "
  else
    echo "$b: not implemented yet (see docs/benchmarks.md)" >&2
  fi
done
# Services a benchmark needs are started once, before the first benchmark; a part may define
# start_<service> (e.g. start_ejabberd) and install its own packages in it.
for svc in $(echo $NEEDS | tr ' ' '\n' | sort -u); do
  declare -F "start_$svc" >/dev/null || { echo "no start_$svc for a benchmark's NEEDS" >&2; exit 1; }
  "start_$svc"
done
for b in "${RUN_SEL[@]}"; do
  fn=$(echo "$b" | tr 'A-Z' 'a-z'); "$fn"
done
mkdir -p "$HERE/results"
OUT=$HERE/results/$(ts).json
"$PY" "$HERE/py/summarize.py" "$RAW" "$OUT" "$MODE" "$HERE/parts"
