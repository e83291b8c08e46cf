// examples/programs/resnet50.hpp: paper program 1. ResNet-50's layout ([3, 4, 6, 3]
// bottlenecks, expansion 4) at 1/8 width with a CIFAR stem (3x3 conv, no max pool) on 32x32
// synthetic images, SGD with momentum. Host side: the batch is drawn on the host (class
// templates plus noise from a std::mt19937), and the loss is fetched and printed every 10 steps.
#pragma once

#include <cstdio>
#include <random>
#include <vector>

#include "examples/programs/common.hpp"

namespace programs {

struct ResNet50Config {
  int64_t width = 8;                      // stem channels (64 / 8)
  std::vector<int64_t> blocks = {3, 4, 6, 3};
  int64_t image = 32, batch = 8, classes = 10;
  double lr = 0.05, momentum = 0.9, weight_decay = 5e-4;
  bool print = true;  // the loss line every 10 steps
  uint32_t seed = 1;
  static ResNet50Config paper() { return {}; }
  static ResNet50Config tiny() {
    ResNet50Config c;
    c.width = 4;
    c.blocks = {1, 1, 1, 1};
    c.image = 16;
    c.batch = 4;
    c.print = false;
    return c;
  }
};

namespace resnet {

// 1x1 reduce, 3x3 (strided), 1x1 expand; a projection shortcut where the shape changes.
struct BottleneckImpl : nn::Module {
  BottleneckImpl(int64_t in, int64_t planes, int64_t stride) : Module("Bottleneck") {
    int64_t out = planes * 4;
    nn::Conv2dOptions plain{.bias = false};
    c1 = register_module("conv1", nn::Conv2d(in, planes, 1, plain));
    b1 = register_module("bn1", nn::BatchNorm2d(planes));
    nn::Conv2dOptions mid{.stride = stride, .padding = 1, .bias = false};
    c2 = register_module("conv2", nn::Conv2d(planes, planes, 3, mid));
    b2 = register_module("bn2", nn::BatchNorm2d(planes));
    c3 = register_module("conv3", nn::Conv2d(planes, out, 1, plain));
    b3 = register_module("bn3", nn::BatchNorm2d(out));
    if (stride != 1 || in != out) {
      nn::Conv2dOptions down{.stride = stride, .bias = false};
      proj = register_module("proj", nn::Conv2d(in, out, 1, down));
      proj_bn = register_module("proj_bn", nn::BatchNorm2d(out));
    }
  }
  tr::Tensor forward(const tr::Tensor& x) override {
    tr::Tensor h = tr::relu(b1(c1(x)));
    h = tr::relu(b2(c2(h)));
    h = b3(c3(h));
    tr::Tensor skip = proj.is_empty() ? x : proj_bn(proj(x));
    return tr::relu(h + skip);
  }
  nn::Conv2d c1{nullptr}, c2{nullptr}, c3{nullptr}, proj{nullptr};
  nn::BatchNorm2d b1{nullptr}, b2{nullptr}, b3{nullptr}, proj_bn{nullptr};
};
TERRA_MODULE(Bottleneck);

struct ResNetImpl : nn::Module {
  explicit ResNetImpl(const ResNet50Config& c) : Module("ResNet") {
    nn::Conv2dOptions same{.padding = 1, .bias = false};
    stem = register_module("stem", nn::Conv2d(3, c.width, 3, same));
    stem_bn = register_module("stem_bn", nn::BatchNorm2d(c.width));
    layers = register_module("layers", nn::Sequential());
    int64_t in = c.width;
    for (size_t s = 0; s < c.blocks.size(); ++s) {
      int64_t planes = c.width << s;
      for (int64_t b = 0; b < c.blocks[s]; ++b) {
        layers->push_back(Bottleneck(in, planes, b == 0 && s > 0 ? 2 : 1));
        in = planes * 4;
      }
    }
    fc = register_module("fc", nn::Linear(in, c.classes));
  }
  tr::Tensor forward(const tr::Tensor& x) override {
    tr::Tensor h = layers(tr::relu(stem_bn(stem(x))));
    return fc(tr::adaptive_avg_pool2d(h, 1).flatten(1));
  }
  nn::Conv2d stem{nullptr};
  nn::BatchNorm2d stem_bn{nullptr};
  nn::Sequential layers{nullptr};
  nn::Linear fc{nullptr};
};
TERRA_MODULE(ResNet);

// A fixed smooth pattern per class; each image is its class's pattern plus noise.
struct Data {
  Data(const ResNet50Config& c, std::mt19937& rng) : cfg(c) {
    std::normal_distribution<float> nd;
    templates.resize(size_t(c.classes * 3 * c.image * c.image));
    for (int64_t k = 0; k < c.classes; ++k) {
      float fy = 0.5f + nd(rng) * 0.2f, fx = 0.5f + nd(rng) * 0.2f, ph = nd(rng);
      for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t y = 0; y < c.image; ++y)
          for (int64_t x = 0; x < c.image; ++x)
            templates[size_t(((k * 3 + ch) * c.image + y) * c.image + x)] =
                std::sin(fy * float(y) + fx * float(x) + ph * float(ch + 1));
    }
  }
  std::pair<tr::Tensor, tr::Tensor> batch(std::mt19937& rng) const {
    int64_t plane = 3 * cfg.image * cfg.image;
    std::normal_distribution<float> nd(0.f, 0.5f);
    std::vector<float> x(size_t(cfg.batch * plane));
    std::vector<int64_t> y(size_t(cfg.batch));
    for (int64_t i = 0; i < cfg.batch; ++i) {
      y[size_t(i)] = int64_t(rng() % uint32_t(cfg.classes));
      for (int64_t j = 0; j < plane; ++j)
        x[size_t(i * plane + j)] = templates[size_t(y[size_t(i)] * plane + j)] + nd(rng);
    }
    return {tr::tensor(x, {cfg.batch, 3, cfg.image, cfg.image}), tr::tensor(y, {cfg.batch})};
  }
  ResNet50Config cfg;
  std::vector<float> templates;
};

}  // namespace resnet

inline Outcome run_resnet50(const ResNet50Config& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(cfg.seed);
  Outcome o;
  resnet::ResNet model(cfg);
  resnet::Data data(cfg, rng);
  tr::optim::SGD opt(model->parameters(),
                     {.lr = cfg.lr, .momentum = cfg.momentum, .weight_decay = cfg.weight_decay});
  run_loop(mode, iters, o, [&](int step) {
    auto [x, y] = data.batch(rng);
    tr::Tensor loss = F::cross_entropy(model(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 10 == 0) {
      double v = loss.item<double>();
      o.fetched.push_back(v);
      o.decisions.push_back(step);
      if (cfg.print) std::printf("resnet50 %s step %d loss %.4f\n", mode_name(mode), step, v);
    }
  });
  collect_params(o, model->parameters());
  return o;
}

}  // namespace programs
