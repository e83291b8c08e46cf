// terra/exec/runner.hpp: the graph-runner thread of an engine, and the signals host reads wait on.
// The host thread launches runs (a range of a compiled block with its bindings); one runner
// thread executes them in launch order, so a run always sees the effects of earlier runs, as
// eager execution would. A failed run poisons every later one: their values are never
// produced, and reading any of them throws the first error.
#pragma once

#include <chrono>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "terra/core/parallel.hpp"
#include "terra/core/pending.hpp"
#include "terra/exec/cpu_executor.hpp"

namespace terra::exec {

using Clock = std::chrono::steady_clock;
inline double now_us() {
  static const Clock::time_point t0 = Clock::now();
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// One event of the timeline (Chrome trace format: "X" events with a duration).
struct TimelineEvent {
  std::string name;
  int tid = 0;  // 0: host thread, 1: graph runner
  double ts_us = 0, dur_us = 0;
};

// Completion of one run. `launch` (set by the engine until the run is launched) lets a host
// read of a value of a not-yet-launched run launch it first.
class RunSignal final : public Signal {
 public:
  std::function<void()> launch;  // host thread only
  std::function<void(const RunSignal&)> help;  // host thread only: work while waiting
  bool launched = false;         // host thread only
  std::exception_ptr error;      // written by the runner before done

  void wait() override {
    if (!launched && launch) launch();  // a fetch inside the open segment: launch it now
    wait_done();
    if (error) std::rethrow_exception(error);
  }
  void finish(std::exception_ptr e) {
    error = std::move(e);
    failed_.store(error != nullptr, std::memory_order_release);
    done_.store(true, std::memory_order_release);
    done_.notify_all();
  }
  // Waits without launching or throwing (the engine bounding how far the host runs ahead).
  void wait_done() const {
    if (!done() && help) help(*this);
    done_.wait(false, std::memory_order_acquire);
  }
};

struct Run {
  std::shared_ptr<CpuExecutor> exec;
  int32_t begin = 0, end = 0;
  std::vector<Attrs> attrs;           // per node of the range
  std::vector<Ref<Storage>> storage;  // per buffer of the block
  std::vector<std::pair<int32_t, graph::NodeViews>> views;  // dynamic nodes of the range, ascending
  Ref<RunSignal> signal;
  std::string name;  // for the timeline
  // Per device the block uses: the host thread's stream when it launched the run (see
  // DeviceBackend::get_stream); its kernels are queued there.
  std::vector<std::pair<Device, void*>> streams;
};

// Makes a run's streams current on the executing thread for a scope.
class RunStreams {
 public:
  explicit RunStreams(const std::vector<std::pair<Device, void*>>& streams) {
    for (const auto& [d, s] : streams) {
      const DeviceBackend& b = device_backend(d, "graph.run");
      if (!b.get_stream || !b.set_stream) continue;
      saved_.push_back({d, b.get_stream(d.index)});
      b.set_stream(s, d.index);
    }
  }
  ~RunStreams() {
    for (const auto& [d, s] : saved_) device_backend(d, "graph.run").set_stream(s, d.index);
  }
  RunStreams(const RunStreams&) = delete;
  RunStreams& operator=(const RunStreams&) = delete;

 private:
  std::vector<std::pair<Device, void*>> saved_;
};

class Runner {
 public:
  // threads: how many threads may work on one run's loops (see terra/core/team.hpp).
  explicit Runner(bool timeline, int threads = get_num_threads())
      : timeline_(timeline), team_(threads, threads - 2), thread_([this] { loop(); }) {}
  ~Runner() {
    {
      std::lock_guard lk(mu_);
      stop_ = true;
    }
    team_.notify();
    thread_.join();
  }
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  // Queues a run. wake = false: the host is about to wait for it and will run it itself
  // (help_until), which saves the thread hand-off a synchronous read would otherwise pay.
  void push(std::unique_ptr<Run> r, bool wake = true) {
    reclaim();
    {
      std::lock_guard lk(mu_);
      queue_.push_back(std::move(r));
      ++pending_;
    }
    if (wake) team_.notify();
  }
  // Waits until `sig` is done. Meanwhile the calling thread works: it runs queued runs itself
  // when the runner is idle (runs stay in launch order: only one thread executes at a time),
  // and takes chunks of the loops of the run being executed.
  void help_until(const RunSignal& sig) {
    idle([&] { return sig.done(); });
    reclaim();
  }
  // Waits until every pushed run finished, helping as help_until does.
  void drain() {
    idle([&] {
      std::lock_guard lk(mu_);
      return pending_ == 0;
    });
    reclaim();
  }
  // Destroys finished runs (their bindings, attributes and signals) on the calling thread, the
  // host: the runner never frees what the host allocated. malloc serves a free from another
  // thread's arena under that arena's lock, and glibc's contended lock is a futex system call
  // each time (the co-executed SDPoint step of bench_coexec.cpp took 1.36x as long with the
  // runner freeing them). Called by the host only; the runner's own thread never calls it.
  void reclaim() {
    std::vector<std::unique_ptr<Run>> dead;
    {
      std::lock_guard lk(mu_);
      if (dead_.empty()) return;
      dead.swap(dead_);
    }
  }
  // No run queued or executing (a hint, read without the lock: the runner may finish one
  // right after).
  bool idle() const { return pending_.load(std::memory_order_relaxed) == 0; }
  std::exception_ptr first_error() {
    std::lock_guard lk(mu_);
    return error_;
  }
  void clear_error() {
    std::lock_guard lk(mu_);
    error_ = nullptr;
  }
  std::vector<TimelineEvent> take_events() {
    std::lock_guard lk(mu_);
    return std::move(events_);
  }

 private:
  // The work loop of every thread that waits for the runner: until done(), execute a queued
  // run (when no other thread is executing one), else help with a loop, else sleep until the
  // team's epoch moves (a run queued or finished, a loop started, a stop).
  template <class Done>
  void idle(Done&& done) {
    for (;;) {
      uint32_t e = team_.epoch();
      if (done()) return;
      if (std::unique_ptr<Run> r = take()) {
        execute(std::move(r));
        continue;
      }
      if (team_.help()) continue;
      team_.idle_wait(e);
    }
  }
  std::unique_ptr<Run> take() {
    std::lock_guard lk(mu_);
    if (busy_ || queue_.empty()) return nullptr;
    std::unique_ptr<Run> r = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    return r;
  }
  void loop() {
    terra::detail::in_runner() = true;
    idle([&] {
      std::lock_guard lk(mu_);
      return stop_ && queue_.empty() && !busy_;
    });
  }
  void execute(std::unique_ptr<Run> run) {
    Run& r = *run;
    std::exception_ptr err;
    {
      std::lock_guard lk(mu_);
      err = error_;
    }
    double t0 = timeline_ ? now_us() : 0;
    if (!err) {
      bool prev = terra::detail::in_runner();
      terra::detail::in_runner() = true;
      terra::detail::current_team() = &team_;
      try {
        RunStreams streams(r.streams);
        r.exec->run({r.begin, r.end, r.attrs, r.storage, r.views});
      } catch (...) {
        err = std::current_exception();
      }
      terra::detail::current_team() = nullptr;
      terra::detail::in_runner() = prev;
    }
    double t1 = timeline_ ? now_us() : 0;
    {
      std::lock_guard lk(mu_);
      if (err && !error_) error_ = err;
      if (timeline_) events_.push_back({std::move(r.name), 1, t0, t1 - t0});
    }
    r.signal->finish(err);
    {
      // The run's values die on the host (reclaim), at its next launch or wait.
      std::lock_guard lk(mu_);
      dead_.push_back(std::move(run));
      --pending_;
      busy_ = false;
    }
    team_.notify();
  }

  bool timeline_;
  std::mutex mu_;
  std::deque<std::unique_ptr<Run>> queue_;
  std::atomic<int64_t> pending_{0};  // runs queued or executing: changed under mu_, read by idle()
  bool busy_ = false;  // a thread is executing a run
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<TimelineEvent> events_;
  std::vector<std::unique_ptr<Run>> dead_;  // finished runs, for the host to destroy
  terra::detail::Team team_;
  std::thread thread_;  // last: starts after the members it uses exist
};

}  // namespace terra::exec
