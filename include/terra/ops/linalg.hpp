// terra/ops/linalg.hpp: matmul (batched, broadcasting), mm, bmm, linear.
#pragma once

#include "terra/ops/shape.hpp"

namespace terra::op {

namespace detail_linalg {
// The dtype a contraction computes and returns in: the promoted input dtype; bool is rejected.
inline DType contract_dtype(std::span<const Tensor> ins, const char* name) {
  DType dt = ins[0].dtype();
  for (const Tensor& t : ins) dt = promote_types(dt, t.dtype());
  TERRA_CHECK(dt != DType::Bool, name, "is not supported for bool tensors");
  return dt;
}
inline Shape batch_of(const Tensor& t) {
  return t.dim() > 2 ? Shape(t.shape().begin(), t.shape().end() - 2) : Shape{};
}
}  // namespace detail_linalg

// torch.matmul: 1-D x 1-D -> 0-d; a 1-D operand is promoted to a matrix (a row on the left, a
// column on the right) and that dim is removed again; leading (batch) dims broadcast.
// attrs: none.
struct MatMul {
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor &a = c.inputs[0], &b = c.inputs[1];
    DType dt = detail_linalg::contract_dtype(c.inputs, "matmul");
    TERRA_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul", "both arguments need at least 1 dim, got ",
                "shapes ", a.shape(), " and ", b.shape());
    int64_t ka = a.shape().back(), kb = b.dim() == 1 ? b.shape()[0] : b.shape()[b.dim() - 2];
    TERRA_CHECK(ka == kb, "matmul", "shapes ", a.shape(), " and ", b.shape(),
                " cannot be multiplied");
    Shape ba = detail_linalg::batch_of(a), bb = detail_linalg::batch_of(b);
    size_t n = std::max(ba.size(), bb.size());
    Shape s(n);
    for (size_t i = 0; i < n; ++i) {
      int64_t da = i < n - ba.size() ? 1 : ba[i - (n - ba.size())];
      int64_t db = i < n - bb.size() ? 1 : bb[i - (n - bb.size())];
      TERRA_CHECK(da == db || da == 1 || db == 1, "matmul", "batch dims of shapes ", a.shape(),
                  " and ", b.shape(), " cannot be broadcast together");
      s[i] = da == 1 ? db : da;
    }
    if (a.dim() >= 2) s.push_back(a.shape()[a.dim() - 2]);
    if (b.dim() >= 2) s.push_back(b.shape().back());
    out.push_back(detail::meta(std::move(s), dt, a.device()));
  }
};

// x: [*, in], weight: [out, in], optional bias: [out] -> [*, out].
// inputs: {x, weight} or {x, weight, bias}; attrs.ints = {has_bias}.
struct Linear {
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    TERRA_CHECK(c.inputs.size() == 2 || c.inputs.size() == 3, "linear",
                "expects 2 or 3 inputs, got ", c.inputs.size());
    const Tensor &x = c.inputs[0], &w = c.inputs[1];
    DType dt = detail_linalg::contract_dtype(c.inputs, "linear");
    TERRA_CHECK(w.dim() == 2, "linear", "weight must be 2-D [out, in], got shape ", w.shape());
    TERRA_CHECK(x.dim() >= 1 && x.shape().back() == w.shape()[1], "linear", "input of shape ",
                x.shape(), " does not match weight of shape ", w.shape());
    if (c.inputs.size() == 3) {
      const Tensor& b = c.inputs[2];
      TERRA_CHECK(b.dim() == 1 && b.shape()[0] == w.shape()[0], "linear", "bias of shape ",
                  b.shape(), " does not match weight of shape ", w.shape());
    }
    Shape s = x.shape();
    s.back() = w.shape()[0];
    out.push_back(detail::meta(std::move(s), dt, x.device()));
  }
};

}  // namespace terra::op

namespace terra {

/// Broadcasting batched product, as torch.matmul: [..., n, k] @ [..., k, p] -> [..., n, p].
inline Tensor matmul(const Tensor& a, const Tensor& b, Loc loc = Loc::current()) {
  const Tensor in[] = {a, b};
  return dispatch1({.op = Op::MatMul, .inputs = in, .loc = loc});
}
/// a: [n, k], b: [k, p] -> [n, p].
inline Tensor mm(const Tensor& a, const Tensor& b, Loc loc = Loc::current()) {
  TERRA_CHECK(a.dim() == 2 && b.dim() == 2, "mm", "expects two 2-D tensors, got shapes ", a.shape(),
              " and ", b.shape());
  return matmul(a, b, loc);
}
/// a: [B, n, k], b: [B, k, p] -> [B, n, p] (no broadcasting).
inline Tensor bmm(const Tensor& a, const Tensor& b, Loc loc = Loc::current()) {
  TERRA_CHECK(a.dim() == 3 && b.dim() == 3, "bmm", "expects two 3-D tensors, got shapes ",
              a.shape(), " and ", b.shape());
  TERRA_CHECK(a.shape()[0] == b.shape()[0], "bmm", "batch sizes differ: shapes ", a.shape(),
              " and ", b.shape());
  return matmul(a, b, loc);
}
/// x: [*, in], weight: [out, in], bias: [out] (optional) -> [*, out] = x @ weight^T + bias.
inline Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {},
                     Loc loc = Loc::current()) {
  Attrs a;
  a.ints = {bias.defined() ? 1 : 0};
  if (bias.defined()) {
    const Tensor in[] = {x, weight, bias};
    return dispatch1({.op = Op::Linear, .inputs = in, .attrs = std::move(a), .loc = loc});
  }
  const Tensor in[] = {x, weight};
  return dispatch1({.op = Op::Linear, .inputs = in, .attrs = std::move(a), .loc = loc});
}

}  // namespace terra
