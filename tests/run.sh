#!/usr/bin/env bash
# tests/run.sh [--asan | --tsan] — install missing Debian packages, build,
# run the whole ctest suite. Plain build in build/, --asan in build-asan/
# (AddressSanitizer + UBSan), --tsan in build-tsan/ (ThreadSanitizer);
# benchmarks are not built under sanitizers. Ends with one line
# "tests: N passed, N failed" and exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../deploy/lib.sh
source "$here/../deploy/lib.sh"

mode=plain
for arg in "$@"; do
  case "$arg" in
    --asan) mode=asan ;;
    --tsan) mode=tsan ;;
    -h|--help) echo "usage: $0 [--asan | --tsan]"; exit 0 ;;
    *) echo "run.sh: unknown argument '$arg' (usage: $0 [--asan | --tsan])" >&2; exit 2 ;;
  esac
done

cmake_args=(-DPLEXUS_TESTS=ON)
case "$mode" in
  plain)
    build="$PX_ROOT/build"
    cmake_args+=(-DPLEXUS_ASAN=OFF -DPLEXUS_TSAN=OFF -DPLEXUS_BENCH=ON)
    ;;
  asan)
    build="$PX_ROOT/build-asan"
    cmake_args+=(-DPLEXUS_ASAN=ON -DPLEXUS_TSAN=OFF -DPLEXUS_BENCH=OFF)
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    ;;
  tsan)
    build="$PX_ROOT/build-tsan"
    cmake_args+=(-DPLEXUS_ASAN=OFF -DPLEXUS_TSAN=ON -DPLEXUS_BENCH=OFF)
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
    ;;
esac

px_ensure_packages || exit 1

if ! px_build "$build" "${cmake_args[@]}"; then
  echo "tests: build failed ($mode)"
  exit 1
fi

log="$build/ctest.log"
px_log "ctest ($mode) in $build"
set +e
ctest --test-dir "$build" --output-on-failure -j2 --no-tests=error 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# ctest's summary: "80% tests passed, 1 tests failed out of 5".
passed=0
failed=0
summary="$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)"
if [[ "$summary" =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
  failed=${BASH_REMATCH[1]}
  passed=$((BASH_REMATCH[2] - failed))
fi
if [[ "$rc" -ne 0 && "$failed" -eq 0 ]]; then
  failed=1 # ctest failed without a summary (no tests found, or it crashed)
  echo "run.sh: ctest exited with status $rc and no failure summary" >&2
fi
echo "tests: $passed passed, $failed failed"
if [[ "$rc" -ne 0 || "$failed" -ne 0 ]]; then
  exit 1
fi
