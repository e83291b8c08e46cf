// terra/core/team.hpp: the threads that run a graph runner's parallel loops.
//
// Eager kernels split their loops over an OpenMP team. The graph runner cannot: the host thread
// keeps running beside it, and an OpenMP region waits at its closing barrier for every member,
// so one member that the host thread kept off a core stalls the whole loop for a scheduler
// time slice (on a 2-core machine, most loops). A Team instead cuts a loop into chunks that
// any thread may claim: the thread that owns the loop (whoever executes the run), the team's
// own workers, and threads that would otherwise sleep (the runner thread when idle, the host
// thread while it waits for a value). The owner waits only for chunks already claimed, never
// for a thread that has not shown up.
//
// Chunks may run in any order on any thread, so a loop body must give the same result for any
// partition of [0, n) into chunks: it writes disjoint outputs and never accumulates across
// chunk boundaries (every kernel that calls parallel_for does).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "terra/core/pending.hpp"

namespace terra::detail {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

class Team;

// The team whose loops this thread owns (the thread executing a run), else null.
inline Team*& current_team() {
  thread_local Team* team = nullptr;
  return team;
}
// True while this thread executes a chunk: loops nested in a chunk run serially.
inline bool& in_chunk() {
  thread_local bool flag = false;
  return flag;
}

class Team {
 public:
  using ChunkFn = void (*)(const void* ctx, int64_t begin, int64_t end);

  // threads: how many threads may work on one loop at once, the owner included; workers: how
  // many of them the team starts itself. A graph runner's team starts threads - 2: one more
  // thread is there to help when it is not busy (the runner or the host, whichever does not
  // execute the run).
  Team(int threads, int workers) : threads_(std::max(1, threads)) {
    for (int i = 0; i < std::min(workers, threads_ - 1); ++i) workers_.emplace_back([this] { work(); });
  }
  ~Team() {
    stop_.store(true, std::memory_order_seq_cst);
    notify();
    for (auto& t : workers_) t.join();
  }
  Team(const Team&) = delete;
  Team& operator=(const Team&) = delete;

  int threads() const { return threads_; }

  // Runs fn(ctx, b, e) over [0, n) cut into `chunks` chunks, with whoever helps; returns when
  // every chunk is done, rethrowing the first exception a chunk threw. Owner only, one loop
  // at a time.
  void run(int64_t n, int64_t chunks, ChunkFn fn, const void* ctx) {
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    chunks_ = std::clamp<int64_t>(chunks, 1, n);
    error_ = nullptr;
    failed_.store(false, std::memory_order_relaxed);
    next_.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    live_.store(true, std::memory_order_seq_cst);
    notify();
    claim_chunks();
    while (done_.load(std::memory_order_acquire) < chunks_) cpu_relax();
    // Helpers that entered the loop must leave before its fields are reused.
    live_.store(false, std::memory_order_seq_cst);
    while (active_.load(std::memory_order_seq_cst) != 0) cpu_relax();
    if (failed_.load(std::memory_order_acquire)) std::rethrow_exception(error_);
  }

  // Called by an idle thread: works on the current loop, if any. True if it ran a chunk.
  bool help() {
    if (threads_ == 1 || !live_.load(std::memory_order_acquire)) return false;
    active_.fetch_add(1, std::memory_order_seq_cst);
    bool did = false;
    if (live_.load(std::memory_order_seq_cst)) did = claim_chunks();
    active_.fetch_sub(1, std::memory_order_seq_cst);
    return did;
  }

  // Events an idle thread may be waiting for (a loop, a run queued or finished, a stop) bump
  // the epoch. Read the epoch, check for work, then idle_wait(epoch): no event is missed.
  uint32_t epoch() const { return epoch_.load(std::memory_order_seq_cst); }
  void notify() {
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) epoch_.notify_all();
  }
  // Spins briefly (a loop's chunks arrive microseconds apart), then sleeps until the epoch
  // moves past `seen`.
  void idle_wait(uint32_t seen) {
    using Clock = std::chrono::steady_clock;
    auto until = Clock::now() + std::chrono::microseconds(kSpinMicros);
    for (int i = 1;; ++i) {
      if (epoch_.load(std::memory_order_acquire) != seen) return;
      cpu_relax();
      if (i % 64 == 0 && Clock::now() > until) break;
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    epoch_.wait(seen, std::memory_order_seq_cst);
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  }
  bool stopping() const { return stop_.load(std::memory_order_acquire); }

 private:
  static constexpr int kSpinMicros = 50;

  bool claim_chunks() {
    bool did = false;
    for (;;) {
      int64_t c = next_.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks_) return did;
      did = true;
      run_chunk(c);
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }
  void run_chunk(int64_t c) {
    if (failed_.load(std::memory_order_relaxed)) return;  // the loop fails anyway
    int64_t b = n_ * c / chunks_, e = n_ * (c + 1) / chunks_;
    // A helper reads storages of the run being executed: it must never wait on that run.
    bool prev_chunk = in_chunk(), prev_runner = in_runner();
    in_chunk() = in_runner() = true;
    try {
      fn_(ctx_, b, e);
    } catch (...) {
      bool expected = false;
      if (failed_.compare_exchange_strong(expected, true)) error_ = std::current_exception();
    }
    in_chunk() = prev_chunk;
    in_runner() = prev_runner;
  }
  void work();

  const int threads_;
  // The current loop: written by the owner while no helper is inside (active_ == 0).
  ChunkFn fn_ = nullptr;
  const void* ctx_ = nullptr;
  int64_t n_ = 0, chunks_ = 0;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
  std::atomic<int64_t> next_{0}, done_{0};
  std::atomic<bool> live_{false};
  std::atomic<int> active_{0};
  std::atomic<uint32_t> epoch_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
};

inline void Team::work() {
  while (!stopping()) {
    uint32_t e = epoch();
    if (!help() && !stopping()) idle_wait(e);
  }
}

}  // namespace terra::detail
