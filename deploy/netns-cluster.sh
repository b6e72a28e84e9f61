#!/usr/bin/env bash
# deploy/netns-cluster.sh — a plexus cluster with each node in its own
# network namespace, and the faults to break it with. Root only (ip netns,
# iptables, tc). Everything it makes is named after PXNS_PREFIX, so two
# clusters can live side by side.
#
#   netns-cluster.sh up N              etcd + N nodes (n1..nN), waits until all are up
#   netns-cluster.sh down              stops everything by PID, removes namespaces and bridge
#   netns-cluster.sh status            processes, membership, faults in place
#   netns-cluster.sh env               the exports that point plexctl at this cluster
#   netns-cluster.sh ctl ARGS...       plexctl against this cluster
#
#   netns-cluster.sh kill N            SIGKILL node N
#   netns-cluster.sh pause N | resume N    SIGSTOP / SIGCONT node N
#   netns-cluster.sh stop N            SIGTERM (drain) node N and wait for it
#   netns-cluster.sh start N           start node N again (same name, key and config)
#   netns-cluster.sh partition A B     drop all traffic between nodes A and B (both ways)
#   netns-cluster.sh isolate N         drop all traffic between node N and the other nodes
#   netns-cluster.sh isolate-from-etcd N   drop traffic between node N and etcd only
#   netns-cluster.sh throttle N RATE   node N's egress through a token bucket (tc tbf), e.g. 1mbit
#   netns-cluster.sh heal              remove every partition, isolation and throttle
#   netns-cluster.sh etcd-stop | etcd-start
#
# Layout: a bridge ${PREFIX}br in the root namespace with ${NET}.254; etcd
# in namespace ${PREFIX}-etcd at ${NET}.100:2379; node K in ${PREFIX}-nK
# at ${NET}.K (transport :7100, admin :7200, HTTP :9100). Faults are rules
# in a PXFAULT chain (iptables) and a root qdisc (tc) inside the node
# namespaces; `tc netem` is not used (these machines lack it).
#
# Environment: PXNS_PREFIX (default px, at most 5 characters), PXNS_NET
# (default 10.77.0), PXNS_DIR (state: keys, configs, logs, PIDs; default
# /tmp/plexus-netns-$PREFIX), PXNS_BIN (directory with plexusd/ and
# plexctl/ as built; default build/tools), PXNS_TTL (lease TTL, default 3),
# PXNS_CONFIG_K (a config file for node K; the default makes n1 the "lead"
# — a supervisor of three echo workers placed on role worker under the
# global names svc.0..2, and a load.client asking svc.0 — and the others
# role worker).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
P="${PXNS_PREFIX:-px}"
NET="${PXNS_NET:-10.77.0}"
DIR="${PXNS_DIR:-/tmp/plexus-netns-$P}"
BIN="${PXNS_BIN:-$root/build/tools}"
TTL="${PXNS_TTL:-3}"
ETCD_IP="$NET.100"
BR="${P}br"

die() { echo "netns-cluster: $*" >&2; exit 1; }
say() { echo "netns-cluster: $*" >&2; }

((${#P} <= 5)) || die "PXNS_PREFIX '$P' is longer than 5 characters (interface names)"
[[ "$P" =~ ^[a-z][a-z0-9]*$ ]] || die "PXNS_PREFIX '$P': lowercase letters and digits"

node_ns() { echo "$P-n$1"; }
node_ip() { echo "$NET.$1"; }
pid_of() { px_pid "$DIR" "$1"; }
alive() { px_alive "$DIR" "$1"; }
stop_pid() { px_stop "$DIR" "$@"; } # stop_pid NAME SIGNAL WAIT_S
count() { cat "$DIR/count" 2>/dev/null || echo 0; }
check_n() {
  [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= $(count))) || die "no node $1 (1..$(count))"
}

ctl_env() {
  export PLEXUS_CLUSTER_ETCD_ENDPOINTS="http://$ETCD_IP:2379"
  export PLEXUS_CLUSTER_NAME="$P"
  export PLEXUS_CLUSTER_SECRET_FILE="$DIR/secret"
  export PLEXCTL_KEY_FILE="$DIR/plexctl.key"
}

# A namespace with a veth to the bridge: ns_make NAME IP HOST_IF
ns_make() {
  local ns="$1" ip="$2" hif="$3"
  ip netns add "$ns"
  ip link add "$hif" type veth peer name "${hif}p"
  ip link set "${hif}p" netns "$ns"
  ip link set "$hif" master "$BR" up
  ip netns exec "$ns" ip link set "${hif}p" name eth0
  ip netns exec "$ns" ip addr add "$ip/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
}

etcd_start() {
  local bin
  bin="$(command -v etcd)" || die "etcd not found (Debian package etcd-server)"
  mkdir -p "$DIR/etcd"
  ip netns exec "$P-etcd" "$bin" --name "$P-etcd" --data-dir "$DIR/etcd" \
    --listen-client-urls "http://$ETCD_IP:2379" --advertise-client-urls "http://$ETCD_IP:2379" \
    --listen-peer-urls "http://127.0.0.1:2380" --initial-advertise-peer-urls "http://127.0.0.1:2380" \
    --initial-cluster "$P-etcd=http://127.0.0.1:2380" >>"$DIR/etcd.log" 2>&1 &
  echo $! >"$DIR/etcd.pid"
  px_await_etcd "http://$ETCD_IP:2379" || die "etcd did not answer on $ETCD_IP:2379 (log: $DIR/etcd.log)"
}

default_config() {
  if (($1 == 1)); then
    cat <<'EOF'
node:
  roles: [lead]
roots:
  - name: svc
    global_name: svc
    supervisor: one_for_one
    behavior: echo
    children: 3
    placement: role:worker
  - name: load
    behavior: load.client
    arg_type: plexus.kv.LoadSpec
    arg: '{"target": "svc.0", "rate": 100, "timeoutMs": 10000, "reportMs": 5000}'
EOF
  else
    printf 'node:\n  roles: [worker]\n'
  fi
}

# node_start K: starts node K in its namespace and waits for its ready line.
node_start() {
  local k="$1" ip cfg var
  ip="$(node_ip "$k")"
  var="PXNS_CONFIG_$k"
  cfg="$DIR/n$k.yaml"
  if [[ -n "${!var:-}" ]]; then
    cp "${!var}" "$cfg"
  elif [[ ! -f "$cfg" ]]; then
    default_config "$k" >"$cfg"
  fi
  : >"$DIR/n$k.out"
  ip netns exec "$(node_ns "$k")" "$BIN/plexusd/plexusd" --config "$cfg" --name "n$k" \
    --listen "tcp://$ip:7100" --admin "tcp://$ip:7200" --http "http://$ip:9100" \
    --key-file "$DIR/n$k.key" --secret-file "$DIR/secret" --etcd "http://$ETCD_IP:2379" \
    --cluster "$P" --lease-ttl "$TTL" >"$DIR/n$k.out" 2>>"$DIR/n$k.log" &
  echo $! >"$DIR/n$k.pid"
  px_await_ready "$DIR" "n$k" ||
    die "node n$k did not start (log: $DIR/n$k.log): $(tail -n 3 "$DIR/n$k.log")"
}

# wait_up N SECONDS: until plexctl sees N members up.
wait_up() {
  local want="$1" secs="$2" end up
  ctl_env
  end=$((SECONDS + secs))
  while ((SECONDS < end)); do
    up="$("$BIN/plexctl/plexctl" nodes --json 2>/dev/null | grep -o '"state": *"up"' | wc -l || true)"
    if ((up == want)); then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

cmd_up() {
  local n="${1:-}"
  [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 50)) || die "up N: N is 1..50"
  [[ "$(id -u)" -eq 0 ]] || die "needs root (ip netns, iptables, tc)"
  [[ -x "$BIN/plexusd/plexusd" && -x "$BIN/plexctl/plexctl" ]] ||
    die "no binaries in $BIN (build first: tests/run.sh, or cmake --build build)"
  ip netns list | grep -q "^$P-" && die "namespaces $P-* exist: '$0 down' first"
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  echo "$n" >"$DIR/count"
  [[ -f "$DIR/secret" ]] || (umask 077 && head -c 32 /dev/urandom | base64 >"$DIR/secret")
  ip link add "$BR" type bridge
  ip addr add "$NET.254/24" dev "$BR"
  ip link set "$BR" up
  ns_make "$P-etcd" "$ETCD_IP" "${P}he"
  local k
  for ((k = 1; k <= n; k++)); do
    ns_make "$(node_ns "$k")" "$(node_ip "$k")" "${P}h$k"
    ip netns exec "$(node_ns "$k")" iptables -N PXFAULT
    ip netns exec "$(node_ns "$k")" iptables -A INPUT -j PXFAULT
    ip netns exec "$(node_ns "$k")" iptables -A OUTPUT -j PXFAULT
  done
  etcd_start
  for ((k = n; k >= 1; k--)); do # n1 last: its roots are placed on the others
    node_start "$k"
  done
  wait_up "$n" 30 || die "not all $n nodes up in 30 s (logs in $DIR)"
  say "up: $n nodes, etcd http://$ETCD_IP:2379, state in $DIR"
}

cmd_down() {
  local n k
  n="$(count)"
  for ((k = 1; k <= n; k++)); do
    kill -CONT "$(pid_of "n$k")" 2>/dev/null || true
    stop_pid "n$k" TERM 15
  done
  stop_pid etcd TERM 10
  for ((k = 1; k <= n; k++)); do
    ip netns del "$(node_ns "$k")" 2>/dev/null || true
  done
  ip netns del "$P-etcd" 2>/dev/null || true
  ip link del "$BR" 2>/dev/null || true
  rm -rf "$DIR/etcd"
  say "down (logs kept in $DIR)"
}

cmd_status() {
  local n k
  n="$(count)"
  echo "etcd: $(alive etcd && echo "running (pid $(pid_of etcd))" || echo stopped) http://$ETCD_IP:2379"
  for ((k = 1; k <= n; k++)); do
    local st="stopped" rules qd
    if alive "n$k"; then
      st="running (pid $(pid_of "n$k"))"
      [[ "$(ps -o stat= -p "$(pid_of "n$k")")" == T* ]] && st="paused (pid $(pid_of "n$k"))"
    fi
    rules="$(ip netns exec "$(node_ns "$k")" iptables -S PXFAULT 2>/dev/null | grep -c '^-A' || true)"
    qd="$(ip netns exec "$(node_ns "$k")" tc qdisc show dev eth0 2>/dev/null | grep -o 'tbf.*rate [^ ]*' || true)"
    echo "n$k $(node_ip "$k"): $st; fault rules: $rules${qd:+; throttled: $qd}"
  done
  ctl_env
  "$BIN/plexctl/plexctl" nodes 2>&1 || true
}

drop_between() { # drop_between K IP: in node K's namespace
  local ns
  ns="$(node_ns "$1")"
  ip netns exec "$ns" iptables -A PXFAULT -s "$2" -j DROP
  ip netns exec "$ns" iptables -A PXFAULT -d "$2" -j DROP
}

cmd="${1:-}"
shift || true
case "$cmd" in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env)
    ctl_env
    echo "export PLEXUS_CLUSTER_ETCD_ENDPOINTS=$PLEXUS_CLUSTER_ETCD_ENDPOINTS PLEXUS_CLUSTER_NAME=$P" \
      "PLEXUS_CLUSTER_SECRET_FILE=$DIR/secret PLEXCTL_KEY_FILE=$DIR/plexctl.key"
    ;;
  ctl) ctl_env; exec "$BIN/plexctl/plexctl" "$@" ;;
  kill) check_n "${1:-}"; kill -KILL "$(pid_of "n$1")" ;;
  pause) check_n "${1:-}"; kill -STOP "$(pid_of "n$1")" ;;
  resume) check_n "${1:-}"; kill -CONT "$(pid_of "n$1")" ;;
  stop) check_n "${1:-}"; stop_pid "n$1" TERM 20 ;;
  start)
    check_n "${1:-}"
    alive "n$1" && die "n$1 is running"
    node_start "$1"
    ;;
  partition)
    check_n "${1:-}"; check_n "${2:-}"
    [[ "$1" != "$2" ]] || die "partition A B: two different nodes"
    drop_between "$1" "$(node_ip "$2")"
    drop_between "$2" "$(node_ip "$1")"
    ;;
  isolate)
    check_n "${1:-}"
    for ((k = 1; k <= $(count); k++)); do
      ((k == $1)) || { drop_between "$1" "$(node_ip "$k")"; drop_between "$k" "$(node_ip "$1")"; }
    done
    ;;
  isolate-from-etcd) check_n "${1:-}"; drop_between "$1" "$ETCD_IP" ;;
  throttle)
    check_n "${1:-}"
    [[ -n "${2:-}" ]] || die "throttle N RATE (a tc rate: 1mbit, 500kbit)"
    ip netns exec "$(node_ns "$1")" tc qdisc replace dev eth0 root tbf rate "$2" burst 64kb latency 400ms
    ;;
  heal)
    for ((k = 1; k <= $(count); k++)); do
      ip netns exec "$(node_ns "$k")" iptables -F PXFAULT
      ip netns exec "$(node_ns "$k")" tc qdisc del dev eth0 root 2>/dev/null || true
    done
    ;;
  etcd-stop) stop_pid etcd KILL 5 ;;
  etcd-start) alive etcd && die "etcd is running"; etcd_start ;;
  ""|-h|--help|help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
  *) die "unknown command '$cmd' ($0 help)" ;;
esac
