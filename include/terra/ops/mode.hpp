// terra/ops/mode.hpp: the per-thread mode that dispatch() consults, and nothing else.
// Eager: run the kernel now. Tracing: as eager, and record the call. Co-executing: check the
// call against the compiled block and hand out a lazy handle. Only the co-execution engine
// switches modes (RAII ModeGuard); the host code never sees them.
#pragma once

#include "terra/ops/op.hpp"

namespace terra::trace {

enum class Mode : uint8_t { Eager, Tracing, CoExecuting };

// What a non-eager mode does with op calls and host reads (implemented by exec/engine.hpp).
class Hook {
 public:
  virtual ~Hook() = default;
  virtual Mode mode() const = 0;
  virtual OutList dispatch(const OpCall& call, const OpInfo& info) = 0;
  // The host is about to read t's values (item, to_vector, printing, operator bool).
  virtual void on_fetch(const Tensor& t) = 0;
};

inline Hook*& active_hook() {
  thread_local Hook* hook = nullptr;
  return hook;
}
inline Mode mode() {
  Hook* h = active_hook();
  return h ? h->mode() : Mode::Eager;
}

// Installs a hook for a scope (nullptr: eager) and restores the previous one.
class ModeGuard {
 public:
  explicit ModeGuard(Hook* hook) : prev_(active_hook()) { active_hook() = hook; }
  ~ModeGuard() { active_hook() = prev_; }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  Hook* prev_;
};

// The stack of module calls, part of an op's program location: the same line of
// Linear::forward is a different place in the program for each Linear instance.
struct ModuleStack {
  SmallVector<uint64_t, 16> hashes{0};  // hashes[i]: the stack's hash with i entries
};
inline ModuleStack& module_stack() {
  thread_local ModuleStack s;
  return s;
}
inline uint64_t module_hash() { return module_stack().hashes.back(); }

// Marks a module's forward call (pushed by nn::ModuleHolder and nn::Sequential).
class ModuleScope {
 public:
  explicit ModuleScope(const void* module) {
    auto& h = module_stack().hashes;
    uint64_t x = h.back() ^ (reinterpret_cast<uintptr_t>(module) + 0x9e3779b97f4a7c15ull);
    x *= 0xbf58476d1ce4e5b9ull;
    h.push_back(x ^ (x >> 31));
  }
  ~ModuleScope() { module_stack().hashes.pop_back(); }
  ModuleScope(const ModuleScope&) = delete;
  ModuleScope& operator=(const ModuleScope&) = delete;
};

}  // namespace terra::trace
