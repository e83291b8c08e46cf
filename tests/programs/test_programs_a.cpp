// Paper programs 1-5 (issue 7) in their tiny configurations: 50 iterations eager and 50
// co-executed must agree bit for bit (every fetched value, every host decision, the final
// parameters), and most co-executed iterations must run as compiled blocks.
#include <set>

#include <gtest/gtest.h>

#include "examples/programs/bert_cls.hpp"
#include "examples/programs/bert_qa.hpp"
#include "examples/programs/dcgan.hpp"
#include "examples/programs/gpt2.hpp"
#include "examples/programs/resnet50.hpp"

namespace {

using programs::Mode;
using programs::Outcome;

constexpr int kIters = 50;

// The counts every program must satisfy; `min_coexecuted` is each test's own bound.
void expect_stats(const Outcome& c, int64_t min_coexecuted) {
  const auto& s = c.stats;
  EXPECT_EQ(s.iterations, kIters) << s;
  EXPECT_EQ(s.eager + s.traced + s.coexecuted + s.fallbacks, kIters) << s;
  EXPECT_GE(s.coexecuted, min_coexecuted) << s;
}

// A program whose path never changes: one warm-up, two traced iterations (compile_after = 2),
// then every iteration co-executed.
void expect_static_path(const Outcome& c) {
  expect_stats(c, kIters - 3);
  EXPECT_EQ(c.stats.eager, 1) << c.stats;
  EXPECT_EQ(c.stats.traced, 2) << c.stats;
  EXPECT_EQ(c.stats.coexecuted, kIters - 3) << c.stats;
  EXPECT_EQ(c.stats.fallbacks, 0) << c.stats;
}

TEST(PaperPrograms, ResNet50) {
  auto cfg = programs::ResNet50Config::tiny();
  Outcome e = programs::run_resnet50(cfg, Mode::eager, kIters);
  Outcome c = programs::run_resnet50(cfg, Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  EXPECT_EQ(e.fetched.size(), 5u);  // the loss, every 10 steps
  expect_static_path(c);
}

TEST(PaperPrograms, Dcgan) {
  auto cfg = programs::DcganConfig::tiny();
  Outcome e = programs::run_dcgan(cfg, Mode::eager, kIters);
  Outcome c = programs::run_dcgan(cfg, Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  EXPECT_EQ(e.fetched.size(), 5u * kIters);  // D(x), D(G(z)) twice, both losses every step
  expect_static_path(c);
}

TEST(PaperPrograms, BertCls) {
  auto cfg = programs::BertClsConfig::tiny();
  Outcome e = programs::run_bert_cls(cfg, Mode::eager, kIters);
  Outcome c = programs::run_bert_cls(cfg, Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  EXPECT_EQ(e.fetched.size(), size_t(kIters * cfg.batch * cfg.classes));  // all logits
  // The padded length is drawn on the host; each new length is a new path, traced (and
  // falling back) until seen compile_after times, so only a lower bound holds.
  std::set<int64_t> lengths;
  for (size_t i = 0; i < e.decisions.size(); i += 2) lengths.insert(e.decisions[i]);
  EXPECT_GE(lengths.size(), 2u) << "the padded length should vary";
  expect_stats(c, 40);
}

TEST(PaperPrograms, BertQa) {
  auto cfg = programs::BertQaConfig::tiny();
  Outcome e = programs::run_bert_qa(cfg, Mode::eager, kIters);
  Outcome c = programs::run_bert_qa(cfg, Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  // Per example the chosen start and end, then the exact-match count, every step.
  EXPECT_EQ(e.decisions.size(), size_t(kIters * (2 * cfg.batch + 1)));
  expect_static_path(c);
}

TEST(PaperPrograms, Gpt2) {
  auto cfg = programs::Gpt2Config::tiny();
  Outcome e = programs::run_gpt2(cfg, Mode::eager, kIters);
  Outcome c = programs::run_gpt2(cfg, Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  // Generations at steps 0, 20 and 40; each records its length, then its tokens.
  size_t at = 0;
  for (int g = 0; g < 3; ++g) {
    ASSERT_LT(at, e.decisions.size());
    at += size_t(e.decisions[at]) + 1;
  }
  EXPECT_EQ(at, e.decisions.size());
  // A generating iteration's trip count and shapes depend on the sampled tokens, so it may
  // take a path never traced and fall back: a lower bound.
  expect_stats(c, 40);
}

}  // namespace
