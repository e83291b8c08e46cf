// terra/optim/adam.hpp: Adam, AdamW (decoupled weight decay) and RMSprop, with PyTorch's
// update rules (bias-corrected moments, eps added after the square root).
#pragma once

#include <cmath>

#include "terra/optim/optimizer.hpp"

namespace terra::optim {

namespace detail {
/// The hyperparameters of Adam and AdamW, which differ only in weight_decay's default (in
/// thousandths): two distinct aggregate types, so that `AdamW(params, {.lr = 1e-3})` keeps
/// AdamW's default decay of 0.01, as `torch::optim::AdamW` does.
template <int kDecayThousandths>
struct AdamHyper {
  /// Learning rate (>= 0).
  double lr = 1e-3;
  /// Decay rate of the running mean of gradients (exp_avg), in [0, 1).
  double beta1 = 0.9;
  /// Decay rate of the running mean of squared gradients (exp_avg_sq), in [0, 1).
  double beta2 = 0.999;
  /// Added to sqrt(bias-corrected exp_avg_sq) before dividing, as PyTorch (>= 0).
  double eps = 1e-8;
  /// Adam: L2 penalty added to the gradient (default 0); AdamW: decoupled decay of the
  /// weights (default 0.01).
  double weight_decay = kDecayThousandths / 1000.0;
};
}  // namespace detail

/// Hyperparameters of Adam (PyTorch's defaults). LibTorch's betas tuple is two fields here:
/// `optim::Adam opt(params, {.lr = 3e-4, .beta2 = 0.98});`.
using AdamOptions = detail::AdamHyper<0>;
/// Hyperparameters of AdamW: AdamOptions' fields, with weight_decay 0.01 by default.
using AdamWOptions = detail::AdamHyper<10>;

namespace detail {
template <class O>
void check_adam(const O& o, const char* name) {
  TERRA_CHECK(o.lr >= 0, name, "invalid learning rate ", o.lr);
  TERRA_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, name,
              "betas must be in [0, 1), got ", o.beta1, " and ", o.beta2);
  TERRA_CHECK(o.eps >= 0, name, "invalid eps ", o.eps);
}

// The shared Adam/AdamW moment update and parameter step.
template <class O>
void adam_update(Tensor& p, const Tensor& g, ParamState& s, const O& o) {
  if (!s.tensors.count("exp_avg")) {
    s.tensors["exp_avg"] = zeros_like(p);
    s.tensors["exp_avg_sq"] = zeros_like(p);
  }
  Tensor& m = s.tensors["exp_avg"];
  Tensor& v = s.tensors["exp_avg_sq"];
  ++s.step;
  m.mul_(o.beta1).add_(g, 1.0 - o.beta1);
  v.mul_(o.beta2).add_(g * g, 1.0 - o.beta2);
  double bc1 = 1.0 - std::pow(o.beta1, double(s.step));
  double bc2 = 1.0 - std::pow(o.beta2, double(s.step));
  Tensor denom = v.sqrt() / std::sqrt(bc2) + o.eps;
  p.add_(m / denom, -o.lr / bc1);
}
}  // namespace detail

/// Adam with PyTorch's update rule (torch::optim::Adam): bias-corrected moment estimates,
/// eps added after the square root, L2 weight decay added to the gradient. Parameters
/// without a gradient are skipped.
class Adam : public OptimizerBase<AdamOptions> {
 public:
  /// One group of params with options o; throws on lr < 0, eps < 0 or betas outside [0, 1).
  Adam(std::vector<Tensor> params, AdamOptions o = {}) : Adam(std::vector<Group>{{std::move(params), o}}) {}
  /// Several groups, each with its own options.
  explicit Adam(std::vector<Group> groups) : OptimizerBase(std::move(groups), "Adam") {
    for (const Group& g : groups_) detail::check_adam(g.options, "Adam");
  }
  void step() override {
    for_each_param([](Tensor& p, const Tensor& grad, ParamState& s, const AdamOptions& o) {
      detail::adam_update(p, o.weight_decay != 0 ? grad + p * o.weight_decay : grad, s, o);
    });
  }
};

/// AdamW (torch::optim::AdamW): decoupled weight decay, p *= 1 - lr * weight_decay before
/// the Adam step on the raw gradient; weight_decay is 0.01 unless the options say otherwise.
class AdamW : public OptimizerBase<AdamWOptions> {
 public:
  /// One group of params with options o; throws on invalid lr, eps or betas.
  AdamW(std::vector<Tensor> params, AdamWOptions o = {})
      : AdamW(std::vector<Group>{{std::move(params), o}}) {}
  /// Several groups, each with its own options.
  explicit AdamW(std::vector<Group> groups) : OptimizerBase(std::move(groups), "AdamW") {
    for (const Group& g : groups_) detail::check_adam(g.options, "AdamW");
  }
  void step() override {
    for_each_param([](Tensor& p, const Tensor& grad, ParamState& s, const AdamWOptions& o) {
      if (o.weight_decay != 0) p.mul_(1.0 - o.lr * o.weight_decay);
      detail::adam_update(p, grad, s, o);
    });
  }
};

/// Hyperparameters of RMSprop (PyTorch's defaults, lr 0.01).
struct RMSpropOptions {
  /// Learning rate (>= 0).
  double lr = 1e-2;
  /// Smoothing constant of the running mean of squared gradients (square_avg).
  double alpha = 0.99;
  /// Added to the root of the (centered) mean square before dividing.
  double eps = 1e-8;
  /// L2 penalty: weight_decay * param is added to the gradient.
  double weight_decay = 0;
  /// Momentum factor; > 0 keeps a momentum_buffer of the scaled steps.
  double momentum = 0;
  /// Normalize by the estimated variance (mean square minus squared mean of the gradient)
  /// instead of the mean square; keeps a grad_avg buffer.
  bool centered = false;
};

/// RMSprop with PyTorch's update rule (torch::optim::RMSprop): square_avg = alpha * sq +
/// (1 - alpha) * g^2; p -= lr * g / (sqrt(square_avg) + eps), optionally centered and with
/// momentum.
class RMSprop : public OptimizerBase<RMSpropOptions> {
 public:
  /// One group of params with options o; throws on negative lr, alpha or eps.
  RMSprop(std::vector<Tensor> params, RMSpropOptions o = {})
      : RMSprop(std::vector<Group>{{std::move(params), o}}) {}
  /// Several groups, each with its own options.
  explicit RMSprop(std::vector<Group> groups) : OptimizerBase(std::move(groups), "RMSprop") {
    for (const Group& g : groups_)
      TERRA_CHECK(g.options.lr >= 0 && g.options.alpha >= 0 && g.options.eps >= 0, "RMSprop",
                  "invalid options: lr ", g.options.lr, ", alpha ", g.options.alpha, ", eps ", g.options.eps);
  }
  void step() override {
    for_each_param([](Tensor& p, const Tensor& grad, ParamState& s, const RMSpropOptions& o) {
      Tensor g = o.weight_decay != 0 ? grad + p * o.weight_decay : grad;
      if (!s.tensors.count("square_avg")) {
        s.tensors["square_avg"] = zeros_like(p);
        if (o.momentum > 0) s.tensors["momentum_buffer"] = zeros_like(p);
        if (o.centered) s.tensors["grad_avg"] = zeros_like(p);
      }
      ++s.step;
      Tensor& sq = s.tensors["square_avg"];
      sq.mul_(o.alpha).add_(g * g, 1.0 - o.alpha);
      Tensor avg;
      if (o.centered) {
        Tensor& ga = s.tensors["grad_avg"];
        ga.mul_(o.alpha).add_(g, 1.0 - o.alpha);
        avg = (sq - ga * ga).sqrt() + o.eps;
      } else {
        avg = sq.sqrt() + o.eps;
      }
      if (o.momentum > 0) {
        Tensor& buf = s.tensors["momentum_buffer"];
        buf.mul_(o.momentum).add_(g / avg);
        p.add_(buf, -o.lr);
      } else {
        p.add_(g / avg, -o.lr);
      }
    });
  }
};

}  // namespace terra::optim
