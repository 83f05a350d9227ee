#!/usr/bin/env bash
# The demo: a private Prosody on loopback, a private D-Bus, real finch (libpurple) signed in to
# it, and `imstatus watch` showing sign-in, status changes, quit and kill -9 as they happen.
# Installs what it needs when missing; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_demo_packages
cargo run --quiet --locked -p imstatus --example demo
