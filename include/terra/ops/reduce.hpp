// terra/ops/reduce.hpp: reductions over any set of dims.
// Every reduction packs attrs.ints = {dims..., keepdim}: an empty dims list means all dims.
// max/min (values + indices) take exactly one dim, argmax/argmin one dim or none (then the
// index is into the flattened tensor). var keeps its correction in attrs.scalars[0].
#pragma once

#include <utility>

#include "terra/ops/shape.hpp"

namespace terra::op {

namespace reduce {

// The dims of a reduction call (attrs.ints without the trailing keepdim).
inline Dims dims_of(const Attrs& a) { return Dims(a.ints.begin(), a.ints.end() - 1); }
inline bool keepdim_of(const Attrs& a) { return a.ints.back() != 0; }

// mask[d] is true for every dim d of x that is reduced (all of them for an empty list).
inline SmallVector<bool, 8> mask(const Tensor& x, const Dims& dims, const char* name) {
  Dims w = wrap_dims(dims, x.dim(), name);
  SmallVector<bool, 8> m(x.dim(), false);
  for (int64_t d : w)
    if (d < x.dim()) m[d] = true;  // a 0-d tensor accepts dim 0 / -1 and has nothing to mark
  return m;
}

inline Shape out_shape(const Shape& s, const SmallVector<bool, 8>& m, bool keepdim) {
  Shape out;
  for (size_t d = 0; d < s.size(); ++d) {
    if (!m[d])
      out.push_back(s[d]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

// Number of elements each output reduces.
inline int64_t extent(const Shape& s, const SmallVector<bool, 8>& m) {
  int64_t n = 1;
  for (size_t d = 0; d < s.size(); ++d)
    if (m[d]) n *= s[d];
  return n;
}

inline void check_floating(const Tensor& x, const char* name) {
  TERRA_CHECK(is_floating(x.dtype()), name, "input dtype ", x.dtype(),
              " is not supported; expected a floating point dtype (cast with .to() first)");
}

// Ops with no identity element (max, argmax, ...) cannot reduce an empty extent.
inline void check_nonempty(const Tensor& x, const Dims& dims, const SmallVector<bool, 8>& m,
                           const char* name) {
  TERRA_CHECK(extent(x.shape(), m) != 0, name, "cannot reduce over an empty extent: dims ",
              Shape(dims.begin(), dims.end()), " of a tensor of shape ", x.shape(),
              " (the op has no identity; an empty list means all dims)");
}

enum class Rule : uint8_t { SumLike, FloatOnly, Same, Index, ValueIndex };

// Shape and dtype rule shared by every reduction.
template <Rule R>
void infer(const OpCall& c, MetaList& out) {
  const Tensor& x = c.inputs[0];
  const char* name = op_name(c.op);
  TERRA_CHECK(!c.attrs.ints.empty(), name, "attrs.ints must end with keepdim");
  Dims dims = dims_of(c.attrs);
  if constexpr (R == Rule::Index || R == Rule::ValueIndex) {
    size_t least = R == Rule::Index ? 0 : 1;
    TERRA_CHECK(dims.size() >= least && dims.size() <= 1, name, "takes ",
                R == Rule::Index ? "at most one dim" : "exactly one dim", ", got ",
                Shape(dims.begin(), dims.end()));
  }
  auto m = mask(x, dims, name);
  Shape s = out_shape(x.shape(), m, keepdim_of(c.attrs));
  if constexpr (R == Rule::FloatOnly) check_floating(x, name);
  if constexpr (R == Rule::Same || R == Rule::Index || R == Rule::ValueIndex)
    check_nonempty(x, dims, m, name);
  DType dt = x.dtype();
  if (R == Rule::SumLike && !is_floating(dt)) dt = DType::Int64;
  if (R == Rule::Index) dt = DType::Int64;
  out.push_back(detail::meta(s, dt, x.device()));
  if (R == Rule::ValueIndex) out.push_back(detail::meta(s, DType::Int64, x.device()));
}

}  // namespace reduce

#define TERRA_REDUCE_OP(Type, R)                                                              \
  struct Type : Stateless {                                                                   \
    static void infer(const OpCall& c, MetaList& o) { reduce::infer<reduce::Rule::R>(c, o); } \
  };
// A differentiable reduction: its vjp is in ops/vjp/reduce.hpp; `save` is its SavePolicy.
#define TERRA_REDUCE_OP_VJP(Type, R, save)                                                    \
  struct Type : Stateless {                                                                   \
    static constexpr uint8_t saves = save;                                                    \
    static void infer(const OpCall& c, MetaList& o) { reduce::infer<reduce::Rule::R>(c, o); } \
    TERRA_VJP;                                                                                \
  };
// attrs.ints = {dims..., keepdim}; bool/int -> int64, floats keep their dtype.
TERRA_REDUCE_OP_VJP(Sum, SumLike, kSaveNone)
TERRA_REDUCE_OP_VJP(Prod, SumLike, kSaveInputs)
// attrs.ints = {dims..., keepdim}; floating inputs only. Var: attrs.scalars = {correction}.
TERRA_REDUCE_OP_VJP(Mean, FloatOnly, kSaveNone)
TERRA_REDUCE_OP_VJP(Logsumexp, FloatOnly, kSaveAll)
TERRA_REDUCE_OP_VJP(Var, FloatOnly, kSaveInputs)
// attrs.ints = {dims..., keepdim}; same dtype; the reduced extent must not be empty.
TERRA_REDUCE_OP_VJP(Amax, Same, kSaveAll)
TERRA_REDUCE_OP_VJP(Amin, Same, kSaveAll)
// attrs.ints = {dim, keepdim} -> (values, int64 indices).
TERRA_REDUCE_OP_VJP(MaxDim, ValueIndex, kSaveOutputs)
TERRA_REDUCE_OP_VJP(MinDim, ValueIndex, kSaveOutputs)
// attrs.ints = {dim, keepdim}, or {keepdim} for an index into the flattened x -> int64.
TERRA_REDUCE_OP(Argmax, Index)
TERRA_REDUCE_OP(Argmin, Index)
#undef TERRA_REDUCE_OP
#undef TERRA_REDUCE_OP_VJP

}  // namespace terra::op

namespace terra {

namespace detail {
inline OutList reduce_op(Op op, const Tensor& x, const Dims& dims, bool keepdim, Loc loc,
                         SmallVector<double, 2> scalars = {}) {
  const Tensor in[] = {x};
  Attrs a;
  a.ints = SmallVector<int64_t, 8>(dims.begin(), dims.end());
  a.ints.push_back(keepdim ? 1 : 0);
  a.scalars = std::move(scalars);
  return dispatch({.op = op, .inputs = in, .attrs = std::move(a), .loc = loc});
}
inline Tensor reduce1(Op op, const Tensor& x, const Dims& dims, bool keepdim, Loc loc) {
  return std::move(reduce_op(op, x, dims, keepdim, loc)[0]);
}
inline std::pair<Tensor, Tensor> reduce2(Op op, const Tensor& x, int64_t dim, bool keepdim,
                                         Loc loc) {
  OutList r = reduce_op(op, x, {dim}, keepdim, loc);
  return {std::move(r[0]), std::move(r[1])};
}
}  // namespace detail

/// x: any shape; dims: empty = all dims -> reduced shape (dims kept as size 1 if keepdim).
/// sum/prod of bool and integers give int64.
inline Tensor sum(const Tensor& x, const Dims& dims = {}, bool keepdim = false,
                  Loc loc = Loc::current()) {
  return detail::reduce1(Op::Sum, x, dims, keepdim, loc);
}
/// Arithmetic mean over dims (empty = all) -> reduced shape; floating inputs only (throws
/// for int/bool: cast with .to(kFloat32) first, as torch::mean requires too).
inline Tensor mean(const Tensor& x, const Dims& dims = {}, bool keepdim = false,
                   Loc loc = Loc::current()) {
  return detail::reduce1(Op::Mean, x, dims, keepdim, loc);
}
/// Product over dims (empty = all) -> reduced shape; bool and integers give int64, floats
/// keep their dtype; an empty extent gives 1.
inline Tensor prod(const Tensor& x, const Dims& dims = {}, bool keepdim = false,
                   Loc loc = Loc::current()) {
  return detail::reduce1(Op::Prod, x, dims, keepdim, loc);
}
/// Variance with Bessel's correction `correction` (1 = unbiased, 0 = population).
inline Tensor var(const Tensor& x, const Dims& dims = {}, int64_t correction = 1,
                  bool keepdim = false, Loc loc = Loc::current()) {
  return std::move(detail::reduce_op(Op::Var, x, dims, keepdim, loc, {double(correction)})[0]);
}
/// sqrt(var(x, dims, correction)).
inline Tensor std(const Tensor& x, const Dims& dims = {}, int64_t correction = 1,
                  bool keepdim = false, Loc loc = Loc::current()) {
  return sqrt(var(x, dims, correction, keepdim, loc), loc);
}
/// Largest / smallest value over dims; NaN wins.
inline Tensor amax(const Tensor& x, const Dims& dims = {}, bool keepdim = false,
                   Loc loc = Loc::current()) {
  return detail::reduce1(Op::Amax, x, dims, keepdim, loc);
}
/// Smallest value over dims (empty = all), same dtype as x; NaN wins; throws on an empty
/// extent. The gradient is shared evenly among tied minima, as torch::amin.
inline Tensor amin(const Tensor& x, const Dims& dims = {}, bool keepdim = false,
                   Loc loc = Loc::current()) {
  return detail::reduce1(Op::Amin, x, dims, keepdim, loc);
}
/// log(sum(exp(x))) over dims, computed stably (the max is subtracted first).
inline Tensor logsumexp(const Tensor& x, const Dims& dims, bool keepdim = false,
                        Loc loc = Loc::current()) {
  return detail::reduce1(Op::Logsumexp, x, dims, keepdim, loc);
}
/// (values, int64 indices) of the max/min along dim; ties give the first index, NaN wins.
inline std::pair<Tensor, Tensor> max(const Tensor& x, int64_t dim, bool keepdim = false,
                                     Loc loc = Loc::current()) {
  return detail::reduce2(Op::MaxDim, x, dim, keepdim, loc);
}
/// (values, int64 indices) of the min along dim, like torch::min(x, dim); see max().
inline std::pair<Tensor, Tensor> min(const Tensor& x, int64_t dim, bool keepdim = false,
                                     Loc loc = Loc::current()) {
  return detail::reduce2(Op::MinDim, x, dim, keepdim, loc);
}
/// int64 index of the max/min along dim.
inline Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false, Loc loc = Loc::current()) {
  return detail::reduce1(Op::Argmax, x, {dim}, keepdim, loc);
}
/// int64 index of the min along dim (first one on ties; NaN wins) -> x's shape without dim
/// (kept as size 1 if keepdim).
inline Tensor argmin(const Tensor& x, int64_t dim, bool keepdim = false, Loc loc = Loc::current()) {
  return detail::reduce1(Op::Argmin, x, {dim}, keepdim, loc);
}
/// x: any shape -> 0-d int64 index into the flattened x.
inline Tensor argmax(const Tensor& x, Loc loc = Loc::current()) {
  return detail::reduce1(Op::Argmax, x, {}, false, loc);
}
/// x: any shape -> 0-d int64 index of the min into the flattened x.
inline Tensor argmin(const Tensor& x, Loc loc = Loc::current()) {
  return detail::reduce1(Op::Argmin, x, {}, false, loc);
}
}  // namespace terra
