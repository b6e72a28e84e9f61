#!/usr/bin/env bash
# tests/run.sh [--asan | --tsan | --fuzz SECONDS] — install missing Debian
# packages, build, run the whole ctest suite. Plain build in build/, --asan
# in build-asan/ (AddressSanitizer + UBSan), --tsan in build-tsan/
# (ThreadSanitizer); benchmarks are not built under sanitizers. Ends with
# one line "tests: N passed, N failed" and exits non-zero on any failure.
#
# --fuzz SECONDS instead builds the libFuzzer targets of tests/fuzz/ with
# clang in build-fuzz/ (PLEXUS_FUZZ: ASan + UBSan) and runs each for
# SECONDS on a temporary copy of its committed seed corpus (new inputs
# never land in the repository). Crash, leak and timeout inputs go to
# build-fuzz/artifacts/, each target's log to build-fuzz/<target>.log.
# Ends with "fuzz: N targets clean, N failed" and exits non-zero if any
# target found something.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../deploy/lib.sh
source "$here/../deploy/lib.sh"

usage="usage: $0 [--asan | --tsan | --fuzz SECONDS]"
mode=plain
fuzz_secs=0
while (($# > 0)); do
  case "$1" in
    --asan) mode=asan ;;
    --tsan) mode=tsan ;;
    --fuzz)
      mode=fuzz
      if (($# < 2)) || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
        echo "run.sh: --fuzz needs a number of seconds per target ($usage)" >&2
        exit 2
      fi
      fuzz_secs=$2
      shift
      ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' ($usage)" >&2; exit 2 ;;
  esac
  shift
done

# --fuzz: each target of tests/fuzz/ for fuzz_secs seconds (see the top).
run_fuzz() {
  local build="$PX_ROOT/build-fuzz"
  local targets=(fuzz_frame fuzz_handshake fuzz_envelope)
  if ! px_build "$build" -DCMAKE_C_COMPILER=clang-14 -DPLEXUS_FUZZ=ON -DPLEXUS_TESTS=OFF \
      -DPLEXUS_ASAN=OFF -DPLEXUS_TSAN=OFF -DPLEXUS_BENCH=OFF; then
    echo "fuzz: build failed"
    return 1
  fi
  local art="$build/artifacts" work
  mkdir -p "$art"
  work="$(mktemp -d "${TMPDIR:-/tmp}/plexus-fuzz.XXXXXX")"
  # shellcheck disable=SC2064 # expand $work now
  trap "rm -rf '$work'" EXIT
  export ASAN_OPTIONS="detect_leaks=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  local clean=0 failed=0 t log rc seeds why
  for t in "${targets[@]}"; do
    log="$build/$t.log"
    cp -R "$PX_ROOT/tests/fuzz/corpus/$t" "$work/$t"
    seeds=$(find "$work/$t" -type f | wc -l)
    px_log "$t: ${fuzz_secs} s from $seeds seeds (log $log)"
    set +e
    # -timeout: one input that runs this long is a hang. The outer timeout
    # only guards against a run that does not stop at max_total_time.
    timeout --kill-after=30 $((fuzz_secs + 300)) "$build/tests/fuzz/$t" \
      -max_total_time="$fuzz_secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$art/$t-" "$work/$t" >"$log" 2>&1
    rc=$?
    set -e
    if ((rc == 0)); then
      clean=$((clean + 1))
      # "#492413 DONE cov: 336 ft: 1284 corp: 187/169Kb lim: 4096 exec/s: 8072 rss: 479Mb"
      local done_line runs cov ft corp eps
      done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
      runs="$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$done_line")"
      cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")"
      ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")"
      corp="$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$done_line")"
      eps="$(sed -nE 's/.* exec\/s: ([0-9]+).*/\1/p' <<<"$done_line")"
      echo "$t: clean, ${runs:-?} runs in ${fuzz_secs} s (${eps:-?} exec/s)," \
        "cov ${cov:-?} ft ${ft:-?}, corpus $seeds -> ${corp:-?}"
    else
      failed=$((failed + 1))
      why="exit status $rc"
      if grep -q 'ERROR: libFuzzer: timeout' "$log"; then why="timeout"
      elif grep -q 'ERROR: libFuzzer: out-of-memory' "$log"; then why="out of memory"
      elif grep -q 'LeakSanitizer: detected memory leaks' "$log"; then why="leak"
      elif grep -q 'runtime error:' "$log"; then why="undefined behaviour"
      elif grep -q 'ERROR: AddressSanitizer' "$log"; then why="memory error"
      elif grep -q 'invariant broken' "$log"; then why="invariant broken"
      elif grep -q 'ERROR: libFuzzer: deadly signal' "$log"; then why="crash"
      elif ((rc == 124 || rc == 137)); then why="did not stop after ${fuzz_secs} s"
      fi
      local input
      input="$(sed -nE 's/.*Test unit written to (.*)/\1/p' "$log" | tail -n 1)"
      echo "$t: FAILED ($why); input: ${input:-none}; log: $log"
      grep -m 3 -E 'ERROR:|invariant broken|runtime error:|SUMMARY' "$log" | sed 's/^/  /' || true
    fi
  done
  echo "fuzz: $clean targets clean, $failed failed"
  ((failed == 0))
}

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
    # Leaks in our dependencies we cannot fix, each explained in the file.
    export LSAN_OPTIONS="suppressions=$PX_ROOT/tests/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    ;;
  tsan)
    build="$PX_ROOT/build-tsan"
    cmake_args+=(-DPLEXUS_ASAN=OFF -DPLEXUS_TSAN=ON -DPLEXUS_BENCH=OFF)
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
    ;;
  fuzz)
    PX_DEB_PACKAGES+=(clang-14 libclang-rt-14-dev) # clang, libFuzzer, its sanitizers
    ;;
esac

px_ensure_packages || exit 1

if [[ "$mode" == fuzz ]]; then
  run_fuzz
  exit $?
fi

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
