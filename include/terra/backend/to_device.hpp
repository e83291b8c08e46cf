// terra/backend/to_device.hpp: the kernel of ToDevice, shared by every backend: the values made
// contiguous on their own device, then one copy by the backend of the non-CPU side.
#pragma once

#include "terra/backend/cpu/registry.hpp"
#include "terra/core/device_backend.hpp"
#include "terra/ops/op.hpp"

namespace terra::detail {

inline void to_device_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& x = c.inputs[0];
  Tensor& y = outs[0];
  if (y.numel() == 0) return;
  Tensor src = x;
  if (!x.is_contiguous()) {
    src = Tensor::empty(x.shape(), x.dtype(), x.device());
    KernelFn copy = find_kernel(Op::Copy, x.device());
    TERRA_CHECK(copy != nullptr, "to_device", "no copy kernel on ", x.device());
    Attrs a;
    a.dtype = x.dtype();
    const Tensor in[] = {x};
    copy({.op = Op::Copy, .inputs = in, .attrs = a}, {&src, 1});
  }
  Device side = y.device().is_cpu() ? x.device() : y.device();
  bool non_blocking = c.attrs.ints.size() > 2 && c.attrs.ints[2] != 0;
  device_backend(side, "to_device")
      .copy(y.device_data(), y.device(), src.device_data(), src.device(), y.nbytes(), non_blocking);
}

}  // namespace terra::detail

namespace terra::cpu {
// From the CPU to a device: the CPU table finds it (the input is on the CPU).
template <> inline constexpr KernelFn cpu_kernel<op::ToDevice> = &detail::to_device_kernel;
}  // namespace terra::cpu
