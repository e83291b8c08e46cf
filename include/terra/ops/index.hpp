// terra/ops/index.hpp: index_select, gather, scatter_add, masked_select, one_hot, embedding.
// Index tensors are int64 or int32. Their values are checked by the kernels before any
// element is read or written (an infer rule sees shapes, not values): a negative or too large
// index is a terra::Error naming the value and the valid range, never an out-of-bounds access.
#pragma once

#include "terra/ops/shape.hpp"

namespace terra::op {

inline void check_index_dtype(const Tensor& index, const char* name) {
  TERRA_CHECK(is_integral(index.dtype()), name, "index must be int64 or int32, got ",
              index.dtype());
}

// The message of an index outside [0, size) along dim, shared by the kernels of every backend.
inline std::string index_range_msg(int64_t value, int64_t dim, int64_t size) {
  return detail::cat_str("index ", value, " is out of range for dim ", dim, " of size ", size,
                         " (valid range [0, ", size, "))");
}

// The size of dim d of x, treating a 0-d tensor as one element long.
inline int64_t size_or_one(const Tensor& x, int64_t d) { return x.dim() == 0 ? 1 : x.shape()[d]; }

// attrs.ints = {dim}. x: any shape, index: [k] or 0-d -> x's shape with size k at dim.
struct IndexSelect : Stateless {
  static constexpr uint8_t saves = kSaveInputs;  // vjp in ops/vjp/index.hpp
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor &x = c.inputs[0], &index = c.inputs[1];
    check_index_dtype(index, "index_select");
    TERRA_CHECK(index.dim() <= 1, "index_select", "index must be 1-D or 0-d, got shape ",
                index.shape());
    int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "index_select");
    Shape s = x.shape();
    if (x.dim() == 0) {
      TERRA_CHECK(index.numel() == 1, "index_select", "indexing a 0-d tensor takes one index, got ",
                  index.numel());
    } else {
      s[d] = index.numel();
    }
    out.push_back(detail::meta(std::move(s), x.dtype(), x.device()));
  }
};

// A shape with at least one dim: 0-d tensors index like [1].
inline Shape shape_1d(const Tensor& t) { return t.dim() == 0 ? Shape{1} : t.shape(); }

// Shape rule of gather and scatter_add: index has the rank of `other`, and is no larger than
// it at every dim (but dim `d` when d >= 0). 0-d tensors count as [1].
inline void check_index_fits(const Tensor& index, const Tensor& other, int64_t d, const char* what,
                             const char* name) {
  Shape is = shape_1d(index), os = shape_1d(other);
  TERRA_CHECK(is.size() == os.size(), name, "index of shape ", index.shape(),
              " must have the rank of the ", what, " of shape ", other.shape());
  for (size_t k = 0; k < is.size(); ++k)
    TERRA_CHECK(int64_t(k) == d || is[k] <= os[k], name, "index of shape ", index.shape(),
                " is larger than the ", what, " of shape ", other.shape(), " at dim ", k);
}

// attrs.ints = {dim}. out[..i_d..] = x[..index[..i_d..]..] -> index's shape.
struct Gather : Stateless {
  static constexpr uint8_t saves = kSaveInputs;  // vjp in ops/vjp/index.hpp
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor &x = c.inputs[0], &index = c.inputs[1];
    check_index_dtype(index, "gather");
    int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "gather");
    check_index_fits(index, x, d, "input", "gather");
    out.push_back(detail::meta(index.shape(), x.dtype(), x.device()));
  }
};

// attrs.ints = {dim}. out = x, then out[..index[..i_d..]..] += src[..i_d..] -> x's shape.
struct ScatterAdd : Stateless {
  static constexpr uint8_t saves = kSaveInputs;  // vjp in ops/vjp/index.hpp
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor &x = c.inputs[0], &index = c.inputs[1], &src = c.inputs[2];
    check_index_dtype(index, "scatter_add");
    TERRA_CHECK(src.dtype() == x.dtype(), "scatter_add", "src of dtype ", src.dtype(),
                " must match the input's dtype ", x.dtype());
    int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "scatter_add");
    check_index_fits(index, x, d, "input", "scatter_add");
    check_index_fits(index, src, -1, "src", "scatter_add");
    out.push_back(detail::meta(x.shape(), x.dtype(), x.device()));
  }
};

// attrs.ints = {count}: the number of true elements of the mask broadcast to the common
// shape. The result's size depends on the mask's values, so the public function reads them
// and records the count as an attribute (a replay with another count is another call).
// x, mask (bool): broadcast together -> [count].
struct MaskedSelect : Stateless {
  static constexpr uint8_t saves = kSaveInputs;  // vjp in ops/vjp/index.hpp
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor &x = c.inputs[0], &mask = c.inputs[1];
    TERRA_CHECK(mask.dtype() == DType::Bool, "masked_select", "mask must be bool, got ",
                mask.dtype());
    Shape s = broadcast_shapes(x.shape(), mask.shape(), "masked_select");
    int64_t count = c.attrs.ints[0];
    TERRA_CHECK(count >= 0 && count <= numel_of(s), "masked_select", "count ", count,
                " out of range for ", numel_of(s), " elements");
    out.push_back(detail::meta({count}, x.dtype(), x.device()));
  }
};

// attrs.ints = {num_classes} (resolved: never -1 here). index: any shape -> [*, num_classes]
// int64.
struct OneHot : Stateless {
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& index = c.inputs[0];
    check_index_dtype(index, "one_hot");
    int64_t n = c.attrs.ints[0];
    TERRA_CHECK(n >= 0, "one_hot", "num_classes must be non-negative, got ", n);
    Shape s = index.shape();
    s.push_back(n);
    out.push_back(detail::meta(std::move(s), DType::Int64, index.device()));
  }
};

}  // namespace terra::op

namespace terra {

namespace detail {
inline Tensor index_op(Op op, std::initializer_list<Tensor> ins, int64_t i, Loc loc) {
  std::span<const Tensor> in(ins.begin(), ins.size());
  Attrs a;
  a.ints = {i};
  return dispatch1({.op = op, .inputs = in, .attrs = std::move(a), .loc = loc});
}
}  // namespace detail

/// x: [.., n, ..] (n at dim), index: [k] -> [.., k, ..]
inline Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index,
                           Loc loc = Loc::current()) {
  return detail::index_op(Op::IndexSelect, {x, index}, dim, loc);
}
/// x: [.., n, ..], index: same rank, sizes <= x's outside dim -> index's shape
inline Tensor gather(const Tensor& x, int64_t dim, const Tensor& index, Loc loc = Loc::current()) {
  return detail::index_op(Op::Gather, {x, index}, dim, loc);
}
/// x: any, index and src: as gather's index -> x's shape (x + src summed at the indices)
inline Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src,
                          Loc loc = Loc::current()) {
  return detail::index_op(Op::ScatterAdd, {x, index, src}, dim, loc);
}
/// x, mask (bool): broadcast together -> 1-D, the elements where mask is true (row-major).
/// Reads the mask's values on the host to size the result.
inline Tensor masked_select(const Tensor& x, const Tensor& mask, Loc loc = Loc::current()) {
  TERRA_CHECK(x.defined() && mask.defined(), "masked_select", "undefined input tensor");
  TERRA_CHECK(mask.dtype() == DType::Bool, "masked_select", "mask must be bool, got ",
              mask.dtype());
  Shape s = broadcast_shapes(x.shape(), mask.shape(), "masked_select");
  int64_t count = 0;
  for (bool b : mask.to_vector<bool>()) count += b;
  // Broadcasting repeats every mask element numel(s) / numel(mask) times.
  if (mask.numel() > 0) count *= numel_of(s) / mask.numel();
  return detail::index_op(Op::MaskedSelect, {x, mask}, count, loc);
}
/// index: any shape, int -> [*index.shape, num_classes] int64; num_classes = -1 reads the
/// index's values on the host and uses max + 1.
inline Tensor one_hot(const Tensor& index, int64_t num_classes = -1, Loc loc = Loc::current()) {
  TERRA_CHECK(index.defined(), "one_hot", "undefined input tensor");
  op::check_index_dtype(index, "one_hot");
  TERRA_CHECK(num_classes >= -1, "one_hot", "num_classes must be -1 or non-negative, got ",
              num_classes);
  if (num_classes == -1) {
    TERRA_CHECK(index.numel() > 0, "one_hot",
                "cannot infer num_classes from an empty index; pass it explicitly");
    int64_t mx = 0;
    for (int64_t v : index.to_vector<int64_t>()) {
      TERRA_CHECK(v >= 0, "one_hot", "class values must be non-negative, got ", v);
      mx = std::max(mx, v);
    }
    num_classes = mx + 1;
  }
  return detail::index_op(Op::OneHot, {index}, num_classes, loc);
}
/// weight: [V, D], indices: any shape, int -> [*indices.shape, D]
inline Tensor embedding(const Tensor& weight, const Tensor& indices, Loc loc = Loc::current()) {
  TERRA_CHECK(weight.defined() && indices.defined(), "embedding", "undefined input tensor");
  TERRA_CHECK(weight.dim() == 2, "embedding", "weight must be 2-D [num_embeddings, dim], got ",
              weight.shape());
  op::check_index_dtype(indices, "embedding");
  Shape s = indices.shape();
  s.push_back(weight.shape()[1]);
  Tensor flat = indices.dim() == 1 ? indices : reshape(indices, {-1}, loc);
  return view(index_select(weight, 0, flat, loc), s, loc);
}

}  // namespace terra
