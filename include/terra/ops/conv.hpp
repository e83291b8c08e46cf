// terra/ops/conv.hpp: conv2d and 2-D pooling. Inputs are [N, C, H, W] or unbatched [C, H, W].
#pragma once

#include <array>
#include <optional>
#include <span>
#include <tuple>
#include <utility>

#include "terra/ops/factory.hpp"
#include "terra/ops/index.hpp"
#include "terra/ops/linalg.hpp"

namespace terra {

/// A (height, width) pair of ints: `2` means {2, 2}.
struct IntPair {
  ///@{
  /// Height (rows, dim -2) and width (columns, dim -1), in that order as in LibTorch's
  /// ExpandingArray<2>.
  int64_t h, w;
  ///@}
  /// Both sides v (implicit on purpose, as in LibTorch).
  IntPair(int64_t v) : h(v), w(v) {}  // NOLINT: implicit on purpose, as in LibTorch
  /// Different sizes per side: IntPair(3, 5) is a 3-row by 5-column window.
  IntPair(int64_t h_, int64_t w_) : h(h_), w(w_) {}
};

}  // namespace terra

namespace terra::op {

namespace detail_conv {

inline const char* plane_dims_str() { return "[N, C, H, W] or [C, H, W]"; }

// s must be [N, C, H, W] or [C, H, W] with C, H, W > 0 (N may be 0).
inline void check_planes(const Shape& s, const char* name, const char* what = "input") {
  int64_t r = int64_t(s.size());
  TERRA_CHECK(r == 3 || r == 4, name, "expects ", what, " ", plane_dims_str(), ", got shape ", s);
  for (int64_t d = r - 3; d < r; ++d)
    TERRA_CHECK(s[d] > 0, name, what, " of shape ", s, " has an empty channel or spatial dim");
}
inline void check_planes(const Tensor& x, const char* name) { check_planes(x.shape(), name); }

// Output length of a pooling window sweep, as PyTorch: with ceil_mode the last window must
// still start inside the input or the left padding.
inline int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  int64_t num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
  int64_t out = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

// Shape of an [N, C, H, W] or [C, H, W] input with C, H, W replaced.
inline Shape with_chw(Shape s, int64_t c, int64_t h, int64_t w) {
  int64_t r = int64_t(s.size());
  s[r - 3] = c, s[r - 2] = h, s[r - 1] = w;
  return s;
}
inline Shape with_chw(const Tensor& x, int64_t c, int64_t h, int64_t w) {
  return with_chw(x.shape(), c, h, w);
}

// Pooling window checks and the output shape. ints: {kh, kw, sh, sw, ph, pw, dh, dw}.
inline Shape pool_shape(const Shape& xs, const int64_t* v, bool ceil_mode, const char* name) {
  check_planes(xs, name);
  TERRA_CHECK(v[0] > 0 && v[1] > 0, name, "kernel size must be positive, got (", v[0], ", ", v[1],
              ")");
  TERRA_CHECK(v[2] > 0 && v[3] > 0, name, "stride must be positive, got (", v[2], ", ", v[3], ")");
  TERRA_CHECK(v[6] > 0 && v[7] > 0, name, "dilation must be positive, got (", v[6], ", ", v[7],
              ")");
  TERRA_CHECK(v[4] >= 0 && v[5] >= 0 && v[4] <= v[0] / 2 && v[5] <= v[1] / 2, name, "padding (",
              v[4], ", ", v[5], ") must be non-negative and at most half the kernel size (", v[0],
              ", ", v[1], ")");
  size_t r = xs.size();
  int64_t h = xs[r - 2], w = xs[r - 1];
  int64_t oh = pool_out(h, v[0], v[2], v[4], v[6], ceil_mode);
  int64_t ow = pool_out(w, v[1], v[3], v[5], v[7], ceil_mode);
  TERRA_CHECK(oh > 0 && ow > 0, name, "input of shape ", xs, " is too small for kernel (", v[0],
              ", ", v[1], ") with padding (", v[4], ", ", v[5], ") and dilation (", v[6], ", ",
              v[7], "): output would be ", oh, "x", ow);
  return with_chw(xs, xs[r - 3], oh, ow);
}
inline Shape pool_shape(const Tensor& x, const int64_t* v, bool ceil_mode, const char* name) {
  return pool_shape(x.shape(), v, ceil_mode, name);
}

// conv2d's checks of x and weight and its output shape. v: {sh, sw, ph, pw, dh, dw, groups}.
inline Shape conv_shape(const Tensor& x, const Tensor& w, const int64_t* v, const char* name) {
  check_planes(x, name);
  TERRA_CHECK(w.dim() == 4, name, "weight must be 4-D [O, C / groups, kH, kW], got shape ",
              w.shape());
  TERRA_CHECK(v[0] > 0 && v[1] > 0, name, "stride must be positive, got (", v[0], ", ", v[1], ")");
  TERRA_CHECK(v[2] >= 0 && v[3] >= 0, name, "padding must be non-negative, got (", v[2], ", ",
              v[3], ")");
  TERRA_CHECK(v[4] > 0 && v[5] > 0, name, "dilation must be positive, got (", v[4], ", ", v[5],
              ")");
  int64_t g = v[6], ch = x.shape()[x.dim() - 3], o = w.shape()[0];
  TERRA_CHECK(g > 0, name, "groups must be positive, got ", g);
  TERRA_CHECK(ch % g == 0 && o % g == 0, name, "input channels ", ch, " and output channels ", o,
              " must both be divisible by groups ", g);
  TERRA_CHECK(w.shape()[1] * g == ch && w.shape()[2] > 0 && w.shape()[3] > 0, name,
              "weight of shape ", w.shape(), " does not match input of shape ", x.shape(),
              " with groups ", g, " (expected [", o, ", ", ch / g, ", kH, kW])");
  int64_t h = x.shape()[x.dim() - 2], wd = x.shape()[x.dim() - 1];
  int64_t kh = v[4] * (w.shape()[2] - 1) + 1, kw = v[5] * (w.shape()[3] - 1) + 1;
  TERRA_CHECK(kh <= h + 2 * v[2] && kw <= wd + 2 * v[3], name, "kernel of size (", kh, ", ", kw,
              ") after dilation is larger than the padded input (", h + 2 * v[2], ", ",
              wd + 2 * v[3], "): input ", x.shape(), ", weight ", w.shape());
  return with_chw(x, o, (h + 2 * v[2] - kh) / v[0] + 1, (wd + 2 * v[3] - kw) / v[1] + 1);
}

}  // namespace detail_conv

// inputs: {x, weight} or {x, weight, bias}; x: [N, C, H, W] or [C, H, W],
// weight: [O, C / groups, kH, kW], bias: [O] -> [N, O, Ho, Wo] or [O, Ho, Wo].
// attrs.ints = {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, has_bias}.
struct Conv2d {
  static constexpr uint8_t saves = kSaveInputs;  // dx needs w, dw needs x
  static void infer(const OpCall& c, MetaList& out) {
    TERRA_CHECK(c.inputs.size() == 2 || c.inputs.size() == 3, "conv2d",
                "expects 2 or 3 inputs, got ", c.inputs.size());
    const Tensor &x = c.inputs[0], &w = c.inputs[1];
    DType dt = detail_linalg::contract_dtype(c.inputs, "conv2d");
    Shape s = detail_conv::conv_shape(x, w, c.attrs.ints.data(), "conv2d");
    if (c.inputs.size() == 3)
      TERRA_CHECK(c.inputs[2].dim() == 1 && c.inputs[2].shape()[0] == w.shape()[0], "conv2d",
                  "bias of shape ", c.inputs[2].shape(), " does not match weight of shape ",
                  w.shape());
    out.push_back(detail::meta(std::move(s), dt, x.device()));
  }
  TERRA_VJP;
};

// inputs: {grad_out, x, weight}, grad_out of conv2d(x, weight)'s output shape -> the gradients
// the mask selects, in this order: grad_input (x's shape), grad_weight (weight's shape),
// grad_bias [O]. attrs.ints = {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups,
// need_input, need_weight, need_bias}. First order only: it has no vjp, so differentiating
// through it (double backward of conv2d) raises "not differentiable".
struct Conv2dBackward {
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor &g = c.inputs[0], &x = c.inputs[1], &w = c.inputs[2];
    const auto& v = c.attrs.ints;
    TERRA_CHECK(v.size() == 10, "conv2d_backward", "expects 10 attrs.ints, got ", v.size());
    DType dt = detail_linalg::contract_dtype(c.inputs, "conv2d_backward");
    TERRA_CHECK(is_floating(dt), "conv2d_backward", "expected floating dtypes, got ", g.dtype(),
                ", ", x.dtype(), " and ", w.dtype());
    Shape s = detail_conv::conv_shape(x, w, v.data(), "conv2d_backward");
    TERRA_CHECK(g.shape() == s, "conv2d_backward", "grad_output of shape ", g.shape(),
                " does not match the output shape ", s, " of conv2d with input ", x.shape(),
                " and weight ", w.shape());
    TERRA_CHECK(v[7] || v[8] || v[9], "conv2d_backward", "the output mask selects no gradient");
    if (v[7]) out.push_back(detail::meta(x.shape(), dt, x.device()));
    if (v[8]) out.push_back(detail::meta(w.shape(), dt, x.device()));
    if (v[9]) out.push_back(detail::meta(Shape{w.shape()[0]}, dt, x.device()));
  }
};

// A conv2d_backward call's outputs by name: attrs.ints[7..9] select the gradients of input,
// weight and bias, which come in that order; null where one is not asked for.
struct Conv2dGrads {
  Tensor *input, *weight, *bias;
};
inline Conv2dGrads conv2d_grads(const Attrs& a, std::span<Tensor> outs) {
  size_t k = 0;
  Tensor* gx = a.ints[7] ? &outs[k++] : nullptr;
  Tensor* gw = a.ints[8] ? &outs[k++] : nullptr;
  Tensor* gb = a.ints[9] ? &outs[k++] : nullptr;
  return {gx, gw, gb};
}

// x: [N, C, H, W] or [C, H, W] -> values [..., Ho, Wo] and, with indices, int64 positions of
// the maxima flattened over each H * W plane (as PyTorch).
// attrs.ints = {kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, with_indices}.
struct MaxPool2d {
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    TERRA_CHECK(x.dtype() != DType::Bool, "max_pool2d", "is not supported for bool tensors");
    Shape s = detail_conv::pool_shape(x, c.attrs.ints.data(), c.attrs.ints[8], "max_pool2d");
    out.push_back(detail::meta(s, x.dtype(), x.device()));
    if (c.attrs.ints[9]) out.push_back(detail::meta(std::move(s), DType::Int64, x.device()));
  }
  TERRA_VJP;  // reads the indices output, or recomputes it from x when the call made none
};

// inputs: {grad_out, indices}, both [..., Ho, Wo] (indices as max_pool2d_with_indices gives
// them) -> grad_input [..., H, W]: each grad_out element added at its index (overlapping
// windows accumulate). attrs.ints = {H, W}. First order only (no vjp).
struct MaxPool2dBackward {
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor &g = c.inputs[0], &idx = c.inputs[1];
    const auto& v = c.attrs.ints;
    TERRA_CHECK(is_floating(g.dtype()), "max_pool2d_backward", "expected a floating grad_output, "
                "got ", g.dtype());
    TERRA_CHECK(idx.dtype() == DType::Int64, "max_pool2d_backward", "indices must be int64, got ",
                idx.dtype());
    detail_conv::check_planes(g.shape(), "max_pool2d_backward", "grad_output");
    TERRA_CHECK(idx.shape() == g.shape(), "max_pool2d_backward", "indices of shape ", idx.shape(),
                " do not match grad_output of shape ", g.shape());
    TERRA_CHECK(v.size() == 2 && v[0] > 0 && v[1] > 0, "max_pool2d_backward",
                "input size must be 2 positive ints (H, W)");
    out.push_back(detail::meta(detail_conv::with_chw(g, g.size(-3), v[0], v[1]), g.dtype(),
                               g.device()));
  }
};

// x: [N, C, H, W] or [C, H, W] -> [..., Ho, Wo] (floating dtypes).
// attrs.ints = {kh, kw, sh, sw, ph, pw, ceil_mode, count_include_pad}.
struct AvgPool2d {
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    TERRA_CHECK(is_floating(x.dtype()), "avg_pool2d", "expected a floating dtype, got ", x.dtype());
    const auto& v = c.attrs.ints;
    const int64_t w[] = {v[0], v[1], v[2], v[3], v[4], v[5], 1, 1};
    out.push_back(
        detail::meta(detail_conv::pool_shape(x, w, v[6], "avg_pool2d"), x.dtype(), x.device()));
  }
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
};

// grad_out: [..., Ho, Wo] -> grad_input [..., H, W] of avg_pool2d.
// attrs.ints = {kh, kw, sh, sw, ph, pw, ceil_mode, count_include_pad, H, W}. First order only.
struct AvgPool2dBackward {
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& g = c.inputs[0];
    const auto& v = c.attrs.ints;
    TERRA_CHECK(is_floating(g.dtype()), "avg_pool2d_backward", "expected a floating dtype, got ",
                g.dtype());
    TERRA_CHECK(v.size() == 10, "avg_pool2d_backward", "expects 10 attrs.ints, got ", v.size());
    detail_conv::check_planes(g.shape(), "avg_pool2d_backward", "grad_output");
    Shape in = detail_conv::with_chw(g, g.size(-3), v[8], v[9]);
    const int64_t w[] = {v[0], v[1], v[2], v[3], v[4], v[5], 1, 1};
    Shape s = detail_conv::pool_shape(in, w, v[6], "avg_pool2d_backward");
    TERRA_CHECK(g.shape() == s, "avg_pool2d_backward", "grad_output of shape ", g.shape(),
                " does not match the avg_pool2d output shape ", s, " for input ", in);
    out.push_back(detail::meta(std::move(in), g.dtype(), g.device()));
  }
};

// x: [N, C, H, W] or [C, H, W] -> [..., oh, ow]; window i spans
// [floor(i * H / oh), ceil((i + 1) * H / oh)). attrs.ints = {oh, ow}.
struct AdaptiveAvgPool2d {
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    TERRA_CHECK(is_floating(x.dtype()), "adaptive_avg_pool2d", "expected a floating dtype, got ",
                x.dtype());
    detail_conv::check_planes(x, "adaptive_avg_pool2d");
    int64_t oh = c.attrs.ints[0], ow = c.attrs.ints[1];
    TERRA_CHECK(oh > 0 && ow > 0, "adaptive_avg_pool2d", "output size must be positive, got (", oh,
                ", ", ow, ")");
    out.push_back(detail::meta(detail_conv::with_chw(x, x.shape()[x.dim() - 3], oh, ow), x.dtype(),
                               x.device()));
  }
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
};

// grad_out: [..., oh, ow] -> grad_input [..., H, W] of adaptive_avg_pool2d.
// attrs.ints = {H, W}. First order only (no vjp).
struct AdaptiveAvgPool2dBackward {
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& g = c.inputs[0];
    const auto& v = c.attrs.ints;
    TERRA_CHECK(is_floating(g.dtype()), "adaptive_avg_pool2d_backward",
                "expected a floating dtype, got ", g.dtype());
    detail_conv::check_planes(g.shape(), "adaptive_avg_pool2d_backward", "grad_output");
    TERRA_CHECK(v.size() == 2 && v[0] > 0 && v[1] > 0, "adaptive_avg_pool2d_backward",
                "input size must be 2 positive ints (H, W)");
    out.push_back(detail::meta(detail_conv::with_chw(g, g.size(-3), v[0], v[1]), g.dtype(),
                               g.device()));
  }
};

}  // namespace terra::op

namespace terra {

/// x: [N, C, H, W] or [C, H, W], w: [O, C / groups, kH, kW], b: [O] (optional)
/// -> [N, O, Ho, Wo] or [O, Ho, Wo], Ho = (H + 2 * pad - dilation * (kH - 1) - 1) / stride + 1.
inline Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b = {}, IntPair stride = 1,
                     IntPair padding = 0, IntPair dilation = 1, int64_t groups = 1,
                     Loc loc = Loc::current()) {
  Attrs a;
  a.ints = {stride.h,   stride.w,   padding.h, padding.w,
            dilation.h, dilation.w, groups,    b.defined() ? 1 : 0};
  if (b.defined()) {
    const Tensor in[] = {x, w, b};
    return dispatch1({.op = Op::Conv2d, .inputs = in, .attrs = std::move(a), .loc = loc});
  }
  const Tensor in[] = {x, w};
  return dispatch1({.op = Op::Conv2d, .inputs = in, .attrs = std::move(a), .loc = loc});
}

namespace detail {
inline OutList max_pool(const Tensor& x, IntPair k, std::optional<IntPair> stride, IntPair pad,
                        IntPair dil, bool ceil_mode, bool with_indices, Loc loc) {
  IntPair s = stride.value_or(k);
  const Tensor in[] = {x};
  Attrs a;
  // With a gradient to come, make the indices now: the vjp would recompute them otherwise.
  bool idx = with_indices || x.requires_grad();
  a.ints = {k.h, k.w, s.h, s.w, pad.h, pad.w, dil.h, dil.w, ceil_mode, idx};
  return dispatch({.op = Op::MaxPool2d, .inputs = in, .attrs = std::move(a), .loc = loc});
}
}  // namespace detail

/// x: [N, C, H, W] or [C, H, W] -> (values, int64 indices into each H * W plane), both
/// [..., Ho, Wo]. The stride defaults to the kernel size.
inline std::pair<Tensor, Tensor> max_pool2d_with_indices(const Tensor& x, IntPair kernel,
                                                         std::optional<IntPair> stride = {},
                                                         IntPair padding = 0, IntPair dilation = 1,
                                                         bool ceil_mode = false,
                                                         Loc loc = Loc::current()) {
  OutList r = detail::max_pool(x, kernel, stride, padding, dilation, ceil_mode, true, loc);
  return {std::move(r[0]), std::move(r[1])};
}
/// x: [N, C, H, W] or [C, H, W] -> [..., Ho, Wo].
inline Tensor max_pool2d(const Tensor& x, IntPair kernel, std::optional<IntPair> stride = {},
                         IntPair padding = 0, IntPair dilation = 1, bool ceil_mode = false,
                         Loc loc = Loc::current()) {
  return std::move(
      detail::max_pool(x, kernel, stride, padding, dilation, ceil_mode, false, loc)[0]);
}
/// x: [N, C, H, W] or [C, H, W] -> [..., Ho, Wo]; count_include_pad counts padded positions
/// in the divisor.
inline Tensor avg_pool2d(const Tensor& x, IntPair kernel, std::optional<IntPair> stride = {},
                         IntPair padding = 0, bool ceil_mode = false, bool count_include_pad = true,
                         Loc loc = Loc::current()) {
  IntPair s = stride.value_or(kernel);
  const Tensor in[] = {x};
  Attrs a;
  a.ints = {kernel.h, kernel.w, s.h, s.w, padding.h, padding.w, ceil_mode, count_include_pad};
  return dispatch1({.op = Op::AvgPool2d, .inputs = in, .attrs = std::move(a), .loc = loc});
}
/// x: [N, C, H, W] or [C, H, W] -> [..., output_size.h, output_size.w].
inline Tensor adaptive_avg_pool2d(const Tensor& x, IntPair output_size, Loc loc = Loc::current()) {
  const Tensor in[] = {x};
  Attrs a;
  a.ints = {output_size.h, output_size.w};
  return dispatch1({.op = Op::AdaptiveAvgPool2d, .inputs = in, .attrs = std::move(a), .loc = loc});
}

// ---- backward ops (first order: they have no vjp themselves) ----
/// grad_out: conv2d(x, w)'s output shape -> (grad_input like x, grad_weight like w,
/// grad_bias [O]); a gradient the mask leaves out comes back undefined.
inline std::tuple<Tensor, Tensor, Tensor> conv2d_backward(
    const Tensor& grad_out, const Tensor& x, const Tensor& w, IntPair stride = 1,
    IntPair padding = 0, IntPair dilation = 1, int64_t groups = 1,
    std::array<bool, 3> output_mask = {true, true, true}, Loc loc = Loc::current()) {
  std::tuple<Tensor, Tensor, Tensor> r;
  if (!output_mask[0] && !output_mask[1] && !output_mask[2]) return r;
  const Tensor in[] = {grad_out, x, w};
  Attrs a;
  a.ints = {stride.h, stride.w, padding.h,      padding.w,      dilation.h,
            dilation.w, groups, output_mask[0], output_mask[1], output_mask[2]};
  OutList o = dispatch({.op = Op::Conv2dBackward, .inputs = in, .attrs = std::move(a), .loc = loc});
  size_t k = 0;
  if (output_mask[0]) std::get<0>(r) = std::move(o[k++]);
  if (output_mask[1]) std::get<1>(r) = std::move(o[k++]);
  if (output_mask[2]) std::get<2>(r) = std::move(o[k++]);
  return r;
}
/// grad_out, indices: [..., Ho, Wo] (from max_pool2d_with_indices) -> [..., input_size.h,
/// input_size.w].
inline Tensor max_pool2d_backward(const Tensor& grad_out, const Tensor& indices,
                                  IntPair input_size, Loc loc = Loc::current()) {
  const Tensor in[] = {grad_out, indices};
  Attrs a;
  a.ints = {input_size.h, input_size.w};
  return dispatch1({.op = Op::MaxPool2dBackward, .inputs = in, .attrs = std::move(a), .loc = loc});
}
/// grad_out: avg_pool2d's output [..., Ho, Wo] -> [..., input_size.h, input_size.w].
inline Tensor avg_pool2d_backward(const Tensor& grad_out, IntPair input_size, IntPair kernel,
                                  std::optional<IntPair> stride = {}, IntPair padding = 0,
                                  bool ceil_mode = false, bool count_include_pad = true,
                                  Loc loc = Loc::current()) {
  IntPair s = stride.value_or(kernel);
  const Tensor in[] = {grad_out};
  Attrs a;
  a.ints = {kernel.h,  kernel.w,  s.h,       s.w,           padding.h,
            padding.w, ceil_mode, count_include_pad, input_size.h, input_size.w};
  return dispatch1({.op = Op::AvgPool2dBackward, .inputs = in, .attrs = std::move(a), .loc = loc});
}
/// grad_out: [..., oh, ow] -> [..., input_size.h, input_size.w].
inline Tensor adaptive_avg_pool2d_backward(const Tensor& grad_out, IntPair input_size,
                                           Loc loc = Loc::current()) {
  const Tensor in[] = {grad_out};
  Attrs a;
  a.ints = {input_size.h, input_size.w};
  return dispatch1(
      {.op = Op::AdaptiveAvgPool2dBackward, .inputs = in, .attrs = std::move(a), .loc = loc});
}

namespace detail {
// Widens (amount > 0, zeros) or crops (amount < 0) dim `d` of x by lo before and hi after.
inline Tensor pad_or_crop(const Tensor& x, int64_t d, int64_t lo, int64_t hi, Loc loc) {
  Tensor y = x;
  int64_t n = y.size(d);
  if (lo < 0 || hi < 0) {
    y = slice(y, d, std::max<int64_t>(-lo, 0), n - std::max<int64_t>(-hi, 0), 1, loc);
  }
  std::vector<Tensor> parts;
  auto zeros_of = [&](int64_t k) {
    Shape s = y.shape();
    s[size_t(d)] = k;
    return zeros(s, {.dtype = y.dtype(), .device = y.device()}, loc);
  };
  if (lo > 0) parts.push_back(zeros_of(lo));
  parts.push_back(y);
  if (hi > 0) parts.push_back(zeros_of(hi));
  return parts.size() == 1 ? y : cat(parts, d, loc);
}

// w [C, O, kH, kW] -> the s.h * s.w phase kernels [s.h * s.w * O, C, rh, rw] of a transposed
// convolution, rh = ceil(kH / s.h): phase (a, b) holds taps a + j * s.h (and b + i * s.w) in
// reverse order, zero-padded to the same count, so one stride-1 conv2d computes all phases.
inline Tensor phase_kernels(const Tensor& w, IntPair s, Loc loc) {
  int64_t c = w.size(0), o = w.size(1), kh = w.size(2), kw = w.size(3);
  int64_t rh = (kh + s.h - 1) / s.h, rw = (kw + s.w - 1) / s.w;
  Tensor p = pad_or_crop(pad_or_crop(w, 2, 0, rh * s.h - kh, loc), 3, 0, rw * s.w - kw, loc);
  TensorOptions io{.dtype = kInt64, .device = w.device()};
  Tensor p6 = reshape(p, {c, o, rh, s.h, rw, s.w}, loc);
  p6 = index_select(p6, 2, arange(double(rh - 1), -1.0, -1.0, io, loc), loc);
  p6 = index_select(p6, 4, arange(double(rw - 1), -1.0, -1.0, io, loc), loc);
  return reshape(permute(p6, {3, 5, 1, 0, 2, 4}, loc), {s.h * s.w * o, c, rh, rw}, loc);
}
}  // namespace detail

/// x: [N, C, H, W] or [C, H, W], w: [C, O, kH, kW] (PyTorch's layout), b: [O] (optional)
/// -> [N, O, Ho, Wo], Ho = (H - 1) * stride - 2 * padding + kH + output_padding. The gradient
/// of conv2d with respect to its input, composed of public ops (differentiable for free): one
/// stride-1 conv2d with the stride x stride phase kernels of the flipped, transposed weight,
/// whose outputs interleave into the result. Groups and dilation are not supported.
inline Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const Tensor& b = {},
                               IntPair stride = 1, IntPair padding = 0,
                               IntPair output_padding = 0, Loc loc = Loc::current()) {
  op::detail_conv::check_planes(x, "conv_transpose2d");
  int64_t c = x.size(-3);
  TERRA_CHECK(w.dim() == 4 && w.shape()[0] == c && w.shape()[1] > 0 && w.shape()[2] > 0 &&
                  w.shape()[3] > 0,
              "conv_transpose2d", "weight must be [C, O, kH, kW] with C = ", c,
              " (the input's channels), got weight ", w.shape(), " for input ", x.shape());
  TERRA_CHECK(stride.h > 0 && stride.w > 0, "conv_transpose2d", "stride must be positive, got (",
              stride.h, ", ", stride.w, ")");
  TERRA_CHECK(padding.h >= 0 && padding.w >= 0, "conv_transpose2d",
              "padding must be non-negative, got (", padding.h, ", ", padding.w, ")");
  TERRA_CHECK(output_padding.h >= 0 && output_padding.w >= 0 && output_padding.h < stride.h &&
                  output_padding.w < stride.w,
              "conv_transpose2d", "output_padding (", output_padding.h, ", ", output_padding.w,
              ") must be non-negative and smaller than the stride (", stride.h, ", ", stride.w,
              ")");
  int64_t kh = w.shape()[2], kw = w.shape()[3];
  int64_t oh = (x.size(-2) - 1) * stride.h - 2 * padding.h + kh + output_padding.h;
  int64_t ow = (x.size(-1) - 1) * stride.w - 2 * padding.w + kw + output_padding.w;
  TERRA_CHECK(oh > 0 && ow > 0, "conv_transpose2d", "input ", x.shape(), " with weight ",
              w.shape(), ", stride (", stride.h, ", ", stride.w, ") and padding (", padding.h,
              ", ", padding.w, ") gives an empty output ", oh, "x", ow);
  if (b.defined())
    TERRA_CHECK(b.dim() == 1 && b.shape()[0] == w.shape()[1], "conv_transpose2d",
                "bias of shape ", b.shape(), " does not match weight of shape ", w.shape());
  // Output row q * s + r (before cropping the padding) only meets taps r + j * s: every
  // phase r is a stride-1 conv of x with its own taps, so no product with a zero is made.
  bool unbatched = x.dim() == 3;
  Tensor xb = unbatched ? unsqueeze(x, 0, loc) : x;
  int64_t n = xb.size(0), o = w.shape()[1];
  int64_t rh = (kh + stride.h - 1) / stride.h, rw = (kw + stride.w - 1) / stride.w;
  Tensor k = detail::phase_kernels(w, stride, loc);
  Tensor y = conv2d(xb, k, {}, 1, {rh - 1, rw - 1}, 1, 1, loc);
  int64_t qh = y.size(2), qw = y.size(3);
  y = permute(view(y, {n, stride.h, stride.w, o, qh, qw}, loc), {0, 3, 4, 1, 5, 2}, loc);
  y = reshape(y, {n, o, qh * stride.h, qw * stride.w}, loc);
  y = detail::pad_or_crop(y, 2, -padding.h, padding.h + oh - qh * stride.h, loc);
  y = detail::pad_or_crop(y, 3, -padding.w, padding.w + ow - qw * stride.w, loc);
  Tensor out = b.defined() ? y + view(b, {o, 1, 1}, loc) : y;
  return unbatched ? squeeze(out, 0, loc) : out;
}

}  // namespace terra
