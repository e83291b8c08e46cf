// terra/backend/factory_values.hpp: the value of element i of each factory op, one functor
// per op for the CPU and the CUDA kernels alike (backend/cpu/factory.hpp, backend/cuda/factory.cuh),
// so both backends give every element the same number: the same double arithmetic, the same
// Philox counter (seed, offset + i).
#pragma once

#include <cstdint>
#include <type_traits>

#include "terra/core/config.hpp"
#include "terra/core/philox.hpp"

namespace terra::gen {

// a + b * c, the product and the sum each rounded (never fused into one fma): nvcc contracts
// a + b * c into an fma on the device, its _rn intrinsics are never contracted.
TERRA_HD double add_mul(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, __dmul_rn(b, c));
#else
  return a + b * c;
#endif
}

struct Full {
  double v;
  TERRA_HD double operator()(int64_t) const { return v; }
};
struct Arange {
  double start, step;
  TERRA_HD double operator()(int64_t i) const { return add_mul(start, double(i), step); }
};
// Symmetric from both ends, so the last point is exactly `b`.
struct Linspace {
  double a, b, step;
  int64_t n;
  TERRA_HD double operator()(int64_t i) const {
    return i < (n + 1) / 2 ? add_mul(a, step, double(i)) : add_mul(b, -step, double(n - 1 - i));
  }
};
struct Eye {
  int64_t m;
  TERRA_HD double operator()(int64_t i) const { return (i / m) == (i % m) ? 1.0 : 0.0; }
};
// R = double for float64 outputs, float otherwise (also for the 16-bit ones).
template <class R>
struct Uniform {
  uint64_t seed, off;
  TERRA_HD R operator()(int64_t i) const {
    if constexpr (std::is_same_v<R, double>) return PhiloxDraw::uniform_f64(seed, off + i);
    else return PhiloxDraw::uniform_f32(seed, off + i);
  }
};
template <class R>
struct Normal {
  uint64_t seed, off;
  TERRA_HD R operator()(int64_t i) const { return R(PhiloxDraw::normal(seed, off + i)); }
};
struct Randint {
  uint64_t seed, off, range;
  int64_t low;
  TERRA_HD int64_t operator()(int64_t i) const {
    return low + int64_t(PhiloxDraw::bits64(seed, off + i) % range);
  }
};

}  // namespace terra::gen
