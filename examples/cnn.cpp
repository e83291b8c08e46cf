// examples/cnn.cpp: a small CNN with BatchNorm and Dropout that tells which quadrant of a
// 16x16 image holds a bright square (synthetic, deterministic data). Adam; loss under 0.1.
#include <terra/terra.hpp>

#include "common.hpp"

namespace tr = terra;
namespace nn = terra::nn;

struct CnnImpl : nn::Module {
  CnnImpl() : Module("Cnn") {
    body = register_module("body", nn::Sequential(
        nn::Conv2d(1, 8, 3, nn::Conv2dOptions{.padding = 1}), nn::BatchNorm2d(8), nn::ReLU(), nn::MaxPool2d(2),
        nn::Conv2d(8, 16, 3, nn::Conv2dOptions{.padding = 1}), nn::BatchNorm2d(16), nn::ReLU(),
        nn::AdaptiveAvgPool2d(2), nn::Flatten(), nn::Dropout(0.1), nn::Linear(64, 4)));
  }
  tr::Tensor forward(const tr::Tensor& x) override { return body(x); }
  nn::Sequential body{nullptr};
};
TERRA_MODULE(Cnn);

// Images [n, 1, 16, 16]: noise plus a 4x4 square at a random place inside quadrant y.
std::pair<tr::Tensor, tr::Tensor> make_batch(int n) {
  tr::Tensor y = tr::randint(0, 4, {n});
  tr::Tensor img = tr::randn({n, 1, 16, 16}) * 0.3;
  tr::Tensor pos = tr::randint(0, 5, {n, 2});
  auto yv = y.to_vector<int64_t>();
  auto pv = pos.to_vector<int64_t>();
  for (int i = 0; i < n; ++i) {
    int64_t r = (yv[size_t(i)] / 2) * 8 + pv[size_t(2 * i)], c = (yv[size_t(i)] % 2) * 8 + pv[size_t(2 * i + 1)];
    img.select(0, i).select(0, 0).narrow(0, r, 4).narrow(1, c, 4).add_(2.0);
  }
  return {img, y};
}

int main() {
  tr::manual_seed(0);
  const int batch = 32, steps = 120;
  Cnn net;
  tr::optim::Adam opt(net->parameters(), {.lr = 3e-3});
  example::Progress progress(batch);
  double smoothed = 0;
  for (int step = 0; step < steps; ++step) {
    auto [x, y] = make_batch(batch);
    tr::Tensor loss = nn::functional::cross_entropy(net(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    smoothed = step == 0 ? loss.item<double>() : 0.9 * smoothed + 0.1 * loss.item<double>();
    progress.report(step, loss.item<double>(), 20, steps);
  }
  net->eval();
  auto [x, y] = make_batch(256);
  tr::Tensor eval_loss = nn::functional::cross_entropy(net(x), y);
  double acc = (net(x).argmax(1) == y).to(tr::kFloat32).mean().item<double>();
  std::printf("eval accuracy %.3f\n", acc);
  return example::finish("eval loss", eval_loss.item<double>(), 0.1, progress.seconds());
}
