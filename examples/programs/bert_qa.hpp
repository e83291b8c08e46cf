// examples/programs/bert_qa.hpp: paper program 4. The BERT encoder with a start/end span head
// on synthetic question/context pairs of fixed length. Host side: the start and end logits are
// fetched every step; for every example the host loops over the top-5 x top-5 (start, end)
// candidates, keeps those inside the context with end >= start and at most 8 tokens, picks
// the best and computes exact match against the gold span.
#pragma once

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "examples/programs/bert.hpp"

namespace programs {

struct BertQaConfig {
  bert::EncoderConfig enc;
  int64_t length = 64, batch = 16;
  int64_t min_question = 6, max_question = 16, max_answer = 8, top_k = 5;
  double lr = 5e-4, weight_decay = 0.01;
  bool print = true;  // loss and running exact match every 10 steps
  uint32_t seed = 4;
  static BertQaConfig paper() { return {}; }
  static BertQaConfig tiny() {
    BertQaConfig c;
    c.enc = {.vocab = 60, .max_pos = 24, .d = 32, .heads = 2, .ffn = 64, .layers = 1};
    c.length = 24;
    c.batch = 4;
    c.min_question = 3;
    c.max_question = 5;
    c.print = false;
    return c;
  }
};

namespace bert {

struct SpanModelImpl : nn::Module {
  explicit SpanModelImpl(const BertQaConfig& c) : Module("BertSpan") {
    encoder = register_module("encoder", Encoder(c.enc));
    span = register_module("span", nn::Linear(c.enc.d, 2));
  }
  // ids, segments: [B, L] -> (start logits [B, L], end logits [B, L])
  std::pair<tr::Tensor, tr::Tensor> forward(const tr::Tensor& ids, const tr::Tensor& segments) {
    tr::Tensor s = span(encoder(ids, segments));  // [B, L, 2]
    return {s.select(2, 0), s.select(2, 1)};
  }
  Encoder encoder{nullptr};
  nn::Linear span{nullptr};
};
TERRA_MODULE(SpanModel);

// [CLS] question [SEP] context [SEP] [PAD]...; the answer is a run of 1 to max_answer words
// from the top 10% of the vocabulary (the question starts with one too), the rest of the
// context from the bottom 90%.
struct QaBatch {
  tr::Tensor ids, segments, start, end;
  std::vector<int64_t> ctx_begin, ctx_end, gold_start, gold_end;
};

inline QaBatch qa_batch(const BertQaConfig& c, std::mt19937& rng) {
  int64_t v = c.enc.vocab, marked = v - std::max<int64_t>((v - kFirstWord) / 10, 2);
  auto word = [&](bool answer) {
    return answer ? marked + int64_t(rng() % uint32_t(v - marked))
                  : kFirstWord + int64_t(rng() % uint32_t(marked - kFirstWord));
  };
  QaBatch b;
  std::vector<int64_t> ids(size_t(c.batch * c.length), kPad), seg(ids.size(), 0);
  for (int64_t i = 0; i < c.batch; ++i) {
    int64_t q = c.min_question + int64_t(rng() % uint32_t(c.max_question - c.min_question + 1));
    int64_t room = c.length - q - 3, ctx = room / 2 + int64_t(rng() % uint32_t(room / 2 + 1));
    int64_t ans = 1 + int64_t(rng() % uint32_t(std::min(c.max_answer, ctx)));
    int64_t begin = q + 2, at = begin + int64_t(rng() % uint32_t(ctx - ans + 1));
    int64_t* row = ids.data() + i * c.length;
    row[0] = kCls;
    for (int64_t t = 0; t < q; ++t) row[1 + t] = word(t == 0);
    row[q + 1] = kSep;
    for (int64_t t = begin; t < begin + ctx; ++t) {
      row[t] = word(t >= at && t < at + ans);
      seg[size_t(i * c.length + t)] = 1;
    }
    row[begin + ctx] = kSep;
    b.ctx_begin.push_back(begin);
    b.ctx_end.push_back(begin + ctx);
    b.gold_start.push_back(at);
    b.gold_end.push_back(at + ans - 1);
  }
  b.ids = tr::tensor(ids, {c.batch, c.length});
  b.segments = tr::tensor(seg, {c.batch, c.length});
  b.start = tr::tensor(b.gold_start, {c.batch});
  b.end = tr::tensor(b.gold_end, {c.batch});
  return b;
}

// Indices of the k largest of v[0, n) (ties: lower index first).
inline std::vector<int64_t> top_k(const float* v, int64_t n, int64_t k) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  k = std::min(k, n);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  idx.resize(size_t(k));
  return idx;
}

}  // namespace bert

inline Outcome run_bert_qa(const BertQaConfig& cfg, Mode mode, int iters) {
  tr::thread_manual_seed(cfg.seed);
  std::mt19937 rng(cfg.seed);
  Outcome o;
  bert::SpanModel model(cfg);
  tr::optim::AdamW opt(model->parameters(), {.lr = cfg.lr, .weight_decay = cfg.weight_decay});
  int64_t exact_total = 0, seen = 0;
  const int64_t n = cfg.length;
  run_loop(mode, iters, o, [&](int step) {
    bert::QaBatch b = bert::qa_batch(cfg, rng);
    auto [start_logits, end_logits] = model(b.ids, b.segments);
    tr::Tensor loss =
        (F::cross_entropy(start_logits, b.start) + F::cross_entropy(end_logits, b.end)) / 2.0;
    opt.zero_grad();
    loss.backward();
    opt.step();
    std::vector<float> sl = start_logits.to_vector<float>(), el = end_logits.to_vector<float>();
    int64_t exact = 0;
    for (int64_t i = 0; i < cfg.batch; ++i) {
      const float *s = sl.data() + i * n, *e = el.data() + i * n;
      int64_t best_s = -1, best_e = -1;
      float best = 0;
      for (int64_t si : bert::top_k(s, n, cfg.top_k))
        for (int64_t ei : bert::top_k(e, n, cfg.top_k)) {
          bool valid = si >= b.ctx_begin[size_t(i)] && ei < b.ctx_end[size_t(i)] && ei >= si &&
                       ei - si + 1 <= cfg.max_answer;
          if (!valid || (best_s >= 0 && s[si] + e[ei] <= best)) continue;
          best = s[si] + e[ei], best_s = si, best_e = ei;
        }
      exact += best_s == b.gold_start[size_t(i)] && best_e == b.gold_end[size_t(i)];
      o.decisions.insert(o.decisions.end(), {best_s, best_e});
    }
    exact_total += exact;
    seen += cfg.batch;
    o.decisions.push_back(exact);
    o.fetched.insert(o.fetched.end(), sl.begin(), sl.end());
    o.fetched.insert(o.fetched.end(), el.begin(), el.end());
    if (cfg.print && step % 10 == 0)
      std::printf("bert_qa %s step %d loss %.4f exact match %.3f\n", mode_name(mode), step,
                  loss.item<double>(), double(exact_total) / double(seen));
  });
  collect_params(o, model->parameters());
  return o;
}

}  // namespace programs
