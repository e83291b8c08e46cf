// terra/backend/cuda/factory.cuh: CUDA kernels of the factory ops. Element i gets the value of
// the functor the CPU kernel uses too (backend/factory_values.hpp), converted into the output
// dtype as the CPU converts it. nvcc only.
#pragma once

#include "terra/backend/cuda/elementwise.cuh"
#include "terra/backend/factory_values.hpp"
#include "terra/ops/factory.hpp"

namespace terra::cuda {

// ---- kernels ----
template <class T, class G>
__global__ void generate_kernel(T* out, int64_t n, G g) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    out[i] = cpu::convert<T>(g(i));
}

// ---- launchers ----
// out[i] = g(i) converted to out's dtype (a 16-bit output straight from g's value, which is
// what the CPU's float32 temporary and its rounding copy give).
template <class G>
void generate(const char* name, const Tensor& out, const G& g) {
  const int64_t n = out.numel();
  if (n == 0) return;
  Tensor y = out.is_contiguous() ? out : cuda::empty(out.shape(), out.dtype(), out.device());
  TERRA_DISPATCH_ALL(out.dtype(), name, {
    generate_kernel<<<grid_for(n), kThreads, 0, stream()>>>(ptr<T>(y), n, g);
  });
  check_launch(name);
  if (!y.is_same(out)) copy_into(y, out);
}

inline void full_kernel(const OpCall& c, std::span<Tensor> outs) {
  generate("full", outs[0], gen::Full{c.attrs.scalars[0]});
}
inline void arange_kernel(const OpCall& c, std::span<Tensor> outs) {
  generate("arange", outs[0], gen::Arange{c.attrs.scalars[0], c.attrs.scalars[2]});
}
inline void linspace_kernel(const OpCall& c, std::span<Tensor> outs) {
  double a = c.attrs.scalars[0], b = c.attrs.scalars[1];
  int64_t n = c.attrs.ints[0];
  double step = n > 1 ? (b - a) / double(n - 1) : 0.0;  // on the host, as the CPU
  generate("linspace", outs[0], gen::Linspace{a, b, step, n});
}
inline void eye_kernel(const OpCall& c, std::span<Tensor> outs) {
  generate("eye", outs[0], gen::Eye{c.attrs.ints[1]});
}
inline void rand_kernel(const OpCall& c, std::span<Tensor> outs) {
  uint64_t seed = c.attrs.seed, off = c.attrs.offset;
  if (outs[0].dtype() == DType::Float64) generate("rand", outs[0], gen::Uniform<double>{seed, off});
  else generate("rand", outs[0], gen::Uniform<float>{seed, off});
}
inline void randn_kernel(const OpCall& c, std::span<Tensor> outs) {
  uint64_t seed = c.attrs.seed, off = c.attrs.offset;
  if (outs[0].dtype() == DType::Float64) generate("randn", outs[0], gen::Normal<double>{seed, off});
  else generate("randn", outs[0], gen::Normal<float>{seed, off});
}
inline void randint_kernel(const OpCall& c, std::span<Tensor> outs) {
  int64_t low = c.attrs.ints[0];
  uint64_t range = uint64_t(c.attrs.ints[1] - low);
  generate("randint", outs[0], gen::Randint{c.attrs.seed, c.attrs.offset, range, low});
}

template <> inline constexpr KernelFn cuda_kernel<op::Full> = &full_kernel;
template <> inline constexpr KernelFn cuda_kernel<op::Arange> = &arange_kernel;
template <> inline constexpr KernelFn cuda_kernel<op::Linspace> = &linspace_kernel;
template <> inline constexpr KernelFn cuda_kernel<op::Eye> = &eye_kernel;
template <> inline constexpr KernelFn cuda_kernel<op::Rand> = &rand_kernel;
template <> inline constexpr KernelFn cuda_kernel<op::Randn> = &randn_kernel;
template <> inline constexpr KernelFn cuda_kernel<op::Randint> = &randint_kernel;

}  // namespace terra::cuda
