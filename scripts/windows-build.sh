#!/usr/bin/env bash
# Cross-builds imstatus.exe for Windows (x86_64-pc-windows-gnu) on this Debian machine and prints
# its path. Installs what it needs when missing (Debian's rustc-web, cargo-web and rust-web-src,
# MinGW-w64, wine). std is built from source for the target (-Zbuild-std), so a cold build takes
# a while; target/windows keeps it for the next run.
#
#   scripts/windows-build.sh            # imstatus.exe with $WINDOWS_FEATURES (scripts/lib.sh:
#                                       # xmpp, matrix, gateway, mqtt, windows)
#   scripts/windows-build.sh --locked   # extra arguments go to cargo build
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_windows_packages
echo "== windows build ($WINDOWS_TARGET)" >&2
start=$(date +%s)
# Warning-free, as clippy -D warnings is on Linux (Debian's rustc-web has no clippy); cargo
# replays cached warnings, so this holds for a build with nothing to do too.
out=$(CARGO_TERM_COLOR=never windows_cargo build -p imstatus --no-default-features \
  --features "$WINDOWS_FEATURES" "$@" 2>&1) || { echo "$out" >&2; exit 1; }
if echo "$out" | grep -Eq 'generated [0-9]+ warnings?'; then
  echo "$out" >&2
  echo "windows build has warnings" >&2
  exit 1
fi
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$WINDOWS_EXE"
