// terra/ops/dispatch.hpp: the one path every op call takes.
// Eager mode: validate, infer output metadata, allocate (or alias, for views), run the kernel.
// Tracing and co-execution hook in here and nowhere else.
#pragma once

#include "terra/ops/mode.hpp"
#include "terra/ops/op.hpp"

namespace terra {

namespace detail {

inline bool same_view(const Tensor& a, const Tensor& b) {
  return a.storage() == b.storage() && a.storage_offset() == b.storage_offset() &&
         a.shape() == b.shape() && a.strides() == b.strides();
}

inline void check_inputs(const OpCall& call, const OpInfo& info) {
  TERRA_CHECK(info.arity < 0 || int(call.inputs.size()) == info.arity ||
                  (info.kind == OpKind::Binary && call.inputs.size() == 1),
              info.name, "expects ", info.arity, " inputs, got ", call.inputs.size());
  for (size_t i = 0; i < call.inputs.size(); ++i) {
    TERRA_CHECK(call.inputs[i].defined(), info.name, "input ", i, " is an undefined tensor");
    TERRA_CHECK(call.inputs[i].device() == call.inputs[0].device(), info.name,
                "expected all tensors on one device, but input 0 is on ", call.inputs[0].device(),
                " and input ", i, " is on ", call.inputs[i].device());
  }
}

inline void run_kernel(const OpCall& call, const OpInfo& info, std::span<Tensor> outs) {
  Device dev = call.inputs.empty() ? call.attrs.device : call.inputs[0].device();
  KernelFn k = find_kernel(call.op, dev);
  if (TERRA_UNLIKELY(k == nullptr)) {
    if (!dev.is_cpu()) device_backend(dev, info.name);  // says when no backend is linked at all
    detail::fail(info.name, "not implemented on ", dev);
  }
  k(call, outs);
}

// Output m of a view op on `in`: it aliases in's storage. Made with grad mode on, it remembers
// the tensor (itself no view) whose storage it shares, as PyTorch's views keep their _base.
inline Tensor make_view(const Tensor& in, const OutMeta& m) {
  Tensor v = Tensor::from_storage(in.storage(), m.shape, m.strides, m.offset, m.dtype);
  if (autograd::grad_mode_flag()) {
    const auto& base = in.unsafe_impl()->view_base;
    v.unsafe_impl()->view_base = base ? base : in.impl_ptr();
  }
  return v;
}

// A contiguous copy, not recorded by autograd (but traced: a co-executed run makes it too).
inline Tensor snapshot(const Tensor& t) {
  const Tensor in[] = {t};
  Attrs a;
  a.dtype = t.dtype();
  bool& grad_mode = autograd::grad_mode_flag();
  struct Restore {
    bool& flag;
    bool prev;
    ~Restore() { flag = prev; }
  } restore{grad_mode, grad_mode};
  grad_mode = false;
  return dispatch1({.op = Op::Copy, .inputs = in, .attrs = a});
}

// Host code may hand eager ops values that a co-executed run has not produced yet.
inline void wait_inputs(const OpCall& call) {
  for (const Tensor& t : call.inputs)
    if (t.defined()) t.storage()->wait_ready();
  if (call.out && call.out->defined()) call.out->storage()->wait_ready();
}

// The kernel part of an in-place call (call.out set): write straight into *out when that is
// safe, else compute into a temporary and copy (with a cast) into *out. Bumps no version: the
// graph executors share it and leave versions to the host, which bumps them at call time.
inline void compute_into(const OpCall& call, const OpInfo& info, const OutMeta& m,
                         Tensor& result) {
  Tensor& o = *call.out;
  TERRA_CHECK(o.shape() == m.shape, info.name, "result of shape ", m.shape,
              " cannot be written into a tensor of shape ", o.shape());
  TERRA_CHECK(o.device() == m.device, info.name, "result on ", m.device,
              " cannot be written into a tensor on ", o.device());
  TERRA_CHECK(is_floating(o.dtype()) || !is_floating(m.dtype), info.name, "result of dtype ",
              m.dtype, " cannot be written into a tensor of dtype ", o.dtype());
  bool direct = o.dtype() == m.dtype && (is_elementwise(info.kind) || o.is_contiguous());
  for (const Tensor& in : call.inputs) {
    if (!direct || in.storage() != o.storage()) continue;
    direct = is_elementwise(info.kind) && same_view(in, o);
  }
  if (direct) {
    result = o;
    run_kernel(call, info, {&result, 1});
  } else {
    Tensor tmp = Tensor::empty(m.shape, m.dtype, m.device);
    run_kernel(call, info, {&tmp, 1});
    const Tensor in[] = {tmp};
    Attrs a;
    a.dtype = o.dtype();
    result = o;
    run_kernel({.op = Op::Copy, .inputs = in, .attrs = a, .out = &o, .loc = call.loc},
               op_info(Op::Copy), {&result, 1});
  }
}

// An in-place call, eagerly: the kernel part, then the version bump autograd checks.
inline void run_into(const OpCall& call, const OpInfo& info, const OutMeta& m, Tensor& result) {
  compute_into(call, info, m, result);
  call.out->storage()->version.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace detail

namespace detail {

// What every mode does before an op runs: validation, shape/dtype inference, and what autograd
// needs (input versions before the op, snapshots of inputs an in-place op overwrites).
struct Prepared {
  MetaList metas;
  bool record = false;
  SmallVector<uint64_t, 4> versions;
  SmallVector<Tensor, 4> saved;  // in-place calls whose input is overwritten: the inputs
                                 // autograd keeps (empty: it keeps the call's inputs)

  // The inputs autograd keeps for this call.
  std::span<const Tensor> saved_inputs(const OpCall& call) const {
    return saved.empty() ? call.inputs : std::span<const Tensor>(saved.data(), saved.size());
  }
};

// Whether an in-place call may snapshot an input before it runs (see prepare_autograd): the
// snapshot is an op call of its own, made before this one.
inline bool may_snapshot(const OpCall& call, const OpInfo& info) {
  if (!call.out || !autograd::grad_mode_flag() || !(info.saves & kSaveInputs)) return false;
  for (const Tensor& t : call.inputs)
    if (t.storage() == call.out->storage()) return true;
  return false;
}

// What prepare does once p.metas holds the outputs' metadata: what autograd needs.
inline void prepare_autograd(const OpCall& call, const OpInfo& info, Prepared& p) {
  // Versions before the kernel runs: an in-place op must not validate its own saved inputs.
  p.record = autograd_wants(call, info, p.metas);
  if (p.record)
    for (const Tensor& t : call.inputs) p.versions.push_back(t.storage()->version.load());
  // The vjp must see the values before this op overwrote them: snapshot saved inputs that
  // share memory with the destination.
  if (!call.out || !p.record || !(info.saves & kSaveInputs)) return;
  for (size_t i = 0; i < call.inputs.size(); ++i)
    if (call.inputs[i].storage() == call.out->storage()) {
      if (p.saved.empty()) p.saved = SmallVector<Tensor, 4>(call.inputs.begin(), call.inputs.end());
      p.saved[i] = snapshot(p.saved[i]);
      p.versions[i] = 0;
    }
}

inline void prepare(const OpCall& call, const OpInfo& info, Prepared& p) {
  check_inputs(call, info);
  info.infer(call, p.metas);
  if (call.out)
    TERRA_CHECK(p.metas.size() == 1 && p.metas[0].alias < 0, info.name, "has no in-place form");
  prepare_autograd(call, info, p);
}

// Allocate (or alias), run the kernel now, record for autograd.
inline OutList execute_eager(const OpCall& call, const OpInfo& info, Prepared& p) {
  wait_inputs(call);
  OutList outs;
  if (call.out) {
    outs.emplace_back();
    run_into(call, info, p.metas[0], outs[0]);
    if (p.record) autograd_record(call, info, outs, p.saved_inputs(call), p.versions);
    return outs;
  }
  bool compute = false;
  for (OutMeta& m : p.metas) {
    if (m.alias >= 0) {
      outs.push_back(make_view(call.inputs[m.alias], m));
    } else {
      outs.push_back(Tensor::empty(m.shape, m.dtype, m.device));
      compute = true;
    }
  }
  if (compute) run_kernel(call, info, {outs.data(), outs.size()});
  if (p.record) autograd_record(call, info, outs, call.inputs, p.versions);
  return outs;
}

inline OutList dispatch_eager(const OpCall& call, const OpInfo& info) {
  Prepared p;
  prepare(call, info, p);
  return execute_eager(call, info, p);
}
}  // namespace detail

inline OutList dispatch(const OpCall& call) {
  const OpInfo& info = op_info(call.op);
  if (trace::Hook* h = trace::active_hook(); TERRA_UNLIKELY(h != nullptr))
    return h->dispatch(call, info);
  return detail::dispatch_eager(call, info);
}

}  // namespace terra
