// terra/ops/vjp/elementwise.hpp: the vjps of the elementwise ops (declared with TERRA_VJP in
// ops/elementwise.hpp), written with public ops. Included once every op family is declared.
#pragma once

#include "terra/ops/elementwise.hpp"
#include "terra/ops/factory.hpp"

// ---- vjps: grad_in[i] for each input that needs one. Shapes of broadcast inputs are reduced
// by the engine (sum_to), dtypes cast back to the input's. ----
namespace terra::op {

namespace detail_vjp {
// The scalar operand of a binary op called with one tensor.
inline double scalar(const VjpCtx& c) { return c.attrs.scalars[0]; }
inline bool scalar_left(const VjpCtx& c) { return c.attrs.ints[0] != 0; }
inline Tensor as(const Tensor& mask, const Tensor& like) { return mask.to(like.dtype()); }
}  // namespace detail_vjp

inline void Copy::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  if (is_floating(c.in_dtypes[0])) gi[0] = g[0].to(c.in_dtypes[0]);
}
inline void Neg::vjp(const VjpCtx&, std::span<const Tensor> g, std::span<Tensor> gi) { gi[0] = -g[0]; }
inline void Abs::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& x = c.inputs[0];  // sign(x), zero at 0
  gi[0] = g[0] * (detail_vjp::as(x > 0, g[0]) - detail_vjp::as(x < 0, g[0]));
}
inline void Exp::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) { gi[0] = g[0] * c.outputs[0]; }
inline void Log::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) { gi[0] = g[0] / c.inputs[0]; }
inline void Sqrt::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = g[0] / (c.outputs[0] * 2.0);
}
inline void Rsqrt::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = g[0] * (c.outputs[0].pow(3.0) * -0.5);
}
inline void Sin::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) { gi[0] = g[0] * cos(c.inputs[0]); }
inline void Cos::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) { gi[0] = g[0] * -sin(c.inputs[0]); }
inline void Tanh::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& y = c.outputs[0];
  gi[0] = g[0] * (1.0 - y * y);
}
inline void Sigmoid::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& y = c.outputs[0];
  gi[0] = g[0] * (y * (1.0 - y));
}
// PyTorch's threshold_backward: y <= 0 ? 0 : g (a NaN output passes g through). Two ops; a
// product with the bool mask would cast the mask to g's dtype first.
inline void Relu::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = masked_fill(g[0], c.outputs[0] <= 0, 0.0);
}
inline void Silu::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& x = c.inputs[0];
  Tensor s = sigmoid(x);
  gi[0] = g[0] * (s * (1.0 + x * (1.0 - s)));
}
inline void Gelu::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = gelu_backward(g[0], c.inputs[0], c.attrs.ints[0] ? "tanh" : "none");
}
inline void Softplus::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  Tensor bx = c.inputs[0] * c.attrs.scalars[0];
  gi[0] = where(bx > c.attrs.scalars[1], g[0], g[0] * sigmoid(bx));
}
inline void Clamp::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& x = c.inputs[0];
  Tensor pass = c.attrs.ints[0] ? x >= c.attrs.scalars[0] : x == x;  // x == x: all true but NaN
  if (c.attrs.ints[1]) pass = pass & (x <= c.attrs.scalars[1]);
  gi[0] = g[0] * pass;
}
inline void Add::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  for (size_t i = 0; i < gi.size(); ++i)
    if (c.needs_grad(i)) gi[i] = g[0];
}
inline void Sub::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  if (gi.size() == 1) {
    gi[0] = detail_vjp::scalar_left(c) ? -g[0] : g[0];
    return;
  }
  if (c.needs_grad(0)) gi[0] = g[0];
  if (c.needs_grad(1)) gi[1] = -g[0];
}
inline void Mul::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  if (gi.size() == 1) {
    gi[0] = g[0] * detail_vjp::scalar(c);
    return;
  }
  if (c.needs_grad(0)) gi[0] = g[0] * c.inputs[1];
  if (c.needs_grad(1)) gi[1] = g[0] * c.inputs[0];
}
inline void Div::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& y = c.outputs[0];
  if (gi.size() == 1) {  // x / s, or s / x
    gi[0] = detail_vjp::scalar_left(c) ? -g[0] * y / c.inputs[0] : g[0] / detail_vjp::scalar(c);
    return;
  }
  if (c.needs_grad(0)) gi[0] = g[0] / c.inputs[1];
  if (c.needs_grad(1)) gi[1] = -g[0] * y / c.inputs[1];
}
inline void Pow::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& y = c.outputs[0];
  if (gi.size() == 1) {
    double s = detail_vjp::scalar(c);
    if (detail_vjp::scalar_left(c)) gi[0] = g[0] * y * std::log(s);  // s ** x
    else gi[0] = s == 0.0 ? zeros_like(g[0]) : g[0] * (c.inputs[0].pow(s - 1.0) * s);
    return;
  }
  const Tensor &a = c.inputs[0], &b = c.inputs[1];
  if (c.needs_grad(0)) gi[0] = where(b == 0, zeros_like(g[0]), g[0] * b * pow(a, b - 1.0));
  // d/db a^b = a^b log a; taken as 0 where a == 0 (the limit for b > 0), as PyTorch does.
  if (c.needs_grad(1)) gi[1] = where(a == 0, zeros_like(g[0]), g[0] * y * log(a));
}
// Ties split the gradient evenly, as PyTorch.
inline void Maximum::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor &a = c.inputs[0], &b = c.inputs[1];
  Tensor half_tie = detail_vjp::as(a == b, g[0]) * 0.5;
  if (c.needs_grad(0)) gi[0] = g[0] * (detail_vjp::as(a > b, g[0]) + half_tie);
  if (c.needs_grad(1)) gi[1] = g[0] * (detail_vjp::as(a < b, g[0]) + half_tie);
}
inline void Minimum::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor &a = c.inputs[0], &b = c.inputs[1];
  Tensor half_tie = detail_vjp::as(a == b, g[0]) * 0.5;
  if (c.needs_grad(0)) gi[0] = g[0] * (detail_vjp::as(a < b, g[0]) + half_tie);
  if (c.needs_grad(1)) gi[1] = g[0] * (detail_vjp::as(a > b, g[0]) + half_tie);
}
inline void Where::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& cond = c.inputs[0];
  Tensor zero = zeros({}, {.dtype = g[0].dtype(), .device = g[0].device()});
  if (c.needs_grad(1)) gi[1] = where(cond, g[0], zero);
  if (c.needs_grad(2)) gi[2] = where(cond, zero, g[0]);
}
inline void MaskedFill::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  gi[0] = masked_fill(g[0], c.inputs[1], 0.0);
}

}  // namespace terra::op

