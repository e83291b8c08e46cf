// Tests of matmul, mm, bmm and linear against float64 references computed with plain loops.
#include "op_test.hpp"

namespace {

using terra::DType;
using terra::Shape;
using terra::Tensor;

TERRA_COVERS("matmul", "linear");

// torch.matmul on float64 values, with plain loops.
std::vector<double> ref_matmul(const Tensor& ta, const Tensor& tb, Shape* out_shape) {
  std::vector<double> a = tt::f64(ta), b = tt::f64(tb);
  Shape sa = ta.shape(), sb = tb.shape();
  bool av = sa.size() == 1, bv = sb.size() == 1;
  if (av) sa.insert(sa.begin(), 1);
  if (bv) sb.push_back(1);
  int64_t m = sa[sa.size() - 2], k = sa.back(), n = sb.back();
  Shape ba(sa.begin(), sa.end() - 2), bb(sb.begin(), sb.end() - 2);
  size_t r = std::max(ba.size(), bb.size());
  while (ba.size() < r) ba.insert(ba.begin(), 1);
  while (bb.size() < r) bb.insert(bb.begin(), 1);
  Shape batch(r);
  for (size_t i = 0; i < r; ++i) batch[i] = ba[i] == 1 ? bb[i] : ba[i];
  int64_t nb = terra::numel_of(batch);
  std::vector<double> out(size_t(nb * m * n), 0.0);
  for (int64_t bi = 0; bi < nb; ++bi) {
    int64_t rem = bi, oa = 0, ob = 0, sta = 1, stb = 1;
    for (size_t d = r; d-- > 0;) {
      int64_t i = rem % batch[d];
      rem /= batch[d];
      oa += (ba[d] == 1 ? 0 : i) * sta;
      ob += (bb[d] == 1 ? 0 : i) * stb;
      sta *= ba[d];
      stb *= bb[d];
    }
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) s += a[(oa * m + i) * k + p] * b[(ob * k + p) * n + j];
        out[(bi * m + i) * n + j] = s;
      }
  }
  *out_shape = batch;
  if (!av) out_shape->push_back(m);
  if (!bv) out_shape->push_back(n);
  return out;
}

// Rounding error of a k-term dot product of values in [-2, 2] grows with k: the absolute
// tolerance scales with it.
void check_matmul(const Tensor& a, const Tensor& b, double rtol, const std::string& what) {
  Shape s;
  std::vector<double> want = ref_matmul(a, b, &s);
  Tensor got = terra::matmul(a, b);
  EXPECT_EQ(got.dtype(), terra::promote_types(a.dtype(), b.dtype())) << what;
  double atol = rtol * 4 * double(a.shape().back() + 1);
  tt::expect_close(got, s, want, rtol, atol, what);
}

const std::vector<std::pair<Shape, Shape>> kShapes = {
    {{3}, {3}},
    {{2, 3}, {3}},
    {{3}, {3, 4}},
    {{5, 3}, {3, 4}},
    {{2, 1, 5, 3}, {4, 3, 6}},
    {{4, 5, 3}, {3}},
    {{3}, {2, 3, 4}},
    {{2, 5, 3}, {3, 4}},
    {{1, 3}, {2, 3, 4}},
    {{2, 3, 4}, {2, 4, 5}},
    {{0, 3}, {3, 4}},
    {{0, 2, 3}, {3, 2}},
    {{1}, {1}},
    {{6, 1}, {1, 7}},
};

TEST(MatMul, ShapesAndLayoutsFloat) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    uint32_t seed = 1;
    for (const auto& [sa, sb] : kShapes) {
      Tensor a = tt::random(sa, dt, seed++), b = tt::random(sb, dt, seed++);
      int la = 0;
      for (const Tensor& va : tt::layouts(a)) {
        int lb = 0;
        for (const Tensor& vb : tt::layouts(b))
          check_matmul(va, vb, tt::rtol_of(dt) * 10,
                       terra::shape_str(sa) + " @ " + terra::shape_str(sb) + " " +
                           terra::dtype_name(dt) + " layouts " + std::to_string(la) + "," +
                           std::to_string(lb++));
        ++la;
      }
    }
  }
}

// Operands with an inner dim of 0 are made as transposed views of [0, n] tensors: the core's
// is_contiguous() rejects fresh [n, 0] tensors (reported), which factories and to_vector need.
TEST(MatMul, EmptyInnerDimGivesZeros) {
  for (DType dt : {DType::Float32, DType::Float64, DType::Int64}) {
    Tensor a = terra::ones({0, 3}, {.dtype = dt}).t(), b = terra::ones({0, 2}, {.dtype = dt});
    tt::expect_close(terra::matmul(a, b), {3, 2}, std::vector<double>(6, 0.0));
    Tensor ab = terra::ones({0, 2, 3}, {.dtype = dt}).permute({1, 2, 0});  // [2, 3, 0]
    tt::expect_close(terra::matmul(ab, b), {2, 3, 2}, std::vector<double>(12, 0.0));
    tt::expect_close(
        terra::matmul(terra::ones({0}, {.dtype = dt}), terra::ones({0}, {.dtype = dt})), {}, {0.0});
  }
}

TEST(MatMul, TransposedAndStridedViews) {
  // Transposed operands go to BLAS with Trans flags; the sliced ones need a copy.
  Tensor at = tt::random({40, 30}, DType::Float32, 7), bt = tt::random({50, 40}, DType::Float32, 8);
  check_matmul(at.t(), bt.t(), 1e-5, "a.t() @ b.t()");
  check_matmul(at.t(), tt::random({40, 20}, DType::Float32, 9), 1e-5, "a.t() @ b");
  Tensor big = tt::random({2, 30, 80}, DType::Float64, 10);
  check_matmul(big.slice(2, 0, 80, 2).transpose(1, 2), tt::random({30, 6}, DType::Float64, 11),
               1e-12, "strided transposed batch");
  Tensor e = tt::random({1, 4}, DType::Float32, 12).expand({3, 4});
  check_matmul(e, tt::random({4, 5}, DType::Float32, 13), 1e-5, "expanded rows");
  Tensor eb = tt::random({1, 4, 5}, DType::Float32, 14).expand({6, 4, 5});
  check_matmul(tt::random({6, 3, 4}, DType::Float32, 15), eb, 1e-5, "expanded batch");
  Tensor tb = tt::random({3, 7, 4}, DType::Float32, 16).transpose(1, 2);  // [3, 4, 7]
  check_matmul(tt::random({3, 4}, DType::Float32, 17), tb, 1e-5, "broadcast a, transposed b");
}

TEST(MatMul, LargerThanOneBlock) {
  // k > 256 and several row blocks: exercises the panel loop of the built-in gemm.
  check_matmul(tt::random({37, 300}, DType::Float32, 20), tt::random({300, 45}, DType::Float32, 21),
               1e-5, "float 37x300x45");
  Tensor ai = tt::random({37, 300}, DType::Int64, 22, -5, 5);
  Tensor bi = tt::random({300, 45}, DType::Int64, 23, -5, 5);
  check_matmul(ai, bi, 0, "int64 37x300x45");
  check_matmul(tt::random({70, 130}, DType::Float64, 24).t(),
               tt::random({70, 90}, DType::Float64, 25), 1e-12, "float64 transposed 130x70x90");
}

TEST(MatMul, Integers) {
  for (DType dt : {DType::Int32, DType::Int64}) {
    Tensor a = tt::random({2, 3, 5}, dt, 30, -4, 4), b = tt::random({5, 4}, dt, 31, -4, 4);
    for (const Tensor& va : tt::layouts(a)) check_matmul(va, b, 0, "int batched");
    check_matmul(tt::random({5}, dt, 32, -4, 4), tt::random({5}, dt, 33, -4, 4), 0, "int dot");
  }
}

TEST(MatMul, MixedDtypesPromote) {
  Tensor a = tt::random({3, 4}, DType::Int32, 40), b = tt::random({4, 2}, DType::Float32, 41);
  check_matmul(a, b, 1e-5, "int32 @ float32");
  check_matmul(b.t(), tt::random({4, 5}, DType::Float64, 42), 1e-6, "float32 @ float64");
}

TEST(MatMul, Float16AndBFloat16) {
  Tensor a = tt::random({2, 4, 8}, DType::Float16, 50), b = tt::random({8, 3}, DType::Float16, 51);
  Tensor r = terra::matmul(a, b);
  EXPECT_EQ(r.dtype(), DType::Float16);
  Shape s;
  tt::expect_close(r, {2, 4, 3}, ref_matmul(a, b, &s), 4e-3, 1e-2);
  Tensor c = tt::random({3, 8}, DType::BFloat16, 52), d = tt::random({8}, DType::BFloat16, 53);
  tt::expect_close(terra::matmul(c, d), {3}, ref_matmul(c, d, &s), 2e-2, 5e-2);
}

TEST(MatMul, MmBmmAndMethod) {
  Tensor a = tt::random({4, 3}), b = tt::random({3, 5}, DType::Float32, 2);
  Shape s;
  tt::expect_close(terra::mm(a, b), {4, 5}, ref_matmul(a, b, &s));
  tt::expect_close(a.matmul(b), {4, 5}, ref_matmul(a, b, &s));
  Tensor x = tt::random({2, 4, 3}, DType::Float64, 3), y = tt::random({2, 3, 5}, DType::Float64, 4);
  tt::expect_close(terra::bmm(x, y), {2, 4, 5}, ref_matmul(x, y, &s), 1e-12, 1e-12);
}

TEST(MatMul, Errors) {
  tt::expect_error(
      [] {
        terra::matmul(terra::ones({2, 3}), terra::ones({4, 5}));
      },
      {"[terra::matmul] shapes [2, 3] and [4, 5] cannot be multiplied"});
  tt::expect_error([] { terra::matmul(terra::ones({3}), terra::ones({4})); },
                   {"[terra::matmul] shapes [3] and [4] cannot be multiplied"});
  tt::expect_error([] { terra::matmul(terra::ones({}), terra::ones({3})); },
                   {"[terra::matmul]", "at least 1 dim", "[]"});
  tt::expect_error(
      [] {
        terra::matmul(terra::ones({2, 2, 3}), terra::ones({3, 3, 4}));
      },
      {"[terra::matmul]", "batch dims", "[2, 2, 3]", "[3, 3, 4]"});
  tt::expect_error(
      [] {
        terra::matmul(terra::ones({2, 2}, {.dtype = DType::Bool}),
                      terra::ones({2, 2}, {.dtype = DType::Bool}));
      },
      {"[terra::matmul]", "bool"});
  tt::expect_error(
      [] {
        terra::mm(terra::ones({2, 2, 3}), terra::ones({3, 4}));
      },
      {"[terra::mm]", "2-D", "[2, 2, 3]"});
  tt::expect_error(
      [] {
        terra::mm(terra::ones({2, 3}), terra::ones({4, 5}));
      },
      {"[terra::matmul] shapes [2, 3] and [4, 5] cannot be multiplied"});
  tt::expect_error(
      [] {
        terra::bmm(terra::ones({2, 3}), terra::ones({2, 3, 4}));
      },
      {"[terra::bmm]", "3-D", "[2, 3]"});
  tt::expect_error(
      [] {
        terra::bmm(terra::ones({2, 2, 3}), terra::ones({1, 3, 4}));
      },
      {"[terra::bmm]", "batch sizes differ", "[2, 2, 3]", "[1, 3, 4]"});
}

// linear(x, w, b) with plain loops: x [rows, in] @ w^T + b.
std::vector<double> ref_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  auto values = [](const Tensor& t) {
    return t.defined() && t.numel() ? tt::f64(t) : std::vector<double>();
  };
  std::vector<double> xv = values(x), wv = values(w), bv = values(b);
  int64_t o = w.shape()[0], in = w.shape()[1], rows = in ? x.numel() / in : 0;
  if (!in) rows = terra::numel_of(Shape(x.shape().begin(), x.shape().end() - 1));
  std::vector<double> out(size_t(rows * o));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < o; ++j) {
      double s = b.defined() ? bv[j] : 0.0;
      for (int64_t p = 0; p < in; ++p) s += xv[r * in + p] * wv[j * in + p];
      out[r * o + j] = s;
    }
  return out;
}

void check_linear(const Tensor& x, const Tensor& w, const Tensor& b, double rtol,
                  const std::string& what) {
  Shape s = x.shape();
  s.back() = w.shape()[0];
  tt::expect_close(terra::linear(x, w, b), s, ref_linear(x, w, b), rtol, rtol, what);
}

TEST(Linear, ShapesLayoutsBias) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    double tol = tt::rtol_of(dt) * 10;
    for (Shape xs : {Shape{5}, Shape{4, 5}, Shape{2, 3, 5}, Shape{0, 5}}) {
      Tensor x = tt::random(xs, dt, 60), w = tt::random({6, 5}, dt, 61),
             b = tt::random({6}, dt, 62);
      for (const Tensor& vx : tt::layouts(x)) {
        for (const Tensor& vw : tt::layouts(w)) {
          check_linear(vx, vw, b, tol, "with bias " + terra::shape_str(xs));
          check_linear(vx, vw, Tensor(), tol, "no bias " + terra::shape_str(xs));
        }
      }
    }
    Tensor b = tt::random({3}, dt, 63);
    check_linear(terra::zeros({0, 4}, {.dtype = dt}).t(), terra::zeros({0, 3}, {.dtype = dt}).t(),
                 b, tol, "in = 0 gives bias");
    check_linear(tt::random({3, 4, 5}, dt, 66).transpose(0, 1), tt::random({7, 5}, dt, 67),
                 tt::random({7}, dt, 68), tol, "rows do not merge");
    check_linear(tt::random({4, 6}, dt, 69), tt::random({6, 3}, dt, 70).t(), b, tol, "w.t()");
  }
}

TEST(Linear, IntegersMixedAndHalf) {
  Tensor x = tt::random({3, 4}, DType::Int64, 80), w = tt::random({2, 4}, DType::Int64, 81);
  check_linear(x, w, tt::random({2}, DType::Int64, 82), 0, "int64");
  Tensor r = terra::linear(x, tt::random({2, 4}, DType::Float32, 83));
  EXPECT_EQ(r.dtype(), DType::Float32);
  Tensor h = tt::random({3, 8}, DType::Float16, 84), hw = tt::random({2, 8}, DType::Float16, 85);
  Tensor hb = tt::random({2}, DType::Float16, 86);
  EXPECT_EQ(terra::linear(h, hw, hb).dtype(), DType::Float16);
  check_linear(h, hw, hb, 4e-3, "float16");
}

TEST(Linear, Errors) {
  tt::expect_error(
      [] {
        terra::linear(terra::ones({3, 4}), terra::ones({4}));
      },
      {"[terra::linear]", "2-D", "[4]"});
  tt::expect_error(
      [] {
        terra::linear(terra::ones({3, 4}), terra::ones({2, 5}));
      },
      {"[terra::linear]", "[3, 4]", "[2, 5]"});
  tt::expect_error(
      [] {
        terra::linear(terra::ones({}), terra::ones({2, 5}));
      },
      {"[terra::linear]", "[]", "[2, 5]"});
  tt::expect_error(
      [] {
        terra::linear(terra::ones({3, 4}), terra::ones({2, 4}), terra::ones({3}));
      },
      {"[terra::linear]", "bias", "[3]", "[2, 4]"});
  tt::expect_error(
      [] {
        terra::linear(terra::ones({3, 4}, {.dtype = DType::Bool}),
                      terra::ones({2, 4}, {.dtype = DType::Bool}));
      },
      {"[terra::linear]", "bool"});
}

}  // namespace
