// bench/parity_test.cpp: trains the same MLP (784-256-10, ReLU) in terra and in LibTorch, from
// the same initial weights (terra's init copied into LibTorch) on the same batches (made by
// terra, copied), and checks that the losses agree step by step over 20 SGD (momentum) steps
// and 20 Adam steps, and that the final parameters agree. float32 and float64.
// Built only where LibTorch is usable (bench/CMakeLists.txt); CTest label "parity".
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <terra/terra.hpp>

namespace {

namespace tr = terra;
namespace tnn = terra::nn;

constexpr int kSteps = 20;
constexpr int64_t kBatch = 64, kIn = 784, kHidden = 256, kClasses = 10;

// Tolerances (measured values in docs/benchmarks.md, "Parity with LibTorch"):
// * loss, relative, every step: 1e-5 as the issue asks, float32 and float64 (measured: float32
//   at most 1.1e-7 with SGD, 3.3e-6 with Adam; float64 below 1e-15).
// * parameters after the last step, max |terra - torch| / max |torch| per tensor:
//   float64 1e-12 (measured <= 9e-14); float32 with SGD 1e-5 (measured 3.5e-7).
//   float32 with Adam: 1e-2 (measured 5.2e-3), for two reasons found by tracing the run:
//   the float32 gradients of terra and LibTorch differ in their last bits (different
//   summation orders in the backward pass), and Adam's step lr * m / (sqrt(v) + eps) turns
//   those absolute differences in gradient elements near zero (|g| ~ eps) into differences of
//   a sizable fraction of lr (3.5e-4 relative after the first step already); and at step 14
//   one ReLU pre-activation 2.8e-8 from zero has opposite signs in the two libraries, after
//   which that unit's gradients differ by a whole sample's term (1.4e-3 relative). The losses
//   still agree to 1e-5; float64 shows the update rules themselves agree.
constexpr double kLossRtol = 1e-5;
constexpr double kParamRtol64 = 1e-12, kParamRtol32Sgd = 1e-5, kParamRtol32Adam = 1e-2;

struct MlpImpl : tnn::Module {
  MlpImpl() : Module("Mlp") {
    fc1 = register_module("fc1", tnn::Linear(kIn, kHidden));
    fc2 = register_module("fc2", tnn::Linear(kHidden, kClasses));
  }
  tr::Tensor forward(const tr::Tensor& x) override { return fc2(tr::relu(fc1(x))); }
  tnn::Linear fc1{nullptr}, fc2{nullptr};
};
TERRA_MODULE(Mlp);

struct TorchMlpImpl : torch::nn::Module {
  TorchMlpImpl()
      : fc1(register_module("fc1", torch::nn::Linear(kIn, kHidden))),
        fc2(register_module("fc2", torch::nn::Linear(kHidden, kClasses))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(TorchMlp);

// A terra tensor's values in a new LibTorch tensor of the same shape and dtype.
torch::Tensor to_torch(const tr::Tensor& t) {
  std::vector<int64_t> sizes(t.shape().begin(), t.shape().end());
  if (t.dtype() == tr::kFloat64) {
    auto v = t.to_vector<double>();
    return torch::from_blob(v.data(), sizes, torch::kFloat64).clone();
  }
  if (t.dtype() == tr::kInt64) {
    auto v = t.to_vector<int64_t>();
    return torch::from_blob(v.data(), sizes, torch::kInt64).clone();
  }
  auto v = t.to_vector<float>();
  return torch::from_blob(v.data(), sizes, torch::kFloat32).clone();
}

std::vector<double> values(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}
std::vector<double> values(const tr::Tensor& t) {
  return t.detach().to(tr::kFloat64).to_vector<double>();
}

// max |a - b| / max |b|: how far terra's tensor is from LibTorch's, relative to its scale.
double param_rel_diff(const tr::Tensor& a, const torch::Tensor& b) {
  auto va = values(a), vb = values(b);
  EXPECT_EQ(va.size(), vb.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(va.size(), vb.size()); ++i) {
    diff = std::max(diff, std::abs(va[i] - vb[i]));
    scale = std::max(scale, std::abs(vb[i]));
  }
  return diff / std::max(scale, 1e-30);
}

enum class Opt { SGD, Adam };

struct Result {
  double max_loss_rel = 0;   // max over steps of |loss_terra - loss_torch| / |loss_torch|
  double max_param_rel = 0;  // max over parameters of param_rel_diff after the last step
};

Result train_both(Opt which, tr::DType dtype) {
  tr::manual_seed(1234);
  Mlp net;  // terra's default init (PyTorch's rule), in float32
  net->to(dtype);
  // Inputs near the scale of normalized images; labels uniform over the classes.
  std::vector<tr::Tensor> xs, ys;
  for (int s = 0; s < kSteps; ++s) {
    xs.push_back(tr::randn({kBatch, kIn}, {.dtype = dtype}));
    ys.push_back(tr::randint(0, kClasses, {kBatch}));
  }

  torch::manual_seed(0);
  torch::ScalarType tdtype = dtype == tr::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  TorchMlp tnet;
  tnet->to(tdtype);
  auto tparams = tnet->parameters();
  auto params = net->parameters();
  EXPECT_EQ(params.size(), tparams.size());
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) tparams[i].copy_(to_torch(params[i]));
  }

  std::unique_ptr<tr::optim::Optimizer> opt;
  std::unique_ptr<torch::optim::Optimizer> topt;
  if (which == Opt::SGD) {
    opt = std::make_unique<tr::optim::SGD>(params,
                                           tr::optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
    topt = std::make_unique<torch::optim::SGD>(tparams,
                                               torch::optim::SGDOptions(0.05).momentum(0.9));
  } else {
    opt = std::make_unique<tr::optim::Adam>(params, tr::optim::AdamOptions{.lr = 1e-3});
    topt = std::make_unique<torch::optim::Adam>(tparams, torch::optim::AdamOptions(1e-3));
  }

  Result r;
  std::printf("  step  terra loss          torch loss          rel diff\n");
  for (int s = 0; s < kSteps; ++s) {
    tr::Tensor loss = tnn::functional::cross_entropy(net(xs[size_t(s)]), ys[size_t(s)]);
    opt->zero_grad();
    loss.backward();
    opt->step();

    torch::Tensor tloss = torch::nn::functional::cross_entropy(tnet(to_torch(xs[size_t(s)])),
                                                               to_torch(ys[size_t(s)]));
    topt->zero_grad();
    tloss.backward();
    topt->step();

    double a = loss.item<double>(), b = tloss.item<double>();
    double rel = std::abs(a - b) / std::abs(b);
    r.max_loss_rel = std::max(r.max_loss_rel, rel);
    std::printf("  %4d  %.15f  %.15f  %.2e\n", s, a, b, rel);
    EXPECT_LE(rel, kLossRtol) << "step " << s << ": terra " << a << ", torch " << b;
  }
  for (size_t i = 0; i < params.size(); ++i)
    r.max_param_rel = std::max(r.max_param_rel, param_rel_diff(params[i], tparams[i]));
  std::printf("  max loss rel diff %.2e, max parameter rel diff %.2e\n", r.max_loss_rel,
              r.max_param_rel);
  return r;
}

void check(Opt which, tr::DType dtype) {
  Result r = train_both(which, dtype);
  EXPECT_LE(r.max_loss_rel, kLossRtol);
  double tol = dtype == tr::kFloat64 ? kParamRtol64
               : which == Opt::SGD    ? kParamRtol32Sgd
                                      : kParamRtol32Adam;
  EXPECT_LE(r.max_param_rel, tol);
}

TEST(Parity, MlpSgdMomentumFloat32) { check(Opt::SGD, tr::kFloat32); }
TEST(Parity, MlpAdamFloat32) { check(Opt::Adam, tr::kFloat32); }
TEST(Parity, MlpSgdMomentumFloat64) { check(Opt::SGD, tr::kFloat64); }
TEST(Parity, MlpAdamFloat64) { check(Opt::Adam, tr::kFloat64); }

}  // namespace
