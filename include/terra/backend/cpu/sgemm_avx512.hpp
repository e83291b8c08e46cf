// terra/backend/cpu/sgemm_avx512.hpp: terra's own float32 matrix product for CPUs with
// AVX-512, used instead of CBLAS there (backend/cpu/linalg.hpp picks it at run time).
//
// Why: Debian 12's OpenBLAS (0.3.21) does not recognize AVX-512 on recent AMD CPUs and runs
// its AVX2 (Haswell) kernels, half the machine's float32 throughput; and terra calls CBLAS on
// fixed blocks of 64 rows or columns (for bits that do not depend on the thread count), so a
// short, wide product (conv2d: few output channels, many pixels) repacked the whole left
// operand once per 64 columns. Here both operands are packed once per k-slab and shared by
// every thread.
//
// Structure (the usual one for a packed gemm): for each slab of kKc rows of k, in order,
//   A[:, slab] is packed into strips of kMr rows ([kc][kMr], zero-padded),
//   each chunk of kNb columns of C packs B[slab, cols] into strips of kNr columns ([kc][kNr])
//   and runs the kMr x kNr register tile over every (row strip, column strip) pair.
// A C element is the sum of its slabs' partial sums in slab order, each partial sum a chain
// of fused multiply-adds in k order: chunks and strips only decide who computes it, so the
// bits never depend on the thread count or on the partition.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "terra/core/allocator.hpp"
#include "terra/core/parallel.hpp"  // TERRA_CPU_AVX512, cpu_use_avx512()

#if defined(TERRA_CPU_AVX512)
#include <immintrin.h>

namespace terra::cpu::sgemm512 {

inline constexpr int64_t kMr = 12;   // rows of the register tile
inline constexpr int64_t kNr = 32;   // columns of the register tile (two 16-float vectors)
inline constexpr int64_t kKc = 256;  // k per slab: a B strip (kKc x kNr) stays in L1
inline constexpr int64_t kNb = 128;  // columns per parallel chunk: its B panel stays in L2
inline constexpr int64_t kMcStrips = 8;  // A strips that share one pass over the B panel

// A strided matrix: element (i, j) is p[i * rs + j * cs].
struct View {
  const float* p;
  int64_t rs, cs;
};

// dst[k * dld + i] = src[i * sld + k] for k < kn (<= 16), i < 16, with rows i >= rows read as
// zero; each k stores the lanes of store_mask. A 16 x 16 transpose in registers: packing a
// row-major A, or a transposed B, reads contiguous runs of k instead of one float per load.
__attribute__((target("avx512f"))) inline void transpose16(const float* src, int64_t sld,
                                                           int64_t rows, int64_t kn, float* dst,
                                                           int64_t dld, __mmask16 store_mask) {
  __mmask16 km = kn >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << kn) - 1);
  // The zero-masking forms with every lane set are the plain instructions; GCC 12 warns that
  // the plain intrinsics' undefined pass-through "may be used uninitialized".
  constexpr __mmask16 kAll = 0xFFFF;
  constexpr __mmask8 kAll8 = 0xFF;
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i)
    r[i] = i < rows ? _mm512_maskz_loadu_ps(km, src + i * sld) : _mm512_setzero_ps();
  for (int i = 0; i < 16; i += 2) {  // pairs of rows interleaved by 32 bits
    t[i] = _mm512_maskz_unpacklo_ps(kAll, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_ps(kAll, r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // then by 64 bits: r[i + q] holds k = q, q+4, q+8, q+12
    r[i] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, _mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, _mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, _mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, _mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  for (int q = 0; q < 4; ++q) {  // then 128-bit lanes: four rows' groups into whole columns
    __m512 v0 = _mm512_maskz_shuffle_f32x4(kAll, r[q], r[4 + q], 0x88), v1 = _mm512_maskz_shuffle_f32x4(kAll, r[q], r[4 + q], 0xDD);
    __m512 v2 = _mm512_maskz_shuffle_f32x4(kAll, r[8 + q], r[12 + q], 0x88), v3 = _mm512_maskz_shuffle_f32x4(kAll, r[8 + q], r[12 + q], 0xDD);
    __m512 col[4] = {_mm512_maskz_shuffle_f32x4(kAll, v0, v2, 0x88), _mm512_maskz_shuffle_f32x4(kAll, v1, v3, 0x88),
                     _mm512_maskz_shuffle_f32x4(kAll, v0, v2, 0xDD), _mm512_maskz_shuffle_f32x4(kAll, v1, v3, 0xDD)};
    for (int h = 0; h < 4; ++h)  // col[h] is k = q + 4 h
      if (q + 4 * h < kn) _mm512_mask_storeu_ps(dst + (q + 4 * h) * dld, store_mask, col[h]);
  }
}

// Rows [r0, r0 + kMr) of A's columns [k0, k0 + kc) as [kc][kMr], rows past m zero.
__attribute__((target("avx512f"))) inline void pack_a(View a, int64_t m, int64_t r0, int64_t k0,
                                                      int64_t kc, float* dst) {
  int64_t rows = std::min(kMr, m - r0);
  const float* src = a.p + r0 * a.rs + k0 * a.cs;
  if (a.cs == 1) {  // row-major A
    for (int64_t k = 0; k < kc; k += 16)
      transpose16(src + k, a.rs, rows, std::min<int64_t>(16, kc - k), dst + k * kMr, kMr, 0x0FFF);
    return;
  }
  if (rows < kMr) std::memset(dst, 0, size_t(kc * kMr) * sizeof(float));
  if (a.rs == 1) {  // a transposed A: each k's rows are contiguous
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t i = 0; i < rows; ++i) dst[k * kMr + i] = src[k * a.cs + i];
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {
    const float* s = src + i * a.rs;
    for (int64_t k = 0; k < kc; ++k) dst[k * kMr + i] = s[k * a.cs];
  }
}

// Columns [c0, c0 + kNr) of B's rows [k0, k0 + kc) as [kc][kNr], columns past n zero.
__attribute__((target("avx512f"))) inline void pack_b(View b, int64_t n, int64_t c0, int64_t k0,
                                                      int64_t kc, float* dst) {
  int64_t cols = std::min(kNr, n - c0);
  const float* src = b.p + k0 * b.rs + c0 * b.cs;
  if (b.cs == 1) {  // row-major B
    __mmask16 lo = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1);
    __mmask16 hi = cols >= 32 ? __mmask16(0xFFFF) : cols <= 16 ? __mmask16(0) : __mmask16((1u << (cols - 16)) - 1);
    for (int64_t k = 0; k < kc; ++k) {
      const float* s = src + k * b.rs;
      _mm512_store_ps(dst + k * kNr, _mm512_maskz_loadu_ps(lo, s));
      _mm512_store_ps(dst + k * kNr + 16, _mm512_maskz_loadu_ps(hi, s + 16));
    }
    return;
  }
  if (b.rs == 1) {  // a transposed B (x @ w.T): each column is contiguous in k
    for (int64_t k = 0; k < kc; k += 16)
      for (int64_t h = 0; h < kNr; h += 16)
        transpose16(src + h * b.cs + k, b.cs, std::max<int64_t>(0, cols - h),
                    std::min<int64_t>(16, kc - k), dst + k * kNr + h, kNr, 0xFFFF);
    return;
  }
  if (cols < kNr) std::memset(dst, 0, size_t(kc * kNr) * sizeof(float));
  for (int64_t j = 0; j < cols; ++j) {
    const float* s = src + j * b.cs;
    for (int64_t k = 0; k < kc; ++k) dst[k * kNr + j] = s[k * b.rs];
  }
}

// Row i of the register tile, written out for each i (a pragma to unroll a loop is not
// understood by every front end, nvcc's among them, and a loop left rolled would index the
// accumulators at run time and keep them in memory).
#define TERRA_SGEMM_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define TERRA_SGEMM_FMA(i)                          \
  if constexpr (R > i) {                            \
    __m512 av = _mm512_set1_ps(ap[i]);              \
    acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]); \
    acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]); \
  }
#define TERRA_SGEMM_STORE(i)                                                \
  if constexpr (R > i)                                                      \
    if (i < mr) {                                                           \
      float* ci = c + i * ldc;                                              \
      __m512 v0 = acc[i][0], v1 = acc[i][1];                                \
      if (add) {                                                            \
        v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(lo, ci), v0);              \
        v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(hi, ci + 16), v1);         \
      }                                                                     \
      _mm512_mask_storeu_ps(ci, lo, v0);                                    \
      _mm512_mask_storeu_ps(ci + 16, hi, v1);                               \
    }

// C[0:mr, 0:nr] (= or +=) the product of a packed A strip and a packed B strip, for the
// first R rows of the strip (R >= mr: a short last strip does not pay for a whole tile).
template <int R>
__attribute__((target("avx512f"))) inline void tile(int64_t kc, const float* ap, const float* bp,
                                                    float* c, int64_t ldc, int64_t mr, int64_t nr,
                                                    bool add) {
  static_assert(R >= 1 && R <= kMr);
  __m512 acc[R][2] = {};  // zeros
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
    TERRA_SGEMM_ROWS(TERRA_SGEMM_FMA)
    ap += kMr;
    bp += kNr;
  }
  __mmask16 lo = nr >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nr) - 1);
  __mmask16 hi = nr >= 32 ? __mmask16(0xFFFF) : nr <= 16 ? __mmask16(0) : __mmask16((1u << (nr - 16)) - 1);
  TERRA_SGEMM_ROWS(TERRA_SGEMM_STORE)
}
#undef TERRA_SGEMM_STORE
#undef TERRA_SGEMM_FMA
#undef TERRA_SGEMM_ROWS

inline void tile_rows(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc,
                      int64_t mr, int64_t nr, bool add) {
  if (mr > 8)
    tile<12>(kc, ap, bp, c, ldc, mr, nr, add);
  else if (mr > 4)
    tile<8>(kc, ap, bp, c, ldc, mr, nr, add);
  else
    tile<4>(kc, ap, bp, c, ldc, mr, nr, add);
}

// C[m, n] (row-major, leading dim ldc) = A @ B, or += A @ B when accumulate.
inline void gemm(int64_t m, int64_t n, int64_t k, View a, View b, float* c, int64_t ldc,
                 bool accumulate) {
  constexpr int64_t kMb = 128 * kMr;  // rows packed at once: at most kMb * kKc floats of A
  int64_t chunks = (n + kNb - 1) / kNb;
  // k in equal slabs of at most kKc (784 = 4 x 196, not 3 x 256 + 16): a thin last slab would
  // pay a pass over C for little work. The slabs depend on k alone.
  int64_t slabs = (k + kKc - 1) / kKc, slab = (k + slabs - 1) / slabs;
  ScratchBuffer<float> ap(size_t(std::min(m + kMr, kMb) * slab));
  for (int64_t r0 = 0; r0 < m; r0 += kMb) {
    int64_t rows = std::min(kMb, m - r0), strips = (rows + kMr - 1) / kMr;
    View ar{a.p + r0 * a.rs, a.rs, a.cs};
    float* cr = c + r0 * ldc;
    for (int64_t k0 = 0; k0 < k; k0 += slab) {
      int64_t kc = std::min(slab, k - k0);
      bool add = accumulate || k0 > 0;
      parallel_for(strips, kMr * kc, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) pack_a(ar, rows, s * kMr, k0, kc, ap.data() + s * kMr * kc);
      });
      parallel_for(chunks, 2 * rows * kNb * kc, [&](int64_t q0, int64_t q1) {
        ScratchBuffer<float> bp(size_t(kNb * kc));
        for (int64_t q = q0; q < q1; ++q) {
          int64_t j0 = q * kNb, cols = std::min(kNb, n - j0);
          for (int64_t j = 0; j < cols; j += kNr) pack_b(b, n, j0 + j, k0, kc, bp.data() + j * kc);
          for (int64_t sb = 0; sb < strips; sb += kMcStrips)
            for (int64_t j = 0; j < cols; j += kNr)
              for (int64_t s = sb; s < std::min(strips, sb + kMcStrips); ++s)
                tile_rows(kc, ap.data() + s * kMr * kc, bp.data() + j * kc, cr + s * kMr * ldc + j0 + j,
                     ldc, std::min(kMr, rows - s * kMr), std::min(kNr, cols - j), add);
        }
      });
    }
  }
}

}  // namespace terra::cpu::sgemm512
#endif
