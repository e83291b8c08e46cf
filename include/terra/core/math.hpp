// terra/core/math.hpp: scalar math usable from host and device code, for float and double.
// Kernels call these instead of std:: functions, which device code cannot use.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "terra/core/config.hpp"

namespace terra::math {

#define TERRA_MATH_1(name, ffn, dfn)                     \
  TERRA_HD float name(float x) { return ::ffn(x); }      \
  TERRA_HD double name(double x) { return ::dfn(x); }
TERRA_MATH_1(exp, expf, exp)
TERRA_MATH_1(log, logf, log)
TERRA_MATH_1(log1p, log1pf, log1p)
TERRA_MATH_1(expm1, expm1f, expm1)
TERRA_MATH_1(sqrt, sqrtf, sqrt)
TERRA_MATH_1(sin, sinf, sin)
TERRA_MATH_1(cos, cosf, cos)
TERRA_MATH_1(fabs, fabsf, fabs)
#undef TERRA_MATH_1
TERRA_HD float pow(float a, float b) { return ::powf(a, b); }
TERRA_HD double pow(double a, double b) { return ::pow(a, b); }
template <class T> TERRA_HD bool isnan(T x) { return x != x; }

// ---- exp and erf for float in forms a compiler vectorizes ----
// exp(float) and erf(float) above are one library call per element, which keeps a CPU loop
// scalar. vexp and verf are branch-free polynomials on the host (same results on every
// thread and in every build of one binary); device code calls the CUDA library, and double
// the C library. Always inlined on the host: a caller compiled for AVX2 would otherwise call
// an SSE2 copy out of line and lose its vectorized loop.
#if defined(__CUDACC__)
#define TERRA_MATH_VEC TERRA_HD
#elif defined(__GNUC__) || defined(__clang__)
#define TERRA_MATH_VEC __attribute__((always_inline)) inline
#else
#define TERRA_MATH_VEC inline
#endif

/// k ? x : y for float or double as bit operations (GCC keeps `?:` on floats as a branch,
/// which does not vectorize and mispredicts on random data).
template <class T>
TERRA_MATH_VEC T select_bits(bool k, T x, T y) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const U m = U(0) - U(k);
  return std::bit_cast<T>((std::bit_cast<U>(x) & m) | (std::bit_cast<U>(y) & ~m));
}

/// e^x: 2^n * p(r) with n = round(x / ln 2), r = x - n ln 2 in two parts, p of degree 6;
/// within 2 ulp of expf. Below -87.3 the result is 0 (no subnormals), above 88.7 it is inf,
/// NaN stays NaN.
TERRA_MATH_VEC float vexp(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  float xc = select_bits(x < -87.33654f, -87.33654f, x);
  xc = select_bits(xc > 88.72283f, 88.72283f, xc);
  const float t = xc * 1.44269504f + 12582912.0f;  // adding 1.5 * 2^23 rounds to an integer
  const float n = t - 12582912.0f;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n as two factors 2^(n/2): each stays a normal float over the whole clamped range.
  const int32_t ni = int32_t(n), n1 = ni >> 1;
  const int32_t b1 = (n1 + 127) << 23, b2 = (ni - n1 + 127) << 23;
  float y = p * std::bit_cast<float>(b1) * std::bit_cast<float>(b2);
  y = select_bits(x < -87.33654f, 0.0f, y);
  y = select_bits(x > 88.72283f, std::numeric_limits<float>::infinity(), y);
  return select_bits(x != x, x, y);
#endif
}
TERRA_MATH_VEC double vexp(double x) { return ::exp(x); }

#if !defined(__CUDA_ARCH__)  // host helpers of verf and vtanh (device code calls CUDA's)
/// |x| by clearing the sign bit (vectorizes; no branch).
TERRA_MATH_VEC float abs_bits(float x) {
  return std::bit_cast<float>(std::bit_cast<uint32_t>(x) & 0x7FFFFFFFu);
}
/// An odd function's value from its value r at |x|: r with x's sign; NaN stays NaN.
TERRA_MATH_VEC float odd_from_abs(float x, float r) {
  const uint32_t sign = std::bit_cast<uint32_t>(x) & 0x80000000u;
  return select_bits(x != x, x, std::bit_cast<float>(std::bit_cast<uint32_t>(r) | sign));
}
#endif

/// erf(x), within 3 ulp of the correctly rounded value (checked for every float in
/// [0, 4.5]; 99.5% within 1 ulp). |x| < 1: x * P(x^2), P of degree 6; 1 <= |x| < 4:
/// 1 - e^(-x^2) * Q(1 / |x|), Q of degree 9 approximating erfcx; beyond, +-1. Both
/// polynomials are weighted least-squares fits of this project to the relative error.
TERRA_MATH_VEC float verf(float x) {
#if defined(__CUDA_ARCH__)
  return ::erff(x);
#else
  const float a = abs_bits(x), t = a * a;
  float p = 7.853857824e-05f;
  p = p * t - 8.010192541e-04f;
  p = p * t + 5.188327748e-03f;
  p = p * t - 2.685381100e-02f;
  p = p * t + 1.128358543e-01f;
  p = p * t - 3.761262596e-01f;
  p = p * t + 1.128379107e+00f;
  const float small = a * p;
  float ac = select_bits(a < 1.0f, 1.0f, a);
  ac = select_bits(ac > 4.0f, 4.0f, ac);  // erf(4) rounds to 1
  const float u = 1.0f / ac;
  float q = 3.071407042e-02f;
  q = q * u - 1.797132343e-01f;
  q = q * u + 4.382409751e-01f;
  q = q * u - 5.369493365e-01f;
  q = q * u + 2.383342087e-01f;
  q = q * u + 2.303950936e-01f;
  q = q * u - 3.758631051e-01f;
  q = q * u + 2.053584717e-02f;
  q = q * u + 5.617679358e-01f;
  q = q * u + 1.210782648e-04f;
  const float large = 1.0f - vexp(-(ac * ac)) * q;
  const float r = select_bits(a < 1.0f, small, large);
  return odd_from_abs(x, r);
#endif
}
TERRA_MATH_VEC double verf(double x) { return ::erf(x); }

/// tanh(x). |x| < 0.55: x + x^3 * P(x^2), P of degree 4 (a fit of this project); beyond:
/// 1 - 2 / (e^(2|x|) + 1) with vexp. Checked against the correctly rounded value for every
/// float in [0, 10] (tests/core/test_math.cpp keeps checking a sample).
TERRA_MATH_VEC float vtanh(float x) {
#if defined(__CUDA_ARCH__)
  return ::tanhf(x);
#else
  const float a = abs_bits(x), t = a * a;
  float p = -6.610375829e-03f;
  p = p * t + 2.130947821e-02f;
  p = p * t - 5.390944704e-02f;
  p = p * t + 1.333311349e-01f;
  p = p * t - 3.333333135e-01f;
  const float small = a + a * t * p;
  const float large = 1.0f - 2.0f / (vexp(a + a) + 1.0f);
  const float r = select_bits(a < 0.55f, small, large);
  return odd_from_abs(x, r);
#endif
}
TERRA_MATH_VEC double vtanh(double x) { return ::tanh(x); }

}  // namespace terra::math
