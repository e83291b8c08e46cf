// examples/programs/music_transformer.hpp: paper program 6, a Music Transformer decoder
// (Huang et al. 2018): relative global attention computed with the skewing trick, 2 pre-LN
// layers, d = 128, batch 8. The host draws every batch's sequence length from {32, 48, 64},
// so the shapes of the whole step change from one iteration to the next.
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "examples/programs/common.hpp"

namespace programs {

struct MusicTransformerConfig {
  int64_t vocab = 388;  // MIDI-like events: 128 note-on, 128 note-off, 100 time-shift, 32 velocity
  int64_t d_model = 128, heads = 8, layers = 2, d_ff = 512, batch = 8;
  std::vector<int64_t> lengths = {32, 48, 64};
  double lr = 1e-3;
  uint64_t seed = 6;
  static MusicTransformerConfig paper() { return {}; }
  static MusicTransformerConfig tiny() {
    MusicTransformerConfig c;
    c.vocab = 48, c.d_model = 32, c.heads = 4, c.d_ff = 64, c.batch = 2;
    return c;
  }
};

namespace music {

// Relative global attention: logits = (Q K^T + S_rel) / sqrt(d_h) with S_rel = skew(Q E_r^T),
// where E_r holds one learned embedding per relative distance -(max_len - 1) .. 0.
class RelativeAttentionImpl : public nn::Module {
 public:
  RelativeAttentionImpl(int64_t d, int64_t heads, int64_t max_len)
      : nn::Module("RelativeAttention"), h_(heads), dh_(d / heads), max_len_(max_len) {
    qkv = register_module("qkv", nn::Linear(d, 3 * d));
    out = register_module("out", nn::Linear(d, d));
    e_rel = register_parameter("e_rel", tr::randn({max_len, dh_}) * (1.0 / std::sqrt(double(dh_))));
  }
  // x: [B, L, d] -> [B, L, d]
  tr::Tensor forward(const tr::Tensor& x) override {
    int64_t b = x.size(0), l = x.size(1);
    auto parts = qkv(x).view({b, l, 3, h_, dh_}).permute({2, 0, 3, 1, 4}).chunk(3, 0);
    tr::Tensor q = parts[0].squeeze(0), k = parts[1].squeeze(0), v = parts[2].squeeze(0);
    tr::Tensor e = e_rel.narrow(0, max_len_ - l, l);  // distances -(l - 1) .. 0
    tr::Tensor s_rel = skew(tr::matmul(q, e.t()));
    tr::Tensor logits = (tr::matmul(q, k.transpose(-2, -1)) + s_rel) / std::sqrt(double(dh_));
    logits = logits.masked_fill(F::causal_mask(l, l), -INFINITY);
    tr::Tensor y = tr::matmul(tr::softmax(logits, -1), v);  // [B, H, L, dh]
    return out(y.transpose(1, 2).reshape({b, l, h_ * dh_}));
  }

  nn::Linear qkv{nullptr}, out{nullptr};
  tr::Tensor e_rel;

 private:
  // The skewing trick: [B, H, L, L] with column j = distance j - (L - 1) becomes the matrix
  // indexed by (query i, key j) by padding one zero column in front, viewing as [L + 1, L]
  // and dropping the first row; entries above the diagonal are garbage and get masked.
  static tr::Tensor skew(const tr::Tensor& qe) {
    int64_t b = qe.size(0), h = qe.size(1), l = qe.size(2);
    tr::Tensor padded = tr::cat({tr::zeros({b, h, l, 1}), qe}, 3);
    return padded.reshape({b, h, l + 1, l}).narrow(2, 1, l);
  }
  int64_t h_, dh_, max_len_;
};
TERRA_MODULE(RelativeAttention);

class DecoderLayerImpl : public nn::Module {
 public:
  DecoderLayerImpl(int64_t d, int64_t heads, int64_t d_ff, int64_t max_len)
      : nn::Module("DecoderLayer") {
    ln1 = register_module("ln1", nn::LayerNorm(tr::Shape{d}));
    attn = register_module("attn", RelativeAttention(d, heads, max_len));
    ln2 = register_module("ln2", nn::LayerNorm(tr::Shape{d}));
    ff1 = register_module("ff1", nn::Linear(d, d_ff));
    ff2 = register_module("ff2", nn::Linear(d_ff, d));
  }
  tr::Tensor forward(const tr::Tensor& x) override {
    tr::Tensor h = x + attn(ln1(x));
    return h + ff2(tr::relu(ff1(ln2(h))));
  }
  nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  RelativeAttention attn{nullptr};
  nn::Linear ff1{nullptr}, ff2{nullptr};
};
TERRA_MODULE(DecoderLayer);

class MusicTransformerImpl : public nn::Module {
 public:
  explicit MusicTransformerImpl(const MusicTransformerConfig& c)
      : nn::Module("MusicTransformer"), scale_(std::sqrt(double(c.d_model))) {
    int64_t max_len = *std::max_element(c.lengths.begin(), c.lengths.end());
    embed = register_module("embed", nn::Embedding(c.vocab, c.d_model));
    auto list = register_module("layers", nn::ModuleList());
    for (int64_t i = 0; i < c.layers; ++i) {
      layers.push_back(DecoderLayer(c.d_model, c.heads, c.d_ff, max_len));
      list->push_back(layers.back());
    }
    ln = register_module("ln", nn::LayerNorm(tr::Shape{c.d_model}));
    head = register_module("head", nn::Linear(c.d_model, c.vocab));
  }
  // tokens: [B, L] int64 -> logits [B, L, vocab]
  tr::Tensor forward(const tr::Tensor& tokens) override {
    tr::Tensor h = embed(tokens) * scale_;
    for (auto& l : layers) h = l(h);
    return head(ln(h));
  }
  nn::Embedding embed{nullptr};
  std::vector<DecoderLayer> layers;
  nn::LayerNorm ln{nullptr};
  nn::Linear head{nullptr};

 private:
  double scale_;
};
TERRA_MODULE(MusicTransformer);

// A synthetic "performance": a random walk over the event vocabulary with repeated motifs,
// so next-event prediction has something to learn. Returns [B, L + 1] tokens.
inline std::vector<int64_t> make_sequences(std::mt19937& rng, int64_t b, int64_t l, int64_t vocab) {
  std::vector<int64_t> tok(size_t(b * (l + 1)));
  std::uniform_int_distribution<int64_t> start(0, vocab - 1), step(-3, 3);
  std::uniform_int_distribution<int> motif(4, 8);
  for (int64_t i = 0; i < b; ++i) {
    int period = motif(rng);
    int64_t t = start(rng);
    for (int64_t j = 0; j <= l; ++j) {
      int64_t& dst = tok[size_t(i * (l + 1) + j)];
      if (j >= period && j % period != 0) {
        dst = tok[size_t(i * (l + 1) + j - period)];  // the motif repeats
      } else {
        t = ((t + step(rng)) % vocab + vocab) % vocab;
        dst = t;
      }
    }
  }
  return tok;
}

}  // namespace music

inline Outcome run_music_transformer(const MusicTransformerConfig& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(uint32_t(cfg.seed));
  Outcome o;
  music::MusicTransformer model(cfg);
  tr::optim::Adam opt(model->parameters(), {.lr = cfg.lr});
  std::uniform_int_distribution<size_t> pick(0, cfg.lengths.size() - 1);
  run_loop(mode, iters, o, [&](int step) {
    int64_t l = cfg.lengths[pick(rng)];  // this batch's sequence length
    o.decisions.push_back(l);
    auto seq = music::make_sequences(rng, cfg.batch, l, cfg.vocab);
    tr::Tensor all = tr::tensor(seq, {cfg.batch, l + 1});
    tr::Tensor input = all.narrow(1, 0, l), target = all.narrow(1, 1, l).reshape({-1});
    tr::Tensor logits = model(input);
    tr::Tensor loss = F::cross_entropy(logits.reshape({cfg.batch * l, cfg.vocab}), target);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step % 10 == 0) o.fetched.push_back(loss.item<double>());
  });
  collect_params(o, model->parameters());
  return o;
}

}  // namespace programs
