// terra/ops/sort.hpp: cumsum, sort/argsort, topk.
#pragma once

#include <utility>

#include "terra/ops/shape.hpp"

namespace terra::op {

// attrs.ints = {dim}; same shape; bool/int -> int64, floats keep their dtype.
struct Cumsum : Stateless {
  static constexpr uint8_t saves = kSaveNone;  // vjp in ops/vjp/sort.hpp
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    wrap_dim(c.attrs.ints[0], x.dim(), "cumsum");
    DType dt = is_floating(x.dtype()) ? x.dtype() : DType::Int64;
    out.push_back(detail::meta(x.shape(), dt, x.device()));
  }
};

// attrs.ints = {dim, descending} -> (values, int64 indices) of x's shape. Stable; NaN sorts
// as the largest value (last ascending, first descending).
struct Sort : Stateless {
  static constexpr uint8_t saves = kSaveOutputs;  // vjp in ops/vjp/sort.hpp
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    wrap_dim(c.attrs.ints[0], x.dim(), "sort");
    out.push_back(detail::meta(x.shape(), x.dtype(), x.device()));
    out.push_back(detail::meta(x.shape(), DType::Int64, x.device()));
  }
};

// attrs.ints = {k, dim, largest, sorted} -> (values, int64 indices), dim resized to k.
struct Topk : Stateless {
  static constexpr uint8_t saves = kSaveOutputs;  // vjp in ops/vjp/sort.hpp
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    int64_t k = c.attrs.ints[0];
    int64_t d = wrap_dim(c.attrs.ints[1], x.dim(), "topk");
    Shape s = x.shape();
    if (x.dim() == 0) {
      TERRA_CHECK(k == 1, "topk", "k ", k, " out of range for a 0-d tensor (size 1); k must be 1");
    } else {
      TERRA_CHECK(k >= 0 && k <= s[d], "topk", "k ", k, " out of range [0, ", s[d], "] for dim ",
                  c.attrs.ints[1], " of size ", s[d], " (shape ", s, ")");
      s[d] = k;
    }
    out.push_back(detail::meta(s, x.dtype(), x.device()));
    out.push_back(detail::meta(s, DType::Int64, x.device()));
  }
};

}  // namespace terra::op

namespace terra {

/// x: any shape -> same shape: running sums along dim (bool/int -> int64).
inline Tensor cumsum(const Tensor& x, int64_t dim, Loc loc = Loc::current()) {
  return std::move(detail::ints_op(Op::Cumsum, x, {dim}, loc)[0]);
}
/// (values, int64 indices) sorted along dim; stable.
inline std::pair<Tensor, Tensor> sort(const Tensor& x, int64_t dim = -1, bool descending = false,
                                      Loc loc = Loc::current()) {
  OutList r = detail::ints_op(Op::Sort, x, {dim, descending ? 1 : 0}, loc);
  return {std::move(r[0]), std::move(r[1])};
}
/// int64 indices that sort x along dim (stable).
inline Tensor argsort(const Tensor& x, int64_t dim = -1, bool descending = false,
                      Loc loc = Loc::current()) {
  return sort(x, dim, descending, loc).second;
}
/// (values, int64 indices) of the k largest (or smallest) along dim: dim resized to k. Ties
/// keep the lower index first; sorted = false gives the k elements in index order.
inline std::pair<Tensor, Tensor> topk(const Tensor& x, int64_t k, int64_t dim = -1,
                                      bool largest = true, bool sorted = true,
                                      Loc loc = Loc::current()) {
  OutList r = detail::ints_op(Op::Topk, x, {k, dim, largest ? 1 : 0, sorted ? 1 : 0}, loc);
  return {std::move(r[0]), std::move(r[1])};
}
}  // namespace terra
