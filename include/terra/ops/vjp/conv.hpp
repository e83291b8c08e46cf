// terra/ops/vjp/conv.hpp: the vjps of conv2d and the 2-D pools, each one call of the matching
// backward op. Those backward ops have no vjp: conv2d and the pools are differentiable once.
#pragma once

#include "terra/ops/conv.hpp"

namespace terra::op {

inline void Conv2d::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const auto& v = c.attrs.ints;
  bool bias = gi.size() > 2 && c.needs_grad(2);
  auto [dx, dw, db] =
      conv2d_backward(g[0], c.inputs[0], c.inputs[1], {v[0], v[1]}, {v[2], v[3]}, {v[4], v[5]},
                      v[6], {c.needs_grad(0), c.needs_grad(1), bias});
  if (c.needs_grad(0)) gi[0] = std::move(dx);
  if (c.needs_grad(1)) gi[1] = std::move(dw);
  if (bias) gi[2] = std::move(db);
}

// The gradient goes to the position the forward picked (the first maximum on ties).
inline void MaxPool2d::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const auto& v = c.attrs.ints;
  const Shape& in = c.in_shapes[0];
  Tensor idx = c.outputs.size() > 1 ? c.outputs[1] : Tensor();
  if (!idx.defined())
    idx = max_pool2d_with_indices(c.inputs[0].detach(), {v[0], v[1]}, IntPair{v[2], v[3]},
                                  {v[4], v[5]}, {v[6], v[7]}, v[8] != 0)
              .second;
  gi[0] = max_pool2d_backward(g[0], idx, {in[in.size() - 2], in[in.size() - 1]});
}

inline void AvgPool2d::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const auto& v = c.attrs.ints;
  const Shape& in = c.in_shapes[0];
  gi[0] = avg_pool2d_backward(g[0], {in[in.size() - 2], in[in.size() - 1]}, {v[0], v[1]},
                              IntPair{v[2], v[3]}, {v[4], v[5]}, v[6] != 0, v[7] != 0);
}

inline void AdaptiveAvgPool2d::vjp(const VjpCtx& c, std::span<const Tensor> g,
                                   std::span<Tensor> gi) {
  const Shape& in = c.in_shapes[0];
  gi[0] = adaptive_avg_pool2d_backward(g[0], {in[in.size() - 2], in[in.size() - 1]});
}

}  // namespace terra::op
