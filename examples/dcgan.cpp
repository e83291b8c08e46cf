// examples/dcgan.cpp: a DCGAN-style generator/discriminator pair on 16x16 synthetic images
// (a bright disc at a random place), two Adam optimizers, alternating updates. The generator
// upsamples with nearest-neighbour doubling + convolution. Checks that the generator learns the
// data's mean intensity and that both losses stay finite.
#include <cmath>

#include <terra/terra.hpp>

#include "common.hpp"

namespace tr = terra;
namespace nn = terra::nn;
namespace F = terra::nn::functional;

// [N, C, H, W] -> [N, C, 2H, 2W] by repeating each pixel (composed of views and a copy).
tr::Tensor upsample2(const tr::Tensor& x) {
  int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  return x.view({n, c, h, 1, w, 1}).expand({n, c, h, 2, w, 2}).reshape({n, c, 2 * h, 2 * w});
}
tr::Tensor leaky_relu(const tr::Tensor& x) { return tr::maximum(x, x * 0.2); }

struct GenImpl : nn::Module {
  GenImpl() : Module("Gen") {
    fc = register_module("fc", nn::Linear(16, 32 * 4 * 4));
    bn0 = register_module("bn0", nn::BatchNorm2d(32));
    c1 = register_module("c1", nn::Conv2d(32, 16, 3, nn::Conv2dOptions{.padding = 1}));
    bn1 = register_module("bn1", nn::BatchNorm2d(16));
    c2 = register_module("c2", nn::Conv2d(16, 1, 3, nn::Conv2dOptions{.padding = 1}));
  }
  tr::Tensor forward(const tr::Tensor& z) override {
    tr::Tensor h = tr::relu(bn0(fc(z).view({-1, 32, 4, 4})));
    h = tr::relu(bn1(c1(upsample2(h))));
    return tr::tanh(c2(upsample2(h)));
  }
  nn::Linear fc{nullptr};
  nn::BatchNorm2d bn0{nullptr}, bn1{nullptr};
  nn::Conv2d c1{nullptr}, c2{nullptr};
};
TERRA_MODULE(Gen);

struct DiscImpl : nn::Module {
  DiscImpl() : Module("Disc") {
    c1 = register_module("c1", nn::Conv2d(1, 16, 4, nn::Conv2dOptions{.stride = 2, .padding = 1}));
    c2 = register_module("c2", nn::Conv2d(16, 32, 4, nn::Conv2dOptions{.stride = 2, .padding = 1}));
    bn2 = register_module("bn2", nn::BatchNorm2d(32));
    fc = register_module("fc", nn::Linear(32 * 4 * 4, 1));
  }
  tr::Tensor forward(const tr::Tensor& x) override {
    tr::Tensor h = leaky_relu(c1(x));
    h = leaky_relu(bn2(c2(h)));
    return fc(h.flatten(1));
  }
  nn::Conv2d c1{nullptr}, c2{nullptr};
  nn::BatchNorm2d bn2{nullptr};
  nn::Linear fc{nullptr};
};
TERRA_MODULE(Disc);

// Real images in [-1, 1]: a disc of radius 3 at a random centre.
tr::Tensor real_batch(int n) {
  tr::Tensor grid = tr::arange(16.0).view({1, 1, 16});
  tr::Tensor cy = tr::randint(4, 12, {n, 1, 1}).to(tr::kFloat32), cx = tr::randint(4, 12, {n, 1, 1}).to(tr::kFloat32);
  tr::Tensor dy = grid.view({1, 16, 1}) - cy, dx = grid - cx;
  tr::Tensor inside = (dy * dy + dx * dx) < 9.0;
  return tr::where(inside, tr::full({}, 1.0), tr::full({}, -1.0)).unsqueeze(1);
}

int main() {
  tr::manual_seed(0);
  const int batch = 16, steps = 150;
  Gen g;
  Disc d;
  tr::optim::Adam opt_g(g->parameters(), {.lr = 2e-3, .beta1 = 0.5});
  tr::optim::Adam opt_d(d->parameters(), {.lr = 2e-3, .beta1 = 0.5});
  example::Progress progress(batch);
  tr::Tensor ones = tr::ones({batch, 1}), zeros = tr::zeros({batch, 1});
  double loss_d = 0, loss_g = 0;
  bool finite = true;
  for (int step = 0; step < steps; ++step) {
    tr::Tensor real = real_batch(batch);
    tr::Tensor fake = g(tr::randn({batch, 16}));
    // Discriminator: real -> 1, fake -> 0 (the generator is not updated here).
    tr::Tensor ld = F::binary_cross_entropy_with_logits(d(real), ones) +
                    F::binary_cross_entropy_with_logits(d(fake.detach()), zeros);
    opt_d.zero_grad();
    ld.backward();
    opt_d.step();
    // Generator: make the discriminator say 1.
    tr::Tensor lg = F::binary_cross_entropy_with_logits(d(fake), ones);
    opt_g.zero_grad();
    lg.backward();
    opt_g.step();
    loss_d = ld.item<double>();
    loss_g = lg.item<double>();
    finite = finite && std::isfinite(loss_d) && std::isfinite(loss_g);
    progress.report(step, loss_d + loss_g, 25, steps);
  }
  tr::NoGradGuard no_grad;
  g->eval();
  double fake_mean = g(tr::randn({256, 16})).mean().item<double>();
  double real_mean = real_batch(256).mean().item<double>();
  std::printf("D loss %.4f  G loss %.4f  mean intensity: fake %.3f real %.3f\n", loss_d, loss_g, fake_mean, real_mean);
  if (!finite) return example::finish("finite losses", 1.0, 0.5, progress.seconds());
  return example::finish("|fake mean - real mean|", std::fabs(fake_mean - real_mean), 0.25, progress.seconds());
}
