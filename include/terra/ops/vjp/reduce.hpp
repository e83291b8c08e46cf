// terra/ops/vjp/reduce.hpp: the vjps of the reductions.
#pragma once

#include "terra/ops/elementwise.hpp"
#include "terra/ops/factory.hpp"
#include "terra/ops/index.hpp"
#include "terra/ops/reduce.hpp"
#include "terra/ops/shape.hpp"

namespace terra::op {

namespace detail_vjp {
// g (the reduction's output) with the reduced dims put back as size 1, so it broadcasts
// against the input.
inline Tensor unreduce(const Tensor& g, const VjpCtx& c) {
  const Shape& in = c.in_shapes[0];
  if (reduce::keepdim_of(c.attrs)) return g;
  Dims dims = wrap_dims(reduce::dims_of(c.attrs), int64_t(in.size()), "unreduce");
  Shape kept = in;
  for (int64_t d : dims)
    if (d < int64_t(kept.size())) kept[d] = 1;
  return g.reshape(kept);
}
// The reduced dims of the call, wrapped (all dims for an empty list; none for a 0-d input).
inline Dims reduced_dims(const VjpCtx& c) {
  int64_t r = int64_t(c.in_shapes[0].size());
  Dims out;
  for (int64_t d : wrap_dims(reduce::dims_of(c.attrs), r, "unreduce"))
    if (d < r) out.push_back(d);
  return out;
}
inline int64_t reduced_count(const VjpCtx& c) {
  const Shape& in = c.in_shapes[0];
  Dims dims = wrap_dims(reduce::dims_of(c.attrs), int64_t(in.size()), "unreduce");
  int64_t n = 1;
  for (int64_t d : dims)
    if (d < int64_t(in.size())) n *= in[d];
  return n;
}
// g of a value-selecting reduction (max/min along one dim, sort, topk) put back at `index`
// along dim of a zero tensor of in_shape. index has g's shape, with dim kept.
inline Tensor place_at(const Tensor& g, const Tensor& index, const Shape& in_shape, int64_t dim) {
  if (in_shape.empty()) return g.reshape({});
  return scatter_add(zeros(in_shape, {.dtype = g.dtype(), .device = g.device()}), dim, index, g);
}
// The vjp of amax/amin: the gradient split evenly among the elements equal to the result.
inline Tensor even_split(const VjpCtx& c, const Tensor& g) {
  const Tensor& x = c.inputs[0];
  Tensor hit = (x == unreduce(c.outputs[0], c)).to(g.dtype());
  Tensor count = sum(hit, reduced_dims(c), true);
  return unreduce(g, c) * hit / count;
}
// The vjp of max/min along a dim: the values' gradient goes to the selected index.
inline void select_vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  if (!g[0].defined()) return;
  int64_t r = int64_t(c.in_shapes[0].size());
  int64_t d = r == 0 ? 0 : wrap_dim(c.attrs.ints[0], r, "max");
  gi[0] = place_at(unreduce(g[0], c), unreduce(c.outputs[1], c), c.in_shapes[0], d);
}
}  // namespace detail_vjp

inline void Sum::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = detail_vjp::unreduce(g[0], c).expand(c.in_shapes[0]);
}
inline void Mean::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] =
      (detail_vjp::unreduce(g[0], c) / double(detail_vjp::reduced_count(c))).expand(c.in_shapes[0]);
}

// The product of the other elements, exact with zeros: with no zero in a reduced slice it is
// prod / x; with one zero, prod(nonzeros) at the zero and 0 elsewhere; with more, 0. Zero
// factors are kept as terms in the zeros' own values (`zsum`: 0, but carrying a derivative),
// so that second derivatives are exact too: with one zero the others get zsum * p / x, with
// two each zero gets p times the other zero's value.
inline void Prod::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& x = c.inputs[0];
  Dims dims = detail_vjp::reduced_dims(c);
  Tensor zero = x == 0;
  Tensor nonzero = masked_fill(x, zero, 1.0);
  Tensor p = prod(nonzero, dims, true);
  Tensor zeros_in = sum(zero, dims, true);
  Tensor zsum = sum(masked_fill(x, !zero, 0.0), dims, true);
  Tensor one = (zeros_in == 1).to(x.dtype()), two = (zeros_in == 2).to(x.dtype());
  Tensor scale = (zeros_in == 0).to(x.dtype()) + zsum * one;
  Tensor at_zero = p * (one + (zsum - x) * two);
  gi[0] = detail_vjp::unreduce(g[0], c) * where(zero, at_zero, scale * p / nonzero);
}
inline void Amax::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = detail_vjp::even_split(c, g[0]);
}
inline void Amin::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = detail_vjp::even_split(c, g[0]);
}
// d var / dx = 2 (x - mean) / (n - correction).
inline void Var::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& x = c.inputs[0];
  double denom = double(detail_vjp::reduced_count(c)) - c.attrs.scalars[0];
  Tensor centered = x - mean(x, detail_vjp::reduced_dims(c), true);
  gi[0] = detail_vjp::unreduce(g[0], c) * centered * (2.0 / denom);
}
// d logsumexp / dx = softmax(x) = exp(x - logsumexp(x)).
inline void Logsumexp::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = detail_vjp::unreduce(g[0], c) * exp(c.inputs[0] - detail_vjp::unreduce(c.outputs[0], c));
}
inline void MaxDim::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  detail_vjp::select_vjp(c, g, gi);
}
inline void MinDim::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  detail_vjp::select_vjp(c, g, gi);
}

}  // namespace terra::op
