// terra/autograd/engine.hpp: the backward pass, autograd::grad, and Tensor's autograd methods.
#pragma once

#include "terra/autograd/autograd.hpp"

namespace terra::autograd {

namespace detail {

// g1 + g2 where either may be undefined (a zero gradient).
inline Tensor add_grads(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return a + b;
}

inline void check_saved(const Node& n) {
  TERRA_CHECK(!n.released, "backward", "trying to backward through the graph of ", n.name(),
              " a second time (its saved values were freed); pass retain_graph = true to the "
              "first backward()");
  auto check = [&](const SmallVector<Tensor, 3>& ts, const SmallVector<uint64_t, 3>& vs, const char* what) {
    for (size_t i = 0; i < ts.size(); ++i) {
      if (!ts[i].defined()) continue;  // not kept (OpInfo::unsaved_outputs)
      uint64_t now = ts[i].storage()->version.load();
      TERRA_CHECK(now == vs[i], "backward", what, " ", i, " of ", n.name(), " (shape ", ts[i].shape(),
                  ") was modified by an in-place operation after it was saved (version ", vs[i],
                  ", now ", now, ")");
    }
  };
  check(n.inputs, n.in_versions, "input");
  check(n.outputs, n.out_versions, "output");
}

inline SmallVector<Tensor, 3> reattached_outputs(Node& n) {
  SmallVector<Tensor, 3> out;
  for (size_t i = 0; i < n.outputs.size(); ++i) {
    if (!n.outputs[i].defined()) {  // not kept (OpInfo::unsaved_outputs)
      out.push_back(Tensor());
      continue;
    }
    Tensor t = detached(n.outputs[i]);
    if (is_floating(t.dtype())) {
      Meta& m = ensure_meta(t);
      m.requires_grad = true;
      m.grad_fn = n.shared_from_this();
      m.output_nr = uint32_t(i);
    }
    out.push_back(t);
  }
  return out;
}

// The vjps of kCopySlices and kViewOfBase (see Node), in public ops like every other vjp.
inline void view_node_vjp(const Node& n, std::span<const Tensor> g, std::span<Tensor> gi) {
  Tensor pos = view_positions(n.attrs, g[0].device());
  TensorOptions o = options_of(g[0]);
  if (n.op == Node::kViewOfBase) {  // g: the view's shape; the base gets it at its positions
    Tensor zero = zeros({numel_of(n.in_shapes[0])}, o);
    gi[0] = scatter_add(zero, 0, pos, g[0].reshape({-1})).view(n.in_shapes[0]);
    return;
  }
  // kCopySlices, g: the base's shape. The view's region goes to the in-place op's result, the
  // rest to the base's old value.
  Tensor flat = g[0].reshape({-1});
  if (n.needs & 2u) gi[1] = index_select(flat, 0, pos).view(n.in_shapes[1]);
  if (n.needs & 1u) {
    Tensor hit = scatter_add(zeros_like(flat), 0, pos, ones({pos.numel()}, o));
    gi[0] = masked_fill(flat, hit != 0.0, 0.0).view(n.in_shapes[0]);
  }
}

// Nodes reachable from the roots, with the number of edges into each from reachable nodes.
inline std::unordered_map<Node*, int> dependencies(const std::vector<Edge>& roots) {
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack;
  for (const Edge& e : roots) {
    if (e.fn && !deps.count(e.fn.get())) {
      deps[e.fn.get()] = 0;
      stack.push_back(e.fn.get());
    }
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next) {
      if (!e.fn) continue;
      auto [it, fresh] = deps.try_emplace(e.fn.get(), 0);
      ++it->second;
      if (fresh) stack.push_back(e.fn.get());
    }
  }
  return deps;
}

inline void accumulate_into_leaf(Node& n, const Tensor& g, bool create_graph) {
  Meta& m = ensure_meta(Tensor(n.leaf));
  if (!g.defined()) return;
  if (create_graph) {
    m.grad = m.grad.defined() ? m.grad + g : g;
    return;
  }
  NoGradGuard no_grad;
  // The first gradient is copied (it may alias another tensor); later ones add in place, so
  // grad() keeps its address across steps.
  if (!m.grad.defined() || m.grad.shape() != g.shape()) m.grad = g.to(n.leaf->dtype).clone();
  else m.grad.add_(g);
}

// Run the backward pass from roots seeded with grads. With `capture` non-empty, gradients
// reaching those edges are returned instead of being accumulated into leaves.
inline std::vector<Tensor> run(const std::vector<Edge>& roots, const std::vector<Tensor>& seeds,
                               bool retain_graph, bool create_graph,
                               const std::vector<Edge>& capture = {}) {
  auto deps = dependencies(roots);
  std::unordered_map<Node*, SmallVector<Tensor, 2>> buffers;
  auto deposit = [&](const Edge& e, const Tensor& g) {
    auto& buf = buffers[e.fn.get()];
    if (buf.size() < e.fn->num_outputs) buf.resize(e.fn->num_outputs);
    buf[e.slot] = add_grads(buf[e.slot], g);
  };
  for (size_t i = 0; i < roots.size(); ++i)
    if (roots[i].fn) deposit(roots[i], seeds[i]);
  std::vector<Tensor> captured(capture.size());
  std::deque<Node*> ready;
  for (auto& [n, d] : deps)
    if (d == 0) ready.push_back(n);
  AutoGradMode mode(create_graph);
  while (!ready.empty()) {
    Node* n = ready.front();
    ready.pop_front();
    SmallVector<Tensor, 2> grads = std::move(buffers[n]);
    buffers.erase(n);
    grads.resize(n->num_outputs);
    for (size_t i = 0; i < capture.size(); ++i)
      if (capture[i].fn.get() == n) captured[i] = add_grads(captured[i], grads[capture[i].slot]);
    for (size_t i = 0; i < n->retained.size(); ++i)
      if (auto m = n->retained[i].lock(); m && grads[i].defined()) m->grad = grads[i];
    if (n->op == Node::kAccumulate) {
      if (capture.empty()) accumulate_into_leaf(*n, grads[0], create_graph);
      continue;
    }
    SmallVector<Tensor, 3> grad_ins(n->next.size());
    bool any = false;
    for (const Tensor& g : grads) any = any || g.defined();
    if (any && n->op < 0) {
      view_node_vjp(*n, {grads.data(), grads.size()}, {grad_ins.data(), grad_ins.size()});
    } else if (any) {
      check_saved(*n);
      // With create_graph the saved outputs must lead back to this node again.
      SmallVector<Tensor, 3> outs = create_graph ? reattached_outputs(*n) : n->outputs;
      VjpCtx ctx{Op(n->op), n->attrs, {n->inputs.data(), n->inputs.size()},
                 {outs.data(), outs.size()}, {n->in_shapes.data(), n->in_shapes.size()},
                 {n->in_dtypes.data(), n->in_dtypes.size()}, n->needs};
      op_info(Op(n->op)).vjp(ctx, {grads.data(), grads.size()}, {grad_ins.data(), grad_ins.size()});
    }
    for (size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.fn) continue;
      if (grad_ins[i].defined()) {
        // vjps of broadcasting ops return the broadcast shape and the compute dtype.
        Tensor gi = grad_ins[i];
        if (gi.shape() != n->in_shapes[i]) gi = sum_to(gi, n->in_shapes[i]);
        if (gi.dtype() != n->in_dtypes[i]) gi = gi.to(n->in_dtypes[i]);
        deposit(e, gi);
      }
      if (--deps[e.fn.get()] == 0) ready.push_back(e.fn.get());
    }
    if (!retain_graph) {
      n->inputs.clear();
      n->outputs.clear();
      n->released = true;
    }
  }
  return captured;
}

inline Tensor seed_for(const Tensor& root, const Tensor& given) {
  if (given.defined()) {
    TERRA_CHECK(given.shape() == root.shape(), "backward", "gradient of shape ", given.shape(),
                " given for a tensor of shape ", root.shape());
    return given;
  }
  TERRA_CHECK(root.numel() == 1, "backward", "a gradient must be given for a tensor of shape ",
              root.shape(), " (only one-element outputs get an implicit gradient of 1)");
  return ones_like(root);
}

}  // namespace detail

// Accumulate d(sum of outputs[i] * grad_outputs[i]) into the .grad of every leaf.
inline void backward(const std::vector<Tensor>& outputs, const std::vector<Tensor>& grad_outputs = {},
                     bool retain_graph = false, bool create_graph = false) {
  std::vector<Edge> roots;
  std::vector<Tensor> seeds;
  for (size_t i = 0; i < outputs.size(); ++i) {
    TERRA_CHECK(detail::requires_grad(outputs[i]), "backward", "output ", i, " (shape ",
                outputs[i].shape(), ") does not require grad and has no grad_fn");
    roots.push_back(detail::edge_of(outputs[i]));
    seeds.push_back(detail::seed_for(outputs[i], i < grad_outputs.size() ? grad_outputs[i] : Tensor()));
  }
  detail::run(roots, seeds, retain_graph, create_graph);
}

// Gradients of outputs with respect to inputs, without touching any .grad. An input the
// outputs do not depend on is an error unless allow_unused (then its gradient is undefined).
inline std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                                const std::vector<Tensor>& grad_outputs = {},
                                std::optional<bool> retain_graph = std::nullopt,
                                bool create_graph = false, bool allow_unused = false) {
  std::vector<Edge> roots, capture;
  std::vector<Tensor> seeds;
  for (size_t i = 0; i < outputs.size(); ++i) {
    TERRA_CHECK(detail::requires_grad(outputs[i]), "grad", "output ", i, " (shape ",
                outputs[i].shape(), ") does not require grad");
    roots.push_back(detail::edge_of(outputs[i]));
    seeds.push_back(detail::seed_for(outputs[i], i < grad_outputs.size() ? grad_outputs[i] : Tensor()));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    TERRA_CHECK(detail::requires_grad(inputs[i]), "grad", "input ", i, " (shape ",
                inputs[i].shape(), ") does not require grad");
    capture.push_back(detail::edge_of(inputs[i]));
  }
  auto out = detail::run(roots, seeds, retain_graph.value_or(create_graph), create_graph, capture);
  for (size_t i = 0; i < out.size(); ++i) {
    TERRA_CHECK(out[i].defined() || allow_unused, "grad", "input ", i, " (shape ",
                inputs[i].shape(), ") was not used to compute the outputs; pass allow_unused = true");
  }
  return out;
}

}  // namespace terra::autograd

namespace terra {

using autograd::NoGradGuard;
using autograd::EnableGradGuard;

inline bool Tensor::requires_grad() const { return autograd::detail::requires_grad(*this); }
inline Tensor& Tensor::set_requires_grad(bool r) {
  auto* m = autograd::detail::meta_of(*this);
  TERRA_CHECK(!(m && m->grad_fn) || r, "requires_grad", "cannot turn off requires_grad of a non-leaf "
              "tensor; use detach()");
  TERRA_CHECK(!r || is_floating(dtype()), "requires_grad", "only floating tensors can require "
              "grad, got ", dtype());
  if (!m && !r) return *this;
  autograd::detail::ensure_meta(*this).requires_grad = r;
  return *this;
}
inline const Tensor& Tensor::grad() const {
  static const Tensor undefined;
  auto* m = autograd::detail::meta_of(*this);
  return m ? m->grad : undefined;
}
inline Tensor& Tensor::mutable_grad() { return autograd::detail::ensure_meta(*this).grad; }
inline bool Tensor::is_leaf() const {
  auto* m = autograd::detail::meta_of(*this);
  return !m || !m->grad_fn;
}
inline const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<autograd::Node> none;
  auto* m = autograd::detail::meta_of(*this);
  return m ? m->grad_fn : none;
}
inline void Tensor::retain_grad() {
  auto* m = autograd::detail::meta_of(*this);
  TERRA_CHECK(m && m->requires_grad, "retain_grad", "the tensor does not require grad");
  if (!m->grad_fn) return;  // leaves keep their grad anyway
  m->retains_grad = true;
  m->grad_fn->retained[m->output_nr] = impl_ptr()->autograd;
}
inline Tensor Tensor::detach() const { return autograd::detail::detached(*this); }
inline void Tensor::backward(const Tensor& gradient, bool retain_graph, bool create_graph) const {
  autograd::backward({*this}, {gradient}, retain_graph, create_graph);
}

}  // namespace terra
