#!/usr/bin/env bash
# deploy/quickstart.sh [--standalone | DEMO_ARG...] — on a fresh Debian 12
# machine: install the missing packages, build a Release tree in
# build-release/ and run the main job.
#
# With etcd installed (Debian's etcd-server, one of the packages installed
# above): a three-node cluster on loopback — etcd on free ports, then three
# plexus-mesh-demo processes. node1 runs a supervisor whose four workers are
# placed (by role "worker") on node2 and node3, and a client that keeps
# asking them; every second node1 prints the members and the children
# (where each runs, instance, restarts, answers). About 6 s after node3 is
# up it is killed with SIGKILL: its lease expires, node1's supervisor gets a
# node-down failure for each child there and restarts them on node2, and
# the answers go on. Everything is stopped by PID at the end; the exit status is
# node1's (0 = the children failed over and every one answered again).
#
# Without etcd, or with --standalone: the single-process plexus-demo
# (pipeline + supervision examples) for 3 s; other arguments go to it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

px_ensure_packages || exit 1
build="$PX_ROOT/build-release"
px_build "$build" -DCMAKE_BUILD_TYPE=Release -DPLEXUS_TESTS=OFF

standalone() {
  if (($# == 0)); then
    set -- --seconds 3
  fi
  px_log "running plexus-demo $*"
  exec "$build/tools/demo/plexus-demo" "$@"
}

if [[ "${1:-}" == --standalone ]]; then
  shift
  standalone "$@"
fi
if (($# > 0)) || ! command -v etcd >/dev/null 2>&1; then
  ((($# > 0))) || px_log "etcd is not installed: running standalone"
  standalone "$@"
fi

demo="$build/tools/demo/plexus-mesh-demo"
tmp="$(mktemp -d /tmp/plexus-quickstart.XXXXXX)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

# A loopback port nothing listens on (bash's /dev/tcp: no extra tools).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

cport="$(free_port)"
pport="$(free_port)"
url="http://127.0.0.1:$cport"
px_log "starting etcd on $url (data in $tmp/etcd)"
etcd --name qs --data-dir "$tmp/etcd" \
  --listen-client-urls "$url" --advertise-client-urls "$url" \
  --listen-peer-urls "http://127.0.0.1:$pport" \
  --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "qs=http://127.0.0.1:$pport" \
  --logger=zap --log-level=error >"$tmp/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$cport") 2>/dev/null; then
    break
  fi
  sleep 0.1
done

px_log "starting node2 and node3 (role worker)"
"$demo" --name node2 --etcd "$url" --dir "$tmp" --roles worker 2>"$tmp/node2.log" &
pids+=($!)
"$demo" --name node3 --etcd "$url" --dir "$tmp" --roles worker 2>"$tmp/node3.log" &
node3=$!
pids+=("$node3")

px_log "starting node1: a supervisor with 4 workers placed by role, and a client"
"$demo" --name node1 --etcd "$url" --dir "$tmp" --lead --workers 4 --seconds 13 &
node1=$!
pids+=("$node1")

# Kill node3 once the workers have answered for a while (bounded wait).
for _ in $(seq 1 150); do
  if ! kill -0 "$node1" 2>/dev/null; then
    break
  fi
  if grep -q 'up' "$tmp/node3.log" 2>/dev/null; then
    sleep 6
    printf '\n==> killing node3 (SIGKILL): its lease (TTL 2 s) will expire\n'
    kill -9 "$node3" 2>/dev/null || true
    wait "$node3" 2>/dev/null || true # reaped here: no "Killed" job notice in the output
    break
  fi
  sleep 0.1
done

status=0
wait "$node1" || status=$?
if ((status == 0)); then
  px_log "OK: node3's workers failed over to node2 and the requests kept being answered"
else
  px_log "FAILED (status $status); the last lines of each log follow"
  for f in "$tmp"/*.log; do
    echo "--- $f" >&2
    tail -20 "$f" >&2
  done
fi
exit "$status"
