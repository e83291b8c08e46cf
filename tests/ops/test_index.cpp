// Tests of the indexing ops against plain-loop float64 references.
#include "op_test.hpp"

TERRA_COVERS("index_select", "gather", "scatter_add", "masked_select", "one_hot");

namespace {

using terra::DType;
using terra::Shape;
using terra::Tensor;

std::vector<int64_t> unravel(int64_t i, const Shape& s) {
  std::vector<int64_t> c(s.size());
  for (size_t d = s.size(); d-- > 0;) {
    c[d] = i % s[d];
    i /= s[d];
  }
  return c;
}
int64_t ravel(const std::vector<int64_t>& c, const Shape& s) {
  int64_t i = 0;
  for (size_t d = 0; d < s.size(); ++d) i = i * s[d] + c[d];
  return i;
}

// ---- references ----
std::vector<double> ref_gather(const std::vector<double>& x, const Shape& xs, int64_t d,
                               const std::vector<int64_t>& idx, const Shape& is) {
  std::vector<double> out(idx.size());
  for (size_t i = 0; i < idx.size(); ++i) {
    auto c = unravel(int64_t(i), is);
    c[d] = idx[i];
    out[i] = x[ravel(c, xs)];
  }
  return out;
}
std::vector<double> ref_index_select(const std::vector<double>& x, const Shape& xs, int64_t d,
                                     const std::vector<int64_t>& idx) {
  Shape os = xs;
  os[d] = int64_t(idx.size());
  std::vector<double> out(size_t(terra::numel_of(os)));
  for (size_t i = 0; i < out.size(); ++i) {
    auto c = unravel(int64_t(i), os);
    c[d] = idx[c[d]];
    out[i] = x[ravel(c, xs)];
  }
  return out;
}

// ---- index_select ----
TEST(IndexSelect, EveryDimLayoutAndDtype) {
  for (Shape s : {Shape{7}, Shape{4, 6}, Shape{3, 4, 5}}) {
    for (int64_t d = 0; d < int64_t(s.size()); ++d) {
      for (DType dt : {DType::Float32, DType::Float64, DType::Int32, DType::Int64}) {
        Tensor x = tt::random(s, dt, uint32_t(d + 7), -9, 9);
        Tensor idx = tt::random_index({5}, s[d], uint32_t(d + 1));
        auto expect = ref_index_select(tt::f64(x), s, d, idx.to_vector<int64_t>());
        Shape os = s;
        os[d] = 5;
        for (const Tensor& xl : tt::layouts(x)) {
          Tensor y = terra::index_select(xl, d, idx);
          EXPECT_EQ(y.dtype(), dt);
          tt::expect_close(y, os, expect, 0, 0);
          // Negative dims and int32 indices select the same.
          tt::expect_close(terra::index_select(xl, d - int64_t(s.size()), idx.to(DType::Int32)), os,
                           expect, 0, 0);
        }
      }
    }
  }
}

TEST(IndexSelect, NonContiguousIndexBoolHalfEmptyAndScalar) {
  Tensor x = tt::random({6, 3}, DType::Float32, 3);
  Tensor idx = tt::ints({5, 0, 4, 1, 3, 2, 0, 0}).slice(0, 0, 8, 2);  // {5, 4, 3, 0}
  tt::expect_close(terra::index_select(x, 0, idx), {4, 3},
                   ref_index_select(tt::f64(x), {6, 3}, 0, {5, 4, 3, 0}), 0, 0);
  Tensor b = tt::random({6, 3}, DType::Bool, 4);
  tt::expect_close(terra::index_select(b, 0, idx), {4, 3},
                   ref_index_select(tt::f64(b), {6, 3}, 0, {5, 4, 3, 0}), 0, 0);
  Tensor h = x.to(DType::Float16);
  Tensor yh = terra::index_select(h, 1, tt::ints({2, 2}));
  EXPECT_EQ(yh.dtype(), DType::Float16);
  tt::expect_close(yh, {6, 2}, ref_index_select(tt::f64(h), {6, 3}, 1, {2, 2}), 0, 0);
  // Empty index, empty input, 0-d input.
  tt::expect_close(terra::index_select(x, 1, tt::ints({})), {6, 0}, {});
  tt::expect_close(terra::index_select(terra::zeros({0, 3}), 1, tt::ints({1, 2})), {0, 2}, {});
  Tensor s = terra::full({}, 2.5);
  tt::expect_close(terra::index_select(s, 0, tt::ints({0})), {}, {2.5});
  tt::expect_close(terra::index_select(x, 0, terra::full({}, 2, {.dtype = DType::Int64})), {1, 3},
                   ref_index_select(tt::f64(x), {6, 3}, 0, {2}), 0, 0);
}

TEST(IndexSelect, LargeParallel) {
  Tensor x = tt::random({300, 257}, DType::Float32, 5);
  Tensor idx = tt::random_index({400}, 300, 6);
  tt::expect_close(terra::index_select(x, 0, idx), {400, 257},
                   ref_index_select(tt::f64(x), {300, 257}, 0, idx.to_vector<int64_t>()), 0, 0);
  Tensor idx1 = tt::random_index({300}, 257, 7);
  tt::expect_close(terra::index_select(x.t(), 1, idx1), {257, 300},
                   ref_index_select(tt::f64(x.t()), {257, 300}, 1, idx1.to_vector<int64_t>()), 0,
                   0);
}

TEST(IndexSelect, Errors) {
  Tensor x = terra::zeros({5, 3});
  tt::expect_error(
      [&] {
        terra::index_select(x, 0, tt::ints({1, 5}));
      },
      {"[terra::index_select]", "index 5", "dim 0", "[0, 5)"});
  tt::expect_error([&] { terra::index_select(x, 1, tt::ints({-1}, {-1}, DType::Int32)); },
                   {"index -1", "[0, 3)"});
  tt::expect_error([&] { terra::index_select(x, 0, terra::zeros({2})); },
                   {"index must be int64 or int32", "float32"});
  tt::expect_error([&] { terra::index_select(x, 0, tt::ints({0, 1}, {1, 2})); }, {"1-D", "[1, 2]"});
  tt::expect_error([&] { terra::index_select(x, 2, tt::ints({0})); }, {"dim 2 out of range"});
  tt::expect_error(
      [&] {
        terra::index_select(terra::full({}, 1.0), 0, tt::ints({0, 0}));
      },
      {"0-d", "2"});
}

// ---- gather ----
TEST(Gather, ShapesDimsLayouts) {
  struct Case {
    Shape xs, is;
    int64_t d;
  };
  for (const Case& k : {Case{{7}, {4}, 0}, Case{{4, 5}, {3, 5}, 0}, Case{{4, 5}, {4, 8}, 1},
                        Case{{4, 5}, {2, 3}, 1}, Case{{3, 4, 5}, {3, 2, 5}, 1},
                        Case{{3, 4, 5}, {2, 4, 6}, 2}, Case{{3, 4, 5}, {5, 1, 2}, 0}}) {
    for (DType dt : {DType::Float32, DType::Float64, DType::Int64}) {
      Tensor x = tt::random(k.xs, dt, 11, -9, 9);
      Tensor idx = tt::random_index(k.is, k.xs[k.d], 12);
      auto expect = ref_gather(tt::f64(x), k.xs, k.d, idx.to_vector<int64_t>(), k.is);
      for (const Tensor& xl : tt::layouts(x))
        for (const Tensor& il : tt::layouts(idx))
          tt::expect_close(terra::gather(xl, k.d, il), k.is, expect, 0, 0);
      tt::expect_close(terra::gather(x, k.d, idx.to(DType::Int32)), k.is, expect, 0, 0);
    }
  }
}

TEST(Gather, EmptyScalarHalfLarge) {
  Tensor x = tt::random({4, 5}, DType::Float32, 13);
  tt::expect_close(terra::gather(x, 1, terra::zeros({4, 0}, {.dtype = DType::Int64})), {4, 0}, {});
  tt::expect_close(terra::gather(terra::full({}, 3.0), 0, tt::ints({0, 0})), {2}, {3, 3});
  tt::expect_close(terra::gather(x.select(0, 1), 0, terra::full({}, 4, {.dtype = DType::Int64})),
                   {}, {tt::f64(x)[9]});
  Tensor h = x.to(DType::Float16);
  Tensor idx = tt::random_index({3, 5}, 4, 14);
  tt::expect_close(terra::gather(h, 0, idx), {3, 5},
                   ref_gather(tt::f64(h), {4, 5}, 0, idx.to_vector<int64_t>(), {3, 5}), 0, 0);
  Tensor big = tt::random({64, 700}, DType::Float32, 15);
  Tensor bi = tt::random_index({64, 600}, 700, 16);
  tt::expect_close(terra::gather(big, 1, bi), {64, 600},
                   ref_gather(tt::f64(big), {64, 700}, 1, bi.to_vector<int64_t>(), {64, 600}), 0,
                   0);
}

TEST(Gather, Errors) {
  Tensor x = terra::zeros({4, 5});
  tt::expect_error(
      [&] {
        terra::gather(x, 1, tt::ints({0, 5}, {1, 2}));
      },
      {"[terra::gather]", "index 5", "dim 1", "[0, 5)"});
  tt::expect_error([&] { terra::gather(x, 0, tt::ints({-2}, {1, 1})); }, {"index -2", "[0, 4)"});
  tt::expect_error([&] { terra::gather(x, 0, tt::ints({0, 1})); }, {"rank", "[2]", "[4, 5]"});
  tt::expect_error(
      [&] {
        terra::gather(x, 0, terra::zeros({2, 6}, {.dtype = DType::Int64}));
      },
      {"larger", "[2, 6]", "dim 1"});
  tt::expect_error(
      [&] {
        terra::gather(x, 0, terra::zeros({1, 1}, {.dtype = DType::Bool}));
      },
      {"int64 or int32", "bool"});
}

// ---- scatter_add ----
std::vector<double> ref_scatter_add(std::vector<double> x, const Shape& xs, int64_t d,
                                    const std::vector<int64_t>& idx, const Shape& is,
                                    const std::vector<double>& src, const Shape& ss) {
  for (size_t i = 0; i < idx.size(); ++i) {
    auto c = unravel(int64_t(i), is);
    double v = src[ravel(c, ss)];
    c[d] = idx[i];
    x[ravel(c, xs)] += v;
  }
  return x;
}

TEST(ScatterAdd, CollisionsLayoutsDtypes) {
  struct Case {
    Shape xs, is, ss;
    int64_t d;
  };
  for (const Case& k :
       {Case{{5}, {9}, {9}, 0}, Case{{4, 5}, {7, 3}, {8, 4}, 0}, Case{{4, 5}, {4, 9}, {4, 9}, 1},
        Case{{3, 4, 5}, {2, 6, 5}, {3, 6, 5}, 1}, Case{{3, 4, 5}, {3, 4, 7}, {3, 4, 7}, 2}}) {
    for (DType dt : {DType::Float32, DType::Float64, DType::Int32}) {
      Tensor x = tt::random(k.xs, dt, 21, -9, 9);
      Tensor src = tt::random(k.ss, dt, 22, -9, 9);
      Tensor idx = tt::random_index(k.is, k.xs[k.d], 23);
      auto x0 = tt::f64(x);
      auto expect =
          ref_scatter_add(x0, k.xs, k.d, idx.to_vector<int64_t>(), k.is, tt::f64(src), k.ss);
      for (const Tensor& xl : tt::layouts(x))
        for (const Tensor& sl : tt::layouts(src))
          tt::expect_close(terra::scatter_add(xl, k.d, idx, sl), k.xs, expect, 1e-6, 1e-5);
      tt::expect_close(terra::scatter_add(x, k.d - int64_t(k.xs.size()), idx.to(DType::Int32), src),
                       k.xs, expect, 1e-6, 1e-5);
      tt::expect_close(x, k.xs, x0, 0, 0, "input unchanged");
    }
  }
}

TEST(ScatterAdd, LargeDeterministicEmptyHalf) {
  // Many collisions split over threads: the result must equal the serial reference exactly
  // (every output element adds its contributions in index order).
  Tensor x = tt::random({50, 700}, DType::Float32, 31);
  Tensor src = tt::random({400, 700}, DType::Float32, 32);
  Tensor idx = tt::random_index({400, 700}, 50, 33);
  std::vector<float> xf = x.to_vector<float>(), sf = src.to_vector<float>();
  std::vector<int64_t> iv = idx.to_vector<int64_t>();
  for (size_t i = 0; i < iv.size(); ++i) xf[size_t(iv[i]) * 700 + i % 700] += sf[i];
  Tensor y = terra::scatter_add(x, 0, idx, src);
  EXPECT_EQ(y.to_vector<float>(), xf);
  // Empty index: a copy of x.
  tt::expect_close(terra::scatter_add(x, 1, terra::zeros({50, 0}, {.dtype = DType::Int64}),
                                      terra::zeros({50, 0})),
                   {50, 700}, tt::f64(x), 0, 0);
  Tensor h = tt::random({3, 4}, DType::Float16, 34);
  Tensor hs = tt::random({3, 4}, DType::Float16, 35);
  Tensor hi = tt::random_index({3, 4}, 3, 36);
  Tensor yh = terra::scatter_add(h, 0, hi, hs);
  EXPECT_EQ(yh.dtype(), DType::Float16);
  tt::expect_close(
      yh, {3, 4},
      ref_scatter_add(tt::f64(h), {3, 4}, 0, hi.to_vector<int64_t>(), {3, 4}, tt::f64(hs), {3, 4}),
      2e-3, 2e-3);
}

TEST(ScatterAdd, Errors) {
  Tensor x = terra::zeros({4, 5});
  Tensor src = terra::ones({4, 5});
  tt::expect_error(
      [&] {
        terra::scatter_add(x, 0, tt::ints({4}, {1, 1}), src);
      },
      {"[terra::scatter_add]", "index 4", "dim 0", "[0, 4)"});
  tt::expect_error([&] { terra::scatter_add(x, 1, tt::ints({-1}, {1, 1}), src); }, {"index -1"});
  tt::expect_error(
      [&] {
        terra::scatter_add(x, 0, tt::ints({0}, {1, 1}), src.to(DType::Float64));
      },
      {"src of dtype float64", "float32"});
  tt::expect_error(
      [&] {
        terra::scatter_add(x, 0, terra::zeros({5, 6}, {.dtype = DType::Int64}), src);
      },
      {"larger", "[5, 6]"});
  tt::expect_error(
      [&] {
        terra::scatter_add(x, 1, terra::zeros({2, 3}, {.dtype = DType::Int64}),
                           terra::ones({2, 2}));
      },
      {"larger than the src", "[2, 2]"});
  tt::expect_error([&] { terra::scatter_add(x, 0, tt::ints({0, 1}), src); }, {"rank"});
  tt::expect_error(
      [&] {
        terra::scatter_add(x, 0, terra::zeros({1, 1}), src);
      },
      {"int64 or int32"});
}

// ---- masked_select ----
TEST(MaskedSelect, BroadcastLayoutsEmpty) {
  struct Case {
    Shape xs, ms;
  };
  for (const Case& k : {Case{{3, 4}, {3, 4}}, Case{{3, 4}, {4}}, Case{{3, 4}, {3, 1}},
                        Case{{1, 4}, {3, 4}}, Case{{2, 3, 4}, {3, 1}}, Case{{5}, {}}}) {
    for (DType dt : {DType::Float32, DType::Float64, DType::Int64}) {
      Tensor x = tt::random(k.xs, dt, 41, -9, 9);
      Tensor m = tt::random(k.ms, DType::Bool, 42);
      Shape s = terra::broadcast_shapes(k.xs, k.ms, "test");
      Tensor xb = x.expand(s).contiguous(), mb = m.expand(s).contiguous();
      std::vector<double> expect;
      auto xv = tt::f64(xb), mv = tt::f64(mb);
      for (size_t i = 0; i < xv.size(); ++i)
        if (mv[i] != 0) expect.push_back(xv[i]);
      for (const Tensor& xl : tt::layouts(x))
        for (const Tensor& ml : tt::layouts(m))
          tt::expect_close(terra::masked_select(xl, ml), {int64_t(expect.size())}, expect, 0, 0);
    }
  }
  tt::expect_close(
      terra::masked_select(terra::zeros({0, 3}), terra::ones({3}, {.dtype = DType::Bool})), {0},
      {});
  Tensor h = tt::random({4}, DType::Float16, 43);
  tt::expect_close(terra::masked_select(h, terra::ones({4}, {.dtype = DType::Bool})), {4},
                   tt::f64(h));
}

TEST(MaskedSelect, Errors) {
  tt::expect_error([&] { terra::masked_select(terra::zeros({3}), terra::ones({3})); },
                   {"[terra::masked_select]", "mask must be bool", "float32"});
  tt::expect_error(
      [&] { terra::masked_select(terra::zeros({3}), terra::ones({4}, {.dtype = DType::Bool})); },
      {"[3]", "[4]", "broadcast"});
}

// ---- one_hot ----
TEST(OneHot, InferredAndExplicitClasses) {
  for (DType it : {DType::Int64, DType::Int32}) {
    Tensor idx = tt::ints({2, 0, 3, 1, 3, 0}, {2, 3}, it);
    auto v = idx.to_vector<int64_t>();
    for (int64_t nc : {int64_t(-1), int64_t(6)}) {
      int64_t n = nc < 0 ? 4 : nc;
      std::vector<double> expect(v.size() * size_t(n), 0.0);
      for (size_t i = 0; i < v.size(); ++i) expect[i * size_t(n) + size_t(v[i])] = 1;
      for (const Tensor& il : tt::layouts(idx)) {
        Tensor y = terra::one_hot(il, nc);
        EXPECT_EQ(y.dtype(), DType::Int64);
        tt::expect_close(y, {2, 3, n}, expect, 0, 0);
      }
    }
  }
  tt::expect_close(terra::one_hot(terra::full({}, 1, {.dtype = DType::Int64}), 3), {3}, {0, 1, 0});
  tt::expect_close(terra::one_hot(tt::ints({}), 3), {0, 3}, {});
}

TEST(OneHot, Errors) {
  tt::expect_error(
      [&] {
        terra::one_hot(tt::ints({0, 3}), 3);
      },
      {"[terra::one_hot]", "class value 3", "num_classes 3", "[0, 3)"});
  tt::expect_error([&] { terra::one_hot(tt::ints({0, -1}), 3); }, {"class value -1"});
  tt::expect_error([&] { terra::one_hot(tt::ints({0, -1})); }, {"non-negative", "-1"});
  tt::expect_error([&] { terra::one_hot(tt::ints({})); }, {"empty"});
  tt::expect_error([&] { terra::one_hot(terra::zeros({2})); }, {"int64 or int32", "float32"});
  tt::expect_error([&] { terra::one_hot(tt::ints({0}), -2); }, {"num_classes", "-2"});
}

// ---- embedding (composed from index_select) ----
TEST(Embedding, ShapesAndErrors) {
  Tensor w = tt::random({10, 4}, DType::Float32, 51);
  Tensor idx = tt::ints({3, 9, 0, 3, 1, 2}, {2, 3});
  auto wv = tt::f64(w);
  std::vector<double> expect;
  for (int64_t i : idx.to_vector<int64_t>())
    for (int64_t j = 0; j < 4; ++j) expect.push_back(wv[size_t(i * 4 + j)]);
  for (const Tensor& il : tt::layouts(idx))
    tt::expect_close(terra::embedding(w, il), {2, 3, 4}, expect, 0, 0);
  tt::expect_close(terra::embedding(w.t().contiguous().t(), idx.to(DType::Int32)), {2, 3, 4},
                   expect, 0, 0);
  tt::expect_close(terra::embedding(w, terra::full({}, 9, {.dtype = DType::Int64})), {4},
                   {wv[36], wv[37], wv[38], wv[39]}, 0, 0);
  tt::expect_close(terra::embedding(w, tt::ints({}, {0, 2})), {0, 2, 4}, {});
  tt::expect_error([&] { terra::embedding(w, tt::ints({1, 10})); }, {"index 10", "[0, 10)"});
  tt::expect_error([&] { terra::embedding(w, tt::ints({-3})); }, {"index -3", "[0, 10)"});
  tt::expect_error([&] { terra::embedding(terra::zeros({10}), tt::ints({1})); },
                   {"[terra::embedding]", "2-D", "[10]"});
  tt::expect_error([&] { terra::embedding(w, terra::zeros({1})); }, {"int64 or int32"});
}

}  // namespace
