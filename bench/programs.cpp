// bench/programs.cpp: the paper programs' runner (terra_programs). Runs each program eagerly,
// co-executed, and as the whole-step-capture baseline (Mode::replay: the first traced step
// replayed without validation), in one process, and prints one JSON object per line and mode:
//   {"program", "system": "terra", "mode", "config", "iters", "median_step_s", "p10_step_s",
//    "p90_step_s", "matches_eager", "mismatch", "steady_windows", "steady_median_step_s",
//    "step_kinds", "stats": {...}, "error"}
// Step times: median, 10th and 90th percentile of the mean step time of windows of 5
// consecutive iterations, after the first K (--skip); steady_*: the same over the windows
// whose iterations were all co-executed. step_kinds: per iteration, e (eager), t (traced),
// c (co-executed) or f (fell back part-way).
// `matches_eager` compares every fetched value, host decision and final parameter bit for bit
// with the eager run; "error" says why a mode failed (the replay baseline throws where shapes
// change). scripts/bench_programs.py runs this and the PyTorch peers and makes the
// tables and the chart.
//   terra_programs [--config tiny|paper] [--iters N] [--skip K] [--only name,name]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "examples/programs/bert_cls.hpp"
#include "examples/programs/bert_qa.hpp"
#include "examples/programs/dcgan.hpp"
#include "examples/programs/dropblock.hpp"
#include "examples/programs/faster_rcnn.hpp"
#include "examples/programs/gpt2.hpp"
#include "examples/programs/music_transformer.hpp"
#include "examples/programs/resnet50.hpp"
#include "examples/programs/sdpoint.hpp"
#include "examples/programs/yolov3.hpp"

namespace {

using programs::Mode;
using programs::Outcome;
using Runner = std::function<Outcome(bool paper, Mode mode, int iters)>;

template <class Config, class Fn>
Runner make(Fn fn) {
  return [fn](bool paper, Mode mode, int iters) {
    return fn(paper ? Config::paper() : Config::tiny(), mode, iters);
  };
}

struct Program {
  const char* name;
  Runner run;
};

const std::vector<Program>& all_programs() {
  using namespace programs;
  static const std::vector<Program> ps = {
      {"resnet50", make<ResNet50Config>(run_resnet50)},
      {"dcgan", make<DcganConfig>(run_dcgan)},
      {"bert_cls", make<BertClsConfig>(run_bert_cls)},
      {"bert_qa", make<BertQaConfig>(run_bert_qa)},
      {"gpt2", make<Gpt2Config>(run_gpt2)},
      {"music_transformer", make<MusicTransformerConfig>(run_music_transformer)},
      {"dropblock", make<DropBlockConfig>(run_dropblock)},
      {"sdpoint", make<SDPointConfig>(run_sdpoint)},
      {"faster_rcnn", make<FasterRcnnConfig>(run_faster_rcnn)},
      {"yolov3", make<Yolov3Config>(run_yolov3)},
  };
  return ps;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
}

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}

void report(const char* name, const char* mode, bool paper, int iters, int skip,
            const Outcome* o, const Outcome* eager, const std::string& error) {
  std::ostringstream js;
  js << "{\"program\": \"" << name << "\", \"system\": \"terra\", \"mode\": \"" << mode
     << "\", \"config\": \"" << (paper ? "paper" : "tiny") << "\", \"iters\": " << iters;
  if (o) {
    // Under the engine the host runs up to max_ahead iterations ahead of the runner, so single
    // iterations alternate between fast (ran ahead) and slow (waited): the statistics are over
    // the mean step time of consecutive windows of kWindow iterations.
    // `steady`: the windows whose iterations were all co-executed (the engine's steady state,
    // without the iterations that traced a new path or fell back).
    constexpr size_t kWindow = 5;
    std::vector<double> v, steady;
    for (size_t b = std::min<size_t>(skip, o->step_seconds.size());
         b + kWindow <= o->step_seconds.size(); b += kWindow) {
      double sum = 0;
      bool all_coexecuted = true;
      for (size_t i = b; i < b + kWindow; ++i) {
        sum += o->step_seconds[i];
        all_coexecuted = all_coexecuted && i < o->step_kinds.size() && o->step_kinds[i] == 'c';
      }
      v.push_back(sum / kWindow);
      if (all_coexecuted) steady.push_back(sum / kWindow);
    }
    std::string mismatch = eager ? programs::compare(*eager, *o) : "";
    js << ", \"median_step_s\": " << quantile(v, 0.5) << ", \"p10_step_s\": " << quantile(v, 0.1)
       << ", \"p90_step_s\": " << quantile(v, 0.9) << ", \"matches_eager\": "
       << (mismatch.empty() ? "true" : "false") << ", \"mismatch\": \"" << escape(mismatch)
       << "\", \"steady_windows\": " << steady.size()
       << ", \"steady_median_step_s\": " << quantile(steady, 0.5) << ", \"step_kinds\": \""
       << o->step_kinds << "\"";
    const terra::EngineStats& s = o->stats;
    js << ", \"stats\": {\"eager\": " << s.eager << ", \"traced\": " << s.traced
       << ", \"coexecuted\": " << s.coexecuted << ", \"fallbacks\": " << s.fallbacks
       << ", \"blocks\": " << s.blocks << ", \"paths\": " << s.paths
       << ", \"compiles\": " << s.compiles << ", \"launches\": " << s.launches
       << ", \"streamed\": " << s.streamed << "}";
  }
  js << ", \"error\": \"" << escape(error) << "\"}";
  std::printf("%s\n", js.str().c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bool paper = false;
  int iters = 50, skip = 10;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--config") {
      paper = next() == "paper";
    } else if (a == "--iters") {
      iters = std::max(1, std::atoi(next().c_str()));
    } else if (a == "--skip") {
      skip = std::max(0, std::atoi(next().c_str()));
    } else if (a == "--only") {
      only = "," + next() + ",";
    } else {
      std::fprintf(stderr,
                   "usage: %s [--config tiny|paper] [--iters N] [--skip K] [--only a,b]\n"
                   "  K: first iterations left out of the step-time statistics (default 10)\n",
                   argv[0]);
      return 2;
    }
  }
  for (const Program& p : all_programs()) {
    if (!only.empty() && only.find("," + std::string(p.name) + ",") == std::string::npos) continue;
    Outcome eager;
    bool have_eager = false;
    for (Mode m : {Mode::eager, Mode::coexec, Mode::replay}) {
      try {
        Outcome o = p.run(paper, m, iters);
        report(p.name, programs::mode_name(m), paper, iters, skip, &o, have_eager ? &eager : nullptr, "");
        if (m == Mode::eager) {
          eager = std::move(o);
          have_eager = true;
        }
      } catch (const std::exception& e) {
        report(p.name, programs::mode_name(m), paper, iters, skip, nullptr, nullptr, e.what());
      }
    }
  }
  return 0;
}
