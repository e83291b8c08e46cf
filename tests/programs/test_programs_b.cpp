// tests/programs/test_programs_b.cpp: paper programs 6-10 (issue 7) in their tiny
// configurations, 50 iterations eager and 50 co-executed: bit-identical results (every fetched
// value, every host decision, every final parameter), and engine counts showing that most
// iterations were co-executed.
#include <gtest/gtest.h>

#include <iostream>
#include <set>

#include "examples/programs/dropblock.hpp"
#include "examples/programs/faster_rcnn.hpp"
#include "examples/programs/music_transformer.hpp"
#include "examples/programs/sdpoint.hpp"
#include "examples/programs/yolov3.hpp"

namespace {

constexpr int kIters = 50;

// Every iteration is accounted for; the first one is the engine's eager warm-up.
void expect_accounted(const terra::EngineStats& s) {
  std::cout << s << "\n";
  EXPECT_EQ(s.iterations, kIters);
  EXPECT_EQ(s.eager + s.traced + s.coexecuted + s.fallbacks, kIters);
  EXPECT_EQ(s.eager - s.backed_off, 1);  // back-offs (EngineOptions::backoff_after) run eagerly too
}

TEST(PaperProgramsB, MusicTransformer) {
  auto cfg = programs::MusicTransformerConfig::tiny();
  auto e = programs::run_music_transformer(cfg, programs::Mode::eager, kIters);
  auto c = programs::run_music_transformer(cfg, programs::Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  expect_accounted(c.stats);
  // Three lengths drawn at random: each one's first two uses are traced or fall back (the
  // length changes the very first op, so every length is its own path), then co-executed.
  // With this seed: 2 traced, 3 fallen back, 44 co-executed.
  EXPECT_LE(c.stats.traced + c.stats.fallbacks, 1 + 2 * 3);
  EXPECT_GE(c.stats.coexecuted, 42);
}

TEST(PaperProgramsB, DropBlock) {
  auto cfg = programs::DropBlockConfig::tiny();
  auto e = programs::run_dropblock(cfg, programs::Mode::eager, kIters);
  auto c = programs::run_dropblock(cfg, programs::Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  expect_accounted(c.stats);
  // Two layers each applied or skipped at random (and skipped while the schedule is at 0):
  // each combination is traced until seen twice; the skipped path re-joins the applied one.
  // With this seed: 2 traced, 5 fallen back, 42 co-executed.
  EXPECT_LE(c.stats.traced + c.stats.fallbacks, 10);
  EXPECT_GE(c.stats.coexecuted, 39);
}

TEST(PaperProgramsB, SDPoint) {
  auto cfg = programs::SDPointConfig::tiny();
  auto e = programs::run_sdpoint(cfg, programs::Mode::eager, kIters);
  auto c = programs::run_sdpoint(cfg, programs::Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  expect_accounted(c.stats);
  // 10 points x 2 ratios: 19 distinct paths (the ratio is moot without a point), each traced
  // or fallen back on its first uses before it co-executes, so in 50 iterations only about half
  // can be co-executed (with this seed 26; 174 of 200 in a longer run).
  EXPECT_GE(c.stats.coexecuted, 24);
}

TEST(PaperProgramsB, FasterRcnn) {
  auto cfg = programs::FasterRcnnConfig::tiny();
  auto e = programs::run_faster_rcnn(cfg, programs::Mode::eager, kIters);
  auto c = programs::run_faster_rcnn(cfg, programs::Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  expect_accounted(c.stats);
  // The host work changes values, never shapes: a fixed number of anchors and ROIs is sampled
  // per image, so the path is the same every step.
  EXPECT_EQ(c.stats.traced, 2);
  EXPECT_EQ(c.stats.fallbacks, 0);
  EXPECT_EQ(c.stats.coexecuted, kIters - 3);
  // Per step: the RPN positives of each image, then each image's NMS survivors and ROI
  // foregrounds. The survivor count depends on the fetched values: it varies.
  std::set<int64_t> survivors;
  const size_t per_step = 3 * size_t(cfg.batch);
  ASSERT_EQ(c.decisions.size(), per_step * kIters);
  for (size_t s = 0; s < kIters; ++s)
    for (int64_t i = 0; i < cfg.batch; ++i)
      survivors.insert(c.decisions[s * per_step + size_t(cfg.batch + 2 * i)]);
  EXPECT_GT(survivors.size(), 3u);
}

TEST(PaperProgramsB, Yolov3) {
  auto cfg = programs::Yolov3Config::tiny();
  auto e = programs::run_yolov3(cfg, programs::Mode::eager, kIters);
  auto c = programs::run_yolov3(cfg, programs::Mode::coexec, kIters);
  EXPECT_EQ(programs::compare(e, c), "");
  expect_accounted(c.stats);
  // masked_select's result size (the number of selected cells) changes nearly every step:
  // its nodes and those computed from their results become dynamic (shapes are each run's,
  // docs/coexecution.md "Value-sized results") rather than a specialization per size. With
  // this seed: 2 traced, 1 fallen back, 46 co-executed; no back-off.
  EXPECT_GT(c.stats.dynamic_nodes, 0);
  EXPECT_LE(c.stats.traced + c.stats.fallbacks, 6);
  EXPECT_GE(c.stats.coexecuted, 42);
  EXPECT_EQ(c.stats.backoffs, 0);
}

}  // namespace
