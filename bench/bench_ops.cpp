// bench/bench_ops.cpp: Google Benchmark cases for terra's eager CPU ops and, when built with
// TERRA_BENCH_WITH_TORCH, the same cases through LibTorch in the same binary.
// Names are BM_terra_<case> and BM_torch_<case>; scripts/bench_ratios.py pairs them.
// Every case times wall-clock time (UseRealTime): the big ops run on several threads, and
// Google Benchmark's CPU time would count only the calling one.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <terra/terra.hpp>

#include "bench_main.hpp"


#ifdef TERRA_BENCH_WITH_TORCH
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>
#endif

// OpenBLAS sizes its own thread pool; these are resolved only when OpenBLAS is linked in.

namespace {

// Runs op once untimed (warm-up: first-touch allocation, thread start-up). An op that
// throws marks the case as errored in the report instead of aborting the run.
template <class F>
void run(benchmark::State& state, const F& op) {
  try {
    auto out = op();
    benchmark::DoNotOptimize(out);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  for (auto _ : state) {
    auto out = op();
    benchmark::DoNotOptimize(out);
  }
}

void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["FLOPS"] =
      benchmark::Counter(flops_per_iteration, benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}

// ---- the inputs: made once by terra, copied into LibTorch so both see the same values ----
terra::Tensor input(const terra::Shape& shape) { return terra::randn(shape); }

// x: [8, 64, 56, 56], w: [64, 64, 3, 3], stride 1, padding 1 (a ResNet-18/34 stage-1 conv).
const terra::Shape kConvX{8, 64, 56, 56};
const terra::Shape kConvW{64, 64, 3, 3};
double conv_flops() { return 2.0 * 8 * 64 * 56 * 56 * 64 * 3 * 3; }

// The small-image convs of the sdpoint/dropblock programs: x [16, c, s, s], w [c, c, 3, 3],
// stride 1, padding 1; the case's args are (c, s). Forward, and backward (grad_input and
// grad_weight, as a training step's conv without bias asks for).
const terra::Shape small_x(const benchmark::State& st) { return {16, st.range(0), st.range(1), st.range(1)}; }
const terra::Shape small_w(const benchmark::State& st) { return {st.range(0), st.range(0), 3, 3}; }
double small_flops(const benchmark::State& st) {
  return 2.0 * 16 * double(st.range(0) * st.range(0) * st.range(1) * st.range(1)) * 9;
}
#define TERRA_SMALL_CONV_ARGS ->Args({16, 32})->Args({32, 16})->Args({64, 8})

// ---- terra ----
void BM_terra_add8(benchmark::State& state) {
  terra::Tensor a = input({8}), b = input({8});
  run(state, [&] { return a + b; });
}

void BM_terra_matmul(benchmark::State& state) {
  int64_t n = state.range(0);
  terra::Tensor a = input({n, n}), b = input({n, n});
  set_flops(state, 2.0 * n * n * n);
  run(state, [&] { return terra::matmul(a, b); });
}

void BM_terra_conv2d_resnet(benchmark::State& state) {
  terra::Tensor x = input(kConvX), w = input(kConvW);
  set_flops(state, conv_flops());
  run(state, [&] { return terra::conv2d(x, w, terra::Tensor(), 1, 1); });
}

void BM_terra_conv2d_small(benchmark::State& state) {
  terra::Tensor x = input(small_x(state)), w = input(small_w(state));
  set_flops(state, small_flops(state));
  run(state, [&] { return terra::conv2d(x, w, terra::Tensor(), 1, 1); });
}

void BM_terra_conv2d_small_backward(benchmark::State& state) {
  terra::Tensor x = input(small_x(state)), w = input(small_w(state)), g = input(small_x(state));
  set_flops(state, 2 * small_flops(state));
  run(state, [&] { return terra::conv2d_backward(g, x, w, 1, 1, 1, 1, {true, true, false}); });
}

#if defined(TERRA_HAS_DNNL)
// The same convolutions on terra's im2col + gemm path (float32 takes oneDNN in this build).
struct GemmConvPath {
  GemmConvPath() { terra::cpu_use_dnnl() = false; }
  ~GemmConvPath() { terra::cpu_use_dnnl() = true; }
};
void BM_terra_conv2d_small_gemm(benchmark::State& state) {
  GemmConvPath gemm;
  BM_terra_conv2d_small(state);
}
void BM_terra_conv2d_small_backward_gemm(benchmark::State& state) {
  GemmConvPath gemm;
  BM_terra_conv2d_small_backward(state);
}
#endif

void BM_terra_softmax_64x1024(benchmark::State& state) {
  terra::Tensor x = input({64, 1024});
  run(state, [&] { return terra::softmax(x, -1); });
}

void BM_terra_layer_norm_64x1024(benchmark::State& state) {
  terra::Tensor x = input({64, 1024}), w = input({1024}), b = input({1024});
  run(state, [&] { return terra::layer_norm(x, {1024}, w, b, 1e-5); });
}

void BM_terra_gelu_64x4096(benchmark::State& state) {
  terra::Tensor x = input({64, 4096});
  run(state, [&] { return terra::gelu(x); });
}

void BM_terra_gelu_backward_64x4096(benchmark::State& state) {
  terra::Tensor g = input({64, 4096}), x = input({64, 4096});
  run(state, [&] { return terra::gelu_backward(g, x); });
}

void BM_terra_exp_64x4096(benchmark::State& state) {
  terra::Tensor x = input({64, 4096});
  run(state, [&] { return terra::exp(x); });
}

void BM_terra_sigmoid_64x4096(benchmark::State& state) {
  terra::Tensor x = input({64, 4096});
  run(state, [&] { return terra::sigmoid(x); });
}

BENCHMARK(BM_terra_add8)->UseRealTime();
BENCHMARK(BM_terra_matmul)->Arg(256)->Arg(1024)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_terra_conv2d_resnet)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_terra_conv2d_small) TERRA_SMALL_CONV_ARGS->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_terra_conv2d_small_backward) TERRA_SMALL_CONV_ARGS->UseRealTime()->Unit(benchmark::kMicrosecond);
#if defined(TERRA_HAS_DNNL)
BENCHMARK(BM_terra_conv2d_small_gemm) TERRA_SMALL_CONV_ARGS->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_terra_conv2d_small_backward_gemm) TERRA_SMALL_CONV_ARGS->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif
BENCHMARK(BM_terra_softmax_64x1024)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_terra_layer_norm_64x1024)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_terra_gelu_64x4096)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_terra_gelu_backward_64x4096)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_terra_exp_64x4096)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_terra_sigmoid_64x4096)->UseRealTime()->Unit(benchmark::kMicrosecond);

// ---- LibTorch ----
#ifdef TERRA_BENCH_WITH_TORCH
at::Tensor to_torch(const terra::Tensor& t) {
  std::vector<int64_t> sizes(t.shape().begin(), t.shape().end());
  return at::from_blob(const_cast<float*>(t.data<float>()), sizes, at::kFloat).clone();
}
at::Tensor torch_input(const terra::Shape& shape) { return to_torch(input(shape)); }

// Default (grad) mode, as a LibTorch user runs eager code; inputs do not require grad.
void BM_torch_add8(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor a = torch_input({8}), b = torch_input({8});
  run(state, [&] { return a + b; });
}

// For reference: LibTorch without the autograd dispatch layer.
void BM_torch_add8_inference_mode(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  c10::InferenceMode guard;
  at::Tensor a = torch_input({8}), b = torch_input({8});
  run(state, [&] { return a + b; });
}

void BM_torch_matmul(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  int64_t n = state.range(0);
  at::Tensor a = torch_input({n, n}), b = torch_input({n, n});
  set_flops(state, 2.0 * n * n * n);
  run(state, [&] { return at::matmul(a, b); });
}

void BM_torch_conv2d_resnet(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor x = torch_input(kConvX), w = torch_input(kConvW);
  set_flops(state, conv_flops());
  run(state, [&] { return at::conv2d(x, w, {}, 1, 1); });
}

void BM_torch_conv2d_small(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor x = torch_input(small_x(state)), w = torch_input(small_w(state));
  set_flops(state, small_flops(state));
  run(state, [&] { return at::conv2d(x, w, {}, 1, 1); });
}

void BM_torch_conv2d_small_backward(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor x = torch_input(small_x(state)), w = torch_input(small_w(state)), g = torch_input(small_x(state));
  set_flops(state, 2 * small_flops(state));
  run(state, [&] {
    return at::convolution_backward(g, x, w, c10::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1,
                                    {true, true, false});
  });
}

void BM_torch_softmax_64x1024(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor x = torch_input({64, 1024});
  run(state, [&] { return at::softmax(x, -1); });
}

void BM_torch_layer_norm_64x1024(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor x = torch_input({64, 1024}), w = torch_input({1024}), b = torch_input({1024});
  run(state, [&] { return at::layer_norm(x, {1024}, w, b, 1e-5); });
}

void BM_torch_gelu_64x4096(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor x = torch_input({64, 4096});
  run(state, [&] { return at::gelu(x); });
}

void BM_torch_gelu_backward_64x4096(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor g = torch_input({64, 4096}), x = torch_input({64, 4096});
  run(state, [&] { return at::gelu_backward(g, x); });
}

void BM_torch_exp_64x4096(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor x = torch_input({64, 4096});
  run(state, [&] { return at::exp(x); });
}

void BM_torch_sigmoid_64x4096(benchmark::State& state) {
  terra_bench::torch_blas_threads();
  at::Tensor x = torch_input({64, 4096});
  run(state, [&] { return at::sigmoid(x); });
}

BENCHMARK(BM_torch_add8)->UseRealTime();
BENCHMARK(BM_torch_add8_inference_mode)->UseRealTime();
BENCHMARK(BM_torch_matmul)->Arg(256)->Arg(1024)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_torch_conv2d_resnet)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_torch_conv2d_small) TERRA_SMALL_CONV_ARGS->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_torch_conv2d_small_backward) TERRA_SMALL_CONV_ARGS->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_torch_softmax_64x1024)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_torch_layer_norm_64x1024)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_torch_gelu_64x4096)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_torch_gelu_backward_64x4096)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_torch_exp_64x4096)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_torch_sigmoid_64x4096)->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif

}  // namespace

int main(int argc, char** argv) {
  terra::manual_seed(0);
  return terra_bench::run(argc, argv);
}
