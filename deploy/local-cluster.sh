#!/usr/bin/env bash
# deploy/local-cluster.sh start N | stop | status | env — etcd + N plexusd
# nodes on loopback, for development (no root needed). Node 1 is the
# "lead": it supervises one echo worker per other node (role worker,
# global names svc.0, svc.1, ...) and runs a load.client asking svc.0; the
# others have role worker. Ports are picked free at start; everything the
# cluster writes (keys, configs, logs, PIDs) is in LOCAL_CLUSTER_DIR
# (default /tmp/plexus-local). Binaries come from LOCAL_CLUSTER_BIN (default
# build/tools; built by tests/run.sh or deploy/quickstart.sh).
#
#   deploy/local-cluster.sh start 3
#   eval "$(deploy/local-cluster.sh env)"; plexctl nodes; plexctl tree --node n1
#   deploy/local-cluster.sh status
#   deploy/local-cluster.sh stop          # drains each node (SIGTERM), then etcd
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
BIN="${LOCAL_CLUSTER_BIN:-$here/../build/tools}"
DIR="${LOCAL_CLUSTER_DIR:-/tmp/plexus-local}"

die() { echo "local-cluster: $*" >&2; exit 1; }
pid_of() { px_pid "$DIR" "$1"; }
alive() { px_alive "$DIR" "$1"; }

# A free loopback TCP port (the kernel picks it).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

env_lines() {
  echo "export PLEXUS_CLUSTER_ETCD_ENDPOINTS=http://127.0.0.1:$(cat "$DIR/etcd.port")"
  echo "export PLEXUS_CLUSTER_NAME=local PLEXUS_CLUSTER_SECRET_FILE=$DIR/secret"
  echo "export PLEXCTL_KEY_FILE=$DIR/plexctl.key PATH=$BIN/plexctl:\$PATH"
}

start() {
  local n="${1:-}" k
  [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 20)) || die "start N: N is 1..20"
  [[ -x "$BIN/plexusd/plexusd" ]] || die "no plexusd in $BIN (build first: tests/run.sh)"
  command -v etcd >/dev/null || die "etcd not found (Debian package etcd-server)"
  alive etcd && die "already running ($DIR): stop it first"
  rm -rf "$DIR/etcd"
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  [[ -f "$DIR/secret" ]] || (umask 077 && head -c 32 /dev/urandom | base64 >"$DIR/secret")
  local cp pp
  cp="$(free_port)"
  pp="$(free_port)"
  echo "$cp" >"$DIR/etcd.port"
  etcd --name local --data-dir "$DIR/etcd" --listen-client-urls "http://127.0.0.1:$cp" \
    --advertise-client-urls "http://127.0.0.1:$cp" --listen-peer-urls "http://127.0.0.1:$pp" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "local=http://127.0.0.1:$pp" >"$DIR/etcd.log" 2>&1 &
  echo $! >"$DIR/etcd.pid"
  px_await_etcd "http://127.0.0.1:$cp" || die "etcd did not start (log: $DIR/etcd.log)"
  printf 'node:\n  roles: [worker]\n' >"$DIR/worker.yaml"
  local children=1 placement=here # alone: the worker runs on n1
  ((n > 1)) && children=$((n - 1)) placement=role:worker
  cat >"$DIR/lead.yaml" <<EOF
node:
  roles: [lead]
roots:
  - name: svc
    global_name: svc
    supervisor: one_for_one
    behavior: echo
    children: $children
    placement: $placement
  - name: load
    behavior: load.client
    arg_type: plexus.kv.LoadSpec
    arg: '{"target": "svc.0", "rate": 50, "reportMs": 10000}'
EOF
  for ((k = n; k >= 1; k--)); do # n1 last: its children go to the others
    local cfg="$DIR/worker.yaml"
    ((k == 1)) && cfg="$DIR/lead.yaml"
    "$BIN/plexusd/plexusd" --config "$cfg" --name "n$k" --listen tcp://127.0.0.1:0 \
      --admin tcp://127.0.0.1:0 --http http://127.0.0.1:0 --key-file "$DIR/n$k.key" \
      --secret-file "$DIR/secret" --etcd "http://127.0.0.1:$cp" --cluster local \
      --lease-ttl 3 >"$DIR/n$k.out" 2>"$DIR/n$k.log" &
    echo $! >"$DIR/n$k.pid"
    px_await_ready "$DIR" "n$k" || die "n$k did not start: $(tail -n 2 "$DIR/n$k.log")"
    sed -n 's/^plexusd: ready //p' "$DIR/n$k.out"
  done
  echo "$n" >"$DIR/count"
  echo "local-cluster: $n nodes up; etcd http://127.0.0.1:$cp; state in $DIR"
  echo "local-cluster: eval \"\$($0 env)\" points plexctl at it"
}

stop() {
  local n k p
  n="$(cat "$DIR/count" 2>/dev/null || echo 0)"
  for ((k = 1; k <= n; k++)); do # all drain at once
    p="$(pid_of "n$k")"
    [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true
  done
  for ((k = 1; k <= n; k++)); do
    px_stop "$DIR" "n$k" TERM 15
  done
  px_stop "$DIR" etcd TERM 15
  echo "local-cluster: stopped (logs kept in $DIR)"
}

status() {
  local n k
  n="$(cat "$DIR/count" 2>/dev/null || echo 0)"
  echo "etcd: $(alive etcd && echo "running (pid $(pid_of etcd), port $(cat "$DIR/etcd.port"))" || echo stopped)"
  for ((k = 1; k <= n; k++)); do
    echo "n$k: $(alive "n$k" && echo "running (pid $(pid_of "n$k")) $(sed -n 's/^plexusd: ready //p' "$DIR/n$k.out")" || echo stopped)"
  done
  if alive etcd; then
    eval "$(env_lines)"
    "$BIN/plexctl/plexctl" nodes || true
  fi
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop ;;
  status) status ;;
  env) [[ -f "$DIR/etcd.port" ]] || die "not started"; env_lines ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
