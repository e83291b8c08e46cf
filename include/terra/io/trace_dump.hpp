// terra/io/trace_dump.hpp: an engine's trace graphs as JSON (nlohmann_json) and Graphviz DOT,
// and its timeline in the Chrome trace format (chrome://tracing, https://ui.perfetto.dev).
// docs/coexecution.md explains how to read them.
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "terra/exec/engine.hpp"
#include "terra/io/graph_dump.hpp"

namespace terra::io {

// One trace graph: blocks (nodes with op, program location, output shapes), edges, counts.
inline nlohmann::json to_json(const trace::TraceGraph& g) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t b = 0; b < g.blocks.size(); ++b) {
    const trace::Block& blk = g.blocks[b];
    nlohmann::json nodes = nlohmann::json::array();
    for (size_t n = 0; n < blk.ir.nodes.size(); ++n) {
      const graph::IrNode& node = blk.ir.nodes[n];
      nlohmann::json outs = nlohmann::json::array();
      for (const auto& v : node.outs) outs.push_back(detail::shape_str(v.shape));
      nlohmann::json ins = nlohmann::json::array();
      for (const auto& v : node.ins) {
        const auto prov = blk.prov[v.buf];
        ins.push_back({{"buffer", v.buf}, {"provenance", trace::provenance_name(prov)},
                       {"shape", detail::shape_str(v.shape)}});
      }
      nodes.push_back({{"op", op_name(node.op)}, {"site", blk.sites[n].str()}, {"inputs", ins},
                       {"outputs", outs}, {"inplace", node.inplace}, {"dynamic", node.dynamic}});
    }
    out.push_back({{"id", b}, {"seen", blk.seen}, {"can_end", blk.can_end},
                   {"successors", blk.succ}, {"nodes", nodes}});
  }
  return out;
}

// Every graph of an engine, with its stats and compiled plans.
inline nlohmann::json to_json(const Engine& e) {
  EngineStats s = e.stats();
  nlohmann::json j;
  j["stats"] = {{"iterations", s.iterations}, {"eager", s.eager},   {"traced", s.traced},
                {"coexecuted", s.coexecuted}, {"fallbacks", s.fallbacks}, {"blocks", s.blocks},
                {"nodes", s.nodes},           {"dynamic_nodes", s.dynamic_nodes},
                {"paths", s.paths},           {"compiles", s.compiles},
                {"launches", s.launches},     {"streamed", s.streamed},
                {"reasons", s.reasons}};
  j["graphs"] = nlohmann::json::array();
  for (const auto& [key, gs] : e.graphs()) {
    nlohmann::json plans = nlohmann::json::array();
    for (size_t b = 0; b < gs.compiled.size(); ++b)
      if (gs.compiled[b].plan) plans.push_back({{"block", b}, {"plan", to_json(*gs.compiled[b].plan)}});
    j["graphs"].push_back({{"site", gs.site}, {"blocks", to_json(gs.graph)}, {"plans", plans}});
  }
  return j;
}

// A trace graph for Graphviz: one cluster per block (ops in host order), edges between blocks.
inline std::string to_dot(const trace::TraceGraph& g, const std::string& name = "trace") {
  std::ostringstream os;
  os << "digraph \"" << name << "\" {\n  node [shape=box, fontsize=10];\n  compound=true;\n";
  for (size_t b = 0; b < g.blocks.size(); ++b) {
    const trace::Block& blk = g.blocks[b];
    os << "  subgraph cluster_b" << b << " {\n    label=\"block " << b << " (seen " << blk.seen
       << (blk.can_end ? ", can end" : "") << ")\";\n";
    os << "    b" << b << "_entry [shape=point];\n";
    // Names built by appending: GCC 12 warns (-Wrestrict, a false positive) on "b" + to_string.
    std::string block_id = std::string(1, 'b') += std::to_string(b);
    std::string prev = block_id + "_entry";
    for (size_t n = 0; n < blk.ir.nodes.size(); ++n) {
      const graph::IrNode& node = blk.ir.nodes[n];
      std::string id = block_id + "_n";
      id += std::to_string(n);
      os << "    " << id << " [label=\"" << op_name(node.op) << (node.inplace ? "_" : "") << "\\n"
         << (node.outs.empty() ? std::string() : detail::shape_str(node.outs[0].shape)) << "\\n"
         << blk.sites[n].str() << "\"];\n";
      os << "    " << prev << " -> " << id << ";\n";
      prev = id;
    }
    os << "    b" << b << "_exit [shape=point];\n    " << prev << " -> b" << b << "_exit;\n  }\n";
  }
  for (size_t b = 0; b < g.blocks.size(); ++b)
    for (int32_t s : g.blocks[b].succ)
      os << "  b" << b << "_exit -> b" << s << "_entry [color=blue, penwidth=2];\n";
  os << "}\n";
  return os.str();
}

// The host thread's iterations and the graph runner's runs, for chrome://tracing or Perfetto.
inline nlohmann::json timeline_json(Engine& e) {
  nlohmann::json ev = nlohmann::json::array();
  ev.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 1}, {"tid", 0},
                {"args", {{"name", "host thread"}}}});
  ev.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 1}, {"tid", 1},
                {"args", {{"name", "graph runner"}}}});
  for (const auto& t : e.timeline())
    ev.push_back({{"name", t.name}, {"ph", "X"}, {"pid", 1}, {"tid", t.tid}, {"ts", t.ts_us},
                  {"dur", t.dur_us}});
  return {{"traceEvents", ev}, {"displayTimeUnit", "ms"}};
}
inline void write_timeline(Engine& e, const std::string& path) {
  std::ofstream f(path);
  TERRA_CHECK(f.good(), "write_timeline", "cannot open '", path, "' for writing");
  f << timeline_json(e).dump();
}

}  // namespace terra::io
