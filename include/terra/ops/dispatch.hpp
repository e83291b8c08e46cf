// terra/ops/dispatch.hpp: the one path every op call takes.
// Eager mode: validate, infer output metadata, allocate (or alias, for views), run the kernel.
// Tracing and co-execution hook in here and nowhere else.
#pragma once

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
  TERRA_CHECK(k != nullptr, info.name, "not implemented on ", dev);
  k(call, outs);
}

// A contiguous copy made by the copy kernel alone (not recorded by autograd or traces).
inline Tensor snapshot(const Tensor& t) {
  Tensor c = Tensor::empty(t.shape(), t.dtype(), t.device());
  const Tensor in[] = {t};
  Attrs a;
  a.dtype = t.dtype();
  run_kernel({.op = Op::Copy, .inputs = in, .attrs = a}, op_info(Op::Copy), {&c, 1});
  return c;
}

// An in-place call (call.out set): write straight into *out when that is safe, else compute
// into a temporary and copy (with a cast) into *out.
inline void run_into(const OpCall& call, const OpInfo& info, const OutMeta& m, Tensor& result) {
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
  o.storage()->version.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace detail

inline OutList dispatch(const OpCall& call) {
  const OpInfo& info = op_info(call.op);
  detail::check_inputs(call, info);
  MetaList metas;
  info.infer(call, metas);
  OutList outs;
  // Versions before the kernel runs: an in-place op must not validate its own saved inputs.
  bool record = autograd_wants(call, info, metas);
  SmallVector<uint64_t, 4> versions;
  if (record)
    for (const Tensor& t : call.inputs) versions.push_back(t.storage()->version.load());
  if (call.out) {
    TERRA_CHECK(metas.size() == 1 && metas[0].alias < 0, info.name, "has no in-place form");
    // The vjp must see the values before this op overwrote them: snapshot saved inputs that
    // share memory with the destination.
    SmallVector<Tensor, 4> saved(call.inputs.begin(), call.inputs.end());
    if (record && (info.saves & kSaveInputs))
      for (size_t i = 0; i < saved.size(); ++i)
        if (saved[i].storage() == call.out->storage()) {
          saved[i] = detail::snapshot(saved[i]);
          versions[i] = 0;
        }
    outs.emplace_back();
    detail::run_into(call, info, metas[0], outs[0]);
    if (record) autograd_record(call, info, outs, {saved.data(), saved.size()}, versions);
    return outs;
  }
  bool compute = false;
  for (OutMeta& m : metas) {
    if (m.alias >= 0) {
      outs.push_back(Tensor::from_storage(call.inputs[m.alias].storage(), m.shape, m.strides,
                                          m.offset, m.dtype));
    } else {
      outs.push_back(Tensor::empty(m.shape, m.dtype, m.device));
      compute = true;
    }
  }
  if (compute) detail::run_kernel(call, info, {outs.data(), outs.size()});
  if (record) autograd_record(call, info, outs, call.inputs, versions);
  return outs;
}

}  // namespace terra
