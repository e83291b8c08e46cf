// terra/trace/trace.hpp: the thread-local record of one iteration's op calls.
// Each call becomes an OpRecord: op, attributes, the program location (call site plus module
// stack, with an occurrence count so that repeated calls from one place stay distinct), and for
// every input and output a view of a buffer. Buffers are numbered in order of first use: a
// buffer an op of this iteration created is internal; anything else is external, with its
// provenance (a persistent tensor, a value carried from an earlier iteration, or a feed the
// host built during this iteration).
#pragma once

#include <algorithm>
#include <cassert>
#include <span>
#include <string>
#include <vector>

#include "terra/graph/ir.hpp"
#include "terra/ops/mode.hpp"

namespace terra::trace {

// Where in the program an op was called.
struct Site {
  const char* file = "";
  uint32_t line = 0, column = 0;
  uint64_t modules = 0;     // hash of the module-call stack
  uint32_t occurrence = 0;  // how many earlier calls of this iteration came from here

  // The place in the program (call site and module stack), and the place with occurrence.
  uint64_t place() const {
    uint64_t h = reinterpret_cast<uintptr_t>(file) * 0x9e3779b97f4a7c15ull;
    h ^= (uint64_t(line) << 20 | column) + modules + (h << 6) + (h >> 2);
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
  }
  uint64_t key() const { return place() ^ (uint64_t(occurrence) * 0x94d049bb133111ebull); }
  bool same_place(const Site& o) const {
    return line == o.line && column == o.column && modules == o.modules && file == o.file;
  }
  friend bool operator==(const Site& a, const Site& b) {
    return a.same_place(b) && a.occurrence == b.occurrence;
  }
  std::string str() const {
    std::string f = file;
    if (auto p = f.find_last_of('/'); p != std::string::npos) f = f.substr(p + 1);
    return f + ":" + std::to_string(line) + (occurrence ? "#" + std::to_string(occurrence) : "");
  }
};

enum class Provenance : uint8_t { Internal, Persistent, Carried, Feed };
inline const char* provenance_name(Provenance p) {
  constexpr const char* names[] = {"internal", "persistent", "carried", "feed"};
  return names[int(p)];
}

struct TraceBuf {
  Provenance prov = Provenance::Internal;
  int64_t nbytes = 0;
  int32_t producer = -1;  // internal: the op that created it
  Device device = Device::cpu();
  uint64_t version = 0;   // external: its storage's version when first used in the iteration
  bool external() const { return prov != Provenance::Internal; }
};

struct OpRecord {
  OpRecord() {}  // user-provided: emplace_back() must not zero-fill the ~1 KB of inline buffers
  Op op = Op::Copy;
  Attrs attrs;
  Site site;
  SmallVector<graph::ValueRef, 3> ins;   // buf: index into Trace::bufs
  SmallVector<graph::ValueRef, 2> outs;
  SmallVector<int8_t, 2> out_alias;
  bool inplace = false;
  // A compact record (a co-executed call that matched this node): ins and outs hold only
  // their buffers, and the layouts and attributes are the node's, filled in by
  // Recorder::expand() before the trace is merged. Null: a full record.
  const graph::IrNode* like = nullptr;
};

struct Trace {
  std::vector<OpRecord> ops;
  std::vector<TraceBuf> bufs;
  std::vector<int32_t> fetches;  // ops.size() at each host read of a traced value
  void clear() {
    ops.clear();
    bufs.clear();
    fetches.clear();
  }
};

// Calls so far per program place in this iteration: an open-addressing table that clears in
// O(1) (a generation stamp per slot), since it is consulted on every op call.
class PlaceCounts {
 public:
  void clear() {
    if (++gen_ == 0) {  // the stamp wrapped: really clear
      for (Slot& s : slots_) s.gen = 0;
      gen_ = 1;
    }
    used_ = 0;
  }
  // The count for `key` before this call, then counts this call.
  uint32_t next(uint64_t key) {
    if (2 * (used_ + 1) > slots_.size()) grow();
    size_t mask = slots_.size() - 1;
    for (size_t i = size_t(key) & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.gen != gen_) {
        s = {key, 1, gen_};
        ++used_;
        return 0;
      }
      if (s.key == key) return s.count++;
    }
  }

 private:
  struct Slot {
    uint64_t key = 0;
    uint32_t count = 0, gen = 0;
  };
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(std::max<size_t>(64, old.size() * 2), Slot{});
    uint32_t g = gen_;
    gen_ = 1;
    used_ = 0;
    for (const Slot& s : old)
      if (s.gen == g) {
        size_t mask = slots_.size() - 1, i = size_t(s.key) & mask;
        while (slots_[i].gen == gen_) i = (i + 1) & mask;
        slots_[i] = {s.key, s.count, gen_};
        ++used_;
      }
  }
  std::vector<Slot> slots_;
  size_t used_ = 0;
  uint32_t gen_ = 1;
};

// Builds the trace of one iteration (owned by the engine; one per host thread).
class Recorder {
 public:
  // serial: unique per iteration in the process; birth: Storage::birth bound at its start.
  void begin(uint64_t serial, uint64_t birth) {
    serial_ = serial;
    open_ = false;
    birth_ = birth;
    trace_.clear();
    occurrences_.clear();
  }
  Trace& trace() { return trace_; }
  uint64_t serial() const { return serial_; }

  // The buffer index of t's storage in this iteration (registering it as external if new).
  int32_t buffer_of(const Tensor& t) {
    Storage* s = t.storage().get();
    if ((s->trace_tag >> 32) == serial_) return int32_t(s->trace_tag & 0xffffffffu) - 1;
    TraceBuf b;
    b.prov = s->produced_by ? Provenance::Carried
             : s->birth >= birth_ ? Provenance::Feed
                                  : Provenance::Persistent;
    b.nbytes = int64_t(s->nbytes());
    b.device = s->device();
    b.version = s->version.load(std::memory_order_relaxed);
    return add_buffer(s, b);
  }
  // A fresh output created by op `producer`.
  int32_t new_internal(Storage* s, int32_t producer) {
    s->produced_by = serial_;
    return add_buffer(s, {Provenance::Internal, int64_t(s->nbytes()), producer, s->device()});
  }
  graph::ValueRef ref(const Tensor& t) {
    return {buffer_of(t), t.shape(), t.strides(), t.storage_offset(), t.dtype(), t.device()};
  }
  bool knows(const Tensor& t) const { return (t.storage()->trace_tag >> 32) == serial_; }
  // Did an op of this iteration make t's storage, or write it in place?
  bool made_or_written(const Tensor& t) const {
    if (!knows(t)) return false;
    const Storage& s = *t.storage();
    const TraceBuf& b = trace_.bufs[size_t(s.trace_tag & 0xffffffffu) - 1];
    return !b.external() || s.version.load(std::memory_order_relaxed) != b.version;
  }

  Site site(const Loc& loc) {
    Site s = place_of(loc);
    s.occurrence = occurrences_.next(s.place());
    return s;
  }
  // The place of a call at loc (occurrence 0), without counting the call.
  static Site place_of(const Loc& loc) {
    return {loc.file_name(), loc.line(), loc.column(), module_hash(), 0};
  }

  // Opens the record of a call before its outputs exist (op, attributes, site, inputs) as the
  // trace's last op, built in place: no copy of its shapes and strides is ever made. Exactly
  // one of finish() or finish_expected() closes it, before any other call records; an
  // OpenGuard drops it if the call throws first.
  OpRecord& start(const OpCall& call) {
    assert(!open_);
    open_ = true;
    OpRecord& r = trace_.ops.emplace_back();
    r.op = call.op;
    r.attrs = call.attrs;
    r.site = site(call.loc);
    for (const Tensor& t : call.inputs) r.ins.push_back(ref(t));
    r.inplace = call.out != nullptr;
    return r;
  }
  // Completes the open record with the call's outputs (eager or lazy). An output that shares
  // storage with an input is a view of it; any other output is a fresh internal buffer.
  void finish(const OpCall& call, const OutList& outs) {
    open_ = false;
    OpRecord& r = trace_.ops.back();
    int32_t me = int32_t(trace_.ops.size()) - 1;
    for (size_t k = 0; k < outs.size(); ++k) {
      int alias = -1;
      for (size_t i = 0; !r.inplace && alias < 0 && i < call.inputs.size(); ++i)
        if (call.inputs[i].storage() == outs[k].storage()) alias = int(i);
      r.out_alias.push_back(int8_t(alias));
      if (alias < 0 && !r.inplace && !knows(outs[k])) new_internal(outs[k].storage().get(), me);
      r.outs.push_back(ref(outs[k]));
    }
  }
  // Completes the open record whose outputs were filled in before they existed (a co-executed
  // call: fresh outputs numbered from bufs.size() in order, views naming their input's
  // buffer), once `outs` exist: the refs are not built a second time.
  void finish_expected(const OutList& outs) {
    open_ = false;
    OpRecord& r = trace_.ops.back();
    int32_t me = int32_t(trace_.ops.size()) - 1;
    for (size_t k = 0; k < outs.size(); ++k)
      if (!r.inplace && r.out_alias[k] < 0) {
        assert(r.outs[k].buf == int32_t(trace_.bufs.size()));
        new_internal(outs[k].storage().get(), me);
      }
  }
  // Records a co-executed call that matched `node` (op, place, attributes' structure and
  // input layouts checked by the caller) compactly: the buffers of its inputs `ins` and
  // outputs `outs` (fresh outputs numbered from bufs.size(), as finish_expected() makes
  // them), the node for everything else. Open until finish_expected().
  OpRecord& start_compact(const OpCall& call, const Site& site, const graph::IrNode& node,
                          std::span<const int32_t> ins, std::span<const int32_t> outs) {
    assert(!open_);
    open_ = true;
    OpRecord& r = trace_.ops.emplace_back();
    r.op = call.op;
    r.site = site;
    r.inplace = call.out != nullptr;
    r.like = &node;
    for (int32_t b : ins) r.ins.emplace_back().buf = b;
    for (int32_t b : outs) r.outs.emplace_back().buf = b;
    r.out_alias = node.out_alias;
    return r;
  }
  // Gives every compact record its node's layouts and attributes (before a merge, while the
  // nodes they point at are unchanged). The attributes' scalars, seeds and offsets are the
  // node's, not the call's: a graph takes those from each run, never from its nodes.
  void expand() {
    for (OpRecord& r : trace_.ops) {
      if (!r.like) continue;
      const graph::IrNode& n = *r.like;
      r.attrs = n.attrs;
      for (size_t j = 0; j < r.ins.size(); ++j) {
        int32_t b = r.ins[j].buf;
        r.ins[j] = n.ins[j];
        r.ins[j].buf = b;
      }
      for (size_t k = 0; k < r.outs.size(); ++k) {
        int32_t b = r.outs[k].buf;
        r.outs[k] = n.outs[k];
        r.outs[k].buf = b;
      }
      r.like = nullptr;
    }
  }
  // Drops the record still open when its call throws: the call never happened.
  struct OpenGuard {
    Recorder& rec;
    ~OpenGuard() {
      if (rec.open_) {
        rec.trace_.ops.pop_back();
        rec.open_ = false;
      }
    }
  };

  void note_fetch() {
    if (trace_.fetches.empty() || trace_.fetches.back() != int32_t(trace_.ops.size()))
      trace_.fetches.push_back(int32_t(trace_.ops.size()));
  }

 private:
  int32_t add_buffer(Storage* s, TraceBuf b) {
    trace_.bufs.push_back(b);
    int32_t i = int32_t(trace_.bufs.size()) - 1;
    s->trace_tag = (serial_ << 32) | uint64_t(i + 1);
    return i;
  }

  Trace trace_;
  bool open_ = false;  // trace_.ops.back() is a started, unfinished record
  uint64_t serial_ = 0, birth_ = 0;
  PlaceCounts occurrences_;
};

}  // namespace terra::trace
