// examples/programs/sdpoint.hpp: paper program 8, stochastic downsampling (SDPoint, Kuen et
// al. 2018) on a small ResNet (stem + 8 basic blocks). Every training iteration the host picks
// the downsampling point (none, after the stem, or after any block) and the ratio (0.5 or
// 0.75), and the feature map is average-pooled to round(size * ratio) there, so the path and
// the shapes of everything after the point change every step.
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "examples/programs/small_resnet.hpp"

namespace programs {

struct SDPointConfig {
  int64_t width = 16, classes = 10, batch = 16, image = 32;
  std::vector<double> ratios = {0.5, 0.75};
  double lr = 0.05;
  uint64_t seed = 8;
  static SDPointConfig paper() { return {}; }
  static SDPointConfig tiny() {
    SDPointConfig c;
    c.width = 4, c.batch = 4;
    return c;
  }
};

namespace sdpoint {

class NetImpl : public nn::Module {
 public:
  explicit NetImpl(const SDPointConfig& c) : nn::Module("SDPointNet") {
    int64_t w = c.width;
    stem = register_module("stem", resnet::Stem(w));
    auto list = register_module("blocks", nn::ModuleList());
    // Two blocks per stage, widths w, 2w, 4w, 8w; the first block of stages 2-4 halves the size.
    const int64_t widths[] = {w, w, 2 * w, 2 * w, 4 * w, 4 * w, 8 * w, 8 * w};
    int64_t in = w;
    for (int i = 0; i < 8; ++i) {
      blocks.push_back(resnet::BasicBlock(in, widths[i], i > 0 && i % 2 == 0 ? 2 : 1));
      list->push_back(blocks.back());
      in = widths[i];
    }
    fc = register_module("fc", nn::Linear(8 * w, c.classes));
  }
  // x: [N, 3, H, W] -> logits [N, classes]. point: -1 (none), 0 (after the stem) or k (after
  // block k); ratio: the downsampling ratio there.
  tr::Tensor forward(const tr::Tensor& x, int point, double ratio) {
    tr::Tensor h = stem(x);
    if (point == 0) h = downsample(h, ratio);
    for (int i = 0; i < 8; ++i) {
      h = blocks[size_t(i)](h);
      if (point == i + 1) h = downsample(h, ratio);
    }
    return fc(tr::adaptive_avg_pool2d(h, 1).flatten(1));
  }
  resnet::Stem stem{nullptr};
  std::vector<resnet::BasicBlock> blocks;
  nn::Linear fc{nullptr};

 private:
  static tr::Tensor downsample(const tr::Tensor& h, double ratio) {
    int64_t oh = std::lround(double(h.size(2)) * ratio),
            ow = std::lround(double(h.size(3)) * ratio);
    return tr::adaptive_avg_pool2d(h, {std::max<int64_t>(oh, 1), std::max<int64_t>(ow, 1)});
  }
};
TERRA_MODULE(Net);

}  // namespace sdpoint

inline Outcome run_sdpoint(const SDPointConfig& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(uint32_t(cfg.seed));
  Outcome o;
  sdpoint::Net net(cfg);
  tr::optim::SGD opt(net->parameters(), {.lr = cfg.lr, .momentum = 0.9, .weight_decay = 5e-4});
  // 10 points x 2 ratios put up to 16 shapes at one place (the pooling line, and the pooling
  // vjp shared by every point): raise the engine's default limit of 8 specializations.
  tr::EngineOptions opts;
  opts.max_specializations = 16;
  std::uniform_int_distribution<int> point_of(-1, 8);
  std::uniform_int_distribution<size_t> ratio_of(0, cfg.ratios.size() - 1);
  run_loop(
      mode, iters, o,
      [&](int step) {
        int point = point_of(rng);
        double ratio = cfg.ratios[ratio_of(rng)];
        o.decisions.push_back(point);
        o.decisions.push_back(std::lround(ratio * 100));
        auto batch = resnet::make_images(rng, cfg.batch, cfg.image, cfg.classes);
        tr::Tensor loss = F::cross_entropy(net(batch.images, point, ratio), batch.labels);
        opt.zero_grad();
        loss.backward();
        opt.step();
        if (step % 10 == 0) o.fetched.push_back(loss.item<double>());
      },
      opts);
  collect_params(o, net->parameters());
  return o;
}

}  // namespace programs
