// terra/backend/cuda/nn.cuh: CUDA kernels of the neural-network ops.
// Softmax, log_softmax and layer_norm are fused row kernels: a group of `lanes` threads (up to
// a block) per row, in three passes over the row (max/mean, sum/variance, write), the group's
// partials merged in shared memory. 16-bit inputs compute in float, like the CPU's upcast
// path; softmax sums in the compute type (float or double), layer_norm's statistics in double.
// Inputs may be strided (read through Indexers); outputs are contiguous.
#pragma once

#include "terra/backend/cuda/reduce.cuh"
#include "terra/ops/nn.hpp"

namespace terra::cuda {

namespace nnk {

using red::calc_t;
using red::load;
using red::store;

// ---- softmax / log_softmax ----
// Rows along dim d: row r starts at base.offset(r) and steps by sd; its output starts at
// (r / inner) * n * inner + r % inner and steps by inner.
struct SoftmaxGeo {
  Indexer base;
  int64_t rows = 1, n = 1, sd = 0, inner = 1;
};

inline SoftmaxGeo softmax_geo(const Tensor& x, int64_t dim, const char* name) {
  SoftmaxGeo g;
  const int64_t d = wrap_dim(dim, x.dim(), name);
  for (int64_t k = 0; k < x.dim(); ++k) {
    const int64_t s = x.shape()[k];
    if (k == d) {
      g.n = s, g.sd = x.strides()[k];
      continue;
    }
    g.rows *= s;
    if (k > d) g.inner *= s;
    red::push_dim(g.base, s, x.strides()[k], name);
  }
  return g;
}

// The CPU's semantics: the max ignores NaN (a NaN then spreads through the sum), and a row whose
// max is infinite gives NaN.
template <bool Log, class T>
__global__ void softmax_kernel(const T* x, T* y, SoftmaxGeo g, int lanes) {
  using C = calc_t<T>;
  __shared__ C sh[kThreads];
  const int lane = threadIdx.x % lanes;
  const int64_t per_block = blockDim.x / lanes;
  for (int64_t base = blockIdx.x * per_block; base < g.rows; base += gridDim.x * per_block) {
    const int64_t r = base + threadIdx.x / lanes;
    const bool live = r < g.rows;
    const T* xr = live ? x + g.base.offset(r) : x;
    T* yr = y + (r / g.inner) * g.n * g.inner + r % g.inner;
    C m = -std::numeric_limits<C>::infinity();
    if (live)
      for (int64_t j = lane; j < g.n; j += lanes) {
        const C v = load(xr + j * g.sd);
        m = v > m ? v : m;
      }
    m = red::group_reduce(m, sh, lanes, [](C a, C b) { return b > a ? b : a; });
    C s = 0;
    if (live)
      for (int64_t j = lane; j < g.n; j += lanes) s += red::dexp(C(load(xr + j * g.sd) - m));
    s = red::group_reduce(s, sh, lanes, [](C a, C b) { return a + b; });
    if (!live) continue;
    if constexpr (Log) {
      const C lg = red::dlog(s);
      for (int64_t j = lane; j < g.n; j += lanes)
        yr[j * g.inner] = store<T>(C(load(xr + j * g.sd) - m) - lg);
    } else {
      const C inv = C(1) / s;
      for (int64_t j = lane; j < g.n; j += lanes)
        yr[j * g.inner] = store<T>(red::dexp(C(load(xr + j * g.sd) - m)) * inv);
    }
  }
}

// ---- layer_norm ----
// A contiguous copy of a parameter in the compute type C (the CPU casts weight and bias to x's
// dtype, float32 for 16-bit x).
template <class C>
Tensor param_as(const Tensor& w) {
  Tensor out = cuda::empty(w.shape(), dtype_v<C>, w.device());
  copy_into(w, out);
  return out;
}

// Row r of x [rows, n] (element i of x at ix.offset(i)): mean and biased variance in double
// (two passes), then y = (x - mean) * rstd * w + b in C, as the CPU computes it.
template <class T, class C>
__global__ void layer_norm_kernel(const T* x, Indexer ix, const C* w, const C* b, T* y, C* mean,
                                  C* rstd, int64_t rows, int64_t n, double eps, int lanes) {
  __shared__ double sh[kThreads];
  const int lane = threadIdx.x % lanes;
  const int64_t per_block = blockDim.x / lanes;
  auto plus = [](double u, double v) { return u + v; };
  for (int64_t base = blockIdx.x * per_block; base < rows; base += gridDim.x * per_block) {
    const int64_t r = base + threadIdx.x / lanes;
    const bool live = r < rows;
    double s = 0;
    if (live)
      for (int64_t j = lane; j < n; j += lanes) s += double(load(x + ix.offset(r * n + j)));
    const double mu = red::group_reduce(s, sh, lanes, plus) / double(n);
    double q = 0;
    if (live)
      for (int64_t j = lane; j < n; j += lanes) {
        const double d = double(load(x + ix.offset(r * n + j))) - mu;
        q += d * d;
      }
    const double var = red::group_reduce(q, sh, lanes, plus) / double(n);
    if (!live) continue;
    const C m = C(mu), rs = C(1.0 / ::sqrt(var + eps));
    if (lane == 0) mean[r] = m, rstd[r] = rs;
    for (int64_t j = lane; j < n; j += lanes) {
      C v = (C(load(x + ix.offset(r * n + j))) - m) * rs;
      if (w) v = v * w[j];
      if (b) v = v + b[j];
      y[r * n + j] = store<T>(v);
    }
  }
}

// ---- launchers ----
template <bool Log>
void softmax_fn(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& x = c.inputs[0];
  const char* name = op_name(c.op);
  SoftmaxGeo g = softmax_geo(x, c.attrs.ints[0], name);
  if (x.numel() == 0) return;
  const int lanes = red::lanes_for(g.n);
  TERRA_REDUCE_DISPATCH_FLOAT(x.dtype(), name, {
    softmax_kernel<Log><<<grid_for(g.rows, kThreads / lanes), kThreads, 0, stream()>>>(
        ptr<T>(x), ptr<T>(outs[0]), g, lanes);
    check_launch(name);
  });
}

inline void layer_norm_fn(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& x = c.inputs[0];
  const int64_t rows = outs[1].numel(), n = rows ? x.numel() / rows : 0;
  if (rows == 0) return;
  const Indexer ix = red::flat_indexer(x, "layer_norm");
  const double eps = c.attrs.scalars[0];
  const int lanes = red::lanes_for(n);
  TERRA_REDUCE_DISPATCH_FLOAT(x.dtype(), "layer_norm", {
    using C = calc_t<T>;
    Tensor p[2];
    for (size_t k = 0, i = 1; k < 2; ++k)
      if (c.attrs.ints[k]) p[k] = param_as<C>(c.inputs[i++]);
    const C* w = p[0].defined() ? red::cptr<C>(p[0]) : nullptr;
    const C* b = p[1].defined() ? red::cptr<C>(p[1]) : nullptr;
    layer_norm_kernel<<<grid_for(rows, kThreads / lanes), kThreads, 0, stream()>>>(
        red::cptr<T>(x), ix, w, b, red::mptr<T>(outs[0]), ptr<C>(outs[1]), ptr<C>(outs[2]), rows, n,
        eps, lanes);
    check_launch("layer_norm");
  });
}

}  // namespace nnk

template <>
inline constexpr KernelFn cuda_kernel<op::Softmax> = &nnk::softmax_fn<false>;
template <>
inline constexpr KernelFn cuda_kernel<op::LogSoftmax> = &nnk::softmax_fn<true>;
template <>
inline constexpr KernelFn cuda_kernel<op::LayerNorm> = &nnk::layer_norm_fn;

}  // namespace terra::cuda
