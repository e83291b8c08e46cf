// bench/bench_coexec.cpp: eager vs co-executed training steps, side by side in one binary
// (terra_bench_coexec). BM_eager_<case> and BM_coexec_<case> run the same step function on the
// same model; one benchmark iteration is 10 training steps ending with a host read of the last
// loss (a program that logs every 10 steps), so a co-executed measurement includes all the
// work the graph runner did. Wall-clock time (UseRealTime). Each case runs a fixed number of
// iterations, the same eager and co-executed (see TERRA_COEXEC_CASE).
//   mlp:         Linear(784, 256) - ReLU - Linear(256, 10), batch 64, SGD momentum.
//   cnn:         conv-bn-relu-pool x2, linear on [32, 1, 16, 16], Adam.
//   transformer: embedding, one pre-LN self-attention block with a causal mask, MLP, tied
//                head; 4 x 32 tokens, d = 64, AdamW.
//   sdpoint:     host RNG picks one of three heads per step.
//   dropblock:   four residual blocks, each skipped by a host draw.
//   refine:      repeat a refinement while loss.item() > threshold (at most 5 times).
//   host_nms:    scores fetched, NMS on the host, an index tensor fed back, a gather.
// BM_host_cost_per_op: the host's time per op while co-executing (the runner never makes it
// wait: no reads, unbounded run-ahead), reported as the counter ns_per_op. Under callgrind it
// also counts the host's instructions per op (docs/benchmarks.md).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include <terra/terra.hpp>

#include "bench_main.hpp"

// Under callgrind (valgrind's headers installed), BM_host_cost_per_op collects instructions only
// while the host issues a chunk's ops: a count that does not depend on the machine's load.
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define TERRA_COLLECT_START() CALLGRIND_START_INSTRUMENTATION
#define TERRA_COLLECT_STOP() CALLGRIND_STOP_INSTRUMENTATION
#else
#define TERRA_COLLECT_START() ((void)0)
#define TERRA_COLLECT_STOP() ((void)0)
#endif

namespace {

namespace tr = terra;
namespace nn = terra::nn;
namespace F = terra::nn::functional;

// A training program: `step(i)` runs step i and returns its loss (a lazy handle when
// co-executing).
struct Program {
  std::function<tr::Tensor(int)> step;
  std::shared_ptr<void> keep;  // the models and optimizers the step uses
};

tr::Tensor host_batch(std::mt19937& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> nd;
  std::vector<float> v(size_t(rows * cols));
  for (auto& x : v) x = nd(rng);
  return tr::tensor(v, {rows, cols});
}
tr::Tensor host_labels(std::mt19937& rng, int64_t n, int64_t classes) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (auto& y : v) y = int64_t(rng() % uint32_t(classes));
  return tr::tensor(v, {n});
}

Program mlp() {
  struct S {
    nn::Sequential net{nn::Linear(784, 256), nn::ReLU(), nn::Linear(256, 10)};
    tr::optim::SGD opt{net->parameters(), {.lr = 1e-3, .momentum = 0.9}};
    std::mt19937 rng{1};
  };
  auto s = std::make_shared<S>();
  return {[s](int) {
            tr::Tensor x = host_batch(s->rng, 64, 784), y = host_labels(s->rng, 64, 10);
            tr::Tensor loss = F::cross_entropy(s->net(x), y);
            s->opt.zero_grad();
            loss.backward();
            s->opt.step();
            return loss;
          },
          s};
}

Program cnn() {
  struct S {
    nn::Sequential net{nn::Conv2d(1, 8, 3, nn::Conv2dOptions{.padding = 1}), nn::BatchNorm2d(8),
                       nn::ReLU(), nn::MaxPool2d(2),
                       nn::Conv2d(8, 16, 3, nn::Conv2dOptions{.padding = 1}), nn::BatchNorm2d(16),
                       nn::ReLU(), nn::AdaptiveAvgPool2d(2), nn::Flatten(), nn::Linear(64, 4)};
    tr::optim::Adam opt{net->parameters(), {.lr = 1e-3}};
    std::mt19937 rng{2};
  };
  auto s = std::make_shared<S>();
  return {[s](int) {
            tr::Tensor x = host_batch(s->rng, 32, 256).view({32, 1, 16, 16});
            tr::Tensor loss = F::cross_entropy(s->net(x), host_labels(s->rng, 32, 4));
            s->opt.zero_grad();
            loss.backward();
            s->opt.step();
            return loss;
          },
          s};
}

Program transformer() {
  struct S {
    nn::Embedding emb{100, 64};
    nn::LayerNorm ln1{std::vector<int64_t>{64}}, ln2{std::vector<int64_t>{64}};
    nn::MultiheadAttention attn{64, 4, nn::MultiheadAttentionOptions{.batch_first = true}};
    nn::Linear up{64, 128}, down{128, 64};
    std::unique_ptr<tr::optim::AdamW> opt;
    std::mt19937 rng{3};
  };
  auto s = std::make_shared<S>();
  std::vector<tr::Tensor> ps;
  for (nn::Module* m : std::initializer_list<nn::Module*>{s->emb.get(), s->ln1.get(), s->ln2.get(),
                                                          s->attn.get(), s->up.get(), s->down.get()})
    for (auto& p : m->parameters()) ps.push_back(p);
  s->opt = std::make_unique<tr::optim::AdamW>(ps, tr::optim::AdamWOptions{});
  return {[s](int) {
            tr::Tensor tok = host_labels(s->rng, 4 * 33, 100).view({4, 33});
            tr::Tensor in = tok.slice(1, 0, 32), target = tok.slice(1, 1, 33);
            tr::Tensor h = s->emb(in);
            tr::Tensor a = s->ln1(h);
            h = h + s->attn->forward(a, a, a, {}, false, {}, true).first;
            h = h + s->down(tr::gelu(s->up(s->ln2(h))));
            tr::Tensor logits = tr::matmul(h, s->emb->weight.t());
            tr::Tensor loss = F::cross_entropy(logits.reshape({4 * 32, 100}), target.reshape({4 * 32}));
            s->opt->zero_grad();
            loss.backward();
            s->opt->step();
            return loss;
          },
          s};
}

Program sdpoint() {
  struct S {
    nn::Linear stem{64, 128};
    std::vector<nn::Linear> heads{nn::Linear(128, 10), nn::Linear(128, 10), nn::Linear(128, 10)};
    std::unique_ptr<tr::optim::Adam> opt;
    std::mt19937 rng{4};
  };
  auto s = std::make_shared<S>();
  std::vector<tr::Tensor> ps = s->stem->parameters();
  for (auto& h : s->heads)
    for (auto& p : h->parameters()) ps.push_back(p);
  s->opt = std::make_unique<tr::optim::Adam>(ps, tr::optim::AdamOptions{});
  return {[s](int) {
            tr::Tensor x = host_batch(s->rng, 32, 64), y = host_labels(s->rng, 32, 10);
            int pick = int(s->rng() % 3);
            tr::Tensor h = tr::dropout(tr::relu(s->stem(x)), 0.2, true);
            tr::Tensor loss = F::cross_entropy(s->heads[pick](h), y);
            s->opt->zero_grad();
            loss.backward();
            s->opt->step();
            return loss;
          },
          s};
}

Program dropblock() {
  struct S {
    nn::Linear in{64, 128}, out{128, 10};
    std::vector<nn::Linear> blocks{nn::Linear(128, 128), nn::Linear(128, 128),
                                   nn::Linear(128, 128), nn::Linear(128, 128)};
    std::unique_ptr<tr::optim::SGD> opt;
    std::mt19937 rng{5};
  };
  auto s = std::make_shared<S>();
  std::vector<tr::Tensor> ps = s->in->parameters();
  for (auto& b : s->blocks)
    for (auto& p : b->parameters()) ps.push_back(p);
  for (auto& p : s->out->parameters()) ps.push_back(p);
  s->opt = std::make_unique<tr::optim::SGD>(ps, tr::optim::SGDOptions{.lr = 0.01, .momentum = 0.9});
  return {[s](int) {
            tr::Tensor x = host_batch(s->rng, 32, 64), y = host_labels(s->rng, 32, 10);
            tr::Tensor h = tr::tanh(s->in(x));
            for (auto& b : s->blocks)
              if (std::uniform_real_distribution<double>(0, 1)(s->rng) >= 0.2) h = h + tr::relu(b(h));
            tr::Tensor loss = F::cross_entropy(s->out(h), y);
            s->opt->zero_grad();
            loss.backward();
            s->opt->step();
            return loss;
          },
          s};
}

Program refine() {
  struct S {
    nn::Linear enc{64, 64}, dec{64, 64};
    std::unique_ptr<tr::optim::SGD> opt;
    std::mt19937 rng{6};
  };
  auto s = std::make_shared<S>();
  std::vector<tr::Tensor> ps = s->enc->parameters();
  for (auto& p : s->dec->parameters()) ps.push_back(p);
  s->opt = std::make_unique<tr::optim::SGD>(ps, tr::optim::SGDOptions{.lr = 0.01});
  return {[s](int) {
            tr::Tensor x = host_batch(s->rng, 32, 64);
            tr::Tensor z = s->enc(x);
            tr::Tensor loss = F::mse_loss(s->dec(z), x);
            for (int k = 0; k < 5 && loss.item<double>() > 0.9; ++k) {
              z = z - 0.1 * tr::tanh(z);
              loss = F::mse_loss(s->dec(z), x);
            }
            s->opt->zero_grad();
            loss.backward();
            s->opt->step();
            return loss;
          },
          s};
}

Program host_nms() {
  struct S {
    nn::Linear scorer{16, 1}, refine{16, 16};
    std::unique_ptr<tr::optim::SGD> opt;
    std::mt19937 rng{7};
  };
  auto s = std::make_shared<S>();
  std::vector<tr::Tensor> ps = s->scorer->parameters();
  for (auto& p : s->refine->parameters()) ps.push_back(p);
  s->opt = std::make_unique<tr::optim::SGD>(ps, tr::optim::SGDOptions{.lr = 0.01});
  return {[s](int) {
            const int n = 64, keep = 8;
            tr::Tensor boxes = host_batch(s->rng, n, 16);
            tr::Tensor scores = tr::sigmoid(s->scorer(boxes)).view({n});
            std::vector<float> sc = scores.to_vector<float>(), b = boxes.to_vector<float>();
            std::vector<int> order(n);
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return sc[i] > sc[j]; });
            std::vector<int64_t> kept;
            for (int i : order) {
              bool ok = true;
              for (int64_t k : kept) ok = ok && std::abs(b[i * 16] - b[k * 16]) > 0.2f;
              if (ok) kept.push_back(i);
              if (int(kept.size()) == keep) break;
            }
            while (int(kept.size()) < keep) kept.push_back(kept[0]);
            tr::Tensor idx = tr::tensor(kept, {keep});
            tr::Tensor picked = tr::index_select(s->refine(boxes), 0, idx);
            tr::Tensor loss = (picked * picked).mean() - tr::index_select(scores, 0, idx).mean();
            s->opt->zero_grad();
            loss.backward();
            s->opt->step();
            return loss;
          },
          s};
}

constexpr int kStepsPerIteration = 10;

// Ten steps of `p`, eagerly or under an engine, ending with a read of the last loss.
void run(benchmark::State& state, Program p, bool coexec) {
  std::unique_ptr<tr::Engine> engine = coexec ? std::make_unique<tr::Engine>() : nullptr;
  int step = 0;
  auto ten = [&] {
    tr::Tensor loss;
    for (int i = 0; i < kStepsPerIteration; ++i, ++step) {
      if (engine) {
        auto it = engine->iteration();
        loss = p.step(step);
      } else {
        loss = p.step(step);
      }
    }
    benchmark::DoNotOptimize(loss.item<double>());
  };
  for (int i = 0; i < 3; ++i) ten();  // warm-up: optimizer state, tracing, compiling
  for (auto _ : state) ten();
  state.counters["steps_per_s"] = benchmark::Counter(
      double(state.iterations()) * kStepsPerIteration, benchmark::Counter::kIsRate);
  if (engine) {
    engine->synchronize();
    tr::EngineStats s = engine->stats();
    state.counters["coexecuted_pct"] = 100.0 * double(s.coexecuted) / double(s.iterations);
    state.counters["fallbacks"] = double(s.fallbacks);
  }
}

// Eager and co-executed runs of a case take the same fixed number of iterations from the same
// start: a step's work may depend on how far training got (refine's trip count falls with the
// loss), so letting the library pick a different count for each would compare different work.
#define TERRA_COEXEC_CASE(name, iterations)                                                 \
  void BM_eager_##name(benchmark::State& s) { run(s, name(), false); }                      \
  void BM_coexec_##name(benchmark::State& s) { run(s, name(), true); }                      \
  BENCHMARK(BM_eager_##name)->UseRealTime()->Unit(benchmark::kMicrosecond)->Iterations(iterations); \
  BENCHMARK(BM_coexec_##name)->UseRealTime()->Unit(benchmark::kMicrosecond)->Iterations(iterations)

TERRA_COEXEC_CASE(mlp, 30);
TERRA_COEXEC_CASE(cnn, 30);
TERRA_COEXEC_CASE(transformer, 30);
TERRA_COEXEC_CASE(sdpoint, 150);
TERRA_COEXEC_CASE(dropblock, 100);
TERRA_COEXEC_CASE(refine, 200);
TERRA_COEXEC_CASE(host_nms, 500);

// The MLP on one fixed batch: no host work besides the op calls.
Program mlp_fixed_batch() {
  struct S {
    nn::Sequential net{nn::Linear(784, 256), nn::ReLU(), nn::Linear(256, 10)};
    tr::optim::SGD opt{net->parameters(), {.lr = 1e-3, .momentum = 0.9}};
    tr::Tensor x = tr::randn({64, 784}), y = tr::randint(0, 10, {64});
  };
  auto s = std::make_shared<S>();
  return {[s](int) {
            tr::Tensor loss = F::cross_entropy(s->net(s->x), s->y);
            s->opt.zero_grad();
            loss.backward();
            s->opt.step();
            return loss;
          },
          s};
}

// The host's cost per op while co-executing, in steady state. One engine: 30 steps of warm-up
// (tracing, compiling), then chunks of 100 MLP steps with unbounded run-ahead and no reads
// (the host never waits for the runner), each followed by a synchronize. A chunk's cost is the
// host thread's CPU time divided by the ops it issued: all of its bookkeeping per op
// (matching, lazy handles, autograd's graph), none of the runner's. The first chunk grows the
// heap to hold 100 steps in flight (page faults, fresh malloc arenas) and is reported apart
// as ns_per_op_first; ns_per_op is the median of the other chunks (one per benchmark
// iteration), ns_per_op_min their minimum. The runner competes for the same cores while the
// host issues ops, so single chunks are noisy on a 2-core machine: hence the median.
void BM_host_cost_per_op(benchmark::State& state) {
  constexpr int kWarm = 30, kChunk = 100;
  Program p = mlp_fixed_batch();
  tr::Engine engine(tr::EngineOptions{.max_ahead = 1 << 20});
  for (int i = 0; i < kWarm; ++i) {
    auto it = engine.iteration();
    p.step(i);
  }
  engine.synchronize();
  int step = kWarm;
  double collected = 0;  // ops issued while instructions were collected (every chunk)
  auto chunk = [&] {
    int64_t before = engine.stats().ops_coexecuted;
    // The host thread's CPU time: what the host spends, not time the runner's threads took
    // the cores away from it (on a 2-core machine they compete).
    timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    TERRA_COLLECT_START();
    for (int i = 0; i < kChunk; ++i, ++step) {
      auto it = engine.iteration();
      p.step(step);
    }
    TERRA_COLLECT_STOP();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    double ns = double(c1.tv_sec - c0.tv_sec) * 1e9 + double(c1.tv_nsec - c0.tv_nsec);
    double ops = double(engine.stats().ops_coexecuted - before);
    collected += ops;
    engine.synchronize();
    return std::pair{ns / std::max(ops, 1.0), ops / kChunk};
  };
  double first = chunk().first, per_step = 0;
  std::vector<double> per_op;
  for (auto _ : state) {
    auto [ns, ops] = chunk();
    per_op.push_back(ns);
    per_step = ops;
  }
  std::sort(per_op.begin(), per_op.end());
  state.counters["ns_per_op"] = per_op[per_op.size() / 2];
  state.counters["ns_per_op_min"] = per_op.front();
  state.counters["ns_per_op_first"] = first;
  state.counters["ops_per_step"] = per_step;
  state.counters["ops_collected"] = collected;  // under callgrind: divide its count by this
  state.counters["fast_pct"] = 100.0 * double(engine.stats().ops_fast) / double(engine.stats().ops_coexecuted);
}
BENCHMARK(BM_host_cost_per_op)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(9);

}  // namespace

int main(int argc, char** argv) { return terra_bench::run(argc, argv); }
