// terra/backend/cpu/shape.hpp: CPU kernels of the movement ops that copy (cat).
#pragma once

#include "terra/backend/cpu/elementwise.hpp"
#include "terra/ops/shape.hpp"

namespace terra::cpu {

// A view of t narrowed along dim, made without dispatch (kernel-internal).
inline Tensor narrow_view(const Tensor& t, int64_t dim, int64_t start, int64_t len) {
  Shape s = t.shape();
  s[dim] = len;
  return Tensor::from_storage(t.storage(), s, t.strides(),
                              t.storage_offset() + start * t.strides()[dim], t.dtype());
}

inline void cat_kernel(const OpCall& c, std::span<Tensor> outs) {
  int64_t d = wrap_dim(c.attrs.ints[0], outs[0].dim(), "cat");
  int64_t at = 0;
  for (const Tensor& x : c.inputs) {
    int64_t n = x.shape()[d];
    if (n) copy_into(x, narrow_view(outs[0], d, at, n));
    at += n;
  }
}
template <> inline constexpr KernelFn cpu_kernel<op::Cat> = &cat_kernel;

}  // namespace terra::cpu
