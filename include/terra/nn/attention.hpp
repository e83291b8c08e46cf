// terra/nn/attention.hpp: multi-head attention (PyTorch's MultiheadAttention, batch-first
// option, causal and key-padding masks).
#pragma once

#include <cmath>

#include "terra/nn/modules.hpp"

namespace terra::nn {

namespace functional {
/// A [l, s] bool mask, true above the diagonal: position i may not attend to j > i.
inline Tensor causal_mask(int64_t l, int64_t s, Device device = Device::cpu()) {
  TensorOptions o{.dtype = kInt64, .device = device};
  return arange(0, double(l), 1, o).unsqueeze(1) < arange(0, double(s), 1, o).unsqueeze(0);
}

/// softmax(q k^T / sqrt(d) + masks) v. q: [B, H, L, D], k, v: [B, H, S, D]; mask: bool
/// broadcastable to [B, H, L, S], true = not attended. Returns (out [B, H, L, D], weights).
inline std::pair<Tensor, Tensor> scaled_dot_product_attention(const Tensor& q, const Tensor& k,
                                                               const Tensor& v, const Tensor& mask = {},
                                                               double dropout_p = 0, bool train = false) {
  Tensor scores = matmul(q, k.transpose(-2, -1)) / std::sqrt(double(q.size(-1)));
  if (mask.defined()) scores = scores.masked_fill(mask, -INFINITY);
  Tensor w = softmax(scores, -1);
  if (dropout_p > 0 && train) w = dropout(w, dropout_p, true);
  return {matmul(w, v), w};
}
}  // namespace functional

/// Options of nn::MultiheadAttention, as torch's MultiheadAttentionOptions.
struct MultiheadAttentionOptions {
  /// Dropout probability on the attention weights, applied in training mode only.
  double dropout = 0.0;
  /// Whether the input and output projections have biases (in_proj_bias, out_proj->bias),
  /// initialized to 0.
  bool bias = true;
  bool batch_first = false;  ///< inputs [B, L, E] instead of [L, B, E]
};

/// Multi-head attention as torch::nn::MultiheadAttention: project query/key/value with
/// in_proj_weight, split embed_dim into num_heads heads of embed_dim / num_heads, apply
/// scaled dot-product attention per head, merge and project with out_proj. forward() takes
/// three tensors, so it cannot sit in a Sequential; call it as `auto [y, w] = mha(q, k, v);`.
class MultiheadAttentionImpl : public Module {
 public:
  /// embed_dim: the model width E of query/key/value; num_heads must divide it (throws
  /// otherwise). Parameters are initialized as PyTorch's (xavier-uniform in_proj_weight).
  MultiheadAttentionImpl(int64_t embed_dim, int64_t num_heads, MultiheadAttentionOptions o = {})
      : Module("MultiheadAttention"), e_(embed_dim), h_(num_heads), o_(o) {
    TERRA_CHECK(embed_dim > 0 && num_heads > 0 && embed_dim % num_heads == 0, "MultiheadAttention",
                "embed_dim ", embed_dim, " must be divisible by num_heads ", num_heads);
    in_proj_weight = register_parameter("in_proj_weight", empty({3 * embed_dim, embed_dim}));
    init::xavier_uniform_(in_proj_weight);
    if (o.bias) in_proj_bias = register_parameter("in_proj_bias", zeros({3 * embed_dim}));
    out_proj = register_module("out_proj", Linear(embed_dim, embed_dim, o.bias));
    if (o.bias) init::zeros_(out_proj->bias);
  }

  /// query [L, B, E] (or [B, L, E] with batch_first), key/value [S, B, E].
  /// key_padding_mask: bool [B, S], true = padding. attn_mask: bool [L, S], true = masked.
  /// is_causal adds the causal mask. Returns (output, attention weights averaged over heads
  /// [B, L, S]; undefined unless need_weights).
  std::pair<Tensor, Tensor> forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                    const Tensor& key_padding_mask = {}, bool need_weights = true,
                                    const Tensor& attn_mask = {}, bool is_causal = false) {
    Tensor q = o_.batch_first ? query : query.transpose(0, 1);  // [B, L, E]
    Tensor k = o_.batch_first ? key : key.transpose(0, 1);
    Tensor v = o_.batch_first ? value : value.transpose(0, 1);
    TERRA_CHECK(q.dim() == 3 && q.size(2) == e_ && k.dim() == 3 && v.dim() == 3, "MultiheadAttention",
                "expects 3-D inputs with embed dim ", e_, ", got query ", query.shape());
    int64_t b = q.size(0), l = q.size(1), s = k.size(1);
    auto w = in_proj_weight.chunk(3, 0);
    std::vector<Tensor> bias(3);
    if (in_proj_bias.defined()) bias = in_proj_bias.chunk(3, 0);
    auto heads = [&](const Tensor& x, int i, int64_t n) {
      return linear(x, w[i], bias[i]).view({b, n, h_, e_ / h_}).transpose(1, 2);  // [B, H, n, D]
    };
    Tensor mask;
    auto add = [&](const Tensor& m) { mask = mask.defined() ? (mask | m) : m; };
    if (attn_mask.defined()) add(attn_mask.to(kBool));
    if (is_causal) add(functional::causal_mask(l, s, q.device()));
    if (key_padding_mask.defined()) {
      TERRA_CHECK(key_padding_mask.shape() == Shape({b, s}), "MultiheadAttention", "key_padding_mask of shape ",
                  key_padding_mask.shape(), " must be [", b, ", ", s, "]");
      add(key_padding_mask.to(kBool).view({b, 1, 1, s}));
    }
    auto [o, weights] = functional::scaled_dot_product_attention(heads(q, 0, l), heads(k, 1, s), heads(v, 2, s),
                                                                 mask, o_.dropout, is_training());
    Tensor out = out_proj(o.transpose(1, 2).reshape({b, l, e_}));
    if (!o_.batch_first) out = out.transpose(0, 1);
    return {out, need_weights ? weights.mean({1}) : Tensor()};
  }

  ///@{
  /// in_proj_weight: [3 * E, E], the query, key and value projections stacked in that order;
  /// in_proj_bias: [3 * E], undefined without o.bias. Same names as PyTorch's state dict.
  Tensor in_proj_weight, in_proj_bias;
  ///@}
  /// The output projection E -> E (an nn::Linear, registered as "out_proj").
  Linear out_proj{nullptr};

 private:
  int64_t e_, h_;
  MultiheadAttentionOptions o_;
};
/// nn::MultiheadAttention: the holder of a MultiheadAttentionImpl
/// (`nn::MultiheadAttention mha(512, 8, nn::MultiheadAttentionOptions{.batch_first = true});`).
TERRA_MODULE(MultiheadAttention);

}  // namespace terra::nn
