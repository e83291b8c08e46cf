// tests/exec/programs.hpp: the co-execution test programs. Each runs N iterations of a small
// training program from a seed, with or without an Engine, and returns everything observable:
// the final parameters (raw bytes), every fetched value and every host decision. The contract:
// the two runs are bit-identical, and the engine's counts are the expected ones.
#pragma once

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
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
  tr::Tensor c = t.to(tr::Device::cpu()).contiguous();
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
  tr::thread_manual_seed(1);
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


// Host data for a step: a deterministic batch from a host RNG (fed every iteration).
inline tr::Tensor host_batch(std::mt19937& rng, int64_t rows, int64_t cols) {
  std::normal_distribution<float> nd;
  std::vector<float> v(size_t(rows * cols));
  for (auto& x : v) x = nd(rng);
  return tr::tensor(v, {rows, cols});
}
inline tr::Tensor host_labels(std::mt19937& rng, int64_t n, int64_t classes) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (auto& y : v) y = int64_t(rng() % uint32_t(classes));
  return tr::tensor(v, {n});
}

// 2. SDPoint style: the host RNG picks one of three sub-networks per iteration; dropout draws
// Philox numbers inside the graph.
inline Outcome sdpoint(bool engine, int iters = 200) {
  tr::thread_manual_seed(2);
  Outcome o;
  nn::Linear stem(12, 24);
  std::vector<nn::Linear> heads = {nn::Linear(24, 3), nn::Linear(24, 3), nn::Linear(24, 3)};
  std::vector<tr::Tensor> params = stem->parameters();
  for (auto& h : heads)
    for (auto& p : h->parameters()) params.push_back(p);
  tr::optim::Adam opt(params, {.lr = 1e-2});
  std::mt19937 rng(3);
  loop(iters, engine, o, [&](int) {
    tr::Tensor x = host_batch(rng, 6, 12), y = host_labels(rng, 6, 3);
    int pick = int(rng() % 3);
    o.decisions.push_back(pick);
    tr::Tensor h = tr::dropout(tr::relu(stem(x)), 0.25, true);
    tr::Tensor loss = F::cross_entropy(heads[pick](h), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    o.fetched.push_back(loss.item<double>());
  });
  collect(o, params);
  return o;
}

// 3. DropBlock style: each of four residual blocks is skipped with a probability that grows
// with the step (k independent host decisions per iteration).
inline Outcome dropblock(bool engine, int iters = 200) {
  tr::thread_manual_seed(4);
  Outcome o;
  nn::Linear in(8, 16), out(16, 2);
  std::vector<nn::Linear> blocks;
  for (int i = 0; i < 4; ++i) blocks.emplace_back(16, 16);
  std::vector<tr::Tensor> params = in->parameters();
  for (auto& b : blocks)
    for (auto& p : b->parameters()) params.push_back(p);
  for (auto& p : out->parameters()) params.push_back(p);
  tr::optim::SGD opt(params, {.lr = 0.02, .momentum = 0.9});
  std::mt19937 rng(5);
  loop(iters, engine, o, [&](int step) {
    tr::Tensor x = host_batch(rng, 4, 8), y = host_batch(rng, 4, 2);
    double p_drop = 0.5 * step / iters;
    tr::Tensor h = tr::tanh(in(x));
    for (auto& b : blocks) {
      bool keep = std::uniform_real_distribution<double>(0, 1)(rng) >= p_drop;
      o.decisions.push_back(keep);
      if (keep) h = h + tr::relu(b(h));
    }
    tr::Tensor loss = F::mse_loss(out(h), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 5 == 0) o.fetched.push_back(loss.item<double>());
  });
  collect(o, params);
  return o;
}

// 4. A data-dependent loop: refine while loss.item() > threshold, at most 5 times.
inline Outcome refine_loop(bool engine, int iters = 200) {
  tr::thread_manual_seed(6);
  Outcome o;
  nn::Linear enc(6, 6), dec(6, 6);
  std::vector<tr::Tensor> params = enc->parameters();
  for (auto& p : dec->parameters()) params.push_back(p);
  tr::optim::SGD opt(params, {.lr = 0.05});
  std::mt19937 rng(7);
  loop(iters, engine, o, [&](int) {
    tr::Tensor x = host_batch(rng, 5, 6);
    tr::Tensor z = enc(x);
    tr::Tensor loss = F::mse_loss(dec(z), x);
    int k = 0;
    for (; k < 5; ++k) {
      double v = loss.item<double>();
      o.fetched.push_back(v);
      if (v <= 0.35) break;
      z = z - 0.1 * tr::tanh(z);
      loss = F::mse_loss(dec(z), x);
    }
    o.decisions.push_back(k);
    opt.zero_grad();
    loss.backward();
    opt.step();
  });
  collect(o, params);
  return o;
}

// 5. A host library call mid-iteration: fetch scores, non-maximum suppression on the host
// with the standard library, an index tensor built from the result, a gather with it.
inline Outcome host_nms(bool engine, int iters = 200) {
  tr::thread_manual_seed(8);
  Outcome o;
  nn::Linear scorer(4, 1), refine(4, 4);
  std::vector<tr::Tensor> params = scorer->parameters();
  for (auto& p : refine->parameters()) params.push_back(p);
  tr::optim::SGD opt(params, {.lr = 0.01});
  std::mt19937 rng(9);
  const int n = 12, keep_max = 4;
  loop(iters, engine, o, [&](int) {
    tr::Tensor boxes = host_batch(rng, n, 4);  // x, y, w, h (as logits)
    tr::Tensor scores = tr::sigmoid(scorer(boxes)).view({n});
    std::vector<float> s = scores.to_vector<float>();
    std::vector<float> b = boxes.to_vector<float>();
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return s[i] > s[j]; });
    auto iou = [&](int i, int j) {
      float ax = b[i * 4], ay = b[i * 4 + 1], aw = std::abs(b[i * 4 + 2]), ah = std::abs(b[i * 4 + 3]);
      float bx = b[j * 4], by = b[j * 4 + 1], bw = std::abs(b[j * 4 + 2]), bh = std::abs(b[j * 4 + 3]);
      float ix = std::max(0.f, std::min(ax + aw, bx + bw) - std::max(ax, bx));
      float iy = std::max(0.f, std::min(ay + ah, by + bh) - std::max(ay, by));
      float inter = ix * iy, uni = aw * ah + bw * bh - inter;
      return uni > 0 ? inter / uni : 0.f;
    };
    std::vector<int64_t> kept;
    for (int i : order) {
      bool ok = true;
      for (int64_t k : kept) ok = ok && iou(i, int(k)) < 0.3f;
      if (ok) kept.push_back(i);
      if (int(kept.size()) == keep_max) break;
    }
    for (int64_t k : kept) o.decisions.push_back(int(k));
    std::vector<float> w(keep_max, 0.f);
    for (size_t i = 0; i < kept.size(); ++i) w[i] = 1.f;
    while (int(kept.size()) < keep_max) kept.push_back(kept[0]);  // padded; weight 0
    tr::Tensor idx = tr::tensor(kept, {keep_max});
    tr::Tensor picked = tr::index_select(refine(boxes), 0, idx);
    tr::Tensor wt = tr::tensor(w, {keep_max, 1});
    tr::Tensor loss = (picked * picked * wt).mean() - tr::index_select(scores, 0, idx).mean();
    opt.zero_grad();
    loss.backward();
    opt.step();
    o.fetched.push_back(loss.item<double>());
  });
  collect(o, params);
  return o;
}

// The layers of the small RNNs below (input, recurrent, head), made in this order.
struct TinyRnn {
  nn::Linear wx = nn::Linear(3, 8), wh = nn::Linear(8, 8), head = nn::Linear(8, 1);
  std::vector<tr::Tensor> parameters() const {
    std::vector<tr::Tensor> ps;
    for (const auto& m : {wx, wh, head})
      for (auto& p : m->parameters()) ps.push_back(p);
    return ps;
  }
};

// 6. State carried across iterations: an RNN hidden state detached and reused, a running loss
// kept as a tensor, and every step's loss kept in a host vector, printed at the end.
inline Outcome carried_state(bool engine, int iters = 200) {
  tr::thread_manual_seed(10);
  Outcome o;
  TinyRnn rnn;
  auto& [wx, wh, head] = rnn;
  std::vector<tr::Tensor> params = rnn.parameters();
  tr::optim::SGD opt(params, {.lr = 0.02});
  std::mt19937 rng(11);
  tr::Tensor h = tr::zeros({2, 8});
  tr::Tensor running = tr::zeros({});
  std::vector<tr::Tensor> losses;
  loop(iters, engine, o, [&](int) {
    tr::Tensor x = host_batch(rng, 2, 3), y = host_batch(rng, 2, 1);
    h = tr::tanh(wx(x) + wh(h));
    tr::Tensor loss = F::mse_loss(head(h), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    h = h.detach();
    running = running * 0.9 + loss.detach();
    losses.push_back(loss.detach());
  });
  for (auto& l : losses) o.fetched.push_back(l.item<double>());
  o.fetched.push_back(running.item<double>());
  for (double v : h.to_vector<double>()) o.fetched.push_back(v);
  collect(o, params);
  return o;
}

// 7. Host code throws in 1 of every 37 iterations, after some ops; the loop catches it
// outside the iteration scope.
inline Outcome exceptions(bool engine, int iters = 200) {
  tr::thread_manual_seed(12);
  Outcome o;
  Mlp net(5, 10, 2);
  tr::optim::SGD opt(net->parameters(), {.lr = 0.05});
  std::mt19937 rng(13);
  auto body = [&](int step) {
    tr::Tensor x = host_batch(rng, 4, 5), y = host_labels(rng, 4, 2);
    tr::Tensor loss = F::cross_entropy(net(x), y);
    if (step % 37 == 36) throw std::runtime_error("host failure");
    opt.zero_grad();
    loss.backward();
    opt.step();
    o.fetched.push_back(loss.item<double>());
  };
  std::unique_ptr<tr::Engine> e = engine ? std::make_unique<tr::Engine>() : nullptr;
  for (int i = 0; i < iters; ++i) {
    try {
      if (e) {
        auto it = e->iteration();
        body(i);
      } else {
        body(i);
      }
    } catch (const std::runtime_error&) {
      o.decisions.push_back(i);
    }
  }
  if (e) {
    e->synchronize();
    o.stats = e->stats();
  }
  collect(o, net->parameters());
  return o;
}

// 8. A sequence length that changes every 50 iterations (bounded specializations).
inline Outcome changing_shapes(bool engine, int iters = 200, tr::EngineOptions opts = {}) {
  tr::thread_manual_seed(14);
  Outcome o;
  nn::Embedding emb(20, 8);
  nn::Linear head(8, 20);
  std::vector<tr::Tensor> params = emb->parameters();
  for (auto& p : head->parameters()) params.push_back(p);
  tr::optim::Adam opt(params, {.lr = 1e-2});
  std::mt19937 rng(15);
  const int lengths[] = {6, 10, 14, 6};
  loop(iters, engine, o, [&](int step) {
    int64_t len = lengths[(step / 50) % 4];
    tr::Tensor tok = host_labels(rng, 2 * len, 20).view({2, len});
    tr::Tensor logits = head(emb(tok)).view({2 * len, 20});
    tr::Tensor target = tok.view({2 * len});
    tr::Tensor loss = F::cross_entropy(logits, target);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 7 == 0) o.fetched.push_back(loss.item<double>());
  }, opts);
  collect(o, params);
  return o;
}

// 9. A learning rate that changes every step (a fed scalar: no re-trace storm).
inline Outcome changing_lr(bool engine, int iters = 200) {
  tr::thread_manual_seed(16);
  Outcome o;
  Mlp net(6, 12, 3);
  tr::optim::AdamW opt(net->parameters(), {.lr = 3e-3});
  tr::optim::CosineAnnealingLR sched(opt, iters);
  std::mt19937 rng(17);
  loop(iters, engine, o, [&](int step) {
    tr::Tensor x = host_batch(rng, 4, 6), y = host_labels(rng, 4, 3);
    tr::Tensor loss = F::cross_entropy(net(x), y);
    opt.zero_grad();
    loss.backward();
    tr::optim::clip_grad_norm_tensor_(net->parameters(), 1.0);
    opt.step();
    sched.step();
    if (step % 10 == 0) o.fetched.push_back(loss.item<double>());
  });
  collect(o, net->parameters());
  return o;
}

// 10. A parameter replaced by a new tensor object at iteration 100 (and the optimizer rebuilt
// for the new parameter list, as a user would).
inline Outcome replaced_param(bool engine, int iters = 200) {
  tr::thread_manual_seed(18);
  Outcome o;
  tr::Tensor w1 = (tr::randn({6, 10}) * 0.3).set_requires_grad();
  tr::Tensor w2 = (tr::randn({10, 2}) * 0.3).set_requires_grad();
  auto make_opt = [&] {
    return std::make_unique<tr::optim::SGD>(std::vector<tr::Tensor>{w1, w2},
                                            tr::optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
  };
  auto opt = make_opt();
  std::mt19937 rng(19);
  loop(iters, engine, o, [&](int step) {
    if (step == 100) {
      tr::NoGradGuard ng;
      w1 = (w1 * 0.5).detach().set_requires_grad();  // a new tensor object
      opt = make_opt();
    }
    tr::Tensor x = host_batch(rng, 4, 6), y = host_batch(rng, 4, 2);
    tr::Tensor loss = F::mse_loss(tr::matmul(tr::relu(tr::matmul(x, w1)), w2), y);
    opt->zero_grad();
    loss.backward();
    opt->step();
    if (step % 10 == 0) o.fetched.push_back(loss.item<double>());
  });
  collect(o, {w1, w2});
  return o;
}

// 12. Results written through views of a preallocated buffer (out[t] = ..., the pattern of a
// hand-written RNN), which rewrites the buffer's autograd history at every write; the host
// reads the loss every step.
inline Outcome views_written_in_place(bool engine, int iters = 200) {
  tr::thread_manual_seed(14);
  Outcome o;
  TinyRnn rnn;
  auto& [wx, wh, head] = rnn;
  std::vector<tr::Tensor> params = rnn.parameters();
  tr::optim::Adam opt(params, {.lr = 0.01});
  std::mt19937 rng(15);
  loop(iters, engine, o, [&](int) {
    tr::Tensor x = host_batch(rng, 4 * 2, 3).view({4, 2, 3}), y = host_batch(rng, 2, 1);
    tr::Tensor hs = tr::zeros({4, 2, 8});
    tr::Tensor h = tr::zeros({2, 8});
    for (int64_t t = 0; t < 4; ++t) {
      h = tr::tanh(wx(x.select(0, t)) + wh(h));
      hs.select(0, t).copy_(h);
    }
    hs.slice(0, 2, 4).mul_(0.5);  // damp the last two steps in place
    tr::Tensor loss = F::mse_loss(head(hs.mean({0})), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    o.fetched.push_back(loss.item<double>());
  });
  collect(o, params);
  return o;
}

// Programs 12 and 13: an Mlp(8, 32, 16) trained with Adam; `loss(net, rng, o)` builds the
// step's loss from host data (recording its host decisions in o); the host reads the loss
// every 4 steps.
template <class Loss>
Outcome mlp_adam(bool engine, int iters, tr::EngineOptions opts, uint64_t seed, uint32_t host_seed,
                 Loss loss_of) {
  tr::thread_manual_seed(seed);
  Outcome o;
  Mlp net(8, 32, 16);
  std::vector<tr::Tensor> params = net->parameters();
  tr::optim::Adam opt(params, {.lr = 0.01});
  std::mt19937 rng(host_seed);
  loop(
      iters, engine, o,
      [&](int step) {
        tr::Tensor loss = loss_of(net, rng, o);
        opt.zero_grad();
        loss.backward();
        opt.step();
        if (step % 4 == 0) o.fetched.push_back(loss.item<double>());
      },
      opts);
  collect(o, params);
  return o;
}

// 12. A loss over a host-chosen subset (masked_select, as YOLO's loss): how many elements the
// host's mask selects changes every iteration, so the loss's shapes are new most of the time
// (dynamic nodes by default; with EngineOptions::dynamic_nodes off, new specializations that,
// past the limit, are never compiled); the backward pass through the network and the Adam
// step have the same shapes every time.
inline Outcome masked_loss(bool engine, int iters = 200, tr::EngineOptions opts = {}) {
  return mlp_adam(engine, iters, opts, 16, 17, [](Mlp& net, std::mt19937& rng, Outcome& o) {
    tr::Tensor x = host_batch(rng, 4, 8), y = host_batch(rng, 4, 16);
    std::vector<bool> keep(64);
    int count = 0;
    for (size_t i = 0; i < keep.size(); ++i) count += keep[i] = rng() % 3 == 0;
    o.decisions.push_back(count);
    tr::Tensor mask = tr::tensor(keep, {4, 16});
    return F::mse_loss(tr::masked_select(net(x), mask), tr::masked_select(y, mask));
  });
}

// 13. A batch of a host-drawn size (1 to 500 rows) every step: every op's shapes are new
// nearly every time, so past the specialization limit no step co-executes to its end (the
// case for EngineOptions::backoff_after).
inline Outcome random_batch_size(bool engine, int iters = 200, tr::EngineOptions opts = {}) {
  return mlp_adam(engine, iters, opts, 18, 19, [](Mlp& net, std::mt19937& rng, Outcome& o) {
    int rows = 1 + int(rng() % 500);
    o.decisions.push_back(rows);
    tr::Tensor x = host_batch(rng, rows, 8), y = host_batch(rng, rows, 16);
    return F::mse_loss(net(x), y);
  });
}

// A dynamic training program on `dev` (a device or the CPU): host batches fed every step, a
// head picked by host RNG, a loss term added when the fetched loss is high, Adam. Decisions:
// the head picked and whether the term was added.
inline Outcome device_dynamic(tr::Device dev, bool engine, int iters = 60,
                              tr::EngineOptions opts = {}) {
  tr::manual_seed(3);
  Outcome o;
  nn::Sequential body(nn::Linear(6, 16), nn::ReLU());
  nn::Linear head_a(16, 3), head_b(16, 3);
  body->to(dev);
  head_a->to(dev);
  head_b->to(dev);
  std::vector<tr::Tensor> params = body->parameters();
  for (auto* h : {&head_a, &head_b})
    for (tr::Tensor p : (*h)->parameters()) params.push_back(p);
  tr::optim::Adam opt(params, {.lr = 1e-2});
  std::mt19937 rng(4);
  loop(iters, engine, o, [&](int) {
    tr::Tensor x = host_batch(rng, 8, 6).to(dev), y = host_labels(rng, 8, 3).to(dev);
    tr::Tensor h = body->forward(x);
    int pick = int(rng() % 2);
    tr::Tensor loss = F::cross_entropy(pick ? head_a(h) : head_b(h), y);
    bool high = loss.item<double>() > 1.1;  // a data-dependent extra term
    if (high) loss = loss + 0.1 * (h * h).mean();
    o.decisions.push_back(2 * pick + int(high));
    opt.zero_grad();
    loss.backward();
    opt.step();
    o.fetched.push_back(loss.item<double>());
  }, opts);
  collect(o, params);
  return o;
}

// A kernel that fails inside a co-executed run: iteration 8 of 12 gathers with an out-of-range
// index built on the host (tensors on `dev`). What each iteration saw: the value it read, or
// the error's message; and the engine's counts.
struct RunErrorOutcome {
  std::vector<float> read;          // per iteration: the value read (NaN where it threw)
  std::vector<std::string> errors;  // per iteration: the error's message, or empty
  tr::EngineStats stats;
};
inline RunErrorOutcome kernel_error_in_run(tr::Device dev, tr::EngineOptions opts = {}) {
  RunErrorOutcome o;
  tr::Engine engine(opts);
  tr::Tensor table = tr::arange(0, 8).to(tr::DType::Float32).to(dev);
  for (int i = 0; i < 12; ++i) {
    o.read.push_back(std::nanf(""));
    o.errors.emplace_back();
    try {
      auto it = engine.iteration();
      int64_t bad = i == 8 ? 100 : i % 8;
      tr::Tensor idx = tr::tensor(std::vector<int64_t>{bad, 0}, {2}).to(dev);
      tr::Tensor got = tr::index_select(table * 1.0, 0, idx) + 1.0;
      o.read.back() = got.to_vector<float>()[1];
    } catch (const tr::Error& e) {
      o.errors.back() = e.what();
    }
  }
  o.stats = engine.stats();
  return o;
}
// What kernel_error_in_run must give: the error naming index_select at iteration 8's read and
// once more at iteration 9's iteration(), every other iteration its value, and co-execution.
inline void expect_error_at_the_read(const RunErrorOutcome& o) {
  for (int i = 0; i < 12; ++i) {
    if (i == 8 || i == 9) {
      EXPECT_NE(o.errors[i].find("index_select"), std::string::npos)
          << "iteration " << i << " did not report the out-of-range index: " << o.errors[i];
    } else {
      EXPECT_EQ(o.errors[i], "") << "iteration " << i;
      EXPECT_EQ(o.read[i], 1.f) << "iteration " << i;
    }
  }
  EXPECT_GE(o.stats.coexecuted, 2) << o.stats;
}

// 14. Value-sized results, more kinds than program 12: the host draws which outputs count
// this step (a mask whose number of true elements changes nearly every step, and is 0 every
// 7th: another path), and losses are taken over masked_select's results, as detection losses
// are (YOLO's object cells). A row mask broadcast against the outputs selects whole rows. The
// host reads the masks (masked_select sizes its result from them) and reads one of them again
// after the ops that use it.
inline Outcome masked_losses(bool engine, int iters = 200, tr::EngineOptions opts = {}) {
  tr::thread_manual_seed(9);
  Outcome o;
  Mlp net(8, 16, 6);
  tr::optim::Adam opt(net->parameters(), {.lr = 1e-2});
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<float> nd;
  loop(iters, engine, o, [&](int step) {
    tr::Tensor x = host_batch(rng, 5, 8);
    tr::Tensor out = net(x);  // [5, 6]
    double p = step % 7 == 3 ? 0.0 : 0.1 + 0.8 * u(rng);
    std::vector<bool> cells(30), rows(5);
    int count = 0;
    for (size_t i = 0; i < cells.size(); ++i) count += cells[i] = u(rng) < p;
    rows[0] = true;  // at least one row
    for (size_t i = 1; i < rows.size(); ++i) rows[i] = u(rng) < 0.5;
    std::vector<float> t(30);
    for (auto& v : t) v = nd(rng);
    o.decisions.push_back(count);
    tr::Tensor mask = tr::tensor(cells, {5, 6}), row_mask = tr::tensor(rows, {5, 1});
    tr::Tensor picked = tr::masked_select(out, mask);  // [count], unused when count is 0
    tr::Tensor loss = 0.1 * (out * out).mean();
    if (count > 0)
      loss = loss + F::mse_loss(tr::sigmoid(picked), tr::masked_select(tr::tensor(t, {5, 6}), mask));
    tr::Tensor in_rows = tr::masked_select(out, row_mask);
    loss = loss + F::binary_cross_entropy_with_logits(in_rows, tr::zeros_like(in_rows));
    int again = 0;  // the host reads a mask it already handed to ops
    for (bool b : mask.to_vector<bool>()) again += b;
    o.decisions.push_back(again);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 4 == 0) o.fetched.push_back(loss.item<double>());
  }, opts);
  collect(o, net->parameters());
  return o;
}

}  // namespace progs
