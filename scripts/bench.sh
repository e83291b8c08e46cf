#!/usr/bin/env bash
# scripts/bench.sh [google-benchmark flags...]: builds terra_bench (Release), runs it with JSON
# output and prints the terra/torch ratio table. Environment:
#   TERRA_BENCH_BUILD    build directory (default: <repo>/build-bench)
#   TERRA_BENCH_THREADS  threads for terra, LibTorch and OpenBLAS alike (default: all cores)
#   TERRA_BENCH_OUT      JSON results (default: $TERRA_BENCH_BUILD/bench.json)
# Example: scripts/bench.sh --benchmark_filter=matmul --benchmark_repetitions=5
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${TERRA_BENCH_BUILD:-$root/build-bench}"
threads="${TERRA_BENCH_THREADS:-$(nproc)}"
out="${TERRA_BENCH_OUT:-$build/bench.json}"

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DTERRA_BUILD_TESTS=OFF -DTERRA_BUILD_EXAMPLES=OFF -DTERRA_BUILD_BENCH=ON
fi
cmake --build "$build" --target terra_bench -j "$(nproc)"

# One thread count for everyone: terra's OpenMP loops, LibTorch's intra-op pool (the binary
# also calls at::set_num_threads with it) and OpenBLAS, which both libraries call for matmul.
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
echo "running $build/bench/terra_bench with $threads threads (a few minutes) ..."
"$build/bench/terra_bench" --benchmark_format=json --benchmark_out="$out" "$@" >/dev/null
echo "results: $out"
python3 "$root/scripts/bench_ratios.py" "$out"
