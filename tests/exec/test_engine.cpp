// tests/exec/test_engine.cpp: co-execution gives eager's results, bit for bit, and the engine
// really co-executes (the counts say so).
#include <gtest/gtest.h>

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

}  // namespace
