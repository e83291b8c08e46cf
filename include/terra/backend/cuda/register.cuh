// terra/backend/cuda/register.cuh: fills the CUDA row of the kernel table from the family
// headers' cuda_kernel<op::Type> specializations. Included last by <terra/cuda.hpp>.
#pragma once

#include "terra/backend/cuda/common.cuh"
#include "terra/backend/to_device.hpp"

namespace terra::cuda::detail {

inline int device_of(const OpCall& c, std::span<Tensor> outs) {
  if (!outs.empty() && outs[0].device().is_cuda()) return outs[0].device().index;
  for (const Tensor& t : c.inputs)
    if (t.device().is_cuda()) return t.device().index;
  return c.attrs.device.index;
}

// Every CUDA kernel runs with its tensors' device current, so it queues on that device's stream.
template <class OpT>
void on_device(const OpCall& c, std::span<Tensor> outs) {
  DeviceGuard g(device_of(c, outs));
  cuda_kernel<OpT>(c, outs);
}

inline bool register_kernels() {
  KernelFn* table = terra::detail::device_kernels(DeviceType::CUDA);
#define X(Type, name, kind, arity) \
  table[int(Op::Type)] = cuda_kernel<op::Type> ? &on_device<op::Type> : nullptr;
#include "terra/ops/ops.def"
#undef X
  table[int(Op::ToDevice)] = &terra::detail::to_device_kernel;
  return true;
}
inline const bool kKernelsRegistered = register_kernels();

}  // namespace terra::cuda::detail
