// examples/coexec_demo.cpp: the main demo. A dynamic training program, run twice from the same
// seed: eagerly, then under terra::Engine (co-executed). The program has what graph converters
// cannot handle:
//   - a host library call every step: the batch is drawn by std::discrete_distribution from
//     per-sample weights kept on the host (importance sampling);
//   - a host-decided path: a residual block is applied or skipped by a host coin flip;
//   - host reads mid-training: every 10 steps the per-sample losses are fetched and
//     std::nth_element finds the hardest 10%, whose sampling weights are doubled.
// It prints both step times, the engine's stats, and checks that the two runs are
// bit-identical (final parameters, every fetched loss, every host decision).
#include <terra/terra.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>
#include <vector>

namespace tr = terra;
namespace nn = terra::nn;
namespace F = terra::nn::functional;

constexpr int kDim = 64, kClasses = 10, kData = 4096, kBatch = 128, kSteps = 300;

struct Net : nn::Module {
  Net() : Module("Net") {
    in = register_module("in", nn::Linear(kDim, 256));
    mid = register_module("mid", nn::Linear(256, 256));
    out = register_module("out", nn::Linear(256, kClasses));
  }
  nn::Linear in{nullptr}, mid{nullptr}, out{nullptr};
};

struct Result {
  std::vector<double> losses;
  std::vector<int> decisions;
  std::vector<std::vector<char>> params;
  double seconds = 0;
  tr::EngineStats stats;
};

Result train(bool coexecute) {
  tr::manual_seed(0);
  std::mt19937 rng(42);
  // A fixed synthetic dataset on the host: 10 Gaussian clusters.
  std::normal_distribution<float> nd;
  std::vector<float> centers(kClasses * kDim), xs(size_t(kData) * kDim);
  std::vector<int64_t> ys(kData);
  for (auto& c : centers) c = 1.2f * nd(rng);
  for (int i = 0; i < kData; ++i) {
    ys[i] = i % kClasses;
    for (int d = 0; d < kDim; ++d) xs[size_t(i) * kDim + d] = centers[ys[i] * kDim + d] + 1.5f * nd(rng);
  }
  std::vector<double> weight(kData, 1.0);

  auto net = std::make_shared<Net>();
  tr::optim::Adam opt(net->parameters(), {.lr = 1e-3});
  tr::Engine engine(tr::EngineOptions{.coexecute = coexecute});
  Result r;
  auto t0 = std::chrono::steady_clock::now();
  for (int step = 0; step < kSteps; ++step) {
    auto it = engine.iteration();
    // Host library call: importance sampling of the batch.
    std::discrete_distribution<int> pick(weight.begin(), weight.end());
    std::vector<int> idx(kBatch);
    std::vector<float> bx(size_t(kBatch) * kDim);
    std::vector<int64_t> by(kBatch);
    for (int b = 0; b < kBatch; ++b) {
      idx[b] = pick(rng);
      std::copy_n(&xs[size_t(idx[b]) * kDim], kDim, &bx[size_t(b) * kDim]);
      by[b] = ys[idx[b]];
    }
    tr::Tensor x = tr::tensor(bx, {kBatch, kDim}), y = tr::tensor(by, {kBatch});

    tr::Tensor h = tr::relu(net->in(x));
    bool deep = std::bernoulli_distribution(0.5)(rng);  // host-decided path
    r.decisions.push_back(deep);
    if (deep) h = h + tr::relu(net->mid(h));
    tr::Tensor per_sample = F::cross_entropy(net->out(h), y, {.reduction = F::Reduction::None});
    tr::Tensor loss = per_sample.mean();
    opt.zero_grad();
    loss.backward();
    opt.step();

    if (step % 10 == 0) {  // host read + host library call on the values
      std::vector<float> l = per_sample.to_vector<float>();
      std::vector<int> order(kBatch);
      for (int b = 0; b < kBatch; ++b) order[b] = b;
      std::nth_element(order.begin(), order.begin() + kBatch / 10, order.end(),
                       [&](int a, int b) { return l[a] > l[b]; });
      for (int k = 0; k < kBatch / 10; ++k) weight[idx[order[k]]] *= 2.0;
      r.losses.push_back(loss.item<double>());
    }
  }
  for (auto& p : net->parameters()) {
    auto v = p.to_vector<float>();
    std::vector<char> bytes(v.size() * sizeof(float));
    std::memcpy(bytes.data(), v.data(), bytes.size());
    r.params.push_back(std::move(bytes));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.stats = engine.stats();
  return r;
}

int main() {
  std::printf("terra %s: a dynamic training program, eager vs co-executed (%d steps)\n\n",
              tr::version(), kSteps);
  Result eager = train(false);
  Result co = train(true);
  for (size_t i = 0; i < co.losses.size(); i += 5)
    std::printf("step %3zu  loss eager %.6f  co-executed %.6f\n", i * 10, eager.losses[i], co.losses[i]);
  std::printf("\neager:       %7.3f ms/step\n", 1e3 * eager.seconds / kSteps);
  std::printf("co-executed: %7.3f ms/step  (%.2fx)\n", 1e3 * co.seconds / kSteps,
              eager.seconds / co.seconds);
  std::cout << "\nengine stats: " << co.stats << "\n";
  bool same = eager.losses == co.losses && eager.decisions == co.decisions && eager.params == co.params;
  std::printf("\nresults %s: parameters, %zu fetched losses and %zu host decisions\n",
              same ? "bit-identical" : "DIFFER", co.losses.size(), co.decisions.size());
  return same ? 0 : 1;
}
