// terra/backend/cuda/shape.cuh: the CUDA kernel of cat (each input copied, with the CPU's dtype
// conversion, by elementwise.cuh's copy_into), and grid-stride helpers the indexing kernels
// share. nvcc only.
#pragma once

#include <type_traits>

#include "terra/backend/cpu/shape.hpp"  // cpu::narrow_view (no kernel runs)
#include "terra/backend/cuda/common.cuh"
#include "terra/backend/cuda/elementwise.cuh"  // copy_into

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

}  // namespace sh

// ---- cat: each input copied (and converted to the promoted dtype) into its slab of out ----
inline void cat_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& out = outs[0];
  int64_t d = wrap_dim(c.attrs.ints[0], out.dim(), "cat");
  int64_t at = 0;
  for (const Tensor& x : c.inputs) {
    int64_t n = x.shape()[d];
    if (n) copy_into(x, cpu::narrow_view(out, d, at, n));
    at += n;
  }
}
template <>
inline constexpr KernelFn cuda_kernel<op::Cat> = &cat_kernel;

}  // namespace terra::cuda
