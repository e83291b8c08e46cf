// terra/ops/vjp/index.hpp: the vjps of index_select, gather, scatter_add and masked_select,
// written with public ops (gradients accumulate at repeated indices through scatter_add).
#pragma once

#include "terra/ops/elementwise.hpp"
#include "terra/ops/factory.hpp"
#include "terra/ops/index.hpp"
#include "terra/ops/sort.hpp"
#include "terra/ops/vjp/shape.hpp"

namespace terra::op {

namespace detail_vjp {
inline Tensor zeros_of(const Shape& s, const Tensor& like) {
  return zeros(s, {.dtype = like.dtype(), .device = like.device()});
}
}  // namespace detail_vjp

// index_add of g into zeros: the index, shaped [1, .., k, .., 1], expanded to g's shape.
inline void IndexSelect::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Shape& in = c.in_shapes[0];
  if (in.empty()) {
    gi[0] = g[0].reshape({});
    return;
  }
  int64_t d = wrap_dim(c.attrs.ints[0], int64_t(in.size()), "index_select");
  Shape s(in.size(), 1);
  s[d] = c.inputs[1].numel();
  Tensor index = c.inputs[1].reshape(s).expand(g[0].shape());
  gi[0] = scatter_add(detail_vjp::zeros_of(in, g[0]), d, index, g[0]);
}
inline void Gather::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] =
      scatter_add(detail_vjp::zeros_of(c.in_shapes[0], g[0]), c.attrs.ints[0], c.inputs[1], g[0]);
}
// x: g. src: g gathered at the index, zero where src is larger than the index.
inline void ScatterAdd::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  if (c.needs_grad(0)) gi[0] = g[0];
  if (!c.needs_grad(2)) return;
  const Tensor& index = c.inputs[1];
  const Shape& src = c.in_shapes[2];
  Shape want = src.empty() ? Shape{1} : src;
  Tensor t = gather(g[0], c.attrs.ints[0], index).reshape(shape_1d(index));
  for (size_t k = 0; k < want.size(); ++k) {
    if (t.shape()[k] == want[k]) continue;
    Shape s = t.shape();
    s[k] = want[k];
    t = detail_vjp::unslice(t, s, int64_t(k), 0, 1);
  }
  gi[2] = t.reshape(src);
}
// g placed at the mask's true positions (row-major) of the broadcast shape; the engine sums it
// back to x's shape. The position of each true element in g is the mask's running count - 1.
inline void MaskedSelect::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& mask = c.inputs[1];
  Shape s = broadcast_shapes(c.in_shapes[0], mask.shape(), "masked_select");
  if (c.attrs.ints[0] == 0) {
    gi[0] = detail_vjp::zeros_of(s, g[0]);
    return;
  }
  Tensor flat = mask.expand(s).reshape({-1});
  Tensor first = zeros({}, {.dtype = DType::Int64, .device = mask.device()});
  Tensor at = where(flat, cumsum(flat, 0) - 1, first);
  Tensor zero = detail_vjp::zeros_of({}, g[0]);
  gi[0] = where(flat, index_select(g[0], 0, at), zero).reshape(s);
}

}  // namespace terra::op
