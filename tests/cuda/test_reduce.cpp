// CUDA reductions, cumsum/sort/topk and softmax/log_softmax/layer_norm against the CPU kernels:
// several shapes and dims, keepdim, strided device inputs, 16-bit floats, empty tensors and
// zero-size extents, NaN and tie-breaking, and the error messages.
#include <cmath>
#include <limits>
#include <sstream>

#include "cuda/cuda_test.hpp"

namespace tr = terra;
using tr::Dims;
using tr::DType;
using tr::Shape;
using tr::Tensor;

namespace {

const tr::Device kCpu = tr::Device::cpu();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();


double tol_of(DType dt) { return dt == DType::Float32 ? 2e-5 : tt::rtol_of(dt); }

// A device result against the CPU's: same shape, dtype and device, values within rtol/atol.
void expect_same(const Tensor& gpu, const Tensor& cpu, double rtol, const std::string& what) {
  EXPECT_EQ(gpu.device(), tt::kCuda) << what;
  EXPECT_EQ(gpu.dtype(), cpu.dtype()) << what;
  tt::expect_close(gpu.to(kCpu), cpu.shape(), tt::f64(cpu), rtol, rtol, what);
}

std::string describe(const char* op, const Tensor& x, const Dims& dims, bool keepdim) {
  std::ostringstream s;
  s << op << " of " << x.shape() << " " << x.dtype() << " dims " << Shape(dims.begin(), dims.end())
    << " keepdim " << keepdim << " strides " << x.strides();
  return s.str();
}

using Reduce = std::function<Tensor(const Tensor&, const Dims&, bool)>;

// op on every device layout of x, for every dims list and keepdim, against the CPU.
void check_reduce(const char* name, const Reduce& op, const Tensor& x, std::vector<Dims> dims_list,
                  double rtol) {
  for (const Dims& dims : dims_list)
    for (bool keepdim : {false, true}) {
      Tensor expect = op(x, dims, keepdim);
      for (const Tensor& d : tt::device_layouts(x))
        expect_same(op(d, dims, keepdim), expect, rtol, describe(name, d, dims, keepdim));
    }
}

const std::vector<Dims> kDims3 = {{}, {0}, {1}, {-1}, {0, 2}, {1, 2}, {2, 0, 1}};

}  // namespace

TERRA_COVERS("sum", "mean", "prod", "amax", "amin", "var", "logsumexp", "max", "min", "argmax",
             "argmin", "cumsum", "sort", "topk", "softmax", "log_softmax", "layer_norm");

TEST(CudaReduce, SumProdOverDimsLayoutsAndDtypes) {
  TERRA_REQUIRE_GPU();
  Reduce sum = [](const Tensor& x, const Dims& d, bool k) { return tr::sum(x, d, k); };
  Reduce prod = [](const Tensor& x, const Dims& d, bool k) { return tr::prod(x, d, k); };
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64, DType::Bool}) {
    Tensor x = tt::random({3, 4, 5}, dt, 11);
    check_reduce("sum", sum, x, kDims3, tol_of(dt));
    Tensor small = tt::random({3, 4, 5}, dt, 12, 0.5, 1.5);  // products of O(1) values
    check_reduce("prod", prod, small, kDims3, tol_of(dt) * 4);
  }
}

TEST(CudaReduce, MeanVarLogsumexpOverDims) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16}) {
    Tensor x = tt::random({4, 3, 6}, dt, 21);
    check_reduce(
        "mean", [](const Tensor& x, const Dims& d, bool k) { return tr::mean(x, d, k); }, x, kDims3,
        tol_of(dt));
    check_reduce(
        "logsumexp", [](const Tensor& x, const Dims& d, bool k) { return tr::logsumexp(x, d, k); },
        x, kDims3, tol_of(dt));
    for (int64_t corr : {0, 1, 5})
      check_reduce(
          "var", [corr](const Tensor& x, const Dims& d, bool k) { return tr::var(x, d, corr, k); },
          x, kDims3, tol_of(dt) * 4);
  }
}

TEST(CudaReduce, AmaxAminAreExactWithNaN) {
  TERRA_REQUIRE_GPU();
  Reduce amax = [](const Tensor& x, const Dims& d, bool k) { return tr::amax(x, d, k); };
  Reduce amin = [](const Tensor& x, const Dims& d, bool k) { return tr::amin(x, d, k); };
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64, DType::Bool}) {
    Tensor x = tt::random({3, 4, 5}, dt, 31);
    check_reduce("amax", amax, x, kDims3, 0);
    check_reduce("amin", amin, x, kDims3, 0);
  }
  Tensor n = tr::tensor(std::vector<double>{1, kNaN, 3, -kInf, 2, 0, kNaN, kNaN}, Shape{2, 4});
  check_reduce("amax", amax, n, {{}, {0}, {1}}, 0);
  check_reduce("amin", amin, n, {{}, {0}, {1}}, 0);
}

// Indices are exact: the first of tied values, the first NaN.
TEST(CudaReduce, MaxMinArgmaxArgminTiesAndNaN) {
  TERRA_REQUIRE_GPU();
  Tensor nan =
      tr::tensor(std::vector<double>{1, kNaN, 3, kNaN, 3, 3, -1, -1, 0, -0.0, 0, 2}, Shape{3, 4});
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64, DType::Bool}) {
    // Integer-valued floats in [-2, 2): many ties along every dim.
    Tensor x = tt::random({5, 6, 7}, DType::Int64, 41).to(dt);
    std::vector<Tensor> inputs{x};
    if (tr::is_floating(dt)) inputs.push_back(nan.to(dt));
    for (const Tensor& in : inputs)
      for (int64_t dim = -1; dim < in.dim(); ++dim)
        for (bool keepdim : {false, true}) {
          auto [mv, mi] = tr::max(in, dim, keepdim);
          auto [nv, ni] = tr::min(in, dim, keepdim);
          for (const Tensor& d : tt::device_layouts(in)) {
            std::string what = describe("max/min/argmax/argmin", d, {dim}, keepdim);
            auto [gv, gi] = tr::max(d, dim, keepdim);
            expect_same(gv, mv, 0, what);
            expect_same(gi, mi, 0, what);
            auto [hv, hi] = tr::min(d, dim, keepdim);
            expect_same(hv, nv, 0, what);
            expect_same(hi, ni, 0, what);
            expect_same(tr::argmax(d, dim, keepdim), mi, 0, what);
            expect_same(tr::argmin(d, dim, keepdim), ni, 0, what);
          }
        }
    for (const Tensor& in : inputs)
      for (const Tensor& d : tt::device_layouts(in)) {
        expect_same(tr::argmax(d), tr::argmax(in), 0, describe("argmax (flat)", d, {}, false));
        expect_same(tr::argmin(d), tr::argmin(in), 0, describe("argmin (flat)", d, {}, false));
      }
  }
}

// Long extents take a whole block per output; few long rows and many short ones.
TEST(CudaReduce, LongExtentsAndManyOutputs) {
  TERRA_REQUIRE_GPU();
  Tensor big = tt::random({3, 70001}, DType::Float32, 51);
  Tensor d = big.to(tt::kCuda);
  expect_same(tr::sum(d, {1}), tr::sum(big, {1}), 2e-5, "sum of long rows");
  expect_same(tr::sum(d), tr::sum(big), 2e-5, "sum of everything");
  expect_same(tr::var(d, {1}), tr::var(big, {1}), 2e-5, "var of long rows");
  expect_same(tr::logsumexp(d, {1}), tr::logsumexp(big, {1}), 2e-5, "logsumexp of long rows");
  expect_same(std::get<1>(tr::max(d, 1)), std::get<1>(tr::max(big, 1)), 0, "argmax of long rows");
  expect_same(tr::sum(d, {0}), tr::sum(big, {0}), 2e-5, "sum of many short columns");
  Tensor ints = tt::random({200003}, DType::Int32, 52, -1000, 1000);
  expect_same(tr::sum(ints.to(tt::kCuda)), tr::sum(ints), 0, "int32 sum into int64");
}

TEST(CudaReduce, EmptyAndZeroSizeReductions) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Float32, DType::Float16, DType::Int64}) {
    Tensor e = tt::random({0, 3}, dt, 61);
    Tensor d = e.to(tt::kCuda);
    for (bool keepdim : {false, true}) {
      // Over the empty dim: the identities (sum 0, prod 1), mean NaN.
      expect_same(tr::sum(d, {0}, keepdim), tr::sum(e, {0}, keepdim), 0, "sum over an empty dim");
      expect_same(tr::prod(d, {0}, keepdim), tr::prod(e, {0}, keepdim), 0, "prod over empty");
      expect_same(tr::sum(d, {}, keepdim), tr::sum(e, {}, keepdim), 0, "sum of an empty tensor");
      // Over the non-empty dim: no outputs.
      expect_same(tr::sum(d, {1}, keepdim), tr::sum(e, {1}, keepdim), 0, "sum to an empty output");
      expect_same(tr::amax(d, {1}, keepdim), tr::amax(e, {1}, keepdim), 0, "amax, empty output");
      expect_same(std::get<1>(tr::max(d, 1, keepdim)), std::get<1>(tr::max(e, 1, keepdim)), 0,
                  "max, empty output");
      if (tr::is_floating(dt)) {
        expect_same(tr::mean(d, {0}, keepdim), tr::mean(e, {0}, keepdim), 0, "mean over empty");
        expect_same(tr::var(d, {0}, 1, keepdim), tr::var(e, {0}, 1, keepdim), 0, "var over empty");
        expect_same(tr::logsumexp(d, {0}, keepdim), tr::logsumexp(e, {0}, keepdim), 0,
                    "logsumexp over empty");
      }
    }
  }
  // A 0-d tensor reduces to itself.
  Tensor s = tr::tensor(std::vector<double>{2.5}, Shape{});
  Tensor sd = s.to(tt::kCuda);
  expect_same(tr::sum(sd), tr::sum(s), 0, "sum of a 0-d tensor");
  expect_same(tr::amax(sd, {0}, true), tr::amax(s, {0}, true), 0, "amax of a 0-d tensor");
  expect_same(tr::argmax(sd), tr::argmax(s), 0, "argmax of a 0-d tensor");
  // Logsumexp of all -inf is -inf; a row with +inf is +inf.
  Tensor inf = tr::tensor(std::vector<double>{-kInf, -kInf, 1, kInf}, Shape{2, 2});
  expect_same(tr::logsumexp(inf.to(tt::kCuda), {1}), tr::logsumexp(inf, {1}), 0, "logsumexp inf");
}

TEST(CudaReduce, ErrorsNameTheOp) {
  TERRA_REQUIRE_GPU();
  // (Made on the CPU and copied: the factories' CUDA kernels are another family.)
  Tensor e = tr::zeros({0, 3}).to(tt::kCuda);
  Tensor i = tr::zeros({2, 3}, {.dtype = DType::Int32}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::amax(e, {0}); }, {"amax", "empty extent"});
  tt::expect_error([&] { (void)tr::max(e, 0); }, {"max", "empty extent"});
  tt::expect_error([&] { (void)tr::argmin(e); }, {"argmin", "empty extent"});
  tt::expect_error([&] { (void)tr::mean(i); }, {"mean", "int32", "floating"});
  tt::expect_error([&] { (void)tr::sum(i, {2}); }, {"sum", "out of range"});
  tt::expect_error([&] { (void)tr::softmax(i, 0); }, {"softmax", "floating"});
  tt::expect_error([&] { (void)tr::topk(i, 4, 1); }, {"topk", "out of range"});
  tt::expect_error([&] { (void)tr::sort(i, 3); }, {"sort", "out of range"});
}

TEST(CudaSort, CumsumAlongEveryDim) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64, DType::Bool}) {
    Tensor x = tt::random({3, 4, 5}, dt, 71);
    for (int64_t dim = -1; dim < 3; ++dim) {
      Tensor expect = tr::cumsum(x, dim);
      for (const Tensor& d : tt::device_layouts(x))
        expect_same(tr::cumsum(d, dim), expect, tol_of(dt), describe("cumsum", d, {dim}, false));
    }
  }
  Tensor e = tr::zeros({2, 0});
  expect_same(tr::cumsum(e.to(tt::kCuda), 1), tr::cumsum(e, 1), 0, "cumsum of an empty tensor");
}

// Sort and topk are exact: values and indices as the CPU's (stable, NaN largest, -0 == +0).
TEST(CudaSort, SortAndTopkMatchTheCpuExactly) {
  TERRA_REQUIRE_GPU();
  Tensor special = tr::tensor(
      std::vector<double>{1, kNaN, -0.0, 0, -kInf, 3, kInf, kNaN, 0, -0.0, 1, -2}, Shape{2, 6});
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16, DType::Int32,
                   DType::Int64, DType::Bool}) {
    std::vector<Tensor> inputs{tt::random({4, 5, 9}, DType::Int64, 81).to(dt),  // many ties
                               tt::random({3, 37}, dt, 82)};
    if (tr::is_floating(dt)) inputs.push_back(special.to(dt));
    for (const Tensor& x : inputs)
      for (int64_t dim = 0; dim < x.dim(); ++dim)
        for (const Tensor& d : tt::device_layouts(x)) {
          for (bool desc : {false, true}) {
            auto [v, i] = tr::sort(x, dim, desc);
            auto [gv, gi] = tr::sort(d, dim, desc);
            std::string what = describe(desc ? "sort desc" : "sort", d, {dim}, false);
            expect_same(gv, v, 0, what);
            expect_same(gi, i, 0, what);
          }
          const int64_t n = x.shape()[dim];
          for (int64_t k : {int64_t(0), int64_t(1), n / 2, n})
            for (bool largest : {true, false})
              for (bool sorted : {true, false}) {
                auto [v, i] = tr::topk(x, k, dim, largest, sorted);
                auto [gv, gi] = tr::topk(d, k, dim, largest, sorted);
                std::string what = describe("topk", d, {dim, k, largest, sorted}, false);
                expect_same(gv, v, 0, what);
                expect_same(gi, i, 0, what);
              }
        }
  }
  Tensor s = tr::tensor(std::vector<double>{4}, Shape{});
  auto [v, i] = tr::sort(s.to(tt::kCuda));
  expect_same(v, tr::sort(s).first, 0, "sort of a 0-d tensor");
  expect_same(i, tr::sort(s).second, 0, "sort of a 0-d tensor");
  Tensor e = tr::zeros({3, 0});
  expect_same(tr::sort(e.to(tt::kCuda), 1).second, tr::sort(e, 1).second, 0, "sort, empty rows");
}

TEST(CudaNN, SoftmaxLogSoftmaxAlongEveryDim) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16}) {
    for (const Shape& s : {Shape{4, 33}, Shape{3, 5, 7}, Shape{2, 3000}, Shape{}}) {
      Tensor x = tt::random(s, dt, 91, -4, 4);
      for (int64_t dim = -1; dim < std::max<int64_t>(x.dim(), 1); ++dim) {
        Tensor ys = tr::softmax(x, dim), yl = tr::log_softmax(x, dim);
        for (const Tensor& d : tt::device_layouts(x)) {
          expect_same(tr::softmax(d, dim), ys, tol_of(dt), describe("softmax", d, {dim}, false));
          expect_same(tr::log_softmax(d, dim), yl, tol_of(dt),
                      describe("log_softmax", d, {dim}, false));
        }
      }
    }
  }
  // Rows with -inf, +inf and NaN: the CPU's NaN/inf results.
  Tensor sp = tr::tensor(
      std::vector<double>{-kInf, 0, 1, -kInf, -kInf, -kInf, 1, kInf, 2, kNaN, 1, 2}, Shape{4, 3});
  expect_same(tr::softmax(sp.to(tt::kCuda), 1), tr::softmax(sp, 1), 1e-6,
              "softmax of inf/NaN rows");
  expect_same(tr::log_softmax(sp.to(tt::kCuda), 1), tr::log_softmax(sp, 1), 1e-6,
              "log_softmax of inf/NaN rows");
  Tensor e = tr::zeros({0, 4});
  expect_same(tr::softmax(e.to(tt::kCuda), 1), tr::softmax(e, 1), 0, "softmax of an empty tensor");
}

TEST(CudaNN, LayerNormWithAndWithoutParams) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16}) {
    for (const Shape& ns : {Shape{7}, Shape{3, 5}, Shape{1500}}) {
      Shape s{4};
      for (int64_t n : ns) s.push_back(n);
      Tensor x = tt::random(s, dt, 101, -3, 3);
      Tensor w = tt::random(ns, dt, 102), b = tt::random(ns, dt, 103);
      for (int mode = 0; mode < 4; ++mode) {
        Tensor wc = mode & 1 ? w : Tensor(), bc = mode & 2 ? b : Tensor();
        auto [y, m, r] = tr::native_layer_norm(x, ns, wc, bc, 1e-5);
        Tensor wd = wc.defined() ? wc.to(tt::kCuda) : Tensor();
        Tensor bd = bc.defined() ? bc.to(tt::kCuda) : Tensor();
        for (const Tensor& d : tt::device_layouts(x)) {
          std::string what = describe("layer_norm", d, {mode}, false);
          auto [gy, gm, gr] = tr::native_layer_norm(d, ns, wd, bd, 1e-5);
          expect_same(gy, y, tol_of(dt) * 4, what);
          expect_same(gm, m, tol_of(dt), what + " mean");
          expect_same(gr, r, tol_of(dt), what + " rstd");
        }
      }
    }
  }
  // float32 weight with float16 input: computed in float, as the CPU.
  Tensor x = tt::random({3, 8}, DType::Float16, 104), w = tt::random({8}, DType::Float32, 105);
  expect_same(tr::layer_norm(x.to(tt::kCuda), {8}, w.to(tt::kCuda)), tr::layer_norm(x, {8}, w),
              tt::rtol_of(DType::Float16), "layer_norm with mixed dtypes");
  Tensor e = tr::zeros({0, 8});
  expect_same(tr::layer_norm(e.to(tt::kCuda), {8}), tr::layer_norm(e, {8}), 0, "layer_norm, empty");
  tt::expect_error(
      [] {
        (void)tr::layer_norm(tr::zeros({2, 3}).to(tt::kCuda), {4});
      },
      {"layer_norm", "normalized_shape"});
}
