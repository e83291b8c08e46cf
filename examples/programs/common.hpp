// examples/programs/common.hpp: what the ten paper programs share. Each program is a function
//   Outcome run_<name>(const <Name>Config& cfg, Mode mode, int iters)
// that trains from cfg.seed for `iters` iterations and returns everything observable: every
// value the host fetched, every host decision, the final parameters (raw bytes), the engine's
// stats and the wall time of every iteration. Two runs of one program in different modes must
// give identical `fetched`, `decisions` and `params` on the CPU.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <terra/terra.hpp>

namespace programs {

namespace tr = terra;
namespace nn = terra::nn;
namespace F = terra::nn::functional;

enum class Mode {
  eager,   // plain imperative execution, no engine
  coexec,  // under terra::Engine: traced, merged, co-executed, validated op by op
  replay,  // benchmark baseline: the first traced step replayed without validation
           // (EngineOptions::unchecked_replay, what whole-step graph capture does)
};

inline const char* mode_name(Mode m) {
  return m == Mode::eager ? "eager" : m == Mode::coexec ? "coexec" : "replay";
}

struct Outcome {
  std::vector<double> fetched;                       // every value the host read, in order
  std::vector<int64_t> decisions;                    // every host decision, in order
  std::vector<std::vector<unsigned char>> params;    // raw bytes of every parameter at the end
  std::vector<double> step_seconds;                  // wall time of each iteration
  // How the engine ran each iteration: 'e' eagerly (also every iteration in eager mode),
  // 't' traced, 'c' co-executed, 'f' fell back part-way.
  std::string step_kinds;
  tr::EngineStats stats;                             // zero in eager mode
};

inline std::vector<unsigned char> bytes_of(const tr::Tensor& t) {
  tr::Tensor c = t.contiguous();
  const auto* p = static_cast<const unsigned char*>(c.raw_data());
  return {p, p + c.nbytes()};
}

// Appends the raw bytes of every tensor (call it with module->parameters() after the loop).
inline void collect_params(Outcome& o, const std::vector<tr::Tensor>& ps) {
  for (const auto& p : ps) o.params.push_back(bytes_of(p));
}

// Runs body(step) `iters` times in `mode`, timing each iteration. Under the engine each
// iteration is one engine.iteration() scope; the engine is synchronized before returning, so
// the last step's time includes the work still queued on the graph runner.
template <class Body>
void run_loop(Mode mode, int iters, Outcome& o, Body&& body, tr::EngineOptions opts = {}) {
  using clock = std::chrono::steady_clock;
  o.step_seconds.reserve(o.step_seconds.size() + iters);
  if (mode == Mode::eager) {
    for (int i = 0; i < iters; ++i) {
      auto t0 = clock::now();
      body(i);
      o.step_seconds.push_back(std::chrono::duration<double>(clock::now() - t0).count());
      o.step_kinds += 'e';
    }
    return;
  }
  opts.unchecked_replay = mode == Mode::replay;
  tr::Engine engine(opts);
  tr::EngineStats before;
  for (int i = 0; i < iters; ++i) {
    auto t0 = clock::now();
    {
      auto it = engine.iteration();
      body(i);
    }
    if (i == iters - 1) engine.synchronize();
    o.step_seconds.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    tr::EngineStats now = engine.stats();
    o.step_kinds += now.coexecuted > before.coexecuted ? 'c'
                    : now.fallbacks > before.fallbacks ? 'f'
                    : now.traced > before.traced       ? 't'
                                                       : 'e';
    before = now;
  }
  o.stats = engine.stats();
}

// Median of the step times after the first `skip` (warm-up, tracing) iterations.
inline double median_step(const Outcome& o, size_t skip) {
  if (o.step_seconds.size() <= skip) return 0;
  std::vector<double> v(o.step_seconds.begin() + skip, o.step_seconds.end());
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Empty when a and b agree bit for bit, else the first difference in words.
inline std::string compare(const Outcome& a, const Outcome& b) {
  if (a.decisions != b.decisions) {
    size_t i = 0;
    while (i < a.decisions.size() && i < b.decisions.size() && a.decisions[i] == b.decisions[i]) ++i;
    return "host decision " + std::to_string(i) + " differs (of " +
           std::to_string(a.decisions.size()) + " vs " + std::to_string(b.decisions.size()) + ")";
  }
  if (a.fetched.size() != b.fetched.size())
    return "fetched " + std::to_string(a.fetched.size()) + " vs " + std::to_string(b.fetched.size()) +
           " values";
  for (size_t i = 0; i < a.fetched.size(); ++i)
    if (std::memcmp(&a.fetched[i], &b.fetched[i], sizeof(double)) != 0)
      return "fetched value " + std::to_string(i) + " differs: " + std::to_string(a.fetched[i]) +
             " vs " + std::to_string(b.fetched[i]);
  if (a.params.size() != b.params.size()) return "parameter counts differ";
  for (size_t i = 0; i < a.params.size(); ++i)
    if (a.params[i] != b.params[i]) return "parameter " + std::to_string(i) + " differs";
  return "";
}

}  // namespace programs
