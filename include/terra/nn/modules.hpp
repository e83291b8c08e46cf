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
  /// A layer mapping `in` features to `out` (both > 0, else throws); bias = false leaves
  /// `bias` undefined. Same initialization as torch::nn::Linear.
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
  ///@{
  /// weight: [out, in] (y = x @ weight^T + bias); bias: [out], undefined without bias.
  Tensor weight, bias;
  ///@}
};
/// nn::Linear: the holder of a LinearImpl (`nn::Linear fc(784, 256); Tensor y = fc(x);`).
TERRA_MODULE(Linear);

/// Options of nn::Conv2d beyond the channels and kernel size, set by designated initializers.
/// Name the type, since the holder forwards its arguments:
/// `nn::Conv2d(3, 16, 3, nn::Conv2dOptions{.padding = 1})`.
struct Conv2dOptions {
  ///@{
  /// Window step; zero padding added on both sides of H and W; spacing between kernel taps.
  /// An int means the same for H and W, {h, w} sets them apart (as torch's Conv2dOptions).
  IntPair stride = 1, padding = 0, dilation = 1;
  ///@}
  /// Channel groups: in and out channels must both be divisible by it; groups == in makes a
  /// depthwise convolution.
  int64_t groups = 1;
  /// Whether the layer has a learnable bias [out].
  bool bias = true;
};
/// x: [N, in, H, W] -> [N, out, H', W'].
class Conv2dImpl : public Module {
 public:
  /// A 2-D convolution from `in` to `out` channels with a `kernel` window; throws unless the
  /// channels are positive and divisible by o.groups. Initialized as torch::nn::Conv2d.
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
  ///@{
  /// weight: [out, in / groups, kernel.h, kernel.w]; bias: [out], undefined if !o.bias.
  Tensor weight, bias;
  ///@}

 private:
  Conv2dOptions o_;
};
/// nn::Conv2d: the holder of a Conv2dImpl (`nn::Conv2d conv(3, 16, 3);`).
TERRA_MODULE(Conv2d);

/// Options of nn::ConvTranspose2d, as torch's ConvTranspose2dOptions (no groups, dilation 1).
struct ConvTranspose2dOptions {
  IntPair stride = 1;          ///< the stride of the conv2d this layer is the gradient of
  IntPair padding = 0;         ///< removed from each border of the output
  IntPair output_padding = 0;  ///< added to one side of the output (less than the stride)
  bool bias = true;            ///< whether to learn a per-channel `bias`
};
/// x: [N, in, H, W] -> [N, out, (H - 1) * stride - 2 * padding + k + output_padding, ...].
/// weight [in, out, kH, kW], initialized as PyTorch does (fan-in taken from weight dim 1).
class ConvTranspose2dImpl : public Module {
 public:
  /// `in` -> `out` channels with a kernel of `kernel` (one size or {h, w}).
  ConvTranspose2dImpl(int64_t in, int64_t out, IntPair kernel, ConvTranspose2dOptions o = {})
      : Module("ConvTranspose2d"), o_(o) {
    TERRA_CHECK(in > 0 && out > 0, "ConvTranspose2d", "channels ", in, " -> ", out,
                " must be positive");
    weight = register_parameter("weight", empty({in, out, kernel.h, kernel.w}));
    init::kaiming_uniform_(weight, std::sqrt(5.0));
    if (o.bias) {
      bias = register_parameter("bias", empty({out}));
      double b = 1.0 / std::sqrt(init::fans(weight).first);
      init::uniform_(bias, -b, b);
    }
  }
  /// conv_transpose2d(x, weight, bias, stride, padding, output_padding).
  Tensor forward(const Tensor& x) override {
    return conv_transpose2d(x, weight, bias, o_.stride, o_.padding, o_.output_padding);
  }
  Tensor weight;  ///< [in, out, kH, kW]
  Tensor bias;    ///< [out], undefined without bias

 private:
  ConvTranspose2dOptions o_;
};
/// nn::ConvTranspose2d: the holder of a ConvTranspose2dImpl (`nn::ConvTranspose2d up(16, 8, 4,
/// nn::ConvTranspose2dOptions{.stride = 2, .padding = 1});`).
TERRA_MODULE(ConvTranspose2d);

/// Options of nn::BatchNorm1d / nn::BatchNorm2d, as torch's BatchNormOptions.
struct BatchNormOptions {
  /// Added to the variance before the square root, for stability.
  double eps = 1e-5;
  /// Weight of the new batch statistic in the running average:
  /// running = (1 - momentum) * running + momentum * batch_stat (PyTorch's convention).
  double momentum = 0.1;
  /// Whether to learn a per-channel scale (`weight`, init 1) and shift (`bias`, init 0).
  bool affine = true;
  /// Whether to keep running_mean / running_var; without them eval mode normalizes with the
  /// batch statistics too.
  bool track_running_stats = true;
};
/// Normalizes over every dim but the channel dim 1: [N, C] / [N, C, L] (1d) or [N, C, H, W] (2d).
class BatchNormImpl : public Module {
 public:
  /// The shared implementation of BatchNorm1d (rank 0: [N, C] or [N, C, L]) and BatchNorm2d
  /// (rank 2: [N, C, H, W]) over `features` channels; use those two, not this directly.
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
  ///@{
  /// Parameters weight / bias: [C] (undefined unless affine). Buffers running_mean (init 0),
  /// running_var (init 1): [C], and num_batches_tracked: 0-d int64, counting training
  /// forwards; undefined unless track_running_stats. Training uses the batch mean and biased
  /// variance and updates the running stats (with the unbiased variance); eval uses them.
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  ///@}

 private:
  BatchNormOptions o_;
  int rank_;
};
/// Batch normalization of [N, C] or [N, C, L] inputs over dim 1 (see BatchNormImpl).
class BatchNorm1dImpl : public BatchNormImpl {
 public:
  /// Batch normalization over f channels of [N, C] or [N, C, L] inputs (throws on other
  /// ranks); torch::nn::BatchNorm1d.
  explicit BatchNorm1dImpl(int64_t f, BatchNormOptions o = {}) : BatchNormImpl(f, o, "BatchNorm1d", 0) {}
};
/// Batch normalization of [N, C, H, W] inputs over dim 1 (see BatchNormImpl).
class BatchNorm2dImpl : public BatchNormImpl {
 public:
  /// Batch normalization over f channels of [N, C, H, W] inputs (throws on other ranks);
  /// torch::nn::BatchNorm2d.
  explicit BatchNorm2dImpl(int64_t f, BatchNormOptions o = {}) : BatchNormImpl(f, o, "BatchNorm2d", 2) {}
};
/// nn::BatchNorm1d: the holder of a BatchNorm1dImpl (`nn::BatchNorm1d bn(64);`).
TERRA_MODULE(BatchNorm1d);
/// nn::BatchNorm2d: the holder of a BatchNorm2dImpl (`nn::BatchNorm2d bn(64);`).
TERRA_MODULE(BatchNorm2d);

/// Normalizes over the trailing dims given by normalized_shape.
class LayerNormImpl : public Module {
 public:
  /// Layer normalization over the trailing dims `normalized_shape` (e.g. Shape{512} for
  /// [B, T, 512]); eps is added to the variance; affine adds weight (init 1) and bias (init 0).
  LayerNormImpl(Shape normalized_shape, double eps = 1e-5, bool affine = true)
      : Module("LayerNorm"), shape_(std::move(normalized_shape)), eps_(eps) {
    if (affine) {
      weight = register_parameter("weight", ones(shape_));
      bias = register_parameter("bias", zeros(shape_));
    }
  }
  Tensor forward(const Tensor& x) override { return layer_norm(x, shape_, weight, bias, eps_); }
  ///@{
  /// weight and bias: normalized_shape; undefined unless affine.
  Tensor weight, bias;
  ///@}

 private:
  Shape shape_;
  double eps_;
};
/// nn::LayerNorm: the holder of a LayerNormImpl (`nn::LayerNorm ln(Shape{512});`).
TERRA_MODULE(LayerNorm);

/// indices (any shape, int64) -> [*, dim]; weight ~ N(0, 1).
class EmbeddingImpl : public Module {
 public:
  /// A lookup table of `num` vectors of size `dim` (both > 0, else throws).
  EmbeddingImpl(int64_t num, int64_t dim) : Module("Embedding") {
    TERRA_CHECK(num > 0 && dim > 0, "Embedding", "sizes must be positive, got ", num, " and ", dim);
    weight = register_parameter("weight", empty({num, dim}));
    init::normal_(weight);
  }
  Tensor forward(const Tensor& idx) override { return embedding(weight, idx); }
  /// weight: [num, dim], row i is the vector of index i.
  Tensor weight;
};
/// nn::Embedding: the holder of an EmbeddingImpl (`nn::Embedding emb(vocab, 512);`).
TERRA_MODULE(Embedding);

/// x -> x's shape: in training mode zeroes each element with probability p and scales the
/// others by 1 / (1 - p); in eval mode returns x unchanged. Draws from the calling thread's
/// generator (manual_seed / thread_manual_seed make it reproducible).
class DropoutImpl : public Module {
 public:
  /// p: the probability of zeroing an element, in [0, 1] (throws otherwise).
  explicit DropoutImpl(double p = 0.5) : Module("Dropout"), p_(p) {
    TERRA_CHECK(p >= 0 && p <= 1, "Dropout", "p must be in [0, 1], got ", p);
  }
  Tensor forward(const Tensor& x) override { return dropout(x, p_, is_training()); }

 private:
  double p_;
};
/// nn::Dropout: the holder of a DropoutImpl (`nn::Dropout drop(0.1);`).
TERRA_MODULE(Dropout);

// Parameterless layers.
#define TERRA_FN_MODULE(Name, expr)                              \
  class Name##Impl : public Module {                             \
   public:                                                       \
    Name##Impl() : Module(#Name) {}                              \
    Tensor forward(const Tensor& x) override { return expr; }    \
  };                                                             \
  TERRA_MODULE(Name)
/// nn::ReLU: max(x, 0) elementwise, as a module (for Sequential); no parameters.
TERRA_FN_MODULE(ReLU, relu(x));
/// nn::SiLU: x * sigmoid(x) elementwise, as a module; no parameters.
TERRA_FN_MODULE(SiLU, silu(x));
/// nn::Tanh: tanh(x) elementwise, as a module; no parameters.
TERRA_FN_MODULE(Tanh, tanh(x));
/// nn::Sigmoid: 1 / (1 + exp(-x)) elementwise, as a module; no parameters.
TERRA_FN_MODULE(Sigmoid, sigmoid(x));
#undef TERRA_FN_MODULE

/// x -> x's shape: the GELU activation, x * Phi(x); see terra::gelu.
class GELUImpl : public Module {
 public:
  /// approximate: "none" (the exact erf form) or "tanh" (the tanh approximation), as
  /// torch::nn::GELU; any other value throws at the first forward.
  explicit GELUImpl(std::string approximate = "none") : Module("GELU"), approx_(std::move(approximate)) {}
  Tensor forward(const Tensor& x) override { return gelu(x, approx_); }

 private:
  std::string approx_;
};
/// nn::GELU: the holder of a GELUImpl (`nn::GELU act;` or `nn::GELU act("tanh");`).
TERRA_MODULE(GELU);

/// [N, C, H, W] or [C, H, W] -> [..., Ho, Wo]: the max over each kernel window.
class MaxPool2dImpl : public Module {
 public:
  /// stride defaults to the kernel size (non-overlapping windows); padding (at most half the
  /// kernel) pads with -inf, so padded positions never win.
  MaxPool2dImpl(IntPair kernel, std::optional<IntPair> stride = {}, IntPair padding = 0)
      : Module("MaxPool2d"), k_(kernel), s_(stride), p_(padding) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, k_, s_, p_); }

 private:
  IntPair k_;
  std::optional<IntPair> s_;
  IntPair p_;
};
/// nn::MaxPool2d: the holder of a MaxPool2dImpl (`nn::MaxPool2d pool(2);`).
TERRA_MODULE(MaxPool2d);

/// [N, C, H, W] or [C, H, W] -> [..., out.h, out.w]: averages over windows sized to reach
/// the requested output whatever the input size; {1, 1} is global average pooling.
class AdaptiveAvgPool2dImpl : public Module {
 public:
  /// out: the output height and width (an int sets both).
  explicit AdaptiveAvgPool2dImpl(IntPair out) : Module("AdaptiveAvgPool2d"), out_(out) {}
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, out_); }

 private:
  IntPair out_;
};
/// nn::AdaptiveAvgPool2d: the holder of an AdaptiveAvgPool2dImpl (`nn::AdaptiveAvgPool2d
/// gap(1);`).
TERRA_MODULE(AdaptiveAvgPool2d);

/// Tensor::flatten(start, end) as a module: [N, C, H, W] -> [N, C * H * W] by default.
class FlattenImpl : public Module {
 public:
  /// Merges dims start..end (negative counts from the end); the default keeps the batch dim.
  explicit FlattenImpl(int64_t start = 1, int64_t end = -1) : Module("Flatten"), s_(start), e_(end) {}
  Tensor forward(const Tensor& x) override { return x.flatten(s_, e_); }

 private:
  int64_t s_, e_;
};
/// nn::Flatten: the holder of a FlattenImpl (`nn::Flatten flat;`).
TERRA_MODULE(Flatten);

/// Modules applied in order; each must map one tensor to one.
class SequentialImpl : public Module {
 public:
  SequentialImpl() : Module("Sequential") {}
  template <class... M>
  /// Registers the given holders as children "0", "1", ...:
  /// `nn::Sequential net(nn::Linear(784, 256), nn::ReLU(), nn::Linear(256, 10));`.
  explicit SequentialImpl(M... modules) : Module("Sequential") {
    (push_back(std::move(modules)), ...);
  }
  template <class M>
  /// Appends a module (a holder or shared_ptr) as the next child, named by its position.
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
  /// Number of children.
  size_t size() const { return named_children().size(); }
  /// Child i as a Module pointer (throws std::out_of_range past the end); cast it with
  /// std::dynamic_pointer_cast<LinearImpl> to reach a layer's members.
  std::shared_ptr<Module> operator[](size_t i) const { return named_children().at(i).second; }
};
/// nn::Sequential: the holder of a SequentialImpl; net(x) runs the children in order.
TERRA_MODULE(Sequential);

/// A list of submodules, registered as "0", "1", ...
class ModuleListImpl : public Module {
 public:
  ModuleListImpl() : Module("ModuleList") {}
  template <class M>
  /// Appends a module (a holder or shared_ptr) as child "size()"; its parameters become
  /// "<i>.weight", ... of this list.
  void push_back(M m) {
    register_module(std::to_string(named_children().size()), std::move(m));
  }
  /// Number of modules in the list.
  size_t size() const { return named_children().size(); }
  /// Module i as a Module pointer (throws std::out_of_range past the end).
  std::shared_ptr<Module> operator[](size_t i) const { return named_children().at(i).second; }
  template <class T>
  /// Module i cast to its Impl type, e.g. list->at<LinearImpl>(0); null when it is another
  /// type, std::out_of_range past the end.
  std::shared_ptr<T> at(size_t i) const { return std::dynamic_pointer_cast<T>((*this)[i]); }
};
/// nn::ModuleList: the holder of a ModuleListImpl.
TERRA_MODULE(ModuleList);

}  // namespace terra::nn
