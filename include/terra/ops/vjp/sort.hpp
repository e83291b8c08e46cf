// terra/ops/vjp/sort.hpp: the vjps of cumsum, sort and topk, written with public ops.
#pragma once

#include "terra/ops/factory.hpp"
#include "terra/ops/index.hpp"
#include "terra/ops/sort.hpp"
#include "terra/ops/vjp/reduce.hpp"

namespace terra::op {

namespace detail_vjp {
// x reversed along dim (index_select with a descending arange).
inline Tensor flip(const Tensor& x, int64_t dim) {
  int64_t n = x.shape()[dim];
  Tensor rev = arange(double(n - 1), -1.0, -1.0, {.dtype = DType::Int64, .device = x.device()});
  return index_select(x, dim, rev);
}
}  // namespace detail_vjp

// The reverse running sum: gi[i] = sum over j >= i of g[j].
inline void Cumsum::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  int64_t r = int64_t(c.in_shapes[0].size());
  if (r == 0) {
    gi[0] = g[0];
    return;
  }
  int64_t d = wrap_dim(c.attrs.ints[0], r, "cumsum");
  gi[0] = detail_vjp::flip(cumsum(detail_vjp::flip(g[0], d), d), d);
}
// The values' gradient goes back to where each value came from (outputs[1]).
inline void Sort::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  if (!g[0].defined()) return;
  int64_t r = int64_t(c.in_shapes[0].size());
  int64_t d = r == 0 ? 0 : wrap_dim(c.attrs.ints[0], r, "sort");
  gi[0] = detail_vjp::place_at(g[0], c.outputs[1], c.in_shapes[0], d);
}
inline void Topk::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  if (!g[0].defined()) return;
  int64_t r = int64_t(c.in_shapes[0].size());
  int64_t d = r == 0 ? 0 : wrap_dim(c.attrs.ints[1], r, "topk");
  gi[0] = detail_vjp::place_at(g[0], c.outputs[1], c.in_shapes[0], d);
}

}  // namespace terra::op
