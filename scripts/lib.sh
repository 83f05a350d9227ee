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
# finch on a private D-Bus in tmux.
ensure_demo_packages() {
  ensure_debs prosody prosody-modules finch dbus tmux openssl iproute2
}

# Everything the end-to-end tests start for real: the demo's servers, ejabberd (the XMPP
# source's invisibility is tested against it too), Chromium with its WebDriver (the gateway's
# dashboard) and mosquitto (MQTT).
ensure_test_packages() {
  ensure_demo_packages
  ensure_debs ejabberd chromium chromium-driver mosquitto mosquitto-clients
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
