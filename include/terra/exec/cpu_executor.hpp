// terra/exec/cpu_executor.hpp: runs a compiled block (graph::Plan) from a CPU thread.
// A flat walk over the plan's steps in host order, calling the same kernels eager dispatch
// calls, on views of planned buffers: externals and buffers the host holds in the storage it
// gives, everything else in an arena per device (see Arena). Nodes on a device (CUDA) queue
// their kernels as eager dispatch does, on the stream the runner was given, and a run ends
// when the devices it used have finished. The passes' decisions (dead, same_as, fused) are
// applied only where this run's storage makes them safe. Dynamic nodes (IrNode::dynamic) run
// on the views each run gives (RunArgs::views). With Arena::device_graphs, each run of
// consecutive device kernels (a segment) is recorded and launched as one device graph.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>

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
  // Dynamic nodes of the range (IrNode::dynamic), by node, ascending: their views this run. A
  // dynamic node not listed runs with its traced views.
  std::span<const std::pair<int32_t, graph::NodeViews>> views = {};
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

// A fused step, decoded once per plan. Its members read and write `operands`: distinct views,
// each broadcast to the step's shape. Per tile, a chunk re-aims one TensorImpl per operand at
// the tile (offset, and shape for the last partial tile) instead of building tensors.
struct FusedOperandDesc {
  graph::ValueRef v;  // as the node names it (the run's cse remap applies to v.buf)
  Strides full;       // v's strides broadcast to the step's shape
  Strides tile;       // full, from the tiling's dim on
};
struct FusedMemberDesc {
  int32_t node = 0;
  SmallVector<int32_t, 3> ins;  // operand indices
  int32_t out = 0;
};
struct FusedProg {
  Tiling tiling;
  std::vector<FusedOperandDesc> operands;
  std::vector<FusedMemberDesc> members;
  int64_t tile_bytes = 0;  // one scratch slot: a full tile of the widest dtype, 64-byte aligned

  FusedProg(const graph::Plan& p, const graph::Step& st, int64_t tile_elems)
      : tiling(p.ir.nodes[st.nodes[0]].outs[0].shape, tile_elems) {
    const Shape& shape = tiling.shape;
    auto index_of = [&](const graph::ValueRef& v) {
      for (size_t i = 0; i < operands.size(); ++i)
        if (operands[i].v == v) return int32_t(i);
      Strides full = broadcast_strides(v.shape, v.strides, shape);
      operands.push_back({v, full, tiling.tile_strides(full)});
      return int32_t(operands.size() - 1);
    };
    size_t widest = 1;
    for (int32_t n : st.nodes) {
      const graph::IrNode& node = p.ir.nodes[n];
      FusedMemberDesc m;
      m.node = n;
      for (const graph::ValueRef& v : node.ins) m.ins.push_back(index_of(v));
      m.out = index_of(node.outs[0]);
      members.push_back(std::move(m));
    }
    for (const FusedOperandDesc& o : operands) widest = std::max(widest, itemsize(o.v.dtype));
    tile_bytes = (tiling.elems * int64_t(widest) + 63) / 64 * 64;
  }
};

// Scratch for the chunks of fused steps: a few reusable buffers, one per chunk running at once.
class ScratchPool {
 public:
  explicit ScratchPool(int n) : slots_(size_t(std::max(n, 1))) {}
  // A buffer of at least `bytes`, held until release(). Never fails: with every slot taken
  // (more threads than expected), it allocates one for this chunk alone.
  struct Lease {
    Ref<Storage> mem;
    int slot = -1;
  };
  Lease acquire(size_t bytes) {
    for (size_t i = 0; i < slots_.size(); ++i) {
      bool expected = false;
      if (!slots_[i].busy.compare_exchange_strong(expected, true, std::memory_order_acquire))
        continue;
      if (!slots_[i].mem || slots_[i].mem->nbytes() < bytes)
        slots_[i].mem = Storage::allocate(std::max<size_t>(bytes, 64), Device::cpu());
      return {slots_[i].mem, int(i)};
    }
    return {Storage::allocate(std::max<size_t>(bytes, 64), Device::cpu()), -1};
  }
  void release(Lease& l) {
    if (l.slot >= 0) slots_[size_t(l.slot)].busy.store(false, std::memory_order_release);
    l = {};
  }

 private:
  struct Slot {
    std::atomic<bool> busy{false};
    Ref<Storage> mem;
  };
  std::vector<Slot> slots_;
};

}  // namespace detail

// The memory behind the planned buffers of one or more executors, grown to the largest plan.
// Executors may share one when their runs never overlap and no value in it outlives the block
// that wrote it: an engine's runs execute one at a time in launch order, the ranges of one
// block back to back, and values the host still holds get storage of their own. Sharing
// makes a plan compiled for a new path or shape reuse memory that is mapped and warm in
// cache: with an arena per plan, each new plan's first run faulted in fresh pages (SDPoint,
// which compiles a few plans per step early on, spent a sixth of its co-executed time
// clearing pages). Touched only by the thread executing a run.
struct Arena {
  Ref<Storage> mem;         // the CPU arena; the only owner: replaced memory is freed at once
  std::vector<std::pair<Device, Ref<Storage>>> device_mem;  // the arena of each other device
  uint64_t generation = 0;  // bumped whenever some arena's memory is replaced
  // Scratch of fused steps' chunks, shared as the arena is (one per executor added up to
  // tens of MB when a dynamic program had a plan per path and shape).
  detail::ScratchPool scratch{get_num_threads() + 2};

  // Device graphs (EngineOptions::cuda_graphs): set before the first executor is made.
  bool device_graphs = false;
  struct GraphCounts {
    int64_t launches = 0;  // segments launched as one graph
    int64_t kernels = 0;   // nodes whose kernels those graphs ran
    int64_t failures = 0;  // recordings that failed (the segment then ran node by node)
    std::map<std::string, int64_t> not_captured;  // why device work ran outside graphs
  };
  // Written by the thread executing runs, read by the host thread (Engine::stats).
  GraphCounts graph_counts() const {
    std::lock_guard<std::mutex> lock(graph_mu_);
    return graph_counts_;
  }
  void count_graph(int64_t kernels) {
    std::lock_guard<std::mutex> lock(graph_mu_);
    ++graph_counts_.launches;
    graph_counts_.kernels += kernels;
  }
  void count_not_captured(std::string why, bool failure) {
    if (why.size() > 200) why = why.substr(0, 200) + "...";
    std::lock_guard<std::mutex> lock(graph_mu_);
    graph_counts_.failures += failure;
    ++graph_counts_.not_captured[std::move(why)];
  }

  // Replaces mem (growing by half at least) when it holds fewer than `bytes`. Executors that
  // pointed into the old memory see the generation move and re-aim before their next run;
  // they never keep it alive (with a plan per path and shape, stale executors used to hold
  // every arena the engine had outgrown).
  void reserve(size_t bytes) { reserve(Device::cpu(), bytes); }
  void reserve(Device d, size_t bytes) {
    Ref<Storage>& m = memory(d);
    if (m && m->nbytes() >= bytes) return;
    size_t grown = m ? m->nbytes() + m->nbytes() / 2 : 0;
    m = {};  // free first: the allocator may hand the same pages back
    m = Storage::allocate(std::max(bytes, grown), d);
    ++generation;
  }
  // The arena of device d (null until reserved).
  Ref<Storage>& memory(Device d) {
    if (d.is_cpu()) return mem;
    for (auto& [dev, m] : device_mem)
      if (dev == d) return m;
    return device_mem.emplace_back(d, Ref<Storage>()).second;
  }

 private:
  mutable std::mutex graph_mu_;
  GraphCounts graph_counts_;
};

// Consecutive steps of a plan whose nodes all run on one device, with kernels that may be
// recorded (DeviceBackend::capturable): launched as one device graph when the run covers them.
struct GraphSegment {
  int32_t first_step = 0, last_step = 0;  // inclusive
  int32_t first_node = 0, last_node = 0;  // inclusive
  Device device;
  int32_t kernels = 0;       // non-view nodes
  void* graph = nullptr;     // the backend's executable, kept between runs
  int32_t failures = 0;      // failed recordings; after kMaxFailures it runs node by node
  static constexpr int32_t kMaxFailures = 2;
};

// What the last run() did (for the engine's stats and for tests).
struct RunStats {
  int32_t ran = 0;      // nodes whose kernel ran (fused members included)
  int32_t skipped = 0;  // dead nodes not run
  int32_t shared = 0;   // nodes that read an earlier node's identical result instead
  int32_t fused = 0;    // fused steps run tile by tile
  int32_t epilogues = 0;  // relus run inside their batch_norm's kernel (graph::Plan::epilogue)
};

// One per compiled Plan. Not thread-safe: one thread at a time calls run() (the runner, or
// the host helping it), and so for every executor sharing its arena.
class CpuExecutor {
 public:
  static constexpr int64_t kTileElems = 4096;
  // tile_elems: the size of a fused step's tiles (tests make it tiny to cut small tensors).
  // arena: shared with other executors whose runs never overlap this one's; null: its own.
  explicit CpuExecutor(std::shared_ptr<const graph::Plan> plan, int64_t tile_elems = kTileElems,
                       std::shared_ptr<Arena> arena = nullptr)
      : plan_(std::move(plan)),
        tile_elems_(std::max<int64_t>(tile_elems, 1)),
        arena_(arena ? std::move(arena) : std::make_shared<Arena>()) {
    const graph::Plan& p = *plan_;
    size_t nb = p.ir.bufs.size();
    arena_bufs_.resize(nb);
    last_user_.assign(nb, -1);
    auto users = graph::buffer_users(p.ir);
    for (size_t b = 0; b < nb; ++b)
      if (!users[b].empty()) last_user_[b] = users[b].back();
    last_reader_.assign(nb, -1);
    for (int32_t n = 0; n < int32_t(p.ir.nodes.size()); ++n)
      for (int32_t b : graph::read_bufs(p.ir.nodes[n])) last_reader_[b] = n;
    step_of_.resize(p.ir.nodes.size());
    for (size_t s = 0; s < p.steps.size(); ++s)
      for (int32_t n : p.steps[s].nodes) step_of_[n] = int32_t(s);
    scratch_ = graph::fused_intermediates(p);
    progs_.resize(p.steps.size());
    for (size_t s = 0; s < p.steps.size(); ++s)
      if (p.steps[s].fused) progs_[s] = std::make_unique<detail::FusedProg>(p, p.steps[s], tile_elems_);
    st_.resize(nb);
    handles_.resize(p.ir.nodes.size());
    bound_.resize(nb);
    given_.resize(nb);
    remap_.resize(nb);
    if (arena_->device_graphs) find_segments();
  }
  ~CpuExecutor() {
    for (GraphSegment& g : segs_) {
      if (!g.graph) continue;
      const DeviceBackend* b = terra::detail::device_backend_slot(g.device.type);
      if (b && b->destroy_graph) b->destroy_graph(g.graph);
    }
  }
  CpuExecutor(const CpuExecutor&) = delete;
  CpuExecutor& operator=(const CpuExecutor&) = delete;

  const graph::Plan& plan() const { return *plan_; }
  // The device segments this plan's runs launch as graphs (empty unless Arena::device_graphs).
  const std::vector<GraphSegment>& graph_segments() const { return segs_; }
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
    aim_at_arena();
    // This run's bindings die with it (an executor that does not run again must not keep
    // the values of its last run alive); bound_ keeps what a later range of the block reads.
    struct Unbind {
      std::vector<Ref<Storage>>& st;
      ~Unbind() { std::fill(st.begin(), st.end(), Ref<Storage>()); }
    } unbind{st_};
    bind(a);
    decide(a);
    std::iota(remap_.begin(), remap_.end(), 0);
    try {
      for (size_t s = a.begin < a.end ? step_of_[a.begin] : p.steps.size();
           s < p.steps.size() && p.steps[s].nodes.front() < a.end; ++s) {
        int32_t g = seg_at_step_.empty() ? -1 : seg_at_step_[s];
        if (g >= 0 && segs_[g].first_node >= a.begin && segs_[g].last_node < a.end) {
          run_segment(segs_[g], a);
          s = size_t(segs_[g].last_step);
          continue;
        }
        run_step(int32_t(s), a);
      }
    } catch (...) {
      // Kernels queued before the failure may still be running: let them finish before the
      // run's memory can be reused. The first error is the one reported.
      try {
        synchronize_devices();
      } catch (...) {
      }
      throw;
    }
    synchronize_devices();
    if (a.end == n_nodes) std::fill(bound_.begin(), bound_.end(), Ref<Storage>());
  }

 private:
  enum Act : uint8_t { kSkip, kRun, kShare };

  // Device kernels are queued asynchronously: a run is done (and its memory free to reuse)
  // only once every device it used has finished them.
  void synchronize_devices() const {
    for (Device d : plan_->devices) device_backend(d, "graph.run").synchronize(d.index);
  }

  // Wraps each planned buffer's slice of the (shared) arenas, again whenever one was replaced.
  void aim_at_arena() {
    const graph::Plan& p = *plan_;
    arena_->reserve(size_t(std::max<int64_t>(p.arena_bytes, 64)));
    for (const auto& [dev, bytes] : p.device_arenas) arena_->reserve(dev, size_t(std::max<int64_t>(bytes, 64)));
    if (aimed_ == arena_->generation) return;
    aimed_ = arena_->generation;
    for (size_t b = 0; b < arena_bufs_.size(); ++b) {
      if (p.arena_offset[b] < 0) continue;
      Device d = p.ir.bufs[b].device;
      char* base = static_cast<char*>(arena_->memory(d)->data());
      arena_bufs_[b] = Storage::wrap(base + p.arena_offset[b], size_t(p.ir.bufs[b].nbytes), d, {});
    }
  }

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
      st_[b] = g;
      if (bufs[b].dynamic) continue;  // the run's size, which the host's views were checked against
      TERRA_CHECK(g->nbytes() >= size_t(bufs[b].nbytes), "graph.run", "storage of ",
                  g->nbytes(), " bytes given for buffer ", b, " of ", bufs[b].nbytes, " bytes");
      if (bound_[b] && !(bound_[b] == g)) copy_storage(*g, *bound_[b], size_t(bufs[b].nbytes));
    }
  }

  // Backwards over the block: which nodes of the range run, which share an earlier node's
  // result. Nodes after the range may run later with storage not known yet: all count.
  void decide(const RunArgs& a) {
    const graph::Plan& p = *plan_;
    need_.resize(p.ir.bufs.size());
    for (size_t b = 0; b < need_.size(); ++b) need_[b] = last_reader_[b] >= a.end;
    act_.assign(p.ir.nodes.size(), kSkip);
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

  // ---- device graphs ----

  // The device every node of step s reads and writes, when its kernels may be recorded; the CPU
  // otherwise (why says why, for device work that cannot be).
  Device step_device(const graph::Step& st, std::string& why) const {
    const graph::Plan& p = *plan_;
    Device d = Device::cpu();
    for (int32_t n : st.nodes) {
      const graph::IrNode& node = p.ir.nodes[n];
      bool host = false, across = false;
      auto see = [&](const graph::ValueRef& v) {
        if (v.device.is_cpu()) {
          host = true;
        } else if (d.is_cpu()) {
          d = v.device;
        } else if (!(v.device == d)) {
          across = true;  // a peer copy, made on the destination's stream
        }
      };
      for (const graph::ValueRef& v : node.ins) see(v);
      for (const graph::ValueRef& v : node.outs) see(v);
      if (d.is_cpu()) return d;
      if (node.dynamic) {
        why = std::string(op_name(node.op)) + ": shapes change from run to run";
        return Device::cpu();
      }
      if (host || across) {
        why = std::string(op_name(node.op)) +
              (host ? ": copies between the host and a device" : ": copies between devices");
        return Device::cpu();
      }
      const DeviceBackend* b = terra::detail::device_backend_slot(d.type);
      if (!b || !b->begin_capture || !b->end_capture || !b->capturable) {
        why = std::string(b ? b->name : "device") + " records no graphs";
        return Device::cpu();
      }
      if (!graph::is_view(node) && !b->capturable(int(node.op))) {
        why = std::string(op_name(node.op)) + ": reads device values back on the host";
        return Device::cpu();
      }
    }
    return d;
  }

  // Maximal runs of steps on one device with at least two kernels.
  void find_segments() {
    const graph::Plan& p = *plan_;
    seg_at_step_.assign(p.steps.size(), -1);
    std::map<std::string, int> reasons;
    GraphSegment cur;
    bool open = false;
    auto close = [&] {
      if (open && cur.kernels >= 2) {
        for (int32_t s = cur.first_step; s <= cur.last_step; ++s) seg_at_step_[s] = int32_t(segs_.size());
        segs_.push_back(cur);
      }
      open = false;
    };
    for (size_t s = 0; s < p.steps.size(); ++s) {
      const graph::Step& st = p.steps[s];
      std::string why;
      Device d = step_device(st, why);
      if (!why.empty()) ++reasons[why];
      if (d.is_cpu() || (open && !(d == cur.device))) close();
      if (d.is_cpu()) continue;
      if (!open) {
        cur = {};
        cur.first_step = int32_t(s), cur.first_node = st.nodes.front(), cur.device = d;
        open = true;
      }
      cur.last_step = int32_t(s), cur.last_node = st.nodes.back();
      for (int32_t n : st.nodes) cur.kernels += !graph::is_view(p.ir.nodes[n]);
    }
    close();
    for (auto& [why, n] : reasons) arena_->count_not_captured(why, false);
  }

  void run_steps(const GraphSegment& g, const RunArgs& a) {
    for (int32_t s = g.first_step; s <= g.last_step; ++s) run_step(s, a);
  }

  // Records the segment's kernels, then the backend launches them as one graph. A recording
  // that fails (a kernel that waits on its stream, a library that cannot be recorded, an error
  // raised while queuing) ran nothing: the segment then runs node by node, which reports a
  // genuine error as eager execution would.
  void run_segment(GraphSegment& g, const RunArgs& a) {
    const graph::Plan& p = *plan_;
    int32_t kernels = 0;
    for (int32_t s = g.first_step; s <= g.last_step; ++s)
      for (int32_t n : p.steps[s].nodes) kernels += act_[n] == kRun && !graph::is_view(p.ir.nodes[n]);
    if (g.failures >= GraphSegment::kMaxFailures || kernels < 2) return run_steps(g, a);
    const DeviceBackend& b = device_backend(g.device, "graph.run");
    std::string why;
    if (b.begin_capture(g.device.index, &why)) {
      bool ok = true;
      try {
        run_steps(g, a);
      } catch (const std::exception& e) {
        ok = false, why = e.what();
      } catch (...) {
        ok = false, why = "an exception while recording";
      }
      if (b.end_capture(g.device.index, &g.graph, ok, &why)) {
        arena_->count_graph(kernels);
        return;
      }
    }
    ++g.failures;
    arena_->count_not_captured("recording failed: " + why, true);
    run_steps(g, a);
  }

  void run_step(int32_t s, const RunArgs& a) {
    const graph::Step& st = plan_->steps[s];
    bool whole = st.nodes.front() >= a.begin && st.nodes.back() < a.end;
    if (st.fused && whole &&
        std::all_of(st.nodes.begin(), st.nodes.end(), [&](int32_t n) { return act_[n] == kRun; }))
      return run_fused(s, a);
    if (st.nodes.size() == 1 && whole) {
      int32_t n = st.nodes[0], m = plan_->epilogue.empty() ? -1 : plan_->epilogue[size_t(n)];
      if (m >= 0 && m < a.end && act_[n] == kRun && act_[m] == kRun &&
          !given_[plan_->ir.nodes[n].outs[0].buf])
        return run_epilogue(n, m, a);
    }
    for (int32_t n : st.nodes)
      if (n >= a.begin && n < a.end) run_node(n, a);
  }

  Tensor view(const graph::ValueRef& v) const { return view(v.buf, v); }
  // Buffer b seen through the layout of v.
  Tensor view(int32_t b, const graph::ValueRef& v) const {
    const Ref<Storage>& s = st_[remap_[b]];
    TERRA_CHECK(bool(s), "graph.run", "external buffer ", b, " is not bound");
    return Tensor::from_storage(s, v.shape, v.strides, v.offset, v.dtype);
  }
  // Buffer b seen through the layout of v, a view a run gave: checked against the memory
  // bound to b this run (the traced sizes say nothing about it).
  Tensor run_view(int32_t n, int32_t b, const graph::ValueRef& v) const {
    Tensor t = view(b, v);
    int64_t last = v.offset;
    bool empty = false;
    for (size_t d = 0; d < v.shape.size(); ++d) {
      empty |= v.shape[d] == 0;
      last += (v.shape[d] - 1) * v.strides[d];
    }
    TERRA_CHECK(empty || (v.offset >= 0 && size_t(last + 1) * itemsize(v.dtype) <= t.storage()->nbytes()),
                "graph.run", "node ", n, " (", op_name(plan_->ir.nodes[n].op), "): view ", v.shape,
                " at offset ", v.offset, " reaches past its buffer of ", t.storage()->nbytes(), " bytes");
    return t;
  }
  // The views the run gives for dynamic node n, if any.
  const graph::NodeViews* run_views(int32_t n, const RunArgs& a) const {
    auto it = std::lower_bound(a.views.begin(), a.views.end(), n,
                               [](const auto& e, int32_t k) { return e.first < k; });
    if (it == a.views.end() || it->first != n) return nullptr;
    const graph::IrNode& node = plan_->ir.nodes[n];
    TERRA_CHECK(it->second.ins.size() == node.ins.size() && it->second.outs.size() == node.outs.size(),
                "graph.run", "views for node ", n, " name ", it->second.ins.size(), " inputs and ",
                it->second.outs.size(), " outputs; it has ", node.ins.size(), " and ", node.outs.size());
    return &it->second;
  }
  // `h`, a handle kept for one operand of one node, aimed at v's storage in this run. A fresh
  // handle per operand per run cost a heap allocation and two shape copies, most of what a
  // small op's node cost the runner besides its kernel. Shape, strides, offset and dtype are
  // the plan's, the same at every run; only the storage changes.
  const Tensor& aim(Tensor& h, const graph::ValueRef& v) const {
    const Ref<Storage>& s = st_[remap_[v.buf]];
    TERRA_CHECK(bool(s), "graph.run", "external buffer ", v.buf, " is not bound");
    if (!h.defined())
      h = Tensor::from_storage(s, v.shape, v.strides, v.offset, v.dtype);
    else
      h.unsafe_impl()->storage = s;
    return h;
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
    NodeHandles& h = handles_of(n);
    ReleaseHandles release{h};
    if (const graph::NodeViews* v = node.dynamic ? run_views(n, a) : nullptr) {
      // This run's views of the node's buffers: fresh handles (their shapes change).
      for (size_t i = 0; i < node.ins.size(); ++i) h.ins[i] = run_view(n, node.ins[i].buf, v->ins[i]);
      for (size_t i = 0; i < node.outs.size(); ++i) h.outs[i] = run_view(n, node.outs[i].buf, v->outs[i]);
    } else {
      for (size_t i = 0; i < node.ins.size(); ++i) aim(h.ins[i], node.ins[i]);
      for (size_t i = 0; i < node.outs.size(); ++i) aim(h.outs[i], node.outs[i]);
    }
    OpCall call{.op = node.op, .inputs = {h.ins.data(), h.ins.size()}, .attrs = attrs_of(n, a)};
    const OpInfo& info = op_info(node.op);
    if (node.inplace) {
      Tensor result;
      call.out = &h.outs[0];
      MetaList metas;
      info.infer(call, metas);
      terra::detail::compute_into(call, info, metas[0], result);
    } else {
      terra::detail::run_kernel(call, info, {h.outs.data(), h.outs.size()});
    }
    mark_written(node);
  }

  // Batch_norm n and the relu m of its output (graph::Plan::epilogue), both in this run, where
  // the host holds no handle to the batch_norm's output: one kernel call at n, writing the
  // relu's output; m is then skipped.
  void run_epilogue(int32_t n, int32_t m, const RunArgs& a) {
    const graph::IrNode &bn = plan_->ir.nodes[size_t(n)], &act = plan_->ir.nodes[size_t(m)];
    NodeHandles& h = handles_of(n);
    ReleaseHandles release{h};
    for (size_t i = 0; i < bn.ins.size(); ++i) aim(h.ins[i], bn.ins[i]);
    aim(h.outs[0], act.outs[0]);  // the relu's output in place of the batch_norm's
    for (size_t i = 1; i < bn.outs.size(); ++i) aim(h.outs[i], bn.outs[i]);
    Attrs at = attrs_of(n, a);
    at.ints.resize(5);
    at.ints.push_back(1);  // relu epilogue (cpu batch_norm_kernel)
    OpCall call{.op = bn.op, .inputs = {h.ins.data(), h.ins.size()}, .attrs = at};
    terra::detail::run_kernel(call, op_info(bn.op), {h.outs.data(), h.outs.size()});
    for (size_t i = 1; i < bn.outs.size(); ++i)  // the statistics (y was never written)
      if (!plan_->ir.bufs[bn.outs[i].buf].external) bound_[bn.outs[i].buf] = st_[bn.outs[i].buf];
    mark_written(act);
    act_[m] = kSkip;  // done
    ++stats_.epilogues;
  }

  // ---- fused steps ----

  // Per run: where each operand of step s lives (its buffer's storage, or a scratch slot for
  // an intermediate the host does not hold), and each in-place member's result dtype with the
  // checks eager makes, on whole tensors.
  struct FusedRun {
    const detail::FusedProg* prog = nullptr;
    SmallVector<const Attrs*, 8> attrs;        // per member
    SmallVector<OutMeta, 8> metas;             // per member (in-place members only)
    SmallVector<Ref<Storage>, 8> storage;      // per operand; null: scratch
    SmallVector<int64_t, 8> scratch_offset;    // per operand: elements into the chunk's scratch
    int64_t scratch_bytes = 0;
  };

  void run_fused(int32_t s, const RunArgs& a) {
    const detail::FusedProg& prog = *progs_[s];
    FusedRun fr;
    fr.prog = &prog;
    const std::vector<int32_t>& cand = scratch_[s];
    SmallVector<int32_t, 8> slot_of_buf;  // parallel to cand: the slot given to it, or -1
    for (int32_t b : cand) {
      slot_of_buf.push_back(given_[b] ? -1 : int32_t(fr.scratch_bytes / prog.tile_bytes));
      if (!given_[b]) fr.scratch_bytes += prog.tile_bytes;
    }
    for (const detail::FusedOperandDesc& o : prog.operands) {
      int32_t b = remap_[o.v.buf];
      int32_t slot = -1;
      for (size_t i = 0; i < cand.size(); ++i)
        if (cand[i] == b) slot = slot_of_buf[i];
      if (slot >= 0) {
        fr.storage.push_back({});
        fr.scratch_offset.push_back(int64_t(slot) * prog.tile_bytes / int64_t(itemsize(o.v.dtype)));
      } else {
        TERRA_CHECK(bool(st_[b]), "graph.run", "external buffer ", o.v.buf, " is not bound");
        fr.storage.push_back(st_[b]);
        fr.scratch_offset.push_back(0);
      }
    }
    for (const detail::FusedMemberDesc& m : prog.members) {
      const graph::IrNode& node = plan_->ir.nodes[m.node];
      fr.attrs.push_back(&attrs_of(m.node, a));
      fr.metas.push_back({});
      if (!node.inplace) continue;
      SmallVector<Tensor, 4> ins;
      for (const graph::ValueRef& v : node.ins) ins.push_back(view(v));
      Tensor dest = view(node.outs[0]);
      MetaList metas;
      op_info(node.op).infer({.op = node.op, .inputs = {ins.data(), ins.size()},
                              .attrs = *fr.attrs.back(), .out = &dest}, metas);
      fr.metas.back() = metas[0];
    }
    ++stats_.fused;
    const detail::Tiling& tl = prog.tiling;
    if (numel_of(tl.shape) > 0) {
      int64_t members = int64_t(prog.members.size());
      parallel_for(tl.count, tl.elems * members, [&](int64_t b, int64_t e) { run_chunk(fr, b, e); });
    }
    for (const detail::FusedMemberDesc& m : prog.members) {
      int32_t b = prog.operands[size_t(m.out)].v.buf;
      if (fr.storage[size_t(m.out)] && !plan_->ir.bufs[b].external) bound_[b] = st_[b];
    }
  }

  // Tiles [tb, te) of a fused step: each member's own kernel on one tile, member after member,
  // so results are bit-identical to running the members one after the other (no arithmetic is
  // contracted across ops). The team stops the loop at a kernel's exception and rethrows it.
  void run_chunk(const FusedRun& fr, int64_t tb, int64_t te) {
    const detail::FusedProg& prog = *fr.prog;
    const detail::Tiling& tl = prog.tiling;
    detail::ScratchPool::Lease lease;
    if (fr.scratch_bytes > 0) lease = arena_->scratch.acquire(size_t(fr.scratch_bytes));
    struct Release {
      detail::ScratchPool& pool;
      detail::ScratchPool::Lease& lease;
      ~Release() { pool.release(lease); }
    } release{arena_->scratch, lease};
    // One handle per operand, re-aimed at each tile.
    Shape ts = tl.tile_shape(tb);
    SmallVector<Tensor, 16> ops;
    for (size_t i = 0; i < prog.operands.size(); ++i) {
      const detail::FusedOperandDesc& o = prog.operands[i];
      if (fr.storage[i])
        ops.push_back(Tensor::from_storage(fr.storage[i], ts, o.tile, o.v.offset, o.v.dtype));
      else
        ops.push_back(Tensor::from_storage(lease.mem, ts, contiguous_strides(ts),
                                           fr.scratch_offset[i], o.v.dtype));
    }
    SmallVector<SmallVector<Tensor, 3>, 8> ins;
    for (const detail::FusedMemberDesc& m : prog.members) {
      ins.emplace_back();
      for (int32_t k : m.ins) ins.back().push_back(ops[size_t(k)]);
    }
    for (int64_t t = tb; t < te; ++t) {
      Shape cur = tl.tile_shape(t);
      bool reshape = !(cur == ts);
      for (size_t i = 0; i < ops.size(); ++i) {
        TensorImpl& impl = *ops[i].unsafe_impl();
        if (reshape) {
          impl.shape = cur;
          if (!fr.storage[i]) impl.strides = contiguous_strides(cur);
        }
        if (fr.storage[i]) impl.offset = prog.operands[i].v.offset + tl.offset(t, prog.operands[i].full);
      }
      ts = cur;
      for (size_t j = 0; j < prog.members.size(); ++j) {
        const detail::FusedMemberDesc& m = prog.members[j];
        const graph::IrNode& node = plan_->ir.nodes[m.node];
        const OpInfo& info = op_info(node.op);
        OpCall call{.op = node.op, .inputs = {ins[j].data(), ins[j].size()}, .attrs = *fr.attrs[j]};
        Tensor& out = ops[size_t(m.out)];
        if (node.inplace) {
          OutMeta meta = fr.metas[j];
          meta.shape = ts;
          call.out = &out;
          Tensor result;
          terra::detail::compute_into(call, info, meta, result);
        } else {
          terra::detail::run_kernel(call, info, {&out, 1});
        }
      }
    }
  }

  std::shared_ptr<const graph::Plan> plan_;
  int64_t tile_elems_;
  std::shared_ptr<Arena> arena_;
  uint64_t aimed_ = 0;                       // the arena generation arena_bufs_ point into
  std::vector<Ref<Storage>> arena_bufs_;     // per buffer: its arena slice (not owning)
  std::vector<int32_t> last_user_;           // per buffer: the last node naming it
  std::vector<int32_t> step_of_;             // per node
  std::vector<int32_t> last_reader_;         // per buffer: the last node reading it, or -1
  std::vector<std::vector<int32_t>> scratch_;  // per step: intermediates it may keep in scratch
  std::vector<std::unique_ptr<detail::FusedProg>> progs_;  // per step: fused steps decoded
  // Per node: handles to its operands for run_node, made at its first run (see aim()).
  struct NodeHandles {
    SmallVector<Tensor, 4> ins;
    SmallVector<Tensor, 2> outs;
  };
  std::vector<NodeHandles> handles_;
  // The handles let go of this run's storages when the node is done, thrown or not.
  struct ReleaseHandles {
    NodeHandles& h;
    ~ReleaseHandles() {
      for (Tensor& t : h.ins)
        if (t.defined()) t.unsafe_impl()->storage = {};
      for (Tensor& t : h.outs)
        if (t.defined()) t.unsafe_impl()->storage = {};
    }
  };
  // Node n's handles, one per operand.
  NodeHandles& handles_of(int32_t n) {
    const graph::IrNode& node = plan_->ir.nodes[size_t(n)];
    NodeHandles& h = handles_[size_t(n)];
    if (h.ins.size() != node.ins.size()) h.ins.resize(node.ins.size());
    if (h.outs.size() != node.outs.size()) h.outs.resize(node.outs.size());
    return h;
  }
  std::vector<GraphSegment> segs_;     // device graphs (Arena::device_graphs)
  std::vector<int32_t> seg_at_step_;   // per step: its segment, or -1 (empty: none)
  // Per run.
  std::vector<Ref<Storage>> st_, bound_;  // where each buffer lives; where earlier ranges wrote
  std::vector<uint8_t> given_, need_, act_;
  std::vector<int32_t> remap_;  // buffer -> the buffer its readers read (cse)
  RunStats stats_;
};

}  // namespace terra::exec
