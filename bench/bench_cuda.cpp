// bench/bench_cuda.cpp: the eager CUDA backend on one GPU (issue 5's benchmarks). Every case
// times GPU work with CUDA events (manual time), so the host's launch overhead counts only where
// it is what is measured (the tiny-op case). bench/peers/cuda_torch.py runs the same workloads
// through PyTorch on the same device; scripts/bench_cuda.sh runs both and prints the ratios.
//   copy: cudaMemcpyAsync device to device, the bandwidth reference (bytes read + written)
//   add, sum: terra ops on large float32 tensors, as a fraction of the copy bandwidth
//   tiny_add: one add of 1-element tensors, host launch cost per op (no sync between ops)
//   matmul vs cublas: terra's matmul against cublasGemmEx called directly, same shapes/dtypes
//   train_mlp: one Adam step of a 784-1024-1024-10 MLP, batch 256
//   train_cnn, train_transformer: a small CNN with SGD, a transformer block with AdamW
//   small_step_eager vs small_step_coexec vs small_step_graphs: a launch-bound training step,
//     eager, co-executed (the runner launches the kernels while the host keeps going), and
//     co-executed with EngineOptions::cuda_graphs (each stretch of kernels one CUDA graph)
#include <benchmark/benchmark.h>
#include <cublas_v2.h>

#include <terra/terra.hpp>

namespace tr = terra;
namespace cu = terra::cuda;
using tr::Device;
using tr::Tensor;

namespace {

const Device kDev = Device::cuda();

bool skip(benchmark::State& state) {
  if (cu::is_available()) return false;
  state.SkipWithError("no CUDA device");
  return true;
}

// Times `body` on the current stream with events; one timing per benchmark iteration.
template <class F>
void time_gpu(benchmark::State& state, F&& body) {
  cu::Event start(true), stop(true);
  for (int i = 0; i < 3; ++i) body();  // warm the allocator, cuBLAS and the caches
  cu::synchronize();
  for (auto _ : state) {
    start.record();
    body();
    stop.record();
    stop.synchronize();
    state.SetIterationTime(double(stop.elapsed_ms(start)) / 1e3);
  }
}

void BM_copy(benchmark::State& state) {
  if (skip(state)) return;
  int64_t n = state.range(0);
  Tensor a = tr::ones({n}, {.device = kDev}), b = tr::empty({n}, {.device = kDev});
  time_gpu(state, [&] {
    TERRA_CUDA_CHECK(cudaMemcpyAsync(b.device_data(), a.device_data(), size_t(n) * 4,
                                     cudaMemcpyDeviceToDevice, cu::current_stream()));
  });
  state.SetBytesProcessed(state.iterations() * n * 8);
}

void BM_add(benchmark::State& state) {
  if (skip(state)) return;
  int64_t n = state.range(0);
  Tensor a = tr::ones({n}, {.device = kDev}), b = tr::ones({n}, {.device = kDev});
  Tensor c;
  time_gpu(state, [&] { c = a + b; });
  state.SetBytesProcessed(state.iterations() * n * 12);
}

void BM_sum(benchmark::State& state) {
  if (skip(state)) return;
  int64_t n = state.range(0);
  Tensor a = tr::ones({n}, {.device = kDev});
  Tensor s;
  time_gpu(state, [&] { s = a.sum(); });
  state.SetBytesProcessed(state.iterations() * n * 4);
}

// Host cost of one tiny op: 100 adds queued per iteration, the device waited for at the end.
void BM_tiny_add(benchmark::State& state) {
  if (skip(state)) return;
  Tensor a = tr::ones({1}, {.device = kDev}), b = tr::ones({1}, {.device = kDev});
  Tensor c;
  for (auto _ : state) {
    for (int i = 0; i < 100; ++i) c = a + b;
    cu::synchronize();
  }
  state.counters["us_per_op"] =
      benchmark::Counter(double(state.iterations()) * 100 / 1e6, benchmark::Counter::kIsRate |
                                                                     benchmark::Counter::kInvert);
}

tr::DType dtype_of(int64_t code) {
  return code == 0 ? tr::DType::Float32 : code == 1 ? tr::DType::Float32 : tr::DType::BFloat16;
}
const char* dtype_label(int64_t code) { return code == 0 ? "f32" : code == 1 ? "tf32" : "bf16"; }

// range(0): 0 float32, 1 float32 with TF32 allowed, 2 bfloat16; range(1): n (n x n x n).
void BM_matmul(benchmark::State& state) {
  if (skip(state)) return;
  int64_t code = state.range(0), n = state.range(1);
  state.SetLabel(dtype_label(code));
  cu::set_allow_tf32(code == 1);
  Tensor a = tr::rand({n, n}).to(dtype_of(code)).to(kDev);
  Tensor b = tr::rand({n, n}).to(dtype_of(code)).to(kDev);
  Tensor c;
  time_gpu(state, [&] { c = tr::matmul(a, b); });
  cu::set_allow_tf32(false);
  state.counters["TFLOPs"] = benchmark::Counter(2.0 * double(n) * double(n) * double(n) *
                                                    double(state.iterations()) / 1e12,
                                                benchmark::Counter::kIsRate);
}

void BM_cublas(benchmark::State& state) {
  if (skip(state)) return;
  int64_t code = state.range(0), n = state.range(1);
  state.SetLabel(dtype_label(code));
  cublasHandle_t h = nullptr;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return state.SkipWithError("cublasCreate");
  cublasSetStream(h, cu::current_stream());
  Tensor a = tr::rand({n, n}).to(dtype_of(code)).to(kDev);
  Tensor b = tr::rand({n, n}).to(dtype_of(code)).to(kDev);
  Tensor c = tr::empty({n, n}, {.dtype = dtype_of(code), .device = kDev});
  cudaDataType_t t = code == 2 ? CUDA_R_16BF : CUDA_R_32F;
  cublasComputeType_t ct = code == 1 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  float one = 1, zero = 0;
  int m = int(n);
  time_gpu(state, [&] {
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, m, m, &one, b.device_data(), t, m,
                 a.device_data(), t, m, &zero, c.device_data(), t, m, ct, CUBLAS_GEMM_DEFAULT);
  });
  cublasDestroy(h);
  state.counters["TFLOPs"] = benchmark::Counter(2.0 * double(n) * double(n) * double(n) *
                                                    double(state.iterations()) / 1e12,
                                                benchmark::Counter::kIsRate);
}

void BM_train_mlp(benchmark::State& state) {
  if (skip(state)) return;
  tr::manual_seed(0);
  tr::nn::Sequential net(tr::nn::Linear(784, 1024), tr::nn::ReLU(), tr::nn::Linear(1024, 1024),
                         tr::nn::ReLU(), tr::nn::Linear(1024, 10));
  net->to(kDev);
  tr::optim::Adam opt(net->parameters(), {.lr = 1e-3});
  Tensor x = tr::randn({256, 784}).to(kDev);
  Tensor y = tr::randint(0, 10, {256}).to(kDev);
  time_gpu(state, [&] {
    opt.zero_grad();
    Tensor loss = tr::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
  });
}

// conv(3->32)-bn-relu-pool, conv(32->64)-bn-relu-pool, linear(64*8*8 -> 10); batch 64 of 32x32.
void BM_train_cnn(benchmark::State& state) {
  if (skip(state)) return;
  tr::manual_seed(0);
  namespace nn = tr::nn;
  nn::Sequential net(nn::Conv2d(3, 32, 3, nn::Conv2dOptions{.padding = 1}), nn::BatchNorm2d(32), nn::ReLU(),
                     nn::MaxPool2d(2), nn::Conv2d(32, 64, 3, nn::Conv2dOptions{.padding = 1}),
                     nn::BatchNorm2d(64), nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                     nn::Linear(64 * 8 * 8, 10));
  net->to(kDev);
  tr::optim::SGD opt(net->parameters(), {.lr = 0.01, .momentum = 0.9});
  Tensor x = tr::randn({64, 3, 32, 32}).to(kDev);
  Tensor y = tr::randint(0, 10, {64}).to(kDev);
  time_gpu(state, [&] {
    opt.zero_grad();
    tr::nn::functional::cross_entropy(net->forward(x), y).backward();
    opt.step();
  });
}

// One pre-LN transformer block (dim 256, 8 heads, causal) on [16, 128] tokens of a 1000-word
// vocabulary, with AdamW.
struct BlockImpl : tr::nn::Module {
  BlockImpl() : Module("Block") {
    namespace nn = tr::nn;
    emb = register_module("emb", nn::Embedding(1000, 256));
    ln1 = register_module("ln1", nn::LayerNorm(tr::Shape{256}));
    attn = register_module("attn", nn::MultiheadAttention(256, 8, nn::MultiheadAttentionOptions{.batch_first = true}));
    ln2 = register_module("ln2", nn::LayerNorm(tr::Shape{256}));
    fc1 = register_module("fc1", nn::Linear(256, 1024));
    fc2 = register_module("fc2", nn::Linear(1024, 256));
    head = register_module("head", nn::Linear(256, 1000));
  }
  Tensor forward(const Tensor& idx) override {
    Tensor x = emb(idx);
    Tensor h = ln1(x);
    Tensor y = x + attn->forward(h, h, h, {}, false, {}, /*is_causal=*/true).first;
    return head(y + fc2(tr::gelu(fc1(ln2(y)))));
  }
  tr::nn::Embedding emb{nullptr};
  tr::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  tr::nn::MultiheadAttention attn{nullptr};
  tr::nn::Linear fc1{nullptr}, fc2{nullptr}, head{nullptr};
};
TERRA_MODULE(Block);

void BM_train_transformer(benchmark::State& state) {
  if (skip(state)) return;
  tr::manual_seed(0);
  Block net;
  net->to(kDev);
  tr::optim::AdamW opt(net->parameters(), {.lr = 1e-3});
  Tensor x = tr::randint(0, 1000, {16, 128}).to(kDev);
  Tensor y = tr::randint(0, 1000, {16 * 128}).to(kDev);
  time_gpu(state, [&] {
    opt.zero_grad();
    tr::nn::functional::cross_entropy(net->forward(x).reshape({-1, 1000}), y).backward();
    opt.step();
  });
}

// A launch-bound step (a 64-wide MLP, batch 32, Adam: every kernel takes microseconds), eager
// and under terra::Engine, where the graph runner launches the kernels while the host thread
// keeps validating calls. Wall-clock time of 20 steps ending with a read of the last loss.
void train_small(benchmark::State& state, bool coexec, bool graphs = false) {
  if (skip(state)) return;
  tr::manual_seed(0);
  tr::nn::Sequential net(tr::nn::Linear(64, 64), tr::nn::ReLU(), tr::nn::Linear(64, 64),
                         tr::nn::ReLU(), tr::nn::Linear(64, 10));
  net->to(kDev);
  tr::optim::Adam opt(net->parameters(), {.lr = 1e-3});
  Tensor x = tr::randn({32, 64}).to(kDev);
  Tensor y = tr::randint(0, 10, {32}).to(kDev);
  tr::Engine engine(tr::EngineOptions{.coexecute = coexec, .cuda_graphs = graphs});
  auto twenty = [&] {
    Tensor loss;
    for (int i = 0; i < 20; ++i) {
      auto it = engine.iteration();
      opt.zero_grad();
      loss = tr::nn::functional::cross_entropy(net->forward(x), y);
      loss.backward();
      opt.step();
    }
    benchmark::DoNotOptimize(loss.item<float>());
  };
  for (int i = 0; i < 3; ++i) twenty();  // warm-up, tracing and compiling
  for (auto _ : state) twenty();
  state.counters["steps_per_s"] =
      benchmark::Counter(double(state.iterations()) * 20, benchmark::Counter::kIsRate);
  tr::EngineStats st = engine.stats();
  state.counters["coexecuted"] = double(st.coexecuted);
  state.counters["graph_launches"] = double(st.graph_launches);
  state.counters["graph_failures"] = double(st.graph_failures);
}
void BM_small_step_eager(benchmark::State& state) { train_small(state, false); }
void BM_small_step_coexec(benchmark::State& state) { train_small(state, true); }
void BM_small_step_graphs(benchmark::State& state) { train_small(state, true, true); }

}  // namespace

BENCHMARK(BM_copy)->Arg(1 << 26)->UseManualTime();
BENCHMARK(BM_add)->Arg(1 << 26)->UseManualTime();
BENCHMARK(BM_sum)->Arg(1 << 26)->UseManualTime();
BENCHMARK(BM_tiny_add)->UseRealTime();
BENCHMARK(BM_matmul)->ArgsProduct({{0, 1, 2}, {4096}})->UseManualTime();
BENCHMARK(BM_cublas)->ArgsProduct({{0, 1, 2}, {4096}})->UseManualTime();
BENCHMARK(BM_train_mlp)->UseManualTime();
BENCHMARK(BM_train_cnn)->UseManualTime();
BENCHMARK(BM_train_transformer)->UseManualTime();
BENCHMARK(BM_small_step_eager)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_small_step_coexec)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_small_step_graphs)->UseRealTime()->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
