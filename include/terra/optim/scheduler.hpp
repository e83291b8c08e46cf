// terra/optim/scheduler.hpp: learning-rate schedules. Each step() sets every group's learning
// rate from a closed form of the step count, so a schedule may change the rate every step
// (co-execution feeds it as a scalar instead of re-tracing).
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "terra/optim/optimizer.hpp"

namespace terra::optim {

/// Base of the learning-rate schedules: remembers each group's learning rate at
/// construction as its base and, on every step(), sets lr_at(step_count(), group). Call
/// step() once per optimizer step (or per epoch, if the schedule counts epochs), after
/// opt.step(), as in PyTorch. The optimizer must outlive the scheduler.
class LRScheduler {
 public:
  /// Reads the current learning rate of every group of opt as its base rate.
  explicit LRScheduler(Optimizer& opt) : opt_(opt) {
    for (size_t g = 0; g < opt.num_groups(); ++g) base_lrs_.push_back(opt.lr(g));
  }
  virtual ~LRScheduler() = default;
  /// Advance one step (or epoch) and set the new rates.
  void step() {
    ++count_;
    apply();
  }
  /// Number of step() calls so far.
  int64_t step_count() const { return count_; }
  /// The learning rate the optimizer has now for `group` (PyTorch's get_last_lr()).
  double last_lr(size_t group = 0) const { return opt_.lr(group); }
  /// The rate of `group` after `count` steps.
  virtual double lr_at(int64_t count, size_t group) const = 0;

 protected:
  /// Sets every group's learning rate to lr_at(count_, group).
  void apply() {
    for (size_t g = 0; g < base_lrs_.size(); ++g) opt_.set_lr(lr_at(count_, g), g);
  }
  /// The optimizer whose learning rates this schedule sets.
  Optimizer& opt_;
  /// Each group's learning rate when the scheduler was made.
  std::vector<double> base_lrs_;
  /// step() calls so far.
  int64_t count_ = 0;
};

/// lr = base * gamma^(count / step_size)
class StepLR : public LRScheduler {
 public:
  /// Multiplies the rate by gamma every step_size steps (> 0, else throws); torch's StepLR.
  StepLR(Optimizer& opt, int64_t step_size, double gamma = 0.1)
      : LRScheduler(opt), step_size_(step_size), gamma_(gamma) {
    TERRA_CHECK(step_size > 0, "StepLR", "step_size must be positive, got ", step_size);
  }
  double lr_at(int64_t c, size_t g) const override {
    return base_lrs_[g] * std::pow(gamma_, double(c / step_size_));
  }

 private:
  int64_t step_size_;
  double gamma_;
};

/// lr = base * gamma^(number of milestones passed)
class MultiStepLR : public LRScheduler {
 public:
  /// Multiplies the rate by gamma at each milestone step (in any order); torch's MultiStepLR.
  MultiStepLR(Optimizer& opt, std::vector<int64_t> milestones, double gamma = 0.1)
      : LRScheduler(opt), milestones_(std::move(milestones)), gamma_(gamma) {
    std::sort(milestones_.begin(), milestones_.end());
  }
  double lr_at(int64_t c, size_t g) const override {
    auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), c) - milestones_.begin();
    return base_lrs_[g] * std::pow(gamma_, double(passed));
  }

 private:
  std::vector<int64_t> milestones_;
  double gamma_;
};

/// lr = eta_min + (base - eta_min) * (1 + cos(pi * min(count, t_max) / t_max)) / 2
class CosineAnnealingLR : public LRScheduler {
 public:
  /// Anneals from the base rate to eta_min over t_max steps (> 0, else throws) along half a
  /// cosine, then stays at eta_min (PyTorch's closed form, without restarts).
  CosineAnnealingLR(Optimizer& opt, int64_t t_max, double eta_min = 0)
      : LRScheduler(opt), t_max_(t_max), eta_min_(eta_min) {
    TERRA_CHECK(t_max > 0, "CosineAnnealingLR", "t_max must be positive, got ", t_max);
  }
  double lr_at(int64_t c, size_t g) const override {
    double t = double(std::min(c, t_max_)) / double(t_max_);
    return eta_min_ + (base_lrs_[g] - eta_min_) * (1 + std::cos(M_PI * t)) / 2;
  }

 private:
  int64_t t_max_;
  double eta_min_;
};

/// Linear warm-up from base * start_factor to base over `warmup` steps, then constant.
class LinearWarmupLR : public LRScheduler {
 public:
  /// Sets the step-0 rate base * start_factor at once, then rises linearly to the base rate
  /// over `warmup` steps (> 0, else throws); torch's LinearLR with end_factor 1.
  LinearWarmupLR(Optimizer& opt, int64_t warmup, double start_factor = 0.0)
      : LRScheduler(opt), warmup_(warmup), start_(start_factor) {
    TERRA_CHECK(warmup > 0, "LinearWarmupLR", "warmup must be positive, got ", warmup);
    apply();  // step 0 already uses the warm-up rate
  }
  double lr_at(int64_t c, size_t g) const override {
    double f = start_ + (1.0 - start_) * std::min(1.0, double(c) / double(warmup_));
    return base_lrs_[g] * f;
  }

 private:
  int64_t warmup_;
  double start_;
};

}  // namespace terra::optim
