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
  /// The optimizer's buffers for this parameter, by PyTorch's names ("momentum_buffer",
  /// "exp_avg", "exp_avg_sq", "square_avg", "grad_avg"); each has the parameter's shape.
  std::map<std::string, Tensor> tensors;
  /// Number of updates applied to this parameter (Adam's bias correction uses it).
  int64_t step = 0;
};

/// Optimizers keep groups of parameters with their own options (learning rate, decay...).
template <class Options>
struct ParamGroup {
  /// The parameters of this group (handles of the model's tensors, not copies).
  std::vector<Tensor> params;
  /// This group's hyperparameters (lr, weight_decay, ...); schedulers change options.lr.
  Options options;
};

/// The interface every optimizer implements, as torch::optim::Optimizer: step(),
/// zero_grad(), per-group learning rates and per-parameter state. Schedulers and
/// checkpoints (save/load of the state) work through it.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One update of every parameter that has a gradient.
  virtual void step() = 0;
  /// Number of parameter groups (1 unless built from several groups or add_param_group()).
  virtual size_t num_groups() const = 0;
  /// Learning rate of `group` (throws std::out_of_range for a group that does not exist).
  virtual double lr(size_t group = 0) const = 0;
  /// Sets the learning rate of one group; what the schedulers call.
  virtual void set_lr(double lr, size_t group) = 0;
  /// Every group's learning rate.
  void set_lr(double lr) {
    for (size_t g = 0; g < num_groups(); ++g) set_lr(lr, g);
  }
  /// Every parameter, group after group: the order that state(i) and checkpoints use.
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
  /// The state of every parameter that has been stepped, in parameters() order (the vector
  /// may be shorter than parameters() before the first step()).
  const std::vector<ParamState>& states() const { return state_; }
  /// states(), writable: checkpoint loading restores the optimizer through it.
  std::vector<ParamState>& mutable_states() { return state_; }

 protected:
  /// state_[i]: the state of parameter i of parameters(), grown on demand by state(i).
  std::vector<ParamState> state_;
};

/// Groups + options handling shared by the concrete optimizers.
template <class Options>
class OptimizerBase : public Optimizer {
 public:
  /// One group: parameters and the options they share.
  using Group = ParamGroup<Options>;
  /// Takes the groups; throws terra::Error (naming the optimizer `name`) unless every
  /// parameter is a defined floating leaf tensor (take model->parameters(), not results of ops).
  OptimizerBase(std::vector<Group> groups, const char* name) : groups_(std::move(groups)) {
    for (const Group& g : groups_)
      for (const Tensor& p : g.params) {
        TERRA_CHECK(p.defined() && p.is_leaf() && is_floating(p.dtype()), name,
                    "parameters must be defined floating leaf tensors");
      }
  }
  /// Number of parameter groups.
  size_t num_groups() const override { return groups_.size(); }
  /// groups_[g].options.lr; throws std::out_of_range for a missing group.
  double lr(size_t g = 0) const override { return groups_.at(g).options.lr; }
  /// Sets groups_[g].options.lr; throws std::out_of_range for a missing group.
  void set_lr(double lr, size_t g) override { groups_.at(g).options.lr = lr; }
  using Optimizer::set_lr;
  /// Every group's parameters concatenated, in group order.
  std::vector<Tensor> parameters() const override {
    std::vector<Tensor> all;
    for (const Group& g : groups_) all.insert(all.end(), g.params.begin(), g.params.end());
    return all;
  }
  /// The groups, writable: change a group's options (e.g. weight_decay) between steps, as
  /// with torch's param_groups().
  std::vector<Group>& param_groups() { return groups_; }
  /// Appends a group (e.g. layers unfrozen later) with its own options; its parameters
  /// follow the existing ones in parameters() order. Unlike the constructor, it does not
  /// validate the parameters.
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

  /// The parameter groups, in order.
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
