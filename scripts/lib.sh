# Shared by scripts/test.sh and scripts/demo.sh: install what imstatus's tests and demo need on
# a fresh Debian machine. Sourced, not run.

# Installs the Debian packages providing the given commands, when a command is missing.
# Arguments: command:package pairs.
ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian may start a system-wide Prosody on install; our tests run their own on free ports,
  # so stop the system one (it would listen on 0.0.0.0:5222).
  if printf '%s\n' "${missing[@]}" | grep -qx prosody; then
    $sudo service prosody stop >/dev/null 2>&1 || true
  fi
}

# Everything the end-to-end tests start for real.
ensure_test_packages() {
  ensure_packages prosody:prosody prosodyctl:prosody finch:finch dbus-daemon:dbus \
    dbus-send:dbus tmux:tmux openssl:openssl ss:iproute2
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
