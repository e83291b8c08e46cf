#!/usr/bin/env bash
# The CUDA checks, in one command for a machine with a GPU (the H200 of the device tool, which has
# nvcc, CMake, ninja and PyTorch but no package access): configure against a prefix with
# GoogleTest, Google Benchmark and nlohmann_json (../shared/tools/make-deps-prefix.sh builds one
# here; carry it), build the CUDA tests and benchmark for sm_90, run the `gpu` tests (test_cuda), then the
# benchmark beside PyTorch (scripts/bench_cuda.py). Logs and JSON go to $OUT (default: build/gpu).
#   bash scripts/gpu_check.sh [deps-prefix]
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="$(realpath "${1:-.deps/prefix}")"
out="${OUT:-build/gpu}"
mkdir -p "$out"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S . -B build/gpu "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DTERRA_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH="$prefix" -DTERRA_BUILD_EXAMPLES=OFF \
  -DTERRA_BENCH_TORCH=OFF -DTERRA_INSTALL=OFF 2>&1 | tee "$out/configure.log" | tail -3
cmake --build build/gpu --target test_cuda terra_bench_cuda -j "$(nproc)" 2>&1 | tee "$out/build.log" | tail -3
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
status=0
# The test binary directly (ctest would want every other test binary built for discovery).
build/gpu/tests/test_cuda --gtest_output="json:$out/test_cuda.json" 2>&1 | tee "$out/test_cuda.log" |
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|^\[==========\]" | tail -60 || status=1
python3 scripts/bench_cuda.py --bin build/gpu/bench/terra_bench_cuda --out "$out/bench_cuda.json" \
  2>&1 | tee "$out/bench.txt" || status=1
exit $status
