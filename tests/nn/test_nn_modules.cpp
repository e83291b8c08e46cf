// nn::Module machinery, the standard layers and the losses.
#include <cmath>

#include "op_test.hpp"

namespace tr = terra;
namespace nn = terra::nn;
namespace F = terra::nn::functional;
using tr::DType;
using tr::Shape;
using tr::Tensor;

namespace {
struct NetImpl : nn::Module {
  NetImpl() : Module("Net") {
    fc1 = register_module("fc1", nn::Linear(4, 8));
    bn = register_module("bn", nn::BatchNorm1d(8));
    fc2 = register_module("fc2", nn::Linear(8, 3, /*bias=*/false));
  }
  Tensor forward(const Tensor& x) override { return fc2(tr::relu(bn(fc1(x)))); }
  nn::Linear fc1{nullptr}, fc2{nullptr};
  nn::BatchNorm1d bn{nullptr};
};
TERRA_MODULE(Net);
}  // namespace

TEST(Modules, RegistrationNamesAndStateDict) {
  tr::manual_seed(0);
  Net net;
  std::vector<std::string> names;
  for (auto& [n, p] : net->named_parameters()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "fc2.weight"}));
  EXPECT_EQ(net->buffers().size(), 3u);
  EXPECT_EQ(net->state_dict().size(), 8u);
  for (const Tensor& p : net->parameters()) EXPECT_TRUE(p.requires_grad());
  EXPECT_EQ(net->fc1->weight.shape(), Shape({8, 4}));
  Tensor y = net(tr::randn({5, 4}));
  EXPECT_EQ(y.shape(), Shape({5, 3}));
  // load_state_dict copies in place and validates keys and shapes.
  Net other;
  const void* addr = other->fc1->weight.raw_data();
  other->load_state_dict(net->state_dict());
  EXPECT_EQ(other->fc1->weight.raw_data(), addr);
  EXPECT_EQ(other->fc1->weight.to_vector<float>(), net->fc1->weight.to_vector<float>());
  auto sd = net->state_dict();
  sd.pop_back();
  tt::expect_error([&] { other->load_state_dict(sd); }, {"[terra::load_state_dict]", "missing", "num_batches_tracked"});
  sd = net->state_dict();
  sd.emplace_back("extra", tr::ones({1}));
  tt::expect_error([&] { other->load_state_dict(sd); }, {"[terra::load_state_dict]", "unexpected", "extra"});
  sd = net->state_dict();
  sd[0].second = tr::ones({2, 2});
  tt::expect_error([&] { other->load_state_dict(sd); }, {"[terra::load_state_dict]", "fc1.weight", "[2, 2]", "[8, 4]"});
}

TEST(Modules, TrainEvalAndDtypeConversionKeepHandles) {
  Net net;
  EXPECT_TRUE(net->bn->is_training());
  net->eval();
  EXPECT_FALSE(net->bn->is_training());
  Tensor w = net->fc1->weight;
  net->to(DType::Float64);
  EXPECT_EQ(w.dtype(), DType::Float64);  // the member handle sees the conversion
  EXPECT_TRUE(w.requires_grad());
  EXPECT_EQ(net->bn->num_batches_tracked.dtype(), DType::Int64);
  EXPECT_EQ(net(tr::randn({2, 4}, {.dtype = DType::Float64})).dtype(), DType::Float64);
}

TEST(Modules, LinearAndDefaultInit) {
  tr::manual_seed(3);
  nn::Linear fc(100, 50);
  double bound = 1 / std::sqrt(100.0);
  for (float v : fc->weight.to_vector<float>()) ASSERT_LE(std::fabs(v), bound + 1e-7);
  EXPECT_GT(fc->weight.abs().max().item<float>(), 0.9 * bound);
  Tensor x = tr::randn({3, 100});
  tt::expect_close(fc(x), {3, 50}, tt::f64(tr::matmul(x, fc->weight.t()) + fc->bias), 1e-5, 1e-5);
  tt::expect_error([] { nn::Linear(0, 3); }, {"[terra::Linear]"});
}

TEST(Modules, BatchNormUpdatesRunningStats) {
  nn::BatchNorm1d bn(2, nn::BatchNormOptions{.momentum = 0.5});
  Tensor x = tr::tensor<float>({1, 10, 3, 20}, {2, 2});
  Tensor y = bn(x);
  EXPECT_EQ(bn->running_mean.to_vector<float>(), (std::vector<float>{1.0f, 7.5f}));   // 0.5 * mean
  EXPECT_EQ(bn->running_var.to_vector<float>(), (std::vector<float>{1.5f, 25.5f}));  // 0.5 + 0.5 * unbiased
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 1);
  tt::expect_close(y, {2, 2}, {-1, -1, 1, 1}, 1e-4, 1e-4);
  bn->eval();
  Tensor e = bn(x);
  EXPECT_NEAR(e.to_vector<float>()[0], (1 - 1.0) / std::sqrt(1.5 + 1e-5), 1e-5);
}

TEST(Modules, SequentialAndActivations) {
  nn::Sequential seq(nn::Linear(3, 4), nn::ReLU(), nn::Linear(4, 2), nn::Tanh());
  EXPECT_EQ(seq->size(), 4u);
  EXPECT_EQ(seq->parameters().size(), 4u);
  EXPECT_EQ(seq->named_parameters()[2].first, "2.weight");
  Tensor y = seq(tr::randn({5, 3}));
  EXPECT_EQ(y.shape(), Shape({5, 2}));
  EXPECT_LE(y.abs().max().item<float>(), 1.0f);
  nn::ModuleList list;
  list->push_back(nn::Linear(2, 2));
  EXPECT_EQ(list->size(), 1u);
  tt::expect_error([&] { list->forward(tr::ones({1})); }, {"ModuleList", "single tensor"});
}

TEST(Modules, MultiheadAttentionMatchesManualComputation) {
  tr::manual_seed(5);
  nn::MultiheadAttention mha(8, 2, nn::MultiheadAttentionOptions{.batch_first = true});
  Tensor x = tr::randn({2, 5, 8});
  auto [out, w] = mha->forward(x, x, x, {}, true, {}, /*is_causal=*/true);
  EXPECT_EQ(out.shape(), Shape({2, 5, 8}));
  EXPECT_EQ(w.shape(), Shape({2, 5, 5}));
  // Causal: weights above the diagonal are zero, rows sum to one.
  auto wv = w.to_vector<float>();
  for (int i = 0; i < 5; ++i)
    for (int j = i + 1; j < 5; ++j) EXPECT_EQ(wv[size_t(i * 5 + j)], 0.0f);
  tt::expect_close(w.sum({-1}), {2, 5}, std::vector<double>(10, 1.0), 1e-5, 1e-5);
  // Changing a later token does not change earlier outputs.
  Tensor x2 = x.clone();
  x2.select(1, 4).fill_(3.0);
  auto [out2, w2] = mha->forward(x2, x2, x2, {}, false, {}, true);
  tt::expect_close(out2.slice(1, 0, 4), {2, 4, 8}, tt::f64(out.slice(1, 0, 4)), 1e-5, 1e-6);
  EXPECT_FALSE(w2.defined());
  // Manual: one head's computation.
  auto wq = mha->in_proj_weight.chunk(3, 0);
  Tensor q = tr::linear(x, wq[0]).view({2, 5, 2, 4}).transpose(1, 2);
  Tensor k = tr::linear(x, wq[1]).view({2, 5, 2, 4}).transpose(1, 2);
  Tensor v = tr::linear(x, wq[2]).view({2, 5, 2, 4}).transpose(1, 2);
  Tensor s = tr::matmul(q, k.transpose(-1, -2)) / 2.0;
  s = s.masked_fill(F::causal_mask(5, 5), -INFINITY);
  Tensor o = tr::matmul(tr::softmax(s, -1), v).transpose(1, 2).reshape({2, 5, 8});
  tt::expect_close(out, {2, 5, 8}, tt::f64(mha->out_proj(o)), 1e-5, 1e-5);
  // Key padding: a padded key gets no weight.
  Tensor pad = tr::tensor<bool>({false, false, false, false, true, false, false, false, false, false}, {2, 5});
  auto [o3, w3] = mha->forward(x, x, x, pad);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(w3.to_vector<float>()[size_t(i * 5 + 4)], 0.0f);
  tt::expect_error([&] { mha->forward(x, x, x, tr::ones({2, 4}, {.dtype = DType::Bool})); },
                   {"[terra::MultiheadAttention]", "[2, 4]"});
}

TEST(Losses, CrossEntropyMatchesReference) {
  Tensor logits = tr::tensor<double>({1, 2, 3, 1, 0, -1, 0.5, 0.5, 0.5}, {3, 3});
  Tensor target = tr::tensor<int64_t>({2, 0, -100});
  auto lse = [](double a, double b, double c) { return std::log(std::exp(a) + std::exp(b) + std::exp(c)); };
  double l0 = lse(1, 2, 3) - 3, l1 = lse(1, 0, -1) - 1;
  EXPECT_NEAR(F::cross_entropy(logits, target).item<double>(), (l0 + l1) / 2, 1e-12);
  EXPECT_NEAR(F::cross_entropy(logits, target, {.reduction = F::Reduction::Sum}).item<double>(), l0 + l1, 1e-12);
  // Label smoothing: (1 - e) * nll + e * mean over classes of -logp.
  double e = 0.1, s0 = (3 * lse(1, 2, 3) - 6) / 3, s1 = (3 * lse(1, 0, -1) - 0) / 3;
  double smooth = ((1 - e) * l0 + e * s0 + (1 - e) * l1 + e * s1) / 2;
  EXPECT_NEAR(F::cross_entropy(logits, target, {.label_smoothing = e}).item<double>(), smooth, 1e-12);
  Tensor none = F::cross_entropy(logits, target, {.reduction = F::Reduction::None});
  EXPECT_EQ(none.shape(), Shape({3}));
  EXPECT_EQ(none.to_vector<double>()[2], 0.0);
  tt::expect_error([&] { F::cross_entropy(logits, tr::tensor<int64_t>({0, 1})); }, {"[terra::nll_loss]", "[2]", "[3, 3]"});
  tt::expect_error([&] { F::cross_entropy(logits, tr::tensor<int64_t>({0, 1, 3})); }, {"3"});
  tt::expect_error([&] { F::cross_entropy(logits, tr::tensor<float>({0, 1, 2})); }, {"[terra::nll_loss]", "float32"});
  std::string err = tr::autograd::gradcheck(
      [&](auto& v) { return F::cross_entropy(v[0], target, {.label_smoothing = 0.2}); }, {logits});
  EXPECT_TRUE(err.empty()) << err;
}

TEST(Losses, RegressionAndBinaryLosses) {
  Tensor a = tr::tensor<double>({1, 2, 3}), b = tr::tensor<double>({1.5, 2, 1});
  EXPECT_NEAR(F::mse_loss(a, b).item<double>(), (0.25 + 0 + 4) / 3, 1e-12);
  EXPECT_NEAR(F::l1_loss(a, b, F::Reduction::Sum).item<double>(), 2.5, 1e-12);
  tt::expect_error([&] { F::mse_loss(a, tr::ones({2})); }, {"[terra::mse_loss]", "[3]", "[2]"});
  Tensor x = tr::tensor<double>({-30, -1, 0, 2, 40}), y = tr::tensor<double>({0, 1, 1, 0, 1});
  auto xv = x.to_vector<double>(), yv = y.to_vector<double>();
  double ref = 0;
  for (size_t i = 0; i < 5; ++i) ref += std::max(xv[i], 0.0) - xv[i] * yv[i] + std::log1p(std::exp(-std::fabs(xv[i])));
  EXPECT_NEAR(F::binary_cross_entropy_with_logits(x, y).item<double>(), ref / 5, 1e-12);
  // pos_weight 2 on the moderate elements: -(2 y log s + (1 - y) log(1 - s)).
  Tensor pw = tr::full({3}, 2.0, {.dtype = DType::Float64});
  double refw = 0;
  for (size_t i = 1; i < 4; ++i) {
    double sig = 1 / (1 + std::exp(-xv[i]));
    refw += -(2 * yv[i] * std::log(sig) + (1 - yv[i]) * std::log(1 - sig));
  }
  Tensor got = F::binary_cross_entropy_with_logits(x.slice(0, 1, 4), y.slice(0, 1, 4), F::Reduction::Sum, pw);
  EXPECT_NEAR(got.item<double>(), refw, 1e-12);
}

TEST(Activations, LeakyReluMatchesReference) {
  Tensor x = tr::tensor<double>({-3, -0.5, 0, 0.25, 2, -1e-3}, {2, 3});
  for (Tensor in : {x, x.t()}) {  // contiguous and transposed
    auto xv = in.contiguous().to_vector<double>();
    auto got = F::leaky_relu(in, 0.1).contiguous().to_vector<double>();
    for (size_t i = 0; i < xv.size(); ++i) EXPECT_EQ(got[i], xv[i] > 0 ? xv[i] : 0.1 * xv[i]);
  }
  EXPECT_EQ(F::leaky_relu(x.to(DType::Float32)).dtype(), DType::Float32);
  tt::expect_error([&] { F::leaky_relu(tr::tensor<int64_t>({1, -2})); }, {"[terra::leaky_relu]", "int64"});
  Tensor away = tr::tensor<double>({-2, -0.3, 0.4, 1.5});  // away from the kink at 0
  std::string err = tr::autograd::gradcheck([](auto& v) { return F::leaky_relu(v[0], 0.2); }, {away});
  EXPECT_TRUE(err.empty()) << err;
}
