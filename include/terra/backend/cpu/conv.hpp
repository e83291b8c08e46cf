// terra/backend/cpu/conv.hpp: CPU conv2d (im2col + gemm, or a direct loop for depthwise
// convolutions) and the 2-D pooling kernels.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "terra/backend/cpu/conv_dnnl.hpp"
#include "terra/backend/cpu/conv_shares.hpp"
#include "terra/backend/cpu/linalg.hpp"
#include "terra/ops/conv.hpp"

namespace terra::cpu {

// A contiguous tensor of x's values in dtype dt (x itself when it already is one).
inline Tensor contiguous_as(const Tensor& x, DType dt) {
  if (x.dtype() == dt && x.is_contiguous()) return x;
  Tensor y = empty(x.shape(), dt);
  copy_into(x, y);
  return y;
}

// ---- conv2d ----
struct ConvGeom {
  int64_t n, c, h, w;         // input
  int64_t o, kh, kw, oh, ow;  // weight and output
  int64_t sh, sw, ph, pw, dh, dw, groups;
  int64_t cg() const { return c / groups; }
  int64_t og() const { return o / groups; }
  int64_t kdim() const { return cg() * kh * kw; }  // rows of the im2col matrix
  int64_t opix() const { return oh * ow; }
  // For the kernel column whose input column is ox * sw + xoff: the output columns [x0, x1)
  // that read inside the image (the others read padding).
  std::pair<int64_t, int64_t> in_image(int64_t xoff) const {
    int64_t x0 = xoff >= 0 ? 0 : std::min<int64_t>((-xoff + sw - 1) / sw, ow);
    return {x0, std::clamp<int64_t>((w - xoff + sw - 1) / sw, x0, ow)};
  }
};

// v: {sh, sw, ph, pw, dh, dw, groups}; out: the conv output (or its gradient).
inline ConvGeom conv_geom(const Tensor& x, const Tensor& w, const int64_t* v, const Tensor& out) {
  int64_t r = x.dim();
  return {r == 4 ? x.shape()[0] : 1,
          x.shape()[r - 3],
          x.shape()[r - 2],
          x.shape()[r - 1],
          w.shape()[0],
          w.shape()[2],
          w.shape()[3],
          out.shape()[r - 2],
          out.shape()[r - 1],
          v[0],
          v[1],
          v[2],
          v[3],
          v[4],
          v[5],
          v[6]};
}
inline ConvGeom conv_geom(const OpCall& c, const Tensor& out) {
  return conv_geom(c.inputs[0], c.inputs[1], c.attrs.ints.data(), out);
}

// The im2col rows of one input plane (channel) for every kernel offset: row (ki, kj) holds
// in[oy * sh - ph + ki * dh, ox * sw - pw + kj * dw] over all output pixels, 0 in the padding.
// Rows are ld apart.
// Stride 1 with the output as wide as the input ("same" padding): each kernel offset's rows
// are one shifted copy of the plane, since consecutive output rows read consecutive input
// rows; the taps that fall in the left/right padding are zeroed afterwards. One memcpy per
// offset instead of three calls per output row (the rows of a small CNN are 8-16 wide).
template <class T>
void im2col_plane_same(const ConvGeom& g, const T* in, T* col, int64_t ld) {
  const int64_t np = g.oh * g.ow;
  for (int64_t ki = 0; ki < g.kh; ++ki) {
    const int64_t yoff = ki * g.dh - g.ph;  // iy = oy + yoff
    const int64_t y0 = std::clamp<int64_t>(-yoff, 0, g.oh), y1 = std::clamp<int64_t>(g.h - yoff, y0, g.oh);
    for (int64_t kj = 0; kj < g.kw; ++kj, col += ld) {
      const int64_t xoff = kj * g.dw - g.pw;
      auto [x0, x1] = g.in_image(xoff);
      std::fill(col, col + y0 * g.ow, T(0));
      std::fill(col + y1 * g.ow, col + np, T(0));
      if (y0 == y1) continue;
      // Flat positions [y0 * ow + x0, (y1 - 1) * ow + x1) read in[flat + yoff * w + xoff].
      const int64_t b = y0 * g.ow + x0, e = (y1 - 1) * g.ow + x1;
      if (b < e) std::memcpy(col + b, in + b + yoff * g.w + xoff, size_t(e - b) * sizeof(T));
      for (int64_t oy = y0; oy < y1; ++oy) {
        T* row = col + oy * g.ow;
        for (int64_t ox = 0; ox < x0; ++ox) row[ox] = T(0);
        for (int64_t ox = x1; ox < g.ow; ++ox) row[ox] = T(0);
      }
    }
  }
}

template <class T>
void im2col_plane(const ConvGeom& g, const T* in, T* col, int64_t ld) {
  if (g.sh == 1 && g.sw == 1 && g.ow == g.w) return im2col_plane_same(g, in, col, ld);
  for (int64_t ki = 0; ki < g.kh; ++ki) {
    for (int64_t kj = 0; kj < g.kw; ++kj, col += ld) {
      int64_t xoff = kj * g.dw - g.pw;
      auto [x0, x1] = g.in_image(xoff);
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        T* dst = col + oy * g.ow;
        int64_t iy = oy * g.sh - g.ph + ki * g.dh;
        if (iy < 0 || iy >= g.h) {
          std::fill(dst, dst + g.ow, T(0));
          continue;
        }
        const T* src = in + iy * g.w;
        std::fill(dst, dst + x0, T(0));
        if (g.sw == 1) {
          std::copy(src + xoff + x0, src + xoff + x1, dst + x0);
        } else {
          for (int64_t ox = x0; ox < x1; ++ox) dst[ox] = src[xoff + ox * g.sw];
        }
        std::fill(dst + x1, dst + g.ow, T(0));
      }
    }
  }
}

// Images [n0, n0 + nb) of group gi as one im2col matrix [kdim, nb * opix] (image-major columns).
template <class T>
void im2col(const ConvGeom& g, const T* x, int64_t n0, int64_t nb, int64_t gi, T* col) {
  int64_t ld = nb * g.opix(), planes = nb * g.cg();
  parallel_for(planes, g.kh * g.kw * g.opix(), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      int64_t img = p / g.cg(), ch = p % g.cg();
      const T* in = x + ((n0 + img) * g.c + gi * g.cg() + ch) * g.h * g.w;
      im2col_plane(g, in, col + ch * g.kh * g.kw * ld + img * g.opix(), ld);
    }
  });
}

// out = bias (per output channel) for images [n0, n0 + nb) of group gi; 0 without a bias.
template <class T>
void fill_bias(const ConvGeom& g, const T* bias, T* out, int64_t n0, int64_t nb, int64_t gi) {
  for (int64_t n = n0; n < n0 + nb; ++n)
    for (int64_t o = gi * g.og(); o < (gi + 1) * g.og(); ++o)
      std::fill_n(out + (n * g.o + o) * g.opix(), g.opix(), bias ? bias[o] : T(0));
}

// How many images share one gemm: enough output columns to keep the gemm efficient on small
// images, bounded so that the im2col buffer stays a few MB.
inline int64_t conv_chunk(const ConvGeom& g) {
  constexpr int64_t kMinCols = 1024, kMaxColElems = int64_t(1) << 22;
  int64_t nb = std::max<int64_t>(1, (kMinCols + g.opix() - 1) / g.opix());
  nb = std::min(nb, std::max<int64_t>(1, kMaxColElems / std::max<int64_t>(1, g.kdim() * g.opix())));
  return std::max<int64_t>(1, std::min(nb, g.n));  // at least 1, also for an empty batch
}

// Whether a conv's chunks of images (conv_chunk) go to threads whole, each doing its chunks'
// im2col, gemm and copies alone, rather than one chunk at a time with every thread inside each
// step: with enough chunks per thread this saves three fork-joins per chunk and keeps each
// thread's im2col matrix in its own cache. Either way every chunk's products are the same
// calls on the same data, so the bits do not depend on the choice.
inline bool conv_by_chunks(int64_t chunks) {
  int64_t threads = get_num_threads();
  return threads > 1 && chunks >= 2 * threads;
}

template <class T>
void conv_gemm(const ConvGeom& g, const T* x, const T* w, const T* bias, T* out) {
  int64_t nb = conv_chunk(g), kd = g.kdim(), np = g.opix();
  bool direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
  size_t col_n = direct && nb == 1 ? 0 : size_t(kd * nb * np), tmp_n = nb > 1 ? size_t(g.og() * nb * np) : 0;
  // Images [n0, n0 + nb), with im2col matrix col and product buffer tmp.
  auto chunk = [&](int64_t n0, T* col, T* tmp) {
    int64_t cnt = std::min(nb, g.n - n0);
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      MatRef<T> wa{w + gi * g.og() * kd, kd, 1};
      const T* cp = x + (n0 * g.c + gi * g.cg()) * g.h * g.w;  // a 1x1 conv reads x in place
      if (!(direct && nb == 1)) {
        im2col(g, x, n0, cnt, gi, col);
        cp = col;
      }
      if (nb == 1) {  // write straight into out, on top of the bias
        fill_bias(g, bias, out, n0, 1, gi);
        gemm<T>(g.og(), np, kd, wa, {cp, np, 1}, out + (n0 * g.o + gi * g.og()) * np, np, true);
        continue;
      }
      int64_t cols = cnt * np;
      gemm<T>(g.og(), cols, kd, wa, {cp, cols, 1}, tmp, cols, false);
      parallel_for(cnt * g.og(), np, [&](int64_t b, int64_t e) {
        for (int64_t q = b; q < e; ++q) {
          int64_t img = q / g.og(), o = q % g.og(), oc = gi * g.og() + o;
          const T* src = tmp + o * cols + img * np;
          T* dst = out + ((n0 + img) * g.o + oc) * np;
          T bv = bias ? bias[oc] : T(0);
          for (int64_t i = 0; i < np; ++i) dst[i] = src[i] + bv;
        }
      });
    }
  };
  int64_t chunks = (g.n + nb - 1) / nb;
  if (conv_by_chunks(chunks)) {
    parallel_for(chunks, g.og() * g.groups * kd * nb * np, [&](int64_t b, int64_t e) {
      ScratchBuffer<T> col(col_n), tmp(tmp_n);
      for (int64_t q = b; q < e; ++q) chunk(q * nb, col.data(), tmp.data());
    });
    return;
  }
  ScratchBuffer<T> col(col_n), tmp(tmp_n);
  for (int64_t q = 0; q < chunks; ++q) chunk(q * nb, col.data(), tmp.data());
}

// Depthwise-style convolutions (one input channel per group): a direct loop per output plane,
// far cheaper than a gemm with one row per group.
template <class T>
void conv_direct(const ConvGeom& g, const T* x, const T* w, const T* bias, T* out) {
  parallel_for(g.n * g.o, g.opix() * g.kh * g.kw, [&](int64_t b, int64_t e) {
    for (int64_t q = b; q < e; ++q) {
      int64_t n = q / g.o, oc = q % g.o, ic = oc / g.og();
      const T* in = x + (n * g.c + ic) * g.h * g.w;
      T* dst = out + q * g.opix();
      std::fill_n(dst, g.opix(), bias ? bias[oc] : T(0));
      for (int64_t ki = 0; ki < g.kh; ++ki) {
        for (int64_t kj = 0; kj < g.kw; ++kj) {
          T wv = w[(oc * g.kh + ki) * g.kw + kj];
          int64_t xoff = kj * g.dw - g.pw;
          auto [x0, x1] = g.in_image(xoff);
          for (int64_t oy = 0; oy < g.oh; ++oy) {
            int64_t iy = oy * g.sh - g.ph + ki * g.dh;
            if (iy < 0 || iy >= g.h) continue;
            const T* src = in + iy * g.w;
            T* d = dst + oy * g.ow;
            for (int64_t ox = x0; ox < x1; ++ox) d[ox] += wv * src[xoff + ox * g.sw];
          }
        }
      }
    }
  });
}

#if defined(TERRA_HAS_DNNL)
inline dnnl_conv::Shape dnnl_shape(const ConvGeom& g, bool bias) {
  return {g.n, g.c, g.h, g.w, g.o, g.kh, g.kw, g.oh, g.ow, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups, bias};
}
#endif

inline void conv2d_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor& out = outs[0];
  if (out.numel() == 0) return;
  ConvGeom g = conv_geom(c, out);
  DType dt = out.dtype();
  Tensor x = contiguous_as(c.inputs[0], dt), w = contiguous_as(c.inputs[1], dt);
  Tensor b = c.inputs.size() == 3 ? contiguous_as(c.inputs[2], dt) : Tensor();
#if defined(TERRA_HAS_DNNL)
  if (dt == DType::Float32 &&
      dnnl_conv::forward(dnnl_shape(g, b.defined()), x.data_ptr<float>(), w.data_ptr<float>(),
                         b.defined() ? b.data_ptr<float>() : nullptr, out.data_ptr<float>()))
    return;
#endif
  TERRA_DISPATCH_COMPUTE(dt, "conv2d", {
    if constexpr (!std::is_same_v<T, bool>) {
      const T* bp = b.defined() ? b.data_ptr<T>() : nullptr;
      if (g.cg() == 1 && g.groups > 1)
        conv_direct<T>(g, x.data_ptr<T>(), w.data_ptr<T>(), bp, out.data_ptr<T>());
      else
        conv_gemm<T>(g, x.data_ptr<T>(), w.data_ptr<T>(), bp, out.data_ptr<T>());
    }
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Conv2d> = &conv2d_kernel;

// ---- conv2d backward ----
// The transpose of im2col_plane: adds every row (ki, kj) of col back onto the input plane.
template <class T>
void col2im_plane(const ConvGeom& g, const T* col, T* in, int64_t ld) {
  for (int64_t ki = 0; ki < g.kh; ++ki) {
    for (int64_t kj = 0; kj < g.kw; ++kj, col += ld) {
      int64_t xoff = kj * g.dw - g.pw;
      auto [x0, x1] = g.in_image(xoff);
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        int64_t iy = oy * g.sh - g.ph + ki * g.dh;
        if (iy < 0 || iy >= g.h) continue;
        const T* src = col + oy * g.ow;
        T* dst = in + iy * g.w + xoff;
        if (g.sw == 1) {
          for (int64_t ox = x0; ox < x1; ++ox) dst[ox] += src[ox];
        } else {
          for (int64_t ox = x0; ox < x1; ++ox) dst[ox * g.sw] += src[ox];
        }
      }
    }
  }
}

// Adds the im2col matrix [kdim, nb * opix] of images [n0, n0 + nb), group gi, onto dx. Every
// (image, channel) plane is written by one task only.
template <class T>
void col2im(const ConvGeom& g, const T* col, int64_t n0, int64_t nb, int64_t gi, T* dx) {
  int64_t ld = nb * g.opix();
  parallel_for(nb * g.cg(), g.kh * g.kw * g.opix(), [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      int64_t img = p / g.cg(), ch = p % g.cg();
      T* in = dx + ((n0 + img) * g.c + gi * g.cg() + ch) * g.h * g.w;
      col2im_plane(g, col + ch * g.kh * g.kw * ld + img * g.opix(), in, ld);
    }
  });
}

// grad_out of images [n0, n0 + nb), group gi, as one [og, nb * opix] matrix (image-major cols).
template <class T>
void pack_grad(const ConvGeom& g, const T* go, int64_t n0, int64_t nb, int64_t gi, T* buf) {
  int64_t np = g.opix(), cols = nb * np;
  for (int64_t img = 0; img < nb; ++img)
    for (int64_t o = 0; o < g.og(); ++o) {
      const T* src = go + ((n0 + img) * g.o + gi * g.og() + o) * np;
      std::copy(src, src + np, buf + o * cols + img * np);
    }
}

// Per chunk of images (conv_chunk) and group: the chunk's share of dW_g, G_g @ col^T (col =
// im2col of x), and dcol = W_g^T @ G_g, added back onto dx by col2im. dW is the sum of the
// chunks' shares added in chunk order, on one thread or many (conv_by_chunks), so its bits do
// not depend on the threads. dx / dw may be null (not wanted).
template <class T>
void conv_backward_gemm(const ConvGeom& g, const T* go, const T* x, const T* w, T* dx, T* dw) {
  int64_t nb = conv_chunk(g), kd = g.kdim(), np = g.opix(), chunks = (g.n + nb - 1) / nb;
  bool direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
  bool in_place = direct && nb == 1;  // a 1x1 conv's im2col matrix is x itself
  size_t col_n = dw && !in_place ? size_t(kd * nb * np) : 0;
  size_t dcol_n = dx && !in_place ? size_t(kd * nb * np) : 0;
  size_t grad_n = nb > 1 ? size_t(g.og() * nb * np) : 0;
  size_t part = dw ? size_t(g.o * kd) : 0;  // one chunk's share of dW
  if (dx && !in_place) std::fill_n(dx, g.n * g.c * g.h * g.w, T(0));
  // Chunk q, with its scratch buffers; its dW share goes to share (overwritten).
  auto chunk = [&](int64_t q, T* col, T* dcol, T* gbuf, T* share) {
    int64_t n0 = q * nb, cnt = std::min(nb, g.n - n0), cols = cnt * np;
    for (int64_t gi = 0; gi < g.groups; ++gi) {
      const T* gp = go + (n0 * g.o + gi * g.og()) * np;
      if (nb > 1) {
        pack_grad(g, go, n0, cnt, gi, gbuf);
        gp = gbuf;
      }
      const T* xg = x + (n0 * g.c + gi * g.cg()) * g.h * g.w;
      if (dw) {
        const T* cp = xg;
        if (!in_place) {
          im2col(g, x, n0, cnt, gi, col);
          cp = col;
        }
        gemm<T>(g.og(), kd, cols, {gp, cols, 1}, {cp, 1, cols}, share + gi * g.og() * kd, kd, false);
      }
      if (dx) {
        MatRef<T> wt{w + gi * g.og() * kd, 1, kd};  // W_g^T: [kd, og]
        if (in_place) {
          gemm<T>(kd, np, g.og(), wt, {gp, np, 1}, dx + (xg - x), np, false);
        } else {
          gemm<T>(kd, cols, g.og(), wt, {gp, cols, 1}, dcol, cols, false);
          col2im(g, dcol, n0, cnt, gi, dx);
        }
      }
    }
  };
  constexpr size_t kMaxSharesBytes = size_t(64) << 20;
  if (conv_by_chunks(chunks) && size_t(chunks) * part * sizeof(T) <= kMaxSharesBytes) {
    ScratchBuffer<T> shares(size_t(chunks) * part);
    parallel_for(chunks, 2 * g.o * kd * nb * np, [&](int64_t b, int64_t e) {
      ScratchBuffer<T> col(col_n), dcol(dcol_n), gbuf(grad_n);
      for (int64_t q = b; q < e; ++q)
        chunk(q, col.data(), dcol.data(), gbuf.data(), shares.data() + size_t(q) * part);
    });
    add_shares(dw, shares.data(), chunks, part, false);
    return;
  }
  if (dw && chunks == 0) std::fill_n(dw, part, T(0));  // an empty batch
  ScratchBuffer<T> col(col_n), dcol(dcol_n), gbuf(grad_n), share(chunks > 1 ? part : 0);
  for (int64_t q = 0; q < chunks; ++q) {
    chunk(q, col.data(), dcol.data(), gbuf.data(), q == 0 ? dw : share.data());
    if (q > 0 && dw) add_shares(dw, share.data(), 1, part, true);
  }
}

// Depthwise-style (one input channel per group): direct loops, as the forward. dx planes are
// split by (image, channel), dw by output channel, so no two tasks write the same value.
template <class T>
void conv_direct_backward(const ConvGeom& g, const T* go, const T* x, const T* w, T* dx, T* dw) {
  int64_t np = g.opix(), hw = g.h * g.w;
  // f(oy, iy, x0, x1, xoff) over the in-image taps of kernel offset (ki, kj).
  auto taps = [&](int64_t ki, int64_t kj, const auto& f) {
    int64_t xoff = kj * g.dw - g.pw;
    auto [x0, x1] = g.in_image(xoff);
    for (int64_t oy = 0; oy < g.oh; ++oy) {
      int64_t iy = oy * g.sh - g.ph + ki * g.dh;
      if (iy >= 0 && iy < g.h) f(oy, iy, x0, x1, xoff);
    }
  };
  if (dx) {
    parallel_for(g.n * g.c, g.og() * np * g.kh * g.kw + hw, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        int64_t n = q / g.c, ic = q % g.c;
        T* d = dx + q * hw;
        std::fill_n(d, hw, T(0));
        for (int64_t oc = ic * g.og(); oc < (ic + 1) * g.og(); ++oc) {
          const T* gs = go + (n * g.o + oc) * np;
          for (int64_t ki = 0; ki < g.kh; ++ki)
            for (int64_t kj = 0; kj < g.kw; ++kj) {
              T wv = w[(oc * g.kh + ki) * g.kw + kj];
              taps(ki, kj, [&](int64_t oy, int64_t iy, int64_t x0, int64_t x1, int64_t xoff) {
                T* dr = d + iy * g.w + xoff;
                const T* gr = gs + oy * g.ow;
                for (int64_t ox = x0; ox < x1; ++ox) dr[ox * g.sw] += wv * gr[ox];
              });
            }
        }
      }
    });
  }
  if (dw) {
    parallel_for(g.o, g.n * np * g.kh * g.kw, [&](int64_t b, int64_t e) {
      for (int64_t oc = b; oc < e; ++oc) {
        int64_t ic = oc / g.og();
        for (int64_t ki = 0; ki < g.kh; ++ki)
          for (int64_t kj = 0; kj < g.kw; ++kj) {
            T acc = 0;
            for (int64_t n = 0; n < g.n; ++n) {
              const T* gs = go + (n * g.o + oc) * np;
              const T* in = x + (n * g.c + ic) * hw;
              taps(ki, kj, [&](int64_t oy, int64_t iy, int64_t x0, int64_t x1, int64_t xoff) {
                const T* xr = in + iy * g.w + xoff;
                const T* gr = gs + oy * g.ow;
                for (int64_t ox = x0; ox < x1; ++ox) acc += gr[ox] * xr[ox * g.sw];
              });
            }
            dw[(oc * g.kh + ki) * g.kw + kj] = acc;
          }
      }
    });
  }
}

// db[o] = sum of grad_out over images and pixels.
template <class T>
void conv_bias_grad(const ConvGeom& g, const T* go, T* db) {
  int64_t np = g.opix();
  parallel_for(g.o, g.n * np, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      T acc = 0;
      for (int64_t n = 0; n < g.n; ++n) {
        const T* src = go + (n * g.o + o) * np;
        for (int64_t i = 0; i < np; ++i) acc += src[i];
      }
      db[o] = acc;
    }
  });
}

inline void conv2d_backward_kernel(const OpCall& c, std::span<Tensor> outs) {
  const auto& v = c.attrs.ints;
  const op::Conv2dGrads grads = op::conv2d_grads(c.attrs, outs);
  Tensor *gx = grads.input, *gw = grads.weight, *gb = grads.bias;
  DType dt = outs[0].dtype();
  Tensor go = contiguous_as(c.inputs[0], dt), x = contiguous_as(c.inputs[1], dt);
  Tensor w = contiguous_as(c.inputs[2], dt);
  ConvGeom g = conv_geom(x, w, v.data(), go);
#if defined(TERRA_HAS_DNNL)
  if (dt == DType::Float32 &&
      dnnl_conv::backward(dnnl_shape(g, false), go.data_ptr<float>(), x.data_ptr<float>(),
                          w.data_ptr<float>(), gx ? gx->data_ptr<float>() : nullptr,
                          gw ? gw->data_ptr<float>() : nullptr)) {
    if (gb) conv_bias_grad<float>(g, go.data_ptr<float>(), gb->data_ptr<float>());
    return;
  }
#endif
  TERRA_DISPATCH_FLOAT(dt, "conv2d_backward", {
    const T *gp = go.data_ptr<T>(), *xp = x.data_ptr<T>(), *wp = w.data_ptr<T>();
    T* dx = gx ? gx->data_ptr<T>() : nullptr;
    T* dw = gw ? gw->data_ptr<T>() : nullptr;
    if (gb) conv_bias_grad<T>(g, gp, gb->data_ptr<T>());
    if (g.cg() == 1 && g.groups > 1)
      conv_direct_backward<T>(g, gp, xp, wp, dx, dw);
    else if (dx || dw)
      conv_backward_gemm<T>(g, gp, xp, wp, dx, dw);
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Conv2dBackward> = &conv2d_backward_kernel;

// ---- pooling ----
// Pooling walks contiguous [planes, H, W] input; f(plane, h, w) handles one plane.
template <class F>
void for_each_plane(const Tensor& x, const Tensor& out, const F& f) {
  int64_t h = x.shape()[x.dim() - 2], w = x.shape()[x.dim() - 1];
  int64_t planes = h > 0 && w > 0 ? x.numel() / (h * w) : 0;
  int64_t per = out.shape()[out.dim() - 2] * out.shape()[out.dim() - 1];
  parallel_for(planes, per * 8, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) f(p, h, w);
  });
}

// The input positions [lo, hi) (step d) that window `o` of a dilated max pool reads, padding
// excluded; lo is the first in-range tap.
struct Taps {
  int64_t lo, hi;
};
inline std::vector<Taps> max_pool_taps(int64_t out, int64_t in, int64_t k, int64_t s, int64_t p,
                                       int64_t d) {
  std::vector<Taps> t(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    int64_t start = o * s - p, lo = start < 0 ? start + (-start + d - 1) / d * d : start;
    t[o] = {lo, std::min(start + (k - 1) * d + 1, in)};
  }
  return t;
}

template <class T>
void max_pool_plane(const T* src, int64_t w, const std::vector<Taps>& ty,
                    const std::vector<Taps>& tx, int64_t dh, int64_t dw, T* out, int64_t* idx) {
  int64_t ow = int64_t(tx.size());
  for (size_t oy = 0; oy < ty.size(); ++oy) {
    for (int64_t ox = 0; ox < ow; ++ox) {
      T best = std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                                    : std::numeric_limits<T>::lowest();
      int64_t bi = ty[oy].lo * w + tx[ox].lo;  // PyTorch's index when nothing beats -inf
      for (int64_t iy = ty[oy].lo; iy < ty[oy].hi; iy += dh) {
        for (int64_t ix = tx[ox].lo; ix < tx[ox].hi; ix += dw) {
          T val = src[iy * w + ix];
          bool nan = false;
          if constexpr (std::is_floating_point_v<T>) nan = val != val;
          if (val > best || nan) best = val, bi = iy * w + ix;  // NaN wins, as in PyTorch
        }
      }
      out[int64_t(oy) * ow + ox] = best;
      if (idx) idx[int64_t(oy) * ow + ox] = bi;
    }
  }
}

// The usual 2x2 window with stride 2, no padding, no dilation, over one row pair: the same
// scan order and update rule as max_pool_plane (a larger value or any NaN takes over), as
// selects: the generic loop's branches mispredict on random data (10 ns per output). k gets
// the winning tap (0..3) of each output.
inline void max_pool_row_2x2(const float* r0, const float* r1, int64_t ow, float* o, int32_t* k) {
  int64_t ox = 0;
#if defined(__SSE2__)
  auto take = [](__m128 v, __m128 best) {
    return _mm_or_ps(_mm_cmpgt_ps(v, best), _mm_cmpunord_ps(v, v));
  };
  auto pick = [](__m128 m, __m128 x, __m128 y) {
    return _mm_or_ps(_mm_and_ps(m, x), _mm_andnot_ps(m, y));
  };
  for (; ox + 4 <= ow; ox += 4) {
    const __m128 p0 = _mm_loadu_ps(r0 + 2 * ox), p1 = _mm_loadu_ps(r0 + 2 * ox + 4);
    const __m128 q0 = _mm_loadu_ps(r1 + 2 * ox), q1 = _mm_loadu_ps(r1 + 2 * ox + 4);
    const __m128 a = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(2, 0, 2, 0));
    const __m128 b = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(3, 1, 3, 1));
    const __m128 c = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(2, 0, 2, 0));
    const __m128 d = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(3, 1, 3, 1));
    __m128 m = take(b, a), best = pick(m, b, a);
    __m128 kk = _mm_and_ps(m, _mm_castsi128_ps(_mm_set1_epi32(1)));
    m = take(c, best);
    best = pick(m, c, best);
    kk = pick(m, _mm_castsi128_ps(_mm_set1_epi32(2)), kk);
    m = take(d, best);
    _mm_storeu_ps(o + ox, pick(m, d, best));
    kk = pick(m, _mm_castsi128_ps(_mm_set1_epi32(3)), kk);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(k + ox), _mm_castps_si128(kk));
  }
#endif
  for (; ox < ow; ++ox) {
    const float v[4] = {r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]};
    float best = v[0];
    int32_t kk = 0;
    for (int t = 1; t < 4; ++t)
      if (v[t] > best || v[t] != v[t]) best = v[t], kk = t;
    o[ox] = best;
    k[ox] = kk;
  }
}

template <class T>
void max_pool_plane_2x2(const T* src, int64_t w, int64_t oh, int64_t ow, T* out, int64_t* idx) {
  int32_t k[256];  // the winning tap of each output, for the indices
  for (int64_t oy = 0; oy < oh; ++oy) {
    const T* r0 = src + 2 * oy * w;
    for (int64_t x0 = 0; x0 < ow; x0 += 256) {
      const int64_t len = std::min<int64_t>(256, ow - x0);
      T* o = out + oy * ow + x0;
      if constexpr (std::is_same_v<T, float>) {
        max_pool_row_2x2(r0 + 2 * x0, r0 + w + 2 * x0, len, o, k);
      } else {
        for (int64_t i = 0; i < len; ++i) {
          const T* p = r0 + 2 * (x0 + i);
          const T v[4] = {p[0], p[1], p[w], p[w + 1]};
          T best = v[0];  // the first tap always beats the -inf start (or is NaN)
          int32_t kk = 0;
          for (int t = 1; t < 4; ++t) {
            bool take = v[t] > best;
            if constexpr (std::is_floating_point_v<T>) take = take || v[t] != v[t];
            if (take) best = v[t], kk = t;
          }
          o[i] = best;
          k[i] = kk;
        }
      }
      if (!idx) continue;
      int64_t* ix = idx + oy * ow + x0;
      for (int64_t i = 0; i < len; ++i)
        ix[i] = (2 * oy + (k[i] >> 1)) * w + 2 * (x0 + i) + (k[i] & 1);
    }
  }
}

inline void max_pool2d_kernel(const OpCall& c, std::span<Tensor> outs) {
  const auto& v = c.attrs.ints;
  Tensor x = contiguous_as(c.inputs[0], outs[0].dtype());
  int64_t h = x.shape()[x.dim() - 2], w = x.shape()[x.dim() - 1];
  int64_t oh = outs[0].shape()[outs[0].dim() - 2], ow = outs[0].shape()[outs[0].dim() - 1];
  std::vector<Taps> ty = max_pool_taps(oh, h, v[0], v[2], v[4], v[6]);
  std::vector<Taps> tx = max_pool_taps(ow, w, v[1], v[3], v[5], v[7]);
  int64_t* idx = outs.size() > 1 ? outs[1].data_ptr<int64_t>() : nullptr;
  TERRA_DISPATCH_COMPUTE(x.dtype(), "max_pool2d", {
    if constexpr (!std::is_same_v<T, bool>) {
      const T* in = x.data_ptr<T>();
      T* out = outs[0].data_ptr<T>();
      bool k2 = v[0] == 2 && v[1] == 2 && v[2] == 2 && v[3] == 2 && v[4] == 0 && v[5] == 0 &&
                v[6] == 1 && v[7] == 1 && 2 * oh <= h && 2 * ow <= w;
      for_each_plane(x, outs[0], [&](int64_t p, int64_t, int64_t) {
        int64_t* ip = idx ? idx + p * oh * ow : nullptr;
        if (k2)
          max_pool_plane_2x2<T>(in + p * h * w, w, oh, ow, out + p * oh * ow, ip);
        else
          max_pool_plane<T>(in + p * h * w, w, ty, tx, v[6], v[7], out + p * oh * ow, ip);
      });
    }
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::MaxPool2d> = &max_pool2d_kernel;

inline void avg_pool2d_kernel(const OpCall& c, std::span<Tensor> outs) {
  const auto& v = c.attrs.ints;
  int64_t kh = v[0], kw = v[1], sh = v[2], sw = v[3], ph = v[4], pw = v[5];
  bool include_pad = v[7];
  Tensor x = contiguous_as(c.inputs[0], outs[0].dtype());
  int64_t oh = outs[0].shape()[outs[0].dim() - 2], ow = outs[0].shape()[outs[0].dim() - 1];
  TERRA_DISPATCH_FLOAT(x.dtype(), "avg_pool2d", {
    const T* in = x.data_ptr<T>();
    T* out = outs[0].data_ptr<T>();
    for_each_plane(x, outs[0], [&](int64_t p, int64_t h, int64_t w) {
      const T* src = in + p * h * w;
      for (int64_t oy = 0; oy < oh; ++oy) {
        int64_t y0 = oy * sh - ph, y1 = std::min(y0 + kh, h + ph);
        for (int64_t ox = 0; ox < ow; ++ox) {
          int64_t x0 = ox * sw - pw, x1 = std::min(x0 + kw, w + pw);
          int64_t window = (y1 - y0) * (x1 - x0);  // includes the padding, not past it
          int64_t ya = std::max<int64_t>(y0, 0), yb = std::min(y1, h);
          int64_t xa = std::max<int64_t>(x0, 0), xb = std::min(x1, w);
          T sum = 0;
          for (int64_t iy = ya; iy < yb; ++iy)
            for (int64_t ix = xa; ix < xb; ++ix) sum += src[iy * w + ix];
          int64_t div = include_pad ? window : (yb - ya) * (xb - xa);
          out[(p * oh + oy) * ow + ox] = div > 0 ? sum / T(div) : T(0);
        }
      }
    });
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::AvgPool2d> = &avg_pool2d_kernel;

inline void adaptive_avg_pool2d_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor x = contiguous_as(c.inputs[0], outs[0].dtype());
  int64_t oh = c.attrs.ints[0], ow = c.attrs.ints[1];
  TERRA_DISPATCH_FLOAT(x.dtype(), "adaptive_avg_pool2d", {
    const T* in = x.data_ptr<T>();
    T* out = outs[0].data_ptr<T>();
    for_each_plane(x, outs[0], [&](int64_t p, int64_t h, int64_t w) {
      const T* src = in + p * h * w;
      for (int64_t oy = 0; oy < oh; ++oy) {
        int64_t ya = oy * h / oh, yb = ((oy + 1) * h + oh - 1) / oh;
        for (int64_t ox = 0; ox < ow; ++ox) {
          int64_t xa = ox * w / ow, xb = ((ox + 1) * w + ow - 1) / ow;
          T sum = 0;
          for (int64_t iy = ya; iy < yb; ++iy)
            for (int64_t ix = xa; ix < xb; ++ix) sum += src[iy * w + ix];
          out[(p * oh + oy) * ow + ox] = sum / T((yb - ya) * (xb - xa));
        }
      }
    });
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::AdaptiveAvgPool2d> = &adaptive_avg_pool2d_kernel;

// ---- pooling backward ----
// f(plane) over the [planes, H, W] gradient gx, each plane zeroed first; `per` is the work of
// one plane.
template <class T, class F>
void for_each_grad_plane(Tensor& gx, int64_t per, const F& f) {
  int64_t h = gx.size(-2), w = gx.size(-1), planes = gx.numel() / (h * w);
  T* base = gx.data_ptr<T>();
  parallel_for(planes, per + h * w, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      std::fill_n(base + p * h * w, h * w, T(0));
      f(p, base + p * h * w, h, w);
    }
  });
}

inline void max_pool2d_backward_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor& gx = outs[0];
  Tensor go = contiguous_as(c.inputs[0], gx.dtype());
  Tensor idx = contiguous_as(c.inputs[1], DType::Int64);
  int64_t hw = gx.size(-2) * gx.size(-1), per = go.size(-2) * go.size(-1);
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i)  // validated up front: no throwing in a parallel loop
    TERRA_CHECK(ip[i] >= 0 && ip[i] < hw, "max_pool2d_backward", "index ", ip[i], " at position ",
                i, " is out of range for an input plane of ", gx.size(-2), "x", gx.size(-1));
  TERRA_DISPATCH_FLOAT(gx.dtype(), "max_pool2d_backward", {
    const T* gp = go.data_ptr<T>();
    for_each_grad_plane<T>(gx, per, [&](int64_t p, T* dst, int64_t, int64_t) {
      const T* src = gp + p * per;
      const int64_t* ix = ip + p * per;
      for (int64_t i = 0; i < per; ++i) dst[ix[i]] += src[i];
    });
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::MaxPool2dBackward> = &max_pool2d_backward_kernel;

// Each output's gradient spread evenly over its window, with the forward's divisor.
inline void avg_pool2d_backward_kernel(const OpCall& c, std::span<Tensor> outs) {
  const auto& v = c.attrs.ints;
  int64_t kh = v[0], kw = v[1], sh = v[2], sw = v[3], ph = v[4], pw = v[5];
  bool include_pad = v[7];
  Tensor& gx = outs[0];
  Tensor go = contiguous_as(c.inputs[0], gx.dtype());
  int64_t oh = go.size(-2), ow = go.size(-1);
  TERRA_DISPATCH_FLOAT(gx.dtype(), "avg_pool2d_backward", {
    const T* gp = go.data_ptr<T>();
    for_each_grad_plane<T>(gx, oh * ow * kh * kw, [&](int64_t p, T* dst, int64_t h, int64_t w) {
      const T* src = gp + p * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy) {
        int64_t y0 = oy * sh - ph, y1 = std::min(y0 + kh, h + ph);
        int64_t ya = std::max<int64_t>(y0, 0), yb = std::min(y1, h);
        for (int64_t ox = 0; ox < ow; ++ox) {
          int64_t x0 = ox * sw - pw, x1 = std::min(x0 + kw, w + pw);
          int64_t xa = std::max<int64_t>(x0, 0), xb = std::min(x1, w);
          int64_t div = include_pad ? (y1 - y0) * (x1 - x0) : (yb - ya) * (xb - xa);
          if (div <= 0) continue;
          T gv = src[oy * ow + ox] / T(div);
          for (int64_t iy = ya; iy < yb; ++iy)
            for (int64_t ix = xa; ix < xb; ++ix) dst[iy * w + ix] += gv;
        }
      }
    });
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::AvgPool2dBackward> = &avg_pool2d_backward_kernel;

inline void adaptive_avg_pool2d_backward_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor& gx = outs[0];
  Tensor go = contiguous_as(c.inputs[0], gx.dtype());
  int64_t oh = go.size(-2), ow = go.size(-1);
  int64_t per = oh * ow * std::max<int64_t>(1, gx.size(-2) / oh) *
                std::max<int64_t>(1, gx.size(-1) / ow);
  TERRA_DISPATCH_FLOAT(gx.dtype(), "adaptive_avg_pool2d_backward", {
    const T* gp = go.data_ptr<T>();
    for_each_grad_plane<T>(gx, per, [&](int64_t p, T* dst, int64_t h, int64_t w) {
      const T* src = gp + p * oh * ow;
      for (int64_t oy = 0; oy < oh; ++oy) {
        int64_t ya = oy * h / oh, yb = ((oy + 1) * h + oh - 1) / oh;
        for (int64_t ox = 0; ox < ow; ++ox) {
          int64_t xa = ox * w / ow, xb = ((ox + 1) * w + ow - 1) / ow;
          T gv = src[oy * ow + ox] / T((yb - ya) * (xb - xa));
          for (int64_t iy = ya; iy < yb; ++iy)
            for (int64_t ix = xa; ix < xb; ++ix) dst[iy * w + ix] += gv;
        }
      }
    });
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::AdaptiveAvgPool2dBackward> =
    &adaptive_avg_pool2d_backward_kernel;

}  // namespace terra::cpu
