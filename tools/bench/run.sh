#!/usr/bin/env bash
# tools/bench/run.sh [core|supervision|all] — build a Release tree in
# build-release/ (if it is missing or stale) and run a suite of benchmarks
# (default core; all = core, then supervision). stdout carries only the
# figure lines ("name value unit"); build output and diagnostics go to
# stderr. Exits non-zero if the build or any benchmark fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../../deploy/lib.sh
source "$here/../../deploy/lib.sh"
build="${PLEXUS_BENCH_BUILD:-$PX_ROOT/build-release}"
suite="${1:-core}"

core_benches=(spawn idle_mem send pingpong skynet ask idle_cpu)
supervision_benches=(sup)

case "$suite" in
  core) benches=("${core_benches[@]}") ;;
  supervision) benches=("${supervision_benches[@]}") ;;
  all) benches=("${core_benches[@]}" "${supervision_benches[@]}") ;;
  -h|--help) echo "usage: $0 [core|supervision|all]" >&2; exit 0 ;;
  *) echo "run.sh: unknown suite '$suite' (known: core, supervision, all)" >&2; exit 2 ;;
esac

px_build "$build" -DCMAKE_BUILD_TYPE=Release -DPLEXUS_TESTS=OFF -DPLEXUS_BENCH=ON 1>&2

bin="$build/tools/bench"
status=0
for b in "${benches[@]}"; do
  if ! "$bin/px_bench_$b"; then
    echo "run.sh: px_bench_$b failed" >&2
    status=1
  fi
done
exit "$status"
