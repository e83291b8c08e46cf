// terra/ops/shape.hpp: views (no copies) and movement ops: view/reshape, permute/transpose,
// slice/narrow/select, expand, unsqueeze/squeeze/flatten, contiguous/clone, cat/stack,
// split/chunk.
#pragma once

#include <optional>
#include <vector>

#include "terra/ops/elementwise.hpp"

namespace terra::op {

// Strides that let a tensor of (shape, strides) be read with new_shape without a copy, or
// nothing when the memory layout does not allow it (then reshape copies).
inline std::optional<Strides> view_strides(const Shape& shape, const Strides& strides,
                                           const Shape& new_shape) {
  Strides out(new_shape.size());
  if (numel_of(shape) == 0 || shape.empty()) return contiguous_strides(new_shape);
  // Walk both shapes in groups of dims whose products match; each old group must be
  // contiguous in itself to be re-split.
  int64_t ni = int64_t(new_shape.size()) - 1;
  int64_t chunk_base = strides.back(), numel_old = 1, numel_new = 1;
  for (int64_t oi = int64_t(shape.size()) - 1; oi >= 0; --oi) {
    numel_old *= shape[oi];
    if (oi == 0 || (shape[oi - 1] != 1 && strides[oi - 1] != numel_old * chunk_base)) {
      while (ni >= 0 && (numel_new < numel_old || new_shape[ni] == 1)) {
        out[ni] = numel_new * chunk_base;
        numel_new *= new_shape[ni];
        --ni;
      }
      if (numel_new != numel_old) return std::nullopt;
      if (oi > 0) {
        chunk_base = strides[oi - 1];
        numel_old = numel_new = 1;
      }
    }
  }
  if (ni != -1) return std::nullopt;
  return out;
}

// Resolve one -1 in a requested shape against numel.
inline Shape infer_size(const Shape& req, int64_t numel, const char* name) {
  Shape s = req;
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      TERRA_CHECK(infer_at < 0, name, "only one dimension can be inferred in ", req);
      infer_at = int64_t(i);
    } else {
      TERRA_CHECK(s[i] >= 0, name, "invalid size ", s[i], " in shape ", req);
      known *= s[i];
    }
  }
  if (infer_at >= 0) {
    TERRA_CHECK(known != 0 && numel % known == 0, name, "shape ", req,
                " is invalid for input of ", numel, " elements");
    s[infer_at] = numel / known;
  }
  TERRA_CHECK(numel_of(s) == numel, name, "shape ", req, " is invalid for input of ", numel,
              " elements");
  return s;
}

// attrs.ints = requested shape (one -1 allowed).
struct View : Stateless {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    Shape s = infer_size(Shape(c.attrs.ints.begin(), c.attrs.ints.end()), x.numel(), "view");
    auto st = view_strides(x.shape(), x.strides(), s);
    TERRA_CHECK(st.has_value(), "view", "a tensor of shape ", x.shape(), " and strides ",
                x.strides(), " cannot be viewed as ", s, "; use reshape()");
    out.push_back(detail::view_meta(x, std::move(s), std::move(*st), x.storage_offset()));
  }
};

// attrs.ints = a permutation of the dims.
struct Permute : Stateless {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    int64_t r = x.dim();
    TERRA_CHECK(int64_t(c.attrs.ints.size()) == r, "permute", "got ", c.attrs.ints.size(),
                " dims for a tensor of rank ", r);
    Shape s(r);
    Strides st(r);
    SmallVector<bool, 8> seen(r, false);
    for (int64_t i = 0; i < r; ++i) {
      int64_t d = wrap_dim(c.attrs.ints[i], r, "permute");
      TERRA_CHECK(!seen[d], "permute", "dim ", c.attrs.ints[i], " repeated");
      seen[d] = true;
      s[i] = x.shape()[d];
      st[i] = x.strides()[d];
    }
    out.push_back(detail::view_meta(x, std::move(s), std::move(st), x.storage_offset()));
  }
};

// attrs.ints = {dim, start, end, step}; start/end are clamped like Python slices.
struct Slice : Stateless {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "slice");
    TERRA_CHECK(x.dim() > 0, "slice", "cannot slice a 0-d tensor");
    int64_t n = x.shape()[d], start = c.attrs.ints[1], end = c.attrs.ints[2], step = c.attrs.ints[3];
    TERRA_CHECK(step > 0, "slice", "step must be positive, got ", step);
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = std::clamp<int64_t>(start, 0, n);
    end = std::clamp<int64_t>(end, start, n);
    Shape s = x.shape();
    Strides st = x.strides();
    s[d] = (end - start + step - 1) / step;
    st[d] *= step;
    out.push_back(detail::view_meta(x, std::move(s), std::move(st),
                                    x.storage_offset() + start * x.strides()[d]));
  }
};

// attrs.ints = {dim, index}: removes dim.
struct Select : Stateless {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    TERRA_CHECK(x.dim() > 0, "select", "cannot select from a 0-d tensor");
    int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "select");
    int64_t n = x.shape()[d], i = c.attrs.ints[1];
    TERRA_CHECK(i >= -n && i < n, "select", "index ", i, " out of range for dim ", d,
                " of size ", n);
    if (i < 0) i += n;
    Shape s = x.shape();
    Strides st = x.strides();
    s.erase(s.begin() + d);
    st.erase(st.begin() + d);
    out.push_back(detail::view_meta(x, std::move(s), std::move(st),
                                    x.storage_offset() + i * x.strides()[d]));
  }
};

// attrs.ints = target shape; -1 keeps a size; new leading dims allowed.
struct Expand : Stateless {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    const auto& req = c.attrs.ints;
    int64_t r = int64_t(req.size()), xr = x.dim();
    TERRA_CHECK(r >= xr, "expand", "cannot expand a tensor of shape ", x.shape(), " to ",
                Shape(req.begin(), req.end()), " (fewer dims)");
    Shape s(r);
    Strides st(r, 0);
    for (int64_t i = 0; i < r; ++i) {
      int64_t xi = i - (r - xr);
      int64_t want = req[i];
      if (xi < 0) {
        TERRA_CHECK(want >= 0, "expand", "size -1 is not allowed for a new leading dim");
        s[i] = want;
        continue;
      }
      int64_t have = x.shape()[xi];
      if (want == -1) want = have;
      TERRA_CHECK(have == want || have == 1, "expand", "cannot expand a tensor of shape ",
                  x.shape(), " to ", Shape(req.begin(), req.end()));
      s[i] = want;
      st[i] = have == want ? x.strides()[xi] : 0;
    }
    out.push_back(detail::view_meta(x, std::move(s), std::move(st), x.storage_offset()));
  }
};

// attrs.ints = {dim} in [-(rank+1), rank].
struct Unsqueeze : Stateless {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    int64_t d = wrap_dim(c.attrs.ints[0], x.dim() + 1, "unsqueeze");
    Shape s = x.shape();
    Strides st = x.strides();
    int64_t inner = d < x.dim() ? x.strides()[d] * x.shape()[d] : 1;
    s.insert(s.begin() + d, 1);
    st.insert(st.begin() + d, inner);
    out.push_back(detail::view_meta(x, std::move(s), std::move(st), x.storage_offset()));
  }
};

// attrs.ints = dims to drop if their size is 1; empty = every size-1 dim.
struct Squeeze : Stateless {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    SmallVector<bool, 8> drop(x.dim(), false);
    if (c.attrs.ints.empty()) {
      for (int64_t i = 0; i < x.dim(); ++i) drop[i] = x.shape()[i] == 1;
    } else {
      for (int64_t d : c.attrs.ints) {
        if (x.dim() == 0) continue;
        int64_t w = wrap_dim(d, x.dim(), "squeeze");
        drop[w] = x.shape()[w] == 1;
      }
    }
    Shape s;
    Strides st;
    for (int64_t i = 0; i < x.dim(); ++i) {
      if (drop[i]) continue;
      s.push_back(x.shape()[i]);
      st.push_back(x.strides()[i]);
    }
    out.push_back(detail::view_meta(x, std::move(s), std::move(st), x.storage_offset()));
  }
};

// Concatenate along attrs.ints[0]; every other dim must match.
// The same values on attrs.device. attrs.ints = {source device type, source index,
// non_blocking}: the vjp sends the gradient back to the source device.
struct ToDevice : Stateless {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    device_backend(c.attrs.device.is_cpu() ? x.device() : c.attrs.device, "to");
    out.push_back(detail::meta(x.shape(), x.dtype(), c.attrs.device));
  }
};

struct Cat : Stateless {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    TERRA_CHECK(!c.inputs.empty(), "cat", "expects at least one tensor");
    const Tensor& a = c.inputs[0];
    TERRA_CHECK(a.dim() > 0, "cat", "zero-dimensional tensors cannot be concatenated");
    int64_t d = wrap_dim(c.attrs.ints[0], a.dim(), "cat");
    Shape s = a.shape();
    DType dt = a.dtype();
    s[d] = 0;
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      const Tensor& t = c.inputs[i];
      TERRA_CHECK(t.dim() == a.dim(), "cat", "tensor ", i, " has shape ", t.shape(),
                  ", expected rank ", a.dim(), " like ", a.shape());
      for (int64_t k = 0; k < a.dim(); ++k)
        TERRA_CHECK(k == d || t.shape()[k] == a.shape()[k], "cat", "tensor ", i, " has shape ",
                    t.shape(), ", incompatible with ", a.shape(), " outside dim ", d);
      s[d] += t.shape()[d];
      dt = promote_types(dt, t.dtype());
    }
    out.push_back(detail::meta(std::move(s), dt, a.device()));
  }
};

}  // namespace terra::op

namespace terra {

namespace detail {
// A one-input op whose attributes are only attrs.ints (views, sort, topk, ...).
inline OutList ints_op(Op op, const Tensor& x, SmallVector<int64_t, 8> ints, Loc loc) {
  const Tensor in[] = {x};
  Attrs a;
  a.ints = std::move(ints);
  return dispatch({.op = op, .inputs = in, .attrs = std::move(a), .loc = loc});
}
inline Tensor view_op(Op op, const Tensor& x, SmallVector<int64_t, 8> ints, Loc loc) {
  return std::move(ints_op(op, x, std::move(ints), loc)[0]);
}
inline SmallVector<int64_t, 8> ints_of(const Shape& s) { return {s.begin(), s.end()}; }
}  // namespace detail

/// x viewed with a new shape (one -1 allowed); errors if the layout needs a copy.
inline Tensor view(const Tensor& x, const Shape& shape, Loc loc = Loc::current()) {
  return detail::view_op(Op::View, x, detail::ints_of(shape), loc);
}
/// A view when the layout allows it, else a contiguous copy.
inline Tensor reshape(const Tensor& x, const Shape& shape, Loc loc = Loc::current()) {
  Shape s = op::infer_size(shape, x.numel(), "reshape");
  if (op::view_strides(x.shape(), x.strides(), s)) return view(x, s, loc);
  return view(copy(x, x.dtype(), loc), s, loc);
}
/// A view with dims reordered: result dim i is x's dim dims[i] (negative dims wrap), e.g.
/// [N, H, W, C] with {0, 3, 1, 2} -> [N, C, H, W]. Throws unless dims is a permutation of
/// all of x's dims. No copy: call contiguous() if a kernel needs dense memory.
inline Tensor permute(const Tensor& x, const Dims& dims, Loc loc = Loc::current()) {
  return detail::view_op(Op::Permute, x, {dims.begin(), dims.end()}, loc);
}
/// A view with dims d0 and d1 swapped (negative dims wrap); a 0-d x comes back as is.
inline Tensor transpose(const Tensor& x, int64_t d0, int64_t d1, Loc loc = Loc::current()) {
  int64_t r = x.dim();
  if (r == 0) return view(x, x.shape(), loc);
  d0 = wrap_dim(d0, r, "transpose");
  d1 = wrap_dim(d1, r, "transpose");
  Dims p;
  for (int64_t i = 0; i < r; ++i) p.push_back(i);
  std::swap(p[d0], p[d1]);
  return permute(x, p, loc);
}
/// x[..., start:end:step, ...] along dim.
inline Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1,
                    Loc loc = Loc::current()) {
  return detail::view_op(Op::Slice, x, {dim, start, end, step}, loc);
}
/// A view of `length` entries of dim from `start` (negative start counts from the end):
/// slice(x, dim, start, start + length). Unlike slice, throws when the range leaves the dim.
inline Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length,
                     Loc loc = Loc::current()) {
  TERRA_CHECK(x.dim() > 0, "narrow", "cannot narrow a 0-d tensor");
  int64_t n = x.size(dim);
  if (start < 0) start += n;
  TERRA_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow", "start ", start,
              " + length ", length, " exceeds dim ", dim, " of size ", n);
  return slice(x, dim, start, start + length, 1, loc);
}
/// A view of entry `index` of dim, with dim removed: [a, b, c] select(1, i) -> [a, c]
/// (x[:, i] in Python). Negative index counts from the end; throws when out of range.
inline Tensor select(const Tensor& x, int64_t dim, int64_t index, Loc loc = Loc::current()) {
  return detail::view_op(Op::Select, x, {dim, index}, loc);
}
/// A broadcast view of x to `shape` (stride 0 on expanded dims, no copy): size-1 dims may
/// grow, -1 keeps a size, new leading dims may be added. [3, 1] -> {2, 3, 4} gives
/// [2, 3, 4]. Do not write into the result: its elements alias.
inline Tensor expand(const Tensor& x, const Shape& shape, Loc loc = Loc::current()) {
  return detail::view_op(Op::Expand, x, detail::ints_of(shape), loc);
}
/// A view with a new size-1 dim at position dim in [-(rank + 1), rank]: [3, 4] with dim 1
/// -> [3, 1, 4].
inline Tensor unsqueeze(const Tensor& x, int64_t dim, Loc loc = Loc::current()) {
  return detail::view_op(Op::Unsqueeze, x, {dim}, loc);
}
/// A view without every size-1 dim: [1, 3, 1, 4] -> [3, 4].
inline Tensor squeeze(const Tensor& x, Loc loc = Loc::current()) {
  return detail::view_op(Op::Squeeze, x, {}, loc);
}
/// A view without dim if its size is 1; x's shape otherwise (as torch::squeeze(x, dim)).
inline Tensor squeeze(const Tensor& x, int64_t dim, Loc loc = Loc::current()) {
  return detail::view_op(Op::Squeeze, x, {dim}, loc);
}
/// Merge dims start_dim..end_dim into one.
inline Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1,
                      Loc loc = Loc::current()) {
  if (x.dim() == 0) return reshape(x, {1}, loc);
  int64_t s = wrap_dim(start_dim, x.dim(), "flatten"), e = wrap_dim(end_dim, x.dim(), "flatten");
  TERRA_CHECK(s <= e, "flatten", "start_dim ", start_dim, " comes after end_dim ", end_dim);
  Shape shape;
  for (int64_t i = 0; i < s; ++i) shape.push_back(x.shape()[i]);
  int64_t m = 1;
  for (int64_t i = s; i <= e; ++i) m *= x.shape()[i];
  shape.push_back(m);
  for (int64_t i = e + 1; i < x.dim(); ++i) shape.push_back(x.shape()[i]);
  return reshape(x, shape, loc);
}
/// x itself when already contiguous (row-major, dense), else a contiguous copy; the copy
/// is differentiable.
inline Tensor contiguous(const Tensor& x, Loc loc = Loc::current()) {
  return x.is_contiguous() ? x : copy(x, x.dtype(), loc);
}
/// A new contiguous tensor with x's values and dtype that shares nothing with x; gradients
/// flow back to x (use detach() to cut them, as in LibTorch).
inline Tensor clone(const Tensor& x, Loc loc = Loc::current()) { return copy(x, x.dtype(), loc); }

/// x's values on `device` (x itself when it is there already); gradients flow back to x's
/// device. non_blocking: a host-to-device copy may still be in flight on return (the host
/// values are staged first, so x may be changed at once); other directions complete.
inline Tensor to_device(const Tensor& x, Device device, bool non_blocking = false,
                        Loc loc = Loc::current()) {
  if (x.device() == device) return x;
  const Tensor in[] = {x};
  Attrs a;
  a.device = device;
  a.dtype = x.dtype();
  a.ints = {int64_t(x.device().type), int64_t(x.device().index), int64_t(non_blocking)};
  return dispatch1({.op = Op::ToDevice, .inputs = in, .attrs = std::move(a), .loc = loc});
}

/// Concatenate along dim (dtypes promote).
inline Tensor cat(const std::vector<Tensor>& xs, int64_t dim = 0, Loc loc = Loc::current()) {
  Attrs a;
  a.ints = {dim};
  return dispatch1({.op = Op::Cat, .inputs = xs, .attrs = std::move(a), .loc = loc});
}
/// Stack along a new dim.
inline Tensor stack(const std::vector<Tensor>& xs, int64_t dim = 0, Loc loc = Loc::current()) {
  TERRA_CHECK(!xs.empty(), "stack", "expects at least one tensor");
  for (size_t i = 1; i < xs.size(); ++i)
    TERRA_CHECK(xs[i].shape() == xs[0].shape(), "stack", "tensor ", i, " has shape ",
                xs[i].shape(), ", expected ", xs[0].shape());
  int64_t d = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> u;
  u.reserve(xs.size());
  for (const Tensor& x : xs) u.push_back(unsqueeze(x, d, loc));
  return cat(u, d, loc);
}
/// Pieces of split_size along dim (the last may be smaller).
inline std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0,
                                 Loc loc = Loc::current()) {
  TERRA_CHECK(split_size > 0, "split", "split_size must be positive, got ", split_size);
  int64_t n = x.size(dim);
  std::vector<Tensor> out;
  for (int64_t s = 0; s < n || (n == 0 && out.empty()); s += split_size)
    out.push_back(slice(x, dim, s, std::min(s + split_size, n), 1, loc));
  return out;
}
/// Pieces with the given sizes along dim; they must add up to the dim's size.
inline std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim,
                                 Loc loc = Loc::current()) {
  int64_t n = x.size(dim), s = 0;
  std::vector<Tensor> out;
  for (int64_t len : sizes) {
    TERRA_CHECK(len >= 0, "split", "negative size ", len);
    out.push_back(slice(x, dim, s, s + len, 1, loc));
    s += len;
  }
  TERRA_CHECK(s == n, "split", "sizes add up to ", s, " but dim ", dim, " has size ", n);
  return out;
}
/// `chunks` pieces of equal size (the last may be smaller) along dim.
inline std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0,
                                 Loc loc = Loc::current()) {
  TERRA_CHECK(chunks > 0, "chunk", "chunks must be positive, got ", chunks);
  int64_t n = x.size(dim);
  return split(x, std::max<int64_t>(1, (n + chunks - 1) / chunks), dim, loc);
}

}  // namespace terra
