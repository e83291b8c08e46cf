// terra/backend/cuda/conv_cudnn.cuh: conv2d and conv2d_backward through cuDNN's convolution API
// (included by conv.cuh only when the build has cuDNN). Inputs are made contiguous NCHW in the
// output dtype first; the bias and its gradient are plain kernels. nvcc only.
//
// Math: float64 in float64; float16/bfloat16 on tensor cores with float32 accumulation; float32
// only with FMA kernels (no TF32) unless cuda::set_allow_tf32(true).
#pragma once

#include <cudnn.h>

#include "terra/backend/cpu/conv.hpp"
#include "terra/backend/cuda/linalg.cuh"

namespace terra::cuda::cv {

using cpu::ConvGeom;

inline void check_dnn(cudnnStatus_t s, const char* op, const char* what) {
  if (TERRA_UNLIKELY(s != CUDNN_STATUS_SUCCESS))
    terra::detail::fail(op, "cuDNN ", what, " failed: ", cudnnGetErrorString(s));
}
#define TERRA_DNN(op, expr) ::terra::cuda::cv::check_dnn((expr), op, #expr)

inline cudnnHandle_t dnn_handle(const char* op) {
  return la::thread_handle<cudnnHandle_t>([op] {
    cudnnHandle_t h = nullptr;
    TERRA_DNN(op, cudnnCreate(&h));
    return h;
  });
}

// ---- descriptors (destroyed on every path, errors included) ----
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  explicit TensorDesc(const char* op) { TERRA_DNN(op, cudnnCreateTensorDescriptor(&d)); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};
struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  explicit FilterDesc(const char* op) { TERRA_DNN(op, cudnnCreateFilterDescriptor(&d)); }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  explicit ConvDesc(const char* op) { TERRA_DNN(op, cudnnCreateConvolutionDescriptor(&d)); }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// x, w, y (or dy) and the convolution of one call.
struct ConvSetup {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  DType dt;
  const char* op;
  cudnnHandle_t h;
  ConvSetup(const char* op_, DType dt_) : x(op_), y(op_), w(op_), conv(op_), dt(dt_), op(op_) {
    h = dnn_handle(op);
    TERRA_DNN(op, cudnnSetStream(h, stream()));
  }
};

inline cudnnDataType_t dnn_type(DType dt) {
  switch (dt) {
    case DType::Float16: return CUDNN_DATA_HALF;
    case DType::BFloat16: return CUDNN_DATA_BFLOAT16;
    case DType::Float64: return CUDNN_DATA_DOUBLE;
    default: return CUDNN_DATA_FLOAT;
  }
}
// On Ampere and later CUDNN_DEFAULT_MATH lets float32 use TF32; FMA math keeps it out.
inline cudnnMathType_t dnn_math(DType dt) {
  if (dt == DType::Float32) return allow_tf32() ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
  return is_reduced_float(dt) ? CUDNN_TENSOR_OP_MATH : CUDNN_DEFAULT_MATH;
}
inline bool math_allowed(DType dt, cudnnMathType_t m) {
  return dt != DType::Float32 || allow_tf32() || m == CUDNN_FMA_MATH;
}

inline int as_int(int64_t v, const char* op) {
  TERRA_CHECK(v <= INT_MAX, op, "size ", v, " exceeds cuDNN's int range");
  return int(v);
}

inline void describe(ConvSetup& s, const ConvGeom& g) {
  const char* op = s.op;
  cudnnDataType_t ty = dnn_type(s.dt);
  TERRA_DNN(op, cudnnSetTensor4dDescriptor(s.x.d, CUDNN_TENSOR_NCHW, ty, as_int(g.n, op),
                                           as_int(g.c, op), as_int(g.h, op), as_int(g.w, op)));
  TERRA_DNN(op, cudnnSetFilter4dDescriptor(s.w.d, ty, CUDNN_TENSOR_NCHW, as_int(g.o, op),
                                           as_int(g.cg(), op), as_int(g.kh, op),
                                           as_int(g.kw, op)));
  cudnnDataType_t compute = s.dt == DType::Float64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  TERRA_DNN(op, cudnnSetConvolution2dDescriptor(
                    s.conv.d, as_int(g.ph, op), as_int(g.pw, op), as_int(g.sh, op),
                    as_int(g.sw, op), as_int(g.dh, op), as_int(g.dw, op),
                    CUDNN_CROSS_CORRELATION, compute));
  TERRA_DNN(op, cudnnSetConvolutionGroupCount(s.conv.d, as_int(g.groups, op)));
  TERRA_DNN(op, cudnnSetConvolutionMathType(s.conv.d, dnn_math(s.dt)));
  int n = 0, c = 0, h = 0, w = 0;
  TERRA_DNN(op, cudnnGetConvolution2dForwardOutputDim(s.conv.d, s.x.d, s.w.d, &n, &c, &h, &w));
  TERRA_CHECK(n == g.n && c == g.o && h == g.oh && w == g.ow, op, "cuDNN's output shape [", n,
              ", ", c, ", ", h, ", ", w, "] differs from [", g.n, ", ", g.o, ", ", g.oh, ", ",
              g.ow, "]");
  TERRA_DNN(op, cudnnSetTensor4dDescriptor(s.y.d, CUDNN_TENSOR_NCHW, ty, n, c, h, w));
}

// The fastest algorithm cuDNN's heuristics offer whose math is allowed (see dnn_math) and whose
// workspace stays under 1 GiB; the descriptor's math type is set to the one the algorithm was
// ranked with. The fallback is a plain implicit-GEMM algorithm.
template <class Perf, class Algo>
Algo pick(ConvSetup& s, const Perf* perf, int count, Algo fallback) {
  constexpr size_t kMaxWorkspace = size_t(1) << 30;
  cudnnMathType_t math = dnn_math(s.dt);
  Algo algo = fallback;
  for (int i = 0; i < count; ++i) {
    if (perf[i].status == CUDNN_STATUS_SUCCESS && math_allowed(s.dt, perf[i].mathType) &&
        perf[i].memory <= kMaxWorkspace) {
      algo = perf[i].algo, math = perf[i].mathType;
      break;
    }
  }
  TERRA_DNN(s.op, cudnnSetConvolutionMathType(s.conv.d, math));
  return algo;
}

// alpha = 1, beta = 0 in the scaling type cuDNN expects (double for double data).
struct Scale {
  float f1 = 1.0f, f0 = 0.0f;
  double d1 = 1.0, d0 = 0.0;
  bool dbl;
  explicit Scale(DType dt) : dbl(dt == DType::Float64) {}
  const void* one() const { return dbl ? static_cast<const void*>(&d1) : &f1; }
  const void* zero() const { return dbl ? static_cast<const void*>(&d0) : &f0; }
};

// ---- kernels ----
// y[n, o, pixel] += b[o] (rounded once to T from the accumulation type).
template <class T>
__global__ void add_bias_kernel(T* y, const T* b, int64_t channels, int64_t np, int64_t total) {
  using A = acc_t<T>;
  TERRA_LA_LOOP(i, total) y[i] = cvt<T>(cvt<A>(y[i]) + cvt<A>(b[(i / np) % channels]));
}

// db[o] = sum of dy[n, o, :] over n: one block per channel.
template <class T>
__global__ void bias_grad_kernel(const T* dy, T* db, int64_t channels, int64_t np, int64_t n) {
  using A = acc_t<T>;
  __shared__ A buf[kThreads];
  int64_t o = blockIdx.x;
  A acc = 0;
  for (int64_t j = threadIdx.x; j < n * np; j += blockDim.x)
    acc += cvt<A>(dy[((j / np) * channels + o) * np + j % np]);
  A total = la::block_sum(acc, buf);
  if (threadIdx.x == 0) db[o] = cvt<T>(total);
}

// ---- launchers ----
inline void conv2d_kernel(const OpCall& c, std::span<Tensor> outs) {
  const char* op = "conv2d";
  Tensor& out = outs[0];
  DType dt = out.dtype();
  TERRA_CHECK(is_floating(dt), op, "on cuda supports floating dtypes only, got ", dt);
  if (out.numel() == 0) return;
  Tensor x = la::dense(c.inputs[0], dt, op), w = la::dense(c.inputs[1], dt, op);
  ConvGeom g = cpu::conv_geom(x, w, c.attrs.ints.data(), out);
  ConvSetup s(op, dt);
  describe(s, g);
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int got = 0;
  TERRA_DNN(op, cudnnGetConvolutionForwardAlgorithm_v7(s.h, s.x.d, s.w.d, s.conv.d, s.y.d,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got,
                                                       perf));
  auto algo = pick(s, perf, got, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
  size_t bytes = 0;
  TERRA_DNN(op, cudnnGetConvolutionForwardWorkspaceSize(s.h, s.x.d, s.w.d, s.conv.d, s.y.d, algo,
                                                        &bytes));
  Tensor ws = la::workspace(bytes, out.device());
  Scale sc(dt);
  TERRA_DNN(op, cudnnConvolutionForward(s.h, sc.one(), s.x.d, x.device_data(), s.w.d,
                                        w.device_data(), s.conv.d, algo, ws.device_data(), bytes,
                                        sc.zero(), s.y.d, out.device_data()));
  if (c.inputs.size() < 3) return;
  Tensor b = la::dense(c.inputs[2], dt, op);
  int64_t n = out.numel();
  la::dispatch_float(dt, op, [&]<class T>() {
    add_bias_kernel<T><<<grid_for(n), kThreads, 0, stream()>>>(ptr<T>(out), ptr<const T>(b), g.o,
                                                               g.opix(), n);
  });
  check_launch(op);
}

inline void conv_grad_input(ConvSetup& s, const Tensor& dy, const Tensor& w, Tensor& dx) {
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  int got = 0;
  TERRA_DNN(s.op, cudnnGetConvolutionBackwardDataAlgorithm_v7(
                      s.h, s.w.d, s.y.d, s.conv.d, s.x.d, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                      &got, perf));
  auto algo = pick(s, perf, got, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1);
  size_t bytes = 0;
  TERRA_DNN(s.op, cudnnGetConvolutionBackwardDataWorkspaceSize(s.h, s.w.d, s.y.d, s.conv.d,
                                                               s.x.d, algo, &bytes));
  Tensor ws = la::workspace(bytes, dx.device());
  Scale sc(s.dt);
  TERRA_DNN(s.op, cudnnConvolutionBackwardData(s.h, sc.one(), s.w.d, w.device_data(), s.y.d,
                                               dy.device_data(), s.conv.d, algo,
                                               ws.device_data(), bytes, sc.zero(), s.x.d,
                                               dx.device_data()));
}

inline void conv_grad_weight(ConvSetup& s, const Tensor& dy, const Tensor& x, Tensor& dw) {
  cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  int got = 0;
  TERRA_DNN(s.op, cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                      s.h, s.x.d, s.y.d, s.conv.d, s.w.d,
                      CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf));
  auto algo = pick(s, perf, got, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1);
  size_t bytes = 0;
  TERRA_DNN(s.op, cudnnGetConvolutionBackwardFilterWorkspaceSize(s.h, s.x.d, s.y.d, s.conv.d,
                                                                 s.w.d, algo, &bytes));
  Tensor ws = la::workspace(bytes, dw.device());
  Scale sc(s.dt);
  TERRA_DNN(s.op, cudnnConvolutionBackwardFilter(s.h, sc.one(), s.x.d, x.device_data(), s.y.d,
                                                 dy.device_data(), s.conv.d, algo,
                                                 ws.device_data(), bytes, sc.zero(), s.w.d,
                                                 dw.device_data()));
}

// outs: the gradients attrs.ints[7..9] select, in the order input, weight, bias.
inline void conv2d_backward_kernel(const OpCall& c, std::span<Tensor> outs) {
  const char* op = "conv2d_backward";
  const auto& v = c.attrs.ints;
  const op::Conv2dGrads grads = op::conv2d_grads(c.attrs, outs);
  Tensor *gx = grads.input, *gw = grads.weight, *gb = grads.bias;
  DType dt = outs[0].dtype();
  Tensor dy = la::dense(c.inputs[0], dt, op), x = la::dense(c.inputs[1], dt, op);
  Tensor w = la::dense(c.inputs[2], dt, op);
  ConvGeom g = cpu::conv_geom(x, w, v.data(), dy);
  if (gb) {
    la::dispatch_float(dt, op, [&]<class T>() {
      bias_grad_kernel<T><<<unsigned(g.o), kThreads, 0, stream()>>>(ptr<const T>(dy),
                                                                    ptr<T>(*gb), g.o,
                                                                    g.opix(), g.n);
    });
    check_launch(op);
  }
  if (g.n == 0) {  // no images: cuDNN takes no empty batch; the weight gradient is 0
    if (gw) la::zero(*gw);
    return;
  }
  if (!gx && !gw) return;
  ConvSetup s(op, dt);
  describe(s, g);
  if (gx) conv_grad_input(s, dy, w, *gx);
  if (gw) conv_grad_weight(s, dy, x, *gw);
}

}  // namespace terra::cuda::cv

namespace terra::cuda {
template <>
inline constexpr KernelFn cuda_kernel<op::Conv2d> = &cv::conv2d_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::Conv2dBackward> = &cv::conv2d_backward_kernel;
}  // namespace terra::cuda
