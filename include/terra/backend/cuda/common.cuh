// terra/backend/cuda/common.cuh: what every CUDA kernel family uses: the registry template,
// launch geometry, the current stream, kernel-internal device tensors, and index math for
// strided tensors. nvcc only.
#pragma once

#include <cuda_runtime.h>

#include "terra/backend/cuda/allocator.hpp"
#include "terra/ops/op.hpp"

namespace terra::cuda {

// A family header specializes cuda_kernel<op::Type> for the ops it implements; an op with no
// specialization reports "[terra::name] not implemented on cuda:0" from the dispatcher.
template <class OpT>
inline constexpr KernelFn cuda_kernel = nullptr;

// The stream of the current device (the registration wrapper has made the op's device current).
inline cudaStream_t stream() { return current_stream(); }

// Whether stream() is recording a CUDA graph (exec::CpuExecutor with EngineOptions::cuda_graphs)
// instead of running: it cannot be waited on then, so host-side checks that read device values
// back are skipped (the kernels themselves never access memory through a bad index).
inline bool capturing() {
  cudaStreamCaptureStatus s = cudaStreamCaptureStatusNone;
  TERRA_CUDA_CHECK(cudaStreamIsCapturing(stream(), &s));
  return s != cudaStreamCaptureStatusNone;
}

inline constexpr int kThreads = 256;
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  return unsigned(std::min<int64_t>(std::max<int64_t>(b, 1), int64_t(1) << 30));
}

// Throws terra::Error naming the op when the last launch failed.
inline void check_launch(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (TERRA_UNLIKELY(e != cudaSuccess))
    terra::detail::fail(op, "CUDA kernel launch failed: ", cudaGetErrorName(e), " (",
                        cudaGetErrorString(e), ")");
}

// Internal tensors of kernels (never through dispatch), on the device of `like`.
inline Tensor empty(const Shape& s, DType dt, Device d) { return Tensor::empty(s, dt, d); }

// Up to kMaxDims sizes and strides (in elements) passed by value to kernels: the offset of the
// i-th element (row-major over `sizes`) of a strided tensor.
inline constexpr int kMaxDims = 8;
struct Indexer {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};
  __host__ __device__ int64_t offset(int64_t i) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t q = i / sizes[d];
      off += (i - q * sizes[d]) * strides[d];
      i = q;
    }
    return off;
  }
};
// t viewed with `shape` (broadcast: size-1 or missing leading dims get stride 0).
inline Indexer indexer(const Tensor& t, const Shape& shape) {
  Indexer ix;
  int r = int(shape.size()), tr = int(t.dim());
  TERRA_CHECK(r <= kMaxDims, "cuda", "tensors of rank ", r, " exceed the CUDA kernels' limit of ",
              kMaxDims, " dims");
  ix.ndim = r;
  for (int d = 0; d < r; ++d) {
    int td = d - (r - tr);
    ix.sizes[d] = shape[size_t(d)];
    ix.strides[d] = (td < 0 || t.shape()[size_t(td)] == 1) ? 0 : t.strides()[size_t(td)];
  }
  return ix;
}

// K strided tensors walked together over one shape (row-major): one pass of divisions gives
// every tensor's element offset (the elementwise and indexing kernels' strided paths).
template <int K>
struct MultiIndexer {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[K][kMaxDims] = {};
  __host__ __device__ void offsets(int64_t i, int64_t (&off)[K]) const {
    for (int k = 0; k < K; ++k) off[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t q = i / sizes[d], r = i - q * sizes[d];
      for (int k = 0; k < K; ++k) off[k] += r * strides[k][d];
      i = q;
    }
  }
};

template <class T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.device_data());
}

}  // namespace terra::cuda
