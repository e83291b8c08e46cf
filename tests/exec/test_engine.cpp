// tests/exec/test_engine.cpp: co-execution gives eager's results, bit for bit, and the engine
// really co-executes (the counts say so).
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "exec/programs.hpp"

namespace {

void expect_same(const progs::Outcome& eager, const progs::Outcome& co) {
  ASSERT_EQ(eager.params.size(), co.params.size());
  for (size_t i = 0; i < eager.params.size(); ++i)
    EXPECT_TRUE(eager.params[i] == co.params[i]) << "parameter " << i << " differs";
  ASSERT_EQ(eager.fetched.size(), co.fetched.size());
  for (size_t i = 0; i < eager.fetched.size(); ++i)
    EXPECT_EQ(std::memcmp(&eager.fetched[i], &co.fetched[i], sizeof(double)), 0)
        << "fetched value " << i << ": " << eager.fetched[i] << " vs " << co.fetched[i];
  EXPECT_EQ(eager.decisions, co.decisions);
}

TEST(CoExec, StaticMlp) {
  auto e = progs::static_mlp(false);
  auto c = progs::static_mlp(true);
  expect_same(e, c);
  std::cout << c.stats << "\n";
  EXPECT_EQ(c.stats.iterations, 200);
  EXPECT_EQ(c.stats.eager, 1);
  EXPECT_EQ(c.stats.traced, 2);
  EXPECT_EQ(c.stats.fallbacks, 0);
  EXPECT_EQ(c.stats.coexecuted, 197);
  EXPECT_EQ(c.stats.blocks, 1);
}


// Every iteration is accounted for, and the engine co-executed most of them.
void expect_mostly_coexecuted(const terra::EngineStats& s, int iters, int max_fallbacks,
                              int min_coexecuted) {
  std::cout << s << "\n";
  EXPECT_EQ(s.iterations, iters);
  EXPECT_EQ(s.eager + s.traced + s.coexecuted + s.fallbacks, iters);
  EXPECT_EQ(s.eager, 1);
  EXPECT_LE(s.fallbacks, max_fallbacks);
  EXPECT_GE(s.coexecuted, min_coexecuted);
}

TEST(CoExec, HostPicksSubNetwork) {
  auto e = progs::sdpoint(false), c = progs::sdpoint(true);
  expect_same(e, c);
  // Three sub-networks: each new one is traced until seen twice; the paths re-join after it.
  // A head's first use also differs (its gradient and Adam state are created then), so a few
  // more paths occur early on.
  expect_mostly_coexecuted(c.stats, 200, 8, 185);
  EXPECT_GE(c.stats.paths, 3);
  EXPECT_LE(c.stats.paths, 8);
  EXPECT_LE(c.stats.blocks, 20);
}

TEST(CoExec, DropBlockDecisionsGiveLinearlyManyBlocks) {
  auto e = progs::dropblock(false), c = progs::dropblock(true);
  expect_same(e, c);
  expect_mostly_coexecuted(c.stats, 200, 40, 120);
  // Four independent decisions: O(k) blocks although many of the 16 paths occur.
  EXPECT_GT(c.stats.paths, 4);
  EXPECT_LE(c.stats.blocks, 30);
}

TEST(CoExec, DataDependentLoop) {
  auto e = progs::refine_loop(false), c = progs::refine_loop(true);
  expect_same(e, c);
  std::set<int> trips(c.decisions.begin(), c.decisions.end());
  EXPECT_GT(trips.size(), 1u) << "the loop's trip count should vary";
  expect_mostly_coexecuted(c.stats, 200, 20, 150);
}

TEST(CoExec, HostNonMaximumSuppression) {
  auto e = progs::host_nms(false), c = progs::host_nms(true);
  expect_same(e, c);
  expect_mostly_coexecuted(c.stats, 200, 0, 197);
}

TEST(CoExec, StateCarriedAcrossIterations) {
  auto e = progs::carried_state(false), c = progs::carried_state(true);
  expect_same(e, c);
  expect_mostly_coexecuted(c.stats, 200, 0, 197);
}

TEST(CoExec, ExceptionsInsideIterations) {
  auto e = progs::exceptions(false), c = progs::exceptions(true);
  expect_same(e, c);
  EXPECT_EQ(c.decisions.size(), 5u);
  // Each throw abandons a co-executed iteration after its validated prefix ran.
  std::cout << c.stats << "\n";
  EXPECT_EQ(c.stats.fallbacks, 5);
  EXPECT_EQ(c.stats.reasons.at("exception thrown inside the iteration"), 5);
  EXPECT_EQ(c.stats.coexecuted, 192);
}

TEST(CoExec, ChangingShapesGiveBoundedSpecializations) {
  auto e = progs::changing_shapes(false), c = progs::changing_shapes(true);
  expect_same(e, c);
  // Lengths 6, 10, 14, 6: two new shapes, each traced twice before it co-executes.
  expect_mostly_coexecuted(c.stats, 200, 4, 190);
  EXPECT_GE(c.stats.paths, 3);
  EXPECT_LE(c.stats.paths, 4);
}

TEST(CoExec, LearningRateChangesEveryStep) {
  auto e = progs::changing_lr(false), c = progs::changing_lr(true);
  expect_same(e, c);
  expect_mostly_coexecuted(c.stats, 200, 0, 197);
  EXPECT_EQ(c.stats.traced, 2);
  EXPECT_EQ(c.stats.compiles, 1);
}

TEST(CoExec, ReplacedParameter) {
  auto e = progs::replaced_param(false), c = progs::replaced_param(true);
  expect_same(e, c);
  // The new optimizer's first step differs (momentum buffers created): re-traced, then stable.
  expect_mostly_coexecuted(c.stats, 200, 3, 190);
  EXPECT_GE(c.stats.fallbacks, 1);
}

TEST(CoExec, TwoThreadsTwoEngines) {
  progs::Outcome e1, e2, c1, c2;
  {
    std::thread a([&] { e1 = progs::static_mlp(false); });
    std::thread b([&] { e2 = progs::sdpoint(false); });
    a.join();
    b.join();
  }
  {
    std::thread a([&] { c1 = progs::static_mlp(true); });
    std::thread b([&] { c2 = progs::sdpoint(true); });
    a.join();
    b.join();
  }
  expect_same(e1, c1);
  expect_same(e2, c2);
  EXPECT_EQ(c1.stats.coexecuted, 197);
  EXPECT_GE(c2.stats.coexecuted, 185);
}

}  // namespace
