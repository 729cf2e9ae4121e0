#!/usr/bin/env bash
# Runs the CUDA kernel tests on the CPU emulator: compiles the real kernels/cuda/*.cu files as
# host C++ (with emu.h modelling threads, blocks, barriers, shuffles and atomics) and checks
# every kernel against reference code, so CI verifies the kernels' logic without a GPU. See
# emu.h's header for the model and for what it cannot catch (real warp scheduling,
# memory-model races, register pressure).
#
#   kernels/cuda/emu/run.sh [test ...]     tests: emu_selftest decode reduce robust noise
#                                          (default: all)
#
# Each test is built once with g++ (-ffp-contract=off: no FMA, as NVRTC's --fmad=false) under
# AddressSanitizer + UBSan, so out-of-bounds accesses by a kernel fail too, and run twice:
# threads and blocks in ascending, then descending order (EMU_ORDER), which exposes a missing
# __syncthreads. Each run prints a one-line summary and exits non-zero on any mismatch; this
# script exits non-zero if any build or run failed, or if a test's digest of the results it
# declares order-independent (the reductions' sums: no float atomics) differs between the two
# orders.
#
# Environment: CXX (default g++), EMU_SANITIZE=0 to build without sanitizers, EMU_TIMEOUT
# seconds per run (default 600).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cxx="${CXX:-g++}"
timeout_s="${EMU_TIMEOUT:-600}"

if [ "$#" -gt 0 ]; then
  tests=("$@")
else
  tests=(emu_selftest decode reduce robust noise)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/vain-emu.XXXXXX")"
trap 'rm -rf "$work"' EXIT

flags=(-std=c++20 -O1 -g -ffp-contract=off -Wall -Wextra -Wno-unknown-pragmas -pthread)
if [ "${EMU_SANITIZE:-1}" != 0 ]; then
  san=(-fsanitize=address,undefined -fno-sanitize-recover=all)
  echo 'int main() { return 0; }' >"$work/probe.cpp"
  if "$cxx" "${san[@]}" "$work/probe.cpp" -o "$work/probe" 2>/dev/null && "$work/probe"; then
    flags+=("${san[@]}")
  else
    echo "emu: note: $cxx cannot build with -fsanitize=address,undefined here; running without sanitizers" >&2
  fi
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

run_timeout=()
if command -v timeout >/dev/null 2>&1; then
  run_timeout=(timeout "$timeout_s")
fi

# Build every test in parallel, then run them one by one.
declare -A src pid
failed=()
for t in "${tests[@]}"; do
  if [ -f "$here/${t}_test.cpp" ]; then
    src[$t]="$here/${t}_test.cpp"
  elif [ -f "$here/$t.cpp" ]; then
    src[$t]="$here/$t.cpp"
  else
    echo "emu: no test '$t' (looked for $here/${t}_test.cpp and $here/$t.cpp)" >&2
    exit 2
  fi
  "$cxx" "${flags[@]}" "${src[$t]}" -o "$work/$t" >"$work/$t.log" 2>&1 &
  pid[$t]=$!
done
for t in "${tests[@]}"; do
  if ! wait "${pid[$t]}"; then
    cat "$work/$t.log" >&2
    echo "emu: $t: BUILD FAILED" >&2
    failed+=("$t (build)")
    continue
  fi
  cat "$work/$t.log" >&2  # warnings, if any
  for order in fwd rev; do
    if EMU_ORDER="$order" "${run_timeout[@]}" "$work/$t" | tee "$work/$t.$order.out" | sed "s/^/[$order] /"; then
      :
    else
      status=("${PIPESTATUS[@]}")
      why="exit status ${status[0]}"
      [ "${status[0]}" = 124 ] && why="timed out after ${timeout_s}s"
      [ "${status[0]}" = 3 ] && why="emulator error, see above"
      echo "[$order] $t: FAILED ($why)" >&2
      failed+=("$t ($order)")
    fi
  done
  # Results a test declares order-independent (its digest) must not change with the order.
  fwd_digest=$(grep -o 'digest [0-9a-f]*' "$work/$t.fwd.out" || true)
  rev_digest=$(grep -o 'digest [0-9a-f]*' "$work/$t.rev.out" || true)
  if [ "$fwd_digest" != "$rev_digest" ]; then
    echo "emu: $t: results depend on the thread order ($fwd_digest forward, $rev_digest reversed)" >&2
    failed+=("$t (order-dependent results)")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "emu: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "emu: all ${#tests[@]} tests passed in both thread orders"
