// examples/transformer.cpp: a tiny causal transformer language model (pre-LN blocks,
// multi-head attention with a causal mask) on a generated character corpus: words from a
// small vocabulary strung together by a host random generator. AdamW with a cosine schedule.
#include <random>
#include <string>

#include <terra/terra.hpp>

#include "common.hpp"

namespace tr = terra;
namespace nn = terra::nn;

constexpr int kVocab = 28;  // a-z, space, '.'
constexpr int kCtx = 32, kDim = 48, kHeads = 4;

int token(char c) { return c == ' ' ? 26 : c == '.' ? 27 : c - 'a'; }

std::vector<int> make_corpus(size_t n, uint32_t seed) {
  const std::vector<std::string> words = {"the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to",
                                          "tree", "and", "then", "slept", "under", "sun"};
  std::mt19937 rng(seed);
  std::vector<int> out;
  while (out.size() < n) {
    int len = 3 + int(rng() % 5);
    for (int w = 0; w < len; ++w) {
      for (char c : words[rng() % words.size()]) out.push_back(token(c));
      out.push_back(token(w + 1 == len ? '.' : ' '));
    }
    out.push_back(token(' '));
  }
  out.resize(n);
  return out;
}

struct BlockImpl : nn::Module {
  BlockImpl() : Module("Block") {
    ln1 = register_module("ln1", nn::LayerNorm(tr::Shape{kDim}));
    attn = register_module("attn", nn::MultiheadAttention(kDim, kHeads, nn::MultiheadAttentionOptions{.batch_first = true}));
    ln2 = register_module("ln2", nn::LayerNorm(tr::Shape{kDim}));
    fc1 = register_module("fc1", nn::Linear(kDim, 4 * kDim));
    fc2 = register_module("fc2", nn::Linear(4 * kDim, kDim));
  }
  tr::Tensor forward(const tr::Tensor& x) override {
    tr::Tensor h = ln1(x);
    tr::Tensor a = attn->forward(h, h, h, {}, false, {}, /*is_causal=*/true).first;
    tr::Tensor y = x + a;
    return y + fc2(tr::gelu(fc1(ln2(y))));
  }
  nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  nn::MultiheadAttention attn{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};
};
TERRA_MODULE(Block);

struct LmImpl : nn::Module {
  LmImpl() : Module("Lm") {
    tok = register_module("tok", nn::Embedding(kVocab, kDim));
    pos = register_module("pos", nn::Embedding(kCtx, kDim));
    b1 = register_module("b1", Block());
    b2 = register_module("b2", Block());
    ln = register_module("ln", nn::LayerNorm(tr::Shape{kDim}));
    head = register_module("head", nn::Linear(kDim, kVocab));
  }
  // idx: [B, T] int64 -> logits [B, T, vocab]
  tr::Tensor forward(const tr::Tensor& idx) override {
    tr::Tensor p = tr::arange(0, double(idx.size(1)), 1, {.dtype = tr::kInt64});
    tr::Tensor h = tok(idx) + pos(p);
    return head(ln(b2(b1(h))));
  }
  nn::Embedding tok{nullptr}, pos{nullptr};
  Block b1{nullptr}, b2{nullptr};
  nn::LayerNorm ln{nullptr};
  nn::Linear head{nullptr};
};
TERRA_MODULE(Lm);

int main() {
  tr::manual_seed(0);
  const int batch = 16, steps = 250;
  std::vector<int> corpus = make_corpus(20000, 1);
  std::mt19937 rng(2);
  Lm lm;
  tr::optim::AdamW opt(lm->parameters(), {.lr = 3e-3, .weight_decay = 0.01});
  tr::optim::CosineAnnealingLR sched(opt, steps, 3e-4);
  example::Progress progress(batch * kCtx);
  double smoothed = 0;
  for (int step = 0; step < steps; ++step) {
    std::vector<int64_t> x(batch * kCtx), y(batch * kCtx);
    for (int b = 0; b < batch; ++b) {
      size_t at = rng() % (corpus.size() - kCtx - 1);
      for (int t = 0; t < kCtx; ++t) {
        x[size_t(b * kCtx + t)] = corpus[at + size_t(t)];
        y[size_t(b * kCtx + t)] = corpus[at + size_t(t) + 1];
      }
    }
    tr::Tensor logits = lm(tr::tensor(x, {batch, kCtx}));
    tr::Tensor loss = nn::functional::cross_entropy(logits.view({-1, kVocab}), tr::tensor(y));
    opt.zero_grad();
    loss.backward();
    tr::optim::clip_grad_norm_(lm->parameters(), 1.0);
    opt.step();
    sched.step();
    smoothed = step == 0 ? loss.item<double>() : 0.95 * smoothed + 0.05 * loss.item<double>();
    progress.report(step, loss.item<double>(), 25, steps);
  }
  // Uniform guessing costs log(28) = 3.33 nats; spelling the words right gets far below.
  return example::finish("smoothed loss", smoothed, 1.3, progress.seconds());
}
