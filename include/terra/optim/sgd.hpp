// terra/optim/sgd.hpp: stochastic gradient descent with momentum, dampening, Nesterov and
// weight decay (PyTorch's update rule).
#pragma once

#include "terra/optim/optimizer.hpp"

namespace terra::optim {

/// Hyperparameters of SGD; the defaults match PyTorch's except lr, which LibTorch requires
/// you to pass: `optim::SGD opt(params, {.lr = 0.1, .momentum = 0.9});`.
struct SGDOptions {
  /// Learning rate (>= 0).
  double lr = 1e-3;
  /// Momentum factor; 0 is plain SGD. The buffer starts as the first gradient, as PyTorch.
  double momentum = 0;
  /// Dampening of the momentum: buf = momentum * buf + (1 - dampening) * grad.
  double dampening = 0;
  /// L2 penalty: weight_decay * param is added to the gradient.
  double weight_decay = 0;
  /// Nesterov momentum (needs momentum > 0 and dampening == 0; throws otherwise).
  bool nesterov = false;
};

/// Stochastic gradient descent with PyTorch's update rule (torch::optim::SGD):
/// g = grad + wd * p; with momentum buf = momentum * buf + (1 - dampening) * g and
/// g = nesterov ? g + momentum * buf : buf; then p -= lr * g. Parameters without a gradient
/// are skipped.
class SGD : public OptimizerBase<SGDOptions> {
 public:
  /// One group of params with options o; throws on lr < 0 or invalid Nesterov settings.
  SGD(std::vector<Tensor> params, SGDOptions o = {}) : SGD(std::vector<Group>{{std::move(params), o}}) {}
  /// Several groups, each with its own options: `SGD({{body, {.lr = 0.01}}, {head, {.lr =
  /// 0.1}}})`.
  explicit SGD(std::vector<Group> groups) : OptimizerBase(std::move(groups), "SGD") {
    for (const Group& g : groups_) {
      TERRA_CHECK(g.options.lr >= 0, "SGD", "invalid learning rate ", g.options.lr);
      TERRA_CHECK(!g.options.nesterov || (g.options.momentum > 0 && g.options.dampening == 0),
                  "SGD", "nesterov momentum requires a momentum and zero dampening");
    }
  }

  void step() override {
    for_each_param([](Tensor& p, const Tensor& grad, ParamState& s, const SGDOptions& o) {
      Tensor g = o.weight_decay != 0 ? grad + p * o.weight_decay : grad;
      if (o.momentum != 0) {
        auto it = s.tensors.find("momentum_buffer");
        if (it == s.tensors.end()) {
          it = s.tensors.emplace("momentum_buffer", g.clone()).first;
        } else {
          it->second.mul_(o.momentum).add_(g, 1.0 - o.dampening);
        }
        g = o.nesterov ? g + it->second * o.momentum : it->second;
      }
      ++s.step;
      p.add_(g, -o.lr);
    });
  }
};

}  // namespace terra::optim
