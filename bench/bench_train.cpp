// bench/bench_train.cpp: one whole training step (zero_grad, forward, cross-entropy loss,
// backward, optimizer step) in terra and, when built with TERRA_BENCH_WITH_TORCH, in LibTorch,
// side by side in one binary (terra_bench_train). Names are BM_terra_<case> and
// BM_torch_<case>; scripts/bench_ratios.py pairs them. Wall-clock time (UseRealTime).
//   train_mlp: Linear(784, 256) - ReLU - Linear(256, 10), batch 64, SGD lr 1e-3 momentum 0.9.
//   train_cnn: the CNN of examples/cnn.cpp (conv-bn-relu-pool x2, dropout, linear), input
//              [32, 1, 16, 16], 4 classes, Adam lr 1e-3.
// Both libraries start from the same weights (terra's init, copied) and see the same batch.
#include <benchmark/benchmark.h>

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <terra/terra.hpp>

#include "bench_main.hpp"


#ifdef TERRA_BENCH_WITH_TORCH
#include <torch/torch.h>
#include <torch/version.h>
#endif

// OpenBLAS sizes its own thread pool; these are resolved only when OpenBLAS is linked in.

namespace {

namespace tr = terra;
namespace tnn = terra::nn;

// Runs one step untimed (warm-up: optimizer state, first-touch allocation, thread start-up).
// A step that throws marks the case as errored in the report instead of aborting the run.
template <class F>
void run(benchmark::State& state, const F& step) {
  try {
    step();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  for (auto _ : state) step();
}

// ---- the models, data and weights: made once by terra, copied into LibTorch ----
constexpr int64_t kMlpBatch = 64, kMlpIn = 784, kMlpHidden = 256, kMlpClasses = 10;
constexpr int64_t kCnnBatch = 32, kCnnClasses = 4;

struct MlpImpl : tnn::Module {
  MlpImpl() : Module("Mlp") {
    fc1 = register_module("fc1", tnn::Linear(kMlpIn, kMlpHidden));
    fc2 = register_module("fc2", tnn::Linear(kMlpHidden, kMlpClasses));
  }
  tr::Tensor forward(const tr::Tensor& x) override { return fc2(tr::relu(fc1(x))); }
  tnn::Linear fc1{nullptr}, fc2{nullptr};
};
TERRA_MODULE(Mlp);

// examples/cnn.cpp's architecture: [N, 1, 16, 16] -> [N, 4].
tnn::Sequential make_cnn() {
  return tnn::Sequential(
      tnn::Conv2d(1, 8, 3, tnn::Conv2dOptions{.padding = 1}), tnn::BatchNorm2d(8), tnn::ReLU(),
      tnn::MaxPool2d(2), tnn::Conv2d(8, 16, 3, tnn::Conv2dOptions{.padding = 1}),
      tnn::BatchNorm2d(16), tnn::ReLU(), tnn::AdaptiveAvgPool2d(2), tnn::Flatten(),
      tnn::Dropout(0.1), tnn::Linear(64, kCnnClasses));
}

// One fixed batch per model, the same for both libraries.
struct Data {
  tr::Tensor mlp_x, mlp_y, cnn_x, cnn_y;
  std::vector<tr::Tensor> mlp_init, cnn_init;  // initial parameters, in parameters() order
};

// examples/cnn.cpp's images: noise plus a bright 4x4 square inside quadrant y.
std::pair<tr::Tensor, tr::Tensor> cnn_batch(int64_t n) {
  tr::Tensor y = tr::randint(0, kCnnClasses, {n});
  tr::Tensor img = tr::randn({n, 1, 16, 16}) * 0.3;
  auto yv = y.to_vector<int64_t>();
  auto pv = tr::randint(0, 5, {n, 2}).to_vector<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t q = yv[size_t(i)];
    int64_t r = (q / 2) * 8 + pv[size_t(2 * i)], c = (q % 2) * 8 + pv[size_t(2 * i + 1)];
    img.select(0, i).select(0, 0).narrow(0, r, 4).narrow(1, c, 4).add_(2.0);
  }
  return {img, y};
}

std::vector<tr::Tensor> snapshot(const std::vector<tr::Tensor>& params) {
  std::vector<tr::Tensor> out;
  for (const tr::Tensor& p : params) out.push_back(p.detach().clone());
  return out;
}

const Data& data() {
  static const Data d = [] {
    tr::manual_seed(0);
    Data d;
    d.mlp_x = tr::randn({kMlpBatch, kMlpIn});
    d.mlp_y = tr::randint(0, kMlpClasses, {kMlpBatch});
    std::tie(d.cnn_x, d.cnn_y) = cnn_batch(kCnnBatch);
    d.mlp_init = snapshot(Mlp()->parameters());
    d.cnn_init = snapshot(make_cnn()->parameters());
    return d;
  }();
  return d;
}

void load(const std::vector<tr::Tensor>& params, const std::vector<tr::Tensor>& init) {
  tr::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    tr::Tensor p = params[i];
    p.copy_(init[i]);
  }
}

// ---- terra ----
void BM_terra_train_mlp(benchmark::State& state) {
  const Data& d = data();
  Mlp net;
  load(net->parameters(), d.mlp_init);
  tr::optim::SGD opt(net->parameters(), {.lr = 1e-3, .momentum = 0.9});
  run(state, [&] {
    opt.zero_grad();
    tr::Tensor loss = tnn::functional::cross_entropy(net(d.mlp_x), d.mlp_y);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss);
  });
}

void BM_terra_train_cnn(benchmark::State& state) {
  const Data& d = data();
  tnn::Sequential net = make_cnn();
  load(net->parameters(), d.cnn_init);
  tr::optim::Adam opt(net->parameters(), {.lr = 1e-3});
  run(state, [&] {
    opt.zero_grad();
    tr::Tensor loss = tnn::functional::cross_entropy(net(d.cnn_x), d.cnn_y);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss);
  });
}

BENCHMARK(BM_terra_train_mlp)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_terra_train_cnn)->UseRealTime()->Unit(benchmark::kMicrosecond);

// ---- LibTorch ----
#ifdef TERRA_BENCH_WITH_TORCH
torch::Tensor to_torch(const tr::Tensor& t) {
  std::vector<int64_t> sizes(t.shape().begin(), t.shape().end());
  if (t.dtype() == tr::kInt64) {
    auto v = t.to_vector<int64_t>();
    return torch::from_blob(v.data(), sizes, torch::kInt64).clone();
  }
  auto v = t.to_vector<float>();
  return torch::from_blob(v.data(), sizes, torch::kFloat32).clone();
}

void load(const std::vector<torch::Tensor>& params, const std::vector<tr::Tensor>& init) {
  TORCH_CHECK(params.size() == init.size(), "parameter count mismatch");
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor v = to_torch(init[i]);
    TORCH_CHECK(params[i].sizes() == v.sizes(), "parameter ", i, " has another shape");
    params[i].copy_(v);
  }
}

// Default (grad) mode, the torch::nn / torch::optim API a LibTorch user writes.
void BM_torch_train_mlp(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  const Data& d = data();
  torch::nn::Sequential net(torch::nn::Linear(kMlpIn, kMlpHidden), torch::nn::ReLU(),
                            torch::nn::Linear(kMlpHidden, kMlpClasses));
  load(net->parameters(), d.mlp_init);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(1e-3).momentum(0.9));
  torch::Tensor x = to_torch(d.mlp_x), y = to_torch(d.mlp_y);
  run(state, [&] {
    opt.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss);
  });
}

void BM_torch_train_cnn(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  namespace nn = torch::nn;
  const Data& d = data();
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(1, 8, 3).padding(1)), nn::BatchNorm2d(8),
                     nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(2)),
                     nn::Conv2d(nn::Conv2dOptions(8, 16, 3).padding(1)), nn::BatchNorm2d(16),
                     nn::ReLU(), nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(2)),
                     nn::Flatten(), nn::Dropout(0.1), nn::Linear(64, kCnnClasses));
  load(net->parameters(), d.cnn_init);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  torch::Tensor x = to_torch(d.cnn_x), y = to_torch(d.cnn_y);
  run(state, [&] {
    opt.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss);
  });
}

BENCHMARK(BM_torch_train_mlp)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_torch_train_cnn)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif

}  // namespace

int main(int argc, char** argv) {
  return terra_bench::run(argc, argv);
}
