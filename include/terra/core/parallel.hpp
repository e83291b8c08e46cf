// terra/core/parallel.hpp: CPU parallel loops. A loop is cut into chunks that a Team of
// threads claims (terra/core/team.hpp): on a graph runner, the runner's team; on any other
// thread, a team of that thread's own, started on its first parallel loop.
//
// Why not an OpenMP region: its closing barrier waits for every member, so a member kept off
// its core (by the host thread beside a graph runner, or by any other busy process) stalls the
// loop for a scheduler time slice. Measured on the 2-core VM with other jobs running, eager
// training steps under OpenMP ran 10-60x slower than alone; a team's owner waits only for
// chunks already claimed.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <thread>

#include "terra/core/pending.hpp"
#include "terra/core/team.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace terra {

// Below this much work (elements x cost per element) a chunk is not worth a thread.
inline constexpr int64_t kParallelGrain = 32768;

namespace detail {
inline std::atomic<int>& thread_setting() {
  static std::atomic<int> n{0};
  return n;
}
}  // namespace detail

/// Threads a parallel loop may use: set_num_threads(), else OMP_NUM_THREADS (read through
/// OpenMP when the build has it), else the hardware's thread count.
inline int get_num_threads() {
  if (int n = detail::thread_setting().load(std::memory_order_relaxed); n > 0) return n;
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env && std::atoi(env) > 0) return std::atoi(env);
  return int(std::max(1u, std::thread::hardware_concurrency()));
#endif
}
/// Sets the threads of every later parallel loop (n <= 0: back to the default). Engines
/// created before keep the count they started with. Results never depend on it.
inline void set_num_threads(int n) { detail::thread_setting().store(std::max(0, n)); }

namespace detail {
// The team of a thread's eager loops: get_num_threads() - 1 workers, the thread itself owns.
inline Team& eager_team() {
  thread_local std::unique_ptr<Team> team;
  int threads = get_num_threads();
  if (!team || team->threads() != threads) {
    team.reset();
    team = std::make_unique<Team>(threads, threads - 1);
  }
  return *team;
}
}  // namespace detail

// f(begin, end) over [0, n) in chunks; runs serially when n * cost_per_item is small. f must
// give the same result for any partition of [0, n) into chunks (see terra/core/team.hpp).
template <class F>
void parallel_for(int64_t n, int64_t cost_per_item, const F& f) {
  // Chunks of at least the grain, a few per thread so that late helpers still find work.
  int64_t chunks = detail::in_chunk() ? 1 : std::min<int64_t>(n, n * cost_per_item / kParallelGrain);
  if (chunks > 1) {
    detail::Team* team = detail::current_team();
    if (!team && get_num_threads() > 1) team = &detail::eager_team();
    if (team && team->threads() > 1) {
      team->run(n, std::min<int64_t>(chunks, 4 * team->threads()),
                [](const void* ctx, int64_t b, int64_t e) { (*static_cast<const F*>(ctx))(b, e); },
                &f);
      return;
    }
  }
  if (n > 0) f(0, n);
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define TERRA_CPU_AVX2 1
#define TERRA_CPU_AVX512 1
#endif

/// Whether CPU kernels may take their AVX2 paths: true on CPUs with AVX2. Both paths give
/// the same bits; tests turn it off to compare them.
inline bool& cpu_use_avx2() {
#if defined(TERRA_CPU_AVX2)
  static bool on = __builtin_cpu_supports("avx2");
#else
  static bool on = false;
#endif
  return on;
}

/// Whether CPU kernels may take their AVX-512 paths: true on CPUs with AVX-512F. The float32
/// matrix product (backend/cpu/sgemm_avx512.hpp; tests compare it with CBLAS) and dropout's
/// Philox draws (the same bits as the other paths) have one.
inline bool& cpu_use_avx512() {
#if defined(TERRA_CPU_AVX512)
  static bool on = __builtin_cpu_supports("avx512f");
#else
  static bool on = false;
#endif
  return on;
}

/// Whether float32 CPU convolutions take oneDNN (backend/cpu/conv_dnnl.hpp): true in builds
/// with it (TERRA_HAS_DNNL), always false otherwise. Tests and benchmarks turn it off to
/// compare with the im2col + gemm path. Set it between ops, not while a graph runner runs.
inline bool& cpu_use_dnnl() {
#if defined(TERRA_HAS_DNNL)
  static bool on = true;
#else
  static bool on = false;
#endif
  return on;
}

}  // namespace terra
