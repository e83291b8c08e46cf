// examples/programs/bert_cls.hpp: paper program 3. A BERT encoder + pooler + classifier on
// synthetic sentences of varying length. Host side: every batch is padded on the host to its
// longest sentence rounded up to a multiple of 8 (so the sequence length changes from batch
// to batch), and the logits are fetched and the accuracy computed on the host every step.
#pragma once

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "examples/programs/bert.hpp"

namespace programs {

struct BertClsConfig {
  bert::EncoderConfig enc;
  int64_t batch = 16, classes = 2;
  int64_t min_len = 8;        // sentence lengths: min_len + an exponential draw,
  double mean_extra = 12;     // at most enc.max_pos tokens with [CLS] and [SEP]
  double lr = 5e-4, weight_decay = 0.01;
  bool print = true;          // loss and running accuracy every 10 steps
  uint32_t seed = 3;
  static BertClsConfig paper() { return {}; }
  static BertClsConfig tiny() {
    BertClsConfig c;
    c.enc = {.vocab = 50, .max_pos = 24, .d = 32, .heads = 2, .ffn = 64, .layers = 1};
    c.batch = 4;
    c.min_len = 4;
    c.mean_extra = 5;
    c.print = false;
    return c;
  }
};

namespace bert {

struct ClassifierImpl : nn::Module {
  explicit ClassifierImpl(const BertClsConfig& c) : Module("BertClassifier") {
    encoder = register_module("encoder", Encoder(c.enc));
    pooler = register_module("pooler", nn::Linear(c.enc.d, c.enc.d));
    drop = register_module("drop", nn::Dropout(c.enc.dropout));
    head = register_module("head", nn::Linear(c.enc.d, c.classes));
  }
  // ids, segments: [B, L] -> logits [B, classes], from the [CLS] position.
  tr::Tensor forward(const tr::Tensor& ids, const tr::Tensor& segments) {
    tr::Tensor h = encoder(ids, segments);
    tr::Tensor pooled = tr::tanh(pooler(h.select(1, 0)));
    return head(drop(pooled));
  }
  Encoder encoder{nullptr};
  nn::Linear pooler{nullptr}, head{nullptr};
  nn::Dropout drop{nullptr};
};
TERRA_MODULE(Classifier);

// A sentence's label: whether words from the lower half of the vocabulary are the majority.
struct ClsBatch {
  tr::Tensor ids, segments, labels;
  int64_t length;  // padded length
  std::vector<int64_t> y;
};

inline ClsBatch cls_batch(const BertClsConfig& c, std::mt19937& rng) {
  std::exponential_distribution<double> extra(1.0 / c.mean_extra);
  std::vector<std::vector<int64_t>> sents(size_t(c.batch));
  ClsBatch b;
  size_t longest = 0;
  int64_t half = (c.enc.vocab + kFirstWord) / 2;
  for (auto& s : sents) {
    int64_t n = std::min<int64_t>(c.min_len + int64_t(extra(rng)), c.enc.max_pos - 2);
    int64_t low = 0;
    s.push_back(kCls);
    for (int64_t i = 0; i < n; ++i) {
      s.push_back(random_word(rng, c.enc.vocab));
      low += s.back() < half;
    }
    s.push_back(kSep);
    b.y.push_back(2 * low > n ? 1 : 0);
    longest = std::max(longest, s.size());
  }
  b.length = std::min<int64_t>((int64_t(longest) + 7) / 8 * 8, c.enc.max_pos);
  std::vector<int64_t> ids(size_t(c.batch * b.length), kPad);
  for (size_t i = 0; i < sents.size(); ++i)
    std::copy(sents[i].begin(), sents[i].end(), ids.begin() + int64_t(i) * b.length);
  b.ids = tr::tensor(ids, {c.batch, b.length});
  b.segments = tr::zeros({c.batch, b.length}, {.dtype = tr::kInt64});
  b.labels = tr::tensor(b.y, {c.batch});
  return b;
}

}  // namespace bert

inline Outcome run_bert_cls(const BertClsConfig& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(cfg.seed);
  Outcome o;
  bert::Classifier model(cfg);
  tr::optim::AdamW opt(model->parameters(), {.lr = cfg.lr, .weight_decay = cfg.weight_decay});
  int64_t correct_total = 0, seen = 0;
  run_loop(mode, iters, o, [&](int step) {
    bert::ClsBatch b = bert::cls_batch(cfg, rng);
    o.decisions.push_back(b.length);
    tr::Tensor logits = model(b.ids, b.segments);
    tr::Tensor loss = F::cross_entropy(logits, b.labels);
    opt.zero_grad();
    loss.backward();
    opt.step();
    // Accuracy on the host, from the fetched logits.
    std::vector<float> l = logits.to_vector<float>();
    int64_t correct = 0;
    for (int64_t i = 0; i < cfg.batch; ++i) {
      auto row = l.begin() + i * cfg.classes;
      int64_t pred = std::max_element(row, row + cfg.classes) - row;
      correct += pred == b.y[size_t(i)];
    }
    correct_total += correct;
    seen += cfg.batch;
    o.fetched.insert(o.fetched.end(), l.begin(), l.end());
    o.decisions.push_back(correct);
    if (cfg.print && step % 10 == 0)
      std::printf("bert_cls %s step %d length %lld loss %.4f accuracy %.3f\n", mode_name(mode),
                  step, static_cast<long long>(b.length), loss.item<double>(),
                  double(correct_total) / double(seen));
  });
  collect_params(o, model->parameters());
  return o;
}

}  // namespace programs
