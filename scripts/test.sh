#!/usr/bin/env bash
# The test command: installs what the tests need (Prosody, finch, D-Bus, tmux, the Windows
# cross-toolchain and wine) when missing, then checks formatting, lints with -D warnings, runs
# the whole test suite, including the end-to-end tests against real Prosody and real finch, and
# finally cross-builds imstatus.exe and tests it under wine.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_test_packages
ensure_windows_packages

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== the cluster roles (cargo feature cluster): lints and the process tests"
cargo clippy -p imstatus --features cluster --all-targets --locked -- -D warnings
cargo test -p imstatus --features cluster --locked --test cluster
echo "== windows: cross-build imstatus.exe, smoke-test it under wine"
exe=$(scripts/windows-build.sh --locked)
scripts/windows-smoke.sh "$exe"
echo "== windows: the Windows source's tests under wine"
scripts/windows-test.sh
