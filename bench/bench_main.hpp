// bench/bench_main.hpp: the main() of terra's benchmark binaries. terra's parallel loops,
// LibTorch's intra-op pool and the OpenBLAS both call get one thread count (OpenMP's:
// OMP_NUM_THREADS, else all cores), recorded in the JSON context.
#pragma once

#include <benchmark/benchmark.h>

#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif
#ifdef TERRA_BENCH_WITH_TORCH
#include <ATen/Parallel.h>
#include <torch/version.h>
#endif

// Weak: present when the BLAS is OpenBLAS, null otherwise.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads() __attribute__((weak));

namespace terra_bench {

inline int threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// LibTorch cases call this first: terra's products run OpenBLAS single-threaded (and split the
// work themselves, see backend/cpu/linalg.hpp), LibTorch's expect OpenBLAS's own threads.
inline void torch_blas_threads() {
  if (openblas_set_num_threads) openblas_set_num_threads(threads());
}

inline int run(int argc, char** argv) {
  int n = threads();
  if (openblas_set_num_threads) openblas_set_num_threads(n);
  benchmark::AddCustomContext("terra_threads", std::to_string(n));
  if (openblas_get_num_threads)
    benchmark::AddCustomContext("openblas_threads", std::to_string(openblas_get_num_threads()));
#ifdef TERRA_BENCH_WITH_TORCH
  at::set_num_threads(n);
  benchmark::AddCustomContext("torch_threads", std::to_string(at::get_num_threads()));
  benchmark::AddCustomContext("torch_version", TORCH_VERSION);
#else
  benchmark::AddCustomContext("torch_threads", "none (built without LibTorch)");
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace terra_bench
