// terra/backend/cpu/factory.hpp: CPU kernels of the factory ops.
#pragma once

#include "terra/backend/cpu/elementwise.hpp"
#include "terra/backend/factory_values.hpp"
#include "terra/ops/factory.hpp"

namespace terra::cpu {

// out[i] = f(i) over a contiguous output, in parallel.
template <class F>
void generate(const Tensor& out, int64_t cost, const F& f) {
  TERRA_DISPATCH_COMPUTE(out.dtype(), "generate", {
    T* p = out.data<T>();
    parallel_for(out.numel(), cost, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) p[i] = convert<T>(f(i));
    });
  });
}

// Element values from backend/factory_values.hpp (shared with the CUDA kernels).
inline void full_kernel(const OpCall& c, std::span<Tensor> outs) {
  generate(outs[0], 1, gen::Full{c.attrs.scalars[0]});
}
inline void arange_kernel(const OpCall& c, std::span<Tensor> outs) {
  generate(outs[0], 1, gen::Arange{c.attrs.scalars[0], c.attrs.scalars[2]});
}
inline void linspace_kernel(const OpCall& c, std::span<Tensor> outs) {
  double a = c.attrs.scalars[0], b = c.attrs.scalars[1];
  int64_t n = c.attrs.ints[0];
  double step = n > 1 ? (b - a) / double(n - 1) : 0.0;
  generate(outs[0], 1, gen::Linspace{a, b, step, n});
}
inline void eye_kernel(const OpCall& c, std::span<Tensor> outs) {
  generate(outs[0], 1, gen::Eye{c.attrs.ints[1]});
}
inline void rand_kernel(const OpCall& c, std::span<Tensor> outs) {
  uint64_t seed = c.attrs.seed, off = c.attrs.offset;
  if (outs[0].dtype() == DType::Float64) generate(outs[0], 16, gen::Uniform<double>{seed, off});
  else generate(outs[0], 16, gen::Uniform<float>{seed, off});
}
inline void randn_kernel(const OpCall& c, std::span<Tensor> outs) {
  uint64_t seed = c.attrs.seed, off = c.attrs.offset;
  if (outs[0].dtype() == DType::Float64) generate(outs[0], 32, gen::Normal<double>{seed, off});
  else generate(outs[0], 32, gen::Normal<float>{seed, off});
}
inline void randint_kernel(const OpCall& c, std::span<Tensor> outs) {
  int64_t low = c.attrs.ints[0];
  uint64_t range = uint64_t(c.attrs.ints[1] - low);
  generate(outs[0], 16, gen::Randint{c.attrs.seed, c.attrs.offset, range, low});
}

template <> inline constexpr KernelFn cpu_kernel<op::Full> = &full_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Arange> = &arange_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Linspace> = &linspace_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Eye> = &eye_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Rand> = &rand_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Randn> = &randn_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Randint> = &randint_kernel;

}  // namespace terra::cpu
