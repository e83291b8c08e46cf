// Reductions against float64 references computed with plain loops.
#include <algorithm>
#include <limits>

#include "op_test.hpp"

namespace {

using terra::Dims;
using terra::DType;
using terra::Shape;
using terra::Tensor;

TERRA_COVERS("sum", "mean", "prod", "amax", "amin", "var", "logsumexp", "max", "min", "argmax",
             "argmin");

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- reference ----
std::vector<bool> ref_mask(const Shape& s, const Dims& dims) {
  int64_t r = int64_t(s.size());
  std::vector<bool> m(s.size(), dims.empty());
  for (int64_t d : dims)
    if (r > 0) m[size_t(d < 0 ? d + r : d)] = true;
  return m;
}

Shape ref_shape(const Shape& s, const Dims& dims, bool keepdim) {
  auto m = ref_mask(s, dims);
  Shape out;
  for (size_t d = 0; d < s.size(); ++d)
    if (!m[d])
      out.push_back(s[d]);
    else if (keepdim)
      out.push_back(1);
  return out;
}

// The elements each output reduces, outputs in row-major order of the kept dims and each
// group in row-major order of the reduced dims.
std::vector<std::vector<double>> groups(const Tensor& x, const Dims& dims) {
  const Shape& s = x.shape();
  auto m = ref_mask(s, dims);
  std::vector<double> v = tt::f64(x);
  int64_t outs = 1;
  for (size_t d = 0; d < s.size(); ++d)
    if (!m[d]) outs *= s[d];
  std::vector<std::vector<double>> g(static_cast<size_t>(outs));
  for (size_t flat = 0; flat < v.size(); ++flat) {
    int64_t rem = int64_t(flat), o = 0, scale = 1;
    for (size_t d = s.size(); d-- > 0;) {
      int64_t idx = rem % s[d];
      rem /= s[d];
      if (!m[d]) o += idx * scale, scale *= s[d];
    }
    g[size_t(o)].push_back(v[flat]);
  }
  return g;
}

using RefFn = std::function<double(const std::vector<double>&)>;

std::vector<double> apply(const Tensor& x, const Dims& dims, const RefFn& f) {
  std::vector<double> out;
  for (const auto& g : groups(x, dims)) out.push_back(f(g));
  return out;
}

double r_sum(const std::vector<double>& g) {
  double s = 0;
  for (double v : g) s += v;
  return s;
}
double r_prod(const std::vector<double>& g) {
  double p = 1;
  for (double v : g) p *= v;
  return p;
}
double r_mean(const std::vector<double>& g) { return r_sum(g) / double(g.size()); }
RefFn r_var(int64_t corr) {
  return [corr](const std::vector<double>& g) {
    double mu = r_mean(g), s = 0;
    for (double v : g) s += (v - mu) * (v - mu);
    return s / std::max(0.0, double(g.size()) - double(corr));
  };
}
// Index of the max (Max) or min: first occurrence, and the first NaN beats everything.
template <bool Max>
double r_arg(const std::vector<double>& g) {
  size_t best = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (std::isnan(g[i])) return double(i);
    if (Max ? g[i] > g[best] : g[i] < g[best]) best = i;
  }
  return double(best);
}
template <bool Max>
double r_ext(const std::vector<double>& g) {
  return g[size_t(r_arg<Max>(g))];
}
double r_lse(const std::vector<double>& g) {
  double m = -kInf, s = 0;
  for (double v : g) m = std::isnan(v) || v > m ? v : m;
  if (!std::isfinite(m)) return m;
  for (double v : g) s += std::exp(v - m);
  return m + std::log(s);
}

struct Case {
  Shape shape;
  Dims dims;
};
const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {{2, 3, 4}, {}},
      {{2, 3, 4}, {1}},
      {{2, 3, 4}, {0, 2}},
      {{2, 3, 4}, {-1}},
      {{2, 3, 4}, {2, 0, 1}},
      {{5, 7}, {0}},
      {{5, 7}, {1}},
      {{3, 1, 4}, {1}},
      {{2, 3, 4, 5}, {1, 3}},
      {{2, 3, 4, 5}, {0, 1}},
      {{64, 33}, {1}},
      {{33, 64}, {0}},
      {{7}, {0}},
      {{1, 9}, {0}},
      {{4, 300}, {0}},
  };
  return c;
}

void check_float_op(const char* what, DType dt, double lo, double hi,
                    const std::function<Tensor(const Tensor&, const Dims&, bool)>& op,
                    const RefFn& ref, double rtol, double atol) {
  uint32_t seed = 1;
  for (const Case& c : cases()) {
    Tensor x0 = tt::random(c.shape, dt, seed++, lo, hi);
    auto expect = apply(x0, c.dims, ref);
    for (bool keep : {false, true})
      for (const Tensor& x : tt::layouts(x0)) {
        Tensor y = op(x, c.dims, keep);
        EXPECT_EQ(y.dtype(), dt) << what;
        tt::expect_close(y, ref_shape(c.shape, c.dims, keep), expect, rtol, atol,
                         std::string(what) + " " + terra::shape_str(c.shape) + " dims " +
                             terra::shape_str(Shape(c.dims.begin(), c.dims.end())));
      }
  }
}

class ReduceFloat : public ::testing::TestWithParam<DType> {};

TEST_P(ReduceFloat, SumMeanProd) {
  DType dt = GetParam();
  double rt = tt::rtol_of(dt), at = dt == DType::Float16 ? 1e-2 : 1e-5;
  check_float_op(
      "sum", dt, -2, 2, [](auto& x, auto& d, bool k) { return terra::sum(x, d, k); }, r_sum, rt,
      at);
  check_float_op(
      "mean", dt, -2, 2, [](auto& x, auto& d, bool k) { return terra::mean(x, d, k); }, r_mean, rt,
      at);
  check_float_op(
      "prod", dt, 0.8, 1.25, [](auto& x, auto& d, bool k) { return terra::prod(x, d, k); }, r_prod,
      rt * 10, at);
}

TEST_P(ReduceFloat, VarStdLogsumexp) {
  DType dt = GetParam();
  double rt = tt::rtol_of(dt) * 10, at = dt == DType::Float16 ? 1e-2 : 1e-5;
  for (int64_t corr : {0, 1}) {
    check_float_op(
        "var", dt, -2, 2, [corr](auto& x, auto& d, bool k) { return terra::var(x, d, corr, k); },
        r_var(corr), rt, at);
    check_float_op(
        "std", dt, -2, 2, [corr](auto& x, auto& d, bool k) { return terra::std(x, d, corr, k); },
        [corr](auto& g) { return std::sqrt(r_var(corr)(g)); }, rt, at);
  }
  check_float_op(
      "logsumexp", dt, -3, 3, [](auto& x, auto& d, bool k) { return terra::logsumexp(x, d, k); },
      r_lse, rt, at);
}

TEST_P(ReduceFloat, AmaxAmin) {
  DType dt = GetParam();
  check_float_op(
      "amax", dt, -2, 2, [](auto& x, auto& d, bool k) { return terra::amax(x, d, k); }, r_ext<true>,
      0, 0);
  check_float_op(
      "amin", dt, -2, 2, [](auto& x, auto& d, bool k) { return terra::amin(x, d, k); },
      r_ext<false>, 0, 0);
}

INSTANTIATE_TEST_SUITE_P(Reduce, ReduceFloat,
                         ::testing::Values(DType::Float32, DType::Float64, DType::Float16,
                                           DType::BFloat16));

// max/min/argmax/argmin along each dim of several shapes, in every layout.
TEST(Reduce, MaxMinArgAlongDim) {
  for (DType dt : {DType::Float32, DType::Float64, DType::Int32, DType::Int64}) {
    for (Shape s : {Shape{6}, Shape{3, 5}, Shape{4, 3, 5}, Shape{2, 64, 40}}) {
      // Integer values in [-3, 3): many ties, so the first-occurrence rule is exercised.
      Tensor x0 = tt::random(s, dt, 7, -3, 3);
      for (int64_t d = -1; d < int64_t(s.size()); ++d) {
        auto imax = apply(x0, {d}, r_arg<true>), imin = apply(x0, {d}, r_arg<false>);
        auto vmax = apply(x0, {d}, r_ext<true>), vmin = apply(x0, {d}, r_ext<false>);
        for (bool keep : {false, true})
          for (const Tensor& x : tt::layouts(x0)) {
            Shape os = ref_shape(s, {d}, keep);
            auto [v, i] = terra::max(x, d, keep);
            EXPECT_EQ(v.dtype(), dt);
            EXPECT_EQ(i.dtype(), DType::Int64);
            tt::expect_close(v, os, vmax, 0, 0, "max values");
            tt::expect_close(i, os, imax, 0, 0, "max indices");
            auto [w, j] = terra::min(x, d, keep);
            tt::expect_close(w, os, vmin, 0, 0, "min values");
            tt::expect_close(j, os, imin, 0, 0, "min indices");
            tt::expect_close(terra::argmax(x, d, keep), os, imax, 0, 0, "argmax");
            tt::expect_close(terra::argmin(x, d, keep), os, imin, 0, 0, "argmin");
          }
      }
      for (const Tensor& x : tt::layouts(x0)) {  // flattened index, like torch.argmax(x)
        tt::expect_close(terra::argmax(x), {}, apply(x0, {}, r_arg<true>), 0, 0, "argmax all");
        tt::expect_close(terra::argmin(x), {}, apply(x0, {}, r_arg<false>), 0, 0, "argmin all");
      }
    }
  }
}

TEST(Reduce, IntegerAndBoolDtypes) {
  for (DType dt : {DType::Bool, DType::Int32, DType::Int64}) {
    for (const Case& c : cases()) {
      Tensor x0 = tt::random(c.shape, dt, 3, -4, 4);
      for (const Tensor& x : tt::layouts(x0)) {
        Tensor s = terra::sum(x, c.dims), p = terra::prod(x, c.dims, true);
        EXPECT_EQ(s.dtype(), DType::Int64);
        EXPECT_EQ(p.dtype(), DType::Int64);
        tt::expect_close(s, ref_shape(c.shape, c.dims, false), apply(x0, c.dims, r_sum), 0, 0);
        tt::expect_close(p, ref_shape(c.shape, c.dims, true), apply(x0, c.dims, r_prod), 0, 0);
        Tensor mx = terra::amax(x, c.dims), mn = terra::amin(x, c.dims);
        EXPECT_EQ(mx.dtype(), dt);
        tt::expect_close(mx, ref_shape(c.shape, c.dims, false), apply(x0, c.dims, r_ext<true>), 0,
                         0);
        tt::expect_close(mn, ref_shape(c.shape, c.dims, false), apply(x0, c.dims, r_ext<false>), 0,
                         0);
      }
    }
  }
  Tensor big = terra::full({3}, 3e9, {.dtype = DType::Int64});  // no int32 overflow on the way
  EXPECT_EQ(terra::sum(big).item<int64_t>(), int64_t(9e9));
}

TEST(Reduce, EmptyTensors) {
  Tensor e = terra::zeros({0, 3});
  tt::expect_close(terra::sum(e, {0}), {3}, {0, 0, 0});
  tt::expect_close(terra::prod(e, {0}), {3}, {1, 1, 1});
  tt::expect_close(terra::sum(e), {}, {0});
  tt::expect_close(terra::prod(e, {}, true), {1, 1}, {1});
  tt::expect_close(terra::sum(e, {1}), {0}, {});
  tt::expect_close(terra::mean(e, {0}), {3}, {kNaN, kNaN, kNaN});
  tt::expect_close(terra::var(e, {0}), {3}, {kNaN, kNaN, kNaN});
  tt::expect_close(terra::logsumexp(e, {0}), {3}, {-kInf, -kInf, -kInf});
  tt::expect_close(terra::sum(terra::zeros({0}, {.dtype = DType::Int32})), {}, {0});
  // A non-empty reduced extent of an empty tensor is fine even without an identity.
  tt::expect_close(terra::amax(e, {1}), {0}, {});
  tt::expect_close(terra::max(e, 1).second, {0}, {});
  tt::expect_close(terra::argmin(e, 1, true), {0, 1}, {});
  Tensor e3 = Tensor::empty({3, 0, 2});
  tt::expect_close(terra::sum(e3, {1}), {3, 2}, std::vector<double>(6, 0.0));
  tt::expect_close(terra::prod(e3, {1}, true), {3, 1, 2}, std::vector<double>(6, 1.0));
  EXPECT_EQ(terra::amax(e3, {2}).shape(), (Shape{3, 0}));  // values unreadable: see test_sort
}

TEST(Reduce, ZeroDim) {
  Tensor s = terra::full({}, 2.5);
  for (Dims d : {Dims{}, Dims{0}, Dims{-1}})
    for (bool keep : {false, true}) {
      tt::expect_close(terra::sum(s, d, keep), {}, {2.5});
      tt::expect_close(terra::mean(s, d, keep), {}, {2.5});
      tt::expect_close(terra::prod(s, d, keep), {}, {2.5});
      tt::expect_close(terra::amax(s, d, keep), {}, {2.5});
      tt::expect_close(terra::logsumexp(s, d, keep), {}, {2.5});
      tt::expect_close(terra::var(s, d, 0, keep), {}, {0});
    }
  tt::expect_close(terra::var(s), {}, {kNaN});  // one element, correction 1
  auto [v, i] = terra::max(s, 0);
  tt::expect_close(v, {}, {2.5});
  tt::expect_close(i, {}, {0});
  tt::expect_close(terra::min(s, -1, true).second, {}, {0});
  tt::expect_close(terra::argmax(s), {}, {0});
  tt::expect_close(terra::argmin(s, 0), {}, {0});
}

TEST(Reduce, NaNPropagatesAndTies) {
  Tensor x = terra::tensor(std::vector<double>{1, 3, kNaN, 3, kNaN, 0, 2, 2, -1, 2, -1, 2}, {3, 4});
  tt::expect_close(terra::amax(x, {1}), {3}, {kNaN, kNaN, 2});
  tt::expect_close(terra::amin(x, {1}), {3}, {kNaN, kNaN, -1});
  tt::expect_close(terra::amax(x), {}, {kNaN});
  auto [v, i] = terra::max(x, 1);
  tt::expect_close(v, {3}, {kNaN, kNaN, 2});
  tt::expect_close(i, {3}, {2, 0, 1});
  tt::expect_close(terra::min(x, 1).second, {3}, {2, 0, 0});
  tt::expect_close(terra::argmax(x, 0), {4}, {1, 0, 0, 0});
  tt::expect_close(terra::argmax(x), {}, {2});
  tt::expect_close(terra::logsumexp(x, {1}), {3}, {kNaN, kNaN, r_lse({-1, 2, -1, 2})});
  tt::expect_close(terra::sum(x, {0}), {4}, {kNaN, 5, kNaN, 7});
}

TEST(Reduce, LogsumexpIsStable) {
  Tensor x =
      terra::tensor(std::vector<double>{1000, 1000, -1000, -1000, -kInf, -kInf, kInf, 0}, {4, 2});
  tt::expect_close(terra::logsumexp(x, {1}), {4},
                   {1000 + std::log(2.0), -1000 + std::log(2.0), -kInf, kInf});
  tt::expect_close(terra::logsumexp(x.to(DType::Float32), {1}), {4},
                   {1000 + std::log(2.0), -1000 + std::log(2.0), -kInf, kInf});
}

TEST(Reduce, VarCorrectionAtLeastCount) {
  Tensor x = terra::tensor(std::vector<double>{1, 2, 4, 4}, {2, 2});
  tt::expect_close(terra::var(x, {1}, 2), {2}, {kInf, kNaN});  // 0.5 / 0 and 0 / 0
  tt::expect_close(terra::var(x, {1}, 3), {2}, {kInf, kNaN});
  tt::expect_close(terra::std(x, {}, 0), {}, {std::sqrt(r_var(0)({1, 2, 4, 4}))});
}

// Long float32 sums accumulate in double: far more accurate than a float running sum.
TEST(Reduce, LongFloat32SumIsAccurate) {
  Tensor x = tt::random({1 << 20}, DType::Float32, 5, 0, 1);
  double ref = r_sum(tt::f64(x));
  EXPECT_NEAR(terra::sum(x).item<double>(), ref, ref * 1e-7);
  EXPECT_NEAR(terra::mean(x).item<double>(), ref / (1 << 20), ref / (1 << 20) * 1e-7);
  Tensor tenth = terra::full({3, 1000003}, 0.1);
  tt::expect_close(terra::sum(tenth, {1}), {3}, std::vector<double>(3, 1000003 * double(0.1f)),
                   1e-7, 0);
}

// Sizes that take the parallel and split-extent paths; ties spread over split boundaries.
TEST(Reduce, LargeTensorsAllPaths) {
  for (Case c : {Case{{64, 1024}, {1}}, Case{{1024, 64}, {0}}, Case{{300000}, {}},
                 Case{{3, 100000}, {1}}, Case{{100000, 3}, {0}}, Case{{8, 9, 1000}, {0, 2}}}) {
    Tensor x0 = tt::random(c.shape, DType::Int32, 11, -3, 3).to(DType::Float32);
    for (const Tensor& x : tt::layouts(x0)) {
      tt::expect_close(terra::sum(x, c.dims), ref_shape(c.shape, c.dims, false),
                       apply(x0, c.dims, r_sum), 1e-6, 1e-6);
      tt::expect_close(terra::var(x, c.dims), ref_shape(c.shape, c.dims, false),
                       apply(x0, c.dims, r_var(1)), 1e-5, 1e-6);
      tt::expect_close(terra::amin(x, c.dims), ref_shape(c.shape, c.dims, false),
                       apply(x0, c.dims, r_ext<false>), 0, 0);
    }
    if (c.dims.size() <= 1) {
      int64_t d = c.dims.empty() ? 0 : c.dims[0];
      const Tensor& x = x0;
      tt::expect_close(terra::argmax(x, d), ref_shape(c.shape, {d}, false),
                       apply(x0, {d}, r_arg<true>), 0, 0, "argmax large");
      tt::expect_close(terra::argmin(x.transpose(0, -1).contiguous().transpose(0, -1), d),
                       ref_shape(c.shape, {d}, false), apply(x0, {d}, r_arg<false>), 0, 0,
                       "argmin large");
    }
  }
  Tensor ties = terra::zeros({200000});
  ties.slice(0, 150000, 150001).fill_(1);
  ties.slice(0, 190000, 190001).fill_(1);
  EXPECT_EQ(terra::argmax(ties).item<int64_t>(), 150000);
  ties.slice(0, 170000, 170001).fill_(kNaN);
  ties.slice(0, 180000, 180001).fill_(kNaN);
  EXPECT_EQ(terra::argmax(ties).item<int64_t>(), 170000);
  EXPECT_TRUE(std::isnan(terra::amax(ties).item<double>()));
}

// Broadcast (stride-0) inputs and permutations that do not coalesce (the copy fallback).
TEST(Reduce, ExpandedAndPermutedInputs) {
  Tensor row = tt::random({1, 5}, DType::Float64, 2);
  Tensor ex = row.expand({4, 5});
  tt::expect_close(terra::sum(ex, {0}), {5}, apply(ex.contiguous(), {0}, r_sum), 1e-12, 1e-12);
  tt::expect_close(terra::sum(ex), {}, apply(ex.contiguous(), {}, r_sum), 1e-12, 1e-12);
  Tensor x = tt::random({4, 5, 6}, DType::Float64, 9).permute({2, 0, 1});  // [6, 4, 5]
  for (Dims d : {Dims{0, 2}, Dims{1}, Dims{0}, Dims{}, Dims{1, 2}}) {
    Tensor xc = x.contiguous();
    tt::expect_close(terra::sum(x, d, true), ref_shape(x.shape(), d, true), apply(xc, d, r_sum),
                     1e-12, 1e-12);
    tt::expect_close(terra::amax(x, d), ref_shape(x.shape(), d, false), apply(xc, d, r_ext<true>),
                     0, 0);
  }
  tt::expect_close(terra::argmax(x), {}, apply(x.contiguous(), {}, r_arg<true>), 0, 0);
  tt::expect_close(terra::argmin(x, 1), {6, 5}, apply(x.contiguous(), {1}, r_arg<false>), 0, 0);
}

TEST(Reduce, Errors) {
  Tensor i = terra::zeros({2, 3}, {.dtype = DType::Int32});
  Tensor b = terra::zeros({2, 3}, {.dtype = DType::Bool});
  tt::expect_error([&] { terra::mean(i); }, {"[terra::mean]", "int32"});
  tt::expect_error([&] { terra::mean(b, {0}); }, {"[terra::mean]", "bool"});
  tt::expect_error([&] { terra::var(i); }, {"[terra::var]", "int32"});
  tt::expect_error([&] { terra::std(i); }, {"[terra::var]", "int32"});
  tt::expect_error([&] { terra::logsumexp(i.to(DType::Int64), {0}); },
                   {"[terra::logsumexp]", "int64"});
  Tensor f = terra::zeros({2, 3});
  tt::expect_error([&] { terra::sum(f, {2}); }, {"[terra::sum]", "dim 2", "rank 2"});
  tt::expect_error([&] { terra::amin(f, {-3}); }, {"[terra::amin]", "dim -3"});
  tt::expect_error([&] { terra::prod(f, {1, -1}); }, {"[terra::prod]", "more than once"});
  tt::expect_error([&] { terra::max(f, 5); }, {"[terra::max]", "dim 5"});
  tt::expect_error([&] { terra::argmin(f, -3); }, {"[terra::argmin]", "dim -3"});
  tt::expect_error([&] { terra::sum(terra::full({}, 1.0), {1}); }, {"[terra::sum]", "dim 1"});
  Tensor e = terra::zeros({0, 3});
  tt::expect_error([&] { terra::amax(e); }, {"[terra::amax]", "empty", "[0, 3]"});
  tt::expect_error([&] { terra::amin(e, {0}); }, {"[terra::amin]", "empty", "[0]"});
  tt::expect_error([&] { terra::max(e, 0); }, {"[terra::max]", "empty", "[0, 3]"});
  tt::expect_error([&] { terra::min(e, 0); }, {"[terra::min]", "empty"});
  tt::expect_error([&] { terra::argmax(e); }, {"[terra::argmax]", "empty"});
  tt::expect_error([&] { terra::argmin(e, 0); }, {"[terra::argmin]", "empty"});
  tt::expect_error([&] { e.max(); }, {"[terra::amax]", "empty"});
}

}  // namespace
