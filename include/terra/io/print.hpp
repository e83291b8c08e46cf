// terra/io/print.hpp: operator<< and Tensor::to_string(), in PyTorch's layout.
//
//   tensor([[ 0.0000,  1.5000, -2.0000],
//           [ 3.0000,  4.0000,  5.0000]], shape=[2, 3], dtype=float32)
//
// - Nested brackets, one row of the last dim per line, a blank line between 2-D blocks.
// - All elements right-aligned to one width. Floats: fixed with 4 decimals, or scientific
//   (1.0000e+08) when the non-zero finite magnitudes span more than 1000x, exceed 1e8 or fall
//   below 1e-4; nan, inf and -inf as such. Integers as integers, bools as True/False.
// - Tensors of more than 1000 elements are summarized: every dim longer than 6 shows its
//   first 3 and last 3 entries around "...". Rows longer than 80 columns wrap.
// - The suffix always gives shape and dtype, and the device when it is not the cpu.
//   0-d: tensor(3.5000, shape=[], dtype=float32); empty: tensor([], shape=[0, 3], ...).
// Printing reads the values (a fetch); it runs no op.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

#include "terra/tensor.hpp"
#include "terra/tensor_methods.hpp"

namespace terra {

namespace detail {

struct PrintOptions {
  int64_t threshold = 1000;  // summarize tensors with more elements than this
  int64_t edgeitems = 3;     // entries kept at each end of a summarized dim
  size_t linewidth = 80;
  int precision = 4;
};

class TensorPrinter {
 public:
  explicit TensorPrinter(const Tensor& t, PrintOptions o = {}) : t_(t), o_(o) {
    summarize_ = t.numel() > o.threshold;
  }

  std::string str() {
    std::string body;
    if (t_.numel() == 0) {
      body = "[]";
    } else {
      gather(0, 0);
      format_elements();
      next_ = 0;
      body = t_.dim() == 0 ? cells_[0] : block(0, 7);
    }
    return "tensor(" + body + ", shape=" + shape_str(t_.shape()) +
           ", dtype=" + dtype_name(t_.dtype()) + ")";
  }

 private:
  static constexpr int64_t kElided = -1;

  // Indices shown along dim d; kElided marks the "..." between the two ends.
  std::vector<int64_t> shown(int64_t d) const {
    int64_t n = t_.size(d), e = o_.edgeitems;
    std::vector<int64_t> idx;
    if (summarize_ && n > 2 * e) {
      for (int64_t i = 0; i < e; ++i) idx.push_back(i);
      idx.push_back(kElided);
      for (int64_t i = n - e; i < n; ++i) idx.push_back(i);
    } else {
      for (int64_t i = 0; i < n; ++i) idx.push_back(i);
    }
    return idx;
  }

  // Element offsets of every shown element, in printing order.
  void gather(int64_t d, int64_t offset) {
    if (d == t_.dim()) {
      offsets_.push_back(offset);
      return;
    }
    for (int64_t i : shown(d))
      if (i != kElided) gather(d + 1, offset + i * t_.stride(d));
  }

  template <class V>
  std::vector<V> read() const {
    std::vector<V> out(offsets_.size());
    const void* base = t_.raw_data();
    TERRA_DISPATCH_ALL(t_.dtype(), "print", {
      const T* p = static_cast<const T*>(base);
      for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<V>(p[offsets_[i]]);
    });
    return out;
  }

  void format_elements() {
    char buf[64];
    if (t_.dtype() == DType::Bool) {
      for (int64_t v : read<int64_t>()) cells_.push_back(v ? "True" : "False");
    } else if (is_integral(t_.dtype())) {
      for (int64_t v : read<int64_t>()) cells_.push_back(std::to_string(v));
    } else {
      std::vector<double> vals = read<double>();
      const char* fmt = scientific(vals) ? "%.*e" : "%.*f";
      for (double v : vals) {
        if (std::isnan(v)) {
          cells_.push_back("nan");
        } else if (std::isinf(v)) {
          cells_.push_back(v > 0 ? "inf" : "-inf");
        } else {
          std::snprintf(buf, sizeof buf, fmt, o_.precision, v);
          cells_.push_back(buf);
        }
      }
    }
    for (const std::string& c : cells_) width_ = std::max(width_, c.size());
    for (std::string& c : cells_) c.insert(0, width_ - c.size(), ' ');
  }

  // PyTorch's rule: scientific when the non-zero finite magnitudes need it.
  static bool scientific(const std::vector<double>& vals) {
    double lo = INFINITY, hi = 0.0;
    for (double v : vals) {
      double a = std::fabs(v);
      if (a == 0.0 || !std::isfinite(a)) continue;
      lo = std::min(lo, a);
      hi = std::max(hi, a);
    }
    if (hi == 0.0) return false;
    return hi / lo > 1000.0 || hi > 1e8 || lo < 1e-4;
  }

  // The bracketed text of dim d; `indent` is the column of its '['.
  std::string block(int64_t d, size_t indent) {
    std::vector<std::string> items;
    if (d == t_.dim() - 1) {
      for (int64_t i : shown(d)) items.push_back(i == kElided ? "..." : cells_[next_++]);
      return "[" + wrap_row(items, indent) + "]";
    }
    for (int64_t i : shown(d)) items.push_back(i == kElided ? "..." : block(d + 1, indent + 1));
    std::string sep =
        "," + std::string(size_t(t_.dim() - d - 1), '\n') + std::string(indent + 1, ' ');
    return "[" + join(items, sep) + "]";
  }

  // One row of the last dim, wrapped to the line width.
  std::string wrap_row(const std::vector<std::string>& items, size_t indent) const {
    size_t room = o_.linewidth > indent ? o_.linewidth - indent : 0;
    size_t per_line = std::max<size_t>(1, room / (width_ + 2));
    std::vector<std::string> lines;
    for (size_t i = 0; i < items.size(); i += per_line) {
      size_t end = std::min(items.size(), i + per_line);
      lines.push_back(join({items.begin() + i, items.begin() + end}, ", "));
    }
    return join(lines, ",\n" + std::string(indent + 1, ' '));
  }

  static std::string join(const std::vector<std::string>& parts, const std::string& sep) {
    std::string s;
    for (size_t i = 0; i < parts.size(); ++i) s += (i ? sep : "") + parts[i];
    return s;
  }

  const Tensor& t_;
  PrintOptions o_;
  bool summarize_ = false;
  std::vector<int64_t> offsets_;
  std::vector<std::string> cells_;
  size_t width_ = 0;
  size_t next_ = 0;
};

}  // namespace detail

// "tensor([...], shape=[...], dtype=...)"; see the layout at the top of this file.
inline std::string Tensor::to_string() const {
  if (!defined()) return "tensor(undefined)";
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  std::string s = detail::TensorPrinter(host).str();
  if (!device().is_cpu()) s.insert(s.size() - 1, detail::cat_str(", device=", device()));
  return s;
}

inline std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace terra
