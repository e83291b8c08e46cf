// terra/backend/cuda/batch_norm.cuh: batch_norm and batch_norm_backward on CUDA, one block per
// channel (statistics summed in double, then the channel normalized by the same block). Attrs,
// dtypes and outputs are those of backend/cpu/nn.hpp. nvcc only.
#pragma once

#include "terra/backend/cuda/linalg.cuh"
#include "terra/ops/nn.hpp"

namespace terra::cuda::bn {

using la::acc_t;
using la::cvt;

// x viewed as [nb, ch, sp] (contiguous); element j of channel k's nb * sp values.
__device__ __forceinline__ int64_t at(int64_t j, int64_t k, int64_t ch, int64_t sp) {
  return ((j / sp) * ch + k) * sp + j % sp;
}

struct BnArgs {
  int64_t nb, ch, sp;
  double momentum, eps;
  bool training, update;
  void *run_m, *run_v;  // updated in place (training), float32 or float64
  int64_t run_m_stride, run_v_stride;
  bool m_double, v_double;
  const double *eval_m, *eval_v;  // evaluation: the running stats as contiguous float64
};

__device__ __forceinline__ void update_running(void* p, int64_t stride, bool dbl, double value,
                                               double momentum) {
  if (dbl) {
    double& r = static_cast<double*>(p)[stride];
    r = (1.0 - momentum) * r + momentum * value;
  } else {
    float& r = static_cast<float*>(p)[stride];
    r = float((1.0 - momentum) * double(r) + momentum * value);
  }
}

// ---- kernels ----
// T: x's type; C: the compute type (float for 16-bit x) of weight, bias and the statistics.
template <class T, class C>
__global__ void batch_norm_kernel(const T* x, const C* w, const C* b, T* y, C* save_mean,
                                  C* save_inv, BnArgs a) {
  __shared__ double buf[kThreads];
  int64_t k = blockIdx.x, cnt = a.nb * a.sp;
  double mean = 0, var = 0;
  if (a.training && cnt > 0) {
    double s = 0, q = 0;
    for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) s += double(cvt<C>(x[at(j, k, a.ch, a.sp)]));
    mean = la::block_sum(s, buf) / double(cnt);
    for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) {
      double d = double(cvt<C>(x[at(j, k, a.ch, a.sp)])) - mean;
      q += d * d;
    }
    var = la::block_sum(q, buf) / double(cnt);
  } else if (!a.training) {
    mean = a.eval_m[k], var = a.eval_v[k];
  }
  double inv = 1.0 / ::sqrt(var + a.eps);
  if (threadIdx.x == 0) {
    save_mean[k] = C(mean);
    save_inv[k] = C(inv);
    if (a.update) {
      update_running(a.run_m, k * a.run_m_stride, a.m_double, mean, a.momentum);
      update_running(a.run_v, k * a.run_v_stride, a.v_double, var * cnt / (cnt - 1.0), a.momentum);
    }
  }
  const C scale = C(inv * (w ? double(w[k]) : 1.0));
  const C shift = C((b ? double(b[k]) : 0.0) - mean * double(scale));
  for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) {
    int64_t i = at(j, k, a.ch, a.sp);
    y[i] = cvt<T>(cvt<C>(x[i]) * scale + shift);
  }
}

// PyTorch's form: gx = (gy - mean(gy) - (x - mean) * proj) * invstd * w.
template <class T>
__global__ void batch_norm_backward_kernel(const T* gy, const T* x, const T* w, const T* mean,
                                           const T* inv, T* gx, T* gw, T* gb, int64_t nb,
                                           int64_t ch, int64_t sp) {
  __shared__ double buf[kThreads];
  int64_t k = blockIdx.x, cnt = nb * sp;
  const T m = mean[k];
  double s1 = 0, s2 = 0;
  for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) {
    int64_t i = at(j, k, ch, sp);
    s1 += double(gy[i]);
    s2 += double(gy[i] * (x[i] - m));
  }
  s1 = la::block_sum(s1, buf);
  s2 = la::block_sum(s2, buf);
  const double is = double(inv[k]), n = double(cnt);
  if (threadIdx.x == 0) {
    if (gb) gb[k] = T(s1);
    if (gw) gw[k] = T(s2 * is);
  }
  if (!gx) return;
  const T mdy = T(s1 / n), proj = T(s2 * is * is / n);
  const T scale = T(is * (w ? double(w[k]) : 1.0));
  for (int64_t j = threadIdx.x; j < cnt; j += blockDim.x) {
    int64_t i = at(j, k, ch, sp);
    gx[i] = (gy[i] - mdy - (x[i] - m) * proj) * scale;
  }
}

// ---- launchers ----
inline const void* ptr_or_null(const Tensor& t) { return t.defined() ? t.device_data() : nullptr; }

inline void batch_norm_kernel_launch(const OpCall& c, std::span<Tensor> outs) {
  const char* op = "batch_norm";
  const auto& fl = c.attrs.ints;
  const Tensor& x0 = c.inputs[0];
  DType dt = x0.dtype(), cdt = op::stats_dtype(dt);
  Tensor x = la::dense(x0, dt, op);
  BnArgs a{};
  a.nb = x.shape()[0], a.ch = x.shape()[1];
  a.sp = a.nb && a.ch ? x.numel() / (a.nb * a.ch) : 0;
  a.momentum = c.attrs.scalars[0], a.eps = c.attrs.scalars[1];
  a.training = fl[4] != 0;
  size_t i = 1;
  // weight and bias in the compute dtype (the CPU casts them to its compute dtype too)
  Tensor w = fl[0] ? la::dense(c.inputs[i++], cdt, op) : Tensor();
  Tensor b = fl[1] ? la::dense(c.inputs[i++], cdt, op) : Tensor();
  Tensor run_m = fl[2] ? c.inputs[i++] : Tensor(), run_v = fl[3] ? c.inputs[i++] : Tensor();
  a.update = a.training && run_m.defined() && a.nb * a.sp > 0;
  Tensor eval_m, eval_v;
  if (a.update) {
    a.run_m = run_m.device_data(), a.run_v = run_v.device_data();
    a.run_m_stride = run_m.strides()[0], a.run_v_stride = run_v.strides()[0];
    a.m_double = run_m.dtype() == DType::Float64, a.v_double = run_v.dtype() == DType::Float64;
  }
  if (!a.training) {
    eval_m = la::dense(run_m, DType::Float64, op), eval_v = la::dense(run_v, DType::Float64, op);
    a.eval_m = ptr<const double>(eval_m), a.eval_v = ptr<const double>(eval_v);
  }
  if (a.ch == 0) return;
  la::dispatch_float(dt, op, [&]<class T>() {
    using C = acc_t<T>;
    batch_norm_kernel<T, C><<<unsigned(a.ch), kThreads, 0, stream()>>>(
        ptr<const T>(x), static_cast<const C*>(ptr_or_null(w)),
        static_cast<const C*>(ptr_or_null(b)), ptr<T>(outs[0]), ptr<C>(outs[1]), ptr<C>(outs[2]),
        a);
  });
  check_launch(op);
  if (a.update) {
    run_m.storage()->version.fetch_add(1, std::memory_order_relaxed);
    run_v.storage()->version.fetch_add(1, std::memory_order_relaxed);
  }
}

inline void batch_norm_backward_launch(const OpCall& c, std::span<Tensor> outs) {
  const char* op = "batch_norm_backward";
  const auto& v = c.attrs.ints;
  DType dt = c.inputs[1].dtype();
  bool has_w = v[0] != 0;
  Tensor gy = la::dense(c.inputs[0], dt, op), x = la::dense(c.inputs[1], dt, op);
  Tensor w = has_w ? la::dense(c.inputs[2], dt, op) : Tensor();
  Tensor mean = la::dense(c.inputs[2 + has_w], dt, op);
  Tensor inv = la::dense(c.inputs[3 + has_w], dt, op);
  int64_t nb = x.shape()[0], ch = x.shape()[1], sp = nb && ch ? x.numel() / (nb * ch) : 0;
  size_t k = 0;
  auto next = [&](bool want) { return want ? outs[k++].device_data() : nullptr; };
  void* gx = next(v[1]);
  void* gw = next(v[2]);
  void* gb = next(v[3]);
  if (ch == 0) return;
  la::dispatch_float(dt, op, [&]<class T>() {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
      batch_norm_backward_kernel<T><<<unsigned(ch), kThreads, 0, stream()>>>(
          ptr<const T>(gy), ptr<const T>(x), static_cast<const T*>(ptr_or_null(w)),
          ptr<const T>(mean), ptr<const T>(inv), static_cast<T*>(gx), static_cast<T*>(gw),
          static_cast<T*>(gb), nb, ch, sp);
  });
  check_launch(op);
}

}  // namespace terra::cuda::bn

namespace terra::cuda {
template <>
inline constexpr KernelFn cuda_kernel<op::BatchNorm> = &bn::batch_norm_kernel_launch;
template <>
inline constexpr KernelFn cuda_kernel<op::BatchNormBackward> = &bn::batch_norm_backward_launch;
}  // namespace terra::cuda
