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

# ---- processes of local-cluster.sh and netns-cluster.sh ----
# A process is known by DIR/NAME.pid (its PID); its plexusd output by
# DIR/NAME.out (the "plexusd: ready" line) and DIR/NAME.log.

# px_pid DIR NAME — the PID on record, or nothing.
px_pid() { cat "$1/$2.pid" 2>/dev/null || true; }

# px_alive DIR NAME — true while that process runs.
px_alive() { local p; p="$(px_pid "$1" "$2")"; [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }

# px_stop DIR NAME SIGNAL WAIT_S — sends SIGNAL, waits up to WAIT_S seconds
# for the process to end, then SIGKILLs it; forgets its PID.
px_stop() {
  local p i
  p="$(px_pid "$1" "$2")"
  [[ -n "$p" ]] || return 0
  kill -"$3" "$p" 2>/dev/null || true
  for ((i = 0; i < $4 * 10; i++)); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$p" 2>/dev/null || true
  rm -f "$1/$2.pid"
}

# px_await_etcd URL — true once etcd's /health at URL says so (10 s bound).
px_await_etcd() {
  local i
  for ((i = 0; i < 100; i++)); do
    curl -fsS -m 1 "$1/health" 2>/dev/null | grep -q true && return 0
    sleep 0.1
  done
  return 1
}

# px_await_ready DIR NAME — true once plexusd NAME printed its ready line
# (30 s bound); false at once if it exited (its log says why).
px_await_ready() {
  local i
  for ((i = 0; i < 300; i++)); do
    grep -q '^plexusd: ready' "$1/$2.out" 2>/dev/null && return 0
    px_alive "$1" "$2" || return 1
    sleep 0.1
  done
  return 1
}
