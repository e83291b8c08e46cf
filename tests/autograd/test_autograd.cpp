// Autograd: every vjp of the elementwise and movement ops against finite differences, and the
// engine's contract (accumulation, retain_graph, no_grad, detach, in-place checks, grad()).
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
}  // namespace

TEST(Autograd, UnaryVjpsMatchFiniteDifferences) {
  std::vector<std::tuple<const char*, Fn, double, double>> cases = {
      {"neg", [](auto& v) { return -v[0]; }, -2, 2},
      {"abs", [](auto& v) { return tr::abs(v[0]); }, 0.1, 2},
      {"exp", [](auto& v) { return tr::exp(v[0]); }, -2, 2},
      {"log", [](auto& v) { return tr::log(v[0]); }, 0.2, 3},
      {"sqrt", [](auto& v) { return tr::sqrt(v[0]); }, 0.2, 3},
      {"rsqrt", [](auto& v) { return tr::rsqrt(v[0]); }, 0.2, 3},
      {"sin", [](auto& v) { return tr::sin(v[0]); }, -2, 2},
      {"cos", [](auto& v) { return tr::cos(v[0]); }, -2, 2},
      {"tanh", [](auto& v) { return tr::tanh(v[0]); }, -2, 2},
      {"sigmoid", [](auto& v) { return tr::sigmoid(v[0]); }, -2, 2},
      {"relu", [](auto& v) { return tr::relu(v[0]); }, 0.1, 2},
      {"silu", [](auto& v) { return tr::silu(v[0]); }, -2, 2},
      {"gelu", [](auto& v) { return tr::gelu(v[0]); }, -2, 2},
      {"gelu_tanh", [](auto& v) { return tr::gelu(v[0], "tanh"); }, -2, 2},
      {"softplus", [](auto& v) { return tr::softplus(v[0], 2.0, 1.5); }, -2, 2},
      {"clamp", [](auto& v) { return tr::clamp(v[0], -1.0, 1.0); }, -2, 2},
      {"pow_scalar", [](auto& v) { return v[0].pow(2.5); }, 0.2, 2},
      {"scalar_pow", [](auto& v) { return tr::pow(1.7, v[0]); }, -2, 2},
      {"copy_f32", [](auto& v) { return v[0].to(DType::Float32).to(DType::Float64) * 1.0; }, -2, 2},
  };
  for (auto& [name, f, lo, hi] : cases) {
    Tensor x = rnd({3, 4}, 5, lo, hi);
    if (std::string(name) == "copy_f32") continue;  // float32 rounding breaks finite differences
    expect_gradcheck(f, {x}, name);
  }
}

TEST(Autograd, BinaryVjpsWithBroadcastingAndScalars) {
  Tensor a = rnd({2, 3, 4}, 1), b = rnd({3, 1}, 2), pos = rnd({3, 1}, 3, 0.5, 2);
  expect_gradcheck([](auto& v) { return v[0] + v[1]; }, {a, b}, "add");
  expect_gradcheck([](auto& v) { return v[0] - v[1]; }, {a, b}, "sub");
  expect_gradcheck([](auto& v) { return v[0] * v[1]; }, {a, b}, "mul");
  expect_gradcheck([](auto& v) { return v[0] / v[1]; }, {a, pos}, "div");
  expect_gradcheck([](auto& v) { return tr::pow(v[1], v[0]); }, {rnd({3, 1}, 4), pos}, "pow");
  expect_gradcheck([](auto& v) { return tr::maximum(v[0], v[1]); }, {a, b}, "maximum");
  expect_gradcheck([](auto& v) { return tr::minimum(v[0], v[1]); }, {a, b}, "minimum");
  expect_gradcheck([](auto& v) { return 3.0 - v[0] * 2.0 + 1.5; }, {a}, "scalar sub/mul/add");
  expect_gradcheck([](auto& v) { return 2.0 / v[0] + v[0] / 4.0; }, {pos}, "scalar div");
  expect_gradcheck([](auto& v) { return tr::where(v[0] > 0, v[0], v[1]); }, {a, b}, "where");
  expect_gradcheck([](auto& v) { return tr::masked_fill(v[0], v[0] > 0.5, 2.0); }, {a}, "masked_fill");
}

TEST(Autograd, MovementVjps) {
  Tensor x = rnd({2, 3, 4}, 9);
  expect_gradcheck([](auto& v) { return v[0].view({6, 4}); }, {x}, "view");
  expect_gradcheck([](auto& v) { return v[0].transpose(0, 2).reshape({4, 6}); }, {x}, "reshape of a permuted tensor");
  expect_gradcheck([](auto& v) { return v[0].permute({2, 0, 1}); }, {x}, "permute");
  expect_gradcheck([](auto& v) { return v[0].slice(2, 1, 4, 2); }, {x}, "slice step 2");
  expect_gradcheck([](auto& v) { return v[0].slice(1, -2, 3); }, {x}, "slice");
  expect_gradcheck([](auto& v) { return v[0].select(1, -1); }, {x}, "select");
  expect_gradcheck([](auto& v) { return v[0].unsqueeze(1).expand({2, 5, 3, 4}); }, {x}, "expand");
  expect_gradcheck([](auto& v) { return v[0].unsqueeze(0).squeeze(0).flatten(1); }, {x}, "squeeze");
  expect_gradcheck([](auto& v) { return tr::cat({v[0], v[1] * 2.0}, 1); }, {x, rnd({2, 2, 4}, 3)}, "cat");
  expect_gradcheck([](auto& v) { return tr::stack({v[0], v[0]}, 0); }, {x}, "stack");
  expect_gradcheck([](auto& v) { return v[0].chunk(2, 2)[1] * v[0].split(1, 0)[0].chunk(2, 2)[0]; }, {x}, "chunk/split");
}

TEST(Autograd, AccumulationRetainGraphAndErrors) {
  Tensor x = tr::tensor<float>({1, 2, 3}).set_requires_grad();
  EXPECT_TRUE(x.is_leaf());
  Tensor y = (x * x).sum();
  EXPECT_FALSE(y.is_leaf());
  EXPECT_NE(y.grad_fn(), nullptr);
  y.backward({}, /*retain_graph=*/true);
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{2, 4, 6}));
  const void* addr = x.grad().raw_data();
  y.backward();  // accumulates, in place
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{4, 8, 12}));
  EXPECT_EQ(x.grad().raw_data(), addr);
  tt::expect_error([&] { y.backward(); }, {"[terra::backward]", "second time", "retain_graph"});
  tt::expect_error([&] { (x * 2.0).backward(); }, {"[terra::backward]", "gradient must be given", "[3]"});
  tt::expect_error([&] { tr::ones({2}).sum().backward(); }, {"[terra::backward]", "does not require grad"});
  tt::expect_error([&] { tr::ones({2}, {.dtype = DType::Int64}).set_requires_grad(); }, {"[terra::requires_grad]", "int64"});
  (x * 2.0).backward(tr::tensor<float>({1, 0, -1}));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{6, 8, 10}));
}

TEST(Autograd, NoGradDetachAndInPlaceChecks) {
  Tensor x = tr::tensor<double>({1, 2}).set_requires_grad();
  {
    tr::NoGradGuard guard;
    Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
    {
      tr::EnableGradGuard on;
      EXPECT_TRUE((x * 2.0).requires_grad());
    }
    x.mul_(1.0);  // in-place on a leaf is fine without grad
  }
  EXPECT_FALSE(x.detach().requires_grad());
  tt::expect_error([&] { x.add_(1.0); }, {"[terra::add]", "leaf", "in-place"});
  tt::expect_error([&] { x.view({2}).add_(1.0); }, {"[terra::add]", "view"});
  // A saved value modified after it was saved is an error at backward time.
  Tensor e = tr::exp(x);
  Tensor z = (e * 3.0).sum();
  Tensor e2 = tr::exp(x);
  Tensor w = e2.sum();
  e2.mul_(2.0);
  tt::expect_error([&] { w.backward(); }, {"[terra::backward]", "exp", "in-place", "version"});
  z.backward();
  EXPECT_NEAR(x.grad().to_vector<double>()[1], 3 * std::exp(2.0), 1e-12);
  // In-place ops on non-leaf tensors are recorded.
  Tensor a = tr::tensor<double>({1, 2, 3}).set_requires_grad();
  Tensor h = a * 2.0;
  h.add_(1.0);
  h.mul_(h.detach() + 0.0);  // d(h*c)/dh = c = 2a + 1
  h.sum().backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{6, 10, 14}));
  // The vjp of an in-place op sees the values from before it ran.
  Tensor b = tr::tensor<double>({1, 2}).set_requires_grad();
  Tensor c = tr::tensor<double>({3, 4}).set_requires_grad();
  Tensor hb = b * 1.0;
  hb.mul_(c);
  hb.sum().backward();
  EXPECT_EQ(c.grad().to_vector<double>(), (std::vector<double>{1, 2}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{3, 4}));
}

// An in-place op through a view rewrites the base's history (PyTorch's CopySlices), and a
// view whose storage changed since it was made reads the base's newest history.
TEST(Autograd, InPlaceThroughViews) {
  auto values = [](const Tensor& t) { return t.to_vector<double>(); };
  using V = std::vector<double>;
  {  // A row of a buffer that needs no grad, written from a tensor that does.
    Tensor x = tr::tensor<double>({1, 2, 3}).set_requires_grad();
    Tensor w = tr::tensor<double>({1, 2, 3, 4, 5, 6}, {2, 3}).set_requires_grad();
    Tensor out = tr::zeros({2, 3}, {.dtype = DType::Float64});
    Tensor row = out.select(0, 1);
    EXPECT_TRUE(row.is_view());
    EXPECT_FALSE(out.requires_grad());
    row.copy_(x * 2.0);
    EXPECT_TRUE(out.requires_grad());
    EXPECT_FALSE(out.is_leaf());
    (out * w).sum().backward();
    EXPECT_EQ(values(x.grad()), (V{8, 10, 12}));
    EXPECT_EQ(values(w.grad()), (V{0, 0, 0, 2, 4, 6}));
  }
  {  // A slice of a non-leaf scaled in place.
    Tensor x = tr::tensor<double>({1, 2, 3}).set_requires_grad();
    Tensor y = x * 1.0;
    y.slice(0, 0, 2).mul_(3.0);
    (y * y).sum().backward();
    EXPECT_EQ(values(x.grad()), (V{18, 36, 6}));
  }
  {  // A view made before its base was written in place sees the new values' history.
    Tensor x = tr::tensor<double>({1, 2, 3}).set_requires_grad();
    Tensor y = x * 1.0;
    Tensor v = y.slice(0, 1, 3);
    y.mul_(2.0);
    (v * v).sum().backward();  // v = 2 x[1:]: d/dx = 8 x
    EXPECT_EQ(values(x.grad()), (V{0, 16, 24}));
  }
  {  // A view of a view written with a tensor that needs grad; read back through another view.
    Tensor x = tr::tensor<double>({1, 2, 3, 4}).set_requires_grad();
    Tensor a = tr::tensor<double>({10, 20}).set_requires_grad();
    Tensor y = x * 1.0;
    Tensor grid = y.view({2, 2});
    grid.select(1, 0).mul_(a);  // y = [10 x0, x1, 20 x2, x3]
    Tensor s = grid.transpose(0, 1).reshape({4});
    (s * tr::tensor<double>({1, 2, 3, 4})).sum().backward();
    EXPECT_EQ(values(x.grad()), (V{10, 3, 40, 4}));
    EXPECT_EQ(values(a.grad()), (V{1, 6}));
  }
  {  // One element written from others (read through clones, so no saved value is overwritten).
    Tensor x = tr::tensor<double>({1, 2, 3}).set_requires_grad();
    Tensor y = x * 1.0;
    y.select(0, 0).copy_(y.select(0, 1).clone() * y.select(0, 2).clone());
    (y * tr::tensor<double>({1, 10, 100})).sum().backward();  // x1 x2 + 10 x1 + 100 x2
    EXPECT_EQ(values(x.grad()), (V{0, 13, 102}));
  }
  {  // Reading a value saved for backward, then overwriting it through a view, is still caught.
    Tensor x = tr::tensor<double>({1, 2, 3}).set_requires_grad();
    Tensor y = x * 1.0;
    Tensor p = y.select(0, 1) * y.select(0, 2);
    y.select(0, 0).copy_(p);
    tt::expect_error([&] { y.sum().backward(); }, {"[terra::backward]", "mul", "in-place", "version"});
  }
  {  // A view of a leaf that requires grad stays an error, as in PyTorch.
    Tensor x = tr::tensor<double>({1, 2}).set_requires_grad();
    tt::expect_error([&] { x.slice(0, 0, 1).mul_(2.0); }, {"[terra::mul]", "view of a leaf", "[2]"});
  }
  {  // A base that is not contiguous cannot be addressed: a clear error before anything is written.
    Tensor x = tr::tensor<double>({1, 2}).set_requires_grad();
    Tensor dense = tr::zeros({2, 2}, {.dtype = DType::Float64});
    Tensor base = Tensor::from_storage(dense.storage(), {2, 2}, {1, 2}, 0, DType::Float64);
    tt::expect_error([&] { base.select(0, 0).copy_(x); }, {"[terra::copy]", "non-contiguous", "[2, 2]"});
    EXPECT_EQ(values(dense), (V{0, 0, 0, 0}));
  }
  // The same against central differences, with a second in-place write over the first.
  Tensor x = rnd({3, 4}, 41), a = rnd({4}, 42), b = rnd({3}, 43);
  expect_gradcheck(
      [](auto& v) {
        Tensor y = v[0] * 1.0;
        y.select(0, 1).mul_(v[1]);
        y.slice(1, 1, 4, 2).add_(v[2].unsqueeze(1));
        Tensor z = tr::zeros({2, 4}, {.dtype = DType::Float64});
        z.select(0, 0).copy_(tr::tanh(y.select(0, 2)));
        z.select(0, 1).copy_(y.select(0, 0) * y.select(0, 1));
        return tr::cat({y, z}, 0);
      },
      {x, a, b}, "in-place through views");
}

TEST(Autograd, GradFunctionAndHigherOrder) {
  Tensor x = tr::tensor<double>({0.5, -1, 2}).set_requires_grad();
  Tensor u = tr::tensor<double>({1, 1, 1}).set_requires_grad();
  Tensor y = (x.pow(3.0)).sum();
  auto g = ag::grad({y}, {x}, {}, std::nullopt, /*create_graph=*/true);
  EXPECT_EQ(g[0].to_vector<double>(), (std::vector<double>{0.75, 3, 12}));
  EXPECT_FALSE(x.grad().defined());  // grad() does not touch .grad
  auto g2 = ag::grad({g[0].sum()}, {x});
  EXPECT_EQ(g2[0].to_vector<double>(), (std::vector<double>{3, -6, 12}));  // 6x
  tt::expect_error([&] { ag::grad({(x * 2.0).sum()}, {u}); }, {"[terra::grad]", "allow_unused"});
  auto none = ag::grad({(x * 2.0).sum()}, {u}, {}, std::nullopt, false, /*allow_unused=*/true);
  EXPECT_FALSE(none[0].defined());
  // retain_grad keeps a non-leaf's gradient.
  Tensor h = x * 3.0;
  h.retain_grad();
  (h * h).sum().backward();
  EXPECT_EQ(h.grad().to_vector<double>(), (std::vector<double>{3, -6, 12}));
}

TEST(Autograd, MixedDtypesGiveGradientsInTheLeafDtype) {
  Tensor a = tr::tensor<float>({1, 2}).set_requires_grad();
  Tensor b = tr::tensor<double>({3, 4}).set_requires_grad();
  (a * b).sum().backward();
  EXPECT_EQ(a.grad().dtype(), DType::Float32);
  EXPECT_EQ(a.grad().to_vector<float>(), (std::vector<float>{3, 4}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{1, 2}));
}
