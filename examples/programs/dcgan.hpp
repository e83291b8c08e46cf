// examples/programs/dcgan.hpp: paper program 2. The DCGAN generator (transposed convs,
// BatchNorm, ReLU, tanh) and discriminator (strided convs, BatchNorm, LeakyReLU) on 32x32
// synthetic colour images, two Adam optimizers, alternating updates, weights initialized
// N(0, 0.02) as in the DCGAN paper. Host side: the real batch is drawn on the host, and
// D(x), D(G(z)) before and D(G(z)) after the discriminator step are fetched every step.
#pragma once

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "examples/programs/common.hpp"

namespace programs {

struct DcganConfig {
  int64_t nz = 100, ngf = 64, ndf = 64;  // latent size, generator / discriminator width
  int64_t batch = 16;                     // images are 3 x 32 x 32
  double lr = 2e-4, beta1 = 0.5;
  bool print = true;  // D(x), D(G(z)) every 10 steps
  uint32_t seed = 2;
  static DcganConfig paper() { return {}; }
  static DcganConfig tiny() {
    DcganConfig c;
    c.nz = 16;
    c.ngf = c.ndf = 8;
    c.batch = 4;
    c.print = false;
    return c;
  }
};

namespace dcgan {

inline tr::Tensor leaky_relu(const tr::Tensor& x) { return tr::maximum(x, x * 0.2); }

// z [N, nz, 1, 1] -> 4x4 -> 8x8 -> 16x16 -> [N, 3, 32, 32] in (-1, 1).
struct GeneratorImpl : nn::Module {
  explicit GeneratorImpl(const DcganConfig& c) : Module("Generator") {
    int64_t g = c.ngf;
    nn::ConvTranspose2dOptions first{.bias = false};
    nn::ConvTranspose2dOptions up{.stride = 2, .padding = 1, .bias = false};
    t1 = register_module("t1", nn::ConvTranspose2d(c.nz, g * 4, 4, first));
    b1 = register_module("b1", nn::BatchNorm2d(g * 4));
    t2 = register_module("t2", nn::ConvTranspose2d(g * 4, g * 2, 4, up));
    b2 = register_module("b2", nn::BatchNorm2d(g * 2));
    t3 = register_module("t3", nn::ConvTranspose2d(g * 2, g, 4, up));
    b3 = register_module("b3", nn::BatchNorm2d(g));
    t4 = register_module("t4", nn::ConvTranspose2d(g, 3, 4, up));
  }
  tr::Tensor forward(const tr::Tensor& z) override {
    tr::Tensor h = tr::relu(b1(t1(z)));
    h = tr::relu(b2(t2(h)));
    h = tr::relu(b3(t3(h)));
    return tr::tanh(t4(h));
  }
  nn::ConvTranspose2d t1{nullptr}, t2{nullptr}, t3{nullptr}, t4{nullptr};
  nn::BatchNorm2d b1{nullptr}, b2{nullptr}, b3{nullptr};
};
TERRA_MODULE(Generator);

// [N, 3, 32, 32] -> 16x16 -> 8x8 -> 4x4 -> [N] logits.
struct DiscriminatorImpl : nn::Module {
  explicit DiscriminatorImpl(const DcganConfig& c) : Module("Discriminator") {
    int64_t d = c.ndf;
    nn::Conv2dOptions down{.stride = 2, .padding = 1, .bias = false};
    c1 = register_module("c1", nn::Conv2d(3, d, 4, down));
    c2 = register_module("c2", nn::Conv2d(d, d * 2, 4, down));
    b2 = register_module("b2", nn::BatchNorm2d(d * 2));
    c3 = register_module("c3", nn::Conv2d(d * 2, d * 4, 4, down));
    b3 = register_module("b3", nn::BatchNorm2d(d * 4));
    c4 = register_module("c4", nn::Conv2d(d * 4, 1, 4, nn::Conv2dOptions{.bias = false}));
  }
  tr::Tensor forward(const tr::Tensor& x) override {
    tr::Tensor h = leaky_relu(c1(x));
    h = leaky_relu(b2(c2(h)));
    h = leaky_relu(b3(c3(h)));
    return c4(h).view({-1});
  }
  nn::Conv2d c1{nullptr}, c2{nullptr}, c3{nullptr}, c4{nullptr};
  nn::BatchNorm2d b2{nullptr}, b3{nullptr};
};
TERRA_MODULE(Discriminator);

// The DCGAN paper's initialization, by module class as the PyTorch example's weights_init:
// conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0.
inline void init_weights(const nn::Module& m) {
  tr::NoGradGuard no_grad;
  for (const auto& child : m.children()) {
    for (auto& [name, p] : child->named_parameters(false)) {
      tr::Tensor t = p;
      if (child->name().find("Conv") != std::string::npos) tr::nn::init::normal_(t, 0.0, 0.02);
      if (child->name().starts_with("BatchNorm")) {
        if (name == "weight") tr::nn::init::normal_(t, 1.0, 0.02);
        else tr::nn::init::zeros_(t);
      }
    }
  }
}

// Real images: a soft-edged coloured disc on a coloured background, drawn on the host.
inline tr::Tensor real_batch(int64_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f), pos(8.f, 24.f), rad(4.f, 10.f);
  std::vector<float> v(size_t(n * 3 * 32 * 32));
  for (int64_t i = 0; i < n; ++i) {
    float cy = pos(rng), cx = pos(rng), r = rad(rng);
    float fg[3] = {u(rng), u(rng), u(rng)}, bg[3] = {u(rng), u(rng), u(rng)};
    for (int64_t y = 0; y < 32; ++y)
      for (int64_t x = 0; x < 32; ++x) {
        float d = std::sqrt((float(y) - cy) * (float(y) - cy) + (float(x) - cx) * (float(x) - cx));
        float a = 1.f / (1.f + std::exp(2.f * (d - r)));  // 1 inside, 0 outside
        for (int64_t ch = 0; ch < 3; ++ch)
          v[size_t(((i * 3 + ch) * 32 + y) * 32 + x)] = a * fg[ch] + (1 - a) * bg[ch];
      }
  }
  return tr::tensor(v, {n, 3, 32, 32});
}

}  // namespace dcgan

inline Outcome run_dcgan(const DcganConfig& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(cfg.seed);
  Outcome o;
  dcgan::Generator g(cfg);
  dcgan::Discriminator d(cfg);
  dcgan::init_weights(*g);
  dcgan::init_weights(*d);
  tr::optim::Adam opt_g(g->parameters(), {.lr = cfg.lr, .beta1 = cfg.beta1});
  tr::optim::Adam opt_d(d->parameters(), {.lr = cfg.lr, .beta1 = cfg.beta1});
  tr::Tensor real_label = tr::ones({cfg.batch}), fake_label = tr::zeros({cfg.batch});
  run_loop(mode, iters, o, [&](int step) {
    // (1) Discriminator: maximize log D(x) + log(1 - D(G(z))).
    tr::Tensor real = dcgan::real_batch(cfg.batch, rng);
    opt_d.zero_grad();
    tr::Tensor out_real = d(real);
    tr::Tensor err_real = F::binary_cross_entropy_with_logits(out_real, real_label);
    err_real.backward();
    tr::Tensor fake = g(tr::randn({cfg.batch, cfg.nz, 1, 1}));
    tr::Tensor out_fake = d(fake.detach());
    tr::Tensor err_fake = F::binary_cross_entropy_with_logits(out_fake, fake_label);
    err_fake.backward();
    opt_d.step();
    // (2) Generator: maximize log D(G(z)).
    opt_g.zero_grad();
    tr::Tensor out_gen = d(fake);
    tr::Tensor err_g = F::binary_cross_entropy_with_logits(out_gen, real_label);
    err_g.backward();
    opt_g.step();
    double d_x = tr::sigmoid(out_real).mean().item<double>();
    double d_g_z1 = tr::sigmoid(out_fake).mean().item<double>();
    double d_g_z2 = tr::sigmoid(out_gen).mean().item<double>();
    double loss_d = (err_real + err_fake).item<double>(), loss_g = err_g.item<double>();
    o.fetched.insert(o.fetched.end(), {d_x, d_g_z1, d_g_z2, loss_d, loss_g});
    if (cfg.print && step % 10 == 0)
      std::printf("dcgan %s step %d Loss_D %.4f Loss_G %.4f D(x) %.4f D(G(z)) %.4f / %.4f\n",
                  mode_name(mode), step, loss_d, loss_g, d_x, d_g_z1, d_g_z2);
  });
  collect_params(o, g->parameters());
  collect_params(o, d->parameters());
  return o;
}

}  // namespace programs
