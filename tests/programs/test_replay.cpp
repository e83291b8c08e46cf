// The whole-step-capture baseline (Mode::replay, EngineOptions::unchecked_replay) is what the
// paper programs' benchmark compares co-execution with. It must be what it claims: right on a
// program that does the same thing every step, and wrong or failing (never crashing) on one
// whose host decides the path and the shapes.
#include <gtest/gtest.h>

#include "examples/programs/resnet50.hpp"
#include "examples/programs/sdpoint.hpp"

namespace {

using programs::Mode;

TEST(ReplayBaseline, StaticProgramReplaysCorrectly) {
  auto cfg = programs::ResNet50Config::tiny();
  auto e = programs::run_resnet50(cfg, Mode::eager, 20);
  auto r = programs::run_resnet50(cfg, Mode::replay, 20);
  EXPECT_EQ(programs::compare(e, r), "");
  // Warm-up, the capture, then 18 replays; nothing is traced again.
  EXPECT_EQ(r.stats.eager, 1) << r.stats;
  EXPECT_EQ(r.stats.traced, 1) << r.stats;
  EXPECT_EQ(r.stats.coexecuted, 18) << r.stats;
}

TEST(ReplayBaseline, DynamicProgramIsWrongOrFails) {
  auto cfg = programs::SDPointConfig::tiny();
  auto e = programs::run_sdpoint(cfg, Mode::eager, 20);
  std::string outcome;
  try {
    auto r = programs::run_sdpoint(cfg, Mode::replay, 20);
    outcome = programs::compare(e, r);
    EXPECT_NE(outcome, "") << "a frozen path cannot follow the host's choices";
  } catch (const terra::Error& err) {
    outcome = err.what();
    EXPECT_NE(outcome.find("captured"), std::string::npos) << outcome;
  }
  std::cout << "replay of sdpoint: " << outcome << "\n";
}

}  // namespace
