// terra/core/pending.hpp: values that a co-executed block has not produced yet.
// A storage written or read by a launched (or about-to-be-launched) block points to that
// block's Signal. A host access to such a storage waits on it: that is a fetch. The thread that
// runs blocks never waits (it is the one producing the values).
#pragma once

#include <atomic>
#include <utility>

namespace terra {

template <class T>
class Ref;

// Completion of one co-executed run. Reference-counted; the co-execution engine derives from
// it (wait() may first have to launch the run).
class Signal {
 public:
  virtual ~Signal() = default;
  // Returns once the run is complete; throws the run's error, if it failed.
  virtual void wait() = 0;
  bool done() const { return done_.load(std::memory_order_acquire); }
  // Done, but the run failed: the values it was to produce do not exist.
  bool failed() const { return failed_.load(std::memory_order_acquire); }

  void retain() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 protected:
  std::atomic<bool> done_{false};
  std::atomic<bool> failed_{false};

 private:
  template <class> friend class Ref;
  static void destroy(Signal* s) { delete s; }
  std::atomic<int> refs_{1};
};

namespace detail {
// True on a graph-runner thread: kernels there read storages without waiting.
inline bool& in_runner() {
  thread_local bool flag = false;
  return flag;
}
}  // namespace detail

}  // namespace terra
