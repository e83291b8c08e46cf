// terra/ops/factory.hpp: tensors made from nothing: full/zeros/ones, arange, linspace, eye,
// rand/randn/randint, and the *_like forms. Random ops carry the generator's (seed, offset)
// in their attributes, so a replay can be fed fresh values.
#pragma once

#include <cmath>

#include "terra/core/philox.hpp"
#include "terra/ops/shape.hpp"

namespace terra {

/// Options of a new tensor, as LibTorch's TensorOptions: terra::zeros({2, 3}, {.dtype = kInt64}).
struct TensorOptions {
  /// Element type of the new tensor; float32 unless set, also for arange (LibTorch infers
  /// int64 there).
  DType dtype = DType::Float32;
  /// Where the new tensor lives: Device::cpu(), or Device::cuda(i) in a program built with the
  /// CUDA backend (docs/cuda.md).
  Device device = Device::cpu();
};

/// LibTorch-style dtype names (torch::kFloat32 -> terra::kFloat32), for TensorOptions and
/// Tensor::to(). Booleans, 1 byte per element.
inline constexpr DType kBool = DType::Bool;
/// 32-bit signed integers (C++ int32_t).
inline constexpr DType kInt32 = DType::Int32;
/// 64-bit signed integers: the dtype of indices, labels and integer reductions.
inline constexpr DType kInt64 = DType::Int64;
/// IEEE half precision (terra::Half): a storage type, CPU kernels compute in float32.
inline constexpr DType kFloat16 = DType::Float16;
/// bfloat16 (terra::BFloat16): float32's exponent range, 8 significand bits; stored, not
/// computed in (CPU kernels compute in float32).
inline constexpr DType kBFloat16 = DType::BFloat16;
/// 32-bit float: the default dtype of factories and of nn parameters.
inline constexpr DType kFloat32 = DType::Float32;
/// 64-bit float (C++ double).
inline constexpr DType kFloat64 = DType::Float64;

}  // namespace terra

namespace terra::op {

inline void check_shape(const SmallVector<int64_t, 8>& ints, size_t from, const char* name) {
  for (size_t i = from; i < ints.size(); ++i)
    TERRA_CHECK(ints[i] >= 0, name, "negative size ", ints[i], " in shape ",
                Shape(ints.begin() + from, ints.end()));
}

// attrs: ints = shape, scalars = {value}.
struct Full : Stateless {
  // Filling a tensor in place cuts its history: no input, no gradient.
  static constexpr uint8_t saves = kSaveNone;
  static void vjp(const VjpCtx&, std::span<const Tensor>, std::span<Tensor>) {}
  static void infer(const OpCall& c, MetaList& out) {
    check_shape(c.attrs.ints, 0, "full");
    out.push_back(detail::meta(Shape(c.attrs.ints.begin(), c.attrs.ints.end()), c.attrs.dtype, c.attrs.device));
  }
};

inline int64_t arange_length(double start, double end, double step) {
  TERRA_CHECK(step != 0, "arange", "step must be non-zero");
  TERRA_CHECK(std::isfinite(start) && std::isfinite(end), "arange", "bounds must be finite, got ",
              start, " and ", end);
  TERRA_CHECK((end - start) / step >= 0, "arange", "upper bound ", end, " and lower bound ",
              start, " are inconsistent with step ", step);
  return static_cast<int64_t>(std::ceil((end - start) / step));
}

// attrs: scalars = {start, end, step}.
struct Arange : Stateless {
  static constexpr bool infer_reads_scalars = true;  // the length comes from the bounds
  static void infer(const OpCall& c, MetaList& out) {
    const auto& s = c.attrs.scalars;
    out.push_back(detail::meta({arange_length(s[0], s[1], s[2])}, c.attrs.dtype, c.attrs.device));
  }
};

// attrs: scalars = {start, end}, ints = {steps}.
struct Linspace : Stateless {
  static void infer(const OpCall& c, MetaList& out) {
    TERRA_CHECK(c.attrs.ints[0] >= 0, "linspace", "number of steps must be non-negative, got ",
                c.attrs.ints[0]);
    out.push_back(detail::meta({c.attrs.ints[0]}, c.attrs.dtype, c.attrs.device));
  }
};

// attrs: ints = {n, m}.
struct Eye : Stateless {
  static void infer(const OpCall& c, MetaList& out) {
    check_shape(c.attrs.ints, 0, "eye");
    out.push_back(detail::meta({c.attrs.ints[0], c.attrs.ints[1]}, c.attrs.dtype, c.attrs.device));
  }
};

// attrs: ints = shape; seed/offset = the generator state it draws from.
struct Rand : Stateless {
  static void infer(const OpCall& c, MetaList& out) {
    check_shape(c.attrs.ints, 0, op_name(c.op));
    TERRA_CHECK(is_floating(c.attrs.dtype), op_name(c.op), "expects a floating dtype, got ",
                c.attrs.dtype);
    out.push_back(detail::meta(Shape(c.attrs.ints.begin(), c.attrs.ints.end()), c.attrs.dtype, c.attrs.device));
  }
};
struct Randn : Rand {};

// attrs: ints = {low, high, shape...}.
struct Randint : Stateless {
  static void infer(const OpCall& c, MetaList& out) {
    const auto& i = c.attrs.ints;
    TERRA_CHECK(i[0] < i[1], "randint", "low ", i[0], " must be below high ", i[1]);
    check_shape(i, 2, "randint");
    TERRA_CHECK(c.attrs.dtype != DType::Bool, "randint", "cannot draw integers into bool");
    out.push_back(detail::meta(Shape(i.begin() + 2, i.end()), c.attrs.dtype, c.attrs.device));
  }
};

}  // namespace terra::op

namespace terra {

namespace detail {
inline Tensor factory(Op op, Attrs a, const TensorOptions& o, Loc loc) {
  a.dtype = o.dtype;
  a.device = o.device;
  return dispatch1({.op = op, .attrs = std::move(a), .loc = loc});
}
inline Attrs shape_attrs(const Shape& s) {
  Attrs a;
  a.ints.reserve(s.size());
  for (int64_t d : s) a.ints.push_back(d);
  return a;
}
inline Tensor random(Op op, Attrs a, const TensorOptions& o, Loc loc) {
  Generator& g = default_generator();
  a.seed = g.seed;
  int64_t n = 1;
  for (size_t i = op == Op::Randint ? 2 : 0; i < a.ints.size(); ++i) n *= std::max<int64_t>(a.ints[i], 0);
  a.offset = g.advance(uint64_t(n));
  return factory(op, std::move(a), o, loc);
}
}  // namespace detail

/// A tensor of `shape` filled with `value`.
inline Tensor full(const Shape& shape, double value, TensorOptions o = {}, Loc loc = Loc::current()) {
  Attrs a = detail::shape_attrs(shape);
  a.scalars = {value};
  return detail::factory(Op::Full, std::move(a), o, loc);
}
/// A tensor of `shape` filled with 0 (float32 unless o.dtype says otherwise). Throws on a
/// negative size.
inline Tensor zeros(const Shape& shape, TensorOptions o = {}, Loc loc = Loc::current()) {
  return full(shape, 0.0, o, loc);
}
/// A tensor of `shape` filled with 1 (float32 unless o.dtype says otherwise). Throws on a
/// negative size.
inline Tensor ones(const Shape& shape, TensorOptions o = {}, Loc loc = Loc::current()) {
  return full(shape, 1.0, o, loc);
}
/// Uninitialized memory (no kernel runs).
inline Tensor empty(const Shape& shape, TensorOptions o = {}) {
  return Tensor::empty(shape, o.dtype, o.device);
}
/// [start, end) in steps of `step`; ceil((end - start) / step) elements.
inline Tensor arange(double start, double end, double step = 1.0, TensorOptions o = {},
                     Loc loc = Loc::current()) {
  Attrs a;
  a.scalars = {start, end, step};
  return detail::factory(Op::Arange, std::move(a), o, loc);
}
/// [0, end) in steps of 1 -> [ceil(end)]. float32 unless o.dtype is set: write
/// arange(n, {.dtype = kInt64}) where LibTorch's torch::arange(n) would give int64.
inline Tensor arange(double end, TensorOptions o = {}, Loc loc = Loc::current()) {
  return arange(0.0, end, 1.0, o, loc);
}
/// `steps` points evenly spaced from start to end inclusive.
inline Tensor linspace(double start, double end, int64_t steps, TensorOptions o = {},
                       Loc loc = Loc::current()) {
  Attrs a;
  a.scalars = {start, end};
  a.ints = {steps};
  return detail::factory(Op::Linspace, std::move(a), o, loc);
}
/// [n, m] with ones on the diagonal (m defaults to n).
inline Tensor eye(int64_t n, int64_t m = -1, TensorOptions o = {}, Loc loc = Loc::current()) {
  Attrs a;
  a.ints = {n, m < 0 ? n : m};
  return detail::factory(Op::Eye, std::move(a), o, loc);
}
/// Uniform on [0, 1), from the calling thread's generator.
inline Tensor rand(const Shape& shape, TensorOptions o = {}, Loc loc = Loc::current()) {
  return detail::random(Op::Rand, detail::shape_attrs(shape), o, loc);
}
/// Standard normal, from the calling thread's generator.
inline Tensor randn(const Shape& shape, TensorOptions o = {}, Loc loc = Loc::current()) {
  return detail::random(Op::Randn, detail::shape_attrs(shape), o, loc);
}
/// Integers uniform on [low, high); dtype defaults to int64.
inline Tensor randint(int64_t low, int64_t high, const Shape& shape,
                      TensorOptions o = {.dtype = DType::Int64}, Loc loc = Loc::current()) {
  Attrs a;
  a.ints = {low, high};
  for (int64_t d : shape) a.ints.push_back(d);
  return detail::random(Op::Randint, std::move(a), o, loc);
}
/// Integers uniform on [0, high) -> `shape`; int64 unless o.dtype is set (not bool). As
/// torch::randint(high, shape); throws unless high > 0.
inline Tensor randint(int64_t high, const Shape& shape, TensorOptions o = {.dtype = DType::Int64},
                      Loc loc = Loc::current()) {
  return randint(0, high, shape, o, loc);
}

/// x's dtype and device as TensorOptions (torch's x.options()), to make a matching tensor.
inline TensorOptions options_of(const Tensor& x) { return {x.dtype(), x.device()}; }
/// Zeros with x's shape, dtype and device.
inline Tensor zeros_like(const Tensor& x, Loc loc = Loc::current()) { return zeros(x.shape(), options_of(x), loc); }
/// Ones with x's shape, dtype and device.
inline Tensor ones_like(const Tensor& x, Loc loc = Loc::current()) { return ones(x.shape(), options_of(x), loc); }
/// `v` (converted to x's dtype) with x's shape, dtype and device.
inline Tensor full_like(const Tensor& x, double v, Loc loc = Loc::current()) { return full(x.shape(), v, options_of(x), loc); }
/// Uninitialized memory with x's shape, dtype and device (no kernel runs, nothing recorded).
inline Tensor empty_like(const Tensor& x) { return empty(x.shape(), options_of(x)); }
/// Uniform on [0, 1) with x's shape, dtype and device; x must be floating (throws otherwise).
inline Tensor rand_like(const Tensor& x, Loc loc = Loc::current()) { return rand(x.shape(), options_of(x), loc); }
/// Standard normal with x's shape, dtype and device; x must be floating (throws otherwise).
inline Tensor randn_like(const Tensor& x, Loc loc = Loc::current()) { return randn(x.shape(), options_of(x), loc); }
/// Integers uniform on [low, high) with x's shape and in x's dtype (not bool); throws unless
/// low < high.
inline Tensor randint_like(const Tensor& x, int64_t low, int64_t high, Loc loc = Loc::current()) {
  return randint(low, high, x.shape(), options_of(x), loc);
}

// ---- tensors from host data ----
/// Copies `values` into a new CPU tensor of `shape` (default: 1-D).
template <class T>
Tensor tensor(const std::vector<T>& values, const Shape& shape = {-1}) {
  Shape s = op::infer_size(shape, int64_t(values.size()), "tensor");
  Tensor t = Tensor::empty(s, dtype_v<T>, Device::cpu());
  if constexpr (std::is_same_v<T, bool>) {  // vector<bool> has no data()
    for (size_t i = 0; i < values.size(); ++i) t.data<bool>()[i] = values[i];
  } else if (!values.empty()) {
    std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  }
  return t;
}
template <class T>
/// A CPU tensor from a braced list: tensor({1.f, 2.f, 3.f, 4.f}, {2, 2}) -> float32 [2, 2].
/// The dtype follows T: 1.0 literals give float64 and 1 gives int32 (use 1.f / int64_t{1}).
/// `shape` may hold one -1; throws if it does not match the number of values.
Tensor tensor(std::initializer_list<T> values, const Shape& shape = {-1}) {
  return tensor(std::vector<T>(values), shape);
}
/// A 0-d tensor holding one value.
template <Scalar T>
Tensor scalar_tensor(T v, TensorOptions o = {.dtype = dtype_v<T>}) {
  return full({}, double(v), o);
}
/// Copies numel(shape) elements from `data`.
template <class T>
Tensor from_blob_copy(const T* data, const Shape& shape) {
  Tensor t = Tensor::empty(shape, dtype_v<T>, Device::cpu());
  if (t.numel()) std::memcpy(t.raw_data(), data, t.nbytes());
  return t;
}
/// Wraps `data` without copying; the caller keeps it alive (or passes a deleter).
template <class T>
Tensor from_blob(T* data, const Shape& shape, std::function<void(void*)> deleter = {}) {
  auto st = Storage::wrap(data, size_t(numel_of(shape)) * sizeof(T), Device::cpu(), std::move(deleter));
  return Tensor::from_storage(std::move(st), shape, contiguous_strides(shape), 0, dtype_v<T>);
}

}  // namespace terra
