// terra/graph/passes.hpp: the passes that turn a block's IR into a Plan.
// compile = dce -> cse -> fuse -> plan_memory. Each pass is a pure function over the Plan and
// only records a decision; the executor re-checks every decision against what the host holds
// at launch (see exec/cpu_executor.hpp), so a pass may be optimistic about the block's inside
// but never about the host.
#pragma once

#include <algorithm>
#include <climits>
#include <unordered_map>

#include "terra/graph/ir.hpp"

namespace terra::graph {

// ---- helpers shared by the passes, the executor and the dumps ----

// A view runs no kernel: its outputs alias its input's buffer.
inline bool is_view(const IrNode& n) {
  if (op_info(n.op).kind == OpKind::View) return true;
  for (int8_t a : n.out_alias)
    if (a < 0) return false;
  return !n.out_alias.empty();
}

// The buffers node n writes: its fresh outputs, or the destination of an in-place call.
inline SmallVector<int32_t, 2> written_bufs(const IrNode& n) {
  SmallVector<int32_t, 2> w;
  if (n.inplace) {
    w.push_back(n.outs[0].buf);
  } else if (!is_view(n)) {
    for (size_t i = 0; i < n.outs.size(); ++i)
      if (i >= n.out_alias.size() || n.out_alias[i] < 0) w.push_back(n.outs[i].buf);
  }
  return w;
}

// The buffers node n reads: its inputs, and an in-place destination (which may be written
// only in part, so its earlier contents stay in use).
inline SmallVector<int32_t, 4> read_bufs(const IrNode& n) {
  SmallVector<int32_t, 4> r;
  for (const ValueRef& v : n.ins) r.push_back(v.buf);
  if (n.inplace) r.push_back(n.outs[0].buf);
  return r;
}

// Per buffer: the nodes that name it in an input or output, in host order.
inline std::vector<std::vector<int32_t>> buffer_users(const BlockIr& ir) {
  std::vector<std::vector<int32_t>> users(ir.bufs.size());
  for (int32_t n = 0; n < int32_t(ir.nodes.size()); ++n) {
    auto add = [&](int32_t b) {
      if (users[b].empty() || users[b].back() != n) users[b].push_back(n);
    };
    for (const ValueRef& v : ir.nodes[n].ins) add(v.buf);
    for (const ValueRef& v : ir.nodes[n].outs) add(v.buf);
  }
  return users;
}

// Ops whose kernel draws random numbers: two calls are never the same computation.
inline bool is_random(Op op) {
  return op == Op::Rand || op == Op::Randn || op == Op::Randint || op == Op::Dropout;
}

// ---- dce ----

// dead[n]: n writes only internal buffers and no later live node reads any view of them.
// Liveness is per buffer and only grows going backwards (an in-place write may be partial).
inline void dce(Plan& p) {
  const auto& nodes = p.ir.nodes;
  p.dead.assign(nodes.size(), 0);
  std::vector<uint8_t> live(p.ir.bufs.size(), 0);
  for (int32_t n = int32_t(nodes.size()) - 1; n >= 0; --n) {
    const IrNode& node = nodes[n];
    bool used = false;
    for (const ValueRef& o : node.outs)
      used |= live[o.buf] || (!is_view(node) && p.ir.bufs[o.buf].external);
    if (!used) {
      p.dead[n] = 1;
      continue;
    }
    for (int32_t b : read_bufs(node)) live[b] = 1;
  }
}

// ---- cse ----

namespace detail {

inline bool cse_candidate(const Plan& p, int32_t n) {
  const IrNode& node = p.ir.nodes[n];
  return !node.inplace && !node.dynamic && !is_view(node) && !is_random(node.op) &&
         written_bufs(node).size() == node.outs.size();
}

inline uint64_t cse_key(const IrNode& n) {
  uint64_t h = uint64_t(n.op) * 0x9E3779B97F4A7C15ull;
  for (const ValueRef& v : n.ins) h = (h ^ uint64_t(v.buf) ^ (uint64_t(v.offset) << 20)) * 31;
  return h ^ n.attrs.ints.size();
}

// True when some node in (after, upto] writes buffer b in place.
inline bool written_between(const std::vector<std::vector<int32_t>>& inplace_writers, int32_t b,
                            int32_t after, int32_t upto) {
  for (int32_t w : inplace_writers[b])
    if (w > after && w <= upto) return true;
  return false;
}

inline bool same_computation(const Plan& p, const std::vector<std::vector<int32_t>>& writers,
                             int32_t m, int32_t n) {
  const IrNode &a = p.ir.nodes[m], &b = p.ir.nodes[n];
  if (a.op != b.op || !(a.attrs == b.attrs) || a.ins.size() != b.ins.size() ||
      a.outs.size() != b.outs.size())
    return false;
  for (size_t i = 0; i < a.ins.size(); ++i)
    if (!(a.ins[i] == b.ins[i]) || written_between(writers, a.ins[i].buf, m, n)) return false;
  // Readers of n will read m's buffers: neither may change after it is produced.
  for (size_t i = 0; i < a.outs.size(); ++i)
    if (!writers[a.outs[i].buf].empty() || !writers[b.outs[i].buf].empty()) return false;
  return true;
}

}  // namespace detail

// same_as[n] = m < n when m computes the same values from the same, unchanged inputs.
// Only first occurrences are candidates for m, so same_as never chains.
inline void cse(Plan& p) {
  const auto& nodes = p.ir.nodes;
  p.same_as.assign(nodes.size(), -1);
  std::vector<std::vector<int32_t>> writers(p.ir.bufs.size());
  for (int32_t n = 0; n < int32_t(nodes.size()); ++n)
    if (nodes[n].inplace) writers[nodes[n].outs[0].buf].push_back(n);
  std::unordered_multimap<uint64_t, int32_t> seen;
  for (int32_t n = 0; n < int32_t(nodes.size()); ++n) {
    if (!detail::cse_candidate(p, n)) continue;
    uint64_t key = detail::cse_key(nodes[n]);
    auto [lo, hi] = seen.equal_range(key);
    for (auto it = lo; it != hi && p.same_as[n] < 0; ++it)
      if (detail::same_computation(p, writers, it->second, n)) p.same_as[n] = it->second;
    if (p.same_as[n] < 0) seen.emplace(key, n);
  }
}

// ---- fuse ----

namespace detail {

// A node that can run tile by tile inside a fused step. CPU nodes only: on a device, a kernel
// per tile and member would cost a launch each.
inline bool fusable(const Plan& p, int32_t n) {
  const IrNode& node = p.ir.nodes[n];
  if (!is_elementwise(op_info(node.op).kind) || p.same_as[n] >= 0 || node.dynamic ||
      node.outs.size() != 1 || is_view(node) || !node.outs[0].device.is_cpu())
    return false;
  for (const ValueRef& v : node.ins)
    if (!v.device.is_cpu()) return false;
  if (!node.inplace) return true;
  const ValueRef& w = node.outs[0];
  // A self-overlapping destination, or reading it at other positions (eager goes through a
  // temporary then), would make one tile see another tile's writes.
  for (size_t d = 0; d < w.shape.size(); ++d)
    if (w.shape[d] > 1 && w.strides[d] == 0) return false;
  for (const ValueRef& v : node.ins)
    if (v.buf == w.buf && !(v == w)) return false;
  return true;
}

// The state of a chain being grown: every buffer it writes, with the one view it writes through,
// and every view it reads.
struct Chain {
  std::vector<int32_t> nodes;
  Shape shape;  // every member's output shape
  std::unordered_map<int32_t, ValueRef> written;
  std::unordered_multimap<int32_t, ValueRef> read;

  // Whether node can join: same output shape, and every access to a buffer the chain writes
  // goes through the written view itself (so a tile reads only what that tile wrote).
  bool accepts(const IrNode& node) const {
    if (nodes.empty()) return true;
    const ValueRef& w = node.outs[0];
    if (w.shape != shape) return false;
    for (const ValueRef& v : node.ins)
      if (auto it = written.find(v.buf); it != written.end() && !(it->second == v)) return false;
    if (auto it = written.find(w.buf); it != written.end() && !(it->second == w)) return false;
    auto [lo, hi] = read.equal_range(w.buf);
    for (auto it = lo; it != hi; ++it)
      if (!(it->second == w)) return false;
    return true;
  }
  void add(int32_t n, const IrNode& node) {
    if (nodes.empty()) shape = node.outs[0].shape;
    nodes.push_back(n);
    written.emplace(node.outs[0].buf, node.outs[0]);
    for (const ValueRef& v : node.ins) read.emplace(v.buf, v);
  }
};

inline void flush_chain(Plan& p, Chain& c) {
  if (c.nodes.size() >= 2) {
    Step s;
    s.nodes = SmallVector<int32_t, 4>(c.nodes.begin(), c.nodes.end());
    s.fused = true;
    p.steps.push_back(std::move(s));
  } else {
    for (int32_t n : c.nodes) p.steps.push_back(Step{{n}, false});
  }
  c = Chain{};
}

}  // namespace detail

// Groups runs of consecutive fusable elementwise nodes into fused steps; every other node is
// a step of its own. Members keep host order, so running a step's nodes one by one is always
// an exact fallback.
inline void fuse(Plan& p) {
  p.steps.clear();
  detail::Chain chain;
  for (int32_t n = 0; n < int32_t(p.ir.nodes.size()); ++n) {
    const IrNode& node = p.ir.nodes[n];
    if (!detail::fusable(p, n)) {
      detail::flush_chain(p, chain);
      p.steps.push_back(Step{{n}, false});
      continue;
    }
    if (!chain.accepts(node)) detail::flush_chain(p, chain);
    chain.add(n, node);
  }
  detail::flush_chain(p, chain);
}

// ---- epilogues ----

// Plan::epilogue: a batch_norm n (CPU, float32/float64: a 16-bit y is rounded before the
// relu, so -0.0 could differ) whose output y, fresh and contiguous, no node but one reads: a
// relu m of y, in a step of its own, writing a fresh contiguous output z. No other node names
// y's buffer, and none can name z's before m: running m at n's place reads and writes
// nothing that the nodes between see (plan_memory reserves z from n on). The training-mode
// running-statistics update that autograd places between them is such a stretch.
inline void find_epilogues(Plan& p) {
  const auto& nodes = p.ir.nodes;
  p.epilogue.assign(nodes.size(), -1);
  auto users = buffer_users(p.ir);
  std::vector<uint8_t> alone(nodes.size(), 0);
  for (const Step& st : p.steps)
    if (st.nodes.size() == 1) alone[size_t(st.nodes[0])] = 1;
  auto plain = [](const ValueRef& v) {
    return v.device.is_cpu() && (v.dtype == DType::Float32 || v.dtype == DType::Float64) &&
           v.offset == 0 && v.strides == contiguous_strides(v.shape);
  };
  for (int32_t n = 0; n < int32_t(nodes.size()); ++n) {
    const IrNode& bn = nodes[size_t(n)];
    if (bn.op != Op::BatchNorm || bn.dynamic || bn.inplace || p.same_as[n] >= 0 || bn.outs.empty() ||
        bn.out_alias[0] >= 0 || !plain(bn.outs[0]) || p.ir.bufs[bn.outs[0].buf].external)
      continue;
    const ValueRef& y = bn.outs[0];
    const auto& u = users[y.buf];  // n itself and its readers
    int32_t m = -1;
    for (int32_t x : u)
      if (x != n) m = m < 0 ? x : -2;
    if (m < 0 || m <= n) continue;
    const IrNode& act = nodes[size_t(m)];
    if (act.op != Op::Relu || act.dynamic || act.inplace || p.same_as[m] >= 0 || !alone[size_t(m)] ||
        act.ins.size() != 1 || act.outs.size() != 1 || !(act.ins[0] == y) || act.out_alias[0] >= 0)
      continue;
    const ValueRef& z = act.outs[0];
    if (!plain(z) || z.dtype != y.dtype || z.shape != y.shape || p.ir.bufs[z.buf].external) continue;
    bool clash = false;
    for (int32_t x : users[z.buf]) clash |= x < m;
    for (const ValueRef& v : bn.ins) clash |= v.buf == z.buf;
    if (!clash) p.epilogue[size_t(n)] = m;
  }
}

// Per step: the fresh outputs of its members that no node outside the step touches and no
// cse'd node shares. A fused run may keep them in per-tile scratch instead of their buffers.
inline std::vector<std::vector<int32_t>> fused_intermediates(const Plan& p) {
  auto users = buffer_users(p.ir);
  std::vector<uint8_t> shared(p.ir.bufs.size(), 0);
  for (size_t n = 0; n < p.same_as.size(); ++n)
    if (p.same_as[n] >= 0)
      for (const ValueRef& o : p.ir.nodes[p.same_as[n]].outs) shared[o.buf] = 1;
  std::vector<std::vector<int32_t>> out(p.steps.size());
  for (size_t s = 0; s < p.steps.size(); ++s) {
    const Step& st = p.steps[s];
    if (!st.fused) continue;
    auto in_step = [&](int32_t n) {
      return std::find(st.nodes.begin(), st.nodes.end(), n) != st.nodes.end();
    };
    for (int32_t n : st.nodes) {
      const IrNode& node = p.ir.nodes[n];
      if (node.inplace || shared[node.outs[0].buf]) continue;
      const auto& u = users[node.outs[0].buf];
      if (std::all_of(u.begin(), u.end(), in_step)) out[s].push_back(node.outs[0].buf);
    }
  }
  return out;
}

// ---- plan_memory ----

namespace detail {

inline int64_t align64(int64_t n) { return (n + 63) / 64 * 64; }

// First-fit by size among free blocks (best fit), else the arena grows; released blocks merge
// with their neighbours.
struct Arena {
  std::vector<std::pair<int64_t, int64_t>> free;  // (offset, size), sorted by offset
  int64_t end = 0;

  int64_t take(int64_t size) {
    int best = -1;
    for (int i = 0; i < int(free.size()); ++i)
      if (free[i].second >= size && (best < 0 || free[i].second < free[best].second)) best = i;
    if (best < 0) {
      if (!free.empty() && free.back().first + free.back().second == end) {
        int64_t off = free.back().first;  // grow the last free block in place
        end = off + size;
        free.pop_back();
        return off;
      }
      end += size;
      return end - size;
    }
    int64_t off = free[best].first;
    free[best].first += size;
    free[best].second -= size;
    if (free[best].second == 0) free.erase(free.begin() + best);
    return off;
  }
  void give(int64_t off, int64_t size) {
    auto it = std::lower_bound(free.begin(), free.end(), std::make_pair(off, int64_t(0)));
    it = free.insert(it, {off, size});
    size_t i = it - free.begin();
    if (i + 1 < free.size() && free[i].first + free[i].second == free[i + 1].first) {
      free[i].second += free[i + 1].second;
      free.erase(free.begin() + i + 1);
    }
    if (i > 0 && free[i - 1].first + free[i - 1].second == free[i].first) {
      free[i - 1].second += free[i].second;
      free.erase(free.begin() + i);
    }
  }
};

}  // namespace detail

// arena_offset[b] for every internal buffer (an offset in its device's arena), live from its first to its last use by any node
// (dead, cse'd and fused-away nodes included: the executor may still run them). A cse'd node's
// readers read the first node's buffers, so those live as long as both.
inline void plan_memory(Plan& p) {
  const auto& ir = p.ir;
  size_t nb = ir.bufs.size();
  std::vector<int32_t> first(nb, INT_MAX), last(nb, -1);
  auto users = buffer_users(ir);
  // A fused step runs its members tile by tile, interleaved: every arena buffer it reads or
  // writes is live over the whole step (else a member's output could reuse memory another
  // member has yet to read for a later tile). Its intermediates are exempt: fused, they live
  // in scratch; unfused, the members run in order and their own liveness holds.
  std::vector<int32_t> step_lo(ir.nodes.size()), step_hi(ir.nodes.size());
  for (size_t n = 0; n < ir.nodes.size(); ++n) step_lo[n] = step_hi[n] = int32_t(n);
  for (const Step& st : p.steps)
    for (int32_t n : st.nodes) {
      step_lo[n] = st.nodes.front();
      step_hi[n] = st.nodes.back();
    }
  std::vector<uint8_t> scratch(nb, 0);
  for (const auto& bufs : fused_intermediates(p))
    for (int32_t b : bufs) scratch[b] = 1;
  for (size_t b = 0; b < nb; ++b)
    for (int32_t u : users[b]) {
      first[b] = std::min(first[b], scratch[b] ? u : step_lo[u]);
      last[b] = std::max(last[b], scratch[b] ? u : step_hi[u]);
    }
  // A relu run inside its batch_norm (Plan::epilogue) writes its output at the batch_norm.
  for (size_t n = 0; n < p.epilogue.size(); ++n)
    if (int32_t m = p.epilogue[n]; m >= 0) {
      int32_t z = ir.nodes[size_t(m)].outs[0].buf;
      first[z] = std::min(first[z], int32_t(n));
    }
  for (size_t n = 0; n < p.same_as.size(); ++n)
    if (p.same_as[n] >= 0)
      for (size_t i = 0; i < ir.nodes[n].outs.size(); ++i) {
        int32_t mb = ir.nodes[p.same_as[n]].outs[i].buf, nb2 = ir.nodes[n].outs[i].buf;
        last[mb] = std::max(last[mb], last[nb2]);
      }
  p.arena_offset.assign(nb, -1);
  p.arena_bytes = 0;
  p.device_arenas.clear();
  // One arena per device: the CPU's, then each device in order of first use.
  std::vector<Device> devices{Device::cpu()};
  for (size_t b = 0; b < nb; ++b)
    if (!ir.bufs[b].external && last[b] >= 0 &&
        std::find(devices.begin(), devices.end(), ir.bufs[b].device) == devices.end())
      devices.push_back(ir.bufs[b].device);
  for (Device dev : devices) {
    std::vector<int32_t> order;
    for (int32_t b = 0; b < int32_t(nb); ++b)
      if (!ir.bufs[b].external && last[b] >= 0 && ir.bufs[b].device == dev) order.push_back(b);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return first[a] < first[b]; });
    detail::Arena arena;
    std::vector<int32_t> active;  // buffers holding arena space
    for (int32_t b : order) {
      // A buffer last used by node n stays reserved through n: n's outputs must not overlap it.
      std::erase_if(active, [&](int32_t a) {
        if (last[a] >= first[b]) return false;
        arena.give(p.arena_offset[a], detail::align64(ir.bufs[a].nbytes));
        return true;
      });
      int64_t size = detail::align64(ir.bufs[b].nbytes);
      p.arena_offset[b] = size == 0 ? 0 : arena.take(size);
      if (size > 0) active.push_back(b);
    }
    if (dev.is_cpu())
      p.arena_bytes = arena.end;
    else
      p.device_arenas.push_back({dev, arena.end});
  }
}

// The non-CPU devices a block's nodes touch (the executor synchronizes them after a run).
inline std::vector<Device> devices_of(const BlockIr& ir) {
  std::vector<Device> ds;
  auto add = [&](const ValueRef& v) {
    if (!v.device.is_cpu() && std::find(ds.begin(), ds.end(), v.device) == ds.end())
      ds.push_back(v.device);
  };
  for (const IrNode& n : ir.nodes) {
    for (const ValueRef& v : n.ins) add(v);
    for (const ValueRef& v : n.outs) add(v);
  }
  return ds;
}

// The whole pipeline over one block.
inline Plan compile(BlockIr ir) {
  Plan p;
  p.ir = std::move(ir);
  p.devices = devices_of(p.ir);
  dce(p);
  cse(p);
  fuse(p);
  find_epilogues(p);
  plan_memory(p);
  return p;
}

}  // namespace terra::graph
