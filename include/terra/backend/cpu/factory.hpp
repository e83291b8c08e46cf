// terra/backend/cpu/factory.hpp: CPU kernels of the factory ops.
#pragma once

#include "terra/backend/cpu/elementwise.hpp"
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

inline void full_kernel(const OpCall& c, std::span<Tensor> outs) {
  double v = c.attrs.scalars[0];
  generate(outs[0], 1, [v](int64_t) { return v; });
}
inline void arange_kernel(const OpCall& c, std::span<Tensor> outs) {
  double start = c.attrs.scalars[0], step = c.attrs.scalars[2];
  generate(outs[0], 1, [=](int64_t i) { return start + double(i) * step; });
}
inline void linspace_kernel(const OpCall& c, std::span<Tensor> outs) {
  double a = c.attrs.scalars[0], b = c.attrs.scalars[1];
  int64_t n = c.attrs.ints[0];
  double step = n > 1 ? (b - a) / double(n - 1) : 0.0;
  // Symmetric from both ends, so the last point is exactly `end`.
  generate(outs[0], 1, [=](int64_t i) { return i < (n + 1) / 2 ? a + step * double(i) : b - step * double(n - 1 - i); });
}
inline void eye_kernel(const OpCall& c, std::span<Tensor> outs) {
  int64_t m = c.attrs.ints[1];
  generate(outs[0], 1, [m](int64_t i) { return (i / m) == (i % m) ? 1.0 : 0.0; });
}
inline void rand_kernel(const OpCall& c, std::span<Tensor> outs) {
  uint64_t seed = c.attrs.seed, off = c.attrs.offset;
  if (outs[0].dtype() == DType::Float64)
    generate(outs[0], 16, [=](int64_t i) { return PhiloxDraw::uniform_f64(seed, off + i); });
  else
    generate(outs[0], 16, [=](int64_t i) { return PhiloxDraw::uniform_f32(seed, off + i); });
}
inline void randn_kernel(const OpCall& c, std::span<Tensor> outs) {
  uint64_t seed = c.attrs.seed, off = c.attrs.offset;
  if (outs[0].dtype() == DType::Float64)
    generate(outs[0], 32, [=](int64_t i) { return PhiloxDraw::normal(seed, off + i); });
  else
    generate(outs[0], 32, [=](int64_t i) { return float(PhiloxDraw::normal(seed, off + i)); });
}
inline void randint_kernel(const OpCall& c, std::span<Tensor> outs) {
  uint64_t seed = c.attrs.seed, off = c.attrs.offset;
  int64_t low = c.attrs.ints[0];
  uint64_t range = uint64_t(c.attrs.ints[1] - low);
  generate(outs[0], 16, [=](int64_t i) {
    return low + int64_t(PhiloxDraw::bits64(seed, off + i) % range);
  });
}

template <> inline constexpr KernelFn cpu_kernel<op::Full> = &full_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Arange> = &arange_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Linspace> = &linspace_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Eye> = &eye_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Rand> = &rand_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Randn> = &randn_kernel;
template <> inline constexpr KernelFn cpu_kernel<op::Randint> = &randint_kernel;

}  // namespace terra::cpu
