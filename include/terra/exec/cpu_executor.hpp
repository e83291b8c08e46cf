// terra/exec/cpu_executor.hpp: runs a compiled block (graph::Plan) on the CPU.
// A flat walk over the plan's steps in host order, calling the same kernels eager dispatch
// calls, on views of planned buffers: externals and buffers the host holds in the storage it
// gives, everything else in one arena allocated once. The passes' decisions (dead, same_as,
// fused) are applied only where this run's storage makes them safe.
#pragma once

#include <cstring>
#include <memory>
#include <numeric>

#include "terra/core/parallel.hpp"
#include "terra/graph/passes.hpp"
#include "terra/ops/dispatch.hpp"

namespace terra::exec {

struct RunArgs {
  int32_t begin = 0, end = 0;             // node range [begin, end) to run, host order
  std::span<const Attrs> attrs;           // per node n in [begin,end): attrs[n - begin], this
                                          // run's values; empty: the traced attrs
  std::span<const Ref<Storage>> storage;  // per buffer: externals: the bound storage; internal
                                          // buffers the host still holds: a storage with memory
                                          // of at least nbytes; others: empty (use the arena)
};

namespace detail {

// How a fused step cuts its output shape into tiles: dims after `dim` whole, `rows` indices of
// `dim` per tile, one tile per index of the dims before it. About `target` elements per tile
// (4096 by default: small enough that every member's kernel runs serially on a tile that stays
// in L1/L2, and below parallel_for's grain, so kernels do not fork per tile).
struct Tiling {
  Shape shape;
  int dim = -1;  // -1: a 0-d shape, one tile
  int64_t rows = 1, chunks = 1, count = 1, elems = 1;

  Tiling(const Shape& s, int64_t target) : shape(s) {
    if (s.empty()) return;
    int64_t inner = 1;
    dim = int(s.size()) - 1;
    while (dim > 0 && inner * s[dim] <= target) inner *= s[dim--];
    rows = std::clamp<int64_t>(target / inner, 1, std::max<int64_t>(s[dim], 1));
    chunks = (s[dim] + rows - 1) / rows;
    count = chunks;
    for (int j = 0; j < dim; ++j) count *= s[j];
    elems = rows * inner;
  }
  // Tile t: its shape, and the element offset of its first element under strides `st`.
  Shape tile_shape(int64_t t) const {
    if (dim < 0) return shape;
    Shape ts{std::min(rows, shape[dim] - (t % chunks) * rows)};
    for (size_t j = dim + 1; j < shape.size(); ++j) ts.push_back(shape[j]);
    return ts;
  }
  int64_t offset(int64_t t, const Strides& st) const {
    if (dim < 0) return 0;
    int64_t off = (t % chunks) * rows * st[dim];
    int64_t o = t / chunks;
    for (int j = dim - 1; j >= 0; --j) {
      off += (o % shape[j]) * st[j];
      o /= shape[j];
    }
    return off;
  }
  Strides tile_strides(const Strides& st) const {
    if (dim < 0) return st;
    return Strides(st.begin() + dim, st.end());
  }
};

// One operand of a fused member: a view broadcast to the step's shape, or a scratch slot.
struct FusedOperand {
  Tensor full;
  int slot = -1;
  DType dtype = DType::Float32;
};

struct FusedMember {
  Op op;
  const Attrs* attrs;
  SmallVector<FusedOperand, 3> ins;
  FusedOperand out;
  bool inplace = false;
  OutMeta meta;  // in-place members: the result's dtype (shape set per tile)
};

}  // namespace detail

// What the last run() did (for the engine's stats and for tests).
struct RunStats {
  int32_t ran = 0;      // nodes whose kernel ran (fused members included)
  int32_t skipped = 0;  // dead nodes not run
  int32_t shared = 0;   // nodes that read an earlier node's identical result instead
  int32_t fused = 0;    // fused steps run tile by tile
};

// One per compiled Plan; owns the arena. Not thread-safe: one runner thread calls run().
class CpuExecutor {
 public:
  // tile_elems: the size of a fused step's tiles (tests make it tiny to cut small tensors).
  explicit CpuExecutor(std::shared_ptr<const graph::Plan> plan, int64_t tile_elems = 4096)
      : plan_(std::move(plan)), tile_elems_(std::max<int64_t>(tile_elems, 1)) {
    const graph::Plan& p = *plan_;
    size_t nb = p.ir.bufs.size();
    arena_ = Storage::allocate(size_t(std::max<int64_t>(p.arena_bytes, 64)), Device::cpu());
    char* base = static_cast<char*>(arena_->data());
    arena_bufs_.resize(nb);
    for (size_t b = 0; b < nb; ++b)
      if (p.arena_offset[b] >= 0)
        arena_bufs_[b] = Storage::wrap(base + p.arena_offset[b], size_t(p.ir.bufs[b].nbytes),
                                       Device::cpu(), {});
    last_user_.assign(nb, -1);
    auto users = graph::buffer_users(p.ir);
    for (size_t b = 0; b < nb; ++b)
      if (!users[b].empty()) last_user_[b] = users[b].back();
    step_of_.resize(p.ir.nodes.size());
    for (size_t s = 0; s < p.steps.size(); ++s)
      for (int32_t n : p.steps[s].nodes) step_of_[n] = int32_t(s);
    scratch_ = graph::fused_intermediates(p);
    st_.resize(nb);
    bound_.resize(nb);
    given_.resize(nb);
    remap_.resize(nb);
  }

  const graph::Plan& plan() const { return *plan_; }
  const RunStats& last_stats() const { return stats_; }

  // Runs nodes [begin, end) in host order. Ranges of one block run in order ([0,k) then
  // [k,n)); values an earlier range wrote stay where it wrote them.
  void run(const RunArgs& a) {
    const graph::Plan& p = *plan_;
    int32_t n_nodes = int32_t(p.ir.nodes.size());
    TERRA_CHECK(0 <= a.begin && a.begin <= a.end && a.end <= n_nodes, "graph.run", "range [",
                a.begin, ", ", a.end, ") outside a block of ", n_nodes, " nodes");
    TERRA_CHECK(a.attrs.empty() || int32_t(a.attrs.size()) == a.end - a.begin, "graph.run",
                "got ", a.attrs.size(), " attrs for ", a.end - a.begin, " nodes");
    TERRA_CHECK(a.storage.size() == p.ir.bufs.size(), "graph.run", "got ", a.storage.size(),
                " storages for ", p.ir.bufs.size(), " buffers");
    if (a.begin == 0) std::fill(bound_.begin(), bound_.end(), Ref<Storage>());
    stats_ = {};
    bind(a);
    decide(a);
    std::iota(remap_.begin(), remap_.end(), 0);
    for (size_t s = a.begin < a.end ? step_of_[a.begin] : p.steps.size();
         s < p.steps.size() && p.steps[s].nodes.front() < a.end; ++s)
      run_step(int32_t(s), a);
    if (a.end == n_nodes) std::fill(bound_.begin(), bound_.end(), Ref<Storage>());
  }

 private:
  enum Act : uint8_t { kSkip, kRun, kShare };

  const Attrs& attrs_of(int32_t n, const RunArgs& a) const {
    return a.attrs.empty() ? plan_->ir.nodes[n].attrs : a.attrs[n - a.begin];
  }

  // Where each buffer lives this run. A value an earlier range wrote elsewhere than the
  // storage the host now gives is copied over first.
  void bind(const RunArgs& a) {
    const auto& bufs = plan_->ir.bufs;
    for (size_t b = 0; b < bufs.size(); ++b) {
      const Ref<Storage>& g = a.storage[b];
      given_[b] = bool(g);
      if (bufs[b].external || !g) {
        st_[b] = bufs[b].external ? g : (bound_[b] ? bound_[b] : arena_bufs_[b]);
        continue;
      }
      TERRA_CHECK(g->nbytes() >= size_t(bufs[b].nbytes), "graph.run", "storage of ",
                  g->nbytes(), " bytes given for buffer ", b, " of ", bufs[b].nbytes, " bytes");
      if (bound_[b] && !(bound_[b] == g))
        std::memcpy(g->data(), bound_[b]->data(), size_t(bufs[b].nbytes));
      st_[b] = g;
    }
  }

  // Backwards over the block: which nodes of the range run, which share an earlier node's
  // result. Nodes after the range may run later with storage not known yet: all count.
  void decide(const RunArgs& a) {
    const graph::Plan& p = *plan_;
    need_.assign(p.ir.bufs.size(), 0);
    act_.assign(p.ir.nodes.size(), kSkip);
    for (int32_t n = int32_t(p.ir.nodes.size()) - 1; n >= a.end; --n)
      for (int32_t b : graph::read_bufs(p.ir.nodes[n])) need_[b] = 1;
    for (int32_t n = a.end - 1; n >= a.begin; --n) {
      const graph::IrNode& node = p.ir.nodes[n];
      if (graph::is_view(node)) continue;
      bool want = !p.dead[n];
      for (int32_t b : graph::written_bufs(node)) want |= given_[b] || need_[b];
      if (!want) {
        ++stats_.skipped;
        continue;
      }
      if (can_share(n, a)) {
        act_[n] = kShare;
        ++stats_.shared;
        for (const graph::ValueRef& o : p.ir.nodes[p.same_as[n]].outs) need_[o.buf] = 1;
        continue;
      }
      act_[n] = kRun;
      ++stats_.ran;
      for (int32_t b : graph::read_bufs(node)) need_[b] = 1;
    }
  }

  // n may read node m's buffers when the host cannot see n's, no later range reads them,
  // and this run's attrs still agree.
  bool can_share(int32_t n, const RunArgs& a) const {
    int32_t m = plan_->same_as[n];
    if (m < a.begin) return false;
    for (const graph::ValueRef& o : plan_->ir.nodes[n].outs)
      if (given_[o.buf] || last_user_[o.buf] >= a.end) return false;
    return attrs_of(n, a) == attrs_of(m, a);
  }

  void run_step(int32_t s, const RunArgs& a) {
    const graph::Step& st = plan_->steps[s];
    bool whole = st.nodes.front() >= a.begin && st.nodes.back() < a.end;
    if (st.fused && whole &&
        std::all_of(st.nodes.begin(), st.nodes.end(), [&](int32_t n) { return act_[n] == kRun; }))
      return run_fused(s, a);
    for (int32_t n : st.nodes)
      if (n >= a.begin && n < a.end) run_node(n, a);
  }

  Tensor view(const graph::ValueRef& v) const {
    const Ref<Storage>& s = st_[remap_[v.buf]];
    TERRA_CHECK(bool(s), "graph.run", "external buffer ", v.buf, " is not bound");
    return Tensor::from_storage(s, v.shape, v.strides, v.offset, v.dtype);
  }

  void mark_written(const graph::IrNode& node) {
    for (int32_t b : graph::written_bufs(node))
      if (!plan_->ir.bufs[b].external) bound_[b] = st_[b];
  }

  // One node, exactly as eager dispatch runs it, minus validation of what tracing validated
  // and minus version bumps (the host did those at call time).
  void run_node(int32_t n, const RunArgs& a) {
    const graph::IrNode& node = plan_->ir.nodes[n];
    if (act_[n] == kShare) {
      const graph::IrNode& m = plan_->ir.nodes[plan_->same_as[n]];
      for (size_t i = 0; i < node.outs.size(); ++i) remap_[node.outs[i].buf] = remap_[m.outs[i].buf];
      return;
    }
    if (act_[n] != kRun) return;
    SmallVector<Tensor, 4> ins;
    for (const graph::ValueRef& v : node.ins) ins.push_back(view(v));
    OpCall call{.op = node.op, .inputs = {ins.data(), ins.size()}, .attrs = attrs_of(n, a)};
    const OpInfo& info = op_info(node.op);
    if (node.inplace) {
      Tensor dest = view(node.outs[0]), result;
      call.out = &dest;
      MetaList metas;
      info.infer(call, metas);
      terra::detail::compute_into(call, info, metas[0], result);
    } else {
      SmallVector<Tensor, 2> outs;
      for (const graph::ValueRef& v : node.outs) outs.push_back(view(v));
      terra::detail::run_kernel(call, info, {outs.data(), outs.size()});
    }
    mark_written(node);
  }

  // ---- fused steps ----

  detail::FusedOperand operand(const graph::ValueRef& v, const Shape& shape,
                               const std::vector<int32_t>& slots) const {
    detail::FusedOperand o;
    o.dtype = v.dtype;
    o.slot = slots[remap_[v.buf]];
    if (o.slot < 0) {
      const Ref<Storage>& s = st_[remap_[v.buf]];
      TERRA_CHECK(bool(s), "graph.run", "external buffer ", v.buf, " is not bound");
      o.full = Tensor::from_storage(s, shape, broadcast_strides(v.shape, v.strides, shape),
                                    v.offset, v.dtype);
    }
    return o;
  }

  std::vector<detail::FusedMember> fused_members(const graph::Step& st, const Shape& shape,
                                                 const std::vector<int32_t>& slots,
                                                 const RunArgs& a) const {
    std::vector<detail::FusedMember> ms;
    for (int32_t n : st.nodes) {
      const graph::IrNode& node = plan_->ir.nodes[n];
      detail::FusedMember m{.op = node.op, .attrs = &attrs_of(n, a), .inplace = node.inplace};
      for (const graph::ValueRef& v : node.ins) m.ins.push_back(operand(v, shape, slots));
      m.out = operand(node.outs[0], shape, slots);
      if (node.inplace) {  // the result dtype, and the checks eager makes, on whole tensors
        SmallVector<Tensor, 4> ins;
        for (const graph::ValueRef& v : node.ins) ins.push_back(view(v));
        Tensor dest = view(node.outs[0]);
        MetaList metas;
        op_info(node.op).infer({.op = node.op, .inputs = {ins.data(), ins.size()},
                                .attrs = *m.attrs, .out = &dest}, metas);
        m.meta = metas[0];
      }
      ms.push_back(std::move(m));
    }
    return ms;
  }

  // Each member's own kernel on one tile: results are bit-identical to running the members
  // one after the other, and no arithmetic is contracted across ops.
  static void run_tile(const std::vector<detail::FusedMember>& ms, const detail::Tiling& tl,
                       int64_t t, const std::vector<Tensor>& scratch) {
    Shape ts = tl.tile_shape(t);
    Strides cs = contiguous_strides(ts);
    auto tile = [&](const detail::FusedOperand& o) {
      if (o.slot >= 0) return Tensor::from_storage(scratch[o.slot].storage(), ts, cs, 0, o.dtype);
      return Tensor::from_storage(o.full.storage(), ts, tl.tile_strides(o.full.strides()),
                                  o.full.storage_offset() + tl.offset(t, o.full.strides()),
                                  o.dtype);
    };
    for (const detail::FusedMember& m : ms) {
      SmallVector<Tensor, 4> ins;
      for (const detail::FusedOperand& o : m.ins) ins.push_back(tile(o));
      Tensor out = tile(m.out);
      OpCall call{.op = m.op, .inputs = {ins.data(), ins.size()}, .attrs = *m.attrs};
      const OpInfo& info = op_info(m.op);
      if (m.inplace) {
        OutMeta meta = m.meta;
        meta.shape = ts;
        call.out = &out;
        Tensor result;
        terra::detail::compute_into(call, info, meta, result);
      } else {
        terra::detail::run_kernel(call, info, {&out, 1});
      }
    }
  }

  void run_fused(int32_t s, const RunArgs& a) {
    const graph::Step& st = plan_->steps[s];
    const Shape& shape = plan_->ir.nodes[st.nodes[0]].outs[0].shape;
    // Intermediates the host does not hold live in per-thread scratch, one slot each.
    std::vector<int32_t> slots(plan_->ir.bufs.size(), -1);
    std::vector<DType> slot_dtype;
    for (int32_t b : scratch_[s])
      if (!given_[b]) {
        slots[b] = int32_t(slot_dtype.size());
        slot_dtype.push_back(plan_->ir.nodes[plan_->ir.bufs[b].producer].outs[0].dtype);
      }
    auto ms = fused_members(st, shape, slots, a);
    ++stats_.fused;
    detail::Tiling tl(shape, tile_elems_);
    if (numel_of(shape) > 0) run_tiles(ms, tl, slot_dtype);
    for (int32_t n : st.nodes)
      for (int32_t b : graph::written_bufs(plan_->ir.nodes[n]))
        if (slots[b] < 0 && !plan_->ir.bufs[b].external) bound_[b] = st_[b];
  }

  // Tiles in parallel chunks, each chunk with its own scratch. The team stops the loop at a
  // kernel's exception and rethrows it here.
  static void run_tiles(const std::vector<detail::FusedMember>& ms, const detail::Tiling& tl,
                        const std::vector<DType>& slot_dtype) {
    Shape full_tile = tl.tile_shape(0);
    parallel_for(tl.count, tl.elems * int64_t(ms.size()), [&](int64_t b, int64_t e) {
      std::vector<Tensor> scratch;
      for (DType dt : slot_dtype) scratch.push_back(Tensor::empty(full_tile, dt));
      for (int64_t t = b; t < e; ++t) run_tile(ms, tl, t, scratch);
    });
  }

  std::shared_ptr<const graph::Plan> plan_;
  int64_t tile_elems_;
  Ref<Storage> arena_;
  std::vector<Ref<Storage>> arena_bufs_;     // per buffer: its arena slice, wrapped once
  std::vector<int32_t> last_user_;           // per buffer: the last node naming it
  std::vector<int32_t> step_of_;             // per node
  std::vector<std::vector<int32_t>> scratch_;  // per step: intermediates it may keep in scratch
  // Per run.
  std::vector<Ref<Storage>> st_, bound_;  // where each buffer lives; where earlier ranges wrote
  std::vector<uint8_t> given_, need_, act_;
  std::vector<int32_t> remap_;  // buffer -> the buffer its readers read (cse)
  RunStats stats_;
};

}  // namespace terra::exec
