// Optimizers against plain-double implementations of PyTorch's update rules, schedules,
// parameter groups and gradient clipping.
#include <cmath>

#include "op_test.hpp"

namespace tr = terra;
namespace optim = terra::optim;
using tr::Tensor;

namespace {
// The gradient of f(p) = sum(c * p^2) / 2 is c * p; run `steps` steps of opt and return p.
template <class Opt, class O>
std::vector<double> run(O options, int steps, std::vector<double> p0 = {1.0, -2.0, 0.5}) {
  Tensor p = tr::tensor(p0).set_requires_grad();
  Tensor c = tr::tensor<double>({1.0, 3.0, 0.5});
  Opt opt({p}, options);
  for (int i = 0; i < steps; ++i) {
    opt.zero_grad();
    ((p * p * c).sum() * 0.5).backward();
    opt.step();
  }
  return p.to_vector<double>();
}
const std::vector<double> kC = {1.0, 3.0, 0.5};

void expect_vec_near(const std::vector<double>& a, const std::vector<double>& b, double tol = 1e-12) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tol * (1 + std::fabs(b[i]))) << i;
}
}  // namespace

TEST(Optim, SgdMomentumNesterovWeightDecay) {
  optim::SGDOptions o{.lr = 0.1, .momentum = 0.9, .dampening = 0, .weight_decay = 0.01, .nesterov = true};
  std::vector<double> p = {1.0, -2.0, 0.5}, buf(3);
  for (int s = 0; s < 5; ++s)
    for (int i = 0; i < 3; ++i) {
      double g = kC[i] * p[i] + o.weight_decay * p[i];
      buf[i] = s == 0 ? g : o.momentum * buf[i] + (1 - o.dampening) * g;
      p[i] -= o.lr * (g + o.momentum * buf[i]);
    }
  expect_vec_near(run<optim::SGD>(o, 5), p);
  optim::SGDOptions plain{.lr = 0.2};
  std::vector<double> q = {1.0, -2.0, 0.5};
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < 3; ++i) q[i] -= 0.2 * kC[i] * q[i];
  expect_vec_near(run<optim::SGD>(plain, 3), q);
  tt::expect_error([] { Tensor p = tr::ones({1}).set_requires_grad(); optim::SGD({p}, {.lr = 0.1, .nesterov = true}); },
                   {"[terra::SGD]", "nesterov"});
}

TEST(Optim, AdamAndAdamW) {
  for (bool decoupled : {false, true}) {
    optim::AdamOptions o{.lr = 0.05, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.1};
    std::vector<double> p = {1.0, -2.0, 0.5}, m(3), v(3);
    for (int s = 1; s <= 6; ++s)
      for (int i = 0; i < 3; ++i) {
        double g = kC[i] * p[i];
        if (decoupled) p[i] *= 1 - o.lr * o.weight_decay;
        else g += o.weight_decay * p[i];
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
        double bc1 = 1 - std::pow(o.beta1, s), bc2 = 1 - std::pow(o.beta2, s);
        p[i] -= o.lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + o.eps);
      }
    optim::AdamWOptions w{.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2, .eps = o.eps,
                          .weight_decay = o.weight_decay};
    auto got = decoupled ? run<optim::AdamW>(w, 6) : run<optim::Adam>(o, 6);
    expect_vec_near(got, p, 1e-10);
  }
  // AdamW's default decay survives designated initializers, as torch's AdamW defaults do.
  EXPECT_EQ((optim::AdamWOptions{.lr = 1e-3}).weight_decay, 0.01);
  EXPECT_EQ((optim::AdamOptions{.lr = 1e-3}).weight_decay, 0.0);
  tt::expect_error([] { Tensor p = tr::ones({1}).set_requires_grad(); optim::Adam({p}, {.beta1 = 1.0}); },
                   {"[terra::Adam]", "betas"});
}

TEST(Optim, RmspropCenteredWithMomentum) {
  optim::RMSpropOptions o{.lr = 0.01, .alpha = 0.9, .eps = 1e-8, .weight_decay = 0, .momentum = 0.5, .centered = true};
  std::vector<double> p = {1.0, -2.0, 0.5}, sq(3), ga(3), buf(3);
  for (int s = 0; s < 4; ++s)
    for (int i = 0; i < 3; ++i) {
      double g = kC[i] * p[i];
      sq[i] = o.alpha * sq[i] + (1 - o.alpha) * g * g;
      ga[i] = o.alpha * ga[i] + (1 - o.alpha) * g;
      double avg = std::sqrt(sq[i] - ga[i] * ga[i]) + o.eps;
      buf[i] = o.momentum * buf[i] + g / avg;
      p[i] -= o.lr * buf[i];
    }
  expect_vec_near(run<optim::RMSprop>(o, 4), p, 1e-10);
}

TEST(Optim, StateKeepsItsAddressAndGroupsHaveOwnOptions) {
  Tensor a = tr::ones({2}).set_requires_grad(), b = tr::ones({2}).set_requires_grad();
  optim::SGD opt(std::vector<optim::SGD::Group>{{{a}, {.lr = 0.1, .momentum = 0.9}}, {{b}, {.lr = 1.0}}});
  const void* pa = a.raw_data();
  for (int s = 0; s < 3; ++s) {
    opt.zero_grad();
    (a.sum() + b.sum()).backward();
    opt.step();
  }
  EXPECT_EQ(a.raw_data(), pa);
  const void* buf = opt.state(0).tensors.at("momentum_buffer").raw_data();
  opt.step();
  EXPECT_EQ(opt.state(0).tensors.at("momentum_buffer").raw_data(), buf);
  EXPECT_NEAR(b.to_vector<float>()[0], 1.0f - 4.0f, 1e-6);
  EXPECT_EQ(opt.lr(0), 0.1);
  EXPECT_EQ(opt.lr(1), 1.0);
  opt.zero_grad(/*set_to_none=*/true);
  EXPECT_FALSE(a.grad().defined());
}

TEST(Optim, Schedulers) {
  Tensor p = tr::ones({1}).set_requires_grad();
  optim::SGD opt({p}, {.lr = 1.0});
  optim::StepLR step(opt, 2, 0.5);
  std::vector<double> lrs;
  for (int i = 0; i < 5; ++i) {
    step.step();
    lrs.push_back(opt.lr());
  }
  EXPECT_EQ(lrs, (std::vector<double>{1.0, 0.5, 0.5, 0.25, 0.25}));
  optim::SGD opt2({p}, {.lr = 1.0});
  optim::MultiStepLR ms(opt2, {1, 3}, 0.1);
  ms.step();
  EXPECT_NEAR(opt2.lr(), 0.1, 1e-15);
  ms.step();
  ms.step();
  EXPECT_NEAR(opt2.lr(), 0.01, 1e-15);
  optim::SGD opt3({p}, {.lr = 2.0});
  optim::CosineAnnealingLR cos(opt3, 4, 0.0);
  cos.step();
  cos.step();
  EXPECT_NEAR(opt3.lr(), 1.0, 1e-12);  // half way
  for (int i = 0; i < 5; ++i) cos.step();
  EXPECT_NEAR(opt3.lr(), 0.0, 1e-12);
  optim::SGD opt4({p}, {.lr = 1.0});
  optim::LinearWarmupLR warm(opt4, 4, 0.0);
  EXPECT_EQ(opt4.lr(), 0.0);
  warm.step();
  EXPECT_EQ(opt4.lr(), 0.25);
  for (int i = 0; i < 10; ++i) warm.step();
  EXPECT_EQ(opt4.lr(), 1.0);
}

TEST(Optim, ClipGradNorm) {
  Tensor a = tr::tensor<float>({3, 0}).set_requires_grad(), b = tr::tensor<float>({0, 4}).set_requires_grad();
  (a * a * 0.5).sum().backward();
  (b * b * 0.5).sum().backward();
  double norm = optim::clip_grad_norm_({a, b}, 1.0);
  EXPECT_NEAR(norm, 5.0, 1e-6);
  EXPECT_NEAR(a.grad().to_vector<float>()[0], 0.6f, 1e-5);
  EXPECT_NEAR(b.grad().to_vector<float>()[1], 0.8f, 1e-5);
  EXPECT_NEAR(optim::clip_grad_norm_({a, b}, 10.0), 1.0, 1e-5);  // below the bound: unchanged
  EXPECT_NEAR(a.grad().to_vector<float>()[0], 0.6f, 1e-5);
}
