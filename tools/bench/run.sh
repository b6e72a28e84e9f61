#!/usr/bin/env bash
# tools/bench/run.sh [core|supervision|mesh|transport|cluster|all] — build
# a Release tree in build-release/ (or $PLEXUS_BENCH_BUILD; if it is missing
# or stale) and run a suite of benchmarks (default core; all = core,
# supervision, mesh, transport, then cluster). mesh runs the topic broker
# in one process (px_bench_topic, ~4 s: the cost per px_publish of a small
# message with one local subscriber actor and with four, delivery included,
# and of a publication nobody subscribes to), then px_bench_mesh (~10-20
# s), which needs etcd on PATH (it exits 2 without) and starts its own; its
# nodes are px_bench_node processes on loopback tcp with encrypted links, lease
# TTL 2 s: px_mesh_spawn on another node, ask round trips to an actor on
# another node (p50, p99), failover of a supervised child whose node got
# SIGKILL until it answers again from another node, and 10,000 watches of a
# killed node's actors until every Terminated arrived (and the part after
# the node-down event), and its ask round trips again in latency mode
# (mesh.remote_ask_spin_p50_us / _p99_us). transport runs two node processes over loopback tcp
# (px_bench_net, ~20-30 s): one-way throughput, ask round trips, bulk
# throughput and latency under bulk, each encrypted and plaintext (_plain),
# plus two floors: a raw TCP ping-pong and the same over nng streams with
# aio callbacks (no plexus code), and the round trip again in latency mode:
# workers spin 50 us before parking (adaptive up to 1 ms) and read the
# links meanwhile (px_transport_cfg.poll_rx; net.rtt_spin_p50_us / _p99_us). cluster
# (px_bench_cluster, ~30 s) needs etcd on PATH (it exits 2 without) and
# starts its own on free loopback ports; its nodes are OS processes
# (px_bench_node, the tests' pxt_node: a system, a transport and a cluster
# each; lease TTL 2 s): the time from starting 3, and 10, processes until
# each sees all up, SIGKILL to down on every survivor, and a cached
# px_whereis_global (in process). stdout carries only the figure lines
# ("name value unit"); build output and diagnostics go to stderr. Exits
# non-zero if the build or any benchmark fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../../deploy/lib.sh
source "$here/../../deploy/lib.sh"
build="${PLEXUS_BENCH_BUILD:-$PX_ROOT/build-release}"
suite="${1:-core}"

core_benches=(spawn idle_mem send pingpong skynet ask idle_cpu)
supervision_benches=(sup)
mesh_benches=(topic mesh)
transport_benches=(net)
cluster_benches=(cluster)

case "$suite" in
  core) benches=("${core_benches[@]}") ;;
  supervision) benches=("${supervision_benches[@]}") ;;
  mesh) benches=("${mesh_benches[@]}") ;;
  transport) benches=("${transport_benches[@]}") ;;
  cluster) benches=("${cluster_benches[@]}") ;;
  all)
    benches=("${core_benches[@]}" "${supervision_benches[@]}" "${mesh_benches[@]}"
      "${transport_benches[@]}" "${cluster_benches[@]}")
    ;;
  -h|--help) echo "usage: $0 [core|supervision|mesh|transport|cluster|all]" >&2; exit 0 ;;
  *)
    echo "run.sh: unknown suite '$suite' (known: core, supervision, mesh, transport, cluster, all)" >&2
    exit 2
    ;;
esac

px_build "$build" -DCMAKE_BUILD_TYPE=Release -DPLEXUS_TESTS=OFF -DPLEXUS_BENCH=ON 1>&2

bin="$build/tools/bench"
status=0
for b in "${benches[@]}"; do
  if ! "$bin/px_bench_$b"; then
    echo "run.sh: px_bench_$b failed" >&2
    status=1
  fi
  if [[ "$b" == mesh ]]; then
    # Latency mode through the full stack: the nodes' workers read the
    # links while they spin (50 us, adaptive up to 1 ms), as plexusd's
    # transport.latency_mode sets them.
    if ! PXT_POLL_RX=1 PXT_SPIN_MAX_US=1000 PX_BENCH_MESH_ONLY=ask "$bin/px_bench_mesh" |
        sed -e 's/^mesh\.remote_ask_/mesh.remote_ask_spin_/'; then
      echo "run.sh: px_bench_mesh (latency mode) failed" >&2
      status=1
    fi
  fi
  if [[ "$b" == net ]]; then
    # Latency mode: scheduler workers spin 50 us before parking (longer,
    # up to 1 ms, while they keep being woken soon after parking) and read
    # the links themselves meanwhile (px_transport_cfg.poll_rx; the nodes
    # above run with spin 0: two nodes share this machine's cores).
    if ! PX_BENCH_SPIN_US=50 PX_BENCH_SPIN_MAX_US=1000 PX_BENCH_NET_POLL=1 PX_BENCH_NET_ONLY=rtt \
        PX_BENCH_NET_MODES=enc \
        "$bin/px_bench_net" |
        sed -e 's/^net\.rtt_/net.rtt_spin_/'; then
      echo "run.sh: px_bench_net (spin) failed" >&2
      status=1
    fi
  fi
done
exit "$status"
