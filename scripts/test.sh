#!/usr/bin/env bash
# The test command: installs what the tests need (Prosody, finch, D-Bus, tmux) when missing,
# then checks formatting, lints with -D warnings, and runs the whole test suite, including the
# end-to-end tests against real Prosody and real finch.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_test_packages

echo "== cargo fmt"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
