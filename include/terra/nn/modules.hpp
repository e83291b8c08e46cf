// terra/nn/modules.hpp: the standard layers, with PyTorch's default initializations.
#pragma once

#include <cmath>

#include "terra/nn/functional.hpp"
#include "terra/nn/init.hpp"
#include "terra/nn/module.hpp"

namespace terra::nn {

/// x: [*, in] -> [*, out]; weight [out, in] and bias [out] ~ U(-1/sqrt(in), 1/sqrt(in)).
class LinearImpl : public Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias = true) : Module("Linear") {
    TERRA_CHECK(in > 0 && out > 0, "Linear", "sizes must be positive, got ", in, " and ", out);
    weight = register_parameter("weight", empty({out, in}));
    init::kaiming_uniform_(weight, std::sqrt(5.0));
    if (bias) {
      this->bias = register_parameter("bias", empty({out}));
      double b = 1.0 / std::sqrt(double(in));
      init::uniform_(this->bias, -b, b);
    }
  }
  Tensor forward(const Tensor& x) override { return linear(x, weight, bias); }
  Tensor weight, bias;
};
TERRA_MODULE(Linear);

struct Conv2dOptions {
  IntPair stride = 1, padding = 0, dilation = 1;
  int64_t groups = 1;
  bool bias = true;
};
/// x: [N, in, H, W] -> [N, out, H', W'].
class Conv2dImpl : public Module {
 public:
  Conv2dImpl(int64_t in, int64_t out, IntPair kernel, Conv2dOptions o = {}) : Module("Conv2d"), o_(o) {
    TERRA_CHECK(in > 0 && out > 0 && o.groups > 0 && in % o.groups == 0 && out % o.groups == 0,
                "Conv2d", "channels ", in, " -> ", out, " must be positive and divisible by groups ", o.groups);
    weight = register_parameter("weight", empty({out, in / o.groups, kernel.h, kernel.w}));
    init::kaiming_uniform_(weight, std::sqrt(5.0));
    if (o.bias) {
      bias = register_parameter("bias", empty({out}));
      double b = 1.0 / std::sqrt(init::fans(weight).first);
      init::uniform_(bias, -b, b);
    }
  }
  Tensor forward(const Tensor& x) override {
    return conv2d(x, weight, bias, o_.stride, o_.padding, o_.dilation, o_.groups);
  }
  Tensor weight, bias;

 private:
  Conv2dOptions o_;
};
TERRA_MODULE(Conv2d);

struct BatchNormOptions {
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = true;
  bool track_running_stats = true;
};
/// Normalizes over every dim but the channel dim 1: [N, C] / [N, C, L] (1d) or [N, C, H, W] (2d).
class BatchNormImpl : public Module {
 public:
  BatchNormImpl(int64_t features, BatchNormOptions o, const char* name, int rank)
      : Module(name), o_(o), rank_(rank) {
    if (o.affine) {
      weight = register_parameter("weight", ones({features}));
      bias = register_parameter("bias", zeros({features}));
    }
    if (o.track_running_stats) {
      running_mean = register_buffer("running_mean", zeros({features}));
      running_var = register_buffer("running_var", ones({features}));
      num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, {.dtype = kInt64}));
    }
  }
  Tensor forward(const Tensor& x) override {
    TERRA_CHECK(rank_ == 0 ? (x.dim() == 2 || x.dim() == 3) : x.dim() == 4, name(),
                "got input of shape ", x.shape());
    bool use_batch = is_training() || !o_.track_running_stats;
    if (is_training() && o_.track_running_stats) {
      NoGradGuard no_grad;
      num_batches_tracked.add_(ones_like(num_batches_tracked));
    }
    return batch_norm(x, weight, bias, running_mean, running_var, use_batch, o_.momentum, o_.eps);
  }
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  BatchNormOptions o_;
  int rank_;
};
class BatchNorm1dImpl : public BatchNormImpl {
 public:
  explicit BatchNorm1dImpl(int64_t f, BatchNormOptions o = {}) : BatchNormImpl(f, o, "BatchNorm1d", 0) {}
};
class BatchNorm2dImpl : public BatchNormImpl {
 public:
  explicit BatchNorm2dImpl(int64_t f, BatchNormOptions o = {}) : BatchNormImpl(f, o, "BatchNorm2d", 2) {}
};
TERRA_MODULE(BatchNorm1d);
TERRA_MODULE(BatchNorm2d);

/// Normalizes over the trailing dims given by normalized_shape.
class LayerNormImpl : public Module {
 public:
  LayerNormImpl(Shape normalized_shape, double eps = 1e-5, bool affine = true)
      : Module("LayerNorm"), shape_(std::move(normalized_shape)), eps_(eps) {
    if (affine) {
      weight = register_parameter("weight", ones(shape_));
      bias = register_parameter("bias", zeros(shape_));
    }
  }
  Tensor forward(const Tensor& x) override { return layer_norm(x, shape_, weight, bias, eps_); }
  Tensor weight, bias;

 private:
  Shape shape_;
  double eps_;
};
TERRA_MODULE(LayerNorm);

/// indices (any shape, int64) -> [*, dim]; weight ~ N(0, 1).
class EmbeddingImpl : public Module {
 public:
  EmbeddingImpl(int64_t num, int64_t dim) : Module("Embedding") {
    TERRA_CHECK(num > 0 && dim > 0, "Embedding", "sizes must be positive, got ", num, " and ", dim);
    weight = register_parameter("weight", empty({num, dim}));
    init::normal_(weight);
  }
  Tensor forward(const Tensor& idx) override { return embedding(weight, idx); }
  Tensor weight;
};
TERRA_MODULE(Embedding);

class DropoutImpl : public Module {
 public:
  explicit DropoutImpl(double p = 0.5) : Module("Dropout"), p_(p) {
    TERRA_CHECK(p >= 0 && p <= 1, "Dropout", "p must be in [0, 1], got ", p);
  }
  Tensor forward(const Tensor& x) override { return dropout(x, p_, is_training()); }

 private:
  double p_;
};
TERRA_MODULE(Dropout);

// Parameterless layers.
#define TERRA_FN_MODULE(Name, expr)                              \
  class Name##Impl : public Module {                             \
   public:                                                       \
    Name##Impl() : Module(#Name) {}                              \
    Tensor forward(const Tensor& x) override { return expr; }    \
  };                                                             \
  TERRA_MODULE(Name)
TERRA_FN_MODULE(ReLU, relu(x));
TERRA_FN_MODULE(SiLU, silu(x));
TERRA_FN_MODULE(Tanh, tanh(x));
TERRA_FN_MODULE(Sigmoid, sigmoid(x));
#undef TERRA_FN_MODULE

class GELUImpl : public Module {
 public:
  explicit GELUImpl(std::string approximate = "none") : Module("GELU"), approx_(std::move(approximate)) {}
  Tensor forward(const Tensor& x) override { return gelu(x, approx_); }

 private:
  std::string approx_;
};
TERRA_MODULE(GELU);

class MaxPool2dImpl : public Module {
 public:
  MaxPool2dImpl(IntPair kernel, std::optional<IntPair> stride = {}, IntPair padding = 0)
      : Module("MaxPool2d"), k_(kernel), s_(stride), p_(padding) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, k_, s_, p_); }

 private:
  IntPair k_;
  std::optional<IntPair> s_;
  IntPair p_;
};
TERRA_MODULE(MaxPool2d);

class AdaptiveAvgPool2dImpl : public Module {
 public:
  explicit AdaptiveAvgPool2dImpl(IntPair out) : Module("AdaptiveAvgPool2d"), out_(out) {}
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, out_); }

 private:
  IntPair out_;
};
TERRA_MODULE(AdaptiveAvgPool2d);

class FlattenImpl : public Module {
 public:
  explicit FlattenImpl(int64_t start = 1, int64_t end = -1) : Module("Flatten"), s_(start), e_(end) {}
  Tensor forward(const Tensor& x) override { return x.flatten(s_, e_); }

 private:
  int64_t s_, e_;
};
TERRA_MODULE(Flatten);

/// Modules applied in order; each must map one tensor to one.
class SequentialImpl : public Module {
 public:
  SequentialImpl() : Module("Sequential") {}
  template <class... M>
  explicit SequentialImpl(M... modules) : Module("Sequential") {
    (push_back(std::move(modules)), ...);
  }
  template <class M>
  void push_back(M m) {
    register_module(std::to_string(named_children().size()), std::move(m));
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (auto& [n, c] : named_children()) {
      trace::ModuleScope scope(c.get());
      h = c->forward(h);
    }
    return h;
  }
  size_t size() const { return named_children().size(); }
  std::shared_ptr<Module> operator[](size_t i) const { return named_children().at(i).second; }
};
TERRA_MODULE(Sequential);

/// A list of submodules, registered as "0", "1", ...
class ModuleListImpl : public Module {
 public:
  ModuleListImpl() : Module("ModuleList") {}
  template <class M>
  void push_back(M m) {
    register_module(std::to_string(named_children().size()), std::move(m));
  }
  size_t size() const { return named_children().size(); }
  std::shared_ptr<Module> operator[](size_t i) const { return named_children().at(i).second; }
  template <class T>
  std::shared_ptr<T> at(size_t i) const { return std::dynamic_pointer_cast<T>((*this)[i]); }
};
TERRA_MODULE(ModuleList);

}  // namespace terra::nn
