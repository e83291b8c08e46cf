// cumsum, sort/argsort and topk against float64 references computed with plain loops.
#include <algorithm>
#include <limits>
#include <numeric>

#include "op_test.hpp"

namespace {

using terra::DType;
using terra::Shape;
using terra::Tensor;

TERRA_COVERS("cumsum", "sort", "topk");

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// x's elements as rows along dim: rows ordered by (outer, inner) index, as the outputs are.
struct Rows {
  int64_t m = 1, n = 1, i = 1;
  std::vector<std::vector<double>> rows;
};
Rows rows_of(const Tensor& x, int64_t dim) {
  Rows r;
  std::vector<double> v = tt::f64(x);
  int64_t rank = x.dim(), d = dim < 0 ? dim + std::max<int64_t>(rank, 1) : dim;
  for (int64_t k = 0; k < rank; ++k) (k < d ? r.m : k > d ? r.i : r.n) *= x.shape()[k];
  for (int64_t a = 0; a < r.m; ++a)
    for (int64_t b = 0; b < r.i; ++b) {
      std::vector<double> row;
      for (int64_t j = 0; j < r.n; ++j) row.push_back(v[size_t((a * r.n + j) * r.i + b)]);
      r.rows.push_back(row);
    }
  return r;
}
// Rows (each of length len) back into row-major order of a tensor with that dim of size len.
std::vector<double> unrows(const Rows& r, const std::vector<std::vector<double>>& rows,
                           int64_t len) {
  std::vector<double> out(size_t(r.m * len * r.i));
  for (int64_t a = 0; a < r.m; ++a)
    for (int64_t b = 0; b < r.i; ++b)
      for (int64_t j = 0; j < len; ++j)
        out[size_t((a * len + j) * r.i + b)] = rows[size_t(a * r.i + b)][size_t(j)];
  return out;
}

// Stable order of a row (NaN largest); returns the indices.
std::vector<double> ref_order(const std::vector<double>& row, bool descending) {
  std::vector<int64_t> idx(row.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto key = [](double v) { return std::isnan(v) ? std::numeric_limits<double>::infinity() : v; };
  auto nan_rank = [](double v) { return std::isnan(v) ? 1 : 0; };
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    double ka = key(row[a]), kb = key(row[b]);
    if (ka != kb) return descending ? ka > kb : ka < kb;
    return descending ? nan_rank(row[a]) > nan_rank(row[b]) : nan_rank(row[a]) < nan_rank(row[b]);
  });
  return std::vector<double>(idx.begin(), idx.end());
}
std::vector<double> pick(const std::vector<double>& row, const std::vector<double>& idx) {
  std::vector<double> out;
  for (double i : idx) out.push_back(row[size_t(i)]);
  return out;
}

const std::vector<Shape>& shapes() {
  static const std::vector<Shape> s = {{7}, {3, 5}, {4, 3, 6}, {2, 1, 9}, {40, 300}};
  return s;
}

TEST(Sort, Cumsum) {
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::Int32, DType::Bool}) {
    for (const Shape& s : shapes()) {
      Tensor x0 = tt::random(s, dt, 4);
      for (int64_t d = -1; d < int64_t(s.size()); ++d) {
        Rows r = rows_of(x0, d);
        std::vector<std::vector<double>> out;
        for (const auto& row : r.rows) {
          double acc = 0;
          std::vector<double> c;
          for (double v : row) c.push_back(acc += v);
          out.push_back(c);
        }
        auto expect = unrows(r, out, r.n);
        for (const Tensor& x : tt::layouts(x0)) {
          Tensor y = terra::cumsum(x, d);
          bool fl = terra::is_floating(dt);
          EXPECT_EQ(y.dtype(), fl ? dt : DType::Int64);
          double rt = fl ? tt::rtol_of(dt) * 4 : 0, at = dt == DType::Float16 ? 0.05 : 1e-5;
          tt::expect_close(y, s, expect, rt, fl ? at : 0, "cumsum");
        }
      }
    }
  }
  tt::expect_close(terra::cumsum(terra::full({}, 3.0), 0), {}, {3});
  tt::expect_close(terra::cumsum(terra::full({}, 3.0), -1), {}, {3});
  tt::expect_close(terra::cumsum(terra::zeros({0, 4}), 1), {0, 4}, {});
  // Shapes only where a zero-size dim is not the first (the core's contiguity check rejects
  // those tensors today, so their values cannot be read back).
  EXPECT_EQ(terra::cumsum(Tensor::empty({2, 0}), 1).shape(), (Shape{2, 0}));
  tt::expect_error([] { terra::cumsum(terra::zeros({2, 3}), 2); }, {"[terra::cumsum]", "dim 2"});
  tt::expect_error([] { terra::cumsum(terra::full({}, 1.0), 1); }, {"[terra::cumsum]", "dim 1"});
}

// Integer-valued inputs (many ties) check stability; floats check the values.
TEST(Sort, SortAndArgsort) {
  for (DType dt : {DType::Float32, DType::Float64, DType::Int32, DType::Int64, DType::Float16}) {
    for (const Shape& s : shapes()) {
      Tensor x0 = tt::random(s, dt, 6, -3, 3);
      for (int64_t d = -1; d < int64_t(s.size()); ++d)
        for (bool desc : {false, true}) {
          Rows r = rows_of(x0, d);
          std::vector<std::vector<double>> vals, idxs;
          for (const auto& row : r.rows) {
            idxs.push_back(ref_order(row, desc));
            vals.push_back(pick(row, idxs.back()));
          }
          for (const Tensor& x : tt::layouts(x0)) {
            auto [v, i] = terra::sort(x, d, desc);
            EXPECT_EQ(v.dtype(), dt);
            EXPECT_EQ(i.dtype(), DType::Int64);
            tt::expect_close(v, s, unrows(r, vals, r.n), 0, 0, "sort values");
            tt::expect_close(i, s, unrows(r, idxs, r.n), 0, 0, "sort indices");
            tt::expect_close(terra::argsort(x, d, desc), s, unrows(r, idxs, r.n), 0, 0, "argsort");
          }
        }
    }
  }
}

TEST(Sort, SortNaNBoolZeroDimEmpty) {
  Tensor x = terra::tensor(std::vector<double>{3, kNaN, 1, kNaN, -1, 1});
  auto [v, i] = terra::sort(x);
  tt::expect_close(v, {6}, {-1, 1, 1, 3, kNaN, kNaN});
  tt::expect_close(i, {6}, {4, 2, 5, 0, 1, 3});
  auto [w, j] = terra::sort(x.to(DType::Float32), 0, true);
  tt::expect_close(w, {6}, {kNaN, kNaN, 3, 1, 1, -1});
  tt::expect_close(j, {6}, {1, 3, 0, 2, 5, 4});
  Tensor b = terra::tensor(std::vector<bool>{true, false, true, false});
  tt::expect_close(terra::sort(b).first, {4}, {0, 0, 1, 1});
  tt::expect_close(terra::argsort(b, 0, true), {4}, {0, 2, 1, 3});
  auto [sv, si] = terra::sort(terra::full({}, 2.0));
  tt::expect_close(sv, {}, {2});
  tt::expect_close(si, {}, {0});
  EXPECT_EQ(terra::sort(Tensor::empty({3, 0}), 1).second.shape(), (Shape{3, 0}));
  tt::expect_close(terra::sort(terra::zeros({0, 3}), 1).first, {0, 3}, {});
  tt::expect_error([] { terra::sort(terra::zeros({2, 3}), 2); }, {"[terra::sort]", "dim 2"});
  tt::expect_error([] { terra::argsort(terra::zeros({2, 3}), -3); }, {"[terra::sort]", "dim -3"});
}

TEST(Sort, Topk) {
  for (DType dt : {DType::Float32, DType::Float64, DType::Int32, DType::Float16}) {
    for (const Shape& s : shapes()) {
      Tensor x0 = tt::random(s, dt, 8, -3, 3);
      for (int64_t d = -1; d < int64_t(s.size()); ++d) {
        Rows r = rows_of(x0, d);
        for (int64_t k : {int64_t(0), int64_t(1), r.n / 2, r.n})
          for (bool largest : {true, false}) {
            std::vector<std::vector<double>> vals, idxs, uvals, uidxs;
            for (const auto& row : r.rows) {
              auto o = ref_order(row, largest);
              o.resize(size_t(k));
              idxs.push_back(o);
              vals.push_back(pick(row, o));
              std::sort(o.begin(), o.end());  // sorted = false: index order
              uidxs.push_back(o);
              uvals.push_back(pick(row, o));
            }
            Shape os = s;
            os[size_t(d < 0 ? d + int64_t(s.size()) : d)] = k;
            for (const Tensor& x : tt::layouts(x0)) {
              auto [v, i] = terra::topk(x, k, d, largest);
              if (k == 0) {  // values unreadable: see Sort.Cumsum
                EXPECT_EQ(v.shape(), os);
                EXPECT_EQ(i.shape(), os);
                continue;
              }
              tt::expect_close(v, os, unrows(r, vals, k), 0, 0, "topk values");
              tt::expect_close(i, os, unrows(r, idxs, k), 0, 0, "topk indices");
              auto [uv, ui] = terra::topk(x, k, d, largest, false);
              tt::expect_close(uv, os, unrows(r, uvals, k), 0, 0, "topk unsorted values");
              tt::expect_close(ui, os, unrows(r, uidxs, k), 0, 0, "topk unsorted indices");
            }
          }
      }
    }
  }
}

TEST(Sort, TopkEdgesAndErrors) {
  Tensor x = terra::tensor(std::vector<double>{1, kNaN, 5, 5, -2});
  auto [v, i] = terra::topk(x, 3);
  tt::expect_close(v, {3}, {kNaN, 5, 5});
  tt::expect_close(i, {3}, {1, 2, 3});
  auto [w, j] = terra::topk(x, 2, 0, false);
  tt::expect_close(w, {2}, {-2, 1});
  tt::expect_close(j, {2}, {4, 0});
  auto [sv, si] = terra::topk(terra::full({}, 4.0), 1);
  tt::expect_close(sv, {}, {4});
  tt::expect_close(si, {}, {0});
  tt::expect_close(terra::topk(terra::zeros({0, 5}), 2).first, {0, 2}, {});
  EXPECT_EQ(terra::topk(Tensor::empty({3, 0}), 0, 1).second.shape(), (Shape{3, 0}));
  Tensor y = terra::zeros({2, 5});
  tt::expect_error([&] { terra::topk(y, 6); }, {"[terra::topk]", "k 6", "size 5"});
  tt::expect_error([&] { terra::topk(y, -1, 0); }, {"[terra::topk]", "k -1", "size 2"});
  tt::expect_error([&] { terra::topk(y, 1, 2); }, {"[terra::topk]", "dim 2"});
  tt::expect_error([] { terra::topk(terra::full({}, 1.0), 2); }, {"[terra::topk]", "k 2", "0-d"});
}

// Large rows run in parallel; compare against the reference on a bigger input.
TEST(Sort, LargeInputs) {
  Tensor x = tt::random({64, 2000}, DType::Float32, 12);
  for (int64_t d : {0, 1}) {
    Rows r = rows_of(x, d);
    std::vector<std::vector<double>> vals, idxs, top;
    for (const auto& row : r.rows) {
      idxs.push_back(ref_order(row, true));
      vals.push_back(pick(row, idxs.back()));
      top.push_back(std::vector<double>(vals.back().begin(), vals.back().begin() + 10));
    }
    tt::expect_close(terra::sort(x, d, true).first, x.shape(), unrows(r, vals, r.n), 0, 0);
    tt::expect_close(terra::argsort(x, d, true), x.shape(), unrows(r, idxs, r.n), 0, 0);
    Shape ts = x.shape();
    ts[size_t(d)] = 10;
    tt::expect_close(terra::topk(x, 10, d).first, ts, unrows(r, top, 10), 0, 0);
  }
  Tensor ones = terra::full({1, 300000}, 1.0);
  tt::expect_close(terra::cumsum(ones, 1).slice(1, 299999, 300000), {1, 1}, {300000});
}

}  // namespace
