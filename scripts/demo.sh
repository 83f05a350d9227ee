#!/usr/bin/env bash
# The demo: a private Prosody on loopback, a private D-Bus, real finch (libpurple) signed in to
# it, and `imstatus watch` showing sign-in, status changes, quit and kill -9 as they happen;
# then the same account on a 3-node NATS JetStream cluster (two watchers, a gateway) through
# the kill -9 of the watcher that owns it.
# Installs what it needs when missing; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
ensure_demo_packages
ensure_nats
# The cluster part runs `imstatus serve --role …` as processes: the binary beside the example.
cargo build --quiet --locked -p imstatus --bin imstatus
cargo run --quiet --locked -p imstatus --example demo
