// terra/backend/cuda/shape.cuh: CUDA kernels of the movement ops that copy (cat), and the
// strided copy with dtype conversion that cat and the indexing kernels share. nvcc only.
#pragma once

#include <type_traits>

#include "terra/backend/cuda/common.cuh"

namespace terra::cuda {

namespace sh {

// Grid-stride loops: grid_for caps the grid, so one thread may see several elements.
__device__ inline int64_t first_thread() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t thread_count() { return int64_t(gridDim.x) * blockDim.x; }

// Same-dtype copies move bits, never values (a float16 NaN keeps its payload, as in the
// CPU's memcpy path): f(U{}) with U the unsigned type of `size` bytes.
template <class F>
void by_size(size_t size, const char* op, F&& f) {
  switch (size) {
    case 1:
      return f(uint8_t{});
    case 2:
      return f(uint16_t{});
    case 4:
      return f(uint32_t{});
    case 8:
      return f(uint64_t{});
    default:
      terra::detail::fail(op, "unsupported element size ", size);
  }
}

// The CPU's conversion rule (cpu::convert in backend/cpu/elementwise.hpp, which this unit may
// not see): bool is "!= 0" read as float, float16/bfloat16 go through float.
template <class To, class From>
__device__ To convert(From v) {
  if constexpr (std::is_same_v<To, bool>)
    return static_cast<float>(v) != 0.0f;
  else if constexpr (std::is_same_v<To, Half> || std::is_same_v<To, BFloat16>)
    return To(float(v));
  else if constexpr (std::is_same_v<From, Half> || std::is_same_v<From, BFloat16>)
    return To(float(v));
  else
    return static_cast<To>(v);
}

// A view of t narrowed along dim (kernel-internal, no dispatch).
inline Tensor narrow_view(const Tensor& t, int64_t dim, int64_t start, int64_t len) {
  Shape s = t.shape();
  s[size_t(dim)] = len;
  return Tensor::from_storage(t.storage(), s, t.strides(),
                              t.storage_offset() + start * t.strides()[size_t(dim)], t.dtype());
}

// ---- kernels ----
template <class U>
__global__ void copy_bits_kernel(U* dst, Indexer di, const U* src, Indexer si, int64_t n) {
  for (int64_t i = first_thread(); i < n; i += thread_count())
    dst[di.offset(i)] = src[si.offset(i)];
}

template <class To, class From>
__global__ void convert_kernel(To* dst, Indexer di, const From* src, Indexer si, int64_t n) {
  for (int64_t i = first_thread(); i < n; i += thread_count())
    dst[di.offset(i)] = convert<To, From>(src[si.offset(i)]);
}

}  // namespace sh

// ---- launchers ----
// dst = src broadcast to dst's shape, converting dtypes; both may be strided views.
inline void copy_convert(const Tensor& src, const Tensor& dst, const char* op) {
  int64_t n = dst.numel();
  if (n == 0) return;
  Indexer di = indexer(dst, dst.shape()), si = indexer(src, dst.shape());
  if (src.dtype() == dst.dtype()) {
    sh::by_size(dst.element_size(), op, [&](auto tag) {
      using U = decltype(tag);
      sh::copy_bits_kernel<U>
          <<<grid_for(n), kThreads, 0, stream()>>>(ptr<U>(dst), di, ptr<U>(src), si, n);
    });
  } else {
    TERRA_DISPATCH_ALL(dst.dtype(), op, {
      using To = T;
      TERRA_DISPATCH_ALL(src.dtype(), op, {
        sh::convert_kernel<To, T>
            <<<grid_for(n), kThreads, 0, stream()>>>(ptr<To>(dst), di, ptr<T>(src), si, n);
      });
    });
  }
  check_launch(op);
}

// ---- cat: each input copied (and converted to the promoted dtype) into its slab of out ----
inline void cat_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& out = outs[0];
  int64_t d = wrap_dim(c.attrs.ints[0], out.dim(), "cat");
  int64_t at = 0;
  for (const Tensor& x : c.inputs) {
    int64_t n = x.shape()[d];
    if (n) copy_convert(x, sh::narrow_view(out, d, at, n), "cat");
    at += n;
  }
}
template <>
inline constexpr KernelFn cuda_kernel<op::Cat> = &cat_kernel;

}  // namespace terra::cuda
