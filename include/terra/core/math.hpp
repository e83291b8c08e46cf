// terra/core/math.hpp: scalar math usable from host and device code, for float and double.
// Kernels call these instead of std:: functions, which device code cannot use.
#pragma once

#include <cmath>

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
TERRA_MATH_1(tanh, tanhf, tanh)
TERRA_MATH_1(erf, erff, erf)
TERRA_MATH_1(fabs, fabsf, fabs)
#undef TERRA_MATH_1
TERRA_HD float pow(float a, float b) { return ::powf(a, b); }
TERRA_HD double pow(double a, double b) { return ::pow(a, b); }
template <class T> TERRA_HD bool isnan(T x) { return x != x; }

}  // namespace terra::math
