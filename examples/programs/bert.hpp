// examples/programs/bert.hpp: the BERT encoder shared by bert_cls and bert_qa: token, position
// and segment embeddings, post-LN transformer layers (multi-head self-attention with a
// key-padding mask, GELU feed-forward), dropout as in BERT. Token ids: 0 = [PAD], 1 = [CLS],
// 2 = [SEP], ordinary tokens from 3.
#pragma once

#include <random>
#include <vector>

#include "examples/programs/common.hpp"

namespace programs::bert {

inline constexpr int64_t kPad = 0, kCls = 1, kSep = 2, kFirstWord = 3;

struct EncoderConfig {
  int64_t vocab = 1000, max_pos = 128, d = 128, heads = 4, ffn = 512, layers = 2;
  double dropout = 0.1;
};

struct LayerImpl : nn::Module {
  explicit LayerImpl(const EncoderConfig& c) : Module("BertLayer") {
    nn::MultiheadAttentionOptions ao{.dropout = c.dropout, .batch_first = true};
    attn = register_module("attn", nn::MultiheadAttention(c.d, c.heads, ao));
    ln1 = register_module("ln1", nn::LayerNorm(tr::Shape{c.d}, 1e-12));
    fc1 = register_module("fc1", nn::Linear(c.d, c.ffn));
    fc2 = register_module("fc2", nn::Linear(c.ffn, c.d));
    ln2 = register_module("ln2", nn::LayerNorm(tr::Shape{c.d}, 1e-12));
    drop = register_module("drop", nn::Dropout(c.dropout));
  }
  // x: [B, L, d], pad: bool [B, L] (true = padding) -> [B, L, d]
  tr::Tensor forward(const tr::Tensor& x, const tr::Tensor& pad) {
    tr::Tensor a = attn->forward(x, x, x, pad, /*need_weights=*/false).first;
    tr::Tensor h = ln1(x + drop(a));
    return ln2(h + drop(fc2(tr::gelu(fc1(h)))));
  }
  nn::MultiheadAttention attn{nullptr};
  nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};
  nn::Dropout drop{nullptr};
};
TERRA_MODULE(Layer);

struct EncoderImpl : nn::Module {
  explicit EncoderImpl(const EncoderConfig& c) : Module("BertEncoder") {
    tok = register_module("tok", nn::Embedding(c.vocab, c.d));
    pos = register_module("pos", nn::Embedding(c.max_pos, c.d));
    seg = register_module("seg", nn::Embedding(2, c.d));
    ln = register_module("ln", nn::LayerNorm(tr::Shape{c.d}, 1e-12));
    drop = register_module("drop", nn::Dropout(c.dropout));
    for (int64_t i = 0; i < c.layers; ++i)
      layers.push_back(register_module("layer" + std::to_string(i), Layer(c)));
    tr::NoGradGuard no_grad;  // BERT initializes embeddings N(0, 0.02)
    for (tr::Tensor w : {tok->weight, pos->weight, seg->weight}) nn::init::normal_(w, 0, 0.02);
  }
  // ids, segments: int64 [B, L]; the padding mask is computed from ids -> [B, L, d]
  tr::Tensor forward(const tr::Tensor& ids, const tr::Tensor& segments) {
    tr::Tensor positions = tr::arange(0, double(ids.size(1)), 1, {.dtype = tr::kInt64});
    tr::Tensor h = drop(ln(tok(ids) + pos(positions) + seg(segments)));
    tr::Tensor pad = ids == double(kPad);
    for (auto& layer : layers) h = layer(h, pad);
    return h;
  }
  nn::Embedding tok{nullptr}, pos{nullptr}, seg{nullptr};
  nn::LayerNorm ln{nullptr};
  nn::Dropout drop{nullptr};
  std::vector<Layer> layers;
};
TERRA_MODULE(Encoder);

// Ordinary word ids in [kFirstWord, vocab).
inline int64_t random_word(std::mt19937& rng, int64_t vocab) {
  return kFirstWord + int64_t(rng() % uint32_t(vocab - kFirstWord));
}

}  // namespace programs::bert
