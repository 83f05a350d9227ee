# bench/parts/ejabberd.sh — a private ejabberd for the suite (sourced by bench/run.sh).
#
# start_ejabberd (called once by run.sh when a benchmark has "ejabberd" in NEEDS_Bx):
# installs ejabberd with apt when missing and starts a private node on 127.0.0.1 like
# ../shared/docs/perf-baselines.md §1 ("tuned"): a private copy of ejabberdctl that runs as the
# caller (INSTALLUSER blanked), no epmd (ERL_DIST_PORT), its own HOME, cookie, spool and logs
# under $WORK/ejabberd, passwd/roster/last_activity as disc_copies (db/ejabberd.schema, applied
# to the freshly created tables at runtime, roster `us` index re-added), +sbwt none,
# cache_size 20000, no shaper, loopback-only mod_http_api without credentials. Users alice,
# watcher and u0001…u$EJ_N (password pw) with watcher⇄everyone rosters are created over
# mod_http_api (bench/py/mk_ejabberd_users.py). The node is stopped by its PID on exit
# (run.sh's cleanup; beam.smp shuts down on SIGTERM).
#
#   BENCH_EJABBERD_PORT (25323, c2s), BENCH_EJABBERD_HTTP_PORT (25380, /api and /ws),
#   BENCH_EJABBERD_DIST_PORT (25399, Erlang distribution), EJ_N (2000 users)
# Exposes: EJABBERD_PID, EJ_DIR, EJ_API (http://127.0.0.1:PORT/api), ej_ctl ARGS…, ej_eval 'Expr.'
export BENCH_EJABBERD_PORT=${BENCH_EJABBERD_PORT:-25323}
BENCH_EJABBERD_HTTP_PORT=${BENCH_EJABBERD_HTTP_PORT:-25380}
BENCH_EJABBERD_DIST_PORT=${BENCH_EJABBERD_DIST_PORT:-25399}
EJ_N=${EJ_N:-2000}
EJ_NODE=imstatusbench@localhost
EJ_COOKIE=imstatus_bench_cookie
EJ_API=http://127.0.0.1:$BENCH_EJABBERD_HTTP_PORT/api
EJABBERD_PID=
EJ_DIR=

ej_ctl() {
  HOME=$EJ_DIR/home timeout 60 "$EJ_DIR/ejabberdctl" --config-dir "$EJ_DIR" --config "$EJ_DIR/ejabberd.yml" \
    --ctl-config "$EJ_DIR/ejabberdctl.cfg" --logs "$EJ_DIR/logs" --spool "$EJ_DIR/db" --node "$EJ_NODE" "$@"
}
ej_eval() { # 'Erlang expression.' on the private node, epmd-less
  HOME=$EJ_DIR/home timeout 30 erl -sname "ev$$@localhost" -setcookie "$EJ_COOKIE" \
    -erl_epmd_port "$BENCH_EJABBERD_DIST_PORT" -start_epmd false -dist_listen false -hidden -noshell \
    -eval "R = rpc:call('$EJ_NODE', erl_eval, exprs, [element(2, erl_parse:parse_exprs(element(2, erl_scan:string(\"$1\")))), []]), io:format(\"~p~n\", [R]), halt()."
}

start_ejabberd() {
  [ -n "$EJABBERD_PID" ] && return 0
  ensure_apt ejabberdctl ejabberd
  ensure_apt erl erlang-base
  EJ_DIR=$WORK/ejabberd
  local d=$EJ_DIR
  mkdir -p "$d/db" "$d/logs" "$d/home"
  cat > "$d/ejabberd.yml" <<YML
## bench/parts/ejabberd.sh: private ejabberd, loopback only (perf-baselines.md §1, tuned)
loglevel: warning
log_rotate_count: 0
hosts: [e.test]
listen:
  - {port: $BENCH_EJABBERD_PORT, ip: "127.0.0.1", module: ejabberd_c2s, backlog: 1024, max_stanza_size: 1048576, shaper: none, access: c2s, starttls: false}
  - port: $BENCH_EJABBERD_HTTP_PORT
    ip: "127.0.0.1"
    module: ejabberd_http
    backlog: 1024
    request_handlers: {/api: mod_http_api, /ws: ejabberd_http_ws}
auth_method: internal
auth_password_format: plain
cache_size: 20000
disable_sasl_mechanisms: ["digest-md5", "X-OAUTH2"]
acl:
  admin: {user: ["admin@e.test"]}
  loopback: {ip: [127.0.0.0/8]}
access_rules: {c2s: {allow: all}, local: {allow: all}}
api_permissions:
  "console commands": {from: [ejabberd_ctl], who: all, what: "*"}
  "loopback http api, no auth": {from: [mod_http_api], who: {ip: 127.0.0.1/8}, what: ["*", "!stop", "!restart"]}
shaper_rules: {max_user_sessions: 10, c2s_shaper: none}
modules: {mod_admin_extra: {}, mod_disco: {}, mod_http_api: {}, mod_last: {}, mod_ping: {}, mod_carboncopy: {}, mod_roster: {versioning: false}}
YML
  cat > "$d/ejabberdctl.cfg" <<CFG
ERLANG_NODE=$EJ_NODE
ERL_DIST_PORT=$BENCH_EJABBERD_DIST_PORT
INET_DIST_INTERFACE=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
ERL_OPTIONS="-setcookie $EJ_COOKIE -env ERL_CRASH_DUMP_BYTES 0 +sbwt none +sbwtdcpu none +sbwtdio none"
EJABBERD_BYPASS_WARNINGS=true
EJABBERD_PID_PATH=$d/ejabberd.pid
CONTRIB_MODULES_PATH=$d/contrib
CONTRIB_MODULES_CONF_DIR=$d/contrib-conf
CFG
  cat > "$d/db/ejabberd.schema" <<'SCHEMA'
passwd: {storage_type: disc_copies}
roster: {storage_type: disc_copies, index: [us]}
last_activity: {storage_type: disc_copies}
roster_version: {storage_type: disc_copies}
SCHEMA
  cp /etc/ejabberd/inetrc "$d/" 2>/dev/null || true
  sed 's/^INSTALLUSER=ejabberd/INSTALLUSER=/' /usr/sbin/ejabberdctl > "$d/ejabberdctl"
  chmod +x "$d/ejabberdctl"
  log "starting a private ejabberd ($EJ_NODE, c2s 127.0.0.1:$BENCH_EJABBERD_PORT, http :$BENCH_EJABBERD_HTTP_PORT)"
  ej_ctl start > "$d/start.log" 2>&1 || { cat "$d/start.log" >&2; echo "ejabberd did not start" >&2; exit 1; }
  for _ in $(seq 100); do [ -s "$d/ejabberd.pid" ] && break; sleep 0.1; done
  EJABBERD_PID=$(cat "$d/ejabberd.pid" 2>/dev/null || true)
  [ -n "$EJABBERD_PID" ] || { echo "ejabberd wrote no pid file" >&2; exit 1; }
  PIDS+=("$EJABBERD_PID")
  ej_ctl started > /dev/null 2>&1 || { tail -20 "$d/logs/"*.log >&2; echo "ejabberd did not come up" >&2; exit 1; }
  wait_port "$BENCH_EJABBERD_HTTP_PORT" "$EJABBERD_PID" || { echo "ejabberd http did not listen" >&2; exit 1; }
  # 23.01 creates brand-new tables as dets (disc_only_copies) and applies the schema file only
  # on the next start; switch them now (kept across restarts because the schema says so) and
  # make sure the roster's `us` index exists (perf-baselines.md §1, quirks 1-3).
  ej_eval '[mnesia:change_table_copy_type(T, node(), disc_copies) || T <- [passwd, roster, last_activity, roster_version], mnesia:table_info(T, storage_type) =/= disc_copies], case mnesia:table_info(roster, index) of [] -> mnesia:add_table_index(roster, us); I -> I end.' > "$d/schema.log" 2>&1 || true
  ej_eval '[{T, mnesia:table_info(T, storage_type)} || T <- [passwd, roster, last_activity]].' >> "$d/schema.log" 2>&1 || true
  local storage=disc_copies
  grep -q 'disc_only' "$d/schema.log" && { storage="dets (!)"; log "warning: ejabberd tables still on dets: $(cat "$d/schema.log")"; }
  "$PY" "$HERE/py/mk_ejabberd_users.py" "$EJ_N" --api "$EJ_API" >&2
  log "ejabberd pid $EJABBERD_PID ($((EJ_N + 2)) users provisioned, passwd/roster/last_activity: $storage)"
}
