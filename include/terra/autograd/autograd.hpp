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

// One recorded op call (or, with op < 0, one of autograd's own nodes: the sink of a leaf's
// gradient, or one of the two that keep views and their base consistent, below).
struct Node : std::enable_shared_from_this<Node> {
  static constexpr int kAccumulate = -1;
  // An in-place op wrote through a view: the base's new value is its old value with the view's
  // region replaced. next = {the base's old history, the in-place op's node}.
  static constexpr int kCopySlices = -2;
  // A view whose storage was written in place since the view was made: its values are now
  // those of the base's newest history. next = {the base}.
  static constexpr int kViewOfBase = -3;
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

  const char* name() const {
    if (op >= 0) return op_name(Op(op));
    return op == kAccumulate ? "accumulate_grad" : op == kCopySlices ? "copy_slices" : "view_of_base";
  }
};

struct Meta {
  bool requires_grad = false;
  bool retains_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;          // null for leaves
  uint32_t output_nr = 0;
  std::weak_ptr<Node> accumulator;        // leaves: their AccumulateGrad node, while alive
  uint64_t view_version = 0;  // views: the storage's version when grad_fn was last right
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

// What a node keeps of an input it saves: its values and autograd identity, not its view
// base. The base's history may come to pass through the saving node (an in-place write
// through another view of the base), and a strong reference back to the base would then be
// a cycle of shared pointers that is never freed.
inline Tensor saved_input(const Tensor& t) {
  if (!t.unsafe_impl()->view_base) return t;
  auto impl = std::make_shared<TensorImpl>(*t.unsafe_impl());
  impl->view_base.reset();
  return Tensor(std::move(impl));
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
  TERRA_CHECK(!(m && m->requires_grad && !m->grad_fn), info.name,
              "a leaf tensor that requires grad is used in an in-place operation; wrap it in "
              "NoGradGuard or work on a copy");
  if (const auto& base = call.out->unsafe_impl()->view_base) {
    Meta* bm = base->autograd.get();
    TERRA_CHECK(!(bm && bm->requires_grad && !bm->grad_fn), info.name,
                "a view of a leaf tensor that requires grad (shape ", base->shape, ") is used in "
                "an in-place operation; wrap it in NoGradGuard or work on a copy");
  }
}

// A view's place in its base, for kCopySlices and kViewOfBase: ints = {rank, shape...,
// strides..., offset from the base's first element}. The base must be contiguous, so that
// the geometry also addresses a contiguous gradient of the base's shape.
inline void check_base_layout(const TensorImpl& base, const char* op) {
  TERRA_CHECK(is_contiguous_layout(base.shape, base.strides), op, "an in-place operation "
              "through a view of a non-contiguous tensor (shape ", base.shape, ", strides ",
              base.strides, ") that takes part in autograd is not supported; call contiguous() "
              "on the tensor before taking the view");
}
inline Attrs view_geometry(const TensorImpl& view, const TensorImpl& base, const char* op) {
  check_base_layout(base, op);
  Attrs a;
  a.ints.push_back(int64_t(view.shape.size()));
  for (int64_t s : view.shape) a.ints.push_back(s);
  for (int64_t s : view.strides) a.ints.push_back(s);
  a.ints.push_back(view.offset - base.offset);
  return a;
}

// Where in a contiguous tensor of the base's shape each element of the view lies (row-major
// over the view), as a 1-D int64 tensor on `device`.
inline Tensor view_positions(const Attrs& a, Device device) {
  size_t rank = size_t(a.ints[0]);
  std::vector<int64_t> pos(1, a.ints[1 + 2 * rank]);
  for (size_t d = 0; d < rank; ++d) {  // outer dims first: each dim multiplies the list
    int64_t n = a.ints[1 + d], stride = a.ints[1 + rank + d];
    std::vector<int64_t> next;
    next.reserve(pos.size() * size_t(n));
    for (int64_t p : pos)
      for (int64_t i = 0; i < n; ++i) next.push_back(p + i * stride);
    pos = std::move(next);
  }
  return tensor(pos).to(device);
}

inline std::shared_ptr<Node> make_view_node(int op, const TensorImpl& view,
                                            const std::shared_ptr<TensorImpl>& base, const char* name) {
  auto n = std::make_shared<Node>();
  n->op = op;
  n->attrs = view_geometry(view, *base, name);
  n->num_outputs = 1;
  n->in_shapes.push_back(base->shape);
  n->in_dtypes.push_back(base->dtype);
  n->next.push_back(edge_of(Tensor(base)));
  if (n->next[0].fn) n->needs |= 1u;
  n->retained.resize(1);
  return n;
}

// A view whose storage was written in place after its grad_fn was set (through another view,
// or its base) gets the base's newest history: its grad_fn becomes a kViewOfBase node.
inline void refresh_view(const Tensor& t, const char* op) {
  TensorImpl* impl = t.unsafe_impl();
  if (TERRA_LIKELY(!impl->view_base)) return;
  Meta* bm = impl->view_base->autograd.get();
  if (!bm || !bm->requires_grad) return;
  uint64_t now = impl->storage->version.load(std::memory_order_relaxed);
  Meta* m = impl->autograd.get();
  if (m && m->grad_fn && m->view_version == now) return;
  auto n = make_view_node(Node::kViewOfBase, *impl, impl->view_base, op);
  Meta& vm = ensure_meta(t);
  vm.requires_grad = true;
  vm.grad_fn = std::move(n);
  vm.output_nr = 0;
  vm.view_version = now;
}

// After an in-place op (recorded as `node`) wrote through view v: the base's value now comes
// from a kCopySlices node over its old history and the op's result.
inline void rebase_view(const Tensor& v, const std::shared_ptr<Node>& node, const char* name) {
  const std::shared_ptr<TensorImpl>& base = v.unsafe_impl()->view_base;
  auto cs = make_view_node(Node::kCopySlices, *v.unsafe_impl(), base, name);
  cs->in_shapes.push_back(v.shape());
  cs->in_dtypes.push_back(v.dtype());
  cs->next.push_back({node, 0});
  cs->needs |= 2u;
  Meta& bm = ensure_meta(Tensor(base));
  if (bm.retains_grad) cs->retained[0] = base->autograd;
  bm.requires_grad = true;
  bm.grad_fn = std::move(cs);
  bm.output_nr = 0;
}

}  // namespace detail
}  // namespace terra::autograd

namespace terra {

inline bool autograd_wants(const OpCall& call, const OpInfo& info, const MetaList& metas) {
  namespace ad = autograd::detail;
  if (!autograd::is_grad_enabled()) return false;
  bool any = false;
  if (call.out) {
    ad::check_in_place(call, info);
    ad::refresh_view(*call.out, info.name);
    any = ad::requires_grad(*call.out);
  }
  for (const Tensor& t : call.inputs) {
    ad::refresh_view(t, info.name);
    any = any || ad::requires_grad(t);
  }
  // A write through a view that will be recorded rewrites the base's history (rebase_view):
  // refuse a base it cannot address before the kernel writes anything.
  if (any && call.out && call.out->unsafe_impl()->view_base)
    ad::check_base_layout(*call.out->unsafe_impl()->view_base, info.name);
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
      node->inputs.push_back(ad::saved_input(saved_inputs[i]));
      node->in_versions.push_back(versions[i]);
    }
  }
  if (info.saves & kSaveOutputs) {
    for (size_t i = 0; i < outs.size(); ++i) {
      bool keep = !(info.unsaved_outputs >> i & 1) && outs[i].defined();
      node->outputs.push_back(keep ? ad::detached(outs[i]) : Tensor());
      node->out_versions.push_back(keep ? outs[i].storage()->version.load() : 0);
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
    if (outs[i].unsafe_impl()->view_base)
      m.view_version = outs[i].storage()->version.load(std::memory_order_relaxed);
  }
  // Written through a view: the base's history changes too.
  if (call.out && call.out->unsafe_impl()->view_base && is_floating(call.out->dtype()))
    ad::rebase_view(*call.out, node, info.name);
}

}  // namespace terra
