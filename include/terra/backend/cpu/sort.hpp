// terra/backend/cpu/sort.hpp: CPU kernels of cumsum, sort and topk.
// Each works along one dim of a contiguous input read as [m, n, i] (n the dim), one row per
// (m, i) pair; rows run in parallel.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include "terra/backend/cpu/reduce.hpp"
#include "terra/ops/sort.hpp"

namespace terra::cpu {

struct Along {
  Tensor src;  // contiguous
  int64_t m = 1, n = 1, i = 1;
};

inline Along along(const Tensor& x, int64_t dim, const char* name) {
  Along a;
  if (x.is_contiguous()) {
    a.src = x;
  } else {
    a.src = empty(x.shape(), x.dtype());
    copy_into(x, a.src);
  }
  if (x.dim() == 0) return a;
  int64_t d = wrap_dim(dim, x.dim(), name);
  for (int64_t k = 0; k < x.dim(); ++k) (k < d ? a.m : k > d ? a.i : a.n) *= x.shape()[k];
  return a;
}

// ---- cumsum ----
template <class T, class O>
void cumsum_rows(const Along& a, O* out) {
  const T* x = a.src.data_ptr<T>();
  if (a.i == 1) {  // the dim is innermost: one running sum per row
    parallel_for(a.m, a.n, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        acc_t<T> acc = 0;
        for (int64_t k = r * a.n; k < (r + 1) * a.n; ++k) out[k] = O(acc += acc_t<T>(x[k]));
      }
    });
    return;
  }
  constexpr int64_t kChunk = 256;
  const int64_t chunks = (a.i + kChunk - 1) / kChunk;
  // One task per (m, chunk of i): a row of running sums along the chunk.
  parallel_for(a.m * chunks, a.n * std::min(a.i, kChunk), [&](int64_t b, int64_t e) {
    acc_t<T> acc[kChunk];
    for (int64_t t = b; t < e; ++t) {
      int64_t mi = t / chunks, i0 = (t % chunks) * kChunk, len = std::min(kChunk, a.i - i0);
      std::fill(acc, acc + len, acc_t<T>(0));
      int64_t at = mi * a.n * a.i + i0;
      for (int64_t k = 0; k < a.n; ++k, at += a.i)
        for (int64_t j = 0; j < len; ++j) out[at + j] = O(acc[j] += acc_t<T>(x[at + j]));
    }
  });
}

inline void cumsum_kernel(const OpCall& c, std::span<Tensor> outs) {
  Along a = along(c.inputs[0], c.attrs.ints[0], "cumsum");
  if (outs[0].numel() == 0) return;
  TERRA_DISPATCH_COMPUTE(a.src.dtype(), "cumsum", {
    using O = sum_out_t<T>;
    cumsum_rows<T>(a, outs[0].data_ptr<O>());
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Cumsum> = &cumsum_kernel;

// ---- sort and topk ----
// Order of (value, index) pairs: by value with NaN as the largest, ties by index, so that an
// unstable sort of the pairs is a stable sort of the values.
template <class T>
struct PairOrder {
  bool descending;
  static bool lt(T a, T b) { return a < b || (is_nan(b) && !is_nan(a)); }
  bool operator()(const ValIdx<T>& a, const ValIdx<T>& b) const {
    if (lt(a.v, b.v)) return !descending;
    if (lt(b.v, a.v)) return descending;
    return a.i < b.i;
  }
};

// For each row: gather (value, index) pairs, let `order(first, last)` arrange them, and write
// the first `k` of them to values/indices (rows of length k).
template <class T, class F>
void per_row(const Along& a, int64_t k, T* values, int64_t* indices, const F& order) {
  const T* x = a.src.data_ptr<T>();
  int64_t cost = a.n * (1 + int64_t(std::log2(double(a.n) + 1)));
  parallel_for(a.m * a.i, cost, [&](int64_t b, int64_t e) {
    std::vector<ValIdx<T>> buf(size_t(a.n));
    for (int64_t r = b; r < e; ++r) {
      int64_t mi = r / a.i, ii = r % a.i;
      const T* in = x + mi * a.n * a.i + ii;
      for (int64_t j = 0; j < a.n; ++j) buf[j] = {in[j * a.i], j};
      order(buf.begin(), buf.end());
      T* v = values + mi * k * a.i + ii;
      int64_t* id = indices + mi * k * a.i + ii;
      for (int64_t j = 0; j < k; ++j) v[j * a.i] = buf[j].v, id[j * a.i] = buf[j].i;
    }
  });
}

inline void sort_kernel(const OpCall& c, std::span<Tensor> outs) {
  Along a = along(c.inputs[0], c.attrs.ints[0], "sort");
  if (outs[0].numel() == 0) return;
  TERRA_DISPATCH_COMPUTE(a.src.dtype(), "sort", {
    PairOrder<T> ord{c.attrs.ints[1] != 0};
    per_row<T>(a, a.n, outs[0].data_ptr<T>(), outs[1].data_ptr<int64_t>(),
               [&](auto f, auto l) { std::sort(f, l, ord); });
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Sort> = &sort_kernel;

inline void topk_kernel(const OpCall& c, std::span<Tensor> outs) {
  Along a = along(c.inputs[0], c.attrs.ints[1], "topk");
  const int64_t k = c.attrs.ints[0];
  const bool sorted = c.attrs.ints[3] != 0;
  if (outs[0].numel() == 0) return;
  TERRA_DISPATCH_COMPUTE(a.src.dtype(), "topk", {
    PairOrder<T> ord{c.attrs.ints[2] != 0};
    per_row<T>(a, k, outs[0].data_ptr<T>(), outs[1].data_ptr<int64_t>(), [&](auto f, auto l) {
      if (k < l - f) std::nth_element(f, f + k, l, ord);
      if (sorted)
        std::sort(f, f + k, ord);
      else
        std::sort(f, f + k, [](const auto& p, const auto& q) { return p.i < q.i; });
    });
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Topk> = &topk_kernel;

}  // namespace terra::cpu
