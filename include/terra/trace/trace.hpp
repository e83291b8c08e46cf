// terra/trace/trace.hpp: the thread-local record of one iteration's op calls.
// Each call becomes an OpRecord: op, attributes, the program location (call site plus module
// stack, with an occurrence count so that repeated calls from one place stay distinct), and for
// every input and output a view of a buffer. Buffers are numbered in order of first use: a
// buffer an op of this iteration created is internal; anything else is external, with its
// provenance (a persistent tensor, a value carried from an earlier iteration, or a feed the
// host built during this iteration).
#pragma once

#include <string>
#include <unordered_map>
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
  bool external() const { return prov != Provenance::Internal; }
};

struct OpRecord {
  Op op = Op::Copy;
  Attrs attrs;
  Site site;
  SmallVector<graph::ValueRef, 3> ins;   // buf: index into Trace::bufs
  SmallVector<graph::ValueRef, 2> outs;
  SmallVector<int8_t, 2> out_alias;
  bool inplace = false;
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

// Builds the trace of one iteration (owned by the engine; one per host thread).
class Recorder {
 public:
  // serial: unique per iteration in the process; birth: Storage::birth bound at its start.
  void begin(uint64_t serial, uint64_t birth) {
    serial_ = serial;
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
    return add_buffer(s, b);
  }
  // A fresh output created by op `producer`.
  int32_t new_internal(Storage* s, int32_t producer) {
    s->produced_by = serial_;
    return add_buffer(s, {Provenance::Internal, int64_t(s->nbytes()), producer});
  }
  graph::ValueRef ref(const Tensor& t) {
    return {buffer_of(t), t.shape(), t.strides(), t.storage_offset(), t.dtype()};
  }
  bool knows(const Tensor& t) const { return (t.storage()->trace_tag >> 32) == serial_; }

  Site site(const Loc& loc) {
    Site s{loc.file_name(), loc.line(), loc.column(), module_hash(), 0};
    s.occurrence = occurrences_[s.place()]++;
    return s;
  }

  // The record of a call before its outputs exist: op, attributes, site, inputs.
  OpRecord start(const OpCall& call) {
    OpRecord r;
    r.op = call.op;
    r.attrs = call.attrs;
    r.site = site(call.loc);
    for (const Tensor& t : call.inputs) r.ins.push_back(ref(t));
    r.inplace = call.out != nullptr;
    return r;
  }
  // Completes r with the call's outputs (eager or lazy) and appends it. An output that shares
  // storage with an input is a view of it; any other output is a fresh internal buffer.
  void finish(OpRecord r, const OpCall& call, const OutList& outs) {
    int32_t me = int32_t(trace_.ops.size());
    for (size_t k = 0; k < outs.size(); ++k) {
      int alias = -1;
      for (size_t i = 0; !r.inplace && alias < 0 && i < call.inputs.size(); ++i)
        if (call.inputs[i].storage() == outs[k].storage()) alias = int(i);
      r.out_alias.push_back(int8_t(alias));
      if (alias < 0 && !r.inplace && !knows(outs[k])) new_internal(outs[k].storage().get(), me);
      r.outs.push_back(ref(outs[k]));
    }
    trace_.ops.push_back(std::move(r));
  }
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
  uint64_t serial_ = 0, birth_ = 0;
  std::unordered_map<uint64_t, uint32_t> occurrences_;
};

}  // namespace terra::trace
