// tests/exec/programs.hpp: the co-execution test programs. Each runs N iterations of a small
// training program from a seed, with or without an Engine, and returns everything observable:
// the final parameters (raw bytes), every fetched value and every host decision. The contract:
// the two runs are bit-identical, and the engine's counts are the expected ones.
#pragma once

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <terra/terra.hpp>

namespace progs {

namespace tr = terra;
namespace nn = terra::nn;
namespace F = terra::nn::functional;

struct Outcome {
  std::vector<std::vector<unsigned char>> params;  // raw bytes of every parameter at the end
  std::vector<double> fetched;                    // every value the host read
  std::vector<int> decisions;                     // every host decision
  tr::EngineStats stats;
};

inline std::vector<unsigned char> bytes_of(const tr::Tensor& t) {
  tr::Tensor c = t.contiguous();
  const auto* p = static_cast<const unsigned char*>(c.raw_data());
  return {p, p + c.nbytes()};
}
inline void collect(Outcome& o, const std::vector<tr::Tensor>& ps) {
  for (const auto& p : ps) o.params.push_back(bytes_of(p));
}

// Runs body(step, engine-or-null) `iters` times, inside engine.iteration() when use_engine.
template <class Body>
void loop(int iters, bool use_engine, Outcome& o, Body&& body,
          tr::EngineOptions opts = {}) {
  if (!use_engine) {
    for (int i = 0; i < iters; ++i) body(i);
    return;
  }
  tr::Engine engine(opts);
  for (int i = 0; i < iters; ++i) {
    auto it = engine.iteration();
    body(i);
  }
  engine.synchronize();
  o.stats = engine.stats();
}

struct MlpImpl : nn::Module {
  MlpImpl(int in, int hidden, int out) : Module("Mlp") {
    fc1 = register_module("fc1", nn::Linear(in, hidden));
    fc2 = register_module("fc2", nn::Linear(hidden, out));
  }
  tr::Tensor forward(const tr::Tensor& x) override { return fc2(tr::relu(fc1(x))); }
  nn::Linear fc1{nullptr}, fc2{nullptr};
};
TERRA_MODULE(Mlp);

// 1. A static MLP training step: everything co-executed after warm-up.
inline Outcome static_mlp(bool engine, int iters = 200) {
  tr::manual_seed(1);
  Outcome o;
  Mlp net(16, 32, 4);
  tr::optim::SGD opt(net->parameters(), {.lr = 0.05, .momentum = 0.9});
  std::mt19937 data(7);
  std::normal_distribution<float> nd;
  loop(iters, engine, o, [&](int step) {
    std::vector<float> xs(8 * 16);
    for (auto& v : xs) v = nd(data);
    std::vector<int64_t> ys(8);
    for (size_t i = 0; i < ys.size(); ++i) ys[i] = int64_t(i % 4);
    tr::Tensor x = tr::tensor(xs, {8, 16});
    tr::Tensor y = tr::tensor(ys, {8});
    tr::Tensor loss = F::cross_entropy(net(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 10 == 0) o.fetched.push_back(loss.item<double>());
  });
  collect(o, net->parameters());
  return o;
}

}  // namespace progs
