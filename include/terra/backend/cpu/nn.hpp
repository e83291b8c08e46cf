// terra/backend/cpu/nn.hpp: CPU kernels of the neural-network ops (softmax, log_softmax,
// layer_norm, batch_norm, dropout). Inputs are made contiguous first; the reductions use
// several independent accumulators so the compiler can vectorize them without reassociating.
#pragma once

#include <bit>
#include <cstring>
#include <limits>

#include "terra/backend/cpu/index.hpp"
#include "terra/core/parallel.hpp"  // TERRA_CPU_AVX2, TERRA_CPU_AVX512
#include "terra/ops/nn.hpp"

#if defined(TERRA_CPU_AVX2)
#include <immintrin.h>
#endif

// The softmax helpers are always inlined, so that the AVX2 entry points below compile them
// for AVX2 too. They carry no optimize attribute: a function with one loses GCC's -O3 loop
// vectorization; their selects are bit operations (cpu::select) that vectorize without it.
#if defined(__GNUC__) || defined(__clang__)
#define TERRA_CPU_NN_INLINE __attribute__((always_inline)) inline
#else
#define TERRA_CPU_NN_INLINE inline
#endif

// Runtime CPU dispatch: the default x86-64 build has SSE2 only, where the softmax exp loop
// does not vectorize. On CPUs with AVX2 it runs clones of the row loops compiled for AVX2,
// without FMA: no contraction, the same operations in the same order, so both paths give
// the same bits (tests/ops/test_kernel_threads.cpp compares them).
#if defined(TERRA_CPU_AVX2)
#define TERRA_CPU_AVX2_CLONES 1
#endif

namespace terra::cpu {

namespace nnk {

// A contiguous shape seen as [outer, n, inner] around dim d (a 0-d tensor is [1, 1, 1]).
struct Split3 {
  int64_t outer = 1, n = 1, inner = 1;
};
inline Split3 split_at(const Shape& s, int64_t d) {
  Split3 r;
  for (int64_t i = 0; i < int64_t(s.size()); ++i)
    (i < d ? r.outer : i == d ? r.n : r.inner) *= s[i];
  return r;
}

template <class T>
TERRA_CPU_NN_INLINE T row_max(const T* x, int64_t n) {
  constexpr T lo = -std::numeric_limits<T>::infinity();
  T m[8] = {lo, lo, lo, lo, lo, lo, lo, lo};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) m[j] = select(x[i + j] > m[j], x[i + j], m[j]);
  for (; i < n; ++i) m[0] = select(x[i] > m[0], x[i], m[0]);
  T r = m[0];
  for (int j = 1; j < 8; ++j) r = select(m[j] > r, m[j], r);
  return r;
}

// Sum of x (or of (x - c)^2 when Sq): 8 accumulators of T (the loop vectorizes) over blocks
// of 512 elements, each block's sum added in double so long rows keep their precision.
template <bool Sq, class T>
TERRA_CPU_NN_INLINE double row_sum(const T* x, int64_t n, double c = 0.0) {
  const T ct = T(c);
  double total = 0;
  for (int64_t b0 = 0; b0 < n; b0 += 512) {
    const int64_t b1 = std::min(n, b0 + 512);
    T a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = b0;
    for (; i + 8 <= b1; i += 8)
      for (int j = 0; j < 8; ++j) {
        const T d = x[i + j] - ct;
        a[j] += Sq ? d * d : d;
      }
    for (; i < b1; ++i) {
      const T d = x[i] - ct;
      a[0] += Sq ? d * d : d;
    }
    total += double(((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
  }
  return total + (Sq ? 0.0 : double(ct) * double(n));
}

// One contiguous row: y = softmax(x) or log_softmax(x); y holds exp(x - max) in between. A
// row whose max is infinite gives NaN, as PyTorch does.
template <bool Log, class T>
TERRA_CPU_NN_INLINE void softmax_row(const T* x, T* y, int64_t n) {
  const T m = row_max(x, n);
  for (int64_t i = 0; i < n; ++i) y[i] = math::vexp(x[i] - m);
  const double s = row_sum<false>(y, n);
  if constexpr (Log) {
    const T lg = T(std::log(s));
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) - lg;
  } else {
    const T inv = T(1.0 / s);
    for (int64_t i = 0; i < n; ++i) y[i] *= inv;
  }
}

// Softmax over the middle dim of [n, inner] for columns [c0, c0 + w): the inner loops run over
// contiguous columns, so a dim other than the last vectorizes too.
template <bool Log, class T>
TERRA_CPU_NN_INLINE void softmax_cols(const T* x, T* y, int64_t n, int64_t inner, int64_t c0,
                                   int64_t w) {
  constexpr int64_t B = 64;  // kSoftmaxBlock
  T m[B], s[B];
  for (int64_t c = 0; c < w; ++c) {
    m[c] = -std::numeric_limits<T>::infinity();
    s[c] = 0;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* r = x + i * inner + c0;
    for (int64_t c = 0; c < w; ++c) m[c] = select(r[c] > m[c], r[c], m[c]);
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* r = x + i * inner + c0;
    T* o = y + i * inner + c0;
    for (int64_t c = 0; c < w; ++c) o[c] = math::vexp(r[c] - m[c]);
    for (int64_t c = 0; c < w; ++c) s[c] += o[c];
  }
  for (int64_t c = 0; c < w; ++c) s[c] = Log ? T(std::log(s[c])) : T(1) / s[c];
  for (int64_t i = 0; i < n; ++i) {
    const T* r = x + i * inner + c0;
    T* o = y + i * inner + c0;
    if constexpr (Log)
      for (int64_t c = 0; c < w; ++c) o[c] = (r[c] - m[c]) - s[c];
    else
      for (int64_t c = 0; c < w; ++c) o[c] *= s[c];
  }
}

// Rows [b, e) of a last-dim softmax, or column blocks [b, e) of a middle-dim one.
template <bool Log, class T>
TERRA_CPU_NN_INLINE void softmax_rows(const T* x, T* y, const Split3& g, int64_t b, int64_t e) {
  for (int64_t o = b; o < e; ++o) softmax_row<Log>(x + o * g.n, y + o * g.n, g.n);
}
constexpr int64_t kSoftmaxBlock = 64;
template <bool Log, class T>
TERRA_CPU_NN_INLINE void softmax_blocks(const T* x, T* y, const Split3& g, int64_t b,
                                        int64_t e) {
  const int64_t blocks = (g.inner + kSoftmaxBlock - 1) / kSoftmaxBlock;
  for (int64_t t = b; t < e; ++t) {
    int64_t o = t / blocks, c0 = (t % blocks) * kSoftmaxBlock;
    int64_t off = o * g.n * g.inner;
    softmax_cols<Log>(x + off, y + off, g.n, g.inner, c0, std::min(kSoftmaxBlock, g.inner - c0));
  }
}

#if defined(TERRA_CPU_AVX2_CLONES)
template <bool Log, class T>
__attribute__((target("avx2"))) void softmax_rows_avx2(const T* x, T* y,
                                                                        const Split3& g,
                                                                        int64_t b, int64_t e) {
  softmax_rows<Log>(x, y, g, b, e);
}
template <bool Log, class T>
__attribute__((target("avx2"))) void softmax_blocks_avx2(const T* x, T* y,
                                                                          const Split3& g,
                                                                          int64_t b, int64_t e) {
  softmax_blocks<Log>(x, y, g, b, e);
}
#endif

template <bool Log, class T>
void softmax_any(const T* x, T* y, const Split3& g) {
  const bool rows = g.inner == 1;
  const int64_t blocks = (g.inner + kSoftmaxBlock - 1) / kSoftmaxBlock;
  const int64_t n = rows ? g.outer : g.outer * blocks;
  const int64_t cost = rows ? g.n * 8 : g.n * kSoftmaxBlock * 8;
#if defined(TERRA_CPU_AVX2_CLONES)
  if (cpu_use_avx2()) {
    parallel_for(n, cost, [&](int64_t b, int64_t e) {
      rows ? softmax_rows_avx2<Log>(x, y, g, b, e) : softmax_blocks_avx2<Log>(x, y, g, b, e);
    });
    return;
  }
#endif
  parallel_for(n, cost, [&](int64_t b, int64_t e) {
    rows ? softmax_rows<Log>(x, y, g, b, e) : softmax_blocks<Log>(x, y, g, b, e);
  });
}

// The optional parameter inputs of a normalization, as contiguous arrays of dtype dt
// (nullptr when absent); `flags` says which of them follow x in c.inputs.
inline SmallVector<Tensor, 4> params(const OpCall& c, size_t nflags, DType dt) {
  SmallVector<Tensor, 4> out(nflags);
  for (size_t k = 0, i = 1; k < nflags; ++k)
    if (c.attrs.ints[k]) out[k] = ix::dense(c.inputs[i++], dt);
  return out;
}
template <class T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace nnk

// ---- softmax / log_softmax ----
template <bool Log>
void softmax_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor x = ix::dense(c.inputs[0], c.inputs[0].dtype());
  int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), op_name(c.op));
  if (x.numel() == 0) return;
  nnk::Split3 g = nnk::split_at(x.shape(), d);
  TERRA_DISPATCH_FLOAT(x.dtype(), op_name(c.op),
                       { nnk::softmax_any<Log>(x.data_ptr<T>(), outs[0].data_ptr<T>(), g); });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Softmax> = &softmax_kernel<false>;
template <>
inline constexpr KernelFn cpu_kernel<op::LogSoftmax> = &softmax_kernel<true>;

// ---- layer_norm ----
template <class T>
void layer_norm_rows(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                     int64_t n, double eps) {
  parallel_for(rows, n * 4, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* xr = x + r * n;
      T* yr = y + r * n;
      double mu = nnk::row_sum<false>(xr, n) / double(n);
      double var = nnk::row_sum<true>(xr, n, mu) / double(n);
      const T m = T(mu), rs = T(1.0 / std::sqrt(var + eps));
      mean[r] = m;
      rstd[r] = rs;
      if (w && b)
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) * rs * w[i] + b[i];
      else if (w)
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) * rs * w[i];
      else if (b)
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) * rs + b[i];
      else
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) * rs;
    }
  });
}

inline void layer_norm_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor x = ix::dense(c.inputs[0], c.inputs[0].dtype());
  int64_t rows = outs[1].numel(), n = rows ? x.numel() / rows : 0;
  if (rows == 0) return;
  auto p = nnk::params(c, 2, x.dtype());
  TERRA_DISPATCH_FLOAT(x.dtype(), "layer_norm", {
    layer_norm_rows<T>(x.data_ptr<T>(), nnk::ptr_or_null<T>(p[0]), nnk::ptr_or_null<T>(p[1]),
                       outs[0].data_ptr<T>(), outs[1].data_ptr<T>(), outs[2].data_ptr<T>(), rows, n,
                       c.attrs.scalars[0]);
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::LayerNorm> = &layer_norm_kernel;

// ---- batch_norm ----
// Per channel: (mean, biased variance) over the batch and the spatial dims of x [N, C, S].
template <class T>
void channel_stats(const T* x, int64_t nb, int64_t ch, int64_t sp, int64_t c, double& mean,
                   double& var) {
  double s = 0, q = 0, cnt = double(nb * sp);
  for (int64_t i = 0; i < nb; ++i) s += nnk::row_sum<false>(x + (i * ch + c) * sp, sp);
  mean = s / cnt;
  for (int64_t i = 0; i < nb; ++i) q += nnk::row_sum<true>(x + (i * ch + c) * sp, sp, mean);
  var = q / cnt;
}

// running = (1 - momentum) * running + momentum * value, through the running tensor's stride.
inline void update_running(const Tensor& run, int64_t c, double value, double momentum) {
  TERRA_DISPATCH_FLOAT(run.dtype(), "batch_norm", {
    T& r = run.data_ptr<T>()[c * run.strides()[0]];
    r = T((1.0 - momentum) * double(r) + momentum * value);
  });
}

// attrs.ints[5] (set only by a plan's executor, see graph::Plan::epilogue): write relu(y)
// instead of y, in the same pass. The bits are those of relu applied to y afterwards: the
// same float y, then op::Relu on it.
inline void batch_norm_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor x = ix::dense(c.inputs[0], c.inputs[0].dtype());
  const auto& fl = c.attrs.ints;
  bool training = fl[4] != 0;
  const bool relu = fl.size() > 5 && fl[5] != 0;
  double momentum = c.attrs.scalars[0], eps = c.attrs.scalars[1];
  int64_t nb = x.shape()[0], ch = x.shape()[1], sp = ch && nb ? x.numel() / (nb * ch) : 0;
  auto p = nnk::params(c, 2, x.dtype());
  Tensor run_m, run_v;  // the caller's tensors: updated in place
  if (fl[2]) {
    run_m = c.inputs[1 + fl[0] + fl[1]];
    run_v = c.inputs[2 + fl[0] + fl[1]];
  }
  bool update = training && run_m.defined() && nb * sp > 0;
  Tensor eval_m, eval_v;  // eval mode reads the running stats as contiguous float64
  if (!training) {
    eval_m = ix::dense(run_m, DType::Float64);
    eval_v = ix::dense(run_v, DType::Float64);
  }
  TERRA_DISPATCH_FLOAT(x.dtype(), "batch_norm", {
    const T *xp = x.data_ptr<T>(), *w = nnk::ptr_or_null<T>(p[0]), *b = nnk::ptr_or_null<T>(p[1]);
    T *y = outs[0].data_ptr<T>(), *sm = outs[1].data_ptr<T>(), *si = outs[2].data_ptr<T>();
    parallel_for(ch, std::max<int64_t>(nb * sp, 1) * 6, [&](int64_t lo, int64_t hi) {
      for (int64_t k = lo; k < hi; ++k) {
        double mean = 0, var = 0;
        if (training && nb * sp > 0) {
          channel_stats(xp, nb, ch, sp, k, mean, var);
        } else if (!training) {
          mean = eval_m.data_ptr<double>()[k];
          var = eval_v.data_ptr<double>()[k];
        }
        double inv = 1.0 / std::sqrt(var + eps);
        sm[k] = T(mean);
        si[k] = T(inv);
        if (update) {
          double cnt = double(nb * sp);
          update_running(run_m, k, mean, momentum);
          update_running(run_v, k, var * cnt / (cnt - 1.0), momentum);
        }
        const T scale = T(inv * (w ? double(w[k]) : 1.0));
        const T shift = T((b ? double(b[k]) : 0.0) - mean * double(scale));
        for (int64_t i = 0; i < nb; ++i) {
          const T* xr = xp + (i * ch + k) * sp;
          T* yr = y + (i * ch + k) * sp;
          if (relu) {
            const op::Relu act;
            for (int64_t j = 0; j < sp; ++j) {
              const T v = xr[j] * scale + shift;
              yr[j] = act(v);
            }
          } else {
            for (int64_t j = 0; j < sp; ++j) yr[j] = xr[j] * scale + shift;
          }
        }
      }
    });
  });
  if (update) {
    run_m.storage()->version.fetch_add(1, std::memory_order_relaxed);
    run_v.storage()->version.fetch_add(1, std::memory_order_relaxed);
  }
}
template <>
inline constexpr KernelFn cpu_kernel<op::BatchNorm> = &batch_norm_kernel;

// ---- batch_norm_backward ----
// Over one row: s1 += sum(gy), s2 += sum(gy * (x - m)), 8 accumulators of T per block of 512
// (the loop vectorizes), each block's sums added in double.
template <class T>
TERRA_CPU_NN_INLINE void bn_row_sums(const T* gy, const T* x, int64_t n, T m, double& s1,
                                  double& s2) {
  for (int64_t b0 = 0; b0 < n; b0 += 512) {
    const int64_t b1 = std::min(n, b0 + 512);
    T a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, q[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = b0;
    for (; i + 8 <= b1; i += 8)
      for (int j = 0; j < 8; ++j) {
        a[j] += gy[i + j];
        q[j] += gy[i + j] * (x[i + j] - m);
      }
    for (; i < b1; ++i) {
      a[0] += gy[i];
      q[0] += gy[i] * (x[i] - m);
    }
    s1 += double(((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
    s2 += double(((q[0] + q[1]) + (q[2] + q[3])) + ((q[4] + q[5]) + (q[6] + q[7])));
  }
}

struct BnGrads {
  int64_t nb, ch, sp;
  const void *gy, *x, *w, *mean, *inv;
  void *gx, *gw, *gb;
};

// One task per channel, each summing its values in a fixed order: the same bits for any
// number of threads.
template <class T>
void batch_norm_backward_typed(const BnGrads& a) {
  const T *gy = static_cast<const T*>(a.gy), *x = static_cast<const T*>(a.x);
  const T *w = static_cast<const T*>(a.w), *mean = static_cast<const T*>(a.mean);
  const T* inv = static_cast<const T*>(a.inv);
  T *gx = static_cast<T*>(a.gx), *gw = static_cast<T*>(a.gw), *gb = static_cast<T*>(a.gb);
  const double n = double(a.nb * a.sp);
  parallel_for(a.ch, std::max<int64_t>(a.nb * a.sp, 1) * 6, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const T m = mean[k];
      double s1 = 0, s2 = 0;
      for (int64_t i = 0; i < a.nb; ++i) {
        const int64_t off = (i * a.ch + k) * a.sp;
        bn_row_sums(gy + off, x + off, a.sp, m, s1, s2);
      }
      const double is = double(inv[k]);
      if (gb) gb[k] = T(s1);
      if (gw) gw[k] = T(s2 * is);
      if (!gx) continue;
      // PyTorch's form: gx = (gy - mean(gy) - (x - mean) * proj) * invstd * w.
      const T mdy = T(s1 / n), proj = T(s2 * is * is / n);
      const T scale = T(is * (w ? double(w[k]) : 1.0));
      for (int64_t i = 0; i < a.nb; ++i) {
        const int64_t off = (i * a.ch + k) * a.sp;
        const T *gr = gy + off, *xr = x + off;
        T* o = gx + off;
        for (int64_t j = 0; j < a.sp; ++j) o[j] = (gr[j] - mdy - (xr[j] - m) * proj) * scale;
      }
    }
  });
}

inline void batch_norm_backward_kernel(const OpCall& c, std::span<Tensor> outs) {
  const auto& v = c.attrs.ints;
  const DType dt = c.inputs[1].dtype();
  const bool has_w = v[0] != 0;
  Tensor gy = ix::dense(c.inputs[0], dt), x = ix::dense(c.inputs[1], dt);
  Tensor w = has_w ? ix::dense(c.inputs[2], dt) : Tensor();
  Tensor mean = ix::dense(c.inputs[2 + has_w], dt), inv = ix::dense(c.inputs[3 + has_w], dt);
  const int64_t nb = x.shape()[0], ch = x.shape()[1], sp = nb && ch ? x.numel() / (nb * ch) : 0;
  size_t k = 0;
  auto next = [&](bool want) { return want ? outs[k++].raw_data() : nullptr; };
  BnGrads a{nb, ch, sp, gy.raw_data(), x.raw_data(), has_w ? w.raw_data() : nullptr,
            mean.raw_data(), inv.raw_data(), nullptr, nullptr, nullptr};
  a.gx = next(v[1]);
  a.gw = next(v[2]);
  a.gb = next(v[3]);
  TERRA_DISPATCH_FLOAT(dt, "batch_norm_backward", { batch_norm_backward_typed<T>(a); });
}
template <>
inline constexpr KernelFn cpu_kernel<op::BatchNormBackward> = &batch_norm_backward_kernel;

// ---- dropout ----
#if defined(TERRA_CPU_AVX2_CLONES)
// PhiloxDraw::uniform_f32 for the 8 counters first .. first + 7 at once: Philox-4x32-10 in
// 32-bit lanes, each 32x32 -> 64-bit product split from an even-lane and an odd-lane
// _mm256_mul_epu32. Integer arithmetic only, so every bit matches the scalar generator
// (tests/ops/test_kernel_threads.cpp compares them); about 4x faster than one block at a time.
__attribute__((target("avx2"), always_inline)) inline void mul_hi_lo_x8(__m256i a, __m256i m,
                                                                        __m256i& l, __m256i& h) {
  __m256i even = _mm256_mul_epu32(a, m);
  __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  l = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  h = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}
// groups: how many groups of 8 counters, from `first`.
__attribute__((target("avx2"))) inline void uniform_f32_x8(uint64_t key, uint64_t first, int64_t groups,
                                                           float* u) {
  const __m256i m0 = _mm256_set1_epi32(int32_t(kPhiloxM0)), m1 = _mm256_set1_epi32(int32_t(kPhiloxM1));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i sign = _mm256_set1_epi32(int32_t(0x80000000u));
  for (int64_t g = 0; g < groups; ++g) {
    const uint64_t base = first + uint64_t(g) * 8;
    // Counters base + lane as 64-bit numbers: the low words, and the high word plus the carry
    // of lanes whose low word wrapped (unsigned low < base's low word).
    const __m256i blo = _mm256_set1_epi32(int32_t(uint32_t(base)));
    __m256i c0 = _mm256_add_epi32(blo, lane);
    __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(blo, sign), _mm256_xor_si256(c0, sign));
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(int32_t(uint32_t(base >> 32))), wrapped);
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
    for (int r = 0; r < 10; ++r) {
      __m256i l0, h0, l1, h1;
      mul_hi_lo_x8(c0, m0, l0, h0);
      mul_hi_lo_x8(c2, m1, l1, h1);
      __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(h1, c1), _mm256_set1_epi32(int32_t(k0)));
      __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(h0, c3), _mm256_set1_epi32(int32_t(k1)));
      c1 = l1;
      c3 = l0;
      c0 = n0;
      c2 = n2;
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    // float(v0 >> 8) * 2^-24: exact in both paths (24-bit integers, a power-of-two scale).
    __m256 f = _mm256_cvtepi32_ps(_mm256_srli_epi32(c0, 8));
    _mm256_storeu_ps(u + g * 8, _mm256_mul_ps(f, _mm256_set1_ps(1.0f / 16777216.0f)));
  }
}
#endif

#if defined(TERRA_CPU_AVX512)
// The same for 16 counters at once with AVX-512F: its unsigned compares and masked adds make
// the carry, its blends the 32x32 -> 64-bit products. Written with the zero-masking forms
// and every lane set (the same instructions): GCC 12 warns that the plain intrinsics'
// undefined pass-through "may be used uninitialized".
__attribute__((target("avx512f"), always_inline)) inline __m512i splat16(uint32_t v) {
  return _mm512_maskz_set1_epi32(__mmask16(0xFFFF), int32_t(v));
}
__attribute__((target("avx512f"), always_inline)) inline void mul_hi_lo_x16(__m512i a, __m512i m,
                                                                            __m512i& l, __m512i& h) {
  constexpr __mmask8 all8 = 0xFF;
  __m512i even = _mm512_maskz_mul_epu32(all8, a, m);
  __m512i odd = _mm512_maskz_mul_epu32(all8, _mm512_maskz_srli_epi64(all8, a, 32), m);
  l = _mm512_mask_blend_epi32(__mmask16(0xAAAA), even, _mm512_maskz_slli_epi64(all8, odd, 32));
  h = _mm512_mask_blend_epi32(__mmask16(0xAAAA), _mm512_maskz_srli_epi64(all8, even, 32), odd);
}
// groups: how many groups of 16 counters, from `first`.
__attribute__((target("avx512f"))) inline void uniform_f32_x16(uint64_t key, uint64_t first,
                                                               int64_t groups, float* u) {
  constexpr __mmask16 all = 0xFFFF;
  const __m512i m0 = splat16(kPhiloxM0), m1 = splat16(kPhiloxM1), one = splat16(1);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t g = 0; g < groups; ++g) {
    const uint64_t base = first + uint64_t(g) * 16;
    const __m512i blo = splat16(uint32_t(base)), bhi = splat16(uint32_t(base >> 32));
    __m512i c0 = _mm512_add_epi32(blo, lane);
    const __mmask16 wrapped = _mm512_cmplt_epu32_mask(c0, blo);  // the low word carried
    __m512i c1 = _mm512_mask_add_epi32(bhi, wrapped, bhi, one);
    __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
    for (int r = 0; r < 10; ++r) {
      __m512i l0, h0, l1, h1;
      mul_hi_lo_x16(c0, m0, l0, h0);
      mul_hi_lo_x16(c2, m1, l1, h1);
      __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(h1, c1), splat16(k0));
      __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(h0, c3), splat16(k1));
      c1 = l1;
      c3 = l0;
      c0 = n0;
      c2 = n2;
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    __m512 f = _mm512_maskz_cvtepi32_ps(all, _mm512_maskz_srli_epi32(all, c0, 8));
    _mm512_storeu_ps(u + g * 16, _mm512_mul_ps(f, _mm512_set1_ps(1.0f / 16777216.0f)));
  }
}
#endif

// u[j] = PhiloxDraw::uniform_f32(seed, first + j) for j < n.
inline void dropout_draws(uint64_t seed, uint64_t first, int64_t n, float* u) {
  int64_t j = 0;
#if defined(TERRA_CPU_AVX512)
  if (cpu_use_avx512()) {
    uniform_f32_x16(seed, first, n / 16, u);
    j = n / 16 * 16;
  }
#endif
#if defined(TERRA_CPU_AVX2_CLONES)
  if (cpu_use_avx2() && n - j >= 8) {
    uniform_f32_x8(seed, first + uint64_t(j), (n - j) / 8, u + j);
    j += (n - j) / 8 * 8;
  }
#endif
  for (; j < n; ++j) u[j] = PhiloxDraw::uniform_f32(seed, first + uint64_t(j));
}

template <class T>
void dropout_apply(const T* x, T* y, bool* mask, int64_t n, const OpCall& c) {
  const double p = c.attrs.scalars[0];
  const float pf = float(p);
  const T scale = p < 1.0 ? T(1.0 / (1.0 - p)) : T(0);
  parallel_for(n, 24, [&](int64_t b, int64_t e) {
    float u[256];
    for (int64_t i0 = b; i0 < e; i0 += 256) {
      const int64_t len = std::min<int64_t>(256, e - i0);
      dropout_draws(c.attrs.seed, c.attrs.offset + uint64_t(i0), len, u);
      for (int64_t j = 0; j < len; ++j) {  // branch-free: a random mask mispredicts
        const bool keep = (u[j] >= pf) & (p < 1.0);
        mask[i0 + j] = keep;
        y[i0 + j] = select(keep, T(x[i0 + j] * scale), T(0));
      }
    }
  });
}

inline void dropout_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor x = ix::dense(c.inputs[0], c.inputs[0].dtype());
  bool* mask = outs[1].data_ptr<bool>();
  TERRA_DISPATCH_FLOAT(x.dtype(), "dropout", {
    const T* xp = x.data_ptr<T>();
    T* y = outs[0].data_ptr<T>();
    if (c.attrs.ints[0]) {
      dropout_apply<T>(xp, y, mask, x.numel(), c);
    } else {  // not training: the identity, every element kept
      std::copy_n(xp, x.numel(), y);
      std::fill_n(mask, x.numel(), true);
    }
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Dropout> = &dropout_kernel;

}  // namespace terra::cpu

#undef TERRA_CPU_NN_INLINE
