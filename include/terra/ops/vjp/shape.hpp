// terra/ops/vjp/shape.hpp: the vjps of the view and movement ops. Each routes the gradient
// back to the input's layout with other public ops, so double backward works too.
#pragma once

#include "terra/ops/factory.hpp"
#include "terra/ops/shape.hpp"

namespace terra {

inline Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  TERRA_CHECK(broadcast_shapes(shape, g.shape(), "sum_to") == g.shape(), "sum_to",
              "a gradient of shape ", g.shape(), " cannot be reduced to shape ", shape);
  int64_t lead = g.dim() - int64_t(shape.size());
  Dims dims;
  for (int64_t i = 0; i < g.dim(); ++i)
    if (i < lead || (shape[i - lead] == 1 && g.shape()[i] != 1)) dims.push_back(i);
  return sum(g, dims, true).reshape(shape);
}

}  // namespace terra

namespace terra::op {

namespace detail_vjp {
// g placed at [start, start + step * n) (every step-th position) of a zero tensor of
// in_shape along dim: cat and interleave, no in-place writes.
inline Tensor unslice(const Tensor& g, const Shape& in_shape, int64_t dim, int64_t start, int64_t step) {
  Tensor t = g;
  int64_t n = g.shape()[dim], size = in_shape[dim];
  TensorOptions o{g.dtype(), g.device()};
  if (step > 1 && n > 0) {  // interleave step-1 zero rows after each row
    Shape zs = g.shape();
    zs.insert(zs.begin() + dim + 1, step - 1);
    t = cat({g.unsqueeze(dim + 1), zeros(zs, o)}, dim + 1).flatten(dim, dim + 1);
    t = t.narrow(dim, 0, std::min(t.shape()[dim], size - start));
  }
  int64_t len = t.shape()[dim];
  std::vector<Tensor> parts;
  Shape s = in_shape;
  if (start > 0) {
    s[dim] = start;
    parts.push_back(zeros(s, o));
  }
  parts.push_back(t);
  if (size - start - len > 0) {
    s[dim] = size - start - len;
    parts.push_back(zeros(s, o));
  }
  return parts.size() == 1 ? t : cat(parts, dim);
}
}  // namespace detail_vjp

inline void View::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = g[0].reshape(c.in_shapes[0]);
}
inline void Unsqueeze::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = g[0].reshape(c.in_shapes[0]);
}
inline void Squeeze::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = g[0].reshape(c.in_shapes[0]);
}
inline void Permute::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  int64_t r = int64_t(c.attrs.ints.size());
  Dims inverse(r);
  for (int64_t i = 0; i < r; ++i) inverse[wrap_dim(c.attrs.ints[i], r, "permute")] = i;
  gi[0] = g[0].permute(inverse);
}
// Expand: the engine sums the gradient back over the expanded dims.
inline void Expand::vjp(const VjpCtx&, std::span<const Tensor> g, std::span<Tensor> gi) { gi[0] = g[0]; }
inline void Slice::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Shape& in = c.in_shapes[0];
  int64_t d = wrap_dim(c.attrs.ints[0], int64_t(in.size()), "slice");
  int64_t n = in[d], start = c.attrs.ints[1];
  if (start < 0) start += n;
  start = std::clamp<int64_t>(start, 0, n);
  gi[0] = detail_vjp::unslice(g[0], in, d, start, c.attrs.ints[3]);
}
inline void Select::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Shape& in = c.in_shapes[0];
  int64_t d = wrap_dim(c.attrs.ints[0], int64_t(in.size()), "select");
  int64_t i = c.attrs.ints[1] < 0 ? c.attrs.ints[1] + in[d] : c.attrs.ints[1];
  gi[0] = detail_vjp::unslice(g[0].unsqueeze(d), in, d, i, 1);
}
inline void ToDevice::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = to_device(g[0], Device{DeviceType(c.attrs.ints[0]), int8_t(c.attrs.ints[1])});
}
inline void Cat::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  int64_t d = wrap_dim(c.attrs.ints[0], g[0].dim(), "cat");
  int64_t at = 0;
  for (size_t i = 0; i < gi.size(); ++i) {
    int64_t n = c.in_shapes[i][d];
    if (c.needs_grad(i)) gi[i] = g[0].narrow(d, at, n);
    at += n;
  }
}

}  // namespace terra::op
