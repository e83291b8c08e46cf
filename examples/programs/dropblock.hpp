// examples/programs/dropblock.hpp: paper program 7, DropBlock (Ghiasi et al. 2018) on a small
// ResNet (stem + 4 basic blocks, one per stage) with DropBlock after stages 3 and 4. The drop
// probability follows a linear host schedule from 0; each DropBlock is applied or skipped by
// a host draw (p = 0.8), and when applied the block seeds are sampled on the host every step
// and sent as a tensor, so the path and the fed data change every iteration.
#pragma once

#include <random>
#include <vector>

#include "examples/programs/small_resnet.hpp"

namespace programs {

struct DropBlockConfig {
  int64_t width = 16, classes = 10, batch = 16, image = 32, block_size = 3;
  double max_drop = 0.1;  // the schedule's final drop probability (keep_prob 1 -> 0.9)
  double apply_p = 0.8;   // probability that a DropBlock layer is applied in a step
  double lr = 0.05;
  uint64_t seed = 7;
  static DropBlockConfig paper() { return {}; }
  static DropBlockConfig tiny() {
    DropBlockConfig c;
    c.width = 4, c.batch = 4;
    c.max_drop = 0.3;  // more seeds on the small maps, so the mask matters in 50 steps
    return c;
  }
};

namespace dropblock {

// Zeroes block_size x block_size squares around host-sampled seeds and rescales the rest.
class DropBlockImpl : public nn::Module {
 public:
  DropBlockImpl(int64_t block_size, double apply_p, std::mt19937& rng, std::vector<int64_t>& log)
      : nn::Module("DropBlock"), bs_(block_size), apply_p_(apply_p), rng_(&rng), log_(&log) {}
  double drop_prob = 0;  // set by the host schedule before each step

  // x: [N, C, H, W] -> same
  tr::Tensor forward(const tr::Tensor& x) override {
    if (!is_training() || drop_prob == 0) return x;
    bool apply = std::bernoulli_distribution(apply_p_)(*rng_);
    log_->push_back(apply);
    if (!apply) return x;
    tr::Tensor seeds = sample_seeds(x.size(0), x.size(1), x.size(2), x.size(3));
    tr::Tensor mask = 1.0 - tr::max_pool2d(seeds, bs_, 1, bs_ / 2);
    return x * mask * (double(mask.numel()) / mask.sum());
  }

 private:
  // Seeds are Bernoulli(gamma) over the centres where a whole block fits; gamma makes the
  // expected dropped fraction drop_prob. Sampled as a binomial count and uniform positions.
  tr::Tensor sample_seeds(int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t vh = h - bs_ + 1, vw = w - bs_ + 1, half = bs_ / 2;
    double gamma = drop_prob / double(bs_ * bs_) * double(h * w) / double(vh * vw);
    int64_t valid = n * c * vh * vw;
    int64_t count = std::binomial_distribution<int64_t>(valid, gamma)(*rng_);
    log_->push_back(count);
    std::vector<float> s(size_t(n * c * h * w), 0.f);
    std::uniform_int_distribution<int64_t> pos(0, valid - 1);
    for (int64_t k = 0; k < count; ++k) {
      int64_t p = pos(*rng_), plane = p / (vh * vw), r = p % (vh * vw) / vw + half,
              q = p % vw + half;
      s[size_t((plane * h + r) * w + q)] = 1.f;
    }
    return tr::tensor(s, {n, c, h, w});
  }
  int64_t bs_;
  double apply_p_;
  std::mt19937* rng_;
  std::vector<int64_t>* log_;
};
TERRA_MODULE(DropBlock);

class NetImpl : public nn::Module {
 public:
  NetImpl(const DropBlockConfig& c, std::mt19937& rng, std::vector<int64_t>& log)
      : nn::Module("DropBlockNet") {
    int64_t w = c.width;
    stem = register_module("stem", resnet::Stem(w));
    b1 = register_module("b1", resnet::BasicBlock(w, w, 1));
    b2 = register_module("b2", resnet::BasicBlock(w, 2 * w, 2));
    b3 = register_module("b3", resnet::BasicBlock(2 * w, 4 * w, 2));
    drop3 = register_module("drop3", DropBlock(c.block_size, c.apply_p, rng, log));
    b4 = register_module("b4", resnet::BasicBlock(4 * w, 8 * w, 2));
    drop4 = register_module("drop4", DropBlock(c.block_size, c.apply_p, rng, log));
    fc = register_module("fc", nn::Linear(8 * w, c.classes));
  }
  // x: [N, 3, H, W] -> logits [N, classes]
  tr::Tensor forward(const tr::Tensor& x) override {
    tr::Tensor h = drop3(b3(b2(b1(stem(x)))));
    h = drop4(b4(h));
    return fc(tr::adaptive_avg_pool2d(h, 1).flatten(1));
  }
  resnet::Stem stem{nullptr};
  resnet::BasicBlock b1{nullptr}, b2{nullptr}, b3{nullptr}, b4{nullptr};
  DropBlock drop3{nullptr}, drop4{nullptr};
  nn::Linear fc{nullptr};
};
TERRA_MODULE(Net);

}  // namespace dropblock

inline Outcome run_dropblock(const DropBlockConfig& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(uint32_t(cfg.seed));
  Outcome o;
  dropblock::Net net(cfg, rng, o.decisions);
  tr::optim::SGD opt(net->parameters(), {.lr = cfg.lr, .momentum = 0.9, .weight_decay = 5e-4});
  run_loop(mode, iters, o, [&](int step) {
    double p = cfg.max_drop * double(step) / double(iters);  // linear schedule from 0
    net->drop3->drop_prob = net->drop4->drop_prob = p;
    auto batch = resnet::make_images(rng, cfg.batch, cfg.image, cfg.classes);
    tr::Tensor loss = F::cross_entropy(net(batch.images), batch.labels);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 10 == 0) o.fetched.push_back(loss.item<double>());
  });
  collect_params(o, net->parameters());
  return o;
}

}  // namespace programs
