// terra/ops/vjp/nn.hpp: the vjps of softmax, log_softmax, layer_norm, batch_norm and dropout
// (declared with TERRA_VJP in ops/nn.hpp), written with public ops so that double backward
// works. The normalizations reuse the statistics their forward pass returned.
#pragma once

#include "terra/ops/elementwise.hpp"
#include "terra/ops/factory.hpp"
#include "terra/ops/nn.hpp"
#include "terra/ops/reduce.hpp"
#include "terra/ops/shape.hpp"

namespace terra::op {

namespace detail_vjp {

// Adds b to a, either may be undefined (a zero gradient).
inline Tensor add_opt(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

// The gradient wrt x of a normalization y = (x - mean) * rstd (before the affine part) taken
// over `dims` (n elements per statistic), rstd = 1 / sqrt(biased var + eps). mean and rstd
// are broadcast against x. gxhat: the gradient wrt the normalized value (may be undefined);
// gmean / grstd: gradients of the returned statistics, broadcast like them (may be undefined).
struct NormGrad {
  const Tensor& x;
  const Tensor& mean;
  const Tensor& rstd;
  const Dims& dims;
  double n;
};
inline Tensor norm_input_grad(const NormGrad& s, const Tensor& gxhat, const Tensor& gmean,
                              const Tensor& grstd) {
  Tensor xhat = (s.x - s.mean) * s.rstd;
  Tensor gx;
  if (gxhat.defined())
    gx = s.rstd * (gxhat - mean(gxhat, s.dims, true) - xhat * mean(gxhat * xhat, s.dims, true));
  // d mean / dx = 1 / n; d rstd / dx = -rstd^3 (x - mean) / n = -rstd^2 xhat / n.
  if (gmean.defined()) gx = add_opt(gx, (gmean / s.n).expand(s.x.shape()));
  if (grstd.defined()) gx = add_opt(gx, grstd * (s.rstd * s.rstd) * xhat * (-1.0 / s.n));
  return gx;
}

// g[i] reshaped to `shape` when defined.
inline Tensor reshaped(std::span<const Tensor> g, size_t i, const Shape& shape) {
  return g.size() > i && g[i].defined() ? g[i].reshape(shape) : Tensor();
}

// Sums over dims, or returns t itself when dims is empty (sum({}) reduces everything).
inline Tensor sum_over(const Tensor& t, const Dims& dims) {
  return dims.empty() ? t : sum(t, dims);
}

// A training batch_norm's first-order gradients in one op (batch_norm_backward) instead of a
// dozen: only when no graph of the backward is built (the op has no vjp), the statistics
// outputs get no gradient and everything is float32 or float64 alike. False: not handled.
inline bool fused_batch_norm_grad(const VjpCtx& c, const Tensor& gy, bool stats_grad,
                                  std::span<Tensor> gi) {
  if (autograd::grad_mode_flag() || stats_grad || !gy.defined()) return false;
  const DType dt = c.inputs[0].dtype();
  if (dt != DType::Float32 && dt != DType::Float64) return false;
  const bool has_w = c.attrs.ints[0] != 0, has_b = c.attrs.ints[1] != 0;
  if (gy.dtype() != dt || (has_w && c.inputs[1].dtype() != dt) || c.outputs[1].dtype() != dt)
    return false;
  const bool want_w = has_w && c.needs_grad(1), want_b = has_b && c.needs_grad(1 + has_w);
  if (!c.needs_grad(0) && !want_w && !want_b) return true;
  auto [dx, dw, db] =
      batch_norm_backward(gy, c.inputs[0], has_w ? c.inputs[1] : Tensor(), c.outputs[1],
                          c.outputs[2], {c.needs_grad(0), want_w, want_b});
  if (c.needs_grad(0)) gi[0] = std::move(dx);
  if (want_w) gi[1] = std::move(dw);
  if (want_b) gi[1 + has_w] = std::move(db);
  return true;
}

}  // namespace detail_vjp

// y = softmax(x): dx = y * (g - sum(g * y, dim)).
inline void Softmax::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor& y = c.outputs[0];
  Dims d{c.attrs.ints[0]};
  gi[0] = y * (g[0] - sum(g[0] * y, d, true));
}
// y = log_softmax(x): dx = g - exp(y) * sum(g, dim).
inline void LogSoftmax::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  Dims d{c.attrs.ints[0]};
  gi[0] = g[0] - exp(c.outputs[0]) * sum(g[0], d, true);
}

// inputs (x, [weight], [bias]); outputs (y, mean, rstd), each gradient optional.
inline void LayerNorm::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const auto& in = c.attrs.ints;
  const bool has_w = in[0] != 0, has_b = in[1] != 0;
  const Tensor& x = c.inputs[0];
  const int64_t r = x.dim(), k = int64_t(in.size()) - 2;
  Dims norm_dims, lead_dims;
  for (int64_t i = 0; i < r; ++i) (i < r - k ? lead_dims : norm_dims).push_back(i);
  Shape bshape = x.shape();  // the statistics' shape with the normalized dims kept as 1
  double n = 1;
  for (int64_t d : norm_dims) {
    n *= double(bshape[d]);
    bshape[d] = 1;
  }
  Tensor mean_b = c.outputs[1].reshape(bshape), rstd_b = c.outputs[2].reshape(bshape);
  const Tensor& gy = g[0];
  if (c.needs_grad(0)) {
    Tensor gxhat = gy.defined() && has_w ? gy * c.inputs[1] : gy;
    gi[0] = detail_vjp::norm_input_grad({x, mean_b, rstd_b, norm_dims, n}, gxhat,
                                        detail_vjp::reshaped(g, 1, bshape),
                                        detail_vjp::reshaped(g, 2, bshape));
  }
  if (!gy.defined()) return;
  if (has_w && c.needs_grad(1))
    gi[1] = detail_vjp::sum_over(gy * ((x - mean_b) * rstd_b), lead_dims);
  if (has_b && c.needs_grad(1 + has_w)) gi[1 + has_w] = detail_vjp::sum_over(gy, lead_dims);
}

// inputs (x, [weight], [bias], [running_mean, running_var]); outputs (y, save_mean,
// save_invstd). Training: batch statistics, through which the gradient flows; the running
// stats get none. Eval: y = (x - running_mean) / sqrt(running_var + eps) * w + b, with
// save_mean / save_invstd the running ones, so the running stats get their (rarely wanted)
// gradient too.
inline void BatchNorm::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const auto& fl = c.attrs.ints;
  const bool has_w = fl[0] != 0, has_b = fl[1] != 0, has_run = fl[2] != 0, training = fl[4] != 0;
  const size_t iw = 1, ib = 1 + has_w, irm = 1 + has_w + has_b, irv = irm + 1;
  const Tensor& x = c.inputs[0];
  const int64_t r = x.dim(), ch = x.shape()[1];
  Dims red{0};
  for (int64_t i = 2; i < r; ++i) red.push_back(i);
  Shape bshape(size_t(r), 1);  // [1, C, 1, ...]
  bshape[1] = ch;
  double n = ch ? double(x.numel()) / double(ch) : 0.0;
  Tensor mean_b = c.outputs[1].reshape(bshape), inv_b = c.outputs[2].reshape(bshape);
  Tensor w_b = has_w ? c.inputs[iw].reshape(bshape) : Tensor();
  const Tensor& gy = g[0];
  Tensor gmean = detail_vjp::reshaped(g, 1, bshape), ginv = detail_vjp::reshaped(g, 2, bshape);
  if (training && detail_vjp::fused_batch_norm_grad(c, gy, gmean.defined() || ginv.defined(), gi))
    return;
  Tensor gxhat = gy.defined() && has_w ? gy * w_b : gy;
  if (c.needs_grad(0)) {
    if (training)
      gi[0] = detail_vjp::norm_input_grad({x, mean_b, inv_b, red, n}, gxhat, gmean, ginv);
    else if (gy.defined())
      gi[0] = gxhat * inv_b;
  }
  if (!training && has_run && (c.needs_grad(irm) || c.needs_grad(irv))) {
    // save_mean = running_mean, save_invstd = (running_var + eps)^(-1/2).
    Tensor inv3 = inv_b.pow(3.0) * -0.5;
    Tensor gm = gy.defined() ? -(gxhat * inv_b) : Tensor();
    Tensor gv = gy.defined() ? gxhat * (x - mean_b) * inv3 : Tensor();
    if (c.needs_grad(irm))
      gi[irm] = detail_vjp::add_opt(gm.defined() ? sum(gm, red) : Tensor(),
                                    gmean.defined() ? gmean.reshape({ch}) : Tensor());
    if (c.needs_grad(irv))
      gi[irv] = detail_vjp::add_opt(gv.defined() ? sum(gv, red) : Tensor(),
                                    ginv.defined() ? (ginv * inv3).reshape({ch}) : Tensor());
  }
  if (!gy.defined()) return;
  if (has_w && c.needs_grad(iw)) gi[iw] = sum(gy * ((x - mean_b) * inv_b), red);
  if (has_b && c.needs_grad(ib)) gi[ib] = sum(gy, red);
}

// y = x * mask / (1 - p) in training (p == 1: all zero), else y = x.
inline void Dropout::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  if (!g[0].defined()) return;
  const double p = c.attrs.scalars[0];
  if (!c.attrs.ints[0]) {
    gi[0] = g[0];
  } else if (p >= 1.0) {
    gi[0] = zeros_like(g[0]);
  } else {
    gi[0] = g[0] * c.outputs[1] * (1.0 / (1.0 - p));
  }
}

}  // namespace terra::op
