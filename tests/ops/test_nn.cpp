// Tests of the neural-network ops against plain-loop float64 references.
#include "op_test.hpp"

TERRA_COVERS("softmax", "log_softmax", "layer_norm", "batch_norm", "dropout");

namespace {

using terra::DType;
using terra::Shape;
using terra::Tensor;

constexpr double kInf = std::numeric_limits<double>::infinity();

// [outer, n, inner] around dim d.
void split3(const Shape& s, int64_t d, int64_t& outer, int64_t& n, int64_t& inner) {
  outer = n = inner = 1;
  for (int64_t i = 0; i < int64_t(s.size()); ++i) (i < d ? outer : i == d ? n : inner) *= s[i];
}

std::vector<double> ref_softmax(const std::vector<double>& x, const Shape& s, int64_t d, bool log) {
  int64_t outer, n, inner;
  split3(s, d, outer, n, inner);
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < inner; ++c) {
      auto at = [&](int64_t i) { return size_t((o * n + i) * inner + c); };
      double m = -kInf, sum = 0;
      for (int64_t i = 0; i < n; ++i) m = std::max(m, x[at(i)]);
      for (int64_t i = 0; i < n; ++i) sum += std::exp(x[at(i)] - m);
      for (int64_t i = 0; i < n; ++i)
        y[at(i)] = log ? x[at(i)] - m - std::log(sum) : std::exp(x[at(i)] - m) / sum;
    }
  return y;
}

// ---- softmax / log_softmax ----
TEST(Softmax, EveryDimLayoutDtype) {
  for (Shape s : {Shape{7}, Shape{4, 9}, Shape{3, 5, 6}, Shape{2, 3, 4, 5}, Shape{3, 70, 2}}) {
    for (int64_t d = 0; d < int64_t(s.size()); ++d) {
      for (DType dt : {DType::Float32, DType::Float64}) {
        Tensor x = tt::random(s, dt, uint32_t(d + 1), -5, 5);
        auto xv = tt::f64(x);
        auto e = ref_softmax(xv, s, d, false), el = ref_softmax(xv, s, d, true);
        for (const Tensor& xl : tt::layouts(x)) {
          tt::expect_close(terra::softmax(xl, d), s, e, tt::rtol_of(dt), 1e-7);
          tt::expect_close(terra::log_softmax(xl, d - int64_t(s.size())), s, el, tt::rtol_of(dt),
                           1e-6);
        }
      }
    }
  }
}

TEST(Softmax, LargeParallelAndWideInner) {
  for (auto [s, d] :
       {std::pair{Shape{64, 1024}, int64_t(1)}, std::pair{Shape{64, 1024}, int64_t(0)},
        std::pair{Shape{3, 40, 300}, int64_t(1)}}) {
    Tensor x = tt::random(s, DType::Float32, 3, -8, 8);
    auto xv = tt::f64(x);
    tt::expect_close(x.softmax(d), s, ref_softmax(xv, s, d, false), 1e-5, 1e-7);
    tt::expect_close(x.log_softmax(d), s, ref_softmax(xv, s, d, true), 1e-5, 1e-5);
  }
}

TEST(Softmax, StableInfinitiesEmptyScalarHalf) {
  Tensor big = terra::tensor<float>({1000, 1001, 1002, -1000});
  auto e = ref_softmax({1000, 1001, 1002, -1000}, {4}, 0, false);
  tt::expect_close(terra::softmax(big, 0), {4}, e, 1e-6, 1e-7);
  tt::expect_close(terra::log_softmax(big, 0), {4},
                   ref_softmax({1000, 1001, 1002, -1000}, {4}, 0, true), 1e-6, 1e-5);
  Tensor inf = terra::tensor<double>({0.0, -kInf, 1.0});
  tt::expect_close(terra::softmax(inf, 0), {3}, ref_softmax({0, -kInf, 1}, {3}, 0, false));
  tt::expect_close(terra::log_softmax(inf, 0), {3}, ref_softmax({0, -kInf, 1}, {3}, 0, true));
  tt::expect_close(terra::softmax(terra::zeros({0, 5}), 1), {0, 5}, {});
  tt::expect_close(terra::log_softmax(terra::zeros({3, 0}), 1), {3, 0}, {});
  tt::expect_close(terra::softmax(terra::full({}, 3.0), 0), {}, {1.0});
  tt::expect_close(terra::log_softmax(terra::full({}, 3.0), -1), {}, {0.0});
  Tensor h = tt::random({5, 6}, DType::Float16, 4);
  Tensor yh = terra::softmax(h, 0);
  EXPECT_EQ(yh.dtype(), DType::Float16);
  tt::expect_close(yh, {5, 6}, ref_softmax(tt::f64(h), {5, 6}, 0, false), 2e-3, 1e-3);
}

TEST(Softmax, Errors) {
  Tensor i = terra::zeros({3}, {.dtype = DType::Int64});
  tt::expect_error([&] { terra::softmax(i, 0); }, {"[terra::softmax]", "floating", "int64"});
  tt::expect_error([&] { terra::log_softmax(i, 0); }, {"[terra::log_softmax]", "int64"});
  tt::expect_error([&] { terra::softmax(terra::zeros({2, 3}), 2); }, {"dim 2 out of range"});
}

// ---- layer_norm ----
struct Norm {
  std::vector<double> y, mean, rstd;
};
Norm ref_layer_norm(const std::vector<double>& x, int64_t n, const std::vector<double>& w,
                    const std::vector<double>& b, double eps) {
  Norm r;
  r.y.resize(x.size());
  int64_t rows = n ? int64_t(x.size()) / n : 0;
  for (int64_t i = 0; i < rows; ++i) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < n; ++j) m += x[size_t(i * n + j)];
    m /= double(n);
    for (int64_t j = 0; j < n; ++j) v += std::pow(x[size_t(i * n + j)] - m, 2);
    double rs = 1 / std::sqrt(v / double(n) + eps);
    r.mean.push_back(m);
    r.rstd.push_back(rs);
    for (int64_t j = 0; j < n; ++j) {
      size_t k = size_t(i * n + j);
      r.y[k] =
          (x[k] - m) * rs * (w.empty() ? 1.0 : w[size_t(j)]) + (b.empty() ? 0.0 : b[size_t(j)]);
    }
  }
  return r;
}

TEST(LayerNorm, ShapesAffineLayoutsDtypes) {
  struct Case {
    Shape xs, ns;
  };
  for (const Case& k : {Case{{4, 10}, {10}}, Case{{2, 3, 8}, {3, 8}}, Case{{5}, {5}},
                        Case{{2, 3, 4, 6}, {6}}, Case{{64, 1024}, {1024}}}) {
    for (DType dt : {DType::Float32, DType::Float64}) {
      Tensor x = tt::random(k.xs, dt, 5, -3, 5);
      Tensor w = tt::random(k.ns, dt, 6), b = tt::random(k.ns, dt, 7);
      Shape stats(k.xs.begin(), k.xs.end() - k.ns.size());
      int64_t n = terra::numel_of(k.ns);
      for (int mode = 0; mode < 4; ++mode) {
        Tensor wi = mode & 1 ? w : Tensor(), bi = mode & 2 ? b : Tensor();
        Norm r = ref_layer_norm(tt::f64(x), n, mode & 1 ? tt::f64(w) : std::vector<double>{},
                                mode & 2 ? tt::f64(b) : std::vector<double>{}, 1e-3);
        for (const Tensor& xl : tt::layouts(x)) {
          auto [y, mean, rstd] = terra::native_layer_norm(xl, k.ns, wi, bi, 1e-3);
          tt::expect_close(y, k.xs, r.y, tt::rtol_of(dt) * 10, 1e-5);
          tt::expect_close(mean, stats, r.mean, tt::rtol_of(dt), 1e-6);
          tt::expect_close(rstd, stats, r.rstd, tt::rtol_of(dt) * 10, 1e-6);
          EXPECT_EQ(mean.dtype(), dt);
        }
        tt::expect_close(
            terra::layer_norm(x, k.ns, wi.defined() ? tt::layouts(wi).back() : wi, bi, 1e-3), k.xs,
            r.y, tt::rtol_of(dt) * 10, 1e-5);
      }
    }
  }
}

TEST(LayerNorm, EmptyHalfDefaultEps) {
  auto [y, mean, rstd] = terra::native_layer_norm(terra::zeros({0, 8}), {8});
  EXPECT_EQ(y.shape(), (Shape{0, 8}));
  EXPECT_EQ(mean.shape(), (Shape{0}));
  Tensor x = tt::random({3, 16}, DType::Float32, 8);
  tt::expect_close(terra::layer_norm(x, {16}), {3, 16},
                   ref_layer_norm(tt::f64(x), 16, {}, {}, 1e-5).y, 1e-4, 1e-5);
  Tensor h = x.to(DType::Float16);
  auto [yh, mh, rh] =
      terra::native_layer_norm(h, {16}, terra::ones({16}, {.dtype = DType::Float16}));
  EXPECT_EQ(yh.dtype(), DType::Float16);
  EXPECT_EQ(mh.dtype(), DType::Float32);
  Norm r = ref_layer_norm(tt::f64(h), 16, {}, {}, 1e-5);
  tt::expect_close(yh, {3, 16}, r.y, 4e-3, 4e-3);
  tt::expect_close(mh, {3}, r.mean, 1e-5, 1e-6);
}

TEST(LayerNorm, Errors) {
  Tensor x = terra::zeros({3, 4});
  tt::expect_error([&] { terra::layer_norm(x, {5}); }, {"[terra::layer_norm]", "[*, 5]", "[3, 4]"});
  tt::expect_error([&] { terra::layer_norm(x, {2, 3, 4}); }, {"[*, 2, 3, 4]"});
  tt::expect_error([&] { terra::layer_norm(x, {}); }, {"at least one dim"});
  tt::expect_error([&] { terra::layer_norm(x, {4}, terra::ones({3})); },
                   {"weight of shape [3]", "[4]"});
  tt::expect_error(
      [&] {
        terra::layer_norm(x, {4}, {}, terra::ones({4, 1}));
      },
      {"bias of shape [4, 1]"});
  tt::expect_error([&] { terra::layer_norm(x.to(DType::Int32), {4}); }, {"floating", "int32"});
}

// ---- batch_norm ----
struct BnRef {
  std::vector<double> y, mean, invstd, run_mean, run_var;
};
BnRef ref_batch_norm(const std::vector<double>& x, const Shape& s, const std::vector<double>& w,
                     const std::vector<double>& b, std::vector<double> rm, std::vector<double> rv,
                     bool training, double momentum, double eps) {
  int64_t nb = s[0], ch = s[1], sp = terra::numel_of(s) / std::max<int64_t>(nb * ch, 1);
  BnRef r;
  r.y.resize(x.size());
  for (int64_t c = 0; c < ch; ++c) {
    double m = 0, v = 0, cnt = double(nb * sp);
    auto at = [&](int64_t i, int64_t j) { return size_t((i * ch + c) * sp + j); };
    if (training) {
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t j = 0; j < sp; ++j) m += x[at(i, j)];
      m /= cnt;
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t j = 0; j < sp; ++j) v += std::pow(x[at(i, j)] - m, 2);
      v /= cnt;
      if (!rm.empty()) {
        rm[size_t(c)] = (1 - momentum) * rm[size_t(c)] + momentum * m;
        rv[size_t(c)] = (1 - momentum) * rv[size_t(c)] + momentum * v * cnt / (cnt - 1);
      }
    } else {
      m = rm[size_t(c)];
      v = rv[size_t(c)];
    }
    double inv = 1 / std::sqrt(v + eps);
    r.mean.push_back(m);
    r.invstd.push_back(inv);
    for (int64_t i = 0; i < nb; ++i)
      for (int64_t j = 0; j < sp; ++j)
        r.y[at(i, j)] = (x[at(i, j)] - m) * inv * (w.empty() ? 1 : w[size_t(c)]) +
                        (b.empty() ? 0 : b[size_t(c)]);
  }
  r.run_mean = rm;
  r.run_var = rv;
  return r;
}

TEST(BatchNorm, TrainAndEvalShapesLayouts) {
  for (Shape s : {Shape{6, 3}, Shape{4, 3, 5}, Shape{2, 3, 4, 5}, Shape{2, 2, 3, 2, 2},
                  Shape{16, 8, 32, 32}}) {
    for (DType dt : {DType::Float32, DType::Float64}) {
      int64_t ch = s[1];
      Tensor x = tt::random(s, dt, 9, -2, 6);
      Tensor w = tt::random({ch}, dt, 10), b = tt::random({ch}, dt, 11);
      Tensor rm0 = tt::random({ch}, dt, 12), rv0 = tt::random({ch}, dt, 13, 0.5, 2);
      for (bool training : {true, false}) {
        BnRef r = ref_batch_norm(tt::f64(x), s, tt::f64(w), tt::f64(b), tt::f64(rm0), tt::f64(rv0),
                                 training, 0.2, 1e-4);
        for (const Tensor& xl : tt::layouts(x)) {
          Tensor rm = rm0.clone(), rv = rv0.clone();
          uint64_t v0 = rm.storage()->version.load();
          auto [y, sm, si] = terra::native_batch_norm(xl, w, b, rm, rv, training, 0.2, 1e-4);
          tt::expect_close(y, s, r.y, tt::rtol_of(dt) * 20, 1e-5);
          tt::expect_close(sm, {ch}, r.mean, tt::rtol_of(dt) * 10, 1e-6);
          tt::expect_close(si, {ch}, r.invstd, tt::rtol_of(dt) * 20, 1e-6);
          tt::expect_close(rm, {ch}, r.run_mean, tt::rtol_of(dt) * 10, 1e-6);
          tt::expect_close(rv, {ch}, r.run_var, tt::rtol_of(dt) * 10, 1e-6);
          EXPECT_EQ(rm.storage()->version.load(), v0 + (training ? 1 : 0));
        }
      }
    }
  }
}

TEST(BatchNorm, OptionalParamsStridedStatsMixedDtypes) {
  Shape s{5, 4, 3};
  Tensor x = tt::random(s, DType::Float32, 14, -1, 3);
  // No affine, no running stats (training only).
  BnRef r = ref_batch_norm(tt::f64(x), s, {}, {}, {}, {}, true, 0.1, 1e-5);
  tt::expect_close(terra::batch_norm(x, {}, {}, {}, {}, true), s, r.y, 1e-4, 1e-5);
  // Running stats as strided views of float64 buffers, updated through their strides.
  Tensor buf_m = terra::zeros({8}, {.dtype = DType::Float64}),
         buf_v = terra::ones({8}, {.dtype = DType::Float64});
  Tensor rm = buf_m.slice(0, 0, 8, 2), rv = buf_v.slice(0, 0, 8, 2);
  r = ref_batch_norm(tt::f64(x), s, {}, tt::f64(terra::ones({4})), std::vector<double>(4, 0.0),
                     std::vector<double>(4, 1.0), true, 0.1, 1e-5);
  tt::expect_close(terra::batch_norm(x, {}, terra::ones({4}), rm, rv, true), s, r.y, 1e-4, 1e-5);
  tt::expect_close(rm, {4}, r.run_mean, 1e-6, 1e-7);
  tt::expect_close(rv, {4}, r.run_var, 1e-6, 1e-7);
  EXPECT_EQ(tt::f64(buf_m)[1], 0.0);  // untouched between the strided elements
  // Eval with float64 running stats and a float32 input.
  r = ref_batch_norm(tt::f64(x), s, {}, {}, tt::f64(rm), tt::f64(rv), false, 0.1, 1e-5);
  tt::expect_close(terra::batch_norm(x, {}, {}, rm, rv, false), s, r.y, 1e-5, 1e-6);
  // float16 input with float32 stats; float16 running stats go through float32 and back.
  Tensor h = x.to(DType::Float16);
  Tensor hm = terra::zeros({4}, {.dtype = DType::Float16}),
         hv = terra::ones({4}, {.dtype = DType::Float16});
  uint64_t v0 = hm.storage()->version.load();
  r = ref_batch_norm(tt::f64(h), s, {}, {}, std::vector<double>(4, 0.0),
                     std::vector<double>(4, 1.0), true, 0.1, 1e-5);
  Tensor yh = terra::batch_norm(h, {}, {}, hm, hv, true);
  EXPECT_EQ(yh.dtype(), DType::Float16);
  tt::expect_close(yh, s, r.y, 4e-3, 4e-3);
  tt::expect_close(hm, {4}, r.run_mean, 2e-3, 1e-4);
  tt::expect_close(hv, {4}, r.run_var, 2e-3, 1e-4);
  EXPECT_GT(hm.storage()->version.load(), v0);
}

TEST(BatchNorm, EmptyBatchAndErrors) {
  Tensor rm = terra::zeros({3}), rv = terra::ones({3});
  Tensor y = terra::batch_norm(terra::zeros({0, 3, 4}), {}, {}, rm, rv, true);
  EXPECT_EQ(y.shape(), (Shape{0, 3, 4}));
  tt::expect_close(rm, {3}, {0, 0, 0});
  tt::expect_close(rv, {3}, {1, 1, 1});
  Tensor x = terra::zeros({2, 3});
  tt::expect_error([&] { terra::batch_norm(x, {}, {}, {}, {}, false); },
                   {"[terra::batch_norm]", "evaluation mode needs running_mean"});
  tt::expect_error([&] { terra::batch_norm(x, {}, {}, rm, {}, true); }, {"together"});
  tt::expect_error([&] { terra::batch_norm(x, terra::ones({4}), {}, rm, rv, true); },
                   {"weight of shape [4]", "[3]", "[2, 3]"});
  tt::expect_error([&] { terra::batch_norm(x, {}, {}, terra::zeros({2}), rv, false); },
                   {"running_mean of shape [2]"});
  tt::expect_error([&] { terra::batch_norm(terra::zeros({3}), {}, {}, rm, rv, true); },
                   {"[N, C, *]", "[3]"});
  tt::expect_error(
      [&] {
        terra::batch_norm(terra::zeros({1, 3}), {}, {}, rm, rv, true);
      },
      {"more than 1 value per channel", "[1, 3]"});
  tt::expect_error([&] { terra::batch_norm(x.to(DType::Int64), {}, {}, rm, rv, true); },
                   {"floating", "int64"});
}

// ---- dropout ----
TEST(Dropout, MaskRuleScalingAndDeterminism) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    Tensor x = tt::random({200, 500}, dt, 15);
    for (double p : {0.0, 0.3, 0.75, 1.0}) {
      terra::manual_seed(1234);
      std::vector<float> u = terra::rand({200, 500}).to_vector<float>();
      terra::manual_seed(1234);
      auto [y, mask] = terra::native_dropout(x, p);
      terra::manual_seed(1234);
      Tensor y2 = terra::dropout(x, p);
      EXPECT_EQ(y2.to_vector<double>(), y.to_vector<double>()) << "same seed, same result";
      std::vector<bool> m = mask.to_vector<bool>();
      auto xv = tt::f64(x), yv = tt::f64(y);
      double kept = 0;
      for (size_t i = 0; i < m.size(); ++i) {
        ASSERT_EQ(m[i], u[i] >= float(p)) << "mask rule at " << i;
        kept += m[i];
        double expect;
        if (dt == DType::Float32) {
          float s = p < 1 ? float(1.0 / (1.0 - p)) : 0.0f;
          expect = m[i] ? double(float(xv[i]) * s) : 0.0;
        } else {
          expect = m[i] ? xv[i] * (1.0 / (1.0 - p)) : 0.0;
        }
        ASSERT_EQ(yv[i], expect) << "exact scaling at " << i;
      }
      EXPECT_NEAR(kept / double(m.size()), 1.0 - p, 0.01) << "p = " << p;
    }
  }
}

TEST(Dropout, GeneratorEvalLayoutsHalfEmpty) {
  terra::manual_seed(7);
  Tensor x = terra::ones({1000});
  std::vector<bool> a = terra::native_dropout(x, 0.5).second.to_vector<bool>();
  std::vector<bool> b = terra::native_dropout(x, 0.5).second.to_vector<bool>();
  EXPECT_NE(a, b) << "the generator advances between calls";
  uint64_t off = terra::default_generator().offset;
  Tensor e = terra::dropout(x, 0.5, false);
  EXPECT_TRUE(e.is_same(x));
  EXPECT_EQ(terra::default_generator().offset, off);
  Tensor x2 = tt::random({6, 7}, DType::Float32, 16);
  for (const Tensor& xl : tt::layouts(x2)) {
    terra::manual_seed(3);
    auto [y, m] = terra::native_dropout(xl, 0.4);
    terra::manual_seed(3);
    auto [yc, mc] = terra::native_dropout(x2, 0.4);
    EXPECT_EQ(m.to_vector<bool>(), mc.to_vector<bool>());
    EXPECT_EQ(y.to_vector<float>(), yc.to_vector<float>());
  }
  terra::manual_seed(3);
  Tensor yh = terra::dropout(x2.to(DType::Float16), 0.4);
  EXPECT_EQ(yh.dtype(), DType::Float16);
  terra::manual_seed(3);
  tt::expect_close(yh, {6, 7},
                   tt::f64(terra::dropout(x2.to(DType::Float16).to(DType::Float32), 0.4)), 1e-3,
                   1e-3);
  EXPECT_EQ(terra::dropout(terra::zeros({0, 4}), 0.5).shape(), (Shape{0, 4}));
}

TEST(Dropout, Errors) {
  Tensor x = terra::ones({4});
  tt::expect_error([&] { terra::dropout(x, 1.5); }, {"[terra::dropout]", "[0, 1]", "1.5"});
  tt::expect_error([&] { terra::dropout(x, -0.1); }, {"-0.1"});
  tt::expect_error([&] { terra::native_dropout(x, 2.0); }, {"[0, 1]", "2"});
  tt::expect_error([&] { terra::dropout(x.to(DType::Int32), 0.5); }, {"floating", "int32"});
}

}  // namespace
