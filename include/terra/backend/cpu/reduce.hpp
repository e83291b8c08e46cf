// terra/backend/cpu/reduce.hpp: CPU kernels of the reductions.
// Every reduction reads its input as [m, n, i] and reduces over n (outputs [m, i] row-major):
// dims are coalesced in logical order, and when the reduced dims form one run between at
// most one kept run on each side the input is read in place; otherwise the reduced dims are
// permuted last into a contiguous copy. Two loops cover the common layouts:
//  - i == 1 (reduce the innermost run): each output folds its run in 16 interleaved
//    accumulators, so the loop vectorizes;
//  - i > 1 with unit stride (reduce a leading dim): a row of accumulators along i, fed
//    kLanes rows per sweep (a transposed input is read this way too).
// Floats accumulate in double, integers in int64. Outputs are split across threads; with
// few outputs, the reduced extent is split too (by shape, not thread count) and the partials
// merged in order.
#pragma once

#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "terra/backend/cpu/elementwise.hpp"
#include "terra/ops/reduce.hpp"

namespace terra::cpu {

// ---- layout ----
struct Layout3 {
  Tensor src;  // the tensor read: the input itself, or a contiguous copy
  int64_t m = 1, n = 1, i = 1, sm = 0, sn = 0, si = 0;  // sizes, strides in elements
};

struct DimRun {
  int64_t size, stride;
  bool reduced;
};

// Merge neighbouring dims of one kind that are contiguous with each other; drop size-1 dims.
inline SmallVector<DimRun, 8> coalesce(const Tensor& x, const SmallVector<bool, 8>& mask) {
  SmallVector<DimRun, 8> g;
  for (int64_t d = 0; d < x.dim(); ++d) {
    int64_t s = x.shape()[d], st = x.strides()[d];
    if (s == 1) continue;
    if (!g.empty() && g.back().reduced == mask[d] && g.back().stride == s * st) {
      g.back().size *= s;
      g.back().stride = st;
      continue;
    }
    g.push_back({s, st, bool(mask[d])});
  }
  return g;
}

// Copy x with its kept dims first and reduced dims last, contiguous: [m, n, 1].
inline Layout3 permuted_copy(const Tensor& x, const SmallVector<bool, 8>& mask) {
  Shape s;
  Strides st;
  Layout3 l;
  l.m = l.n = 1;
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t d = 0; d < x.dim(); ++d) {
      if (mask[d] != (pass == 1)) continue;
      s.push_back(x.shape()[d]);
      st.push_back(x.strides()[d]);
      (pass ? l.n : l.m) *= x.shape()[d];
    }
  }
  l.src = empty(s, x.dtype());
  copy_into(Tensor::from_storage(x.storage(), s, st, x.storage_offset(), x.dtype()), l.src);
  l.sm = l.n;
  l.sn = 1;
  return l;
}

inline Layout3 layout3(const Tensor& x, const SmallVector<bool, 8>& mask) {
  if (x.numel() == 0) {
    Layout3 l{x};
    l.n = op::reduce::extent(x.shape(), mask);
    for (int64_t d = 0; d < x.dim(); ++d)
      if (!mask[d]) l.m *= x.shape()[d];
    return l;
  }
  auto g = coalesce(x, mask);
  size_t nred = 0, at = g.size();
  for (size_t k = 0; k < g.size(); ++k)
    if (g[k].reduced) ++nred, at = k;
  bool fits = nred == 0 ? g.size() <= 2 : nred == 1 && at <= 1 && g.size() - at <= 2;
  if (!fits) return permuted_copy(x, mask);
  Layout3 l{x};
  size_t k = 0;
  if (k < g.size() && !g[k].reduced && (nred == 1 || g.size() == 2))
    l.m = g[k].size, l.sm = g[k++].stride;
  if (k < g.size() && g[k].reduced) l.n = g[k].size, l.sn = g[k++].stride;
  if (k < g.size()) l.i = g[k].size, l.si = g[k].stride;
  // A kept dim of unit stride outside a strided reduced dim (a transposed input): read it as
  // [1, n, m] so the row-of-accumulators loop streams memory.
  if (l.i == 1 && l.m > 1 && l.sm == 1 && l.sn != 1) {
    l.i = l.m, l.si = 1;
    l.m = 1, l.sm = 0;
  }
  return l;
}

inline Layout3 layout_of(const OpCall& c) {
  const Tensor& x = c.inputs[0];
  return layout3(x, op::reduce::mask(x, op::reduce::dims_of(c.attrs), op_name(c.op)));
}

// ---- drivers ----
// A reducer R has: Acc; init(); step(acc, x, index, p); merge(a, b) with a before b;
// put(output, acc, p). p is a per-output value from an earlier pass (mean, max) or 0.
inline constexpr int kLanes = 8;  // rows per sweep of the leading-dim loop
// Elements folded in lanes before adding to the running total: long sums stay accurate.
inline constexpr int64_t kBlock = 4096;

// Fold the run x[0], x[s], ... x[(len-1)s] whose first element has index n0. kWidth lanes of
// accumulators, each fed kUnroll elements per sweep: the sweep over lanes vectorizes (GCC
// does not vectorize a conditional reduction kept in registers, e.g. a NaN-aware max).
template <bool Contig, class R, class T>
typename R::Acc reduce_run(const R& r, const T* x, int64_t s, int64_t len, int64_t n0, double p) {
  using A = typename R::Acc;
  constexpr int64_t kWidth = 16, kUnroll = 8, kSweep = kWidth * kUnroll;
  auto at = [&](int64_t k) { return x[Contig ? k : k * s]; };
  A total = r.init();
  for (int64_t b = 0; b < len; b += kBlock) {
    int64_t e = std::min(len, b + kBlock), k = b;
    A lane[kWidth];
    for (A& a : lane) a = r.init();
    for (; k + kSweep <= e; k += kSweep) {
      for (int64_t j = 0; j < kWidth; ++j) {
        A a = lane[j];
        for (int64_t u = 0; u < kUnroll; ++u)
          a = r.step(a, at(k + u * kWidth + j), n0 + k + u * kWidth + j, p);
        lane[j] = a;
      }
    }
    A a = lane[0];
    for (int j = 1; j < kWidth; ++j) a = r.merge(a, lane[j]);
    for (; k < e; ++k) a = r.step(a, at(k), n0 + k, p);
    total = r.merge(total, a);
  }
  return total;
}

// Accumulators of outputs [o0, o1) (o = mi * l.i + ii) over the reduced range [n0, n1).
template <class R, class T, bool HasP>
void reduce_block(const R& r, const Layout3& l, const T* x, int64_t o0, int64_t o1, int64_t n0,
                  int64_t n1, const double* p, typename R::Acc* st) {
  if (l.i > 1 && l.si == 1) {
    for (int64_t o = o0; o < o1;) {
      int64_t mi = o / l.i, ii = o % l.i, len = std::min(o1 - o, l.i - ii);
      auto* acc = st + (o - o0);
      for (int64_t j = 0; j < len; ++j) acc[j] = r.init();
      const T* base = x + mi * l.sm + ii;
      int64_t k = n0;
      // kLanes rows per sweep: each accumulator is loaded and stored once per kLanes steps.
      for (; k + kLanes <= n1; k += kLanes) {
        const T* row[kLanes];
        for (int u = 0; u < kLanes; ++u) row[u] = base + (k + u) * l.sn;
        for (int64_t j = 0; j < len; ++j) {
          auto a = acc[j];
          double pj = HasP ? p[o + j] : 0.0;
          for (int u = 0; u < kLanes; ++u) a = r.step(a, row[u][j], k + u, pj);
          acc[j] = a;
        }
      }
      for (; k < n1; ++k) {
        const T* row = base + k * l.sn;
        for (int64_t j = 0; j < len; ++j) acc[j] = r.step(acc[j], row[j], k, HasP ? p[o + j] : 0.0);
      }
      o += len;
    }
    return;
  }
  for (int64_t o = o0; o < o1; ++o) {
    const T* b = x + (o / l.i) * l.sm + (o % l.i) * l.si + n0 * l.sn;
    double po = HasP ? p[o] : 0.0;
    st[o - o0] = l.sn == 1 ? reduce_run<true>(r, b, 1, n1 - n0, n0, po)
                           : reduce_run<false>(r, b, l.sn, n1 - n0, n0, po);
  }
}

template <class T, bool HasP = false, class R>
void run_reduce(const R& r, const Layout3& l, const double* p = nullptr) {
  using A = typename R::Acc;
  const T* x = l.src.numel() ? l.src.data_ptr<T>() : nullptr;
  const int64_t outs = l.m * l.i, n = l.n;
  if (outs == 0) return;
  // Few outputs over a long extent: split the extent too, into a number of parts fixed by the
  // shape alone, so that the sum (its rounding) never depends on the thread count.
  constexpr int64_t kChunk = 1024, kSplitMin = 16384, kMaxSplits = 16;
  int64_t splits = outs < kMaxSplits ? std::min<int64_t>(kMaxSplits, n / kSplitMin) : 1;
  if (splits <= 1) {
    parallel_for(outs, std::max<int64_t>(n, 1), [&](int64_t b, int64_t e) {
      A st[kChunk];
      for (int64_t o = b; o < e; o += kChunk) {
        int64_t oe = std::min(e, o + kChunk);
        reduce_block<R, T, HasP>(r, l, x, o, oe, 0, n, p, st);
        for (int64_t q = o; q < oe; ++q) r.put(q, st[q - o], HasP ? p[q] : 0.0);
      }
    });
    return;
  }
  std::unique_ptr<A[]> st(new A[size_t(splits * outs)]);  // not vector: A may be bool
  parallel_for(splits, n, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s)
      reduce_block<R, T, HasP>(r, l, x, 0, outs, n * s / splits, n * (s + 1) / splits, p,
                               st.get() + s * outs);
  });
  for (int64_t q = 0; q < outs; ++q) {
    A a = st[q];
    for (int64_t s = 1; s < splits; ++s) a = r.merge(a, st[s * outs + q]);
    r.put(q, a, HasP ? p[q] : 0.0);
  }
}

// ---- reducers ----
template <class T>
using acc_t = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;
template <class T>
using sum_out_t = std::conditional_t<std::is_floating_point_v<T>, T, int64_t>;

template <class T>
inline bool is_nan(T x) {
  if constexpr (std::is_floating_point_v<T>)
    return x != x;
  else
    return false;
}

template <class T, class O>
struct SumR {
  using Acc = acc_t<T>;
  O* out;
  Acc init() const { return 0; }
  Acc step(Acc a, T x, int64_t, double) const { return a + Acc(x); }
  Acc merge(Acc a, Acc b) const { return a + b; }
  void put(int64_t o, Acc a, double) const { out[o] = O(a); }
};

template <class T, class O>
struct ProdR {
  using Acc = acc_t<T>;
  O* out;
  Acc init() const { return 1; }
  Acc step(Acc a, T x, int64_t, double) const { return a * Acc(x); }
  Acc merge(Acc a, Acc b) const { return a * b; }
  void put(int64_t o, Acc a, double) const { out[o] = O(a); }
};

template <class T, class O>
struct MeanR : SumR<T, O> {
  double count;
  void put(int64_t o, double a, double) const { this->out[o] = O(a / count); }
};

// Sum of squared deviations from the per-output mean p, divided by max(0, n - correction).
template <class T>
struct SqDevR : SumR<T, T> {
  double dof;
  double step(double a, T x, int64_t, double p) const {
    double d = double(x) - p;
    return a + d * d;
  }
  void put(int64_t o, double a, double) const { this->out[o] = T(a / dof); }
};

// log(sum(exp(x - p))) + p, p the per-output max; a non-finite max is the answer itself
// (all -inf gives -inf, a NaN or +inf propagates).
template <class T>
struct ExpSumR : SumR<T, T> {
  double step(double a, T x, int64_t, double p) const { return a + double(math::exp(x - T(p))); }
  void put(int64_t o, double a, double p) const {
    this->out[o] = T(std::isfinite(p) ? p + math::log(a) : p);
  }
};

// max (Max) or min; NaN wins.
template <class T, class O, bool Max>
struct ExtremeR {
  using Acc = T;
  O* out;
  T init() const {
    using L = std::numeric_limits<T>;
    if constexpr (L::has_infinity)
      return Max ? -L::infinity() : L::infinity();
    else
      return Max ? L::lowest() : L::max();
  }
  // Written as two selects so that the lanes vectorize.
  T step(T a, T x, int64_t, double) const {
    T m = (Max ? x > a : x < a) ? x : a;
    return is_nan(x) ? x : m;
  }
  T merge(T a, T b) const { return step(a, b, 0, 0.0); }
  void put(int64_t o, T a, double) const { out[o] = O(a); }
};

template <class T>
struct ValIdx {
  T v;
  int64_t i;
};

// (value, first index) of the max/min; a NaN beats any number and the first NaN wins.
template <class T, bool Max>
struct ArgR {
  using Acc = ValIdx<T>;
  T* values;  // null for argmax/argmin
  int64_t* index;
  static bool better(T x, T a) { return (Max ? x > a : x < a) || (is_nan(x) && !is_nan(a)); }
  Acc init() const { return {T(), -1}; }
  Acc step(Acc a, T x, int64_t k, double) const {
    return a.i < 0 || better(x, a.v) ? Acc{x, k} : a;
  }
  Acc merge(Acc a, Acc b) const {
    if (a.i < 0 || better(b.v, a.v)) return b.i < 0 ? a : b;
    if (b.i < 0 || better(a.v, b.v)) return a;
    return a.i <= b.i ? a : b;
  }
  void put(int64_t o, Acc a, double) const {
    if (values) values[o] = a.v;
    index[o] = a.i;
  }
};

// ---- kernels ----
template <template <class, class> class R>
void sum_like_kernel(const OpCall& c, std::span<Tensor> outs) {
  Layout3 l = layout_of(c);
  TERRA_DISPATCH_COMPUTE(l.src.dtype(), op_name(c.op), {
    using O = sum_out_t<T>;
    run_reduce<T>(R<T, O>{outs[0].data_ptr<O>()}, l);
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Sum> = &sum_like_kernel<SumR>;
template <>
inline constexpr KernelFn cpu_kernel<op::Prod> = &sum_like_kernel<ProdR>;

inline void mean_kernel(const OpCall& c, std::span<Tensor> outs) {
  Layout3 l = layout_of(c);
  TERRA_DISPATCH_FLOAT(l.src.dtype(), "mean", {
    run_reduce<T>(MeanR<T, T>{{outs[0].data_ptr<T>()}, double(l.n)}, l);
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Mean> = &mean_kernel;

// Two passes (mean, then squared deviations): exact where a one-pass formula cancels.
inline void var_kernel(const OpCall& c, std::span<Tensor> outs) {
  Layout3 l = layout_of(c);
  std::vector<double> mu(size_t(l.m * l.i));
  double dof = std::max(0.0, double(l.n) - c.attrs.scalars[0]);
  TERRA_DISPATCH_FLOAT(l.src.dtype(), "var", {
    run_reduce<T>(MeanR<T, double>{{mu.data()}, double(l.n)}, l);
    run_reduce<T, true>(SqDevR<T>{{outs[0].data_ptr<T>()}, dof}, l, mu.data());
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Var> = &var_kernel;

inline void logsumexp_kernel(const OpCall& c, std::span<Tensor> outs) {
  Layout3 l = layout_of(c);
  std::vector<double> mx(size_t(l.m * l.i));
  TERRA_DISPATCH_FLOAT(l.src.dtype(), "logsumexp", {
    run_reduce<T>(ExtremeR<T, double, true>{mx.data()}, l);
    run_reduce<T, true>(ExpSumR<T>{{outs[0].data_ptr<T>()}}, l, mx.data());
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Logsumexp> = &logsumexp_kernel;

template <bool Max>
void extreme_kernel(const OpCall& c, std::span<Tensor> outs) {
  Layout3 l = layout_of(c);
  TERRA_DISPATCH_COMPUTE(l.src.dtype(), op_name(c.op),
                         { run_reduce<T>(ExtremeR<T, T, Max>{outs[0].data_ptr<T>()}, l); });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Amax> = &extreme_kernel<true>;
template <>
inline constexpr KernelFn cpu_kernel<op::Amin> = &extreme_kernel<false>;

// max/min (values and indices) and argmax/argmin (indices only).
template <bool Max, bool Values>
void arg_kernel(const OpCall& c, std::span<Tensor> outs) {
  Layout3 l = layout_of(c);
  TERRA_DISPATCH_COMPUTE(l.src.dtype(), op_name(c.op), {
    T* v = Values ? outs[0].data_ptr<T>() : nullptr;
    run_reduce<T>(ArgR<T, Max>{v, outs[Values ? 1 : 0].data_ptr<int64_t>()}, l);
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::MaxDim> = &arg_kernel<true, true>;
template <>
inline constexpr KernelFn cpu_kernel<op::MinDim> = &arg_kernel<false, true>;
template <>
inline constexpr KernelFn cpu_kernel<op::Argmax> = &arg_kernel<true, false>;
template <>
inline constexpr KernelFn cpu_kernel<op::Argmin> = &arg_kernel<false, false>;

}  // namespace terra::cpu
