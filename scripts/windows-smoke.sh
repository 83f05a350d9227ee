#!/usr/bin/env bash
# Smoke test of the Windows build under wine: `imstatus.exe --version`; `status --json` against a
# real Prosody on loopback (the same JSON as the Linux binary on the same config); a bad config
# (exit 2 with file:line); `watch` ending on Ctrl-C and on a closed stdout; `watch --exec` hooks
# (variables, no injection, killed at their time limit); `serve` over HTTP. The tests are
# crates/cli/tests/windows.rs; they run only with IMSTATUS_WINDOWS_EXE set, which this does.
# Own wine prefix ($IMSTATUS_WINE_CLI_PREFIX, default /tmp/imstatus-wine-cli), whose wineserver
# is stopped at the end.
#
#   scripts/windows-smoke.sh [EXE]   # default: build it with scripts/windows-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_windows_packages
ensure_demo_packages   # prosody
exe=${1:-$(scripts/windows-build.sh)}
exe=$(realpath "$exe")
export WINEPREFIX=${IMSTATUS_WINE_CLI_PREFIX:-/tmp/imstatus-wine-cli}
export WINEDEBUG=-all
ensure_wine_prefix "$WINEPREFIX"
trap 'wineserver -k >/dev/null 2>&1 || true' EXIT
start_persistent_wineserver

echo "== windows smoke: $exe under wine ($WINEPREFIX)"
wine "$exe" --version
# --workspace, as scripts/test.sh builds the suite: `-p imstatus` alone would resolve features
# differently and build the test binary again.
out=$(IMSTATUS_WINDOWS_EXE="$exe" cargo test --workspace --locked --test main -- windows:: --test-threads=2 2>&1) \
  || { echo "$out"; exit 1; }
echo "$out" | grep -E '^(test |running|test result)'
# Not skipped: with IMSTATUS_WINDOWS_EXE set every test runs (a missing exe fails them).
if echo "$out" | grep -q 'skipped: IMSTATUS_WINDOWS_EXE'; then
  echo "windows smoke tests were skipped" >&2
  exit 1
fi
