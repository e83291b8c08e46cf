// terra/optim/optimizer.hpp: the optimizer interface and parameter groups.
// Every update is written with public in-place ops under NoGradGuard, so parameters and state
// keep their addresses and a step is recorded, traced and co-executed like any other code.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "terra/autograd/engine.hpp"

namespace terra::optim {

/// Per-parameter state: named tensors (e.g. "exp_avg") and a step count.
struct ParamState {
  std::map<std::string, Tensor> tensors;
  int64_t step = 0;
};

/// Optimizers keep groups of parameters with their own options (learning rate, decay...).
template <class Options>
struct ParamGroup {
  std::vector<Tensor> params;
  Options options;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One update of every parameter that has a gradient.
  virtual void step() = 0;
  virtual size_t num_groups() const = 0;
  virtual double lr(size_t group = 0) const = 0;
  virtual void set_lr(double lr, size_t group) = 0;
  /// Every group's learning rate.
  void set_lr(double lr) {
    for (size_t g = 0; g < num_groups(); ++g) set_lr(lr, g);
  }
  virtual std::vector<Tensor> parameters() const = 0;

  /// Zero every gradient in place (addresses stay fixed), or drop them with set_to_none.
  void zero_grad(bool set_to_none = false) {
    for (Tensor p : parameters()) {
      if (!p.grad().defined()) continue;
      if (set_to_none) {
        p.mutable_grad() = Tensor();
      } else {
        NoGradGuard no_grad;
        p.mutable_grad().zero_();
      }
    }
  }

  /// State of parameter i (in parameters() order), created on first use.
  ParamState& state(size_t i) {
    if (state_.size() <= i) state_.resize(i + 1);
    return state_[i];
  }
  const std::vector<ParamState>& states() const { return state_; }
  std::vector<ParamState>& mutable_states() { return state_; }

 protected:
  std::vector<ParamState> state_;
};

/// Groups + options handling shared by the concrete optimizers.
template <class Options>
class OptimizerBase : public Optimizer {
 public:
  using Group = ParamGroup<Options>;
  OptimizerBase(std::vector<Group> groups, const char* name) : groups_(std::move(groups)) {
    for (const Group& g : groups_)
      for (const Tensor& p : g.params) {
        TERRA_CHECK(p.defined() && p.is_leaf() && is_floating(p.dtype()), name,
                    "parameters must be defined floating leaf tensors");
      }
  }
  size_t num_groups() const override { return groups_.size(); }
  double lr(size_t g = 0) const override { return groups_.at(g).options.lr; }
  void set_lr(double lr, size_t g) override { groups_.at(g).options.lr = lr; }
  using Optimizer::set_lr;
  std::vector<Tensor> parameters() const override {
    std::vector<Tensor> all;
    for (const Group& g : groups_) all.insert(all.end(), g.params.begin(), g.params.end());
    return all;
  }
  std::vector<Group>& param_groups() { return groups_; }
  void add_param_group(Group g) { groups_.push_back(std::move(g)); }

 protected:
  /// f(param, grad, state, options) for each parameter with a gradient, without recording.
  template <class F>
  void for_each_param(F&& f) {
    NoGradGuard no_grad;
    size_t i = 0;
    for (Group& g : groups_)
      for (Tensor& p : g.params) {
        if (p.grad().defined()) f(p, p.grad(), state(i), g.options);
        ++i;
      }
  }

  std::vector<Group> groups_;
};

/// Scales all gradients so that their joint L2 norm is at most max_norm; returns the norm
/// before clipping as a 0-d float64 tensor. No host read: a co-executed step keeps going.
inline Tensor clip_grad_norm_tensor_(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  Tensor total;
  for (const Tensor& p : params) {
    if (!p.grad().defined()) continue;
    Tensor g = p.grad().to(DType::Float64);
    Tensor sq = (g * g).sum();
    total = total.defined() ? total + sq : sq;
  }
  if (!total.defined()) return zeros({}, {.dtype = DType::Float64});
  Tensor norm = total.sqrt();
  // Always scale, by min(1, max_norm / norm): no host decision, so the step stays one graph.
  Tensor coef = (max_norm / (norm + 1e-6)).clamp(-1e300, 1.0);
  for (Tensor p : params)
    if (p.grad().defined()) p.mutable_grad().mul_(coef.to(p.grad().dtype()));
  return norm;
}

/// As clip_grad_norm_tensor_, returning the norm as a number (LibTorch's signature; reading
/// it waits for the gradients, so prefer clip_grad_norm_tensor_ inside co-executed loops).
inline double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  return clip_grad_norm_tensor_(params, max_norm).item<double>();
}

}  // namespace terra::optim
