#!/usr/bin/env bash
# tests/fault/local_cluster_test.sh BIN_DIR — deploy/local-cluster.sh does
# what it says: start 2 brings etcd and two nodes up (both up in etcd, the
# lead's load.client answered), status lists them, stop ends every process
# it started (by PID) and status then says stopped.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LC="$here/../../deploy/local-cluster.sh"
export LOCAL_CLUSTER_BIN="$1" LOCAL_CLUSTER_DIR
LOCAL_CLUSTER_DIR="$(mktemp -d /tmp/plexus-lc-test.XXXXXX)"
trap 'bash "$LC" stop >/dev/null 2>&1 || true; rm -rf "$LOCAL_CLUSTER_DIR"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

bash "$LC" start 2 || fail "start 2"
pids=$(cat "$LOCAL_CLUSTER_DIR"/*.pid)
eval "$(bash "$LC" env)"
for ((i = 0; i < 100; i++)); do
  up=$(plexctl nodes --json | jq '[.[] | select(.state == "up")] | length')
  ok=$(plexctl ask load plexus.kv.LoadStatsRequest '{}' --node n1 --json 2>/dev/null |
    jq -r '.reply.message.ok // "0"' || echo 0)
  ((up == 2 && ok > 10)) && break
  sleep 0.1
done
((up == 2)) || fail "$up nodes up (want 2)"
((ok > 10)) || fail "the load client got $ok answers"
echo "ok: 2 nodes up, $ok requests answered"
st="$(bash "$LC" status)"
[[ "$(grep -c 'running (pid' <<<"$st")" == 3 ]] || fail "status: $st"
echo "ok: status lists etcd and 2 nodes running"
bash "$LC" stop
for p in $pids; do
  kill -0 "$p" 2>/dev/null && fail "pid $p still runs after stop"
done
grep -q 'lost=0' "$LOCAL_CLUSTER_DIR/n1.log" || fail "the client's last line: $(grep 'load.client stopped' "$LOCAL_CLUSTER_DIR/n1.log")"
[[ "$(bash "$LC" status | grep -c stopped)" == 3 ]] || fail "status after stop: $(bash "$LC" status)"
echo "ok: stop ended every process; the client lost nothing"
