// terra/backend/cpu/linalg.hpp: CPU matrix products. float32 on a CPU with AVX-512 goes to
// terra's own packed kernel (backend/cpu/sgemm_avx512.hpp); other float32/float64 products go
// to CBLAS when the build has it (TERRA_HAS_CBLAS); integers, and everything in a build without
// CBLAS, use the built-in cache-blocked gemm below. conv2d (backend/cpu/conv.hpp) uses the
// same gemm.
#pragma once

#include <algorithm>
#include <vector>

#if defined(TERRA_HAS_CBLAS)
#include <cblas.h>
#endif

#include "terra/backend/cpu/elementwise.hpp"
#include "terra/backend/cpu/sgemm_avx512.hpp"
#include "terra/ops/linalg.hpp"

namespace terra::cpu {

// A strided matrix view: element (i, j) is p[i * rs + j * cs].
template <class T>
struct MatRef {
  const T* p;
  int64_t rs, cs;
};

// ---- built-in gemm ----
// C[m, n] (+)= A[m, k] @ B[k, n] for any strides of A and B. B is packed one [kc, nc] panel at
// a time (so its reads are unit-stride and stay in cache); each thread then updates four rows
// of C per pass, reusing every loaded element of the panel four times.
template <class T>
void gemm_rows(int64_t i0, int64_t i1, int64_t kc, int64_t nc, MatRef<T> a, const T* bp, T* c,
               int64_t ldc) {
  for (int64_t i = i0; i < i1; i += 4) {
    int64_t r = std::min<int64_t>(4, i1 - i);
    T* c0 = c + i * ldc;
    T* c1 = r > 1 ? c0 + ldc : c0;
    T* c2 = r > 2 ? c0 + 2 * ldc : c0;
    T* c3 = r > 3 ? c0 + 3 * ldc : c0;
    for (int64_t kk = 0; kk < kc; ++kk) {
      const T* TERRA_RESTRICT b = bp + kk * nc;
      const T* ak = a.p + i * a.rs + kk * a.cs;
      T a0 = ak[0], a1 = r > 1 ? ak[a.rs] : T(0), a2 = r > 2 ? ak[2 * a.rs] : T(0),
        a3 = r > 3 ? ak[3 * a.rs] : T(0);
      if (r == 4) {
        for (int64_t j = 0; j < nc; ++j) {
          T bj = b[j];
          c0[j] += a0 * bj;
          c1[j] += a1 * bj;
          c2[j] += a2 * bj;
          c3[j] += a3 * bj;
        }
      } else {
        for (int64_t j = 0; j < nc; ++j) c0[j] += a0 * b[j];
        if (r > 1)
          for (int64_t j = 0; j < nc; ++j) c1[j] += a1 * b[j];
        if (r > 2)
          for (int64_t j = 0; j < nc; ++j) c2[j] += a2 * b[j];
      }
    }
  }
}

template <class T>
void gemm_builtin(int64_t m, int64_t n, int64_t k, MatRef<T> a, MatRef<T> b, T* c, int64_t ldc,
                  bool accumulate) {
  if (!accumulate)
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
  constexpr int64_t kKc = 256, kNc = 1024;
  ScratchBuffer<T> bp(size_t(std::min(k, kKc) * std::min(n, kNc)));
  for (int64_t jc = 0; jc < n; jc += kNc) {
    int64_t nc = std::min(kNc, n - jc);
    for (int64_t pc = 0; pc < k; pc += kKc) {
      int64_t kc = std::min(kKc, k - pc);
      for (int64_t kk = 0; kk < kc; ++kk)
        for (int64_t j = 0; j < nc; ++j) bp[kk * nc + j] = b.p[(pc + kk) * b.rs + (jc + j) * b.cs];
      MatRef<T> ap{a.p + pc * a.cs, a.rs, a.cs};
      parallel_for((m + 3) / 4, 8 * kc * nc, [&](int64_t q0, int64_t q1) {
        gemm_rows(q0 * 4, std::min(m, q1 * 4), kc, nc, ap, bp.data(), c + jc, ldc);
      });
    }
  }
}

// ---- CBLAS ----
// How CBLAS reads a strided matrix of r rows and c cols without a copy: one of its strides must
// be 1 and the other at least the extent of the unit-stride dim.
struct BlasLayout {
  bool ok = false, trans = false;
  int64_t ld = 0;
};
inline BlasLayout blas_layout(int64_t r, int64_t c, int64_t rs, int64_t cs) {
  if (c <= 1) cs = 1;  // the stride of a dim of size <= 1 is never used
  if (r <= 1) rs = std::max<int64_t>(c, 1);
  if (cs == 1 && rs >= std::max<int64_t>(c, 1)) return {true, false, rs};
  if (c <= 1) cs = std::max<int64_t>(r, 1), rs = 1;
  if (rs == 1 && cs >= std::max<int64_t>(r, 1)) return {true, true, cs};
  return {};
}

template <class T>
constexpr bool kUsesBlas =
#if defined(TERRA_HAS_CBLAS)
    std::is_same_v<T, float> || std::is_same_v<T, double>;
#else
    false;
#endif

#if defined(TERRA_HAS_CBLAS)
// OpenBLAS's results depend on how many threads it uses, and a call made while another thread
// is inside OpenBLAS gets fewer threads. terra keeps products bit-reproducible (a co-executed
// run must give eager's bits, whichever thread runs it and whatever runs beside it): OpenBLAS
// runs single-threaded, and terra splits the product into blocks of fixed size itself.
}  // namespace terra::cpu
extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_num_threads() __attribute__((weak));
namespace terra::cpu {
inline void blas_single_threaded() {
  if (openblas_get_num_threads && openblas_set_num_threads && openblas_get_num_threads() != 1)
    openblas_set_num_threads(1);
}

template <class T>
void blas_gemm(int64_t m, int64_t n, int64_t k, MatRef<T> a, MatRef<T> b, T* c, int64_t ldc,
               T beta) {
  BlasLayout la = blas_layout(m, k, a.rs, a.cs), lb = blas_layout(k, n, b.rs, b.cs);
  auto ta = la.trans ? CblasTrans : CblasNoTrans, tb = lb.trans ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), 1.0f, a.p, int(la.ld), b.p,
                int(lb.ld), beta, c, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), 1.0, a.p, int(la.ld), b.p,
                int(lb.ld), beta, c, int(ldc));
}
#endif

// C[m, n] (row-major, leading dim ldc) = A @ B, or += A @ B when accumulate.
template <class T>
void gemm(int64_t m, int64_t n, int64_t k, MatRef<T> a, MatRef<T> b, T* c, int64_t ldc,
          bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
    return;
  }
#if defined(TERRA_CPU_AVX512)
  // Any strides (the kernel packs both operands). Products of fewer than 24 columns fill a
  // third of its 32-wide tile or less: CBLAS does those better, where the build has it. The
  // choice depends on the shape alone, so a shape always gets the same bits.
  if constexpr (std::is_same_v<T, float>)
    if (cpu_use_avx512() && (n >= 24 || !kUsesBlas<T>)) {
      sgemm512::View av{a.p, a.rs, a.cs}, bv{b.p, b.rs, b.cs};
      sgemm512::gemm(m, n, k, av, bv, c, ldc, accumulate);
      return;
    }
#endif
#if defined(TERRA_HAS_CBLAS)
  if constexpr (kUsesBlas<T>) {
    BlasLayout la = blas_layout(m, k, a.rs, a.cs), lb = blas_layout(k, n, b.rs, b.cs);
    if (la.ok && lb.ok) {
      blas_single_threaded();
      T beta = accumulate ? T(1) : T(0);
      // Blocks of 64 rows (or, for short products, 64 columns): the same blocks for any
      // number of threads, so the same bits.
      constexpr int64_t kBlock = 64;
      bool by_rows = m > kBlock;
      int64_t extent = by_rows ? m : n, blocks = (extent + kBlock - 1) / kBlock;
      parallel_for(blocks, kBlock * (by_rows ? n : m) * k, [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          int64_t lo = q * kBlock, len = std::min(kBlock, extent - lo);
          if (by_rows)
            blas_gemm(len, n, k, {a.p + lo * a.rs, a.rs, a.cs}, b, c + lo * ldc, ldc, beta);
          else
            blas_gemm(m, len, k, a, {b.p + lo * b.cs, b.rs, b.cs}, c + lo, ldc, beta);
        }
      });
      return;
    }
  }
#endif
  gemm_builtin(m, n, k, a, b, c, ldc, accumulate);
}

// ---- matmul ----
// An operand of a batched product: its batch strides (broadcast to the common batch shape)
// and the row/col strides of each matrix.
template <class T>
struct Operand {
  const T* p;
  Strides batch;
  int64_t rs, cs;
};

// x in T; a contiguous copy when CBLAS could not read its (r x c, strides rs/cs) matrices in
// place (a copy costs O(size); the built-in gemm would cost far more than BLAS on the data).
template <class T>
Tensor blas_ready(const Tensor& x, int64_t r, int64_t c, int64_t rs, int64_t cs) {
  if (x.dtype() != dtype_v<T>) return cast(x, dtype_v<T>);  // already a contiguous copy
  if (!kUsesBlas<T> || blas_layout(r, c, rs, cs).ok || x.numel() == 0) return x;
  Tensor y = empty(x.shape(), x.dtype());
  copy_into(x, y);
  return y;
}

// True when A's batch dims and rows merge into one dim of stride rs (then the whole product is
// one gemm of m * batch rows, provided B is the same matrix for every batch).
inline bool rows_merge(const Shape& batch, const Strides& bs, int64_t m, int64_t rs) {
  int64_t expect = m * rs;
  for (size_t d = batch.size(); d-- > 0;) {
    if (batch[d] == 1) continue;
    if (bs[d] != expect) return false;
    expect *= batch[d];
  }
  return true;
}

// C[batch..., m, n] (contiguous) = A @ B over the broadcast batch: one gemm when B is shared
// and A's batch folds into its rows, else one gemm per batch.
template <class T>
void matmul_batches(const Operand<T>& A, const Operand<T>& B, const Shape& batch, int64_t m,
                    int64_t n, int64_t k, T* c) {
  int64_t nb = numel_of(batch);
  bool b_shared = std::all_of(B.batch.begin(), B.batch.end(), [](int64_t s) { return s == 0; });
  if (b_shared && nb > 1 && rows_merge(batch, A.batch, m, A.rs) &&
      (!kUsesBlas<T> || blas_layout(m * nb, k, A.rs, A.cs).ok)) {
    gemm<T>(m * nb, n, k, {A.p, A.rs, A.cs}, {B.p, B.rs, B.cs}, c, n, false);
    return;
  }
  SmallVector<int64_t, 6> idx(batch.size(), 0);
  const T *pa = A.p, *pb = B.p;
  for (int64_t i = 0; i < nb; ++i) {
    gemm<T>(m, n, k, {pa, A.rs, A.cs}, {pb, B.rs, B.cs}, c + i * m * n, n, false);
    for (size_t d = batch.size(); d-- > 0;) {  // odometer over the batch dims
      pa += A.batch[d];
      pb += B.batch[d];
      if (++idx[d] < batch[d]) break;
      pa -= A.batch[d] * batch[d];
      pb -= B.batch[d] * batch[d];
      idx[d] = 0;
    }
  }
}

template <class T>
void matmul_typed(const Tensor& a0, const Tensor& b0, Tensor& out) {
  bool av = a0.dim() == 1, bv = b0.dim() == 1;
  int64_t m = av ? 1 : a0.shape()[a0.dim() - 2], k = a0.shape().back();
  int64_t n = bv ? 1 : b0.shape().back();
  // (row stride, col stride) of t's matrices; a vector is a row on the left, a column on the right.
  auto inner = [](const Tensor& t, bool vec, bool row) -> std::pair<int64_t, int64_t> {
    if (vec)
      return row ? std::pair<int64_t, int64_t>{0, t.strides()[0]}
                 : std::pair{t.strides()[0], int64_t(0)};
    return {t.strides()[t.dim() - 2], t.strides().back()};
  };
  auto [ars0, acs0] = inner(a0, av, true);
  auto [brs0, bcs0] = inner(b0, bv, false);
  Tensor a = blas_ready<T>(a0, m, k, ars0, acs0), b = blas_ready<T>(b0, k, n, brs0, bcs0);
  Shape batch(out.shape().begin(), out.shape().end() - (av ? 0 : 1) - (bv ? 0 : 1));
  auto operand = [&](const Tensor& t, bool vec, bool row) {
    auto [rs, cs] = inner(t, vec, row);
    Shape tb = op::detail_linalg::batch_of(t);
    Strides ts(t.strides().begin(), t.strides().begin() + tb.size());
    return Operand<T>{t.data_ptr<T>(), broadcast_strides(tb, ts, batch), rs, cs};
  };
  Operand<T> A = operand(a, av, true), B = operand(b, bv, false);
  if (out.numel() == 0) return;
  matmul_batches<T>(A, B, batch, m, n, k, out.data_ptr<T>());
}

inline void matmul_kernel(const OpCall& c, std::span<Tensor> outs) {
  TERRA_DISPATCH_COMPUTE(outs[0].dtype(), "matmul", {
    if constexpr (!std::is_same_v<T, bool>) matmul_typed<T>(c.inputs[0], c.inputs[1], outs[0]);
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::MatMul> = &matmul_kernel;

// ---- linear ----
// One gemm: out[rows, o] = bias (broadcast) + x[rows, in] @ w^T, with beta = 1 onto the bias.
template <class T>
void linear_typed(const OpCall& c, Tensor& out) {
  const Tensor &x0 = c.inputs[0], &w0 = c.inputs[1];
  int64_t o = w0.shape()[0], in = w0.shape()[1], r = x0.dim();
  int64_t rows = numel_of(Shape(x0.shape().begin(), x0.shape().end() - 1));
  Tensor x = cast(x0, dtype_v<T>);
  int64_t xrs = r > 1 ? x.strides()[r - 2] : 0, xcs = x.strides()[r - 1];
  // x's leading dims must merge into one row dim that CBLAS can read: a copy otherwise.
  bool merge = r < 2 || rows_merge(Shape(x.shape().begin(), x.shape().end() - 2),
                                   Strides(x.strides().begin(), x.strides().end() - 2),
                                   x.shape()[r - 2], xrs);
  if (!merge || (kUsesBlas<T> && !blas_layout(rows, in, xrs, xcs).ok)) {
    x = empty(x.shape(), x.dtype());
    copy_into(x0, x);
    xrs = in, xcs = 1;
  }
  Tensor w = blas_ready<T>(w0, in, o, w0.strides()[1], w0.strides()[0]);
  bool has_bias = c.inputs.size() == 3;
  if (has_bias) {  // a serial fill: an OpenMP team here would fight OpenBLAS's threads
    Tensor b = cast(c.inputs[2], dtype_v<T>);
    const T* bp = b.data_ptr<T>();
    T* op = out.data_ptr<T>();
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < o; ++j) op[i * o + j] = bp[j * b.strides()[0]];
  }
  gemm<T>(rows, o, in, {x.data_ptr<T>(), xrs, xcs},
          {w.data_ptr<T>(), w.strides()[1], w.strides()[0]}, out.data_ptr<T>(), o, has_bias);
}

inline void linear_kernel(const OpCall& c, std::span<Tensor> outs) {
  if (outs[0].numel() == 0) return;
  TERRA_DISPATCH_COMPUTE(outs[0].dtype(), "linear", {
    if constexpr (!std::is_same_v<T, bool>) linear_typed<T>(c, outs[0]);
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Linear> = &linear_kernel;

}  // namespace terra::cpu
