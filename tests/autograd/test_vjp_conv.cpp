// vjps of conv2d and the 2-D pools (gradcheck in float64), their backward ops (masks, ties,
// float32 against float64, errors) and the first-order-only contract.
#include <chrono>

#include "op_test.hpp"

namespace tr = terra;
namespace ag = terra::autograd;
using tr::DType;
using tr::IntPair;
using tr::Shape;
using tr::Tensor;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

TERRA_COVERS("conv2d_backward", "max_pool2d_backward", "avg_pool2d_backward",
             "adaptive_avg_pool2d_backward");

namespace {
Tensor rnd(const Shape& s, uint32_t seed) { return tt::random(s, DType::Float64, seed); }
void check(const Fn& f, const std::vector<Tensor>& in, const std::string& what) {
  std::string err = ag::gradcheck(f, in);
  EXPECT_TRUE(err.empty()) << what << ": " << err;
}

struct ConvCase {
  Shape x, w;
  IntPair stride = 1, pad = 0, dil = 1;
  int64_t groups = 1;
  bool bias = true;
};
std::string conv_name(const ConvCase& c) {
  return "x " + tr::shape_str(c.x) + " w " + tr::shape_str(c.w) + " s (" +
         std::to_string(c.stride.h) + "," + std::to_string(c.stride.w) + ") p (" +
         std::to_string(c.pad.h) + "," + std::to_string(c.pad.w) + ") d (" +
         std::to_string(c.dil.h) + "," + std::to_string(c.dil.w) + ") g " +
         std::to_string(c.groups) + (c.bias ? " bias" : "");
}
}  // namespace

TEST(VjpConv, Conv2dGradcheck) {
  const std::vector<ConvCase> cases = {
      {{2, 3, 5, 5}, {4, 3, 3, 3}, 1, 1, 1, 1, true},
      {{2, 3, 6, 5}, {4, 3, 3, 2}, 2, IntPair{1, 0}, 1, 1, false},
      {{2, 2, 7, 8}, {3, 2, 2, 3}, IntPair{1, 2}, 2, 2, 1, true},     // dilation
      {{2, 4, 5, 6}, {6, 2, 3, 2}, 1, 1, 1, 2, true},                 // groups
      {{2, 3, 6, 5}, {3, 1, 3, 3}, 2, 1, 1, 3, true},                 // depthwise
      {{2, 3, 5, 5}, {6, 1, 3, 3}, 1, 2, 2, 3, false},                // depthwise x2, dilated
      {{2, 3, 4, 4}, {5, 3, 1, 1}, 1, 0, 1, 1, true},                 // 1x1
      {{4, 3, 5}, {2, 4, 1, 1}, 1, 0, 1, 1, false},                   // 1x1 unbatched
      {{2, 4, 5, 5}, {4, 2, 1, 1}, 2, 1, 1, 2, true},                 // 1x1 strided, padded
      {{3, 6, 5}, {4, 3, 2, 2}, 1, IntPair{0, 1}, 1, 1, true},        // unbatched
      {{1, 2, 4, 3}, {2, 2, 4, 3}, 1, 0, 1, 1, true},                 // kernel = image
  };
  uint32_t seed = 1;
  for (const ConvCase& c : cases) {
    std::vector<Tensor> in;  // reserved: GCC 12 warns (a false positive) on growing a list-made one
    in.reserve(3);
    in.push_back(rnd(c.x, seed));
    in.push_back(rnd(c.w, seed + 1));
    if (c.bias) in.push_back(rnd({c.w[0]}, seed + 2));
    seed += 3;
    check(
        [&](auto& v) {
          return tr::conv2d(v[0], v[1], c.bias ? v[2] : Tensor(), c.stride, c.pad, c.dil, c.groups);
        },
        in, conv_name(c));
  }
}

TEST(VjpConv, Conv2dNonContiguousAndPartialGrads) {
  // x read through a transpose and through a stride-2 slice; w through a permute.
  check([](auto& v) { return tr::conv2d(v[0].transpose(2, 3), v[1], v[2], 1, 1); },
        {rnd({2, 3, 5, 4}, 1), rnd({4, 3, 3, 3}, 2), rnd({4}, 3)}, "transposed x");
  check([](auto& v) { return tr::conv2d(v[0].slice(3, 0, 8, 2), v[1], {}, 2, 1); },
        {rnd({2, 3, 5, 8}, 4), rnd({4, 3, 2, 2}, 5)}, "sliced x");
  check([](auto& v) { return tr::conv2d(v[0], v[1].permute({1, 0, 2, 3}), {}, 1, 0, 1, 1); },
        {rnd({1, 3, 4, 4}, 6), rnd({3, 2, 2, 2}, 7)}, "permuted w");
  // Only some inputs need a gradient: the others stay undefined / untouched.
  Tensor x = rnd({2, 3, 5, 5}, 8), w = rnd({4, 3, 3, 3}, 9).set_requires_grad(true);
  Tensor b = rnd({4}, 10);
  Tensor y = tr::conv2d(x, w, b, 1, 1);
  y.sum().backward();
  EXPECT_FALSE(x.grad().defined());
  tr::NoGradGuard no_grad;  // the backward op itself is not differentiable
  auto [dx, dw, db] = tr::conv2d_backward(tr::ones_like(y), x, w, 1, 1);
  tt::expect_close(w.grad(), w.shape(), tt::f64(dw), 1e-12, 1e-12, "weight-only grad");
}

TEST(VjpConv, Conv2dBackwardMasksAndEmpty) {
  Tensor x = rnd({2, 4, 6, 6}, 1), w = rnd({6, 2, 3, 3}, 2);
  Tensor g = rnd({2, 6, 3, 3}, 3);
  auto [dx, dw, db] = tr::conv2d_backward(g, x, w, 2, 1, 1, 2);
  auto [dx1, dw1, db1] = tr::conv2d_backward(g, x, w, 2, 1, 1, 2, {true, false, false});
  auto [dx2, dw2, db2] = tr::conv2d_backward(g, x, w, 2, 1, 1, 2, {false, true, true});
  EXPECT_FALSE(dw1.defined() || db1.defined() || dx2.defined());
  tt::expect_close(dx1, x.shape(), tt::f64(dx), 1e-12, 1e-12, "mask input");
  tt::expect_close(dw2, w.shape(), tt::f64(dw), 1e-12, 1e-12, "mask weight");
  tt::expect_close(db2, {6}, tt::f64(g.sum({0, 2, 3})), 1e-12, 1e-12, "bias = sum of g");
  auto none = tr::conv2d_backward(g, x, w, 2, 1, 1, 2, {false, false, false});
  EXPECT_FALSE(std::get<0>(none).defined());
  // No images: an empty input gradient, zero weight and bias gradients.
  Tensor xe = tr::zeros({0, 4, 6, 6}, {.dtype = DType::Float64});
  auto [ex, ew, eb] = tr::conv2d_backward(tr::zeros({0, 6, 6, 6}, {.dtype = DType::Float64}), xe,
                                          w, 1, 1, 1, 2);
  EXPECT_EQ(ex.shape(), xe.shape());
  tt::expect_close(ew, w.shape(), std::vector<double>(size_t(w.numel()), 0.0));
  tt::expect_close(eb, {6}, std::vector<double>(6, 0.0));
}

// The float32 fast path (BLAS gemms, chunked im2col / col2im) against float64 on ResNet-like
// layers: 3x3 pad 1, a stride-2 downsample, a 1x1 projection and a depthwise layer.
TEST(VjpConv, Conv2dBackwardFloat32MatchesFloat64) {
  const std::vector<ConvCase> cases = {
      {{2, 64, 28, 28}, {64, 64, 3, 3}, 1, 1, 1, 1, true},
      {{2, 64, 28, 28}, {128, 64, 3, 3}, 2, 1, 1, 1, true},
      {{2, 64, 28, 28}, {128, 64, 1, 1}, 2, 0, 1, 1, false},
      {{1, 64, 56, 56}, {32, 64, 1, 1}, 1, 0, 1, 1, false},
      {{4, 32, 14, 14}, {32, 1, 3, 3}, 1, 1, 1, 32, true},
  };
  uint32_t seed = 1;
  for (const ConvCase& c : cases) {
    Tensor x = rnd(c.x, seed), w = rnd(c.w, seed + 1) * 0.1;
    Tensor y = tr::conv2d(x, w, {}, c.stride, c.pad, c.dil, c.groups);
    Tensor g = rnd(y.shape(), seed + 2);
    seed += 3;
    auto [dx, dw, db] = tr::conv2d_backward(g, x, w, c.stride, c.pad, c.dil, c.groups);
    auto [fx, fw, fb] = tr::conv2d_backward(g.to(DType::Float32), x.to(DType::Float32),
                                            w.to(DType::Float32), c.stride, c.pad, c.dil, c.groups);
    ASSERT_EQ(fx.dtype(), DType::Float32);
    // Sums of hundreds to thousands of float32 products: compare to the gradient's scale.
    auto scale = [](const Tensor& t) { return t.abs().amax().template item<double>(); };
    tt::expect_close(fx, x.shape(), tt::f64(dx), 0, 2e-5 * scale(dx), conv_name(c) + " dx");
    tt::expect_close(fw, w.shape(), tt::f64(dw), 0, 2e-5 * scale(dw), conv_name(c) + " dw");
    tt::expect_close(fb, {c.w[0]}, tt::f64(db), 0, 2e-5 * scale(db), conv_name(c) + " db");
  }
  // float16 inputs go through the float32 kernel.
  Tensor x = rnd({2, 3, 6, 6}, 40), w = rnd({4, 3, 3, 3}, 41), g = rnd({2, 4, 6, 6}, 42);
  auto [dx, dw, db] = tr::conv2d_backward(g, x, w, 1, 1);
  auto [hx, hw, hb] = tr::conv2d_backward(g.to(DType::Float16), x.to(DType::Float16),
                                          w.to(DType::Float16), 1, 1);
  EXPECT_EQ(hx.dtype(), DType::Float16);
  tt::expect_close(hx, x.shape(), tt::f64(dx), 1e-2, 5e-2, "float16 dx");
  tt::expect_close(hw, w.shape(), tt::f64(dw), 1e-2, 2e-1, "float16 dw");
}

TEST(VjpConv, MaxPool2dGradcheck) {
  // Continuous random values: no ties, so the max is locally smooth.
  struct P {
    Shape x;
    IntPair k;
    std::optional<IntPair> s;
    IntPair pad = 0, dil = 1;
    bool ceil = false;
  };
  const std::vector<P> cases = {
      {{2, 3, 6, 6}, 2, {}},
      {{2, 2, 7, 6}, 3, IntPair{2, 2}, 1},
      {{1, 2, 6, 7}, 3, IntPair{1, 1}},                      // overlapping windows accumulate
      {{2, 2, 8, 7}, IntPair{2, 3}, IntPair{2, 1}, IntPair{1, 1}, 2},  // dilated
      {{2, 2, 7, 7}, 3, IntPair{2, 2}, 1, 1, true},          // ceil_mode
      {{3, 5, 5}, 2, IntPair{2, 2}, 0, 1, true},             // unbatched, ceil_mode
  };
  uint32_t seed = 1;
  for (const P& p : cases) {
    check([&](auto& v) { return tr::max_pool2d(v[0], p.k, p.s, p.pad, p.dil, p.ceil); },
          {rnd(p.x, seed++)}, "max_pool2d " + tr::shape_str(p.x));
    check([&](auto& v) {
      return tr::max_pool2d_with_indices(v[0], p.k, p.s, p.pad, p.dil, p.ceil).first;
    }, {rnd(p.x, seed++)}, "max_pool2d_with_indices " + tr::shape_str(p.x));
  }
  check([](auto& v) { return tr::max_pool2d(v[0].transpose(2, 3), 2); }, {rnd({2, 2, 6, 4}, 30)},
        "max_pool2d transposed x");
  check([](auto& v) { return tr::max_pool2d(v[0].slice(3, 0, 8, 2), 2, IntPair{1, 1}); },
        {rnd({1, 2, 4, 8}, 31)}, "max_pool2d sliced x");
}

TEST(VjpConv, MaxPool2dTiesFollowTheForwardIndex) {
  // Every window of a constant image ties: the whole gradient goes to the index the forward
  // picked (the first maximum in the window), as in PyTorch.
  Tensor x = tr::ones({1, 1, 4, 4}, {.dtype = DType::Float64}).set_requires_grad(true);
  auto [y, idx] = tr::max_pool2d_with_indices(x, 2);
  EXPECT_EQ(idx.to_vector<int64_t>(), (std::vector<int64_t>{0, 2, 8, 10}));
  (y * tr::tensor(std::vector<double>{1, 2, 3, 4}, {1, 1, 2, 2})).sum().backward();
  tt::expect_close(x.grad(), {1, 1, 4, 4}, {1, 0, 2, 0, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0});
  // Overlapping windows (stride 1) over ties: one count per window that picked a position.
  Tensor z = tr::tensor(std::vector<double>{1, 1, 1, 1, 1, 1, 0, 0, 0}, {1, 3, 3});
  z.set_requires_grad(true);
  Tensor m = tr::max_pool2d(z, 2, IntPair{1, 1});
  m.sum().backward();
  auto [m2, i2] = tr::max_pool2d_with_indices(z.detach(), 2, IntPair{1, 1});
  std::vector<double> expect(9, 0.0);
  for (int64_t i : i2.to_vector<int64_t>()) expect[size_t(i)] += 1;
  tt::expect_close(z.grad(), {1, 3, 3}, expect);
  EXPECT_EQ(expect, (std::vector<double>{1, 1, 0, 1, 1, 0, 0, 0, 0}));
}

TEST(VjpConv, MaxPool2dRecomputesMissingIndices) {
  // A call recorded without the indices output (possible through dispatch): the vjp recomputes
  // them from x.
  Tensor x = rnd({1, 2, 5, 5}, 3).set_requires_grad(true);
  const Tensor in[] = {x};
  tr::Attrs a;
  a.ints = {2, 2, 1, 1, 0, 0, 1, 1, 0, 0};
  Tensor y = tr::dispatch1({.op = tr::Op::MaxPool2d, .inputs = in, .attrs = a});
  y.sum().backward();
  Tensor x2 = x.detach().clone().set_requires_grad(true);
  tr::max_pool2d(x2, 2, IntPair{1, 1}).sum().backward();
  tt::expect_close(x.grad(), x.shape(), tt::f64(x2.grad()), 0, 0);
}

TEST(VjpConv, AvgPool2dGradcheck) {
  struct P {
    Shape x;
    IntPair k;
    std::optional<IntPair> s;
    IntPair pad = 0;
    bool ceil = false, include_pad = true;
  };
  const std::vector<P> cases = {
      {{2, 3, 6, 6}, 2, {}},
      {{2, 2, 7, 6}, 3, IntPair{2, 2}, 1, false, true},
      {{2, 2, 7, 6}, 3, IntPair{2, 2}, 1, false, false},
      {{1, 2, 7, 7}, 3, IntPair{2, 2}, 1, true, true},    // ceil_mode: a clipped last window
      {{1, 2, 7, 7}, 3, IntPair{2, 2}, 1, true, false},
      {{2, 2, 5, 6}, IntPair{2, 3}, IntPair{1, 2}, IntPair{1, 1}, true, false},
      {{3, 5, 4}, 2, IntPair{1, 1}},                       // unbatched, overlapping
  };
  uint32_t seed = 1;
  for (const P& p : cases)
    check([&](auto& v) { return tr::avg_pool2d(v[0], p.k, p.s, p.pad, p.ceil, p.include_pad); },
          {rnd(p.x, seed++)},
          "avg_pool2d " + tr::shape_str(p.x) + (p.ceil ? " ceil" : "") +
              (p.include_pad ? " include_pad" : ""));
  check([](auto& v) { return tr::avg_pool2d(v[0].transpose(2, 3), 3, IntPair{2, 2}, 1); },
        {rnd({2, 2, 6, 5}, 20)}, "avg_pool2d transposed x");
}

TEST(VjpConv, AdaptiveAvgPool2dGradcheck) {
  const std::vector<std::pair<Shape, IntPair>> cases = {
      {{2, 3, 6, 6}, 3},           {{2, 2, 7, 5}, IntPair{3, 2}},  // non-divisible
      {{1, 2, 5, 7}, IntPair{4, 4}}, {{2, 3, 3, 3}, IntPair{5, 4}},  // windows overlap / upsample
      {{3, 5, 6}, 1},                                                // unbatched global pool
  };
  uint32_t seed = 1;
  for (auto& [s, o] : cases)
    check([&, o = o](auto& v) { return tr::adaptive_avg_pool2d(v[0], o); }, {rnd(s, seed++)},
          "adaptive_avg_pool2d " + tr::shape_str(s));
  check([](auto& v) { return tr::adaptive_avg_pool2d(v[0].slice(3, 0, 10, 2), IntPair{2, 3}); },
        {rnd({2, 2, 5, 10}, 10)}, "adaptive_avg_pool2d sliced x");
}

TEST(VjpConv, BackwardOpsAreFirstOrderOnly) {
  Tensor x = rnd({1, 2, 5, 5}, 1).set_requires_grad(true);
  Tensor w = rnd({3, 2, 3, 3}, 2).set_requires_grad(true);
  Tensor yc = tr::conv2d(x, w, {}, 1, 1);
  Tensor y = (yc * yc).sum();
  tt::expect_error([&] { ag::grad({y}, {x}, {}, std::nullopt, true); },
                   {"conv2d_backward", "not differentiable"});
  Tensor pc = tr::avg_pool2d(x, 2);
  Tensor p = (pc * pc).sum();
  tt::expect_error([&] { ag::grad({p}, {x}, {}, std::nullopt, true); },
                   {"avg_pool2d_backward", "not differentiable"});
  Tensor mc = tr::max_pool2d(x, 2);
  Tensor m = (mc * mc).sum();
  tt::expect_error([&] { ag::grad({m}, {x}, {}, std::nullopt, true); },
                   {"max_pool2d_backward", "not differentiable"});
  Tensor qc = tr::adaptive_avg_pool2d(x, 2);
  Tensor q = (qc * qc).sum();
  tt::expect_error([&] { ag::grad({q}, {x}, {}, std::nullopt, true); },
                   {"adaptive_avg_pool2d_backward", "not differentiable"});
}

TEST(VjpConv, BackwardOpErrors) {
  Tensor x = rnd({2, 3, 6, 6}, 1), w = rnd({4, 3, 3, 3}, 2), g = rnd({2, 4, 6, 6}, 3);
  tt::expect_error([&] { tr::conv2d_backward(rnd({2, 4, 5, 6}, 4), x, w, 1, 1); },
                   {"conv2d_backward", "grad_output of shape [2, 4, 5, 6]", "[2, 4, 6, 6]"});
  tt::expect_error([&] { tr::conv2d_backward(g, x, rnd({4, 2, 3, 3}, 5), 1, 1); },
                   {"conv2d_backward", "weight of shape [4, 2, 3, 3]", "[2, 3, 6, 6]"});
  tt::expect_error([&] { tr::conv2d_backward(g, x, w, 1, 1, 1, 2); },
                   {"conv2d_backward", "divisible by groups 2"});
  tt::expect_error([&] { tr::conv2d_backward(g.to(DType::Int64), x.to(DType::Int64),
                                             w.to(DType::Int64), 1, 1); },
                   {"conv2d_backward", "floating"});
  {
    const Tensor in[] = {g, x, w};
    tr::Attrs a;
    a.ints = {1, 1, 1, 1, 1, 1, 1, 0, 0, 0};
    auto call = [&] { tr::dispatch({.op = tr::Op::Conv2dBackward, .inputs = in, .attrs = a}); };
    tt::expect_error(call,
                     {"conv2d_backward", "selects no gradient"});
  }
  Tensor gp = rnd({2, 3, 3, 3}, 6);
  Tensor idx = tr::zeros({2, 3, 3, 3}, {.dtype = DType::Int64});
  Tensor idx_bad = tr::zeros({2, 3, 3, 2}, {.dtype = DType::Int64});
  tt::expect_error([&] { tr::max_pool2d_backward(gp, idx_bad, 6); },
                   {"max_pool2d_backward", "indices of shape [2, 3, 3, 2]", "[2, 3, 3, 3]"});
  tt::expect_error([&] { tr::max_pool2d_backward(gp, idx.to(DType::Int32), 6); },
                   {"max_pool2d_backward", "int64"});
  tt::expect_error([&] { tr::max_pool2d_backward(gp, idx + 36, 6); },
                   {"max_pool2d_backward", "index 36", "6x6"});
  Tensor idx2 = tr::zeros({3, 3}, {.dtype = DType::Int64});
  tt::expect_error([&] { tr::max_pool2d_backward(rnd({3, 3}, 7), idx2, 6); },
                   {"max_pool2d_backward", "grad_output", "[3, 3]"});
  tt::expect_error([&] { tr::avg_pool2d_backward(gp, 6, 3, IntPair{1, 1}); },
                   {"avg_pool2d_backward", "grad_output of shape [2, 3, 3, 3]", "[2, 3, 4, 4]"});
  tt::expect_error([&] { tr::avg_pool2d_backward(gp, 2, 3); },
                   {"avg_pool2d_backward", "too small"});
  tt::expect_error([&] { tr::adaptive_avg_pool2d_backward(gp, IntPair{0, 4}); },
                   {"adaptive_avg_pool2d_backward", "positive"});
  tt::expect_error([&] { tr::adaptive_avg_pool2d_backward(gp.to(DType::Int64), 4); },
                   {"adaptive_avg_pool2d_backward", "floating"});
}

// Run with --gtest_also_run_disabled_tests: conv2d backward (input + weight gradients) of a
// ResNet 3x3 layer, best of N.
TEST(VjpConv, DISABLED_Conv2dBackwardTiming) {
  Tensor x = tt::random({8, 64, 56, 56}, DType::Float32, 1);
  Tensor w = tt::random({64, 64, 3, 3}, DType::Float32, 2, -0.1, 0.1);
  Tensor g = tt::random({8, 64, 56, 56}, DType::Float32, 3);
  double best = 1e30, best_fwd = 1e30;
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto r = tr::conv2d_backward(g, x, w, 1, 1, 1, 1, {true, true, false});
    auto t1 = std::chrono::steady_clock::now();
    Tensor y = tr::conv2d(x, w, {}, 1, 1);
    auto t2 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
    best_fwd = std::min(best_fwd, std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  std::printf("conv2d_backward (dx + dw) x [8,64,56,56] w [64,64,3,3] pad 1: best %.1f ms "
              "(forward %.1f ms)\n", best, best_fwd);
}
