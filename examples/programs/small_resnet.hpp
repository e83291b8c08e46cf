// examples/programs/small_resnet.hpp: what the dropblock and sdpoint programs share: the
// ResNet basic block, a 3x3 conv stem and a synthetic labelled image generator.
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "examples/programs/common.hpp"

namespace programs::resnet {

// k x k convolution without bias (a BatchNorm follows), padded to keep the size at stride 1.
inline nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1) {
  return nn::Conv2d(in, out, k,
                    nn::Conv2dOptions{.stride = stride, .padding = k / 2, .bias = false});
}

// conv3x3-BN-ReLU-conv3x3-BN plus the (projected when the shape changes) input, then ReLU.
class BasicBlockImpl : public nn::Module {
 public:
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride) : nn::Module("BasicBlock") {
    conv1 = register_module("conv1", conv(in, out, 3, stride));
    bn1 = register_module("bn1", nn::BatchNorm2d(out));
    conv2 = register_module("conv2", conv(out, out, 3));
    bn2 = register_module("bn2", nn::BatchNorm2d(out));
    if (stride != 1 || in != out) {
      proj = register_module("proj", conv(in, out, 1, stride));
      proj_bn = register_module("proj_bn", nn::BatchNorm2d(out));
    }
  }
  // x: [N, in, H, W] -> [N, out, H / stride, W / stride]
  tr::Tensor forward(const tr::Tensor& x) override {
    tr::Tensor h = tr::relu(bn1(conv1(x)));
    h = bn2(conv2(h));
    tr::Tensor skip = proj.is_empty() ? x : proj_bn(proj(x));
    return tr::relu(h + skip);
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, proj{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, proj_bn{nullptr};
};
TERRA_MODULE(BasicBlock);

// conv3x3(3 -> c)-BN-ReLU at full resolution (CIFAR stem).
class StemImpl : public nn::Module {
 public:
  explicit StemImpl(int64_t c) : nn::Module("Stem") {
    conv = register_module("conv", resnet::conv(3, c, 3));
    bn = register_module("bn", nn::BatchNorm2d(c));
  }
  tr::Tensor forward(const tr::Tensor& x) override { return tr::relu(bn(conv(x))); }
  nn::Conv2d conv{nullptr};
  nn::BatchNorm2d bn{nullptr};
};
TERRA_MODULE(Stem);

// A batch of [n, 3, size, size] images whose label sets the frequency and orientation of a
// stripe pattern, plus noise; labels uniform over `classes`.
struct ImageBatch {
  tr::Tensor images, labels;
};
inline ImageBatch make_images(std::mt19937& rng, int64_t n, int64_t size, int64_t classes) {
  std::normal_distribution<float> noise(0.f, 0.5f);
  std::uniform_int_distribution<int64_t> label(0, classes - 1);
  std::uniform_real_distribution<float> phase(0.f, 6.2831853f);
  std::vector<float> px(static_cast<size_t>(n * 3 * size * size));
  std::vector<int64_t> ys(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t y = ys[size_t(i)] = label(rng);
    float freq = 0.2f + 0.15f * float(y % 5), angle = 0.6f * float(y), ph = phase(rng);
    float cx = std::cos(angle), cy = std::sin(angle);
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t r = 0; r < size; ++r)
        for (int64_t q = 0; q < size; ++q) {
          float s = std::sin(freq * (cx * float(q) + cy * float(r)) + ph + float(c));
          px[size_t(((i * 3 + c) * size + r) * size + q)] = s + noise(rng);
        }
  }
  return {tr::tensor(px, {n, 3, size, size}), tr::tensor(ys, {n})};
}

}  // namespace programs::resnet
