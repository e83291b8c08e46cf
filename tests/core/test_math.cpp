// The float math of core/math.hpp that CPU loops vectorize (vexp, verf, vtanh) against the C
// library's double functions rounded to float: the worst error in ulp over every 251st float
// of each range, both signs, and the special values. The whole ranges were checked once
// (every float): vexp and vtanh within 1 ulp, verf within 3.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "terra/core/math.hpp"

namespace math = terra::math;

namespace {

// Distance in representable floats (ordered so that -0 and +0 are neighbours of each other).
int64_t ulp_distance(float a, float b) {
  auto ordered = [](float v) {
    int64_t i = std::bit_cast<int32_t>(v);
    return i < 0 ? int64_t(INT32_MIN) - i : i;
  };
  return std::abs(ordered(a) - ordered(b));
}

// The worst distance of f(x) from ref(x) rounded to float, for x = +-(floats in [0, hi]).
template <class F, class R>
int64_t worst_ulps(F f, R ref, float hi, float* where) {
  int64_t worst = 0;
  for (uint32_t b = 0; b <= std::bit_cast<uint32_t>(hi); b += 251)
    for (float x : {std::bit_cast<float>(b), -std::bit_cast<float>(b)}) {
      int64_t d = ulp_distance(f(x), float(ref(double(x))));
      if (d > worst) worst = d, *where = x;
    }
  return worst;
}

}  // namespace

TEST(VecMath, ExpWithinOneUlp) {
  float at = 0;
  EXPECT_LE(worst_ulps([](float x) { return math::vexp(x); }, [](double x) { return std::exp(x); },
                       87.0f, &at),
            1)
      << "at x = " << at;
  EXPECT_EQ(math::vexp(0.0f), 1.0f);
  EXPECT_EQ(math::vexp(-100.0f), 0.0f);
  EXPECT_EQ(math::vexp(100.0f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(math::vexp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isnan(math::vexp(NAN)));
}

TEST(VecMath, ErfWithinThreeUlps) {
  float at = 0;
  EXPECT_LE(worst_ulps([](float x) { return math::verf(x); }, [](double x) { return std::erf(x); },
                       4.5f, &at),
            3)
      << "at x = " << at;
  for (float x : {4.0f, 4.5f, 10.0f, 1e30f, std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(math::verf(x), 1.0f) << x;
    EXPECT_EQ(math::verf(-x), -1.0f) << x;
  }
  EXPECT_TRUE(std::signbit(math::verf(-0.0f)));
  EXPECT_EQ(math::verf(1e-30f), float(std::erf(1e-30)));
  EXPECT_TRUE(std::isnan(math::verf(NAN)));
}

TEST(VecMath, TanhWithinOneUlp) {
  float at = 0;
  EXPECT_LE(worst_ulps([](float x) { return math::vtanh(x); }, [](double x) { return std::tanh(x); },
                       10.0f, &at),
            1)
      << "at x = " << at;
  for (float x : {10.0f, 50.0f, 1e30f, std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(math::vtanh(x), 1.0f) << x;
    EXPECT_EQ(math::vtanh(-x), -1.0f) << x;
  }
  EXPECT_TRUE(std::signbit(math::vtanh(-0.0f)));
  EXPECT_TRUE(std::isnan(math::vtanh(NAN)));
}

TEST(VecMath, DoubleIsTheCLibrary) {
  for (double x : {-3.5, -0.3, 0.0, 0.7, 2.25, 30.0}) {
    EXPECT_EQ(math::vexp(x), std::exp(x));
    EXPECT_EQ(math::verf(x), std::erf(x));
    EXPECT_EQ(math::vtanh(x), std::tanh(x));
  }
}
