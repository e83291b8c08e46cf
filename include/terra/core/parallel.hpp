// terra/core/parallel.hpp: CPU parallel loops (OpenMP when the build has it, else serial).
#pragma once

#include <algorithm>
#include <cstdint>

#include "terra/core/pending.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace terra {

// Below this many elements of work a loop runs on the calling thread: the fork costs more.
inline constexpr int64_t kParallelGrain = 32768;

// f(begin, end) over [0, n) in chunks; runs serially when n * cost_per_item is small.
template <class F>
void parallel_for(int64_t n, int64_t cost_per_item, const F& f) {
#if defined(_OPENMP)
  if (n * cost_per_item >= kParallelGrain && n > 1 && !omp_in_parallel()) {
    int threads = std::min<int64_t>(omp_get_max_threads(), n);
    const bool runner = detail::in_runner();  // the team works for the graph runner too
#pragma omp parallel num_threads(threads)
    {
      detail::in_runner() = runner;
      int t = omp_get_thread_num(), nt = omp_get_num_threads();
      int64_t chunk = (n + nt - 1) / nt;
      int64_t b = std::min<int64_t>(n, t * chunk), e = std::min<int64_t>(n, b + chunk);
      if (b < e) f(b, e);
    }
    return;
  }
#endif
  (void)cost_per_item;
  if (n > 0) f(0, n);
}

}  // namespace terra
