// examples/programs/gpt2.hpp: paper program 5. A GPT-2 style decoder (pre-LN blocks, causal
// self-attention, GELU MLP, tied input/output embeddings) on a synthetic character corpus of
// sentences that end with an end token. Host side: AdamW with gradient clipping and a
// warm-up + cosine learning rate computed on the host and set every step; every gen_every
// steps the model generates in eval mode with host top-k sampling until the end token or
// gen_max tokens (a data-dependent trip count over inputs that grow by one token a step).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "examples/programs/common.hpp"

namespace programs {

struct Gpt2Config {
  int64_t ctx = 32, d = 128, heads = 4, layers = 2, batch = 8;
  double dropout = 0.1;
  double lr = 3e-3, min_lr = 3e-4, weight_decay = 0.1, clip = 1.0;
  int warmup = 10, schedule_steps = 500;  // the cosine reaches min_lr at schedule_steps
  int gen_every = 20, gen_max = 16, top_k = 5;
  double temperature = 1.0;
  bool print = true;  // loss every 10 steps and every generated text
  uint32_t seed = 5;
  static Gpt2Config paper() { return {}; }
  static Gpt2Config tiny() {
    Gpt2Config c;
    c.ctx = 16;
    c.d = 32;
    c.heads = 2;
    c.layers = 1;
    c.batch = 4;
    c.schedule_steps = 50;
    c.warmup = 5;
    c.print = false;
    return c;
  }
};

namespace gpt2 {

// Vocabulary: 0 = end of sentence, 1 = space, 2..27 = 'a'..'z'.
inline constexpr int64_t kEnd = 0, kVocab = 28;
inline int64_t token(char ch) { return ch == ' ' ? 1 : 2 + (ch - 'a'); }
inline char letter(int64_t t) { return t == kEnd ? '.' : t == 1 ? ' ' : char('a' + t - 2); }

inline const std::vector<std::string>& words() {
  static const std::vector<std::string> w = {"the", "cat", "sat", "on", "mat", "a", "dog",
                                             "ran", "to", "tree", "and", "then", "slept"};
  return w;
}

// Sentences of 2 to 6 words, each followed by the end token.
inline std::vector<int64_t> corpus(size_t n, std::mt19937& rng) {
  std::vector<int64_t> out;
  while (out.size() < n) {
    int len = 2 + int(rng() % 5);
    for (int w = 0; w < len; ++w) {
      if (w > 0) out.push_back(token(' '));
      for (char ch : words()[rng() % words().size()]) out.push_back(token(ch));
    }
    out.push_back(kEnd);
  }
  out.resize(n);
  return out;
}

struct BlockImpl : nn::Module {
  explicit BlockImpl(const Gpt2Config& c) : Module("Gpt2Block") {
    ln1 = register_module("ln1", nn::LayerNorm(tr::Shape{c.d}));
    nn::MultiheadAttentionOptions ao{.dropout = c.dropout, .batch_first = true};
    attn = register_module("attn", nn::MultiheadAttention(c.d, c.heads, ao));
    ln2 = register_module("ln2", nn::LayerNorm(tr::Shape{c.d}));
    fc = register_module("fc", nn::Linear(c.d, 4 * c.d));
    proj = register_module("proj", nn::Linear(4 * c.d, c.d));
    drop = register_module("drop", nn::Dropout(c.dropout));
  }
  tr::Tensor forward(const tr::Tensor& x) override {
    tr::Tensor h = ln1(x);
    tr::Tensor a = attn->forward(h, h, h, {}, /*need_weights=*/false, {}, /*is_causal=*/true).first;
    tr::Tensor y = x + drop(a);
    return y + drop(proj(tr::gelu(fc(ln2(y)), "tanh")));
  }
  nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  nn::MultiheadAttention attn{nullptr};
  nn::Linear fc{nullptr}, proj{nullptr};
  nn::Dropout drop{nullptr};
};
TERRA_MODULE(Block);

struct ModelImpl : nn::Module {
  explicit ModelImpl(const Gpt2Config& c) : Module("Gpt2") {
    wte = register_module("wte", nn::Embedding(kVocab, c.d));
    wpe = register_module("wpe", nn::Embedding(c.ctx, c.d));
    drop = register_module("drop", nn::Dropout(c.dropout));
    blocks = register_module("blocks", nn::Sequential());
    for (int64_t i = 0; i < c.layers; ++i) blocks->push_back(Block(c));
    ln_f = register_module("ln_f", nn::LayerNorm(tr::Shape{c.d}));
    tr::NoGradGuard no_grad;  // GPT-2 initializes embeddings N(0, 0.02)
    nn::init::normal_(wte->weight, 0, 0.02);
    nn::init::normal_(wpe->weight, 0, 0.02);
  }
  // ids: int64 [B, T], T <= ctx -> logits [B, T, vocab] (output layer tied to wte).
  tr::Tensor forward(const tr::Tensor& ids) override {
    tr::Tensor positions = tr::arange(0, double(ids.size(1)), 1, {.dtype = tr::kInt64});
    tr::Tensor h = blocks(drop(wte(ids) + wpe(positions)));
    return tr::linear(ln_f(h), wte->weight);
  }
  nn::Embedding wte{nullptr}, wpe{nullptr};
  nn::Dropout drop{nullptr};
  nn::Sequential blocks{nullptr};
  nn::LayerNorm ln_f{nullptr};
};
TERRA_MODULE(Model);

// Linear warm-up, then cosine decay to min_lr (held after schedule_steps).
inline double learning_rate(const Gpt2Config& c, int step) {
  if (step < c.warmup) return c.lr * double(step + 1) / double(c.warmup);
  double p = std::min(1.0, double(step - c.warmup) / double(c.schedule_steps - c.warmup));
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + std::cos(std::numbers::pi * p));
}

// One token from the top k of a row of logits, sampled on the host.
inline int64_t sample_top_k(const std::vector<float>& logits, int k, double temperature,
                            std::mt19937& rng) {
  std::vector<int64_t> idx(logits.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = int64_t(i);
  auto at = [&](int64_t i) { return logits[size_t(i)]; };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int64_t a, int64_t b) {
    return at(a) > at(b) || (at(a) == at(b) && a < b);
  });
  std::vector<double> w;
  for (int i = 0; i < k; ++i)
    w.push_back(std::exp((at(idx[size_t(i)]) - at(idx[0])) / temperature));
  std::discrete_distribution<int> pick(w.begin(), w.end());
  return idx[size_t(pick(rng))];
}

// Generates from a one-word prompt in eval mode; returns the tokens sampled.
inline std::vector<int64_t> generate(Model& model, const Gpt2Config& c, std::mt19937& rng,
                                     Outcome& o) {
  tr::NoGradGuard no_grad;
  model->eval();
  std::vector<int64_t> ids;
  for (char ch : words()[rng() % words().size()]) ids.push_back(token(ch));
  std::vector<int64_t> out;
  while (int(out.size()) < c.gen_max) {
    size_t from = ids.size() > size_t(c.ctx) ? ids.size() - size_t(c.ctx) : 0;
    std::vector<int64_t> window(ids.begin() + int64_t(from), ids.end());
    int64_t t = int64_t(window.size());
    tr::Tensor logits = model(tr::tensor(window, {1, t}));
    std::vector<float> last = logits.select(1, t - 1).to_vector<float>();
    o.fetched.insert(o.fetched.end(), last.begin(), last.end());
    int64_t next = sample_top_k(last, c.top_k, c.temperature, rng);
    out.push_back(next);
    if (next == kEnd) break;
    ids.push_back(next);
  }
  model->train();
  return out;
}

}  // namespace gpt2

inline Outcome run_gpt2(const Gpt2Config& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(cfg.seed);
  Outcome o;
  std::vector<int64_t> text = gpt2::corpus(20000, rng);
  gpt2::Model model(cfg);
  tr::optim::AdamW opt(model->parameters(), {.lr = cfg.lr, .weight_decay = cfg.weight_decay});
  const int64_t b = cfg.batch, t = cfg.ctx;
  run_loop(mode, iters, o, [&](int step) {
    std::vector<int64_t> x(size_t(b * t)), y(size_t(b * t));
    for (int64_t i = 0; i < b; ++i) {
      size_t at = rng() % (text.size() - size_t(t) - 1);
      std::copy_n(text.begin() + int64_t(at), t, x.begin() + i * t);
      std::copy_n(text.begin() + int64_t(at) + 1, t, y.begin() + i * t);
    }
    double lr = gpt2::learning_rate(cfg, step);
    opt.set_lr(lr);
    tr::Tensor logits = model(tr::tensor(x, {b, t}));
    tr::Tensor loss = F::cross_entropy(logits.view({b * t, gpt2::kVocab}), tr::tensor(y));
    opt.zero_grad();
    loss.backward();
    tr::optim::clip_grad_norm_tensor_(model->parameters(), cfg.clip);
    opt.step();
    if (step % 10 == 0) {
      double v = loss.item<double>();
      o.fetched.push_back(v);
      if (cfg.print)
        std::printf("gpt2 %s step %d lr %.2e loss %.4f\n", mode_name(mode), step, lr, v);
    }
    if (step % cfg.gen_every == 0) {
      std::vector<int64_t> gen = gpt2::generate(model, cfg, rng, o);
      o.decisions.push_back(int64_t(gen.size()));
      o.decisions.insert(o.decisions.end(), gen.begin(), gen.end());
      if (cfg.print) {
        std::string s;
        for (int64_t tok : gen) s += gpt2::letter(tok);
        std::printf("gpt2 %s step %d sample: \"%s\"\n", mode_name(mode), step, s.c_str());
      }
    }
  });
  collect_params(o, model->parameters());
  return o;
}

}  // namespace programs
