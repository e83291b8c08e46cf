// terra/backend/kernels.hpp: kernel lookup across backends.
#pragma once

#include "terra/backend/cpu/cpu.hpp"
#include "terra/backend/to_device.hpp"

namespace terra {

namespace cpu {

inline bool any_reduced(std::span<const Tensor> ts) {
  for (const Tensor& t : ts)
    if (is_reduced_float(t.dtype())) return true;
  return false;
}

// float16/bfloat16 are storage types on the CPU: every kernel but copy sees them upcast to
// float32, and its float32 results are rounded back into the 16-bit outputs.
template <class OpT>
void run_upcast(const OpCall& c, std::span<Tensor> outs) {
  KernelFn k = cpu_kernel<OpT>;
  if (std::is_same_v<OpT, op::Copy> || std::is_same_v<OpT, op::ToDevice> ||
      (!any_reduced(c.inputs) && !any_reduced(outs))) {
    return k(c, outs);
  }
  SmallVector<Tensor, 4> ins;
  for (const Tensor& t : c.inputs) ins.push_back(is_reduced_float(t.dtype()) ? cast(t, DType::Float32) : t);
  SmallVector<Tensor, 2> tmp;
  for (const Tensor& t : outs) tmp.push_back(is_reduced_float(t.dtype()) ? empty(t.shape(), DType::Float32) : t);
  OpCall c32 = c;
  c32.inputs = {ins.data(), ins.size()};
  k(c32, {tmp.data(), tmp.size()});
  for (size_t i = 0; i < outs.size(); ++i)
    if (!tmp[i].is_same(outs[i])) copy_into(tmp[i], outs[i]);
}

// The table is built on first use (a function-local static), so ops called from other
// static initializers still find their kernels.
inline const KernelFn* kernel_table() {
  static const KernelFn table[] = {
#define X(Type, name, kind, arity) cpu_kernel<op::Type> ? &run_upcast<op::Type> : nullptr,
#include "terra/ops/ops.def"
#undef X
  };
  return table;
}

}  // namespace cpu

#if defined(TERRA_SEPARATE_KERNELS)
KernelFn find_kernel(Op op, Device device) {
#else
inline KernelFn find_kernel(Op op, Device device) {
#endif
  if (device.is_cpu()) return cpu::kernel_table()[static_cast<int>(op)];
  return detail::device_kernels(device.type)[static_cast<int>(op)];
}

}  // namespace terra
