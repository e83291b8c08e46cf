// tests/graph/test_passes.cpp: the block passes and the CPU executor. Every program is built by
// running its ops eagerly through dispatch (the reference) while recording them as a BlockIr;
// the compiled plan must then give bit-identical results under every choice of storage and
// range, and the passes must take the decisions the program was written to provoke.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <unordered_map>

#include <terra/terra.hpp>
#include <terra/exec/cpu_executor.hpp>
#include <terra/io/graph_dump.hpp>

#include "op_test.hpp"

namespace {

using namespace terra;
using graph::BlockIr;
using graph::Plan;
using graph::ValueRef;

// ---- a test-local recorder: eager dispatch plus one IrNode per call ----
struct Builder {
  bool recording = true;
  BlockIr ir;
  std::unordered_map<const Storage*, int32_t> buf_of;
  std::vector<int32_t> ext_bufs;  // per ext() call, in order
  std::vector<Tensor> held;       // values the host reads after the block

  void ext(const Tensor& t) {
    if (!recording) return;
    int32_t b = int32_t(ir.bufs.size());
    ir.bufs.push_back({.external = true, .nbytes = int64_t(t.storage()->nbytes())});
    buf_of[t.storage().get()] = b;
    ext_bufs.push_back(b);
  }
  ValueRef ref(const Tensor& t) const {
    return {buf_of.at(t.storage().get()), t.shape(), t.strides(), t.storage_offset(), t.dtype()};
  }
  OutList call(Op op, std::vector<Tensor> ins, Attrs a = {}, Tensor* out = nullptr) {
    OutList r = dispatch({.op = op, .inputs = {ins.data(), ins.size()}, .attrs = a, .out = out});
    if (!recording) return r;
    graph::IrNode node{.op = op, .attrs = a, .inplace = out != nullptr};
    for (const Tensor& t : ins) node.ins.push_back(ref(t));
    for (const Tensor& t : r) {
      int8_t alias = -1;
      for (size_t i = 0; i < ins.size(); ++i)
        if (ins[i].storage() == t.storage()) alias = int8_t(i);
      if (out == nullptr && alias < 0) {
        buf_of[t.storage().get()] = int32_t(ir.bufs.size());
        ir.bufs.push_back({.nbytes = int64_t(t.storage()->nbytes()),
                           .producer = int32_t(ir.nodes.size())});
      }
      node.outs.push_back(ref(t));
      node.out_alias.push_back(out ? int8_t(-1) : alias);
    }
    ir.nodes.push_back(std::move(node));
    return r;
  }
  Tensor un(Op op, const Tensor& x, Attrs a = {}) { return call(op, {x}, a)[0]; }
  Tensor bin(Op op, const Tensor& x, const Tensor& y) { return call(op, {x, y})[0]; }
  Tensor scal(Op op, const Tensor& x, double s, bool left = false, bool integral = false) {
    Attrs a;
    a.scalars = {s};
    a.ints = {left, integral};
    return call(op, {x}, a)[0];
  }
  void bin_(Op op, Tensor& dst, const Tensor& y) { call(op, {dst, y}, {}, &dst); }
  void scal_(Op op, Tensor& dst, double s) {
    Attrs a;
    a.scalars = {s};
    a.ints = {0, 0};
    call(op, {dst}, a, &dst);
  }
  Tensor ints(Op op, const Tensor& x, SmallVector<int64_t, 8> v) {
    Attrs a;
    a.ints = std::move(v);
    return call(op, {x}, a)[0];
  }
  Tensor sum(const Tensor& x) { return ints(Op::Sum, x, {0}); }  // no dims, keepdim=0
  Tensor t(const Tensor& x) { return ints(Op::Permute, x, {1, 0}); }
  Tensor cast(const Tensor& x, DType dt) {
    Attrs a;
    a.dtype = dt;
    return un(Op::Copy, x, a);
  }
  void hold(const Tensor& x) { held.push_back(x); }
};

using Inputs = std::vector<Tensor>;
using Program = std::function<void(Builder&, Inputs&)>;
using MakeInputs = std::function<Inputs()>;

enum class Mode { kHeldOnly, kAllInternal, kSplit, kTracedAttrs };

std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  auto* p = static_cast<const uint8_t*>(c.raw_data());
  return {p, p + c.nbytes()};
}

struct Recorded {
  std::shared_ptr<const Plan> plan;
  std::vector<int32_t> ext_bufs;
  std::vector<ValueRef> held;
};

Recorded record(const Program& prog, const MakeInputs& make) {
  Builder b;
  Inputs in = make();
  prog(b, in);
  Recorded r;
  for (const Tensor& t : b.held) r.held.push_back(b.ref(t));
  r.ext_bufs = b.ext_bufs;
  r.plan = std::make_shared<const Plan>(graph::compile(std::move(b.ir)));
  return r;
}

// One run of a recorded plan on inputs `got` (ranges [0, split) then [split, n) in kSplit
// mode); returns the held values.
std::vector<Tensor> run_plan(exec::CpuExecutor& ex, const Recorded& rec, Inputs& got, Mode mode,
                             int32_t split = -1) {
  const Plan& plan = *rec.plan;
  int32_t n = int32_t(plan.ir.nodes.size());
  std::vector<Attrs> attrs;
  for (const auto& node : plan.ir.nodes) attrs.push_back(node.attrs);
  std::vector<Ref<Storage>> st(plan.ir.bufs.size());
  for (size_t i = 0; i < rec.ext_bufs.size(); ++i) st[rec.ext_bufs[i]] = got[i].storage();
  for (size_t b = 0; b < st.size(); ++b)
    if (!plan.ir.bufs[b].external && mode == Mode::kAllInternal)
      st[b] = Storage::allocate(size_t(plan.ir.bufs[b].nbytes), Device::cpu());
  for (const ValueRef& h : rec.held)
    if (!st[h.buf]) st[h.buf] = Storage::allocate(size_t(plan.ir.bufs[h.buf].nbytes), Device::cpu());
  std::span<const Ref<Storage>> sp(st);
  std::span<const Attrs> at(attrs);
  if (mode == Mode::kSplit) {
    int32_t k = split >= 0 ? split : n / 2;
    ex.run({.begin = 0, .end = k, .attrs = at.subspan(0, k), .storage = sp});
    ex.run({.begin = k, .end = n, .attrs = at.subspan(k), .storage = sp});
  } else {
    ex.run({.begin = 0, .end = n, .attrs = mode == Mode::kTracedAttrs ? at : at.subspan(0, 0),
            .storage = sp});
  }
  std::vector<Tensor> held;
  for (const ValueRef& h : rec.held)
    held.push_back(Tensor::from_storage(st[h.buf], h.shape, h.strides, h.offset, h.dtype));
  return held;
}

void expect_same_held(const std::vector<Tensor>& got, const std::vector<Tensor>& want, int it) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(bytes_of(got[i]), bytes_of(want[i])) << "held value " << i << ", iteration " << it;
}

// Runs `iters` iterations eagerly and through the plan; every held value of every iteration
// and every input's final bytes must match exactly.
void expect_identical(const Program& prog, const MakeInputs& make, Mode mode, int iters = 2,
                      int32_t split = -1, int64_t tile = 4096) {
  Recorded rec = record(prog, make);
  Inputs ref = make(), got = make();
  exec::CpuExecutor ex(rec.plan, tile);
  for (int it = 0; it < iters; ++it) {
    Builder eager;
    eager.recording = false;
    prog(eager, ref);
    expect_same_held(run_plan(ex, rec, got, mode, split), eager.held, it);
  }
  for (size_t i = 0; i < ref.size(); ++i)
    EXPECT_EQ(bytes_of(got[i]), bytes_of(ref[i])) << "input " << i;
}

void expect_identical_all_modes(const Program& prog, const MakeInputs& make, int iters = 2) {
  int32_t n = int32_t(record(prog, make).plan->ir.nodes.size());
  for (Mode m : {Mode::kHeldOnly, Mode::kAllInternal, Mode::kTracedAttrs})
    for (int64_t tile : {4096, 7, 1}) {
      SCOPED_TRACE("mode " + std::to_string(int(m)) + ", tile " + std::to_string(tile));
      expect_identical(prog, make, m, iters, -1, tile);
    }
  for (int32_t k : {1, n / 3, n / 2, n - 1}) {
    SCOPED_TRACE("split at " + std::to_string(k));
    expect_identical(prog, make, Mode::kSplit, iters, k, 7);
  }
}

std::vector<std::vector<int32_t>> fused_steps(const Plan& p) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& s : p.steps)
    if (s.fused) out.emplace_back(s.nodes.begin(), s.nodes.end());
  return out;
}

// ---- programs ----

// relu(x * w + b).sum() with broadcast w [33] and b [64, 1].
void mlp_chain(Builder& b, Inputs& in) {
  for (auto& t : in) b.ext(t);
  Tensor y = b.bin(Op::Mul, in[0], in[1]);
  Tensor z = b.bin(Op::Add, y, in[2]);
  Tensor r = b.un(Op::Relu, z);
  b.hold(b.sum(r));
}
Inputs mlp_inputs() {
  return {tt::random({64, 33}, DType::Float32, 1), tt::random({33}, DType::Float32, 2),
          tt::random({64, 1}, DType::Float32, 3)};
}

TEST(GraphPasses, ChainFusesAndMatchesEager) {
  Plan p = *record(mlp_chain, mlp_inputs).plan;
  EXPECT_EQ(fused_steps(p), (std::vector<std::vector<int32_t>>{{0, 1, 2}}));
  EXPECT_EQ(p.steps.size(), 2u);
  expect_identical_all_modes(mlp_chain, mlp_inputs);
}

// Transposed and strided external inputs, a scalar on the left, then a transposed view of
// the chain's result read by a second chain.
void strided_chain(Builder& b, Inputs& in) {
  for (auto& t : in) b.ext(t);
  Tensor x = b.t(in[0]);                              // [40, 50] transposed
  Tensor w = b.ints(Op::Slice, in[1], {1, 0, 100, 2});  // [40, 50] stride 2
  Tensor y = b.un(Op::Exp, x);
  Tensor z = b.bin(Op::Mul, y, w);
  Tensor z2 = b.scal(Op::Sub, z, 1.5, /*left=*/true);
  Tensor z3 = b.un(Op::Tanh, z2);
  b.hold(z3);
  Tensor q = b.scal(Op::Add, b.t(z3), 1.0);
  b.hold(b.un(Op::Sigmoid, q));
}
Inputs strided_inputs() {
  return {tt::random({50, 40}, DType::Float32, 4), tt::random({40, 100}, DType::Float32, 5)};
}

TEST(GraphPasses, StridedInputsAndViewsOfIntermediates) {
  Plan p = *record(strided_chain, strided_inputs).plan;
  // exp..tanh fuse; the transposed read of tanh's result starts a new chain.
  EXPECT_EQ(fused_steps(p), (std::vector<std::vector<int32_t>>{{2, 3, 4, 5}, {7, 8}}));
  auto inter = graph::fused_intermediates(p);
  size_t nfused = 0;
  for (size_t s = 0; s < p.steps.size(); ++s)
    if (p.steps[s].fused) {
      // exp, mul, sub may stay in scratch (tanh's result is read through a view outside);
      // add and sigmoid too (nothing in the block reads sigmoid's result).
      EXPECT_EQ(inter[s].size(), nfused == 0 ? 3u : 2u);
      ++nfused;
    }
  expect_identical_all_modes(strided_chain, strided_inputs);
}

// Adam-like update, in place on parameters and state, with a transposed gradient.
void adam(Builder& b, Inputs& in) {
  for (auto& t : in) b.ext(t);
  Tensor &p = in[0], &m = in[2], &v = in[3];
  Tensor g = b.t(in[1]);
  b.scal_(Op::Mul, m, 0.9);
  b.bin_(Op::Add, m, b.scal(Op::Mul, g, 0.1));
  b.scal_(Op::Mul, v, 0.999);
  b.bin_(Op::Add, v, b.scal(Op::Mul, b.bin(Op::Mul, g, g), 0.001));
  Tensor d = b.scal(Op::Add, b.scal(Op::Div, b.un(Op::Sqrt, v), 0.7), 1e-8);
  b.bin_(Op::Add, p, b.scal(Op::Mul, b.bin(Op::Div, m, d), -1e-3));
}
MakeInputs adam_inputs(DType dt, Shape s) {
  return [dt, s] {
    Shape st{s[1], s[0]};
    return Inputs{tt::random(s, dt, 6), tt::random(st, dt, 7), tt::random(s, dt, 8),
                  tt::random(s, dt, 9, 0.0, 1.0)};
  };
}

TEST(GraphPasses, OptimizerUpdateFusesInPlace) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    auto make = adam_inputs(dt, {37, 29});
    Plan p = *record(adam, make).plan;
    ASSERT_EQ(fused_steps(p).size(), 1u);
    EXPECT_EQ(fused_steps(p)[0].size(), p.ir.nodes.size() - 1);  // all but the transpose
    for (uint8_t d : p.dead) EXPECT_EQ(d, 0);
    expect_identical_all_modes(adam, make, 3);
  }
  // Big enough for many tiles, run in parallel.
  expect_identical(adam, adam_inputs(DType::Float32, {300, 517}), Mode::kHeldOnly, 2);
}

// A dead branch, a duplicated computation, and one that must not be merged because its input
// changed in place in between.
void dead_and_dup(Builder& b, Inputs& in) {
  for (auto& t : in) b.ext(t);
  Tensor a = b.bin(Op::Mul, in[0], in[1]);   // 0
  Tensor dup = b.bin(Op::Mul, in[0], in[1]);  // 1: same as 0
  Tensor e = b.un(Op::Exp, a);                // 2: dead
  b.scal(Op::Mul, e, 2.0);                    // 3: dead
  Tensor s = b.bin(Op::Add, a, dup);          // 4
  b.call(Op::Copy, {s}, {}, &in[2]);          // 5: out.copy_(s)
  b.scal_(Op::Add, in[0], 1.0);               // 6: x += 1
  Tensor c = b.bin(Op::Mul, in[0], in[1]);    // 7: not the same as 0
  b.bin_(Op::Add, in[2], c);                  // 8
}
Inputs dead_inputs() {
  return {tt::random({5, 7}, DType::Float32, 10), tt::random({7}, DType::Float32, 11),
          tt::random({5, 7}, DType::Float32, 12)};
}

TEST(GraphPasses, DeadCodeAndCommonSubexpressions) {
  auto rec = record(dead_and_dup, dead_inputs);
  const Plan& p = *rec.plan;
  EXPECT_EQ(p.dead, (std::vector<uint8_t>{0, 0, 1, 1, 0, 0, 0, 0, 0}));
  EXPECT_EQ(p.same_as, (std::vector<int32_t>{-1, 0, -1, -1, -1, -1, -1, -1, -1}));
  expect_identical_all_modes(dead_and_dup, dead_inputs);

  exec::CpuExecutor ex(rec.plan);
  Inputs in = dead_inputs();
  std::vector<Ref<Storage>> st(p.ir.bufs.size());
  for (size_t i = 0; i < in.size(); ++i) st[rec.ext_bufs[i]] = in[i].storage();
  ex.run({.begin = 0, .end = 9, .storage = st});
  EXPECT_EQ(ex.last_stats().skipped, 2);
  EXPECT_EQ(ex.last_stats().shared, 1);
  // The host holds the dead branch's result: it runs, and so does its producer.
  int32_t dead_out = p.ir.nodes[3].outs[0].buf, dup_out = p.ir.nodes[1].outs[0].buf;
  st[dead_out] = Storage::allocate(size_t(p.ir.bufs[dead_out].nbytes), Device::cpu());
  st[dup_out] = Storage::allocate(size_t(p.ir.bufs[dup_out].nbytes), Device::cpu());
  ex.run({.begin = 0, .end = 9, .storage = st});
  EXPECT_EQ(ex.last_stats().skipped, 0);
  EXPECT_EQ(ex.last_stats().shared, 0);
  // Different scalars this run: the two muls stop being the same computation.
  std::vector<Attrs> attrs;
  for (const auto& node : p.ir.nodes) attrs.push_back(node.attrs);
  st[dead_out] = st[dup_out] = {};
  ex.run({.begin = 0, .end = 9, .attrs = attrs, .storage = st});
  EXPECT_EQ(ex.last_stats().shared, 1);
  attrs[1].scalars = {3.0};
  ex.run({.begin = 0, .end = 9, .attrs = attrs, .storage = st});
  EXPECT_EQ(ex.last_stats().shared, 0);
}

// Integer and float64 chains with casts, a scalar on an int, and a comparison.
void int_chain(Builder& b, Inputs& in) {
  for (auto& t : in) b.ext(t);
  Tensor a = b.bin(Op::Mul, in[0], in[1]);                  // int32
  Tensor c = b.scal(Op::Add, a, 3.0, false, /*integral=*/true);
  Tensor d = b.bin(Op::Mul, b.cast(c, DType::Int64), in[2]);  // int64
  Tensor e = b.scal(Op::Maximum, d, 0.0, false, true);
  b.hold(e);
  Tensor f = b.bin(Op::Div, b.cast(e, DType::Float64), in[3]);  // float64
  Tensor g = b.bin(Op::Lt, f, in[3]);
  b.hold(b.call(Op::Where, {g, f, in[3]})[0]);
}
Inputs int_inputs() {
  return {tt::random({6, 9}, DType::Int32, 13, -9, 9), tt::random({9}, DType::Int32, 14, -9, 9),
          tt::random({6, 1}, DType::Int64, 15, -9, 9), tt::random({6, 9}, DType::Float64, 16, 0.5, 3)};
}

TEST(GraphPasses, IntegerAndFloat64Chains) {
  Plan p = *record(int_chain, int_inputs).plan;
  ASSERT_EQ(fused_steps(p).size(), 1u);
  EXPECT_EQ(fused_steps(p)[0].size(), p.ir.nodes.size());
  expect_identical_all_modes(int_chain, int_inputs);
}

// In place into a slice of an intermediate, then a reduction and a matmul of it.
void inplace_internal(Builder& b, Inputs& in) {
  for (auto& t : in) b.ext(t);
  Tensor h = b.scal(Op::Mul, in[0], 1.0);
  Tensor hs = b.ints(Op::Slice, h, {0, 0, 2, 1});
  b.scal_(Op::Mul, hs, 3.0);
  b.hold(b.sum(h));
  b.hold(b.call(Op::MatMul, {h, in[1]})[0]);
}
Inputs inplace_inputs() {
  return {tt::random({4, 6}, DType::Float32, 17), tt::random({6, 3}, DType::Float32, 18)};
}

TEST(GraphPasses, InPlaceIntoViewOfIntermediate) {
  expect_identical_all_modes(inplace_internal, inplace_inputs);
}

// Reads of an in-place-written buffer at other positions (a transposed view made earlier):
// tiles would see other tiles' writes, so such nodes must not share a fused step.
void alias_hazards(Builder& b, Inputs& in) {
  for (auto& t : in) b.ext(t);
  Tensor pt = b.t(in[0]);                     // 0
  b.bin_(Op::Add, in[0], in[1]);              // 1: p += g
  Tensor q = b.scal(Op::Mul, pt, 2.0);        // 2: reads p transposed, after the write
  b.bin_(Op::Mul, in[0], q);                  // 3: p *= q
  Tensor r = b.un(Op::Neg, pt);               // 4: before the write below
  b.bin_(Op::Sub, in[0], r);                  // 5
  b.bin_(Op::Add, pt, in[1]);                 // 6: in place through the transposed view
}
Inputs alias_inputs() {
  return {tt::random({16, 16}, DType::Float32, 20), tt::random({16, 16}, DType::Float32, 21)};
}

TEST(GraphPasses, AliasingHazardsSplitChains) {
  Plan p = *record(alias_hazards, alias_inputs).plan;
  for (const auto& s : fused_steps(p))
    for (size_t i = 1; i < s.size(); ++i)
      EXPECT_FALSE((s[i - 1] == 1 && s[i] == 2) || (s[i - 1] == 4 && s[i] == 5) ||
                   (s[i - 1] == 5 && s[i] == 6))
          << s[i - 1] << " and " << s[i] << " fused";
  expect_identical_all_modes(alias_hazards, alias_inputs);
}

// A long chain: the arena reuses memory, so it is far smaller than all buffers together.
void long_chain(Builder& b, Inputs& in) {
  b.ext(in[0]);
  Tensor x = in[0];
  for (int i = 0; i < 20; ++i) x = b.un(i % 2 ? Op::Sin : Op::Cos, x);
  b.hold(x);
}
Inputs long_inputs() { return {tt::random({1000}, DType::Float32, 19)}; }

TEST(GraphPasses, ArenaReusesMemory) {
  Plan p = *record(long_chain, long_inputs).plan;
  int64_t total = 0;
  for (const auto& buf : p.ir.bufs)
    if (!buf.external) total += buf.nbytes;
  EXPECT_LT(p.arena_bytes * 5, total);
  for (size_t b = 0; b < p.ir.bufs.size(); ++b) {
    if (!p.ir.bufs[b].external) {
      EXPECT_EQ(p.arena_offset[b] % 64, 0);
    }
  }
  expect_identical_all_modes(long_chain, long_inputs);
}

// Executors sharing one arena, as an engine's plans do: runs of different plans alternate,
// the arena grows under an executor that already ran (it re-aims at the new memory), a plan
// run in two ranges keeps its values between them, and every result stays exact. No executor
// keeps memory alive after its run: neither the arena it outgrew nor its run's storages.
TEST(GraphPasses, ExecutorsShareAnArena) {
  auto arena = std::make_shared<exec::Arena>();
  MakeInputs small_in = long_inputs;
  MakeInputs big_in = [] { return Inputs{tt::random({50000}, DType::Float32, 23)}; };
  Recorded small = record(long_chain, small_in), big = record(long_chain, big_in);
  ASSERT_LT(small.plan->arena_bytes * 10, big.plan->arena_bytes);
  exec::CpuExecutor a(small.plan, exec::CpuExecutor::kTileElems, arena);
  exec::CpuExecutor b(big.plan, exec::CpuExecutor::kTileElems, arena);
  Inputs a_in = small_in(), b_in = big_in();
  auto eager = [](const MakeInputs& make) {
    Builder e;
    e.recording = false;
    Inputs in = make();
    long_chain(e, in);
    return e.held;
  };
  std::vector<Tensor> a_want = eager(small_in), b_want = eager(big_in);
  for (int it = 0; it < 3; ++it) {
    Ref<Storage> before = arena->mem;
    std::vector<Tensor> got = run_plan(a, small, a_in, Mode::kHeldOnly);
    expect_same_held(got, a_want, it);
    // Only the test holds its inputs and the held results now.
    EXPECT_EQ(a_in[0].storage()->use_count(), 1);
    for (const Tensor& t : got) EXPECT_EQ(t.storage()->use_count(), 1);
    if (it == 0) before = arena->mem;
    expect_same_held(run_plan(b, big, b_in, Mode::kSplit), b_want, it);  // grows it at it 0
    EXPECT_EQ(b_in[0].storage()->use_count(), 1);
    EXPECT_GE(arena->mem->nbytes(), size_t(big.plan->arena_bytes));
    // The memory b outgrew is held by this test alone: executor a does not keep it.
    if (it == 0) {
      EXPECT_EQ(before->use_count(), 1);
    }
  }
}

TEST(GraphPasses, DumpNamesOpsAndSteps) {
  Plan p = *record(strided_chain, strided_inputs).plan;
  auto j = io::to_json(p);
  EXPECT_EQ(j["nodes"][2]["op"], "exp");
  EXPECT_EQ(j["nodes"][0]["op"], "permute");
  EXPECT_TRUE(j["steps"][2]["fused"].get<bool>());
  EXPECT_TRUE(j["buffers"][0]["external"].get<bool>());
  std::string dot = io::to_dot(p);
  for (const char* s : {"digraph", "cluster_", "tanh", "sigmoid", "ellipse", "[40, 50]"})
    EXPECT_NE(dot.find(s), std::string::npos) << s;
}

// An index out of range at run time (bound anew each run) throws from run(), as eager does.
TEST(GraphPasses, KernelErrorSurfaces) {
  auto prog = [](Builder& b, Inputs& in) {
    for (auto& t : in) b.ext(t);
    Tensor y = b.un(Op::Exp, in[0]);
    b.hold(b.call(Op::IndexSelect, {y, in[1]}, [] { Attrs a; a.ints = {0}; return a; }())[0]);
  };
  auto make = [] { return Inputs{tt::random({4, 3}), terra::tensor(std::vector<double>{0.0, 2.0}, {2}).to(DType::Int64)}; };
  auto rec = record(prog, make);
  exec::CpuExecutor ex(rec.plan);
  Inputs in = make();
  std::vector<Ref<Storage>> st(rec.plan->ir.bufs.size());
  for (size_t i = 0; i < in.size(); ++i) st[rec.ext_bufs[i]] = in[i].storage();
  st[rec.held[0].buf] = Storage::allocate(size_t(rec.plan->ir.bufs[rec.held[0].buf].nbytes), Device::cpu());
  int32_t n = int32_t(rec.plan->ir.nodes.size());
  EXPECT_NO_THROW(ex.run({.begin = 0, .end = n, .storage = st}));
  in[1].data<int64_t>()[1] = 7;
  EXPECT_THROW(ex.run({.begin = 0, .end = n, .storage = st}), terra::Error);
  st[rec.ext_bufs[1]] = {};
  EXPECT_THROW(ex.run({.begin = 0, .end = n, .storage = st}), terra::Error);
}

// relu(batch_norm(x)) in training mode, with weight, bias and running statistics (which the
// kernel updates in place). between: ops on other values between the two (as autograd's
// update of the running statistics); also_read: a second node reads the batch_norm's output.
Program bn_relu(bool between, bool also_read) {
  return [between, also_read](Builder& b, Inputs& in) {
    for (auto& t : in) b.ext(t);
    Attrs a;
    a.ints = {1, 1, 1, 1, 1};
    a.scalars = {0.1, 1e-5};
    OutList o = b.call(Op::BatchNorm, {in[0], in[1], in[2], in[3], in[4]}, a);
    if (between) {
      Tensor m = b.scal(Op::Mul, o[1], 0.5);
      b.bin_(Op::Add, in[3], m);  // writes an input of the batch_norm after it ran
      b.hold(b.sum(in[0]));  // (a same-shaped elementwise op here would fuse with the relu)
    }
    Tensor z = b.un(Op::Relu, o[0]);
    b.hold(b.sum(z));
    b.hold(z);
    b.hold(o[2]);
    if (also_read) b.hold(b.sum(o[0]));
  };
}
MakeInputs bn_inputs(DType dt) {
  return [dt] {
    DType rs = dt == DType::Float64 ? dt : DType::Float32;  // running stats: updated in place
    return Inputs{tt::random({6, 5, 7, 3}, dt, 11), tt::random({5}, dt, 12), tt::random({5}, dt, 13),
                  tt::random({5}, rs, 14), tt::random({5}, rs, 15)};
  };
}

// A batch_norm whose output only a relu reads writes the relu's output in its own pass, with
// eager's bits (the running statistics and every other value too), also across ops between
// the two; where this run gives the batch_norm's output its own storage (the host holds it),
// or a run ends between them, they run apart. A second reader, or a 16-bit dtype, keeps them
// apart in the plan.
TEST(GraphPasses, BatchNormRunsAReluEpilogue) {
  for (DType dt : {DType::Float32, DType::Float64})
    for (bool between : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (between ? ", ops between" : ""));
      Recorded rec = record(bn_relu(between, false), bn_inputs(dt));
      const Plan& p = *rec.plan;
      int32_t relu = between ? 4 : 1;
      EXPECT_EQ(p.epilogue[0], relu);
      EXPECT_EQ(std::count(p.epilogue.begin(), p.epilogue.end(), -1), int64_t(p.ir.nodes.size()) - 1);
      expect_identical_all_modes(bn_relu(between, false), bn_inputs(dt), 3);
      exec::CpuExecutor ex(rec.plan);
      Inputs in = bn_inputs(dt)();
      run_plan(ex, rec, in, Mode::kHeldOnly);
      EXPECT_EQ(ex.last_stats().epilogues, 1);
      run_plan(ex, rec, in, Mode::kAllInternal);  // every buffer given: y is materialized
      EXPECT_EQ(ex.last_stats().epilogues, 0);
      run_plan(ex, rec, in, Mode::kSplit, relu);  // the relu in the second range
      EXPECT_EQ(ex.last_stats().epilogues, 0);
      EXPECT_EQ(io::to_json(p)["nodes"][0]["epilogue"], relu);
      EXPECT_NE(io::to_dot(p).find("+ relu n" + std::to_string(relu)), std::string::npos);
      // The relu's output is reserved from the batch_norm on: nothing between overlaps it.
      int32_t z = p.ir.nodes[size_t(relu)].outs[0].buf;
      for (int32_t k = 1; k < relu; ++k)
        for (const ValueRef& v : p.ir.nodes[size_t(k)].outs) {
          if (p.arena_offset[v.buf] < 0 || v.buf == z) continue;
          int64_t a0 = p.arena_offset[v.buf], a1 = a0 + p.ir.bufs[v.buf].nbytes;
          int64_t z0 = p.arena_offset[z], z1 = z0 + p.ir.bufs[z].nbytes;
          EXPECT_TRUE(a1 <= z0 || z1 <= a0) << "node " << k << " overlaps the relu's output";
        }
    }
  for (bool between : {false, true}) {
    Plan both = *record(bn_relu(between, true), bn_inputs(DType::Float32)).plan;
    EXPECT_EQ(both.epilogue[0], -1);
    expect_identical_all_modes(bn_relu(between, true), bn_inputs(DType::Float32));
  }
  Plan half = *record(bn_relu(false, false), bn_inputs(DType::BFloat16)).plan;
  EXPECT_EQ(half.epilogue[0], -1);
  expect_identical_all_modes(bn_relu(false, false), bn_inputs(DType::BFloat16));
}

}  // namespace

namespace {
// Device buffers are planned in their device's own arena, and device nodes never fuse (a
// kernel per tile and member would cost a launch each). Compiling needs no device.
TEST(GraphPasses, DeviceBuffersGetTheirOwnArenaAndNoFusion) {
  const Device dev = Device::cuda();
  auto v = [](int32_t b, Device d) { return ValueRef{b, {64}, {1}, 0, DType::Float32, d}; };
  BlockIr ir;
  ir.bufs = {{.external = true, .nbytes = 256},
             {.external = true, .nbytes = 256, .device = dev},
             {.nbytes = 256, .producer = 0},
             {.nbytes = 256, .producer = 1},
             {.nbytes = 256, .producer = 2, .device = dev},
             {.nbytes = 256, .producer = 3, .device = dev}};
  auto node = [](Op op, ValueRef in, ValueRef out) {
    return graph::IrNode{.op = op, .ins = {in}, .outs = {out}, .out_alias = {-1}};
  };
  ir.nodes = {node(Op::Relu, v(0, Device::cpu()), v(2, Device::cpu())),
              node(Op::Neg, v(2, Device::cpu()), v(3, Device::cpu())),
              node(Op::Relu, v(1, dev), v(4, dev)), node(Op::Neg, v(4, dev), v(5, dev))};
  Plan p = graph::compile(ir);
  EXPECT_EQ(p.devices, std::vector<Device>{dev});
  ASSERT_EQ(p.steps.size(), 3u);
  EXPECT_TRUE(p.steps[0].fused);  // the CPU chain
  EXPECT_EQ(p.steps[0].nodes.size(), 2u);
  EXPECT_FALSE(p.steps[1].fused);
  EXPECT_FALSE(p.steps[2].fused);
  ASSERT_EQ(p.device_arenas.size(), 1u);
  EXPECT_EQ(p.device_arenas[0].first, dev);
  // Buffer 4 is live while 5 is written: two slots on the device, none of them on the CPU's.
  EXPECT_EQ(p.device_arenas[0].second, 512);
  EXPECT_NE(p.arena_offset[4], p.arena_offset[5]);
  EXPECT_EQ(p.arena_bytes, 512);  // buffers 2 and 3 only
}
}  // namespace

// Dynamic nodes (value-sized results, IrNode::dynamic): never fused or shared by cse, and run
// on the views each run gives (RunArgs::views), in storage of the run's size, which may differ
// from the traced shapes. Traced on [64, 33], run on [10, 33].
TEST(GraphPasses, DynamicNodesRunOnTheRunsViews) {
  auto prog = [](Builder& b, Inputs& in) {
    for (auto& t : in) b.ext(t);
    Tensor y1 = b.bin(Op::Mul, in[0], in[1]);
    Tensor y2 = b.bin(Op::Mul, in[0], in[1]);  // the same computation: cse would share it
    Tensor r = b.un(Op::Relu, b.bin(Op::Add, y1, y2));
    b.hold(r);
    b.hold(b.sum(r));
  };
  auto make = [](int64_t rows) {
    return Inputs{tt::random({rows, 33}, DType::Float32, 21), tt::random({33}, DType::Float32, 22)};
  };
  Builder b;
  Inputs traced = make(64);
  prog(b, traced);
  for (graph::IrNode& n : b.ir.nodes) n.dynamic = true;
  for (graph::IrBuffer& buf : b.ir.bufs)
    if (!buf.external && buf.nbytes > 4) buf.dynamic = true;  // all but the sum's scalar
  auto plan = std::make_shared<const Plan>(graph::compile(b.ir));
  EXPECT_TRUE(fused_steps(*plan).empty());
  for (int32_t m : plan->same_as) EXPECT_EQ(m, -1);
  EXPECT_TRUE(io::to_json(*plan)["nodes"][0]["dynamic"].get<bool>());

  Inputs in = make(10);
  Builder eager;
  eager.recording = false;
  prog(eager, in);
  // The run's views: every [64, 33] of the trace is [10, 33] now.
  std::vector<std::pair<int32_t, graph::NodeViews>> views;
  auto now = [](ValueRef v) {
    if (!v.shape.empty() && v.shape[0] == 64) {
      v.shape[0] = 10;
      v.strides = contiguous_strides(v.shape);
    }
    return v;
  };
  for (int32_t n = 0; n < int32_t(plan->ir.nodes.size()); ++n) {
    graph::NodeViews nv;
    for (const ValueRef& v : plan->ir.nodes[n].ins) nv.ins.push_back(now(v));
    for (const ValueRef& v : plan->ir.nodes[n].outs) nv.outs.push_back(now(v));
    views.emplace_back(n, std::move(nv));
  }
  std::vector<Ref<Storage>> st(plan->ir.bufs.size());
  st[b.ext_bufs[0]] = in[0].storage();
  st[b.ext_bufs[1]] = in[1].storage();
  for (size_t k = 0; k < st.size(); ++k)
    if (plan->ir.bufs[k].dynamic) st[k] = Storage::allocate(10 * 33 * 4, Device::cpu());
  int32_t sum_buf = plan->ir.nodes.back().outs[0].buf;
  st[sum_buf] = Storage::allocate(4, Device::cpu());
  exec::CpuExecutor ex(plan);
  ex.run({.begin = 0, .end = int32_t(plan->ir.nodes.size()), .storage = st, .views = views});
  int32_t r_buf = plan->ir.nodes[3].outs[0].buf;
  EXPECT_EQ(bytes_of(Tensor::from_storage(st[r_buf], {10, 33}, {33, 1}, 0, DType::Float32)),
            bytes_of(eager.held[0]));
  EXPECT_EQ(bytes_of(Tensor::from_storage(st[sum_buf], {}, {}, 0, DType::Float32)),
            bytes_of(eager.held[1]));
  // Views larger than the memory bound this run, or naming the wrong number of operands, are
  // an error, not a read or write out of bounds.
  views[0].second.outs[0].shape[0] = 20;
  EXPECT_THROW(ex.run({.begin = 0, .end = 1, .storage = st, .views = views}), Error);
  views[0].second.outs[0].shape[0] = 10;
  views[0].second.ins.pop_back();
  EXPECT_THROW(ex.run({.begin = 0, .end = 1, .storage = st, .views = views}), Error);
}
