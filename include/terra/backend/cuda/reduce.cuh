// terra/backend/cuda/reduce.cuh: CUDA kernels of the reductions (sum, mean, prod, amax, amin,
// var, logsumexp, max/min along a dim, argmax, argmin), and the helpers that sort.cuh and
// nn.cuh share: compute types, 16-bit loads/stores, group reductions.
// Every output reduces its own slice: x is seen through two Indexers, one over the kept dims
// (the output's base offset) and one over the reduced dims (offset of the k-th reduced
// element, k row-major over the reduced dims in logical order, as the CPU indexes them).
// A group of `lanes` threads (1..256, a power of two) folds each slice, then merges in a
// shared-memory tree; a long extent gets a whole block per output. The reducers mirror the
// CPU ones (init/step/merge/put): floats accumulate in double, integers in int64, so results
// match the CPU's up to summation order, and max/argmax (NaN wins, first index on ties) match
// exactly because their merge is order-independent.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>

#include "terra/backend/cuda/common.cuh"
#include "terra/ops/reduce.hpp"

// Runs `body` with T bound to every floating dtype, the 16-bit ones included (the CUDA kernels
// load them as float; the CPU's dispatch leaves them out because it upcasts first).
#define TERRA_REDUCE_DISPATCH_FLOAT(dt, op, ...)                                             \
  switch (dt) {                                                                              \
    TERRA_DTYPE_CASE(Float16, ::terra::Half, __VA_ARGS__)                                    \
    TERRA_DTYPE_CASE(BFloat16, ::terra::BFloat16, __VA_ARGS__)                               \
    TERRA_DTYPE_CASE(Float32, float, __VA_ARGS__)                                            \
    TERRA_DTYPE_CASE(Float64, double, __VA_ARGS__)                                           \
    default:                                                                                 \
      ::terra::detail::fail(op, "expected a floating dtype, got ", ::terra::dtype_name(dt)); \
  }

namespace terra::cuda {

namespace red {

// ---- types ----
// The type a kernel computes in: float for the 16-bit floats, the type itself otherwise.
template <class T>
struct calc {
  using type = T;
};
template <>
struct calc<Half> {
  using type = float;
};
template <>
struct calc<BFloat16> {
  using type = float;
};
template <class T>
using calc_t = typename calc<T>::type;
template <class T>
inline constexpr bool is_float_v = std::is_floating_point_v<calc_t<T>>;
// Accumulators as the CPU's: double for floats, int64 for integers and bool.
template <class T>
using acc_t = std::conditional_t<is_float_v<T>, double, int64_t>;
template <class T>
using sum_out_t = std::conditional_t<is_float_v<T>, T, int64_t>;

template <class T>
__device__ __forceinline__ calc_t<T> load(const T* p) {
  return calc_t<T>(*p);
}
// 16-bit outputs round through float, as the CPU does (its float32 result is copied into them).
template <class O, class A>
__device__ __forceinline__ O store(A v) {
  if constexpr (std::is_same_v<O, Half> || std::is_same_v<O, BFloat16>)
    return O(float(v));
  else
    return O(v);
}

template <class C>
__device__ __forceinline__ bool is_nan(C x) {
  if constexpr (std::is_floating_point_v<C>)
    return x != x;
  else
    return false;
}
__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return ::exp(x); }
__device__ __forceinline__ float dlog(float x) { return logf(x); }
__device__ __forceinline__ double dlog(double x) { return ::log(x); }

template <class T>
const T* cptr(const Tensor& t) {
  return t.numel() ? ptr<T>(t) : nullptr;
}
template <class T>
T* mptr(const Tensor& t) {
  return t.numel() ? ptr<T>(t) : nullptr;
}

// ---- groups ----
// Threads per output: the smallest power of two >= n, at most a block.
inline int lanes_for(int64_t n) {
  int l = 1;
  while (l < kThreads && l < n) l *= 2;
  return l;
}

// Merge v over the `lanes` threads of each group of the block; every lane gets the result.
// Every thread of the block must call it (it synchronizes the block).
template <class A, class F>
__device__ A group_reduce(A v, A* sh, int lanes, F merge) {
  const int t = threadIdx.x, lane = t % lanes;
  sh[t] = v;
  __syncthreads();
  for (int s = lanes / 2; s > 0; s >>= 1) {
    if (lane < s) sh[t] = merge(sh[t], sh[t + s]);
    __syncthreads();
  }
  A r = sh[t - lane];
  __syncthreads();
  return r;
}

// ---- geometry ----
// Appends a dim to an Indexer, merged into the previous one when they are contiguous with each
// other (the row-major order of the Indexer's elements is unchanged); size-1 dims are dropped.
inline void push_dim(Indexer& ix, int64_t size, int64_t stride, const char* name) {
  if (size == 1) return;
  if (ix.ndim > 0 && ix.strides[ix.ndim - 1] == size * stride) {
    ix.sizes[ix.ndim - 1] *= size;
    ix.strides[ix.ndim - 1] = stride;
    return;
  }
  TERRA_CHECK(ix.ndim < kMaxDims, name, "tensors of more than ", kMaxDims,
              " non-trivial dims exceed the CUDA kernels' limit");
  ix.sizes[ix.ndim] = size;
  ix.strides[ix.ndim] = stride;
  ++ix.ndim;
}

// All of x's elements in row-major order, dims merged where they can be.
inline Indexer flat_indexer(const Tensor& x, const char* name) {
  Indexer ix;
  for (int64_t d = 0; d < x.dim(); ++d) push_dim(ix, x.shape()[d], x.strides()[d], name);
  return ix;
}

struct Geo {
  Indexer kept, red;  // output o -> offset of its slice; reduced index k -> offset in the slice
  int64_t outs = 1, n = 1;
};

inline Geo geo_of(const OpCall& c) {
  const Tensor& x = c.inputs[0];
  const char* name = op_name(c.op);
  auto m = op::reduce::mask(x, op::reduce::dims_of(c.attrs), name);
  Geo g;
  for (int64_t d = 0; d < x.dim(); ++d) {
    int64_t s = x.shape()[d], st = x.strides()[d];
    if (m[d]) {
      g.n *= s;
      push_dim(g.red, s, st, name);
    } else {
      g.outs *= s;
      push_dim(g.kept, s, st, name);
    }
  }
  return g;
}

// ---- reducers (as terra::cpu's: init, step(acc, x, k, p), merge, put(o, acc, p)) ----
template <class T, class O>
struct SumR {
  using Acc = acc_t<T>;
  O* out;
  __device__ Acc init() const { return Acc(0); }
  __device__ Acc step(Acc a, calc_t<T> x, int64_t, double) const { return a + Acc(x); }
  __device__ Acc merge(Acc a, Acc b) const { return a + b; }
  __device__ void put(int64_t o, Acc a, double) const { out[o] = store<O>(a); }
};

template <class T, class O>
struct ProdR {
  using Acc = acc_t<T>;
  O* out;
  // Integer products wrap (through uint64, where wrapping is defined), as the CPU's do.
  __device__ static Acc mul(Acc a, Acc b) {
    if constexpr (std::is_integral_v<Acc>)
      return Acc(uint64_t(a) * uint64_t(b));
    else
      return a * b;
  }
  __device__ Acc init() const { return Acc(1); }
  __device__ Acc step(Acc a, calc_t<T> x, int64_t, double) const { return mul(a, Acc(x)); }
  __device__ Acc merge(Acc a, Acc b) const { return mul(a, b); }
  __device__ void put(int64_t o, Acc a, double) const { out[o] = store<O>(a); }
};

template <class T, class O>
struct MeanR : SumR<T, O> {
  double count;
  __device__ void put(int64_t o, double a, double) const { this->out[o] = store<O>(a / count); }
};

// Sum of squared deviations from the per-output mean p, divided by max(0, n - correction).
template <class T>
struct SqDevR : SumR<T, T> {
  double dof;
  __device__ double step(double a, calc_t<T> x, int64_t, double p) const {
    double d = double(x) - p;
    return a + d * d;
  }
  __device__ void put(int64_t o, double a, double) const { this->out[o] = store<T>(a / dof); }
};

// log(sum(exp(x - p))) + p, p the per-output max; a non-finite max is the answer itself.
template <class T>
struct ExpSumR : SumR<T, T> {
  using C = calc_t<T>;
  __device__ double step(double a, C x, int64_t, double p) const {
    return a + double(dexp(C(x - C(p))));
  }
  __device__ void put(int64_t o, double a, double p) const {
    this->out[o] = store<T>(::isfinite(p) ? p + ::log(a) : p);
  }
};

// max (Max) or min; NaN wins.
template <class T, class O, bool Max>
struct ExtremeR {
  using Acc = calc_t<T>;
  O* out;
  __device__ Acc init() const {
    using L = std::numeric_limits<Acc>;
    if constexpr (L::has_infinity)
      return Max ? -L::infinity() : L::infinity();
    else
      return Max ? L::lowest() : L::max();
  }
  __device__ Acc step(Acc a, Acc x, int64_t, double) const {
    Acc m = (Max ? x > a : x < a) ? x : a;
    return is_nan(x) ? x : m;
  }
  __device__ Acc merge(Acc a, Acc b) const { return step(a, b, 0, 0.0); }
  __device__ void put(int64_t o, Acc a, double) const { out[o] = store<O>(a); }
};

template <class C>
struct ValIdx {
  C v;
  int64_t i;
};

// (value, first index) of the max/min; a NaN beats any number and the first NaN wins. The
// order (NaN, value, then lower index) is total, so any merge order gives the CPU's answer.
template <class T, bool Max>
struct ArgR {
  using C = calc_t<T>;
  using Acc = ValIdx<C>;
  T* values;  // null for argmax/argmin
  int64_t* index;
  __device__ static bool better(C x, C a) {
    return (Max ? x > a : x < a) || (is_nan(x) && !is_nan(a));
  }
  __device__ Acc init() const { return {C(0), -1}; }
  __device__ Acc step(Acc a, C x, int64_t k, double) const {
    return a.i < 0 || better(x, a.v) ? Acc{x, k} : a;
  }
  __device__ Acc merge(Acc a, Acc b) const {
    if (a.i < 0 || better(b.v, a.v)) return b.i < 0 ? a : b;
    if (b.i < 0 || better(a.v, b.v)) return a;
    return a.i <= b.i ? a : b;
  }
  __device__ void put(int64_t o, Acc a, double) const {
    if (values) values[o] = store<T>(a.v);
    index[o] = a.i;
  }
};

// ---- kernels ----
// Group `threadIdx.x / lanes` of each block reduces output o; the loop over outputs is uniform
// across the block, so the tree's __syncthreads are reached by every thread.
template <class T, bool HasP, class R>
__global__ void reduce_kernel(R r, const T* x, Geo g, const double* p, int lanes) {
  using A = typename R::Acc;
  __shared__ A sh[kThreads];
  const int lane = threadIdx.x % lanes;
  const int64_t per_block = blockDim.x / lanes;
  for (int64_t base = blockIdx.x * per_block; base < g.outs; base += gridDim.x * per_block) {
    const int64_t o = base + threadIdx.x / lanes;
    const bool live = o < g.outs;
    const double po = HasP && live ? p[o] : 0.0;
    A a = r.init();
    if (live) {
      const T* xo = x + g.kept.offset(o);
      for (int64_t k = lane; k < g.n; k += lanes) a = r.step(a, load(xo + g.red.offset(k)), k, po);
    }
    a = group_reduce(a, sh, lanes, [&](A u, A v) { return r.merge(u, v); });
    if (live && lane == 0) r.put(o, a, po);
  }
}

// ---- launchers ----
template <class T, bool HasP = false, class R>
void launch(const R& r, const Tensor& x, const Geo& g, const char* name,
            const double* p = nullptr) {
  if (g.outs == 0) return;
  const int lanes = lanes_for(g.n);
  reduce_kernel<T, HasP>
      <<<grid_for(g.outs, kThreads / lanes), kThreads, 0, stream()>>>(r, cptr<T>(x), g, p, lanes);
  check_launch(name);
}

template <template <class, class> class R>
void sum_like_kernel(const OpCall& c, std::span<Tensor> outs) {
  Geo g = geo_of(c);
  const Tensor& x = c.inputs[0];
  TERRA_DISPATCH_ALL(x.dtype(), op_name(c.op), {
    using O = sum_out_t<T>;
    launch<T>(R<T, O>{mptr<O>(outs[0])}, x, g, op_name(c.op));
  });
}

inline void mean_kernel(const OpCall& c, std::span<Tensor> outs) {
  Geo g = geo_of(c);
  const Tensor& x = c.inputs[0];
  TERRA_REDUCE_DISPATCH_FLOAT(x.dtype(), "mean", {
    launch<T>(MeanR<T, T>{{mptr<T>(outs[0])}, double(g.n)}, x, g, "mean");
  });
}

// Two passes (mean, then squared deviations), as the CPU: exact where one pass cancels.
inline void var_kernel(const OpCall& c, std::span<Tensor> outs) {
  Geo g = geo_of(c);
  const Tensor& x = c.inputs[0];
  if (g.outs == 0) return;
  const double dof = std::max(0.0, double(g.n) - c.attrs.scalars[0]);
  Tensor mu = cuda::empty({g.outs}, DType::Float64, x.device());
  TERRA_REDUCE_DISPATCH_FLOAT(x.dtype(), "var", {
    launch<T>(MeanR<T, double>{{ptr<double>(mu)}, double(g.n)}, x, g, "var");
    launch<T, true>(SqDevR<T>{{mptr<T>(outs[0])}, dof}, x, g, "var", ptr<double>(mu));
  });
}

inline void logsumexp_kernel(const OpCall& c, std::span<Tensor> outs) {
  Geo g = geo_of(c);
  const Tensor& x = c.inputs[0];
  if (g.outs == 0) return;
  Tensor mx = cuda::empty({g.outs}, DType::Float64, x.device());
  TERRA_REDUCE_DISPATCH_FLOAT(x.dtype(), "logsumexp", {
    launch<T>(ExtremeR<T, double, true>{ptr<double>(mx)}, x, g, "logsumexp");
    launch<T, true>(ExpSumR<T>{{mptr<T>(outs[0])}}, x, g, "logsumexp", ptr<double>(mx));
  });
}

template <bool Max>
void extreme_kernel(const OpCall& c, std::span<Tensor> outs) {
  Geo g = geo_of(c);
  const Tensor& x = c.inputs[0];
  TERRA_DISPATCH_ALL(x.dtype(), op_name(c.op),
                     { launch<T>(ExtremeR<T, T, Max>{mptr<T>(outs[0])}, x, g, op_name(c.op)); });
}

// max/min (values and indices) and argmax/argmin (indices only).
template <bool Max, bool Values>
void arg_kernel(const OpCall& c, std::span<Tensor> outs) {
  Geo g = geo_of(c);
  const Tensor& x = c.inputs[0];
  TERRA_DISPATCH_ALL(x.dtype(), op_name(c.op), {
    T* v = Values ? mptr<T>(outs[0]) : nullptr;
    launch<T>(ArgR<T, Max>{v, mptr<int64_t>(outs[Values ? 1 : 0])}, x, g, op_name(c.op));
  });
}

}  // namespace red

template <>
inline constexpr KernelFn cuda_kernel<op::Sum> = &red::sum_like_kernel<red::SumR>;
template <>
inline constexpr KernelFn cuda_kernel<op::Prod> = &red::sum_like_kernel<red::ProdR>;
template <>
inline constexpr KernelFn cuda_kernel<op::Mean> = &red::mean_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::Var> = &red::var_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::Logsumexp> = &red::logsumexp_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::Amax> = &red::extreme_kernel<true>;
template <>
inline constexpr KernelFn cuda_kernel<op::Amin> = &red::extreme_kernel<false>;
template <>
inline constexpr KernelFn cuda_kernel<op::MaxDim> = &red::arg_kernel<true, true>;
template <>
inline constexpr KernelFn cuda_kernel<op::MinDim> = &red::arg_kernel<false, true>;
template <>
inline constexpr KernelFn cuda_kernel<op::Argmax> = &red::arg_kernel<true, false>;
template <>
inline constexpr KernelFn cuda_kernel<op::Argmin> = &red::arg_kernel<false, false>;

}  // namespace terra::cuda
