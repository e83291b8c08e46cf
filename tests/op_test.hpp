// tests/op_test.hpp: helpers shared by the op tests: random inputs made on the host (not with
// terra's RNG), the same values in several memory layouts, float64 comparisons, and the
// registry that checks every op of the table has a test.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <terra/terra.hpp>

namespace tt {

using terra::DType;
using terra::Shape;
using terra::Tensor;

// ---- coverage: TERRA_COVERS("sum", "mean") in a test file marks those ops as tested ----
inline std::set<std::string>& covered_ops() {
  static std::set<std::string> s;
  return s;
}
struct Cover {
  Cover(std::initializer_list<const char*> names) {
    for (const char* n : names) covered_ops().insert(n);
  }
};
#define TT_CAT2(a, b) a##b
#define TT_CAT(a, b) TT_CAT2(a, b)
#define TERRA_COVERS(...) static ::tt::Cover TT_CAT(tt_cover_, __LINE__){__VA_ARGS__}

// ---- inputs ----
// Values uniform in [lo, hi) from a host generator, converted to dtype.
inline Tensor random(const Shape& shape, DType dtype = DType::Float32, uint32_t seed = 1,
                     double lo = -2.0, double hi = 2.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(size_t(terra::numel_of(shape)));
  for (double& x : v) x = u(gen);
  if (dtype == DType::Int32 || dtype == DType::Int64)
    for (double& x : v) x = std::floor(x);
  if (dtype == DType::Bool)
    for (double& x : v) x = x > (lo + hi) / 2 ? 1.0 : 0.0;
  return terra::tensor(v, shape.empty() ? Shape{} : shape).to(dtype);
}

// An integer tensor (int64 unless dt says otherwise) with the given values.
inline Tensor ints(const std::vector<int64_t>& v, const Shape& s = {-1}, DType dt = DType::Int64) {
  return terra::tensor(v, s).to(dt);
}
// Random indices in [0, n) of the given shape, from a host generator.
inline Tensor random_index(const Shape& s, int64_t n, uint32_t seed, DType dt = DType::Int64) {
  std::mt19937 g(seed);
  std::vector<int64_t> v(size_t(terra::numel_of(s)));
  for (auto& x : v) x = int64_t(g() % uint32_t(n));
  return ints(v, s, dt);
}

// The same values as x in other memory layouts: contiguous, a permuted copy viewed back,
// a strided slice of a larger tensor, and (for rank >= 1) a view through an expanded dim.
inline std::vector<Tensor> layouts(const Tensor& x) {
  std::vector<Tensor> out{x.contiguous()};
  int64_t r = x.dim();
  if (r >= 2) {  // transposed storage, read back in x's order
    Tensor t = x.transpose(0, r - 1).contiguous().transpose(0, r - 1);
    out.push_back(t);
  }
  if (r >= 1) {  // every other element of a tensor twice as long in the last dim
    Shape big = x.shape();
    big.back() *= 2;
    Tensor b = terra::zeros(big, {.dtype = x.dtype()});
    Tensor v = b.slice(r - 1, 0, big.back(), 2);
    v.copy_(x);
    out.push_back(v);
  }
  return out;
}

// ---- comparisons ----
inline std::vector<double> f64(const Tensor& x) { return x.to_vector<double>(); }

inline void expect_close(const Tensor& actual, const Shape& shape, const std::vector<double>& expect,
                         double rtol = 1e-5, double atol = 1e-6, const std::string& what = "") {
  ASSERT_EQ(actual.shape(), shape) << what;
  std::vector<double> a = f64(actual);
  ASSERT_EQ(a.size(), expect.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(expect[i])) {
      EXPECT_TRUE(std::isnan(a[i])) << what << " at " << i;
      continue;
    }
    if (std::isinf(expect[i])) {
      EXPECT_EQ(a[i], expect[i]) << what << " at " << i;
      continue;
    }
    EXPECT_NEAR(a[i], expect[i], atol + rtol * std::fabs(expect[i])) << what << " at flat index " << i;
  }
}

// Tolerances for a dtype's results against a float64 reference.
inline double rtol_of(DType t) {
  switch (t) {
    case DType::Float64: return 1e-12;
    case DType::Float32: return 1e-5;
    case DType::Float16: return 2e-3;
    case DType::BFloat16: return 1.6e-2;
    default: return 0;
  }
}

// Expect `f` to throw terra::Error whose message contains every fragment.
inline void expect_error(const std::function<void()>& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "expected terra::Error";
  } catch (const terra::Error& e) {
    std::string msg = e.what();
    for (const char* frag : fragments)
      EXPECT_NE(msg.find(frag), std::string::npos) << "message \"" << msg << "\" lacks \"" << frag << "\"";
  }
}

// ---- gradients ----
using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

// float64 values uniform in [lo, hi) (gradcheck works in float64).
inline Tensor rnd(const Shape& s, uint32_t seed, double lo = -2, double hi = 2) {
  return random(s, DType::Float64, seed, lo, hi);
}
// The analytic gradients of f at `in` match central differences (terra::autograd::gradcheck).
inline void expect_gradcheck(const GradFn& f, const std::vector<Tensor>& in, const std::string& what) {
  std::string err = terra::autograd::gradcheck(f, in);
  EXPECT_TRUE(err.empty()) << what << ": " << err;
}

}  // namespace tt
