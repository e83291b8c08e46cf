// tests/exec/test_engine.cpp: co-execution gives eager's results, bit for bit, and the engine
// really co-executes (the counts say so).
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "exec/programs.hpp"
#include <terra/io/trace_dump.hpp>

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
  // Nearly every call is matched on the fast path (no shape inference, a compact record).
  EXPECT_GE(c.stats.ops_fast * 10, c.stats.ops_coexecuted * 9);
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
  // A new combination of decisions that only strings known blocks together in a new order
  // goes on co-executing along the new edge (a jump) instead of falling back.
  EXPECT_GE(c.stats.jumps, 1);
  EXPECT_LE(c.stats.fallbacks, 10);
}

// Three host decisions walked through all 8 combinations, each held for 6 steps: every new
// combination after the first few is made of blocks already compiled, joined by edges never
// traced. Those iterations jump along the new edges (validated call by call) rather than fall
// back, and the results are still eager's, bit for bit.
TEST(CoExec, NewCombinationsOfKnownBlocksJump) {
  auto run = [](bool engine, bool jump = true) {
    progs::Outcome o;
    terra::thread_manual_seed(9);
    terra::nn::Linear in(6, 12), out(12, 3);
    std::vector<terra::nn::Linear> blocks;
    for (int i = 0; i < 3; ++i) blocks.emplace_back(12, 12);
    std::vector<terra::Tensor> params = in->parameters();
    for (auto& b : blocks)
      for (auto& p : b->parameters()) params.push_back(p);
    for (auto& p : out->parameters()) params.push_back(p);
    terra::optim::SGD opt(params, {.lr = 0.05});
    std::mt19937 rng(11);
    // Gray-code order, so that consecutive combinations differ in one decision.
    const int order[8] = {7, 6, 4, 5, 1, 0, 2, 3};
    progs::loop(48, engine, o, [&](int step) {
      int combo = order[step / 6];
      terra::Tensor x = progs::host_batch(rng, 5, 6), y = progs::host_batch(rng, 5, 3);
      terra::Tensor h = terra::tanh(in(x));
      for (int k = 0; k < 3; ++k)
        if (combo >> k & 1) h = h + terra::relu(blocks[k](h));
      terra::Tensor loss = terra::nn::functional::mse_loss(out(h), y);
      opt.zero_grad();
      loss.backward();
      opt.step();
      o.decisions.push_back(combo);
      o.fetched.push_back(loss.item<double>());
    }, terra::EngineOptions{.jump = jump});
    progs::collect(o, params);
    return o;
  };
  auto e = run(false), c = run(true), off = run(true, false);
  expect_same(e, c);
  expect_same(e, off);
  std::cout << c.stats << "\n" << off.stats << "\n";
  EXPECT_EQ(c.stats.iterations, 48);
  EXPECT_EQ(c.stats.eager + c.stats.traced + c.stats.coexecuted + c.stats.fallbacks, 48);
  EXPECT_GE(c.stats.jumps, 1);
  EXPECT_EQ(off.stats.jumps, 0);
  EXPECT_LT(c.stats.fallbacks, off.stats.fallbacks);
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
  // Lengths 6, 10, 14, 6: two new shapes. Each is known code (calls already compiled, in
  // other shapes), so its first trace is enough: one fallback each. The first co-executed
  // pass of length 14 diverged once more (at step 101, in the optimizer block the paths
  // share: one of its external gradient buffers came bound to a storage that block reads
  // elsewhere), and was merged like any divergence.
  expect_mostly_coexecuted(c.stats, 200, 3, 194);
  EXPECT_GE(c.stats.paths, 3);
  EXPECT_LE(c.stats.paths, 5);
  // Treated as new code (compile_variants_after = compile_after), each is traced twice.
  auto twice = progs::changing_shapes(true, 200, {.compile_variants_after = 2});
  expect_same(e, twice);
  EXPECT_EQ(twice.stats.fallbacks, 4);
  EXPECT_LT(c.stats.fallbacks, twice.stats.fallbacks);
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

TEST(CoExec, ViewsWrittenInPlace) {
  auto e = progs::views_written_in_place(false), c = progs::views_written_in_place(true);
  expect_same(e, c);
  // The loss reaches wx and wh only through the buffer's rewritten history: had the writes
  // been lost to autograd, their gradients would be undefined and Adam would leave them.
  auto initial = progs::views_written_in_place(false, 0);
  for (size_t i = 0; i < initial.params.size(); ++i)
    EXPECT_NE(initial.params[i], c.params[i]) << "parameter " << i << " was never updated";
  expect_mostly_coexecuted(c.stats, 200, 3, 190);
}

// Each thread's generator can be seeded alone: what one thread draws does not depend on
// another thread seeding or drawing meanwhile.
// Where the host's mask makes the loss's shapes new every iteration, co-execution resumes
// at the backward pass and the optimizer step, whose shapes never change: bit-identical to
// eager with or without resuming, and resuming co-executes those ops in iterations that fall
// back.
TEST(CoExec, ResumesAfterADivergence) {
  auto e = progs::masked_loss(false);
  terra::EngineOptions on;
  on.resume = true;
  on.backoff_after = 0;  // keep trying: this test is about what each fallback does
  // Value-sized results as new specializations, as before dynamic nodes: the loss's shapes
  // diverge in most iterations, and the backward pass and Adam step re-join.
  on.dynamic_nodes = false;
  auto c = progs::masked_loss(true, 200, on);
  terra::EngineOptions off;
  off.dynamic_nodes = false;
  auto n = progs::masked_loss(true, 200, off);  // no resumes: record to the end
  auto d = progs::masked_loss(true);            // the default: dynamic nodes
  expect_same(e, d);
  expect_mostly_coexecuted(d.stats, 200, 4, 190);
  EXPECT_GT(d.stats.dynamic_nodes, 0);
  expect_same(e, c);
  expect_same(e, n);
  std::cout << c.stats << "\n" << n.stats << "\n";
  EXPECT_EQ(c.stats.iterations, 200);
  EXPECT_GT(c.stats.fallbacks, 100);  // the count repeats rarely enough
  EXPECT_GE(c.stats.resumes, c.stats.fallbacks);  // the loss's parts interleave: several each
  EXPECT_EQ(n.stats.resumes, 0);
  // Every iteration that falls back co-executes the Adam step at least (4 parameters, more
  // than 10 ops each) after resuming.
  EXPECT_GE(c.stats.ops_coexecuted - n.stats.ops_coexecuted, 50 * c.stats.fallbacks);
}

// Where every co-executed iteration falls back (a host-drawn batch size makes every shape
// new), the engine pauses co-execution at that call site after backoff_after fallbacks in a
// row, for 8, 16, 32, ... iterations, trying again after each pause: bit-identical to eager,
// and most iterations run eagerly instead of recording and merging.
TEST(CoExec, BacksOffWhereEveryIterationFallsBack) {
  auto e = progs::random_batch_size(false);
  auto b = progs::random_batch_size(true);  // the default: backoff_after = 8
  terra::EngineOptions never;
  never.backoff_after = 0;
  auto n = progs::random_batch_size(true, 200, never);
  expect_same(e, b);
  expect_same(e, n);
  std::cout << b.stats << "\n" << n.stats << "\n";
  EXPECT_EQ(n.stats.backoffs, 0);
  EXPECT_EQ(n.stats.backed_off, 0);
  EXPECT_GT(n.stats.fallbacks, 150);
  // 200 iterations: warm-up and tracing, 8 fallbacks, then pauses of 8, 16, 32 and 64
  // iterations with one fallback after each, and a pause of 128 that the run cuts short. A
  // step whose batch size repeats one of the compiled ones co-executes and starts the count
  // over (with this seed, once).
  EXPECT_GE(b.stats.backoffs, 4);
  EXPECT_GE(b.stats.backed_off, 8 + 16 + 32 + 64);
  EXPECT_GE(b.stats.eager, b.stats.backed_off);
  EXPECT_LE(b.stats.fallbacks, 2 * 8 + 5);
  EXPECT_LT(5 * b.stats.fallbacks, n.stats.fallbacks);
  EXPECT_EQ(b.stats.eager + b.stats.traced + b.stats.coexecuted + b.stats.fallbacks, 200);
}

TEST(CoExec, ThreadSeedsAreIndependent) {
  std::vector<float> a1, a2;
  std::thread t([&] {
    terra::thread_manual_seed(5);
    for (int i = 0; i < 50; ++i) {
      auto v = terra::rand({8}).to_vector<float>();
      a1.insert(a1.end(), v.begin(), v.end());
    }
  });
  for (int i = 0; i < 50; ++i) {
    terra::thread_manual_seed(9);
    terra::randn({8});
  }
  t.join();
  terra::thread_manual_seed(5);
  for (int i = 0; i < 50; ++i) {
    auto v = terra::rand({8}).to_vector<float>();
    a2.insert(a2.end(), v.begin(), v.end());
  }
  EXPECT_EQ(a1, a2);
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


TEST(CoExec, EngineOffRunsEverythingEagerly) {
  namespace tr = terra;
  tr::Engine engine(tr::EngineOptions{.coexecute = false});
  tr::Tensor w = tr::ones({3});
  for (int i = 0; i < 5; ++i) {
    auto it = engine.iteration();
    w = w * 2.0;
  }
  EXPECT_EQ(engine.stats().eager, 5);
  EXPECT_EQ(engine.stats().blocks, 0);
  EXPECT_EQ(w.to_vector<float>(), std::vector<float>(3, 32.f));
}

TEST(CoExec, IterationsCannotNest) {
  terra::Engine engine;
  auto it = engine.iteration();
  EXPECT_THROW({ auto inner = engine.iteration(); }, terra::Error);
}

// A kernel failure inside a co-executed run (an index from host data out of range) reaches
// the host as terra::Error at the read, once more at the next iteration(), and the engine
// keeps working afterwards.
TEST(CoExec, KernelErrorInsideARunSurfaces) {
  progs::expect_error_at_the_read(progs::kernel_error_in_run(terra::Device::cpu()));
}

// The recorder's per-iteration call-site counts: one count per place, cleared per iteration,
// kept across the table's growth.
TEST(CoExec, PlaceCountsCountPerPlaceAndClear) {
  terra::trace::PlaceCounts c;
  for (int round = 0; round < 3; ++round) {
    c.clear();
    for (uint64_t k = 0; k < 500; ++k) EXPECT_EQ(c.next(k * 0x10000), 0u);  // grows past 64
    for (uint64_t k = 0; k < 500; ++k) EXPECT_EQ(c.next(k * 0x10000), 1u);
    EXPECT_EQ(c.next(0), 2u);
    EXPECT_EQ(c.next(12345), 0u);
  }
}

// A call whose kernel throws while its iteration is traced never happened: the trace and the
// graph hold no record of it, and the iteration goes on to give eager's results.
TEST(CoExec, CallThatThrowsLeavesNoRecord) {
  namespace tr = terra;
  auto run = [](bool coexec) {
    tr::manual_seed(5);
    tr::nn::Linear lin(4, 4);
    tr::optim::SGD opt(lin->parameters(), {.lr = 0.1});
    tr::Engine engine(tr::EngineOptions{.coexecute = coexec});
    std::vector<float> losses;
    int caught = 0;
    for (int i = 0; i < 20; ++i) {
      auto it = engine.iteration();
      tr::Tensor x = tr::randn({3, 4});
      if (i < 3) {  // the eager and traced iterations: an out-of-range index fails in its kernel
        try {
          tr::Tensor bad = tr::index_select(x, 0, tr::tensor(std::vector<int64_t>{7}, {1}));
        } catch (const tr::Error&) {
          ++caught;
        }
      }
      tr::Tensor y = lin(x);
      tr::Tensor loss = (y * y).mean();
      opt.zero_grad();
      loss.backward();
      opt.step();
      losses.push_back(loss.item<float>());
    }
    EXPECT_EQ(caught, 3);
    return std::pair{losses, engine.stats()};
  };
  auto [eager, es] = run(false);
  auto [co, cs] = run(true);
  EXPECT_EQ(eager, co);
  std::cout << cs << "\n";
  EXPECT_EQ(cs.traced, 2);
  EXPECT_EQ(cs.fallbacks, 0);  // a leftover record of the failed call would not match
  EXPECT_EQ(cs.coexecuted, 17);
}

TEST(CoExec, DumpsAndTimeline) {
  namespace tr = terra;
  tr::Engine engine(tr::EngineOptions{.timeline = true});
  tr::Tensor w = tr::randn({4, 4}).set_requires_grad();
  for (int i = 0; i < 6; ++i) {
    auto it = engine.iteration();
    tr::Tensor loss = tr::matmul(tr::randn({2, 4}), w).relu().sum();
    loss.backward();
    tr::NoGradGuard ng;
    w.sub_(w.grad() * 0.1);
    w.mutable_grad().zero_();
  }
  engine.synchronize();
  auto j = tr::io::to_json(engine);
  ASSERT_EQ(j["graphs"].size(), 1u);
  EXPECT_GE(j["graphs"][0]["blocks"].size(), 1u);
  std::string dump = j.dump();
  for (const char* op : {"matmul", "relu", "sum"}) EXPECT_NE(dump.find(op), std::string::npos) << op;
  EXPECT_EQ(j["stats"]["coexecuted"], 3);
  std::string dot = tr::io::to_dot(engine.graphs().begin()->second.graph);
  EXPECT_NE(dot.find("digraph"), std::string::npos);
  EXPECT_NE(dot.find("matmul"), std::string::npos);
  auto tl = tr::io::timeline_json(engine);
  int runner = 0, host = 0;
  for (auto& e : tl["traceEvents"]) {
    if (e["ph"] != "X") continue;
    (e["tid"] == 1 ? runner : host)++;
  }
  EXPECT_EQ(host, 6);
  EXPECT_GE(runner, 3);
}

// Regression: reaching max_specializations at a location used to leave an empty successor
// block behind; the next co-executed iteration that looked through that block's successors
// read node 0 of the empty block (a crash). Found by the sdpoint paper program.
progs::Outcome many_shapes(bool engine) {
  progs::Outcome o;
  progs::loop(12, engine, o, [&](int step) {
    terra::Tensor a = terra::ones({4}) * 2.0;  // the same every iteration
    int64_t n = 1 + step % 6;                  // a new shape at one place, 6 of them
    terra::Tensor b = a.sum() + terra::ones({n}).sum();
    o.fetched.push_back(b.item<double>());
  }, {.max_specializations = 2});
  return o;
}

TEST(CoExec, SpecializationLimitLeavesNoEmptyBlock) {
  auto e = many_shapes(false), c = many_shapes(true);
  expect_same(e, c);
  std::cout << c.stats << "\n";
  EXPECT_EQ(c.stats.iterations, 12);
  bool limited = false;
  for (auto& [why, n] : c.stats.reasons) limited |= why.find("specialization limit") != std::string::npos;
  EXPECT_TRUE(limited);
}

}  // namespace

// An op whose shape rule reads scalar values (arange's length comes from its bounds) is never
// answered from the node it matches structurally: the length changes with the bounds.
TEST(CoExec, ScalarShapedOpsTakeTheFullPath) {
  namespace tr = terra;
  auto run = [](bool use_engine) {
    std::vector<double> got;
    tr::Engine engine;
    for (int i = 0; i < 30; ++i) {
      auto body = [&] {
        double n = double(2 + (i / 5) % 3);  // 2, 3 or 4 elements, five steps each
        tr::Tensor a = tr::arange(0.0, n);     // the block's first node
        got.push_back(double(a.numel()));
        got.push_back((a * 2.0).sum().item<double>());
      };
      if (use_engine) {
        auto it = engine.iteration();
        body();
      } else {
        body();
      }
    }
    return std::pair{got, engine.stats()};
  };
  auto [want, none] = run(false);
  auto [got, s] = run(true);
  EXPECT_EQ(got, want);
  EXPECT_GE(s.coexecuted, 15) << s;
}

// A scalar a shape rule checks (dropout's p) is still checked at the call when co-executed:
// a bad value throws there, naming the op, as it does eagerly.
TEST(CoExec, ScalarChecksStillRunAtTheCall) {
  namespace tr = terra;
  tr::Engine engine;
  tr::Tensor x = tr::ones({16});
  for (int i = 0; i < 8; ++i) {
    auto it = engine.iteration();
    double p = i == 6 ? 1.5 : 0.25;
    if (i == 6) {
      try {
        (void)tr::dropout(x, p, true);
        ADD_FAILURE() << "dropout with p = 1.5 did not throw";
      } catch (const tr::Error& e) {
        EXPECT_NE(std::string(e.what()).find("dropout"), std::string::npos) << e.what();
      }
      continue;
    }
    EXPECT_EQ(tr::dropout(x, p, true).numel(), 16);
  }
  EXPECT_GE(engine.stats().coexecuted, 3) << engine.stats();
}

// Value-sized results: masked_select over host-drawn masks, whose number of true elements
// changes nearly every step (and is 0 every 7th, another path). The masked_select nodes and
// what is computed from their results become dynamic (shapes are each run's) instead of one
// specialization per size, which the graph could not hold: co-executed from the first few
// iterations on, bit for bit. Reading a mask the host built (masked_select reads it to size
// its result; the program reads one again after the ops that use it) waits for no run and
// ends no block, so a step is about one run, not one per read.
TEST(CoExec, ValueSizedResultsMakeDynamicNodes) {
  auto e = progs::masked_losses(false), c = progs::masked_losses(true);
  expect_same(e, c);
  expect_mostly_coexecuted(c.stats, 200, 8, 185);
  EXPECT_GT(c.stats.dynamic_nodes, 0);
  EXPECT_LT(c.stats.dynamic_nodes, c.stats.nodes / 2);
  // Blocks: the step up to the branch on count > 0, the mse term, the rest. A step passes
  // three or two of them, and every 4th step's loss read launches once more. Were the mask
  // reads block ends (as reads of values the iteration made are), a step would be 5 runs.
  // (Streamed launches, cut where the runner was idle, are not block ends.)
  EXPECT_LE(c.stats.blocks, 4);
  EXPECT_LE(c.stats.launches - c.stats.streamed, 3 * c.stats.iterations + c.stats.iterations / 4);
  // Without dynamic nodes every size is a new specialization: most steps fall back.
  terra::EngineOptions off;
  off.dynamic_nodes = false;
  off.backoff_after = 0;
  auto s = progs::masked_losses(true, 200, off);
  expect_same(e, s);
  EXPECT_GT(s.stats.fallbacks, 100) << s.stats;
  EXPECT_EQ(s.stats.dynamic_nodes, 0);
}

// A host write to memory that a launched or pending run reads still waits for that run (host
// reads need not): the run sees the values the ops were called with, as eager execution does.
// An op that writes a feed in place makes a later read wait for it.
TEST(CoExec, HostWritesWaitForRunsThatReadTheMemory) {
  namespace tr = terra;
  auto run = [](bool use_engine) {
    std::vector<float> got;
    tr::Engine engine;
    tr::Tensor w = tr::ones({3});
    for (int i = 0; i < 12; ++i) {
      auto body = [&] {
        tr::Tensor x = tr::tensor(std::vector<float>{1.f + float(i), 2.f, 3.f}, {3});
        tr::Tensor y = x * 2.0 + w;
        got.push_back(x.to_vector<float>()[0]);  // a read of the feed: goes ahead
        x.data_ptr<float>()[0] = 100.f;           // a write: waits for the run that reads x
        tr::Tensor z = tr::tensor(std::vector<float>{5.f, 6.f, 7.f}, {3});
        tr::Tensor s = z + 1.0;
        z.add_(1.0);
        for (float v : z.to_vector<float>()) got.push_back(v);
        for (float v : y.to_vector<float>()) got.push_back(v);
        for (float v : s.to_vector<float>()) got.push_back(v);
        got.push_back(x.to_vector<float>()[0]);
        w.add_(0.5);
      };
      if (use_engine) {
        auto it = engine.iteration();
        body();
      } else {
        body();
      }
    }
    engine.synchronize();
    return std::pair{got, engine.stats()};
  };
  auto [want, none] = run(false);
  auto [got, s] = run(true);
  EXPECT_EQ(got, want);
  ASSERT_EQ(want.size(), 12u * 11);
  EXPECT_EQ(want[1], 6.f);   // z after add_
  EXPECT_EQ(want[4], 3.f);   // y[0] = 1 * 2 + 1
  EXPECT_EQ(want[10], 100.f);
  EXPECT_GE(s.coexecuted, 6) << s;
}

// A read that waits while the runner still executes the previous step (a long tail after the
// read: eight layers, their backward and SGD) makes the rest of the step stream: the ops the
// host records after the read are launched in pieces to the idle runner instead of in one run
// at the step's end. The results stay eager's, streaming or not.
TEST(CoExec, StreamsTheRestOfAStepAfterAReadThatWaits) {
  namespace tr = terra;
  namespace nn = terra::nn;
  auto run = [](bool use_engine, int stream_after) {
    tr::thread_manual_seed(21);
    progs::Outcome o;
    std::vector<nn::Linear> layers;
    std::vector<tr::Tensor> params;
    for (int i = 0; i < 8; ++i) {
      layers.push_back(nn::Linear(96, 96));
      for (auto& p : layers.back()->parameters()) params.push_back(p);
    }
    tr::optim::SGD opt(params, {.lr = 0.01, .momentum = 0.9});
    std::mt19937 rng(22);
    tr::EngineOptions opts;
    opts.stream_after = stream_after;
    progs::loop(
        40, use_engine, o,
        [&](int) {
          tr::Tensor x = progs::host_batch(rng, 48, 96);
          tr::Tensor gate = (layers[0](x) * x).mean();  // needs the last step's update
          double g = gate.item<double>();               // the read
          o.fetched.push_back(g);
          o.decisions.push_back(g > 0);
          tr::Tensor h = x;
          for (auto& l : layers) h = tr::tanh(l(h));
          tr::Tensor loss = (h * h).mean() * (g > 0 ? 1.0 : 0.5);
          opt.zero_grad();
          loss.backward();
          opt.step();
        },
        opts);
    progs::collect(o, params);
    return o;
  };
  progs::Outcome eager = run(false, 16), streamed = run(true, 16), whole = run(true, 0);
  expect_same(eager, streamed);
  expect_same(eager, whole);
  std::cout << streamed.stats << "\n" << whole.stats << "\n";
  EXPECT_GE(streamed.stats.coexecuted, 35);
  EXPECT_GE(whole.stats.coexecuted, 35);
  EXPECT_EQ(whole.stats.streamed, 0);
  // About 100 ops follow the read each step, and the host reaches the next read after five
  // ops of the next step, while the runner still has the last step's hundred: timing decides
  // how many pieces a step is cut into, not whether any is.
  EXPECT_GT(streamed.stats.streamed, 0);
  EXPECT_GT(streamed.stats.launches, whole.stats.launches);
}

// conv -> batch_norm -> relu training steps under the engine: the compiled forward runs the
// first relu inside its batch_norm (graph::Plan::epilogue; autograd's running-statistics
// update sits between the two), and parameters, running statistics and losses stay eager's
// bits.
TEST(CoExec, BatchNormReluEpilogueKeepsEagerBits) {
  namespace tr = terra;
  namespace nn = terra::nn;
  auto run = [](bool use_engine, int* epilogues) {
    tr::thread_manual_seed(31);
    progs::Outcome o;
    nn::Conv2d c1(3, 6, 3), c2(6, 4, 3);
    nn::BatchNorm2d b1(6), b2(4);
    std::vector<tr::Tensor> params;
    for (nn::Module* m : std::initializer_list<nn::Module*>{c1.get(), c2.get(), b1.get(), b2.get()})
      for (auto& p : m->parameters()) params.push_back(p);
    tr::optim::SGD opt(params, {.lr = 0.05, .momentum = 0.9});
    std::mt19937 rng(32);
    tr::Engine engine;
    for (int i = 0; i < 30; ++i) {
      auto body = [&] {
        tr::Tensor x = progs::host_batch(rng, 4 * 3, 10 * 10).view({4, 3, 10, 10});
        tr::Tensor h = tr::relu(b2(c2(tr::relu(b1(c1(x))))));
        tr::Tensor loss = (h * h).mean();
        opt.zero_grad();
        loss.backward();
        opt.step();
        if (i % 5 == 0) o.fetched.push_back(loss.item<double>());
      };
      if (use_engine) {
        auto it = engine.iteration();
        body();
      } else {
        body();
      }
    }
    engine.synchronize();
    o.stats = engine.stats();
    for (nn::Module* m : {static_cast<nn::Module*>(b1.get()), static_cast<nn::Module*>(b2.get())})
      for (auto& [name, t] : m->named_buffers()) params.push_back(t);
    progs::collect(o, params);
    if (epilogues) {
      *epilogues = 0;
      nlohmann::json j = tr::io::to_json(engine);
      for (const auto& g : j["graphs"])
        for (const auto& pl : g["plans"])
          for (const auto& n : pl["plan"]["nodes"]) *epilogues += n["epilogue"].get<int>() >= 0;
    }
    return o;
  };
  int epilogues = 0;
  progs::Outcome eager = run(false, nullptr), co = run(true, &epilogues);
  expect_same(eager, co);
  EXPECT_GE(co.stats.coexecuted, 25) << co.stats;
  // The first relu only: the second is fused into an elementwise chain with the loss's h * h.
  EXPECT_GE(epilogues, 1);
}
