// terra/optim/sgd.hpp: stochastic gradient descent with momentum, dampening, Nesterov and
// weight decay (PyTorch's update rule).
#pragma once

#include "terra/optim/optimizer.hpp"

namespace terra::optim {

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

class SGD : public OptimizerBase<SGDOptions> {
 public:
  SGD(std::vector<Tensor> params, SGDOptions o = {}) : SGD(std::vector<Group>{{std::move(params), o}}) {}
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
