#!/usr/bin/env bash
# tests/fault/fault_suite.sh [BIN_DIR] [SCENARIO...] — the fault suite.
#
# A real cluster in network namespaces (deploy/netns-cluster.sh: etcd + 4
# nodes, lease TTL 3 s): n1 supervises three echo workers placed on the
# workers n2..n4 under the global names svc.0..2, and runs a load.client
# asking svc.0 100 times a second (each request: 10 s timeout). Each
# scenario injects one fault, heals, and checks the invariants:
#   - lost = 0: every request the client sent was answered or failed with
#     an error (none timed out in silence), and none got another's answer;
#   - no zombie member: a node cut off from etcd says it is not ready
#     (fenced) instead of acting as a member; after healing, every running
#     node is up in etcd and ready;
#   - no two live instances of a supervised child: the echo instances on
#     all nodes never number more than 3 (sampled throughout), and are 3 at
#     the end;
#   - convergence: within CONVERGE_S after healing every node is up in
#     every view, ready, and the workload is answered again.
# Prints a table: scenario, fault, detection time, recovery time, requests
# ok / failed / lost (in the scenario's window). Exit 0 when every scenario
# held; 77 (skipped) when not root. Scenario names (all run by default):
# kill stop partition etcd-isolate lead-isolate etcd-down throttle rogue
# rolling.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
BIN="${1:-$root/build/tools}"
shift || true
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(kill stop partition etcd-isolate lead-isolate etcd-down throttle rogue rolling)

if [[ "$(id -u)" -ne 0 ]]; then
  echo "fault suite: skipped (needs root for network namespaces)"
  exit 77
fi
for t in ip iptables tc curl jq etcd; do
  command -v "$t" >/dev/null || { echo "fault suite: $t not found"; exit 1; }
done

export PXNS_PREFIX="pxf$((RANDOM % 90 + 10))"
export PXNS_NET="10.$((RANDOM % 50 + 150)).$((RANDOM % 250)).0"
PXNS_NET="${PXNS_NET%.0}"
export PXNS_DIR
PXNS_DIR="$(mktemp -d /tmp/plexus-fault.XXXXXX)"
export PXNS_BIN="$BIN" PXNS_TTL=3
NC="$root/deploy/netns-cluster.sh"
NODES=4
CONVERGE_S=25
TTL=3

cleanup() { bash "$NC" down >/dev/null 2>&1 || true; }
trap cleanup EXIT

log() { printf '%s fault: %s\n' "$(date +%T)" "$*" >&2; }
now_ms() { date +%s%3N; }
ip_of() { echo "$PXNS_NET.$1"; }
ctl() { timeout 15 bash "$NC" ctl "$@"; }

# load_stats -> "sent ok failed lost wrong refused in_flight last_node"
# Per-node questions go to the node's admin address, not through etcd, so
# they work while etcd is down.
load_stats() {
  ctl ask load plexus.kv.LoadStatsRequest '{}' --admin "tcp://$(ip_of 1):7200" --json \
    --timeout 3000 2>/dev/null |
    jq -r '.reply.message | [(.sent // "0"), (.ok // "0"), (.failed // "0"), (.lost // "0"),
           (.wrong // "0"), (.refused // "0"), (.inFlight // "0"), (.lastNode // "-")] | join(" ")'
}

# The echo instances running on node k (empty when it does not answer).
echo_count() {
  ctl actors --admin "tcp://$(ip_of "$1"):7200" --json --timeout 2000 2>/dev/null |
    jq '[.[] | .actors[]? | select(.behavior == "echo" and .state == "running")] | length'
}

# All echo instances over the reachable nodes; records the highest seen.
MAX_ECHO=0
sample_echo() {
  local k c total=0
  for ((k = 1; k <= NODES; k++)); do
    c="$(echo_count "$k" || true)"
    total=$((total + ${c:-0}))
  done
  ((total > MAX_ECHO)) && MAX_ECHO=$total
  echo "$total"
}

state_in() { # state_in VIEW_NODE NAME -> state in that node's view
  ctl nodes --node "n$1" --json --timeout 2000 2>/dev/null |
    jq -r --arg n "n$2" '.[] | select(.name == $n) | .state' 2>/dev/null
}
ready_code() { curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$(ip_of "$1"):9100/readyz"; }

# await SECONDS CMD...: polls CMD every 200 ms; prints the ms it took.
await() {
  local secs="$1" t0 end
  shift
  t0="$(now_ms)"
  end=$((t0 + secs * 1000))
  while (($(now_ms) < end)); do
    if "$@" >/dev/null 2>&1; then
      echo $(($(now_ms) - t0))
      return 0
    fi
    sample_echo >/dev/null
    sleep 0.2
  done
  echo -1
  return 1
}

all_up_everywhere() {
  local v k
  for ((v = 1; v <= NODES; v++)); do
    [[ "$(ready_code "$v")" == 200 ]] || return 1
    for ((k = 1; k <= NODES; k++)); do
      [[ "$(state_in "$v" "$k")" == up ]] || return 1
    done
  done
}

OK0=0
mark_ok() { OK0="$(load_stats | cut -d' ' -f2)"; } # served_again counts from here
served_again() { # the workload's ok count grew by 50 since OK0 and no request in flight is old
  local s
  read -r -a s <<<"$(load_stats)"
  ((${#s[@]} >= 2 && s[1] >= OK0 + 50))
}

not_up_in() { local s; s="$(state_in "$1" "$2")"; [[ -n "$s" && "$s" != up ]]; } # VIEW NODE
not_up_in_n1() { not_up_in 1 "$1"; }
unready() { [[ "$(ready_code "$1")" != 200 ]]; }

# The worker serving svc.0 now.
svc0_node() {
  ctl names --json 2>/dev/null | jq -r '.names[] | select(.name == "svc.0") | .node' | sed 's/^n//'
}

ROWS=()
FAILS=0
CUR_FAIL=""
fail() { CUR_FAIL+="${CUR_FAIL:+; }$*"; log "FAILED: $*"; }

# fmt_row NAME FAULT DETECT_MS RECOVER_MS OK FAILED LOST INVARIANTS — one
# row of the table (no newline); the header is one too.
fmt_row() { printf '%-13s %-34s %9s %9s %8s %7s %5s  %s' "$@"; }

# begin: snapshot the counts; finish NAME FAULT DETECT_MS RECOVER_MS [OK
# FAILED LOST]: check the invariants and add a row. OK FAILED LOST, when
# given, are shown instead of the window's counts (the invariants are still
# checked on the window's).
declare -a S0
begin() {
  read -r -a S0 <<<"$(load_stats)"
  OK0=${S0[1]:-0}
  MAX_ECHO=0
  CUR_FAIL=""
}
finish() {
  local name="$1" fault="$2" det="$3" rec="$4" s conv echo_now
  conv="$(await "$CONVERGE_S" all_up_everywhere)" || fail "not converged within ${CONVERGE_S} s of healing"
  read -r -a S1 <<<"$(load_stats)"
  OK0=${S1[1]:-0}
  await 20 served_again >/dev/null || fail "the workload is not answered again"
  read -r -a s <<<"$(load_stats)"
  echo_now="$(sample_echo)"
  ((echo_now == 3)) || fail "$echo_now echo instances at the end (want 3)"
  ((MAX_ECHO <= 3)) || fail "$MAX_ECHO echo instances at once (at most 3)"
  local ok=$((s[1] - S0[1])) failed=$((s[2] - S0[2])) lost=$((s[3] - S0[3])) wrong=$((s[4] - S0[4]))
  ((lost == 0)) || fail "$lost requests lost"
  ((wrong == 0)) || fail "$wrong requests answered with another's answer"
  local k
  for ((k = 1; k <= NODES; k++)); do
    kill -0 "$(cat "$PXNS_DIR/n$k.pid" 2>/dev/null)" 2>/dev/null || fail "n$k is not running"
  done
  ROWS+=("$(fmt_row "$name" "$fault" "$det" "$rec" "${5:-$ok}" "${6:-$failed}" "${7:-$lost}" \
    "${CUR_FAIL:-held}")")
  [[ -z "$CUR_FAIL" ]] || FAILS=$((FAILS + 1))
  log "$name: detect $det ms, recover $rec ms, ok $ok failed $failed lost $lost, converged in $conv ms ${CUR_FAIL:+— $CUR_FAIL}"
}

# ---- scenarios ----

sc_kill() {
  local v
  v="$(svc0_node)"
  begin
  local t0 det rec
  t0="$(now_ms)"
  bash "$NC" kill "$v"
  det="$(await 15 not_up_in_n1 "$v")" || fail "n1 never saw n$v go"
  mark_ok
  await 20 served_again >/dev/null || fail "svc.0 not answered after the kill"
  rec=$(($(now_ms) - t0))
  bash "$NC" start "$v"
  finish kill "SIGKILL n$v (serving svc.0)" "$det" "$rec"
}

sc_stop() {
  local v
  v="$(svc0_node)"
  begin
  local t0 det rec
  t0="$(now_ms)"
  bash "$NC" pause "$v"
  det="$(await 15 not_up_in_n1 "$v")" || fail "n1 never saw the paused n$v go"
  sleep "$TTL" # past its TTL for sure
  bash "$NC" resume "$v"
  # the resumed node knows its lease is gone: it fences and rejoins as a new incarnation
  await 15 all_up_everywhere >/dev/null || fail "the resumed n$v did not rejoin"
  rec=$(($(now_ms) - t0))
  finish stop "SIGSTOP n$v past its TTL" "$det" "$rec"
}

sc_partition() {
  local v
  v="$(svc0_node)"
  begin
  local det rec k th
  for ((k = 1; k <= NODES; k++)); do
    ((k == v)) || bash "$NC" partition "$v" "$k"
  done
  det="$(await 15 not_up_in_n1 "$v")" || fail "n1 never saw n$v unreachable"
  sleep 3
  # still in etcd: the others must not take it for down, and it stays ready
  [[ "$(state_in 1 "$v")" == unreachable ]] || fail "n$v is $(state_in 1 "$v") in n1's view (want unreachable)"
  sample_echo >/dev/null
  bash "$NC" heal
  th="$(now_ms)"
  mark_ok
  await 20 served_again >/dev/null || fail "svc.0 not answered after healing"
  rec=$(($(now_ms) - th))
  finish partition "n$v cut from its peers, not etcd" "$det" "$rec"
}

sc_etcd_isolate() {
  local v
  v="$(svc0_node)"
  begin
  local det rec
  bash "$NC" isolate-from-etcd "$v"
  # its lease runs out: it must fence itself (not ready) instead of acting on
  det="$(await 15 unready "$v")" || fail "n$v, cut from etcd, still says it is ready (zombie)"
  await 10 not_up_in_n1 "$v" >/dev/null || fail "n1 still has n$v up"
  bash "$NC" heal
  local th
  th="$(now_ms)"
  await 20 all_up_everywhere >/dev/null || fail "n$v did not rejoin"
  rec=$(($(now_ms) - th))
  finish etcd-isolate "n$v cut from etcd, not its peers" "$det" "$rec"
}

# The lead node (n1: the supervisor of the echo workers and the client)
# cut off from etcd: it fences itself; the workers' nodes see its lease
# expire and stop the children it supervised. When healed it rejoins as a
# new incarnation, and plexusd starts its roots again (the old ones are
# dead to the cluster): the supervisor places three workers again and a
# new client runs. The old client's counts come from its last log line.
sc_lead_isolate() {
  begin
  local det rec th line
  bash "$NC" isolate-from-etcd 1
  det="$(await 15 unready 1)" || fail "n1, cut from etcd, still says it is ready (zombie)"
  await 10 not_up_in 2 1 >/dev/null || fail "n2 still has n1 up"
  bash "$NC" heal
  th="$(now_ms)"
  # the second "root load started" line: the roots run again
  restarted() { (($(grep -c 'root load started' "$PXNS_DIR/n1.log") >= 2)); }
  await 25 restarted >/dev/null || fail "n1 did not start its roots again"
  line="$(grep 'load.client stopped' "$PXNS_DIR/n1.log" | tail -n 1)"
  local old_ok old_failed old_lost
  old_ok="$(sed -nE 's/.* ok=([0-9]+).*/\1/p' <<<"$line")"
  old_failed="$(sed -nE 's/.* failed=([0-9]+).*/\1/p' <<<"$line")"
  old_lost="$(sed -nE 's/.* lost=([0-9]+).*/\1/p' <<<"$line")"
  [[ "$line" == *"lost=0 wrong=0"* && "$line" == *"in_flight=0"* ]] ||
    fail "the old client's last line: ${line:-none}"
  await 25 all_up_everywhere >/dev/null || fail "n1 did not rejoin"
  rec=$(($(now_ms) - th))
  local saved="$CUR_FAIL" max="$MAX_ECHO" o0=("${S0[@]}")
  begin # the new client's counts start over
  CUR_FAIL="$saved"
  MAX_ECHO="$max"
  finish lead-isolate "n1 (the lead) cut from etcd" "$det" "$rec"
  read -r -a s <<<"$(load_stats)"
  # the row shows both clients' counts, read after finish
  ROWS[-1]="$(fmt_row lead-isolate "n1 (the lead) cut from etcd" \
    "$det" "$rec" "$((${old_ok:-0} - o0[1] + s[1] - S0[1]))" \
    "$((${old_failed:-0} - o0[2] + s[2] - S0[2]))" "$((${old_lost:-0} - o0[3] + s[3] - S0[3]))" \
    "${CUR_FAIL:-held}")"
}

sc_etcd_down() {
  begin
  local t0 det rec k
  t0="$(now_ms)"
  bash "$NC" etcd-stop
  etcd_down() {
    curl -s -m 2 "http://$(ip_of 1):9100/metrics" |
      awk '$1 == "plexus_cluster_etcd_down_seconds" && $2 > 0 { f = 1 } END { exit !f }'
  }
  det="$(await 15 etcd_down)" || fail "n1 never reported etcd down"
  local end=$((t0 + 30000))
  mark_ok
  while (($(now_ms) < end)); do
    sample_echo >/dev/null
    sleep 1
  done
  # 30 s without etcd: the nodes went on serving each other
  served_again || fail "the workload stopped while etcd was down"
  for ((k = 1; k <= NODES; k++)); do
    kill -0 "$(cat "$PXNS_DIR/n$k.pid")" 2>/dev/null || fail "n$k died while etcd was down"
  done
  bash "$NC" etcd-start
  local th
  th="$(now_ms)"
  await 30 all_up_everywhere >/dev/null || fail "the cluster did not re-register after etcd came back"
  rec=$(($(now_ms) - th))
  finish etcd-down "etcd stopped for 30 s" "$det" "$rec"
}

sc_throttle() {
  local v
  v="$(svc0_node)"
  begin
  local t0 rec b
  # bulk: a second client on n1 puts 256 KiB values (the bulk lane) into a
  # kv store on n$v, 20 a second (40 Mbit/s wanted), through n1's egress
  # throttled to 4 Mbit/s, while the workload goes on over the same link.
  # The three lanes' connections share that egress queue (tbf: 400 ms).
  # Before BULK had a window (transport.h, bulk_delay_ms), it kept the queue
  # full: tbf's drops pushed ~3 of ~1100 workload requests past their 10 s
  # timeout in about half the runs (TCP backoff on the normal lane).
  ctl spawn kv.shard --node "n$v" --global bulk.kv >/dev/null || fail "no bulk kv store"
  ctl spawn load.client --node n1 --name bulk --arg-type plexus.kv.LoadSpec \
    --arg '{"target": "bulk.kv", "kind": "kv", "rate": 20, "inFlight": 8, "payloadBytes": 262144, "timeoutMs": 30000}' \
    >/dev/null || fail "no bulk client"
  bash "$NC" throttle 1 4mbit
  t0="$(now_ms)"
  mark_ok
  # 10 s: the workload is still answered (more slowly) and n$v stays up
  local end=$((t0 + 10000))
  while (($(now_ms) < end)); do
    [[ "$(state_in 1 "$v")" == up ]] || fail "n$v left n1's view under the throttled bulk traffic"
    sleep 1
  done
  served_again || fail "the workload was not answered under the throttled bulk traffic"
  b="$(ctl ask bulk plexus.kv.LoadStatsRequest '{}' --node n1 --json --timeout 3000 |
    jq -r '.reply.message | "\(.ok // "0") \(.lost // "0") \(.wrong // "0")"')"
  log "bulk client: ok lost wrong = $b"
  read -r -a bs <<<"$b"
  ((${bs[0]:-0} > 0)) || fail "no bulk put was answered"
  ((${bs[1]:-1} == 0 && ${bs[2]:-1} == 0)) || fail "bulk requests lost or mixed up: $b"
  bash "$NC" heal
  ctl stop bulk --node n1 >/dev/null || true
  ctl stop bulk.kv >/dev/null || true
  rec=$(($(now_ms) - t0))
  finish throttle "n1 egress 4mbit + 40 Mbit/s of bulk" "-" "$rec"
}

sc_rogue() {
  local v=2
  begin
  local t0 det rec before
  before="$(curl -s "http://$(ip_of "$v"):9100/metrics" | awk '/^plexus_transport_(handshakes_refused|bad_frames)_total /{s+=$2} END{print s+0}')"
  t0="$(now_ms)"
  # 200 connections of junk, oversized length prefixes and truncated hellos
  local i
  for ((i = 0; i < 200; i++)); do
    case $((i % 3)) in
      0) head -c 65536 /dev/urandom ;;
      1) printf '\xff\xff\xff\x7f'; head -c 4096 /dev/urandom ;;
      2) printf '\x00\x00\x00\x10PLEXUS' ;;
    esac | timeout 2 bash -c "cat > /dev/tcp/$(ip_of "$v")/7100" 2>/dev/null &
    ((i % 20 == 19)) && wait
  done
  wait
  rejected() {
    local now
    now="$(curl -s "http://$(ip_of "$v"):9100/metrics" | awk '/^plexus_transport_(handshakes_refused|bad_frames)_total /{s+=$2} END{print s+0}')"
    ((now > before))
  }
  det="$(await 10 rejected)" || fail "n$v counted none of the rogue's connections"
  mark_ok
  await 10 served_again >/dev/null || fail "the workload stalled under the flood"
  rec=$(($(now_ms) - t0))
  finish rogue "200 junk connections to n$v" "$det" "$rec"
}

sc_rolling() {
  begin
  local t0 k
  t0="$(now_ms)"
  # workers first, then n1 (which runs the client: its counts are read
  # just before, and its final log line checked)
  for k in 2 3 4; do
    bash "$NC" stop "$k"
    bash "$NC" start "$k"
    await 20 all_up_everywhere >/dev/null || fail "n$k did not come back"
  done
  read -r -a s <<<"$(load_stats)"
  local ok=$((s[1] - S0[1])) failed=$((s[2] - S0[2])) lost=$((s[3] - S0[3]))
  bash "$NC" stop 1
  grep 'load.client stopped' "$PXNS_DIR/n1.log" | tail -n 1 | grep -q 'lost=0 wrong=0' ||
    fail "the client's last line: $(grep 'load.client stopped' "$PXNS_DIR/n1.log" | tail -n 1)"
  bash "$NC" start 1
  await 20 all_up_everywhere >/dev/null || fail "n1 did not come back"
  ((lost == 0)) || fail "$lost requests lost while the workers restarted"
  ((failed <= 10)) || fail "$failed requests failed (bound 10)"
  local rec=$(($(now_ms) - t0)) saved="$CUR_FAIL"
  begin # the client restarted with n1: its counts start over
  CUR_FAIL="$saved" # (begin clears it: what failed above must count)
  finish rolling "each node drained + restarted" "-" "$rec" "$ok" "$failed" "$lost"
}

# ---- run ----

log "cluster: $NODES nodes in namespaces $PXNS_PREFIX-*, net $PXNS_NET.0/24, state $PXNS_DIR"
if ! bash "$NC" up "$NODES"; then
  echo "fault suite: the cluster did not come up (logs in $PXNS_DIR)"
  exit 1
fi
OK0=0
await 20 served_again >/dev/null || { echo "fault suite: the workload never ran"; exit 1; }
for sc in "${SCENARIOS[@]}"; do
  case "$sc" in
    kill | stop | partition | etcd-isolate | lead-isolate | etcd-down | throttle | rogue | rolling) ;;
    *) echo "fault suite: unknown scenario $sc"; exit 2 ;;
  esac
  log "scenario $sc"
  "sc_${sc//-/_}"
done

echo
fmt_row scenario fault detect_ms recover_ms ok failed lost invariants
echo
for r in "${ROWS[@]}"; do
  echo "$r"
done
echo
if ((FAILS > 0)); then
  echo "fault suite: $FAILS of ${#SCENARIOS[@]} scenarios broke an invariant (logs in $PXNS_DIR)"
  trap - EXIT
  cleanup
  exit 1
fi
echo "fault suite: ${#SCENARIOS[@]} scenarios, every invariant held"
cleanup
rm -rf "$PXNS_DIR"
trap - EXIT
exit 0
