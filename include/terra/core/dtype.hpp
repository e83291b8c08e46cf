// terra/core/dtype.hpp: element types, 16-bit float storage types, and type promotion.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>

#include "terra/core/config.hpp"
#include "terra/core/error.hpp"

namespace terra {

// Ordered by promotion rank: a binary op on two dtypes of one category yields the larger.
enum class DType : uint8_t { Bool, Int32, Int64, Float16, BFloat16, Float32, Float64 };
inline constexpr int kNumDTypes = 7;

// IEEE binary16, stored as bits; arithmetic goes through float.
struct Half {
  uint16_t bits = 0;
  Half() = default;
  TERRA_HD Half(float f) : bits(from_float(f)) {}
  TERRA_HD operator float() const { return to_float(bits); }

  static TERRA_HD uint16_t from_float(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return sign | (absx > 0x7f800000u ? 0x7e00u : 0x7c00u);
    if (absx >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: overflow
    if (absx < 0x38800000u) {                          // result is subnormal or zero
      float a;
      memcpy(&a, &absx, 4);
      // 2^-24 is the smallest subnormal: round(a / 2^-24) with ties to even.
      return sign | static_cast<uint16_t>(nearbyintf(a * 16777216.0f));
    }
    uint32_t mant_odd = (absx >> 13) & 1u;
    absx += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
    return static_cast<uint16_t>(sign | (absx >> 13));
  }
  static TERRA_HD float to_float(uint16_t h) {
    uint32_t sign = (uint32_t(h) & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0x1f) {
      x = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
      float f = float(mant) * (1.0f / 16777216.0f);
      memcpy(&x, &f, 4);
      x |= sign;
    } else {
      x = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
  }
};

// bfloat16: the top half of a float32, rounded to nearest even.
struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  TERRA_HD BFloat16(float f) : bits(from_float(f)) {}
  TERRA_HD operator float() const {
    uint32_t x = uint32_t(bits) << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
  }
  static TERRA_HD uint16_t from_float(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
    x += 0x7fffu + ((x >> 16) & 1u);
    return static_cast<uint16_t>(x >> 16);
  }
};

inline constexpr const char* dtype_name(DType t) {
  constexpr const char* names[] = {"bool",     "int32",   "int64",  "float16",
                                   "bfloat16", "float32", "float64"};
  int i = static_cast<int>(t);
  return i >= 0 && i < kNumDTypes ? names[i] : "invalid";
}
inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

inline constexpr size_t itemsize(DType t) {
  constexpr size_t sizes[] = {1, 4, 8, 2, 2, 4, 8};
  int i = static_cast<int>(t);
  return i >= 0 && i < kNumDTypes ? sizes[i] : 0;
}
inline constexpr bool is_floating(DType t) { return t >= DType::Float16; }
inline constexpr bool is_integral(DType t) { return t == DType::Int32 || t == DType::Int64; }
// float16/bfloat16 are storage types on the CPU: kernels compute in float32.
inline constexpr bool is_reduced_float(DType t) {
  return t == DType::Float16 || t == DType::BFloat16;
}

// C++ type <-> DType.
template <class T> struct dtype_of;
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::Int32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct dtype_of<Half> { static constexpr DType value = DType::Float16; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::BFloat16; };
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };
template <class T> inline constexpr DType dtype_v = dtype_of<T>::value;

// The result type of a binary op on two tensors (PyTorch's rules for tensor-tensor ops):
// bool < integers < floats; within a category the wider type wins; float16 with bfloat16
// gives float32.
inline DType promote_types(DType a, DType b) {
  if (a == b) return a;
  if ((a == DType::Float16 && b == DType::BFloat16) || (a == DType::BFloat16 && b == DType::Float16))
    return DType::Float32;
  return a > b ? a : b;
}

// The result of a tensor-scalar op: a scalar never widens the tensor within its category;
// a floating scalar lifts an integer/bool tensor to float32, an integral one lifts bool to int64.
inline DType promote_with_scalar(DType t, bool scalar_is_integral) {
  if (!scalar_is_integral && !is_floating(t)) return DType::Float32;
  if (scalar_is_integral && t == DType::Bool) return DType::Int64;
  return t;
}

}  // namespace terra

// TERRA_DISPATCH_DTYPE(dt, T, body): run `body` with `T` bound to the C++ type of dt.
#define TERRA_DTYPE_CASE(enumv, ctype, ...) \
  case ::terra::DType::enumv: {             \
    using T = ctype;                        \
    __VA_ARGS__;                            \
    break;                                  \
  }
#define TERRA_DISPATCH_ALL(dt, op, ...)                                              \
  switch (dt) {                                                                      \
    TERRA_DTYPE_CASE(Bool, bool, __VA_ARGS__)                                        \
    TERRA_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)                                    \
    TERRA_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)                                    \
    TERRA_DTYPE_CASE(Float16, ::terra::Half, __VA_ARGS__)                            \
    TERRA_DTYPE_CASE(BFloat16, ::terra::BFloat16, __VA_ARGS__)                       \
    TERRA_DTYPE_CASE(Float32, float, __VA_ARGS__)                                    \
    TERRA_DTYPE_CASE(Float64, double, __VA_ARGS__)                                   \
    default: ::terra::detail::fail(op, "unsupported dtype ", ::terra::dtype_name(dt)); \
  }
// Compute types: float16/bfloat16 are excluded (callers compute those in float32).
#define TERRA_DISPATCH_COMPUTE(dt, op, ...)                                          \
  switch (dt) {                                                                      \
    TERRA_DTYPE_CASE(Bool, bool, __VA_ARGS__)                                        \
    TERRA_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)                                    \
    TERRA_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)                                    \
    TERRA_DTYPE_CASE(Float32, float, __VA_ARGS__)                                    \
    TERRA_DTYPE_CASE(Float64, double, __VA_ARGS__)                                   \
    default: ::terra::detail::fail(op, "unsupported dtype ", ::terra::dtype_name(dt)); \
  }
#define TERRA_DISPATCH_FLOAT(dt, op, ...)                                             \
  switch (dt) {                                                                       \
    TERRA_DTYPE_CASE(Float32, float, __VA_ARGS__)                                     \
    TERRA_DTYPE_CASE(Float64, double, __VA_ARGS__)                                    \
    default: ::terra::detail::fail(op, "expected a floating dtype, got ", ::terra::dtype_name(dt)); \
  }
