// terra/io/graph_dump.hpp: a compiled block as JSON (for tools and tests) and as Graphviz DOT
// (for people: `dot -Tsvg block.dot > block.svg`).
#pragma once

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "terra/graph/passes.hpp"

namespace terra::io {

namespace detail {

inline std::string device_str(Device d);

inline nlohmann::json to_json(const graph::ValueRef& v) {
  return {{"buf", v.buf},
          {"shape", std::vector<int64_t>(v.shape.begin(), v.shape.end())},
          {"strides", std::vector<int64_t>(v.strides.begin(), v.strides.end())},
          {"offset", v.offset},
          {"dtype", dtype_name(v.dtype)},
          {"device", device_str(v.device)}};
}

inline std::string device_str(Device d) {
  std::ostringstream os;
  os << d;
  return os.str();
}

inline nlohmann::json to_json(const Attrs& a) {
  return {{"ints", std::vector<int64_t>(a.ints.begin(), a.ints.end())},
          {"scalars", std::vector<double>(a.scalars.begin(), a.scalars.end())},
          {"dtype", dtype_name(a.dtype)},
          {"seed", a.seed},
          {"offset", a.offset}};
}

inline std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

}  // namespace detail

// {"nodes": [{op, attrs, ins, outs, inplace, dynamic, dead, same_as, epilogue}], "buffers": [{external,
// dynamic, nbytes, producer, device, arena_offset}], "steps": [{nodes, fused}], "arena_bytes" (the CPU arena),
// "device_arenas": [{device, bytes}]}
inline nlohmann::json to_json(const graph::Plan& p) {
  nlohmann::json j;
  j["nodes"] = nlohmann::json::array();
  for (size_t n = 0; n < p.ir.nodes.size(); ++n) {
    const graph::IrNode& node = p.ir.nodes[n];
    nlohmann::json ins = nlohmann::json::array(), outs = nlohmann::json::array();
    for (const auto& v : node.ins) ins.push_back(detail::to_json(v));
    for (const auto& v : node.outs) outs.push_back(detail::to_json(v));
    j["nodes"].push_back({{"id", n}, {"op", op_name(node.op)}, {"attrs", detail::to_json(node.attrs)},
                          {"ins", ins}, {"outs", outs}, {"inplace", node.inplace},
                          {"dynamic", node.dynamic}, {"dead", n < p.dead.size() && p.dead[n]},
                          {"same_as", n < p.same_as.size() ? p.same_as[n] : -1},
                          {"epilogue", n < p.epilogue.size() ? p.epilogue[n] : -1}});
  }
  j["buffers"] = nlohmann::json::array();
  for (size_t b = 0; b < p.ir.bufs.size(); ++b) {
    const graph::IrBuffer& buf = p.ir.bufs[b];
    j["buffers"].push_back({{"id", b}, {"external", buf.external}, {"dynamic", buf.dynamic},
                            {"nbytes", buf.nbytes},
                            {"producer", buf.producer}, {"device", detail::device_str(buf.device)},
                            {"arena_offset", b < p.arena_offset.size() ? p.arena_offset[b] : -1}});
  }
  j["steps"] = nlohmann::json::array();
  for (const graph::Step& s : p.steps)
    j["steps"].push_back(
        {{"nodes", std::vector<int32_t>(s.nodes.begin(), s.nodes.end())}, {"fused", s.fused}});
  j["arena_bytes"] = p.arena_bytes;
  j["device_arenas"] = nlohmann::json::array();
  for (const auto& [d, bytes] : p.device_arenas)
    j["device_arenas"].push_back({{"device", detail::device_str(d)}, {"bytes", bytes}});
  return j;
}

// Nodes are boxes (op and output shape; dead ones dashed, cse'd ones grey, dynamic ones
// orange), fused steps are clusters, external buffers are ellipses; an edge runs from the last
// writer of a buffer to each reader of it.
inline std::string to_dot(const graph::Plan& p) {
  std::ostringstream os;
  os << "digraph block {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n";
  auto label = [&](size_t n) {
    const graph::IrNode& node = p.ir.nodes[n];
    std::ostringstream l;
    l << "  n" << n << " [label=\"" << n << ": " << op_name(node.op)
      << (node.inplace ? "_" : "") << "\\n"
      << (node.outs.empty() ? "" : detail::shape_str(node.outs[0].shape));
    if (n < p.epilogue.size() && p.epilogue[n] >= 0) l << "\\n+ relu n" << p.epilogue[n];  // runs it
    l << "\"";
    if (n < p.dead.size() && p.dead[n]) l << ", style=dashed";
    if (n < p.same_as.size() && p.same_as[n] >= 0) l << ", style=filled, fillcolor=grey";
    if (node.dynamic) l << ", color=orange";  // shapes change from run to run
    return l.str() + "];\n";
  };
  for (size_t s = 0; s < p.steps.size(); ++s) {
    if (!p.steps[s].fused) {
      os << label(p.steps[s].nodes[0]);
      continue;
    }
    os << "  subgraph cluster_" << s << " {\n    label=\"fused\"; style=rounded;\n";
    for (int32_t n : p.steps[s].nodes) os << "  " << label(n);
    os << "  }\n";
  }
  std::vector<std::string> writer(p.ir.bufs.size());
  // Built by appending: GCC 12 warns (-Wrestrict, a false positive) on "n" + std::to_string(n).
  auto name = [](char prefix, size_t i) {
    std::string s(1, prefix);
    s += std::to_string(i);
    return s;
  };
  for (size_t b = 0; b < p.ir.bufs.size(); ++b)
    if (p.ir.bufs[b].external) {
      writer[b] = name('b', b);
      os << "  " << writer[b] << " [shape=ellipse, label=\"buf " << b << "\"];\n";
    }
  for (size_t n = 0; n < p.ir.nodes.size(); ++n) {
    const graph::IrNode& node = p.ir.nodes[n];
    for (const auto& v : node.ins)
      if (!writer[v.buf].empty()) os << "  " << writer[v.buf] << " -> n" << n << ";\n";
    // Views forward their input's buffer, so the edge into a view's reader comes from the view.
    for (const auto& v : node.outs) writer[v.buf] = name('n', n);
  }
  os << "}\n";
  return os.str();
}

}  // namespace terra::io
