// terra/core/shape.hpp: shapes, strides, dims and broadcasting.
#pragma once

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "terra/core/error.hpp"
#include "terra/core/small_vector.hpp"

namespace terra {

using Shape = SmallVector<int64_t, 6>;    // sizes, outermost first
using Strides = SmallVector<int64_t, 6>;  // in elements, not bytes
using Dims = SmallVector<int64_t, 6>;     // dim indices; negative counts from the back

inline std::ostream& operator<<(std::ostream& os, const Shape& s) {
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  return os << ']';
}
inline std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

inline int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Row-major strides of a contiguous tensor of shape s.
inline Strides contiguous_strides(const Shape& s) {
  Strides st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i] > 1 ? s[i] : 1;
  }
  return st;
}

inline bool is_contiguous_layout(const Shape& s, const Strides& st) {
  for (int64_t d : s)
    if (d == 0) return true;  // nothing to lay out
  int64_t expect = 1;
  for (size_t i = s.size(); i-- > 0;) {
    if (s[i] == 1) continue;
    if (st[i] != expect) return false;
    expect *= s[i];
  }
  return true;
}

// Resolve a possibly negative dim against a rank; ranks 0 accept dims -1 and 0.
inline int64_t wrap_dim(int64_t dim, int64_t rank, std::string_view op) {
  int64_t r = rank > 0 ? rank : 1;
  TERRA_CHECK(dim >= -r && dim < r, op, "dim ", dim, " out of range for a tensor of rank ", rank);
  return dim < 0 ? dim + r : dim;
}

// Sorted, unique, wrapped dims; an empty list means all dims.
inline Dims wrap_dims(const Dims& dims, int64_t rank, std::string_view op) {
  Dims out;
  if (dims.empty()) {
    for (int64_t i = 0; i < rank; ++i) out.push_back(i);
    return out;
  }
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, rank, op);
    for (int64_t o : out) TERRA_CHECK(o != w, op, "dim ", d, " appears more than once");
    out.push_back(w);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// NumPy broadcasting of two shapes.
inline Shape broadcast_shapes(const Shape& a, const Shape& b, std::string_view op) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    TERRA_CHECK(da == db || da == 1 || db == 1, op, "shapes ", a, " and ", b,
                " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// Strides that read a tensor of (shape, strides) as if it had shape `to` (stride 0 on
// broadcast dims). `to` must be a broadcast of `shape`.
inline Strides broadcast_strides(const Shape& shape, const Strides& strides, const Shape& to) {
  Strides out(to.size(), 0);
  size_t off = to.size() - shape.size();
  for (size_t i = 0; i < shape.size(); ++i) out[off + i] = shape[i] == 1 ? 0 : strides[i];
  return out;
}

}  // namespace terra
