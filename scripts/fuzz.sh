#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each, default 60:
#
#   scripts/fuzz.sh            # every target, 60 s each
#   scripts/fuzz.sh 600        # every target, 10 minutes each
#   scripts/fuzz.sh 30 config  # only the named targets
#
# Needs a nightly toolchain and cargo-fuzz; installs cargo-fuzz (`cargo install --locked
# cargo-fuzz`) and the nightly toolchain (rustup) when missing. Each target keeps its corpus in
# fuzz/corpus/TARGET and any crash in fuzz/artifacts/TARGET (both ignored by git); a crash ends
# the run with exit 1 and the command that replays it. The targets read only the bytes they are
# given: nothing listens, nothing is spawned.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
cd fuzz
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
cargo +nightly fuzz build
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  mkdir -p "corpus/$t"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
      2>&1 | tail -n 3; then
    echo "fuzz target $t found a crash: see fuzz/artifacts/$t (cargo +nightly fuzz run $t ARTIFACT)" >&2
    exit 1
  fi
done
