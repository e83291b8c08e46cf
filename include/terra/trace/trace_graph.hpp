// terra/trace/trace_graph.hpp: traces of many iterations merged into one graph of blocks.
// A block is a straight-line run of op calls; where iterations took different paths, a block
// ends and has several successors. Two calls are the same node when they agree on op,
// attributes (all but scalars, seeds and offsets, which are fed per run), program location,
// and the views they read: a value made earlier in the same block must come from the same
// node, a value from outside the block (parameter, feed, earlier block) only needs the same
// layout and the same sharing (two reads of one storage stay one buffer). A divergent path
// re-joins the graph at the first call whose program location and inputs match a node that
// already exists, so k independent host decisions give O(k) blocks, not 2^k paths.
#pragma once

#include <algorithm>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "terra/trace/trace.hpp"

namespace terra::trace {

struct Block {
  graph::BlockIr ir;
  std::vector<Site> sites;       // per node
  std::vector<Provenance> prov;  // per buffer, as first seen
  std::vector<int32_t> succ;     // successor blocks, in order of first use
  bool can_end = false;          // some iteration ended after this block
  int seen = 0;                  // traces that walked through it
  uint64_t version = 1;          // bumped whenever its nodes change (compiled plans go stale)
  uint32_t stamp = 0;            // scratch: last trace that counted it
};

// Which trace buffer stands for which block buffer, for one pass through one block.
class Binding {
 public:
  void reset(size_t trace_bufs, size_t block_bufs) {
    ++stamp_;
    if (g2b_.size() < trace_bufs) g2b_.resize(trace_bufs, {0, -1});
    if (b2g_.size() < block_bufs) b2g_.resize(block_bufs, {0, -1});
  }
  int32_t block_of(int32_t g) const {
    return g < int32_t(g2b_.size()) && g2b_[g].first == stamp_ ? g2b_[g].second : -1;
  }
  bool bound(int32_t b) const { return b < int32_t(b2g_.size()) && b2g_[b].first == stamp_; }
  void bind(int32_t g, int32_t b) {
    if (g >= int32_t(g2b_.size())) g2b_.resize(g + 1, {0, -1});
    if (b >= int32_t(b2g_.size())) b2g_.resize(b + 1, {0, -1});
    g2b_[g] = {stamp_, b};
    b2g_[b] = {stamp_, g};
  }
  void unbind(int32_t g, int32_t b) {
    g2b_[g].first = 0;
    b2g_[b].first = 0;
  }

 private:
  uint32_t stamp_ = 0;
  std::vector<std::pair<uint32_t, int32_t>> g2b_, b2g_;
};

inline bool same_layout(const graph::ValueRef& a, const graph::ValueRef& b) {
  return a.dtype == b.dtype && a.offset == b.offset && a.device == b.device && a.shape == b.shape &&
         a.strides == b.strides;
}
inline bool same_structure(const Attrs& a, const Attrs& b) {
  return a.ints == b.ints && a.dtype == b.dtype && a.device == b.device &&
         a.scalars.size() == b.scalars.size();
}

// Ops whose result size depends on input values (the host reads them to size it). Once one
// has been called in an iteration, a later call that differs from its node only in shapes and
// integer attributes makes the node dynamic (IrNode::dynamic) instead of a new specialization:
// such sizes change nearly every step, and what is computed from them changes with them.
inline bool value_sized(Op op) { return op == Op::MaskedSelect; }

// What a call must share with node n whatever its shapes: op, place in the program, arity,
// aliasing, attributes but for the values of `ints`, and every operand's dtype and device.
inline bool same_kind(const Block& blk, int32_t n, const OpRecord& r) {
  const graph::IrNode& node = blk.ir.nodes[n];
  if (node.op != r.op || node.inplace != r.inplace || !blk.sites[n].same_place(r.site) ||
      node.ins.size() != r.ins.size() || node.outs.size() != r.outs.size() ||
      node.out_alias != r.out_alias || node.attrs.ints.size() != r.attrs.ints.size() ||
      node.attrs.dtype != r.attrs.dtype || !(node.attrs.device == r.attrs.device) ||
      node.attrs.scalars.size() != r.attrs.scalars.size())
    return false;
  for (size_t j = 0; j < r.ins.size(); ++j)
    if (node.ins[j].dtype != r.ins[j].dtype || !(node.ins[j].device == r.ins[j].device)) return false;
  for (size_t k = 0; k < r.outs.size(); ++k)
    if (node.outs[k].dtype != r.outs[k].dtype || !(node.outs[k].device == r.outs[k].device)) return false;
  return true;
}

// Must output k of node n keep its traced layout? A fresh output or an in-place destination
// in a buffer of fixed size must; a view's layout is the run's (the host checked it against
// its input), and so is a dynamic buffer's.
inline bool fixed_output(const Block& blk, const graph::IrNode& node, size_t k) {
  return (node.inplace || node.out_alias[k] < 0) && !blk.ir.bufs[node.outs[k].buf].dynamic;
}

// Could node n of `blk` stand for record r, buffers aside? (Same op, attributes, place in
// the program, and layouts, devices included. The occurrence count is not compared: a path that skips a call
// shifts the counts of every later call from the same place, e.g. the per-parameter lines
// of an optimizer step, and those calls are still the same computations.) A dynamic node
// takes any shapes and integer attributes but keeps its fixed outputs' layouts.
inline bool similar_node(const Block& blk, int32_t n, const OpRecord& r) {
  if (!same_kind(blk, n, r)) return false;
  const graph::IrNode& node = blk.ir.nodes[n];
  if (node.dynamic) {
    for (size_t k = 0; k < r.outs.size(); ++k)
      if (fixed_output(blk, node, k) && !same_layout(node.outs[k], r.outs[k])) return false;
    return true;
  }
  if (node.attrs.ints != r.attrs.ints) return false;
  for (size_t j = 0; j < r.ins.size(); ++j)
    if (!same_layout(node.ins[j], r.ins[j])) return false;
  for (size_t k = 0; k < r.outs.size(); ++k)
    if (!same_layout(node.outs[k], r.outs[k])) return false;
  return true;
}

// Can node n of `blk`, already found similar to a call, take the call's trace buffers: its
// inputs `ins` and outputs `outs`? A buffer bound earlier in this pass must be the one the
// node names; an unbound one (from outside this pass, or a fresh output) must be of the kind
// the node expects and not taken yet. On success they are bound; on failure nothing is.
inline bool bind_node(const Block& blk, int32_t n, std::span<const int32_t> ins,
                      std::span<const int32_t> outs, Binding& bind) {
  const graph::IrNode& node = blk.ir.nodes[n];
  SmallVector<std::pair<int32_t, int32_t>, 6> added;
  auto fail = [&] {
    for (auto [g, b] : added) bind.unbind(g, b);
    return false;
  };
  auto take = [&](int32_t want, int32_t got, bool fresh) {
    int32_t b = bind.block_of(got);
    if (b >= 0) return b == want;
    const graph::IrBuffer& wb = blk.ir.bufs[want];
    if (bind.bound(want) || wb.external == fresh) return false;
    bind.bind(got, want);
    added.push_back({got, want});
    return true;
  };
  for (size_t j = 0; j < ins.size(); ++j)
    if (!take(node.ins[j].buf, ins[j], false)) return fail();
  for (size_t k = 0; k < outs.size(); ++k) {
    bool fresh = !node.inplace && node.out_alias[k] < 0;
    if (!take(node.outs[k].buf, outs[k], fresh)) return fail();
  }
  return true;
}

// Does node n of `blk` stand for record r? On success the record's buffers are bound to the
// block's (fresh outputs included); on failure nothing is bound.
inline bool match_node(const Block& blk, int32_t n, const OpRecord& r, Binding& bind) {
  if (!similar_node(blk, n, r)) return false;
  SmallVector<int32_t, 4> ins, outs;
  for (const graph::ValueRef& v : r.ins) ins.push_back(v.buf);
  for (const graph::ValueRef& v : r.outs) outs.push_back(v.buf);
  return bind_node(blk, n, {ins.data(), ins.size()}, {outs.data(), outs.size()}, bind);
}

struct GraphLimits {
  int max_specializations = 8;  // distinct nodes per program location
  int max_blocks = 256;
  bool dynamic = true;  // value-sized results make dynamic nodes (see value_sized)
};

class TraceGraph {
 public:
  std::vector<Block> blocks;
  std::vector<std::string> notes;  // why the graph changed (re-trace reasons), newest last

  bool empty() const { return blocks.empty(); }
  size_t num_nodes() const {
    size_t n = 0;
    for (const Block& b : blocks) n += b.ir.nodes.size();
    return n;
  }

  // Merges a complete trace. Returns false when a limit stopped it (the graph is still valid;
  // iterations that take the unmerged path keep running eagerly).
  bool merge(const Trace& t, const GraphLimits& lim) {
    if (blocks.empty()) blocks.emplace_back();
    ++trace_stamp_;
    int32_t cur = 0;
    size_t idx = 0;
    bool fresh = blocks[0].ir.nodes.empty() && blocks[0].succ.empty() && !blocks[0].can_end;
    enter(cur, t);
    size_t fetch = 0;
    bool sized = false;  // a value-sized op was called: shape changes make nodes dynamic
    for (size_t i = 0; i < t.ops.size(); ++i) {
      while (fetch < t.fetches.size() && t.fetches[fetch] <= int32_t(i)) {
        if (idx < blocks[cur].ir.nodes.size() && idx > 0) split(cur, idx);  // end at a fetch
        fresh = false;
        ++fetch;
      }
      const OpRecord& r = t.ops[i];
      sized |= lim.dynamic && value_sized(r.op);
      if (idx < blocks[cur].ir.nodes.size()) {
        if (match_node(blocks[cur], int32_t(idx), r, bind_) ||
            (sized && promote(cur, int32_t(idx), r) && match_node(blocks[cur], int32_t(idx), r, bind_))) {
          ++idx;
          continue;
        }
        split(cur, idx);
      }
      if (int32_t s = find_successor(cur, r, sized); s >= 0) {
        cur = s, idx = 1, fresh = false;
        continue;
      }
      if (int32_t j = find_join(cur, r, t); j >= 0) {
        cur = j, idx = 1, fresh = false;
        continue;
      }
      // Checked before a new block is made: stopping after it would leave an empty successor
      // that every later walk through `cur` would have to step over.
      if (site_count_[r.site.key()] >= lim.max_specializations)
        return note("specialization limit reached at " + r.site.str());
      if (!fresh) {
        if (int32_t(blocks.size()) >= lim.max_blocks) return note("block limit reached");
        blocks.emplace_back();
        blocks.back().seen = 1;
        blocks.back().stamp = trace_stamp_;
        blocks[cur].succ.push_back(int32_t(blocks.size()) - 1);
        cur = int32_t(blocks.size()) - 1;
        bind_.reset(t.bufs.size(), 0);
        fresh = true;
      }
      append(cur, r, t);
      idx = blocks[cur].ir.nodes.size();
    }
    if (idx < blocks[cur].ir.nodes.size()) split(cur, idx);
    blocks[cur].can_end = true;
    return true;
  }

 private:
  bool note(std::string why) {
    notes.push_back(std::move(why));
    return false;
  }
  void enter(int32_t b, const Trace& t) {
    bind_.reset(t.bufs.size(), blocks[b].ir.bufs.size());
    if (blocks[b].stamp != trace_stamp_) {
      blocks[b].stamp = trace_stamp_;
      ++blocks[b].seen;
    }
  }
  // The successor of cur whose first node r is; with `sized`, one that r makes dynamic.
  int32_t find_successor(int32_t cur, const OpRecord& r, bool sized) {
    for (int pass = 0; pass < 1 + sized; ++pass)
      for (int32_t s : blocks[cur].succ) {
        if (blocks[s].ir.nodes.empty()) continue;
        bind_.reset(0, blocks[s].ir.bufs.size());
        if (pass == 1 && !promote(s, 0, r)) continue;
        if (match_node(blocks[s], 0, r, bind_)) {
          mark_seen(s);
          return s;
        }
      }
    return -1;
  }
  // Makes node n of block b dynamic so that it stands for r, which differs from it only in
  // shapes and integer attributes (same_kind): its fresh outputs whose layout changed get
  // dynamic buffers. False, changing nothing, where r differs otherwise or writes in place
  // through another layout into a buffer of fixed size.
  bool promote(int32_t b, int32_t n, const OpRecord& r) {
    Block& blk = blocks[b];
    if (!same_kind(blk, n, r) || similar_node(blk, n, r)) return false;
    graph::IrNode& node = blk.ir.nodes[n];
    for (size_t k = 0; k < r.outs.size(); ++k)
      if (node.inplace && fixed_output(blk, node, k) && !same_layout(node.outs[k], r.outs[k]))
        return false;
    node.dynamic = true;
    for (size_t k = 0; k < r.outs.size(); ++k)
      if (fixed_output(blk, node, k) && !same_layout(node.outs[k], r.outs[k]))
        blk.ir.bufs[node.outs[k].buf].dynamic = true;
    ++blk.version;
    return true;
  }
  // A node elsewhere with the same program location and matching inputs: the paths re-join.
  int32_t find_join(int32_t cur, const OpRecord& r, const Trace& t) {
    auto it = sites_.find(r.site.place());
    if (it == sites_.end()) return -1;
    // Candidates with the same occurrence first: the likeliest re-join point.
    std::vector<std::pair<int32_t, int32_t>> cands;
    // Never a block this trace already went through: that would make a loop of one trace.
    for (auto [b, n] : it->second)
      if (blocks[b].stamp != trace_stamp_ && similar_node(blocks[b], n, r)) cands.push_back({b, n});
    std::stable_partition(cands.begin(), cands.end(), [&](auto c) {
      return blocks[c.first].sites[c.second].occurrence == r.site.occurrence;
    });
    for (auto [b, n] : cands) {
      int32_t target = b;
      if (n > 0) {
        Block suffix = slice(blocks[b], n, blocks[b].ir.nodes.size());
        bind_.reset(t.bufs.size(), suffix.ir.bufs.size());
        if (!match_node(suffix, 0, r, bind_)) continue;
        split(b, n);
        target = blocks[b].succ.back();
        if (cur == b) cur = target;  // we were at the end of the block we split
      } else {
        bind_.reset(t.bufs.size(), blocks[b].ir.bufs.size());
        if (!match_node(blocks[b], 0, r, bind_)) continue;
      }
      auto& succ = blocks[cur].succ;
      if (std::find(succ.begin(), succ.end(), target) == succ.end()) succ.push_back(target);
      // The bindings were made against the block before the split; redo them on the target.
      bind_.reset(t.bufs.size(), blocks[target].ir.bufs.size());
      match_node(blocks[target], 0, r, bind_);
      mark_seen(target);
      return target;
    }
    return -1;
  }
  void mark_seen(int32_t b) {
    if (blocks[b].stamp != trace_stamp_) {
      blocks[b].stamp = trace_stamp_;
      ++blocks[b].seen;
    }
  }

  // Nodes [from, to) of blk as a block of their own: buffers renumbered by first use, values
  // made before `from` become external.
  static Block slice(const Block& blk, size_t from, size_t to) {
    Block out;
    std::vector<int32_t> remap(blk.ir.bufs.size(), -1);
    auto use = [&](graph::ValueRef v) {
      int32_t& m = remap[v.buf];
      if (m < 0) {
        graph::IrBuffer nb = blk.ir.bufs[v.buf];
        bool internal = !nb.external && nb.producer >= int32_t(from) && nb.producer < int32_t(to);
        nb.external = !internal;
        nb.producer = internal ? nb.producer - int32_t(from) : -1;
        out.ir.bufs.push_back(nb);
        out.prov.push_back(internal ? Provenance::Internal
                           : blk.ir.bufs[v.buf].external ? blk.prov[v.buf]
                                                          : Provenance::Carried);
        m = int32_t(out.ir.bufs.size()) - 1;
      }
      v.buf = m;
      return v;
    };
    for (size_t n = from; n < to; ++n) {
      graph::IrNode node = blk.ir.nodes[n];
      for (auto& v : node.ins) v = use(v);
      for (auto& v : node.outs) v = use(v);
      out.ir.nodes.push_back(std::move(node));
      out.sites.push_back(blk.sites[n]);
    }
    return out;
  }

  // Splits block b before node n: b keeps [0, n), a new block takes the rest and b's edges.
  void split(int32_t b, size_t n) {
    Block tail = slice(blocks[b], n, blocks[b].ir.nodes.size());
    Block head = slice(blocks[b], 0, n);
    tail.succ = std::move(blocks[b].succ);
    tail.can_end = blocks[b].can_end;
    tail.seen = head.seen = blocks[b].seen;
    tail.stamp = head.stamp = blocks[b].stamp;
    head.version = tail.version = blocks[b].version + 1;
    int32_t t = int32_t(blocks.size());
    head.succ = {t};
    blocks[b] = std::move(head);
    blocks.push_back(std::move(tail));
    reindex_sites();
  }

  // Appends record r to block b (the tail being built), binding its buffers.
  void append(int32_t b, const OpRecord& r, const Trace& t) {
    Block& blk = blocks[b];
    graph::IrNode node;
    node.op = r.op;
    node.attrs = r.attrs;
    node.inplace = r.inplace;
    node.out_alias = r.out_alias;
    int32_t me = int32_t(blk.ir.nodes.size());
    auto use = [&](graph::ValueRef v, bool fresh) {
      int32_t m = bind_.block_of(v.buf);
      if (m < 0) {
        graph::IrBuffer nb;
        nb.external = !fresh;
        nb.nbytes = t.bufs[v.buf].nbytes;
        nb.producer = fresh ? me : -1;
        nb.device = v.device;
        blk.ir.bufs.push_back(nb);
        blk.prov.push_back(fresh ? Provenance::Internal : t.bufs[v.buf].prov);
        m = int32_t(blk.ir.bufs.size()) - 1;
        bind_.bind(v.buf, m);
      }
      v.buf = m;
      return v;
    };
    for (const auto& v : r.ins) node.ins.push_back(use(v, false));
    for (size_t k = 0; k < r.outs.size(); ++k)
      node.outs.push_back(use(r.outs[k], !r.inplace && r.out_alias[k] < 0));
    blk.ir.nodes.push_back(std::move(node));
    blk.sites.push_back(r.site);
    ++blk.version;
    sites_[r.site.place()].push_back({b, me});
    ++site_count_[r.site.key()];
  }

  void reindex_sites() {
    sites_.clear();
    for (int32_t b = 0; b < int32_t(blocks.size()); ++b)
      for (int32_t n = 0; n < int32_t(blocks[b].sites.size()); ++n)
        sites_[blocks[b].sites[n].place()].push_back({b, n});
  }

  Binding bind_;
  uint32_t trace_stamp_ = 0;
  std::unordered_map<uint64_t, std::vector<std::pair<int32_t, int32_t>>> sites_;  // by place
  std::unordered_map<uint64_t, int> site_count_;  // nodes ever created per location
};

}  // namespace terra::trace
