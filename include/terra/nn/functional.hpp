// terra/nn/functional.hpp: losses and the functional forms of the modules, composed of public
// ops (their gradients come from the ops' vjps).
#pragma once

#include <string_view>

#include "terra/autograd/engine.hpp"

namespace terra::nn::functional {

/// How a loss combines its per-element values: None keeps them (the input's shape), Mean
/// averages them to a 0-d tensor (the default, as torch's kMean), Sum adds them up.
enum class Reduction { None, Mean, Sum };

/// Applies a Reduction to per-element losses: loss itself, loss.mean() or loss.sum().
inline Tensor reduce(const Tensor& loss, Reduction r) {
  switch (r) {
    case Reduction::None: return loss;
    case Reduction::Sum: return loss.sum();
    default: return loss.mean();
  }
}

using terra::gelu;
using terra::log_softmax;
using terra::relu;
using terra::sigmoid;
using terra::silu;
using terra::softmax;
using terra::tanh;

/// Options of cross_entropy and nll_loss, as torch's CrossEntropyLossOptions.
struct CrossEntropyOptions {
  /// Targets equal to this class index contribute no loss and are not counted by Mean.
  int64_t ignore_index = -100;
  /// In [0, 1]: the target distribution becomes (1 - s) * one_hot + s / C, as in PyTorch.
  double label_smoothing = 0.0;
  /// Mean (over non-ignored targets), Sum, or None: the per-sample loss [N, d...].
  Reduction reduction = Reduction::Mean;
};

/// Negative log-likelihood. logp: [N, C] or [N, C, d...] log-probabilities; target: class
/// indices [N] or [N, d...]. Targets equal to ignore_index add nothing (and are not counted
/// in the mean).
inline Tensor nll_loss(const Tensor& logp, const Tensor& target, CrossEntropyOptions o = {}) {
  TERRA_CHECK(logp.dim() >= 1 && is_floating(logp.dtype()), "nll_loss",
              "expects floating log-probabilities [N, C, ...], got ", logp.shape(), " ", logp.dtype());
  TERRA_CHECK(target.dtype() == DType::Int64 || target.dtype() == DType::Int32, "nll_loss",
              "target must hold class indices (int64), got ", target.dtype());
  Tensor lp = logp.dim() == 1 ? logp.unsqueeze(0) : logp;
  Tensor t = logp.dim() == 1 ? target.unsqueeze(0) : target;
  Shape expect = lp.shape();
  expect.erase(expect.begin() + 1);
  TERRA_CHECK(t.shape() == expect, "nll_loss", "target of shape ", target.shape(),
              " does not match input of shape ", logp.shape());
  Tensor keep = t != o.ignore_index;
  Tensor safe = where(keep, t, zeros({}, {.dtype = t.dtype(), .device = t.device()}));
  Tensor picked = gather(lp, 1, safe.unsqueeze(1)).squeeze(1);
  Tensor w = keep.to(lp.dtype());
  Tensor loss = -picked;
  if (o.label_smoothing > 0) {
    double c = double(lp.size(1));
    Tensor smooth = -lp.sum({1}) / c;
    loss = loss * (1.0 - o.label_smoothing) + smooth * o.label_smoothing;
  }
  loss = loss * w;
  if (o.reduction == Reduction::Mean) return loss.sum() / w.sum();
  if (o.reduction == Reduction::Sum) return loss.sum();
  return logp.dim() == 1 ? loss.squeeze(0) : loss;
}

/// Cross entropy of logits [N, C, ...] against class indices [N, ...] (log_softmax + nll).
inline Tensor cross_entropy(const Tensor& logits, const Tensor& target, CrossEntropyOptions o = {}) {
  TERRA_CHECK(o.label_smoothing >= 0 && o.label_smoothing <= 1, "cross_entropy",
              "label_smoothing must be in [0, 1], got ", o.label_smoothing);
  return nll_loss(log_softmax(logits, logits.dim() == 1 ? 0 : 1), target, o);
}

/// Throws terra::Error naming `name` and both shapes unless a and b have equal shapes; the
/// regression losses use it because, unlike PyTorch, they do not broadcast.
inline void check_same_shape(const Tensor& a, const Tensor& b, const char* name) {
  TERRA_CHECK(a.shape() == b.shape(), name, "input of shape ", a.shape(),
              " and target of shape ", b.shape(), " differ");
}
/// Mean squared error (x - y)^2, reduced by r. x and y must have the same shape (no
/// broadcasting; throws otherwise) and a floating dtype for Mean.
inline Tensor mse_loss(const Tensor& x, const Tensor& y, Reduction r = Reduction::Mean) {
  check_same_shape(x, y, "mse_loss");
  Tensor d = x - y;
  return reduce(d * d, r);
}
/// Mean absolute error |x - y|, reduced by r. x and y must have the same shape (no
/// broadcasting; throws otherwise).
inline Tensor l1_loss(const Tensor& x, const Tensor& y, Reduction r = Reduction::Mean) {
  check_same_shape(x, y, "l1_loss");
  return reduce(abs(x - y), r);
}
/// Sigmoid + binary cross entropy in one stable expression:
/// max(x, 0) - x * y + log(1 + exp(-|x|)).
inline Tensor binary_cross_entropy_with_logits(const Tensor& x, const Tensor& y,
                                               Reduction r = Reduction::Mean,
                                               const Tensor& pos_weight = {}) {
  check_same_shape(x, y, "binary_cross_entropy_with_logits");
  Tensor log_sig_neg = softplus(-abs(x)) + relu(x);  // -log(sigmoid(-x))... = log(1 + e^x)
  Tensor loss;
  if (pos_weight.defined()) {
    // (1 - y) * x + (1 + (pw - 1) * y) * log(1 + exp(-x))
    Tensor lw = (pos_weight - 1.0) * y + 1.0;
    loss = (1.0 - y) * x + lw * (log_sig_neg - x);
  } else {
    loss = log_sig_neg - x * y;
  }
  return reduce(loss, r);
}

/// x where x > 0, else negative_slope * x (any shape). Composed of public ops: differentiable,
/// and traced as the ops it is made of.
inline Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01) {
  TERRA_CHECK(x.defined() && x.is_floating_point(), "leaky_relu",
              "expects a floating-point tensor, got ", x.defined() ? dtype_name(x.dtype()) : "undefined");
  return where(x > 0.0, x, x * negative_slope);
}

}  // namespace terra::nn::functional
