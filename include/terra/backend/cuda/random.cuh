// terra/backend/cuda/random.cuh: CUDA kernels of the random ops (dropout). Every draw is
// terra's Philox (core/philox.hpp, host and device) at (seed, offset + element index), so a
// mask on the device is bit for bit the CPU's for the same generator state. nvcc only.
#pragma once

#include "terra/backend/cuda/shape.cuh"
#include "terra/core/philox.hpp"

namespace terra::cuda {

namespace rnd {

// ---- kernels ----
// T: the storage type; C: the CPU's compute type for it (float for float16/bfloat16/float32,
// double for float64), so y = T(C(x) * scale) rounds exactly as the CPU's upcast path does.
template <class T, class C>
__global__ void dropout_elems(T* y, bool* mask, const T* x, Indexer xi, int64_t n, bool train,
                              uint64_t seed, uint64_t offset, float pf, bool keep_any, C scale) {
  for (int64_t i = sh::first_thread(); i < n; i += sh::thread_count()) {
    C v = C(x[xi.offset(i)]);
    bool keep = !train || (keep_any && PhiloxDraw::uniform_f32(seed, offset + uint64_t(i)) >= pf);
    mask[i] = keep;
    y[i] = keep ? T(train ? v * scale : v) : T(C(0));
  }
}

template <class T, class C>
void launch_dropout(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& x = c.inputs[0];
  const int64_t n = x.numel();
  const double p = c.attrs.scalars[0];
  // The CPU's constants: scale rounded to the compute type, p compared as float.
  const C scale = p < 1.0 ? C(1.0 / (1.0 - p)) : C(0);
  dropout_elems<T, C><<<grid_for(n), kThreads, 0, stream()>>>(
      ptr<T>(outs[0]), ptr<bool>(outs[1]), ptr<T>(x), indexer(x, x.shape()), n,
      c.attrs.ints[0] != 0, c.attrs.seed, c.attrs.offset, float(p), p < 1.0, scale);
  check_launch("dropout");
}

}  // namespace rnd

// ---- launchers ----
// ---- dropout: x -> (y, mask); element i keeps when its uniform draw is >= p ----
inline void dropout_kernel(const OpCall& c, std::span<Tensor> outs) {
  if (c.inputs[0].numel() == 0) return;
  switch (c.inputs[0].dtype()) {
    case DType::Float16:
      return rnd::launch_dropout<Half, float>(c, outs);
    case DType::BFloat16:
      return rnd::launch_dropout<BFloat16, float>(c, outs);
    case DType::Float32:
      return rnd::launch_dropout<float, float>(c, outs);
    case DType::Float64:
      return rnd::launch_dropout<double, double>(c, outs);
    default:
      terra::detail::fail("dropout", "expected a floating dtype, got ",
                          dtype_name(c.inputs[0].dtype()));
  }
}
template <>
inline constexpr KernelFn cuda_kernel<op::Dropout> = &dropout_kernel;

}  // namespace terra::cuda
