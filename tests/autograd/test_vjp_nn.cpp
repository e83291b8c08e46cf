// Autograd of the neural-network ops: softmax, log_softmax, layer_norm, batch_norm (training
// and eval) against finite differences, including non-contiguous inputs, the statistics
// outputs and double backward; dropout against its mask exactly.
#include "op_test.hpp"

namespace tr = terra;
namespace ag = terra::autograd;
using tr::DType;
using tr::Shape;
using tr::Tensor;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

namespace {
using tt::expect_gradcheck;
using tt::rnd;
// The first-order gradient of sum(f(v) * r) wrt v[0], itself differentiable (create_graph):
// gradchecking it checks the second derivative.
Fn first_grad(Fn f, Tensor r) {
  return [f, r](const std::vector<Tensor>& v) {
    // gradcheck's finite differences call this inside NoGradGuard on plain tensors.
    tr::EnableGradGuard on;
    std::vector<Tensor> in = v;
    if (!in[0].requires_grad()) in[0] = in[0].detach().set_requires_grad();
    auto g = ag::grad({(f(in) * r).sum()}, {in[0]}, {}, std::nullopt, /*create_graph=*/true);
    return g[0];
  };
}
// x's values with the channel dim (1) outermost in memory: a non-contiguous view.
Tensor channels_last(const Tensor& x) { return x.transpose(0, 1).contiguous().transpose(0, 1); }
}  // namespace

TEST(VjpNn, SoftmaxAndLogSoftmaxAlongEveryDim) {
  for (Shape s : {Shape{7}, Shape{3, 4}, Shape{2, 3, 4}}) {
    Tensor x = rnd(s, 3);
    for (int64_t d = -int64_t(s.size()); d < int64_t(s.size()); ++d) {
      std::string tag = "shape " + tr::shape_str(s) + " dim " + std::to_string(d);
      expect_gradcheck([d](auto& v) { return tr::softmax(v[0], d); }, {x}, "softmax " + tag);
      expect_gradcheck([d](auto& v) { return tr::log_softmax(v[0], d); }, {x},
                       "log_softmax " + tag);
    }
  }
  Tensor s = rnd({}, 4);
  expect_gradcheck([](auto& v) { return tr::softmax(v[0], 0); }, {s}, "softmax 0-d");
  expect_gradcheck([](auto& v) { return tr::log_softmax(v[0], -1); }, {s}, "log_softmax 0-d");
}

TEST(VjpNn, SoftmaxOfNonContiguousInputs) {
  Tensor x = rnd({4, 3, 5}, 8);
  // Transposed, strided-slice and expanded views reach the op directly.
  expect_gradcheck([](auto& v) { return tr::softmax(v[0].transpose(0, 2), 1); }, {x}, "transposed");
  expect_gradcheck([](auto& v) { return tr::log_softmax(v[0].transpose(0, 2), -1); }, {x},
                   "log transposed");
  expect_gradcheck([](auto& v) { return tr::softmax(v[0].slice(2, 0, 5, 2), 0); }, {x}, "sliced");
  expect_gradcheck([](auto& v) { return tr::log_softmax(v[0].slice(1, 1, 3), 1); }, {x},
                   "log sliced");
  Tensor row = rnd({1, 6}, 9);
  expect_gradcheck([](auto& v) { return tr::softmax(v[0].expand({3, 6}), 1) * 1.0; }, {row},
                   "expanded");
  expect_gradcheck([](auto& v) { return tr::log_softmax(v[0].expand({3, 6}), 0); }, {row},
                   "log expanded, along the broadcast dim");
}

TEST(VjpNn, SoftmaxGradientMatchesFormula) {
  Tensor x = rnd({3, 5}, 11).set_requires_grad();
  Tensor g = rnd({3, 5}, 12);
  Tensor y = tr::softmax(x, 1);
  y.backward(g);
  std::vector<double> yv = y.detach().to_vector<double>(), gv = g.to_vector<double>(), want(15);
  for (int i = 0; i < 3; ++i) {
    double dot = 0;
    for (int j = 0; j < 5; ++j) dot += gv[i * 5 + j] * yv[i * 5 + j];
    for (int j = 0; j < 5; ++j) want[i * 5 + j] = yv[i * 5 + j] * (gv[i * 5 + j] - dot);
  }
  tt::expect_close(x.grad(), {3, 5}, want);
}

TEST(VjpNn, SoftmaxDoubleBackward) {
  Tensor x = rnd({3, 4}, 21), r = rnd({3, 4}, 22);
  Fn sm = [](auto& v) { return tr::softmax(v[0], 1); };
  Fn lsm = [](auto& v) { return tr::log_softmax(v[0], 0); };
  Fn sm_nc = [](auto& v) { return tr::softmax(v[0].t(), -1); };
  Tensor rt = rnd({4, 3}, 23);
  expect_gradcheck(first_grad(sm, r), {x}, "softmax double backward");
  expect_gradcheck(first_grad(lsm, r), {x}, "log_softmax double backward");
  expect_gradcheck(first_grad(sm_nc, rt), {x}, "softmax of a transpose, double backward");
  // Through a loss: cross entropy-like sum(-log_softmax * target), Hessian-vector product.
  Tensor xt = x.detach().clone().set_requires_grad();
  Tensor loss = (tr::log_softmax(xt, 1) * r).sum();
  auto g = ag::grad({loss}, {xt}, {}, std::nullopt, true);
  auto h = ag::grad({(g[0] * g[0]).sum()}, {xt});
  EXPECT_TRUE(h[0].defined());
  EXPECT_EQ(h[0].shape(), (Shape{3, 4}));
}

TEST(VjpNn, SoftmaxHalfGivesHalfGradients) {
  Tensor x64 = rnd({2, 8}, 31);
  Tensor g = rnd({2, 8}, 32);
  Tensor x = x64.to(DType::Float16).set_requires_grad();
  tr::softmax(x, 1).backward(g.to(DType::Float16));
  EXPECT_EQ(x.grad().dtype(), DType::Float16);
  Tensor xr = x.detach().to(DType::Float64).set_requires_grad();
  tr::softmax(xr, 1).backward(g.to(DType::Float16).to(DType::Float64));
  tt::expect_close(x.grad(), {2, 8}, xr.grad().to_vector<double>(), 1e-2, 1e-2);
}

TEST(VjpNn, LayerNormWithAndWithoutAffine) {
  struct Case {
    Shape x, ns;
  };
  for (const Case& k : {Case{{4, 5}, {5}}, Case{{2, 3, 4}, {3, 4}}, Case{{3, 4}, {3, 4}},
                        Case{{2, 2, 3}, {3}}}) {
    std::string tag = tr::shape_str(k.x) + " over " + tr::shape_str(k.ns);
    Tensor x = rnd(k.x, 41), w = rnd(k.ns, 42), b = rnd(k.ns, 43);
    Shape ns = k.ns;
    expect_gradcheck([ns](auto& v) { return tr::layer_norm(v[0], ns); }, {x}, "plain " + tag);
    expect_gradcheck([ns](auto& v) { return tr::layer_norm(v[0], ns, v[1], v[2]); }, {x, w, b},
                     "affine " + tag);
    expect_gradcheck([ns](auto& v) { return tr::layer_norm(v[0], ns, v[1]); }, {x, w},
                     "weight only " + tag);
    expect_gradcheck([ns](auto& v) { return tr::layer_norm(v[0], ns, {}, v[1]); }, {x, b},
                     "bias only " + tag);
  }
}

TEST(VjpNn, LayerNormNonContiguousStatisticsAndDoubleBackward) {
  Tensor x = rnd({5, 3, 4}, 51), w = rnd({3}, 52), b = rnd({3}, 53);
  // x permuted to [4, 5, 3]: normalized over the last (strided) dim; weight a strided view.
  expect_gradcheck(
      [](auto& v) { return tr::layer_norm(v[0].permute({2, 0, 1}), {3}, v[1], v[2]); },
      {x, w, b}, "permuted input");
  Tensor wide = rnd({6}, 54);
  expect_gradcheck(
      [](auto& v) { return tr::layer_norm(v[0].permute({2, 0, 1}), {3}, v[1].slice(0, 0, 6, 2)); },
                   {x, wide}, "strided weight");
  // The mean and rstd outputs are differentiable too.
  expect_gradcheck([](auto& v) { return std::get<1>(tr::native_layer_norm(v[0], {3, 4})); }, {x},
                   "mean output");
  expect_gradcheck(
      [](auto& v) { return std::get<2>(tr::native_layer_norm(v[0], {4}, {}, {}, 0.1)); },
                   {x}, "rstd output");
  expect_gradcheck(
      [](auto& v) {
        auto [y, m, r] = tr::native_layer_norm(v[0], {4}, v[1]);
        return y * 0.5 + (m * r).unsqueeze(-1);
      },
      {x, rnd({4}, 55)}, "all outputs");
  Tensor r = rnd({5, 3, 4}, 56);
  Tensor w4 = rnd({4}, 57);
  expect_gradcheck(first_grad([w4](auto& v) { return tr::layer_norm(v[0], {4}, w4, {}, 0.5); }, r),
                   {x}, "layer_norm double backward");
}

TEST(VjpNn, LayerNormGradientsHaveParameterShapes) {
  Tensor x = rnd({2, 3, 4}, 61).to(DType::Float32).set_requires_grad();
  Tensor w = tr::ones({3, 4}).set_requires_grad(), b = tr::zeros({3, 4}).set_requires_grad();
  tr::layer_norm(x, {3, 4}, w, b).sum().backward();
  EXPECT_EQ(w.grad().shape(), (Shape{3, 4}));
  EXPECT_EQ(b.grad().dtype(), DType::Float32);
  // d sum(y) / d bias = the number of rows; d sum(y) / dx = 0 (each row's xhat sums to 0).
  for (double v : b.grad().to_vector<double>()) EXPECT_EQ(v, 2.0);
  for (double v : x.grad().to_vector<double>()) EXPECT_NEAR(v, 0.0, 1e-5);
}

TEST(VjpNn, BatchNormTraining) {
  for (Shape s : {Shape{5, 3}, Shape{2, 3, 4}, Shape{2, 3, 2, 2}}) {
    std::string tag = tr::shape_str(s);
    Tensor x = rnd(s, 71), w = rnd({3}, 72), b = rnd({3}, 73);
    Tensor rm = tr::zeros({3}, {.dtype = DType::Float64});
    Tensor rv = tr::ones({3}, {.dtype = DType::Float64});
    expect_gradcheck([](auto& v) { return tr::batch_norm(v[0], {}, {}, {}, {}, true); }, {x},
                     "no affine, no running stats " + tag);
    expect_gradcheck(
        [rm, rv](auto& v) { return tr::batch_norm(v[0], v[1], v[2], rm, rv, true, 0.1, 1e-3); },
        {x, w, b}, "affine with running stats " + tag);
    expect_gradcheck([](auto& v) { return tr::batch_norm(v[0], v[1], {}, {}, {}, true); }, {x, w},
                     "weight only " + tag);
    expect_gradcheck(
        [](auto& v) { return tr::batch_norm(channels_last(v[0]), {}, v[1], {}, {}, true); },
        {x, b}, "bias only, non-contiguous " + tag);
    expect_gradcheck(
        [](auto& v) {
          auto [y, m, inv] = tr::native_batch_norm(v[0], {}, {}, {}, {}, true);
          Shape bs(size_t(v[0].dim()), 1);
          bs[1] = 3;
          return y + (m + inv * inv).reshape(bs);
        },
        {x}, "statistics outputs " + tag);
  }
}

TEST(VjpNn, BatchNormTrainingUpdatesRunningStatsAsWithoutGrad) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    Tensor x = tt::random({4, 3, 5}, dt, 81);
    Tensor rm1 = tt::random({3}, dt, 82), rv1 = tt::random({3}, dt, 83, 0.5, 2);
    Tensor rm2 = rm1.clone(), rv2 = rv1.clone();
    Tensor y1 = tr::batch_norm(x, {}, {}, rm1, rv1, true, 0.3, 1e-5);
    Tensor xg = x.clone().set_requires_grad();
    Tensor y2 = tr::batch_norm(xg, {}, {}, rm2, rv2, true, 0.3, 1e-5);
    double tol = dt == DType::Float32 ? 1e-5 : 1e-12;
    tt::expect_close(y2, {4, 3, 5}, y1.to_vector<double>(), tol, tol);
    tt::expect_close(rm2, {3}, rm1.to_vector<double>(), tol, tol);
    tt::expect_close(rv2, {3}, rv1.to_vector<double>(), tol, tol);
    EXPECT_FALSE(rm2.requires_grad());
    y2.sum().backward();  // the saved inputs were not modified in place
    EXPECT_EQ(xg.grad().shape(), (Shape{4, 3, 5}));
  }
  Tensor x = rnd({1, 2}, 84).set_requires_grad();
  Tensor rm = tr::zeros({2}, {.dtype = DType::Float64});
  Tensor rv = tr::ones({2}, {.dtype = DType::Float64});
  tt::expect_error([&] { tr::batch_norm(x, {}, {}, rm, rv, true); },
                   {"[terra::batch_norm]", "more than 1 value per channel"});
  Tensor x2 = rnd({3, 2}, 85).set_requires_grad();
  tt::expect_error([&] { tr::batch_norm(x2, {}, {}, rm, {}, true); },
                   {"[terra::batch_norm]", "together"});
  Tensor rm3 = tr::zeros({3}, {.dtype = DType::Float64});
  tt::expect_error([&] { tr::batch_norm(x2, {}, {}, rm3, rv, true); },
                   {"[terra::batch_norm]", "running_mean", "[3]", "[2]"});
}

TEST(VjpNn, BatchNormEval) {
  for (Shape s : {Shape{4, 3}, Shape{2, 3, 2, 2}}) {
    std::string tag = tr::shape_str(s);
    Tensor x = rnd(s, 91), w = rnd({3}, 92), b = rnd({3}, 93);
    Tensor rm = rnd({3}, 94), rv = rnd({3}, 95, 0.5, 2);
    expect_gradcheck([rm, rv](auto& v) { return tr::batch_norm(v[0], {}, {}, rm, rv, false); }, {x},
                     "no affine " + tag);
    expect_gradcheck([rm, rv](auto& v) { return tr::batch_norm(v[0], v[1], v[2], rm, rv, false); },
                     {x, w, b}, "affine " + tag);
    expect_gradcheck(
        [rm, rv](auto& v) { return tr::batch_norm(channels_last(v[0]), v[1], {}, rm, rv, false); },
        {x, w}, "weight only, non-contiguous " + tag);
    // The running stats are plain inputs in eval mode: their gradient is exact too.
    expect_gradcheck([](auto& v) { return tr::batch_norm(v[0], v[1], v[2], v[3], v[4], false); },
                     {x, w, b, rm, rv}, "running stats " + tag);
  }
  // Eval gradient wrt x is g * w / sqrt(running_var + eps), independent of the batch.
  Tensor x = rnd({2, 2}, 96).set_requires_grad();
  Tensor rm = tr::tensor<double>({0.5, -1}), rv = tr::tensor<double>({4, 0.25});
  Tensor w = tr::tensor<double>({2, 3});
  tr::batch_norm(x, w, {}, rm, rv, false, 0.1, 0.0).sum().backward();
  tt::expect_close(x.grad(), {2, 2}, {1, 6, 1, 6});
}

TEST(VjpNn, DropoutGradientIsTheScaledMask) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    for (double p : {0.0, 0.25, 0.5, 0.9, 1.0}) {
      tr::manual_seed(123);
      Tensor x = tt::random({6, 7}, dt, 101).set_requires_grad();
      Tensor g = tt::random({6, 7}, dt, 102);
      auto [y, mask] = tr::native_dropout(x, p);
      y.backward(g);
      std::vector<double> gv = g.to_vector<double>(), mv = mask.to_vector<double>();
      std::vector<double> got = x.grad().to_vector<double>();
      ASSERT_EQ(x.grad().dtype(), dt);
      // The same rounding as the op: g * mask, times 1 / (1 - p) in the gradient's dtype.
      Tensor scale = tr::full({}, p < 1 ? 1.0 / (1.0 - p) : 0.0, {.dtype = dt});
      std::vector<double> want = (g * mask * scale).to_vector<double>();
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i], p < 1 && mv[i] ? want[i] : 0.0) << "p " << p << " element " << i;
        if (p == 0) {
          EXPECT_EQ(got[i], gv[i]);
        }
      }
    }
  }
  // Non-contiguous input, through the public dropout().
  tr::manual_seed(7);
  Tensor x = rnd({5, 4}, 103).set_requires_grad();
  Tensor y = tr::dropout(x.t(), 0.4);
  y.sum().backward();
  std::vector<double> yv = y.detach().t().contiguous().to_vector<double>();
  std::vector<double> xv = x.detach().to_vector<double>(), gx = x.grad().to_vector<double>();
  for (size_t i = 0; i < gx.size(); ++i) {
    bool kept = yv[i] != 0 || xv[i] == 0;
    EXPECT_EQ(gx[i], kept ? 1.0 / 0.6 : 0.0) << i;
  }
  // Not training: the identity, for the op and the public function.
  Tensor z = rnd({3}, 104).set_requires_grad();
  tr::native_dropout(z, 0.5, false).first.sum().backward();
  EXPECT_EQ(z.grad().to_vector<double>(), (std::vector<double>{1, 1, 1}));
}

TEST(VjpNn, EmptyAndHalfInputs) {
  Tensor e = tr::zeros({0, 4}, {.dtype = DType::Float64}).set_requires_grad();
  tr::softmax(e, 1).sum().backward();
  EXPECT_EQ(e.grad().shape(), (Shape{0, 4}));
  Tensor w = tr::ones({4}, {.dtype = DType::Float64}).set_requires_grad();
  tr::layer_norm(e, {4}, w).sum().backward();
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{0, 0, 0, 0}));
  // float16 input, float32 running stats, under autograd.
  Tensor x = tt::random({4, 2, 3}, DType::Float16, 111).set_requires_grad();
  Tensor rm = tr::zeros({2}), rv = tr::ones({2});
  Tensor rm0 = rm.clone(), rv0 = rv.clone();
  tr::batch_norm(x.detach(), {}, {}, rm0, rv0, true);
  tr::batch_norm(x, {}, {}, rm, rv, true).sum().backward();
  EXPECT_EQ(x.grad().dtype(), DType::Float16);
  tt::expect_close(rm, {2}, rm0.to_vector<double>(), 1e-3, 1e-3);
  tt::expect_close(rv, {2}, rv0.to_vector<double>(), 1e-3, 1e-3);
  for (double v : x.grad().to_vector<double>()) EXPECT_NEAR(v, 0.0, 1e-2);
}

// The graph keeps what a vjp reads and nothing more: batch_norm's, layer_norm's and dropout's
// y (their vjps read the statistics or the mask) dies with its last handle, so a layer's
// activation is not held twice until backward. The gradients are unchanged (above).
TEST(VjpNn, NormalizationAndDropoutOutputsAreNotKept) {
  Tensor x = rnd({4, 3, 5}, 81).set_requires_grad(), w = rnd({3}, 82).set_requires_grad();
  Tensor y = tr::batch_norm(x, w, {}, {}, {}, true);
  Tensor z = tr::relu(y);  // relu keeps its own output, not y
  EXPECT_EQ(y.storage()->use_count(), 1);
  Tensor ln = tr::layer_norm(x, {5}, {}, {});
  EXPECT_EQ(ln.storage()->use_count(), 1);
  auto [d, mask] = tr::native_dropout(x, 0.5, true);
  EXPECT_EQ(d.storage()->use_count(), 1);
  EXPECT_GT(mask.storage()->use_count(), 1);  // the mask is kept for the vjp
  Tensor loss = (z * z).sum() + ln.sum() + d.sum();
  loss.backward();
  EXPECT_TRUE(x.grad().defined());
  EXPECT_TRUE(w.grad().defined());
}
