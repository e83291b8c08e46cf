// terra/exec/engine.hpp: the co-execution engine (DESIGN.md section 5).
//
//   terra::Engine engine;
//   for (int step = 0; step < n; ++step) {
//     auto it = engine.iteration();   // one training iteration
//     ...ordinary imperative code...
//   }
//
// The first iterations run eagerly and are recorded (tracing). Their traces are merged into a
// TraceGraph per iteration() call site; once a block has been seen `compile_after` times it is
// compiled (graph passes, memory plan). From then on the iteration co-executes: every op call
// is checked against the next node and answered with a lazy handle; a block is launched on the
// graph-runner thread as soon as the host has passed its end (or reads one of its values).
// An op that matches nothing, an early end, or an exception makes the engine launch what was
// validated and continue eagerly while recording; the new trace is merged. With
// EngineOptions::resume, a call made while recording that matches the first node of a compiled
// block (where paths re-join: the backward pass after a host-chosen branch, the optimizer
// step) resumes co-execution there. Results are those of eager execution, bit for bit.
#pragma once

#include <algorithm>
#include <deque>
#include <map>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "terra/exec/runner.hpp"
#include "terra/trace/trace_graph.hpp"

namespace terra {

/// How an Engine traces, compiles and co-executes.
struct EngineOptions {
  /// Iterations per call site run eagerly, unrecorded, before tracing starts: first iterations
  /// often differ from all later ones (optimizer state created lazily, gradients undefined),
  /// and merging such a one-off path would only fragment the graph.
  int warmup = 1;
  int compile_after = 2;        ///< traces of a block before it is compiled and co-executed
  /// Traces of a block before it is compiled when it is known code: every call in it (an op at
  /// a program place) is one that blocks traced `compile_after` times make too, only with
  /// other shapes or integer attributes (a new sequence length, a new padded batch) or in a
  /// new combination (host-chosen branches). Its first trace is enough. Set it to
  /// compile_after to treat such blocks as new code.
  int compile_variants_after = 1;
  int max_specializations = 8;  ///< distinct nodes per program location (shapes, attributes)
  int max_blocks = 256;         ///< per iteration() call site
  int max_ahead = 2;            ///< iterations the host may run ahead of the graph runner
  /// Streaming: whenever the graph runner is idle and the current block has this many recorded
  /// ops not yet launched, they are launched, so the runner executes the block while the host
  /// is still recording it instead of after. It is on where host reads wait: for the rest of
  /// an iteration in which a read found the runner busy, and in a block whose last run ended
  /// in a read that waited for at least this many of its ops. A program that reads a value in
  /// every step then overlaps its recording with execution. 0: launch only at block ends and
  /// reads (docs/coexecution.md "Streaming").
  int stream_after = 16;
  /// After a value-sized op (masked_select) in an iteration, a call that differs from its node
  /// only in shapes and integer attributes makes the node dynamic instead of a new
  /// specialization (docs/coexecution.md "Value-sized results"). false: specializations only.
  bool dynamic_nodes = true;
  bool coexecute = true;        ///< false: trace nothing, run every iteration eagerly
  /// While an iteration records (it diverged, or its path is not compiled yet), resume
  /// co-execution at a call that starts a compiled block. Off by default: on the 2-core CPU
  /// the paper programs ran no faster with it (docs/coexecution.md).
  bool resume = false;
  /// While an iteration co-executes, go on along an edge never traced when the call starts a
  /// compiled block (host decisions combined in a new way) instead of falling back; the trace
  /// is merged at the end. EngineStats::jumps counts them.
  bool jump = true;
  /// After this many iterations in a row at one iteration() call site started co-executing
  /// and fell back, run that site's next iterations eagerly, unrecorded: `backoff_after` of
  /// them, then twice as many after the next fallback, up to 1024, before trying again. An
  /// iteration that co-executes to its end resets it. A program whose steps never settle into
  /// a graph (a value-dependent shape in every step) then runs at eager speed instead of
  /// paying to record and merge every step. EngineStats::backoffs counts the pauses and
  /// backed_off their iterations (also counted in `eager`). 0: never back off.
  int backoff_after = 8;
  bool timeline = false;        ///< record host/runner spans for write_timeline()
  /// Run each stretch of a compiled block's device (CUDA) kernels as one CUDA graph: recorded
  /// with stream capture at every run and updated in place (cudaGraphExecUpdate), so changing
  /// host scalars and addresses need no new instantiation. Kernels that read values back
  /// (index checks) and host/device copies run outside graphs and split the stretch; a failed
  /// recording runs its stretch kernel by kernel. Off by default: it has not yet run on a GPU
  /// (docs/coexecution.md "CUDA graphs"). No effect on CPU-only blocks.
  bool cuda_graphs = false;
  /// Benchmark baseline only, never for real programs: what capturing a whole training step
  /// as one graph does. The first traced iteration is the capture; every later one replays it
  /// op by op without validation: the i-th op call gets the captured i-th op, its attributes
  /// and host scalars frozen (random seeds still advance), the captured path at every branch,
  /// and only tensors from outside the step bound by position. A call whose inputs or outputs
  /// have other shapes than the capture throws terra::Error; ops past the captured end run
  /// eagerly. Results are wrong wherever the program is dynamic (bench/programs.cpp shows how).
  bool unchecked_replay = false;
};

/// What an Engine did so far (Engine::stats(); printable with <<).
struct EngineStats {
  int64_t iterations = 0;   ///< iteration scopes entered
  int64_t eager = 0;        ///< ran eagerly, unrecorded (warm-up, or co-execution off)
  int64_t traced = 0;       ///< ran eagerly from the start, recorded
  int64_t coexecuted = 0;   ///< ran entirely co-executed
  int64_t fallbacks = 0;    ///< started co-executing, then diverged or threw
  int64_t blocks = 0;       ///< blocks in all trace graphs
  int64_t nodes = 0;        ///< op nodes in all trace graphs
  /// Of those, nodes whose shapes change from run to run (the result of a value-sized op such
  /// as masked_select, and what is computed from it; docs/coexecution.md "Value-sized results").
  int64_t dynamic_nodes = 0;
  int64_t paths = 0;        ///< distinct block sequences seen
  int64_t compiles = 0;     ///< blocks compiled (including re-compiles after a graph change)
  int64_t launches = 0;     ///< runs handed to the graph runner
  int64_t streamed = 0;     ///< of those, launched early to an idle runner (stream_after)
  int64_t ops_coexecuted = 0;  ///< op calls answered with lazy handles
  int64_t ops_fast = 0;        ///< of those, matched on the fast path (no shape inference)
  int64_t resumes = 0;         ///< times co-execution resumed inside a recording iteration
  /// Times a co-executing iteration went on into a compiled block along an edge never traced
  /// (host decisions combined in a new way): no fallback, and the trace is merged.
  int64_t jumps = 0;
  int64_t backoffs = 0;    ///< times a call site stopped co-executing for a while (backoff_after)
  int64_t backed_off = 0;  ///< iterations run eagerly because of those (also in `eager`)
  std::map<std::string, int64_t> reasons;  ///< why iterations were traced again, with counts
  // EngineOptions::cuda_graphs:
  int64_t graph_launches = 0;  ///< stretches of device kernels launched as one CUDA graph
  int64_t graph_kernels = 0;   ///< kernels those graphs ran
  int64_t graph_failures = 0;  ///< recordings that failed (the stretch ran kernel by kernel)
  /// Why device work ran outside graphs: once per compiled block and reason for splits (a
  /// host/device copy, a kernel that reads values back), once per failed recording.
  std::map<std::string, int64_t> not_captured;
};

/// One line of counts, then one line per re-trace reason.
inline std::ostream& operator<<(std::ostream& os, const EngineStats& s) {
  os << "iterations " << s.iterations << " (eager " << s.eager << ", traced " << s.traced << ", co-executed "
     << s.coexecuted << ", fallen back " << s.fallbacks << "), blocks " << s.blocks
     << ", nodes " << s.nodes;
  if (s.dynamic_nodes) os << " (" << s.dynamic_nodes << " dynamic)";
  os << ", paths " << s.paths << ", compiles " << s.compiles
     << ", launches " << s.launches << " (streamed " << s.streamed << "), ops co-executed " << s.ops_coexecuted << " (fast "
     << s.ops_fast << "), resumes " << s.resumes << ", jumps " << s.jumps;
  if (s.backoffs) os << ", backed off " << s.backed_off << " iterations (" << s.backoffs << " times)";
  if (s.graph_launches || s.graph_failures || !s.not_captured.empty())
    os << ", CUDA graphs " << s.graph_launches << " (" << s.graph_kernels << " kernels, "
       << s.graph_failures << " failed recordings)";
  for (const auto& [why, n] : s.reasons) os << "\n  re-trace: " << why << " (x" << n << ")";
  for (const auto& [why, n] : s.not_captured) os << "\n  outside graphs: " << why << " (x" << n << ")";
  return os;
}

/// The co-execution engine of one host thread; see the top of this file and docs/coexecution.md.
class Engine final : public trace::Hook {
 public:
  /// The RAII scope of one iteration: co-execution and tracing happen only inside it.
  class Iteration {
   public:
    ~Iteration() { engine_->end_iteration(std::uncaught_exceptions() > uncaught_); }
    Iteration(const Iteration&) = delete;
    Iteration& operator=(const Iteration&) = delete;

   private:
    friend class Engine;
    explicit Iteration(Engine* e) : engine_(e), uncaught_(std::uncaught_exceptions()) {}
    Engine* engine_;
    int uncaught_;
  };

  /// An engine with its own graph-runner thread.
  explicit Engine(EngineOptions opts = {}) : opts_(opts), runner_(opts.timeline) {
    arena_->device_graphs = opts.cuda_graphs;
  }
  /// Waits for every launched run.
  ~Engine() override { runner_.drain(); }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Starts an iteration; throws the error of a failed earlier run, if any (once).
  [[nodiscard]] Iteration iteration(Loc loc = Loc::current()) {
    begin_iteration(loc);
    return Iteration(this);
  }

  /// Counts so far (graph sizes summed over all iteration() call sites).
  EngineStats stats() const {
    EngineStats s = stats_;
    s.blocks = s.nodes = s.dynamic_nodes = 0;
    for (const auto& [k, g] : graphs_) {
      s.blocks += int64_t(g.graph.blocks.size());
      s.nodes += int64_t(g.graph.num_nodes());
      for (const trace::Block& b : g.graph.blocks)
        for (const graph::IrNode& n : b.ir.nodes) s.dynamic_nodes += n.dynamic;
    }
    s.paths = int64_t(paths_.size());
    exec::Arena::GraphCounts g = arena_->graph_counts();
    s.graph_launches = g.launches, s.graph_kernels = g.kernels, s.graph_failures = g.failures;
    s.not_captured = std::move(g.not_captured);
    return s;
  }
  /// The options it was made with.
  const EngineOptions& options() const { return opts_; }
  /// Waits until every launched run has finished.
  void synchronize() { runner_.drain(); }

  /// A block's compiled plan and its executor.
  struct Compiled {
    uint64_t version = 0;                      ///< the block version it was compiled from
    std::shared_ptr<const graph::Plan> plan;   ///< graph::compile's: dce, cse, fuse, epilogues, memory
    std::shared_ptr<exec::CpuExecutor> exec;   ///< runs the plan (in the engine's arena)
    /// Per node: it starts a plan step (a launch that ends before it splits no fused step).
    std::vector<uint8_t> starts_step;
  };
  /// The trace graph of one iteration() call site.
  struct GraphState {
    std::string site;                ///< file:line of the iteration() call
    int64_t iterations = 0;          ///< iterations started there
    int fallback_run = 0;    ///< fallbacks in a row (EngineOptions::backoff_after)
    int64_t backoff = 0;     ///< iterations of the last back-off pause (0: none since co-executing)
    int64_t eager_left = 0;  ///< iterations left in the current pause
    trace::TraceGraph graph;         ///< the merged traces
    std::vector<Compiled> compiled;  ///< per block
    /// Per block: its last run ended in a host read that waited for EngineOptions::stream_after
    /// or more of its ops, so its next run streams.
    std::vector<uint8_t> stream;
    /// The calls (op and program place) of the blocks traced compile_after times (rebuilt after
    /// every merge).
    std::unordered_set<uint64_t> seasoned;
    /// Blocks by the program location of their first node: where a recording iteration may
    /// resume co-execution (rebuilt after every merge).
    std::unordered_map<uint64_t, std::vector<int32_t>> entries;
  };
  /// The trace graphs by call site, with their compiled plans (io/trace_dump.hpp dumps them).
  const std::unordered_map<uint64_t, GraphState>& graphs() const { return graphs_; }
  /// Host iterations and runner spans so far (EngineOptions::timeline).
  std::vector<exec::TimelineEvent> timeline() {
    runner_.drain();
    auto ev = runner_.take_events();
    events_.insert(events_.end(), ev.begin(), ev.end());
    std::sort(events_.begin(), events_.end(),
              [](const auto& a, const auto& b) { return a.ts_us < b.ts_us; });
    return events_;
  }

  // ---- trace::Hook ----
  /// The thread's mode while an iteration of this engine runs.
  trace::Mode mode() const override { return mode_; }
  /// Every op call inside an iteration comes here (from dispatch()).
  OutList dispatch(const OpCall& call, const OpInfo& info) override {
    return mode_ == trace::Mode::Tracing ? traced(call, info) : coexec(call, info);
  }
  /// Host reads of values this iteration made or wrote become block boundaries of later traces
  /// (a read of a feed or parameter nothing wrote yet waits for no run).
  /// A read that will wait turns streaming on (EngineOptions::stream_after): for the rest of
  /// the iteration if the runner is still busy, and for the block's next run if the read runs
  /// stream_after or more of its ops first.
  void on_fetch(const Tensor& t) override {
    if (mode_ != trace::Mode::Eager && rec_.made_or_written(t)) rec_.note_fetch();
    if (mode_ != trace::Mode::CoExecuting || opts_.stream_after <= 0 || !t.defined()) return;
    const Storage& st = *t.storage();
    Signal* s = st.pending();
    if (!s || s->done() || st.readable()) return;
    if (!runner_.idle()) streaming_ = true;
    // (A block that streams already keeps streaming while a read still waits for its ops.)
    if (s == open_.get() && (stream_here_ || int64_t(idx_) - launched_ >= opts_.stream_after))
      read_waited_ = true;
  }

 private:
  // ---- iteration scope ----
  void begin_iteration(const Loc& loc) {
    TERRA_CHECK(!in_iteration_, "Engine::iteration",
                "iterations of one engine cannot nest or overlap");
    runner_error_check();
    // Finished runs leave the window (a large max_ahead must not keep every signal alive).
    while (!inflight_.empty() && inflight_.front()->done()) inflight_.pop_front();
    while (int(inflight_.size()) >= std::max(1, opts_.max_ahead)) {
      inflight_.front()->wait_done();
      inflight_.pop_front();
    }
    static std::atomic<uint64_t> serials{1};
    rec_.begin(serials.fetch_add(1), Storage::next_birth());
    uint64_t key = trace::Site{loc.file_name(), loc.line(), loc.column(), 0, 0}.key();
    gs_ = &graphs_[key];
    if (gs_->site.empty()) gs_->site = trace::Site{loc.file_name(), loc.line(), 0, 0, 0}.str();
    ++stats_.iterations;
    in_iteration_ = true;
    bool warm = gs_->iterations++ >= opts_.warmup;
    bool paused = gs_->eager_left > 0;  // backing off (EngineOptions::backoff_after)
    if (paused) {
      --gs_->eager_left;
      ++stats_.backed_off;
    }
    started_coexec_ = !paused && opts_.coexecute && !gs_->graph.empty() && ready(0);
    path_.clear();
    diverged_.clear();
    resumed_ = false;
    jumped_ = false;
    streaming_ = false;
    in_block_ = false;
    jumps_left_ = opts_.jump ? kJumpBudget : 0;
    resume_budget_ = opts_.resume && !opts_.unchecked_replay ? kResumeBudget : 0;
    iter_t0_ = opts_.timeline ? exec::now_us() : 0;
    if (started_coexec_) {
      mode_ = trace::Mode::CoExecuting;
      enter_block(0, true);
    } else {
      mode_ = opts_.coexecute && warm && !paused ? trace::Mode::Tracing : trace::Mode::Eager;
    }
    prev_hook_ = trace::active_hook();
    if (mode_ != trace::Mode::Eager) trace::active_hook() = this;
  }

  void end_iteration(bool exception) {
    in_iteration_ = false;
    trace::active_hook() = prev_hook_;
    if (mode_ == trace::Mode::CoExecuting) {
      const trace::Block& b = gs_->graph.blocks[block_];
      bool complete = idx_ == b.ir.nodes.size() && b.can_end;
      launch_segment(int32_t(idx_));
      leave_block();
      if (exception) {
        diverged_ = "exception thrown inside the iteration";
      } else if (!complete) {
        if (diverged_.empty()) diverged_ = "iteration ended where no traced iteration ended";
        mode_ = trace::Mode::Tracing;  // merge what ran: the graph learns the new end
      }
    }
    // A trace that resumed co-execution after recording is merged all the same.
    bool record = mode_ == trace::Mode::Tracing || resumed_ || jumped_;
    if (started_coexec_ && diverged_.empty()) {
      ++stats_.coexecuted;
      gs_->fallback_run = 0;
      gs_->backoff = 0;
    } else if (started_coexec_) {
      ++stats_.fallbacks;
      ++stats_.reasons[diverged_];
      back_off();
    } else if (record) {
      ++stats_.traced;
    } else {
      ++stats_.eager;
    }
    if (record) {
      if (exception) {
        if (!started_coexec_) ++stats_.reasons["exception thrown inside a traced iteration"];
      } else if (!(opts_.unchecked_replay && !gs_->graph.empty())) {  // a replay keeps its capture
        trace::GraphLimits lim{opts_.max_specializations, opts_.max_blocks, opts_.dynamic_nodes};
        rec_.expand();
        gs_->graph.merge(rec_.trace(), lim);
        for (auto& n : gs_->graph.notes) ++stats_.reasons[n];
        gs_->graph.notes.clear();
        gs_->entries.clear();
        gs_->seasoned.clear();
        for (int32_t b = 0; b < int32_t(gs_->graph.blocks.size()); ++b) {
          const trace::Block& blk = gs_->graph.blocks[b];
          if (!blk.sites.empty()) gs_->entries[blk.sites[0].place()].push_back(b);
          if (blk.seen >= opts_.compile_after)
            for (size_t n = 0; n < blk.ir.nodes.size(); ++n) gs_->seasoned.insert(seasoned_key(blk, n));
        }
      }
    }
    if (!path_.empty()) {
      uint64_t h = 0xcbf29ce484222325ull;
      for (int32_t b : path_) h = (h ^ uint64_t(b)) * 0x100000001b3ull;
      paths_.insert(h);
    }
    if (last_signal_) inflight_.push_back(std::move(last_signal_));
    if (opts_.timeline)
      events_.push_back({started_coexec_ && diverged_.empty() ? "iteration (co-executed)"
                                                              : "iteration (eager)",
                         0, iter_t0_, exec::now_us() - iter_t0_});
    storage_.clear();
    attrs_.clear();
    views_.clear();
    open_ = {};
    mode_ = trace::Mode::Eager;
  }

  // A fallback: after backoff_after in a row, pause co-execution at this call site. After a
  // pause one more fallback starts the next, twice as long.
  void back_off() {
    // The whole-step-capture baseline keeps replaying, as capture does.
    if (opts_.backoff_after <= 0 || opts_.unchecked_replay || ++gs_->fallback_run < opts_.backoff_after)
      return;
    gs_->backoff = gs_->backoff ? std::min<int64_t>(2 * gs_->backoff, kMaxBackoff) : opts_.backoff_after;
    gs_->eager_left = gs_->backoff;
    gs_->fallback_run = opts_.backoff_after - 1;
    ++stats_.backoffs;
  }

  void runner_error_check() {
    if (auto e = runner_.first_error()) {
      runner_.drain();
      runner_.clear_error();
      std::rethrow_exception(e);
    }
  }

  // ---- blocks ----
  bool ready(int32_t b) {
    const trace::Block& blk = gs_->graph.blocks[b];
    if (blk.seen < opts_.compile_after && !opts_.unchecked_replay &&
        !(blk.seen >= opts_.compile_variants_after && has_seasoned_variant(b)))
      return false;
    compiled(b);
    return true;
  }
  // Is every call of block b one that a block traced compile_after times makes too (the same op
  // at the same program place)? Then b is known code in a new shape or a new combination.
  bool has_seasoned_variant(int32_t b) {
    const trace::Block& blk = gs_->graph.blocks[b];
    if (blk.ir.nodes.empty()) return false;
    for (size_t n = 0; n < blk.ir.nodes.size(); ++n)
      if (!gs_->seasoned.count(seasoned_key(blk, n))) return false;
    return true;
  }
  static uint64_t seasoned_key(const trace::Block& blk, size_t n) {
    return blk.sites[n].place() ^ (uint64_t(blk.ir.nodes[n].op) + 1) * 0x9e3779b97f4a7c15ull;
  }
  Compiled& compiled(int32_t b) {
    gs_->compiled.resize(gs_->graph.blocks.size());
    Compiled& c = gs_->compiled[b];
    const trace::Block& blk = gs_->graph.blocks[b];
    if (!c.exec || c.version != blk.version) {
      c.plan = std::make_shared<const graph::Plan>(graph::compile(blk.ir));
      c.exec = std::make_shared<exec::CpuExecutor>(c.plan, exec::CpuExecutor::kTileElems, arena_);
      c.version = blk.version;
      c.starts_step.assign(blk.ir.nodes.size(), 0);
      for (const graph::Step& st : c.plan->steps) c.starts_step[size_t(st.nodes.front())] = 1;
      ++stats_.compiles;
    }
    return c;
  }
  void enter_block(int32_t b, bool reset_binding) {
    leave_block();
    block_ = b;
    in_block_ = true;
    stream_here_ = size_t(b) < gs_->stream.size() && gs_->stream[size_t(b)];
    read_waited_ = false;
    idx_ = 0;
    const trace::Block& blk = gs_->graph.blocks[b];
    if (reset_binding) bind_.reset(rec_.trace().bufs.size(), blk.ir.bufs.size());
    storage_.assign(blk.ir.bufs.size(), {});
    attrs_.assign(blk.ir.nodes.size(), {});
    views_.clear();
    launched_ = 0;
    if (!resumed_) path_.push_back(b);  // paths: the block sequences walked from the start
  }

  // The walk leaves the current block: whether a read in it waited for stream_after of its ops
  // decides whether its next run streams.
  void leave_block() {
    if (!in_block_) return;
    in_block_ = false;
    if (gs_->stream.size() <= size_t(block_)) gs_->stream.resize(gs_->graph.blocks.size());
    if (size_t(block_) < gs_->stream.size()) gs_->stream[size_t(block_)] = read_waited_;
  }

  // Launches nodes [launched_, end) of the current block on the runner.
  void launch_segment(int32_t end, bool wake = true) {
    if (end <= launched_) return;
    Compiled& c = compiled(block_);
    const graph::BlockIr& ir = gs_->graph.blocks[block_].ir;
    auto run = std::make_unique<exec::Run>();
    run->exec = c.exec;
    run->begin = launched_;
    run->end = end;
    run->attrs.assign(std::make_move_iterator(attrs_.begin() + launched_),
                      std::make_move_iterator(attrs_.begin() + end));
    // Values the host still holds get their own memory; the others live in the engine's arena.
    for (int32_t n = launched_; n < end; ++n) {
      const graph::IrNode& node = ir.nodes[n];
      if (node.inplace) continue;
      for (size_t k = 0; k < node.outs.size(); ++k) {
        if (node.out_alias[k] >= 0) continue;
        Ref<Storage>& s = storage_[node.outs[k].buf];
        // A dynamic buffer always gets memory of this run's size (its arena slice has the size
        // of the first trace).
        if (s && (s->use_count() > 1 || ir.bufs[node.outs[k].buf].dynamic)) {
          s->allocate_lazy();
        } else {
          s = {};
        }
      }
    }
    run->storage = storage_;
    auto split_at = std::find_if(views_.begin(), views_.end(), [&](const auto& v) { return v.first >= end; });
    run->views.assign(std::make_move_iterator(views_.begin()), std::make_move_iterator(split_at));
    views_.erase(views_.begin(), split_at);
    for (Device d : c.plan->devices)
      if (const DeviceBackend& b = device_backend(d, "Engine"); b.get_stream)
        run->streams.push_back({d, b.get_stream(d.index)});
    run->signal = open_signal();
    run->signal->launched = true;
    run->signal->launch = nullptr;
    if (opts_.timeline) run->name = "block " + std::to_string(block_);
    last_signal_ = run->signal;
    open_ = {};
    launched_ = end;
    ++stats_.launches;
    runner_.push(std::move(run), wake);
  }
  // EngineOptions::stream_after: while streaming, launch the open segment when the runner is
  // idle, it holds enough ops, and the next node starts a plan step (no fused step is cut in
  // two). The launch takes every node answered so far: their outputs and in-place
  // destinations wait on the open segment's signal, which becomes this run's, so a cut
  // before the last answered node would let those waits end before the node ran.
  void maybe_stream() {
    if (!(streaming_ || stream_here_) || int64_t(idx_) - launched_ < opts_.stream_after ||
        !runner_.idle())
      return;
    const Compiled& c = compiled(block_);
    if (idx_ < c.starts_step.size() && !c.starts_step[idx_]) return;
    launch_segment(int32_t(idx_));
    ++stats_.streamed;
  }
  Ref<exec::RunSignal>& open_signal() {
    if (!open_) {
      open_ = Ref<exec::RunSignal>(new exec::RunSignal());
      // A host read of a value of the open segment: launch it, and run it on this thread
      // rather than wake the runner and wait for it.
      open_->launch = [this] { launch_segment(int32_t(idx_), false); };
      open_->help = [this](const exec::RunSignal& s) { runner_.help_until(s); };
    }
    return open_;
  }

  // ---- op calls ----
  OutList traced(const OpCall& call, const OpInfo& info) {
    detail::Prepared p;
    detail::prepare(call, info, p);
    trace::OpRecord& r = rec_.start(call);
    trace::Recorder::OpenGuard open{rec_};
    if (resume_budget_ > 0 && resume(call, p, r))
      return answer(call, info, p, r);
    OutList outs = detail::execute_eager(call, info, p);
    rec_.finish(call, outs);
    return outs;
  }

  // While recording: does this call start a compiled block? Then co-execution resumes there
  // (the call is that block's node 0; every later call is validated as usual). A block that
  // a path re-joins (the backward pass after a host-chosen branch, the optimizer step) is
  // where this pays. A resume that diverges again within kResumeMinOps calls spends one of the
  // iteration's tries, so blocks that match only their first call cannot make every call of
  // a long recorded stretch launch a run of its own.
  bool resume(const OpCall& call, const detail::Prepared& p, trace::OpRecord& r) {
    auto it = gs_->entries.find(r.site.place());
    if (it == gs_->entries.end()) return false;
    expect_outputs(call, p, r);
    int32_t b = entry_block(it->second, r, false);
    if (b < 0) {
      r.outs.clear();
      r.out_alias.clear();
      return false;
    }
    mode_ = trace::Mode::CoExecuting;
    resumed_ = true;
    resumed_ops_ = 0;
    ++stats_.resumes;
    enter_block(b, false);
    return true;
  }

  // Of the blocks `candidates` (gs_->entries at r's place), the first whose node 0 the call r
  // is, compiled, with r's buffers bound to it; -1 if none. with_variants: a block of known
  // code counts once ready() says so; else it must have been traced compile_after times.
  int32_t entry_block(const std::vector<int32_t>& candidates, const trace::OpRecord& r,
                      bool with_variants) {
    for (int32_t b : candidates) {
      const trace::Block& blk = gs_->graph.blocks[b];
      bind_.reset(rec_.trace().bufs.size(), blk.ir.bufs.size());
      if (!with_variants && blk.seen < opts_.compile_after) continue;
      if (!trace::match_node(blk, 0, r, bind_)) continue;
      if (with_variants && !ready(b)) continue;
      compiled(b);
      return b;
    }
    return -1;
  }

  // The record's outputs as they will be, before they exist.
  void expect_outputs(const OpCall& call, const detail::Prepared& p, trace::OpRecord& r) {
    if (call.out) {
      r.outs.push_back(rec_.ref(*call.out));
      r.out_alias.push_back(-1);
      return;
    }
    int32_t next = int32_t(rec_.trace().bufs.size());
    for (const OutMeta& m : p.metas) {
      if (m.alias >= 0) {
        r.outs.push_back({r.ins[m.alias].buf, m.shape, m.strides, m.offset, m.dtype, m.device});
      } else {
        r.outs.push_back({next++, m.shape, contiguous_strides(m.shape), 0, m.dtype, m.device});
      }
      r.out_alias.push_back(int8_t(m.alias));
    }
  }

  // Finds the node this call is, moving to a successor block (and launching the current one)
  // when the host has passed the end of its block. Empty string: found; else why not.
  const char* find_node(const trace::OpRecord& r) {
    const trace::Block& b = gs_->graph.blocks[block_];
    const char* why = "host took a path never traced";
    if (idx_ < b.ir.nodes.size()) {
      if (trace::match_node(b, int32_t(idx_), r, bind_)) return "";
      why = "op differs from the traced one";
    } else {
      for (int32_t s : b.succ) {
        bind_.reset(rec_.trace().bufs.size(), gs_->graph.blocks[s].ir.bufs.size());
        if (!trace::match_node(gs_->graph.blocks[s], 0, r, bind_)) continue;
        if (!ready(s)) return "path not traced often enough to be compiled";
        launch_segment(int32_t(idx_));
        enter_block(s, false);
        return "";
      }
    }
    return jump(r) ? "" : why;
  }

  // The call leaves the traced paths (a node it does not match, or no successor it starts),
  // but it starts a compiled block elsewhere in the graph: the host combined its decisions in
  // a way never traced (k independent branches make up to 2^k paths over k^2 edges). Going on
  // there is as safe as following a traced edge: every later call is still validated node by
  // node, and what the current block ran so far is launched as it would be for a host read.
  // The iteration is merged at its end, so the graph learns the edge. At most kJumpBudget per
  // iteration: blocks that match only their first few calls must not turn a step into many
  // tiny runs.
  bool jump(const trace::OpRecord& r) {
    auto it = gs_->entries.find(r.site.place());
    if (it == gs_->entries.end() || jumps_left_ <= 0) return false;
    --jumps_left_;
    int32_t b = entry_block(it->second, r, true);
    if (b < 0) return false;
    launch_segment(int32_t(idx_));
    enter_block(b, false);
    jumped_ = true;
    ++stats_.jumps;
    return true;
  }

  // EngineOptions::unchecked_replay: the next captured node, whatever this call is; past a
  // block's end, the captured successor. Throws where the shapes differ from the capture.
  const char* next_captured(const OpCall& call, const trace::OpRecord& r) {
    const trace::Block* b = &gs_->graph.blocks[block_];
    while (idx_ >= b->ir.nodes.size()) {
      if (b->succ.empty()) return "ran past the end of the captured step";
      launch_segment(int32_t(idx_));
      enter_block(b->succ[0], true);
      b = &gs_->graph.blocks[block_];
    }
    const graph::IrNode& node = b->ir.nodes[idx_];
    auto differs = [&](const char* what, size_t j, const Shape& got, const Shape& captured) {
      throw Error(std::string("[terra::Engine replay] ") + op_name(call.op) + " " + what + " " +
                  std::to_string(j) + " has shape " + shape_str(got) + "; the captured " +
                  op_name(node.op) + " had " + shape_str(captured));
    };
    // The runner reads a bound input through the captured view: it must be the same view.
    for (size_t j = 0; j < std::min(call.inputs.size(), node.ins.size()); ++j) {
      const Tensor& t = call.inputs[j];
      const graph::ValueRef& v = node.ins[j];
      if (t.shape() != v.shape || t.strides() != v.strides || t.storage_offset() != v.offset ||
          t.dtype() != v.dtype)
        differs("input (shape, layout or dtype)", j, t.shape(), v.shape);
    }
    for (size_t k = 0; k < std::min(r.outs.size(), node.outs.size()); ++k)
      if (r.outs[k].shape != node.outs[k].shape) differs("output", k, r.outs[k].shape, node.outs[k].shape);
    if (r.outs.size() != node.outs.size()) differs("output count", r.outs.size(), {}, {});
    return "";
  }

  OutList coexec(const OpCall& call, const OpInfo& info) {
    if (OutList outs; fast_coexec(call, info, outs)) return outs;
    detail::Prepared p;
    detail::prepare(call, info, p);
    trace::OpRecord& r = rec_.start(call);
    trace::Recorder::OpenGuard open{rec_};
    expect_outputs(call, p, r);
    const char* why = opts_.unchecked_replay ? next_captured(call, r) : find_node(r);
    if (*why) {
      if (diverged_.empty()) diverged_ = why;  // after a resume, the first reason counts
      if (resumed_ && resumed_ops_ < kResumeMinOps) --resume_budget_;
      launch_segment(int32_t(idx_));
      in_block_ = false;
      mode_ = trace::Mode::Tracing;
      r.outs.clear();
      r.out_alias.clear();
      OutList outs = detail::execute_eager(call, info, p);
      rec_.finish(call, outs);
      return outs;
    }
    return answer(call, info, p, r);
  }

  // The common case of a co-executed call, in a fraction of the full path's work: the call is
  // the next node of the current block, and its op, place, attributes' structure and input
  // layouts are the node's. Shape inference would give the node's outputs again (a rule reads
  // only those, but for ops whose rule reads scalar values, which take the full path), so the
  // outputs are made from the node, and the record is a compact one (Recorder::start_compact).
  // False, having recorded nothing, where the full path must decide: a block boundary, a
  // mismatch, an in-place call that may snapshot an input first, or unchecked replay.
  bool fast_coexec(const OpCall& call, const OpInfo& info, OutList& outs) {
    const trace::Block& b = gs_->graph.blocks[block_];
    if (idx_ >= b.ir.nodes.size() || opts_.unchecked_replay || info.infer_reads_scalars ||
        detail::may_snapshot(call, info))
      return false;
    const graph::IrNode& node = b.ir.nodes[idx_];
    if (node.dynamic || node.op != call.op || node.inplace != (call.out != nullptr) ||
        node.ins.size() != call.inputs.size() || !trace::same_structure(node.attrs, call.attrs) ||
        !b.sites[idx_].same_place(trace::Recorder::place_of(call.loc)))
      return false;
    auto same = [](const Tensor& t, const graph::ValueRef& v) {
      return t.defined() && t.dtype() == v.dtype && t.device() == v.device &&
             t.storage_offset() == v.offset && t.shape() == v.shape && t.strides() == v.strides;
    };
    for (size_t j = 0; j < call.inputs.size(); ++j)
      if (!same(call.inputs[j], node.ins[j])) return false;
    if (call.out && !same(*call.out, node.outs[0])) return false;
    // What autograd needs (the checks eager makes, input versions); an op without a vjp checks
    // its outputs' dtypes, which are the node's.
    detail::Prepared p;
    if (!info.vjp)
      for (size_t k = 0; k < node.outs.size(); ++k) {
        const graph::ValueRef& o = node.outs[k];
        p.metas.push_back({o.shape, o.dtype, o.device, node.out_alias[k], o.strides, o.offset});
      }
    detail::prepare_autograd(call, info, p);
    // The trace buffers of the call's tensors, bound to the node's (or no fast path).
    SmallVector<int32_t, 4> ins;
    SmallVector<int32_t, 2> outs_bufs;
    for (const Tensor& t : call.inputs) ins.push_back(rec_.buffer_of(t));
    int32_t next = int32_t(rec_.trace().bufs.size());
    if (call.out) {
      outs_bufs.push_back(rec_.buffer_of(*call.out));
    } else {
      for (int8_t a : node.out_alias) outs_bufs.push_back(a >= 0 ? ins[a] : next++);
    }
    if (!trace::bind_node(b, int32_t(idx_), {ins.data(), ins.size()},
                          {outs_bufs.data(), outs_bufs.size()}, bind_))
      return false;
    rec_.start_compact(call, rec_.site(call.loc), node, {ins.data(), ins.size()},
                       {outs_bufs.data(), outs_bufs.size()});
    trace::Recorder::OpenGuard open{rec_};
    ++resumed_ops_;
    attrs_[idx_] = call.attrs;
    Signal* sig = open_signal().get();
    for (size_t j = 0; j < call.inputs.size(); ++j) bind_external(node.ins[j].buf, call.inputs[j], sig, &node);
    if (call.out) {
      outs.push_back(answer_in_place(node, *call.out, sig));
    } else {
      for (size_t k = 0; k < node.outs.size(); ++k) {
        const graph::ValueRef& o = node.outs[k];
        if (int a = node.out_alias[k]; a >= 0) {
          outs.push_back(terra::detail::make_view(call.inputs[a], {o.shape, o.dtype, o.device, a, o.strides, o.offset}));
          continue;
        }
        Ref<Storage> s = Storage::lazy(size_t(numel_of(o.shape)) * itemsize(o.dtype), o.device, sig);
        storage_[o.buf] = s;
        outs.push_back(Tensor::from_storage(std::move(s), o.shape, o.strides, 0, o.dtype));
      }
    }
    ++idx_;
    rec_.finish_expected(outs);
    if (p.record) autograd_record(call, info, outs, p.saved_inputs(call), p.versions);
    ++stats_.ops_coexecuted;
    ++stats_.ops_fast;
    maybe_stream();
    return true;
  }

  // The call is node idx_ of the current block: record its attributes, bind the tensors from
  // outside the block, and answer with lazy outputs.
  OutList answer(const OpCall& call, const OpInfo& info, detail::Prepared& p, trace::OpRecord& r) {
    const graph::IrNode& node = gs_->graph.blocks[block_].ir.nodes[idx_];
    ++resumed_ops_;
    if (node.dynamic)  // the executor runs it on this call's views
      views_.emplace_back(int32_t(idx_), graph::NodeViews{r.ins, r.outs});
    if (opts_.unchecked_replay) {
      attrs_[idx_] = node.attrs;  // frozen at capture, but for the random stream's position
      attrs_[idx_].seed = call.attrs.seed;
      attrs_[idx_].offset = call.attrs.offset;
      ++idx_;
    } else {
      attrs_[idx_++] = call.attrs;
    }
    Signal* sig = open_signal().get();
    for (size_t j = 0; j < std::min(call.inputs.size(), node.ins.size()); ++j)
      bind_external(node.ins[j].buf, call.inputs[j], sig, &node);
    OutList outs;
    if (call.out) {
      outs.push_back(answer_in_place(node, *call.out, sig));
    } else {
      for (size_t k = 0; k < p.metas.size(); ++k) {
        const OutMeta& m = p.metas[k];
        if (m.alias >= 0) {
          outs.push_back(terra::detail::make_view(call.inputs[m.alias], m));
          continue;
        }
        Ref<Storage> s = Storage::lazy(size_t(numel_of(m.shape)) * itemsize(m.dtype), m.device, sig);
        storage_[node.outs[k].buf] = s;
        outs.push_back(Tensor::from_storage(std::move(s), m.shape, r.outs[k].strides, 0, m.dtype));
      }
    }
    rec_.finish_expected(outs);
    if (p.record) autograd_record(call, info, outs, p.saved_inputs(call), p.versions);
    ++stats_.ops_coexecuted;
    maybe_stream();
    return outs;
  }

  // An in-place call's destination: bound as the node's output, pending until the run writes it,
  // and one version on (as eager's write would have made it).
  const Tensor& answer_in_place(const graph::IrNode& node, const Tensor& dest, Signal* sig) {
    bind_external(node.outs[0].buf, dest, sig);
    dest.storage()->set_pending(sig);
    dest.storage()->version.fetch_add(1, std::memory_order_relaxed);
    return dest;
  }

  // A tensor from outside the block, read or written by it: bound by reference for this run
  // (memory the user wrapped is copied now, as eager execution would have read it now).
  // read: the node that reads it (null for an in-place destination). Unless that node or an
  // earlier run may write it, a host read need not wait for this run (Storage::readable).
  void bind_external(int32_t b, const Tensor& t, Signal* sig, const graph::IrNode* read = nullptr) {
    const trace::Block& blk = gs_->graph.blocks[block_];
    if (!blk.ir.bufs[b].external || storage_[b]) return;
    const Ref<Storage>& s = t.storage();
    if (s->user_memory()) {
      s->wait_ready();
      Ref<Storage> copy = Storage::allocate(s->nbytes(), s->device());
      copy_storage(*copy, *s, s->nbytes());
      storage_[b] = std::move(copy);
      return;
    }
    storage_[b] = s;
    if (s->pending() == sig) return;
    Signal* before = s->pending();
    // batch_norm's kernel updates running stats among its inputs when it runs untracked.
    bool read_only = read && read->op != Op::BatchNorm && (!before || before->done());
    s->set_pending(sig, read_only);
  }

  EngineOptions opts_;
  EngineStats stats_;
  exec::Runner runner_;
  // Every plan's planned buffers, shared: this engine's runs execute one at a time.
  std::shared_ptr<exec::Arena> arena_ = std::make_shared<exec::Arena>();
  std::unordered_map<uint64_t, GraphState> graphs_;
  GraphState* gs_ = nullptr;
  trace::Recorder rec_;
  trace::Mode mode_ = trace::Mode::Eager;
  trace::Hook* prev_hook_ = nullptr;
  bool started_coexec_ = false;
  bool in_iteration_ = false;
  std::string diverged_;
  // Co-execution resumed after recording this iteration; tries left (kResumeBudget each);
  // calls co-executed since the last resume.
  static constexpr int kResumeBudget = 4, kResumeMinOps = 8;
  bool resumed_ = false;
  static constexpr int kJumpBudget = 8;
  static constexpr int64_t kMaxBackoff = 1024;  // iterations
  bool jumped_ = false;  // went along an edge never traced (jump()): merge the trace
  bool streaming_ = false;  // a read found the runner busy: launch early (stream_after)
  bool stream_here_ = false;  // the current block streams (its last run ended in a waiting read)
  bool read_waited_ = false;  // a read in the current block waited for stream_after of its ops
  bool in_block_ = false;     // walking a block (leave_block() has something to record)
  int jumps_left_ = 0;
  int resume_budget_ = 0;
  int64_t resumed_ops_ = 0;
  // the walk through the current block
  int32_t block_ = 0;
  size_t idx_ = 0;
  trace::Binding bind_;
  std::vector<Ref<Storage>> storage_;  // per buffer of the current block
  std::vector<Attrs> attrs_;           // per node of the current block
  std::vector<std::pair<int32_t, graph::NodeViews>> views_;  // its dynamic nodes' views, ascending
  int32_t launched_ = 0;
  Ref<exec::RunSignal> open_, last_signal_;
  std::deque<Ref<exec::RunSignal>> inflight_;  // last run of each recent iteration
  std::vector<int32_t> path_;
  std::set<uint64_t> paths_;
  std::vector<exec::TimelineEvent> events_;
  double iter_t0_ = 0;
};

}  // namespace terra
