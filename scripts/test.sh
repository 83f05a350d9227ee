#!/usr/bin/env bash
# The test command: installs what the tests need (Prosody, finch, D-Bus, tmux, the Windows
# cross-toolchain and wine) when missing, then checks formatting and that no crate has an import
# cycle between its files (scripts/cycles.py), lints with -D warnings, builds
# the API docs with -D warnings, checks that the binary builds with each feature alone, runs
# the whole test suite, including the end-to-end tests against real Prosody and real finch, and
# finally cross-builds imstatus.exe and tests it under wine. Each step prints its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_test_packages
ensure_windows_packages

step() { # the name of the next step; prints the previous one's wall time
  [ -z "${STEP_NAME:-}" ] || echo "== $STEP_NAME: $((SECONDS - STEP_START)) s"
  STEP_NAME=$1 STEP_START=$SECONDS
  [ -z "$1" ] || echo "== $1"
}

step "cargo fmt"
cargo fmt --all --check
step "no import cycles between the files of a crate"
python3 scripts/cycles.py
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The docs and the per-feature checks come right after clippy: they reuse its dependency
# metadata (rustdoc and clippy both build dependencies as `cargo check` does).
step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
step "each feature of imstatus alone"
check_features_alone --locked
step "cargo test"
cargo test --workspace --locked
# The Windows cross-build runs after the suite, not beside it: even at nice 19 it made
# timing-bound tests (a server's graceful stop, a first answer) fail now and then on 2 cores.
# The wine tests' exe is built without LTO, at opt-level 1 (IMSTATUS_QUICK_RELEASE,
# scripts/lib.sh): minutes sooner, the same sources less optimised.
export IMSTATUS_QUICK_RELEASE=1
step "windows: cross-build imstatus.exe"
scripts/windows-build.sh --locked >/dev/null
step "windows: smoke-test imstatus.exe under wine"
scripts/windows-smoke.sh "$WINDOWS_EXE"
step "windows: the Windows source's tests under wine"
scripts/windows-test.sh
step ""
