// terra/optim/adam.hpp: Adam, AdamW (decoupled weight decay) and RMSprop, with PyTorch's
// update rules (bias-corrected moments, eps added after the square root).
#pragma once

#include <cmath>

#include "terra/optim/optimizer.hpp"

namespace terra::optim {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
};

namespace detail {
inline void check_adam(const AdamOptions& o, const char* name) {
  TERRA_CHECK(o.lr >= 0, name, "invalid learning rate ", o.lr);
  TERRA_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, name,
              "betas must be in [0, 1), got ", o.beta1, " and ", o.beta2);
  TERRA_CHECK(o.eps >= 0, name, "invalid eps ", o.eps);
}

// The shared Adam/AdamW moment update and parameter step.
inline void adam_update(Tensor& p, const Tensor& g, ParamState& s, const AdamOptions& o) {
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

/// Adam: L2 weight decay added to the gradient.
class Adam : public OptimizerBase<AdamOptions> {
 public:
  Adam(std::vector<Tensor> params, AdamOptions o = {}) : Adam(std::vector<Group>{{std::move(params), o}}) {}
  explicit Adam(std::vector<Group> groups) : OptimizerBase(std::move(groups), "Adam") {
    for (const Group& g : groups_) detail::check_adam(g.options, "Adam");
  }
  void step() override {
    for_each_param([](Tensor& p, const Tensor& grad, ParamState& s, const AdamOptions& o) {
      detail::adam_update(p, o.weight_decay != 0 ? grad + p * o.weight_decay : grad, s, o);
    });
  }
};

/// AdamW: decoupled weight decay, p *= 1 - lr * weight_decay before the Adam step.
struct AdamWOptions : AdamOptions {
  AdamWOptions() { weight_decay = 1e-2; }
};
class AdamW : public OptimizerBase<AdamOptions> {
 public:
  AdamW(std::vector<Tensor> params, AdamOptions o = AdamWOptions{})
      : AdamW(std::vector<Group>{{std::move(params), o}}) {}
  explicit AdamW(std::vector<Group> groups) : OptimizerBase(std::move(groups), "AdamW") {
    for (const Group& g : groups_) detail::check_adam(g.options, "AdamW");
  }
  void step() override {
    for_each_param([](Tensor& p, const Tensor& grad, ParamState& s, const AdamOptions& o) {
      if (o.weight_decay != 0) p.mul_(1.0 - o.lr * o.weight_decay);
      detail::adam_update(p, grad, s, o);
    });
  }
};

struct RMSpropOptions {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0;
  double momentum = 0;
  bool centered = false;
};

class RMSprop : public OptimizerBase<RMSpropOptions> {
 public:
  RMSprop(std::vector<Tensor> params, RMSpropOptions o = {})
      : RMSprop(std::vector<Group>{{std::move(params), o}}) {}
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
