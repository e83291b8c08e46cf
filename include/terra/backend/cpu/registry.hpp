// terra/backend/cpu/registry.hpp: which CPU kernel runs each op.
// A family header specializes cpu_kernel<op::Type> for the ops it implements; an op with no
// specialization reports "not implemented on cpu" from the dispatcher.
#pragma once

#include "terra/ops/op.hpp"

namespace terra::cpu {

template <class OpT>
inline constexpr KernelFn cpu_kernel = nullptr;

// Internal tensors of kernels: never go through dispatch (a kernel's helpers must not be
// traced as ops of the user's program).
inline Tensor empty(const Shape& s, DType dt) { return Tensor::empty(s, dt, Device::cpu()); }

}  // namespace terra::cpu
