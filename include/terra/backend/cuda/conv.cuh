// terra/backend/cuda/conv.cuh: conv2d and conv2d_backward through cuDNN (legacy convolution
// API; only when the build has cuDNN, TERRA_HAS_CUDNN, else they stay "not implemented on
// cuda"), and the 2-D pooling ops with their backward ops as plain kernels (one thread per
// output element). Attrs, dtypes and output layouts are those of backend/cpu/conv.hpp. nvcc only.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(TERRA_HAS_CUDNN)
#include <cudnn.h>
#endif

#include "terra/backend/cuda/linalg.cuh"
#include "terra/ops/conv.hpp"

namespace terra::cuda::cv {

using la::acc_t;
using la::cvt;

// ---- pooling geometry ----
struct PoolGeom {
  int64_t h, w, oh, ow;           // input and output plane
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// terra::min/max are tensor ops: plain integer ones for the kernels.
__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// The lowest value of V (no numeric_limits: its members are host functions without
// --expt-relaxed-constexpr).
template <class V>
__device__ __forceinline__ V lowest() {
  if constexpr (std::is_floating_point_v<V>)
    return -V(INFINITY);
  else if constexpr (std::is_same_v<V, int32_t>)
    return INT32_MIN;
  else
    return INT64_MIN;
}

// The first input position >= 0 that a window starting at `start` (step d) reads.
__device__ __forceinline__ int64_t first_tap(int64_t start, int64_t d) {
  return start < 0 ? start + (-start + d - 1) / d * d : start;
}

// ---- kernels ----
// Scans the window row by row as the CPU does: a larger value or any NaN takes over; the index
// of a window with nothing above -inf is its first in-range tap (as PyTorch).
template <class T>
__global__ void max_pool_kernel(const T* x, T* y, int64_t* idx, PoolGeom g, int64_t total) {
  using V = std::conditional_t<la::kHalfLike<T>, float, T>;
  TERRA_LA_LOOP(i, total) {
    int64_t ox = i % g.ow, t = i / g.ow, oy = t % g.oh, p = t / g.oh;
    const T* src = x + p * g.h * g.w;
    int64_t ys = oy * g.sh - g.ph, xs = ox * g.sw - g.pw;
    int64_t ylo = first_tap(ys, g.dh), yhi = imin(ys + (g.kh - 1) * g.dh + 1, g.h);
    int64_t xlo = first_tap(xs, g.dw), xhi = imin(xs + (g.kw - 1) * g.dw + 1, g.w);
    V best = lowest<V>();
    int64_t bi = ylo * g.w + xlo;
    for (int64_t iy = ylo; iy < yhi; iy += g.dh) {
      for (int64_t ix = xlo; ix < xhi; ix += g.dw) {
        V v = cvt<V>(src[iy * g.w + ix]);
        bool nan = false;
        if constexpr (std::is_floating_point_v<V>) nan = v != v;
        if (v > best || nan) best = v, bi = iy * g.w + ix;
      }
    }
    y[i] = cvt<T>(best);
    if (idx) idx[i] = bi;
  }
}

template <class T>
__global__ void avg_pool_kernel(const T* x, T* y, PoolGeom g, bool include_pad, int64_t total) {
  using A = acc_t<T>;
  TERRA_LA_LOOP(i, total) {
    int64_t ox = i % g.ow, t = i / g.ow, oy = t % g.oh, p = t / g.oh;
    const T* src = x + p * g.h * g.w;
    int64_t y0 = oy * g.sh - g.ph, y1 = imin(y0 + g.kh, g.h + g.ph);
    int64_t x0 = ox * g.sw - g.pw, x1 = imin(x0 + g.kw, g.w + g.pw);
    int64_t ya = imax(y0, 0), yb = imin(y1, g.h);
    int64_t xa = imax(x0, 0), xb = imin(x1, g.w);
    A sum = 0;
    for (int64_t iy = ya; iy < yb; ++iy)
      for (int64_t ix = xa; ix < xb; ++ix) sum += cvt<A>(src[iy * g.w + ix]);
    int64_t div = include_pad ? (y1 - y0) * (x1 - x0) : (yb - ya) * (xb - xa);
    y[i] = cvt<T>(div > 0 ? sum / A(div) : A(0));
  }
}

template <class T>
__global__ void adaptive_avg_pool_kernel(const T* x, T* y, PoolGeom g, int64_t total) {
  using A = acc_t<T>;
  TERRA_LA_LOOP(i, total) {
    int64_t ox = i % g.ow, t = i / g.ow, oy = t % g.oh, p = t / g.oh;
    const T* src = x + p * g.h * g.w;
    int64_t ya = oy * g.h / g.oh, yb = ((oy + 1) * g.h + g.oh - 1) / g.oh;
    int64_t xa = ox * g.w / g.ow, xb = ((ox + 1) * g.w + g.ow - 1) / g.ow;
    A sum = 0;
    for (int64_t iy = ya; iy < yb; ++iy)
      for (int64_t ix = xa; ix < xb; ++ix) sum += cvt<A>(src[iy * g.w + ix]);
    y[i] = cvt<T>(sum / A((yb - ya) * (xb - xa)));
  }
}

// Records the smallest flat position whose index is outside [0, hw).
__global__ void check_index_kernel(const int64_t* idx, int64_t n, int64_t hw,
                                   unsigned long long* first_bad) {
  TERRA_LA_LOOP(i, n) {
    if (idx[i] < 0 || idx[i] >= hw) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

// Indices may repeat (overlapping windows), so the gradient is scattered with atomics into an
// A (float or double) buffer.
template <class T, class A>
__global__ void max_pool_bwd_kernel(const T* go, const int64_t* idx, A* gx, int64_t per,
                                    int64_t hw, int64_t total) {
  TERRA_LA_LOOP(i, total) atomicAdd(gx + (i / per) * hw + idx[i], cvt<A>(go[i]));
}

// One thread per input pixel gathers the outputs whose window covers it, in the CPU's order
// (rows, then columns), each divided by its forward divisor.
template <class T>
__global__ void avg_pool_bwd_kernel(const T* go, T* gx, PoolGeom g, bool include_pad,
                                    int64_t total) {
  using A = acc_t<T>;
  TERRA_LA_LOOP(i, total) {
    int64_t ix = i % g.w, t = i / g.w, iy = t % g.h, p = t / g.h;
    const T* src = go + p * g.oh * g.ow;
    int64_t ly = iy + g.ph - g.kh + 1, lx = ix + g.pw - g.kw + 1;
    int64_t oy0 = ly <= 0 ? 0 : (ly + g.sh - 1) / g.sh, oy1 = imin(g.oh - 1, (iy + g.ph) / g.sh);
    int64_t ox0 = lx <= 0 ? 0 : (lx + g.sw - 1) / g.sw, ox1 = imin(g.ow - 1, (ix + g.pw) / g.sw);
    A acc = 0;
    for (int64_t oy = oy0; oy <= oy1; ++oy) {
      int64_t y0 = oy * g.sh - g.ph, y1 = imin(y0 + g.kh, g.h + g.ph);
      if (iy < y0 || iy >= y0 + g.kh) continue;
      int64_t ya = imax(y0, 0), yb = imin(y1, g.h);
      for (int64_t ox = ox0; ox <= ox1; ++ox) {
        int64_t x0 = ox * g.sw - g.pw, x1 = imin(x0 + g.kw, g.w + g.pw);
        if (ix < x0 || ix >= x0 + g.kw) continue;
        int64_t xa = imax(x0, 0), xb = imin(x1, g.w);
        int64_t div = include_pad ? (y1 - y0) * (x1 - x0) : (yb - ya) * (xb - xa);
        if (div > 0) acc += cvt<A>(src[oy * g.ow + ox]) / A(div);
      }
    }
    gx[i] = cvt<T>(acc);
  }
}

// Output window oy spans [floor(oy * h / oh), ceil((oy + 1) * h / oh)); the windows covering iy
// lie in [floor(iy * oh / h), floor((iy + 1) * oh / h)].
template <class T>
__global__ void adaptive_avg_pool_bwd_kernel(const T* go, T* gx, PoolGeom g, int64_t total) {
  using A = acc_t<T>;
  TERRA_LA_LOOP(i, total) {
    int64_t ix = i % g.w, t = i / g.w, iy = t % g.h, p = t / g.h;
    const T* src = go + p * g.oh * g.ow;
    int64_t oy1 = imin(g.oh - 1, (iy + 1) * g.oh / g.h), ox1 = imin(g.ow - 1, (ix + 1) * g.ow / g.w);
    A acc = 0;
    for (int64_t oy = iy * g.oh / g.h; oy <= oy1; ++oy) {
      int64_t ya = oy * g.h / g.oh, yb = ((oy + 1) * g.h + g.oh - 1) / g.oh;
      if (iy < ya || iy >= yb) continue;
      for (int64_t ox = ix * g.ow / g.w; ox <= ox1; ++ox) {
        int64_t xa = ox * g.w / g.ow, xb = ((ox + 1) * g.w + g.ow - 1) / g.ow;
        if (ix < xa || ix >= xb) continue;
        acc += cvt<A>(src[oy * g.ow + ox]) / A((yb - ya) * (xb - xa));
      }
    }
    gx[i] = cvt<T>(acc);
  }
}

// ---- launchers: pooling ----
// The plane sizes of input (or gradient) `in` and output `out`; no window (adaptive pooling).
inline PoolGeom plane_geom(const Tensor& in, const Tensor& out) {
  return {in.size(-2), in.size(-1), out.size(-2), out.size(-1), 0, 0, 1, 1, 0, 0, 1, 1};
}
// With the window attrs k = {kh, kw, sh, sw, ph, pw[, dh, dw]}.
inline PoolGeom pool_geom(const Tensor& in, const Tensor& out, const int64_t* k, bool dilated) {
  PoolGeom g = plane_geom(in, out);
  g.kh = k[0], g.kw = k[1], g.sh = k[2], g.sw = k[3], g.ph = k[4], g.pw = k[5];
  if (dilated) g.dh = k[6], g.dw = k[7];
  return g;
}

inline void max_pool2d_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor& y = outs[0];
  int64_t n = y.numel();
  if (n == 0) return;
  Tensor x = la::dense(c.inputs[0], y.dtype(), "max_pool2d");
  PoolGeom g = pool_geom(x, y, c.attrs.ints.data(), true);
  int64_t* idx = outs.size() > 1 ? ptr<int64_t>(outs[1]) : nullptr;
  la::dispatch_all(y.dtype(), "max_pool2d", [&]<class T>() {
    if constexpr (!std::is_same_v<T, bool>)
      max_pool_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(ptr<const T>(x), ptr<T>(y), idx,
                                                                 g, n);
  });
  check_launch("max_pool2d");
}

inline void avg_pool2d_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor& y = outs[0];
  int64_t n = y.numel();
  if (n == 0) return;
  Tensor x = la::dense(c.inputs[0], y.dtype(), "avg_pool2d");
  PoolGeom g = pool_geom(x, y, c.attrs.ints.data(), false);
  bool include_pad = c.attrs.ints[7] != 0;
  la::dispatch_float(y.dtype(), "avg_pool2d", [&]<class T>() {
    avg_pool_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(ptr<const T>(x), ptr<T>(y), g,
                                                               include_pad, n);
  });
  check_launch("avg_pool2d");
}

inline void adaptive_avg_pool2d_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor& y = outs[0];
  int64_t n = y.numel();
  if (n == 0) return;
  Tensor x = la::dense(c.inputs[0], y.dtype(), "adaptive_avg_pool2d");
  PoolGeom g = plane_geom(x, y);
  la::dispatch_float(y.dtype(), "adaptive_avg_pool2d", [&]<class T>() {
    adaptive_avg_pool_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(ptr<const T>(x),
                                                                        ptr<T>(y), g, n);
  });
  check_launch("adaptive_avg_pool2d");
}

// Throws the CPU's message for the first index outside the plane (a device-to-host sync).
inline void check_indices(const Tensor& idx, int64_t h, int64_t w) {
  const char* op = "max_pool2d_backward";
  int64_t n = idx.numel();
  if (capturing()) return;  // nothing can be read back while a graph is recorded
  Tensor bad = cuda::empty({1}, DType::Int64, idx.device());
  TERRA_CUDA_CHECK(cudaMemsetAsync(bad.device_data(), 0xff, sizeof(int64_t), stream()));
  check_index_kernel<<<grid_for(n), kThreads, 0, stream()>>>(
      ptr<const int64_t>(idx), n, h * w, static_cast<unsigned long long*>(bad.device_data()));
  check_launch(op);
  unsigned long long pos = 0;
  int64_t value = 0;
  TERRA_CUDA_CHECK(cudaMemcpyAsync(&pos, bad.device_data(), sizeof(pos), cudaMemcpyDeviceToHost,
                                   stream()));
  TERRA_CUDA_CHECK(cudaStreamSynchronize(stream()));
  if (pos == std::numeric_limits<unsigned long long>::max()) return;
  TERRA_CUDA_CHECK(cudaMemcpyAsync(&value, ptr<const int64_t>(idx) + pos, sizeof(value),
                                   cudaMemcpyDeviceToHost, stream()));
  TERRA_CUDA_CHECK(cudaStreamSynchronize(stream()));
  terra::detail::fail(op, "index ", value, " at position ", pos,
                      " is out of range for an input plane of ", h, "x", w);
}

inline void max_pool2d_backward_kernel(const OpCall& c, std::span<Tensor> outs) {
  const char* op = "max_pool2d_backward";
  Tensor& gx = outs[0];
  DType dt = gx.dtype();
  Tensor go = la::dense(c.inputs[0], dt, op), idx = la::dense(c.inputs[1], DType::Int64, op);
  int64_t h = gx.size(-2), w = gx.size(-1), n = go.numel();
  if (n > 0) check_indices(idx, h, w);
  // float16/bfloat16 gradients are summed in a float32 buffer and rounded once, as on the CPU.
  bool direct = dt == DType::Float32 || dt == DType::Float64;
  Tensor acc = direct ? gx : cuda::empty(gx.shape(), DType::Float32, gx.device());
  la::zero(acc);
  if (n > 0) {
    int64_t per = go.size(-2) * go.size(-1);
    la::dispatch_float(dt, op, [&]<class T>() {
      using A = acc_t<T>;
      max_pool_bwd_kernel<T, A><<<grid_for(n), kThreads, 0, stream()>>>(
          ptr<const T>(go), ptr<const int64_t>(idx), ptr<A>(acc), per, h * w, n);
    });
    check_launch(op);
  }
  if (!direct) copy_into(acc, gx);
}

inline void avg_pool2d_backward_kernel(const OpCall& c, std::span<Tensor> outs) {
  const char* op = "avg_pool2d_backward";
  Tensor& gx = outs[0];
  int64_t n = gx.numel();
  if (n == 0) return;
  Tensor go = la::dense(c.inputs[0], gx.dtype(), op);
  PoolGeom g = pool_geom(gx, go, c.attrs.ints.data(), false);
  bool include_pad = c.attrs.ints[7] != 0;
  la::dispatch_float(gx.dtype(), op, [&]<class T>() {
    avg_pool_bwd_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(ptr<const T>(go), ptr<T>(gx),
                                                                   g, include_pad, n);
  });
  check_launch(op);
}

inline void adaptive_avg_pool2d_backward_kernel(const OpCall& c, std::span<Tensor> outs) {
  const char* op = "adaptive_avg_pool2d_backward";
  Tensor& gx = outs[0];
  int64_t n = gx.numel();
  if (n == 0) return;
  Tensor go = la::dense(c.inputs[0], gx.dtype(), op);
  PoolGeom g = plane_geom(gx, go);
  la::dispatch_float(gx.dtype(), op, [&]<class T>() {
    adaptive_avg_pool_bwd_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(ptr<const T>(go),
                                                                            ptr<T>(gx), g, n);
  });
  check_launch(op);
}

}  // namespace terra::cuda::cv

namespace terra::cuda {
template <>
inline constexpr KernelFn cuda_kernel<op::MaxPool2d> = &cv::max_pool2d_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::AvgPool2d> = &cv::avg_pool2d_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::AdaptiveAvgPool2d> = &cv::adaptive_avg_pool2d_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::MaxPool2dBackward> = &cv::max_pool2d_backward_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::AvgPool2dBackward> = &cv::avg_pool2d_backward_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::AdaptiveAvgPool2dBackward> =
    &cv::adaptive_avg_pool2d_backward_kernel;
}  // namespace terra::cuda

#if defined(TERRA_HAS_CUDNN)
#include "terra/backend/cuda/conv_cudnn.cuh"
#endif
