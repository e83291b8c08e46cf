// terra/autograd/autograd.hpp: reverse-mode automatic differentiation.
// dispatch() asks autograd_wants() before running an op and autograd_record() after: a call
// with an input that requires grad becomes a Node holding what the op's vjp needs. backward()
// walks the nodes in reverse topological order and calls each op's vjp, written with public
// ops, so the backward pass goes through dispatch like any other code.
#pragma once

#include <algorithm>
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "terra/ops/ops.hpp"

namespace terra::autograd {

// ---- grad mode: per thread, switched by RAII guards ----
inline bool& grad_mode_flag() {
  thread_local bool enabled = true;
  return enabled;
}
inline bool is_grad_enabled() { return grad_mode_flag(); }

// Sets grad mode for a scope and restores the previous mode.
class AutoGradMode {
 public:
  explicit AutoGradMode(bool enabled) : prev_(grad_mode_flag()) { grad_mode_flag() = enabled; }
  ~AutoGradMode() { grad_mode_flag() = prev_; }
  AutoGradMode(const AutoGradMode&) = delete;
  AutoGradMode& operator=(const AutoGradMode&) = delete;

 private:
  bool prev_;
};
// No op in this scope is recorded (inference, optimizer steps).
class NoGradGuard : public AutoGradMode {
 public:
  NoGradGuard() : AutoGradMode(false) {}
};
// Recording back on inside a NoGradGuard scope.
class EnableGradGuard : public AutoGradMode {
 public:
  EnableGradGuard() : AutoGradMode(true) {}
};

struct Edge {
  std::shared_ptr<Node> fn;  // null: no gradient flows here
  uint32_t slot = 0;         // which output of fn
};

// One recorded op call (or, with op == kAccumulate, the sink of a leaf's gradient).
struct Node : std::enable_shared_from_this<Node> {
  static constexpr int kAccumulate = -1;
  int op = kAccumulate;
  Attrs attrs;
  // Saved values. Inputs keep their autograd identity (a vjp run with create_graph records
  // through them); outputs are saved detached (they would point back at this node) and are
  // re-attached to it for higher-order gradients.
  SmallVector<Tensor, 3> inputs, outputs;
  SmallVector<uint64_t, 3> in_versions, out_versions;
  SmallVector<Shape, 3> in_shapes;
  SmallVector<DType, 3> in_dtypes;
  SmallVector<Edge, 3> next;  // per input: where its gradient goes
  uint32_t needs = 0;
  uint32_t num_outputs = 0;
  bool released = false;
  std::shared_ptr<TensorImpl> leaf;                 // kAccumulate: the leaf tensor
  SmallVector<std::weak_ptr<Meta>, 1> retained;     // per output: retain_grad() metas

  const char* name() const { return op < 0 ? "accumulate_grad" : op_name(Op(op)); }
};

struct Meta {
  bool requires_grad = false;
  bool retains_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;          // null for leaves
  uint32_t output_nr = 0;
  std::weak_ptr<Node> accumulator;        // leaves: their AccumulateGrad node, while alive
  std::shared_ptr<TensorImpl> view_base;  // views: the tensor whose storage they alias
};

namespace detail {

inline Meta* meta_of(const Tensor& t) { return t.defined() ? t.unsafe_impl()->autograd.get() : nullptr; }
inline bool requires_grad(const Tensor& t) {
  Meta* m = meta_of(t);
  return m && m->requires_grad;
}
inline Meta& ensure_meta(const Tensor& t) {
  auto& m = t.unsafe_impl()->autograd;
  if (!m) m = std::make_shared<Meta>();
  return *m;
}

// A handle to the same values with no autograd history.
inline Tensor detached(const Tensor& t) {
  return Tensor::from_storage(t.storage(), t.shape(), t.strides(), t.storage_offset(), t.dtype());
}

// Where the gradient of t goes.
inline Edge edge_of(const Tensor& t) {
  Meta* m = meta_of(t);
  if (!m || !m->requires_grad) return {};
  if (m->grad_fn) return {m->grad_fn, m->output_nr};
  std::shared_ptr<Node> acc = m->accumulator.lock();
  if (!acc) {
    acc = std::make_shared<Node>();
    acc->leaf = t.impl_ptr();
    acc->num_outputs = 1;
    m->accumulator = acc;
  }
  return {acc, 0};
}

inline void check_in_place(const OpCall& call, const OpInfo& info) {
  Meta* m = meta_of(*call.out);
  if (!m) return;
  TERRA_CHECK(!(m->requires_grad && !m->grad_fn), info.name,
              "a leaf tensor that requires grad is used in an in-place operation; wrap it in "
              "NoGradGuard or work on a copy");
  if (m->view_base) {
    Meta* bm = m->view_base->autograd.get();
    TERRA_CHECK(!(bm && bm->requires_grad), info.name,
                "in-place modification of a view of a tensor that requires grad is not "
                "supported; use an out-of-place op");
  }
}

}  // namespace detail
}  // namespace terra::autograd

namespace terra {

inline bool autograd_wants(const OpCall& call, const OpInfo& info, const MetaList& metas) {
  if (!autograd::is_grad_enabled()) return false;
  bool any = call.out && autograd::detail::requires_grad(*call.out);
  if (call.out) autograd::detail::check_in_place(call, info);
  for (const Tensor& t : call.inputs) any = any || autograd::detail::requires_grad(t);
  if (!any || info.vjp) return any;
  // No vjp: fine for ops whose results carry no gradient (indices, masks, comparisons).
  for (const OutMeta& m : metas)
    TERRA_CHECK(!is_floating(m.dtype), info.name, "is not differentiable, but an input requires "
                "grad; call it on detach()ed inputs or inside NoGradGuard");
  return false;
}

inline void autograd_record(const OpCall& call, const OpInfo& info, OutList& outs,
                            std::span<const Tensor> saved_inputs,
                            const SmallVector<uint64_t, 4>& versions) {
  using autograd::Node, autograd::Meta, autograd::detail::edge_of;
  namespace ad = autograd::detail;
  auto node = std::make_shared<Node>();
  node->op = int(call.op);
  node->attrs = call.attrs;
  node->num_outputs = uint32_t(outs.size());
  // Edges first: an in-place op's input is its own output, whose history changes below.
  for (size_t i = 0; i < call.inputs.size(); ++i) {
    const Tensor& t = call.inputs[i];
    node->in_shapes.push_back(t.shape());
    node->in_dtypes.push_back(t.dtype());
    node->next.push_back(edge_of(t));
    if (node->next.back().fn) node->needs |= 1u << i;
  }
  if (info.saves & kSaveInputs) {
    for (size_t i = 0; i < saved_inputs.size(); ++i) {
      node->inputs.push_back(saved_inputs[i]);
      node->in_versions.push_back(versions[i]);
    }
  }
  if (info.saves & kSaveOutputs) {
    for (const Tensor& o : outs) {
      node->outputs.push_back(ad::detached(o));
      node->out_versions.push_back(o.storage()->version.load());
    }
  }
  node->retained.resize(outs.size());
  for (size_t i = 0; i < outs.size(); ++i) {
    if (!is_floating(outs[i].dtype())) continue;  // indices and masks carry no gradient
    Meta& m = ad::ensure_meta(outs[i]);
    m.requires_grad = true;
    m.grad_fn = node;
    m.output_nr = uint32_t(i);
    m.grad = Tensor();
    if (info.kind == OpKind::View) m.view_base = call.inputs[0].impl_ptr();
  }
}

}  // namespace terra
