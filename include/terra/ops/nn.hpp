// terra/ops/nn.hpp: softmax, log_softmax, layer_norm, batch_norm, dropout.
// Normalizations also return their statistics (mean and reciprocal std) for the backward
// pass; those are float32 for float16/bfloat16 inputs, else the input's dtype.
#pragma once

#include <array>
#include <tuple>
#include <utility>

#include "terra/ops/factory.hpp"
#include "terra/ops/shape.hpp"

namespace terra::op {

inline void check_floating(const Tensor& t, const char* what, const char* name) {
  TERRA_CHECK(is_floating(t.dtype()), name, "expects a floating ", what, ", got ", t.dtype());
}
// The dtype of normalization statistics.
inline DType stats_dtype(DType x) { return is_reduced_float(x) ? DType::Float32 : x; }

// attrs.ints = {dim}. x: any shape, floating -> x's shape.
struct Softmax : Stateless {
  static constexpr uint8_t saves = kSaveOutputs;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    check_floating(x, "input", op_name(c.op));
    wrap_dim(c.attrs.ints[0], x.dim(), op_name(c.op));
    out.push_back(detail::meta(x.shape(), x.dtype(), x.device()));
  }
};
struct LogSoftmax : Softmax {
  TERRA_VJP;
};

// inputs: x, then weight and bias when present. attrs.ints = {has_weight, has_bias,
// normalized_shape...}, attrs.scalars = {eps}.
// x: [*, *normalized_shape], weight/bias: normalized_shape -> (y: x's shape, mean: [*], rstd: [*]).
// The vjp reads x, weight, mean and rstd; it also differentiates the mean and rstd outputs.
struct LayerNorm : Stateless {
  static constexpr uint8_t unsaved_outputs = 1;  // y
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    const auto& in = c.attrs.ints;
    Shape ns(in.begin() + 2, in.end());
    check_floating(x, "input", "layer_norm");
    TERRA_CHECK(!ns.empty(), "layer_norm", "normalized_shape must have at least one dim");
    size_t k = ns.size(), r = size_t(x.dim());
    bool fits = r >= k && Shape(x.shape().end() - k, x.shape().end()) == ns;
    TERRA_CHECK(fits, "layer_norm", "normalized_shape ", ns, " expects an input of shape [*, ",
                shape_str(ns).substr(1), ", got ", x.shape());
    TERRA_CHECK(int64_t(c.inputs.size()) == 1 + in[0] + in[1], "layer_norm", "expects ",
                1 + in[0] + in[1], " inputs, got ", c.inputs.size());
    for (size_t i = 1; i < c.inputs.size(); ++i) {
      const char* what = i == 1 && in[0] ? "weight" : "bias";
      check_floating(c.inputs[i], what, "layer_norm");
      TERRA_CHECK(c.inputs[i].shape() == ns, "layer_norm", what, " of shape ", c.inputs[i].shape(),
                  " must have the normalized_shape ", ns);
    }
    Shape stats(x.shape().begin(), x.shape().end() - k);
    out.push_back(detail::meta(x.shape(), x.dtype(), x.device()));
    out.push_back(detail::meta(stats, stats_dtype(x.dtype()), x.device()));
    out.push_back(detail::meta(stats, stats_dtype(x.dtype()), x.device()));
  }
};

// inputs: x, then those of weight, bias, running_mean, running_var that are present.
// attrs.ints = {has_weight, has_bias, has_running_mean, has_running_var, training},
// attrs.scalars = {momentum, eps}. In training the kernel updates the running stats in place.
// A sixth int, set only by a compiled plan's executor (never by the op's callers), makes the
// CPU kernel write relu(y) instead of y (graph::Plan::epilogue).
// x: [N, C, *] -> (y: x's shape, save_mean: [C], save_invstd: [C]).
// The vjp reads x, weight and the saved statistics. Running stats get no gradient; a training
// call that autograd records gets none as inputs (native_batch_norm updates them itself, see
// there), so no saved input is modified by the kernel.
struct BatchNorm : Stateless {
  static constexpr uint8_t unsaved_outputs = 1;  // y
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    const auto& in = c.attrs.ints;
    check_floating(x, "input", "batch_norm");
    TERRA_CHECK(x.dim() >= 2, "batch_norm", "expects an input of shape [N, C, *], got ", x.shape());
    TERRA_CHECK(int64_t(c.inputs.size()) == 1 + in[0] + in[1] + in[2] + in[3], "batch_norm",
                "input count does not match the presence flags");
    TERRA_CHECK(in[2] == in[3], "batch_norm",
                "running_mean and running_var must be given together");
    TERRA_CHECK(in[4] || in[2], "batch_norm", "evaluation mode needs running_mean and running_var");
    int64_t ch = x.shape()[1];
    const char* names[] = {"weight", "bias", "running_mean", "running_var"};
    for (size_t i = 1, k = 0; i < c.inputs.size(); ++i, ++k) {
      while (!in[k]) ++k;
      check_floating(c.inputs[i], names[k], "batch_norm");
      TERRA_CHECK(c.inputs[i].shape() == Shape{ch}, "batch_norm", names[k], " of shape ",
                  c.inputs[i].shape(), " must be [", ch, "] for an input of shape ", x.shape());
      // The kernel updates running stats in place in their own dtype; 16-bit ones would be
      // upcast copies (native_batch_norm routes those through float32 and copies back).
      TERRA_CHECK(!in[4] || k < 2 || !is_reduced_float(c.inputs[i].dtype()), "batch_norm", names[k],
                  " of dtype ", c.inputs[i].dtype(),
                  " cannot be updated in place by the kernel; use float32");
    }
    int64_t per_channel = ch ? x.numel() / ch : 0;
    TERRA_CHECK(!in[4] || per_channel != 1, "batch_norm",
                "expected more than 1 value per channel when training, got input of shape ",
                x.shape());
    out.push_back(detail::meta(x.shape(), x.dtype(), x.device()));
    out.push_back(detail::meta({ch}, stats_dtype(x.dtype()), x.device()));
    out.push_back(detail::meta({ch}, stats_dtype(x.dtype()), x.device()));
  }
};

// inputs: {grad_out, x, [weight], save_mean, save_invstd} of a training-mode batch_norm
// (x, grad_out: [N, C, *], the others [C], all of one float32/float64 dtype);
// attrs.ints = {has_weight, need_input, need_weight, need_bias} -> the selected gradients in
// that order: grad_input (x's shape), grad_weight [C], grad_bias [C]. With
// xhat = (x - mean) * invstd over the batch and spatial dims of each channel (n values):
// grad_bias = sum(gy), grad_weight = sum(gy * xhat),
// grad_input = invstd * w * (gy - grad_bias / n - xhat * grad_weight / n).
// First order only (no vjp): BatchNorm::vjp uses it when no graph of the backward is built.
struct BatchNormBackward {
  static void infer(const OpCall& c, MetaList& out) {
    const auto& v = c.attrs.ints;
    TERRA_CHECK(v.size() == 4, "batch_norm_backward", "expects 4 attrs.ints, got ", v.size());
    TERRA_CHECK(int64_t(c.inputs.size()) == 4 + v[0], "batch_norm_backward",
                "expects ", 4 + v[0], " inputs, got ", c.inputs.size());
    const Tensor &g = c.inputs[0], &x = c.inputs[1];
    TERRA_CHECK(x.dtype() == DType::Float32 || x.dtype() == DType::Float64,
                "batch_norm_backward", "expected a float32 or float64 input, got ", x.dtype());
    TERRA_CHECK(x.dim() >= 2, "batch_norm_backward", "expects an input of shape [N, C, *], got ",
                x.shape());
    TERRA_CHECK(g.shape() == x.shape(), "batch_norm_backward", "grad_output of shape ", g.shape(),
                " does not match the input shape ", x.shape());
    const int64_t ch = x.shape()[1];
    for (const Tensor& t : c.inputs) {
      TERRA_CHECK(t.dtype() == x.dtype(), "batch_norm_backward", "all inputs must be ", x.dtype(),
                  ", got ", t.dtype());
      TERRA_CHECK(&t == &g || &t == &x || t.shape() == Shape{ch}, "batch_norm_backward",
                  "per-channel input of shape ", t.shape(), " must be [", ch, "] for an input of "
                  "shape ", x.shape());
    }
    TERRA_CHECK(v[1] || v[2] || v[3], "batch_norm_backward", "the output mask selects no gradient");
    if (v[1]) out.push_back(detail::meta(x.shape(), x.dtype(), x.device()));
    if (v[2]) out.push_back(detail::meta({ch}, x.dtype(), x.device()));
    if (v[3]) out.push_back(detail::meta({ch}, x.dtype(), x.device()));
  }
};

// attrs.scalars = {p}, attrs.ints = {train}; seed/offset: the generator state.
// Element i is kept iff PhiloxDraw::uniform_f32(seed, offset + i) >= float(p), so the mask
// equals rand(x.shape()) >= p drawn from the same state; kept elements are scaled by
// 1 / (1 - p) (rounded to x's compute dtype), dropped ones are 0. p == 1 drops everything.
// x: floating -> (y: x's shape, mask: x's shape, bool).
// The vjp reads the mask: grad * mask / (1 - p); not training, the identity.
struct Dropout : Stateless {
  static constexpr uint8_t saves = kSaveOutputs;
  static constexpr uint8_t unsaved_outputs = 1;  // y: the vjp reads the mask alone
  static constexpr bool infer_reads_scalars = true;  // checks p
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    double p = c.attrs.scalars[0];
    check_floating(x, "input", "dropout");
    TERRA_CHECK(p >= 0.0 && p <= 1.0, "dropout", "probability must be in [0, 1], got ", p);
    out.push_back(detail::meta(x.shape(), x.dtype(), x.device()));
    out.push_back(detail::meta(x.shape(), DType::Bool, x.device()));
  }
};

}  // namespace terra::op

namespace terra {

/// x: any shape -> x's shape, exp(x) / sum(exp(x)) along dim.
inline Tensor softmax(const Tensor& x, int64_t dim, Loc loc = Loc::current()) {
  Attrs a;
  a.ints = {dim};
  return detail::unary(Op::Softmax, x, loc, std::move(a));
}
/// x: any shape -> x's shape, x - log(sum(exp(x))) along dim.
inline Tensor log_softmax(const Tensor& x, int64_t dim, Loc loc = Loc::current()) {
  Attrs a;
  a.ints = {dim};
  return detail::unary(Op::LogSoftmax, x, loc, std::move(a));
}

/// x: [*, *normalized_shape], weight/bias (optional): normalized_shape
/// -> (y: x's shape, mean: [*], rstd: [*]).
inline std::tuple<Tensor, Tensor, Tensor> native_layer_norm(
    const Tensor& x, const Shape& normalized_shape, const Tensor& weight = {},
    const Tensor& bias = {}, double eps = 1e-5, Loc loc = Loc::current()) {
  SmallVector<Tensor, 3> in{x};
  Attrs a;
  a.ints = {weight.defined(), bias.defined()};
  for (int64_t d : normalized_shape) a.ints.push_back(d);
  a.scalars = {eps};
  if (weight.defined()) in.push_back(weight);
  if (bias.defined()) in.push_back(bias);
  OutList o =
      dispatch({.op = Op::LayerNorm, .inputs = {in.data(), in.size()}, .attrs = a, .loc = loc});
  return {o[0], o[1], o[2]};
}
/// x: [*, *normalized_shape] -> x's shape, normalized over the trailing normalized_shape.
inline Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight = {},
                         const Tensor& bias = {}, double eps = 1e-5, Loc loc = Loc::current()) {
  return std::get<0>(native_layer_norm(x, normalized_shape, weight, bias, eps, loc));
}

namespace autograd {
inline bool& grad_mode_flag();
}  // namespace autograd

namespace detail {
// Whether autograd would record a call with these inputs.
inline bool nn_records(std::initializer_list<const Tensor*> ts) {
  if (!autograd::grad_mode_flag()) return false;
  for (const Tensor* t : ts)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}
std::tuple<Tensor, Tensor, Tensor> batch_norm_recorded(const Tensor& x, const Tensor& weight,
                                                       const Tensor& bias, const Tensor& rm,
                                                       const Tensor& rv, double momentum,
                                                       double eps, Loc loc);
}  // namespace detail

/// x: [N, C, *]; weight, bias, running_mean, running_var: [C], each optional (running stats
/// required in eval mode) -> (y: x's shape, save_mean: [C], save_invstd: [C]).
/// Training normalizes with the batch mean and biased variance and updates the running stats
/// in place: running = (1 - momentum) * running + momentum * stat, with the unbiased variance.
inline std::tuple<Tensor, Tensor, Tensor> native_batch_norm(
    const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
    const Tensor& running_var, bool training, double momentum = 0.1, double eps = 1e-5,
    Loc loc = Loc::current()) {
  if (training && running_mean.defined() && 
      detail::nn_records({&x, &weight, &bias, &running_mean, &running_var}))
    return detail::batch_norm_recorded(x, weight, bias, running_mean, running_var, momentum, eps,
                                       loc);
  Tensor rm = running_mean, rv = running_var;
  // 16-bit running stats would be updated in float32 copies: update those, then copy back.
  bool via_copy = training && ((rm.defined() && is_reduced_float(rm.dtype())) ||
                               (rv.defined() && is_reduced_float(rv.dtype())));
  if (via_copy) {
    if (rm.defined()) rm = copy(rm, DType::Float32, loc);
    if (rv.defined()) rv = copy(rv, DType::Float32, loc);
  }
  SmallVector<Tensor, 5> in{x};
  Attrs a;
  const Tensor* optional[] = {&weight, &bias, &rm, &rv};
  for (const Tensor* t : optional) {
    a.ints.push_back(t->defined());
    if (t->defined()) in.push_back(*t);
  }
  a.ints.push_back(training);
  a.scalars = {momentum, eps};
  OutList o =
      dispatch({.op = Op::BatchNorm, .inputs = {in.data(), in.size()}, .attrs = a, .loc = loc});
  if (via_copy) {
    Tensor dst_m = running_mean, dst_v = running_var;
    if (rm.defined()) dst_m.copy_(rm, loc);
    if (rv.defined()) dst_v.copy_(rv, loc);
  }
  return {o[0], o[1], o[2]};
}
namespace detail {
// Training under autograd: the kernel's in-place update of the running stats would change
// inputs the recorded node saved, so the op runs on batch statistics alone and the running
// stats are updated here, untracked, from the saved mean and 1 / sqrt(var + eps).
inline std::tuple<Tensor, Tensor, Tensor> batch_norm_recorded(const Tensor& x, const Tensor& weight,
                                                              const Tensor& bias, const Tensor& rm,
                                                              const Tensor& rv, double momentum,
                                                              double eps, Loc loc) {
  auto r = native_batch_norm(x, weight, bias, {}, {}, true, momentum, eps, loc);
  int64_t ch = x.shape()[1], cnt = ch ? x.numel() / ch : 0;
  TERRA_CHECK(rv.defined(), "batch_norm", "running_mean and running_var must be given together");
  for (const Tensor* t : {&rm, &rv}) {
    const char* what = t == &rm ? "running_mean" : "running_var";
    op::check_floating(*t, what, "batch_norm");
    TERRA_CHECK(t->shape() == Shape{ch}, "batch_norm", what, " of shape ", t->shape(),
                " must be [", ch, "] for an input of shape ", x.shape());
  }
  if (cnt == 0) return r;
  // Untracked, like the kernel's update; restored on exit.
  struct NoGrad {
    bool prev = std::exchange(autograd::grad_mode_flag(), false);
    ~NoGrad() { autograd::grad_mode_flag() = prev; }
  } no_grad;
  Tensor mean = std::get<1>(r).to(DType::Float64, loc);
  Tensor inv = std::get<2>(r).to(DType::Float64, loc);
  Tensor var = (1.0 / (inv * inv) - eps) * (double(cnt) / double(cnt - 1));
  Tensor dst_m = rm, dst_v = rv;
  dst_m.copy_(rm.to(DType::Float64, loc) * (1.0 - momentum) + mean * momentum, loc);
  dst_v.copy_(rv.to(DType::Float64, loc) * (1.0 - momentum) + var * momentum, loc);
  return r;
}
}  // namespace detail

/// The first-order gradients of a training-mode batch_norm (see op::BatchNormBackward):
/// grad_out, x: [N, C, *]; weight (optional), save_mean, save_invstd: [C] -> (grad_input,
/// grad_weight, grad_bias), each undefined unless output_mask selects it.
inline std::tuple<Tensor, Tensor, Tensor> batch_norm_backward(
    const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& save_mean,
    const Tensor& save_invstd, std::array<bool, 3> output_mask = {true, true, true},
    Loc loc = Loc::current()) {
  std::tuple<Tensor, Tensor, Tensor> r;
  if (!output_mask[0] && !output_mask[1] && !output_mask[2]) return r;
  SmallVector<Tensor, 5> in{grad_out, x};
  if (weight.defined()) in.push_back(weight);
  in.push_back(save_mean);
  in.push_back(save_invstd);
  Attrs a;
  a.ints = {weight.defined(), output_mask[0], output_mask[1], output_mask[2]};
  OutList o = dispatch(
      {.op = Op::BatchNormBackward, .inputs = {in.data(), in.size()}, .attrs = a, .loc = loc});
  size_t k = 0;
  if (output_mask[0]) std::get<0>(r) = std::move(o[k++]);
  if (output_mask[1]) std::get<1>(r) = std::move(o[k++]);
  if (output_mask[2]) std::get<2>(r) = std::move(o[k++]);
  return r;
}

/// x: [N, C, *] -> x's shape (see native_batch_norm).
inline Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                         const Tensor& running_mean, const Tensor& running_var, bool training,
                         double momentum = 0.1, double eps = 1e-5, Loc loc = Loc::current()) {
  return std::get<0>(
      native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, loc));
}

/// x: floating -> (y: x's shape, mask: bool, x's shape); see op::Dropout for the exact rule.
/// Draws x.numel() counters from the calling thread's generator.
inline std::pair<Tensor, Tensor> native_dropout(const Tensor& x, double p, bool train = true,
                                                Loc loc = Loc::current()) {
  TERRA_CHECK(x.defined(), "dropout", "undefined input tensor");
  Attrs a;
  a.scalars = {p};
  a.ints = {train};
  Generator& g = default_generator();
  a.seed = g.seed;
  a.offset = g.advance(uint64_t(x.numel()));
  const Tensor in[] = {x};
  OutList o = dispatch({.op = Op::Dropout, .inputs = in, .attrs = a, .loc = loc});
  return {o[0], o[1]};
}
/// x -> x's shape: zeroes each element with probability p, scales the rest by 1 / (1 - p).
/// train == false returns x itself (no kernel, no random draws).
inline Tensor dropout(const Tensor& x, double p = 0.5, bool train = true,
                      Loc loc = Loc::current()) {
  TERRA_CHECK(p >= 0.0 && p <= 1.0, "dropout", "probability must be in [0, 1], got ", p);
  if (!train) return x;
  return native_dropout(x, p, true, loc).first;
}

}  // namespace terra
