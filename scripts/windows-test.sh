#!/usr/bin/env bash
# The Windows source's own tests (crates/windows), under wine: the `IM Providers` registry path
# for real (values written with reg.exe, seen through RegNotifyChangeKeyValue) and the COM path
# against the Messenger test double (crates/windows-testdouble, an out-of-process COM server
# that is never shipped): activation, IDispatch calls across processes, the DMessengerEvents
# connection point, OnSignin/OnSignout/OnMyStatusChange/OnAppShutdown/OnContactStatusChange,
# the server being killed, access denied.
#
#   scripts/windows-test.sh            # installs what is missing, builds, runs the tests
#   scripts/windows-test.sh --build-only   # only the build (scripts/test.sh runs it early)
#
# Installs Debian's rustc-web/cargo-web/rust-web-src, MinGW-w64 and wine when missing; builds
# std for x86_64-pc-windows-gnu from source (-Zbuild-std, release profile, shared with
# scripts/windows-build.sh in target/windows); uses its own wine prefix ($IMSTATUS_WINE_PREFIX,
# default /tmp/imstatus-wine) and stops that prefix's wineserver at the end. Nothing listens on
# any network: COM between the tests and the double goes through wine's local RPC. Every
# process a test starts is stopped by PID by the test itself. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

build_only=false
if [ "${1:-}" = --build-only ]; then build_only=true; fi

ensure_windows_packages

# The build must be warning-free (Debian's rustc-web has no clippy): cargo replays cached
# warnings, so this also holds for a build with nothing to do.
echo "== windows source: build imstatus-windows and its test double ($WINDOWS_TARGET)"
start=$(date +%s)
out=$(CARGO_TERM_COLOR=never windows_cargo build --locked -p imstatus-windows \
  -p imstatus-windows-testdouble --tests --bins 2>&1) || { echo "$out"; exit 1; }
if echo "$out" | grep -Eq 'generated [0-9]+ warnings?'; then
  echo "$out"
  echo "windows build has warnings" >&2
  exit 1
fi
echo "built in $(( $(date +%s) - start ))s"
if $build_only; then exit 0; fi

export WINEPREFIX=${IMSTATUS_WINE_PREFIX:-/tmp/imstatus-wine}
export WINEDEBUG=-all
ensure_wine_prefix "$WINEPREFIX"
trap 'wineserver -k >/dev/null 2>&1 || true' EXIT
start_persistent_wineserver

echo "== windows source: tests under wine ($WINEPREFIX)"
start=$(date +%s)
status=0
CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine \
  windows_cargo test --locked -p imstatus-windows --tests || status=$?
echo "tests ran in $(( $(date +%s) - start ))s"
exit "$status"
