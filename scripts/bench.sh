#!/usr/bin/env bash
# scripts/bench.sh [google-benchmark flags...]: builds terra_bench (single ops) and
# terra_bench_train (whole training steps) in Release, runs them with JSON output and prints
# one terra/torch ratio table. Environment:
#   TERRA_BENCH_BUILD     build directory (default: <repo>/build-bench)
#   TERRA_BENCH_THREADS   threads for terra, LibTorch and OpenBLAS alike (default: all cores)
#   TERRA_BENCH_OUT       terra_bench's JSON results (default: $TERRA_BENCH_BUILD/bench.json);
#                         terra_bench_train's go beside it, as <name>_train.json
#   TERRA_BENCH_BINARIES  which binaries to run (default: "terra_bench terra_bench_train")
# Examples: scripts/bench.sh --benchmark_filter=matmul --benchmark_repetitions=5
#           TERRA_BENCH_BINARIES=terra_bench_train TERRA_BENCH_THREADS=1 scripts/bench.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${TERRA_BENCH_BUILD:-$root/build-bench}"
threads="${TERRA_BENCH_THREADS:-$(nproc)}"
out="${TERRA_BENCH_OUT:-$build/bench.json}"
read -r -a binaries <<<"${TERRA_BENCH_BINARIES:-terra_bench terra_bench_train}"

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release \
    -DTERRA_BUILD_TESTS=OFF -DTERRA_BUILD_EXAMPLES=OFF -DTERRA_BUILD_BENCH=ON
fi
cmake --build "$build" --target "${binaries[@]}" -j "$(nproc)"

# One thread count for everyone: terra's OpenMP loops, LibTorch's intra-op pool (the binaries
# also call at::set_num_threads with it) and OpenBLAS, which both libraries call for matmul.
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
results=()
for bin in "${binaries[@]}"; do
  file="$out"
  [[ "$bin" == terra_bench ]] || file="${out%.json}_${bin#terra_bench_}.json"
  echo "running $build/bench/$bin with $threads threads (a few minutes) ..."
  "$build/bench/$bin" --benchmark_format=json --benchmark_out="$file" "$@" >/dev/null
  echo "results: $file"
  results+=("$file")
done
python3 "$root/scripts/bench_ratios.py" "${results[@]}"
