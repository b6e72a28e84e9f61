# deploy/lib.sh — shared install + build steps, sourced (not executed) by
# tests/run.sh, deploy/quickstart.sh and tools/bench/run.sh so the logic
# lives in one place. Targets Debian 12. Defines functions only; the caller
# owns `set -euo pipefail`.
# shellcheck shell=bash

# The Debian packages plexus needs to build and test.
PX_DEB_PACKAGES=(
  build-essential cmake pkg-config
  libnng-dev libnanomsg-dev libprotobuf-c-dev protobuf-c-compiler
  libsodium-dev libjansson-dev libcurl4-openssl-dev libcriterion-dev
  libyaml-dev etcd-server openssl
  docker-compose yamllint iptables iproute2 procps jq curl python3
)

# The repository root (this file lives in deploy/).
PX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# px_log MSG... — a progress line on stderr.
px_log() { printf '==> %s\n' "$*" >&2; }

# px_missing_packages PKG... — prints the packages dpkg does not list as
# installed, one per line.
px_missing_packages() {
  local p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
      printf '%s\n' "$p"
    fi
  done
}

# px_ensure_packages — installs whatever of PX_DEB_PACKAGES is missing. As
# root: one `apt-get update`, then one `apt-get install`. Not root: prints
# the exact install line and returns 1.
px_ensure_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    px_log "dpkg-query not found: this script expects Debian 12"
    return 1
  fi
  local missing
  mapfile -t missing < <(px_missing_packages "${PX_DEB_PACKAGES[@]}")
  if ((${#missing[@]} == 0)); then
    px_log "all ${#PX_DEB_PACKAGES[@]} Debian packages are installed"
    return 0
  fi
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "as root, run:" >&2
    echo "apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    return 1
  fi
  px_log "installing: ${missing[*]}"
  apt-get update || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || return 1
}

# px_build BUILD_DIR [CMAKE_ARG...] — configures (re-applying the options
# each time; cheap when nothing changed) and builds with -j2.
px_build() {
  local dir="$1"
  shift
  px_log "configure $dir: $*"
  cmake -S "$PX_ROOT" -B "$dir" "$@" || return 1
  px_log "build $dir"
  cmake --build "$dir" -j2 || return 1
}
