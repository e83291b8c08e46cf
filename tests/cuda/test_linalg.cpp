// CUDA matmul, linear, conv2d (cuDNN), pooling and batch_norm (forward and backward ops)
// against the CPU kernels on the same inputs, across shapes, memory layouts and dtypes.
//
// Tolerances (CUDA vs CPU, both computing from the same stored inputs):
//   float64   rtol 1e-10, atol 1e-10: only the summation order differs.
//   float32   rtol 1e-4,  atol 1e-4 (conv: atol 1e-3: cuDNN may pick Winograd/FFT kernels).
//   float16   rtol 2e-3,  atol 2e-3: both accumulate in float32 and round once; the roundings
//             may land one ulp apart (an ulp is at most 2^-10 of the value).
//   bfloat16  rtol 1.6e-2, atol 1.6e-2: the same with bfloat16's ulp (at most 2^-7).
//   integers and max pooling: exact.
//   TF32 (set_allow_tf32(true)): each input is rounded to a 10-bit mantissa, so a product may
//   be off by up to 2^-8 * (|a| @ |b|) elementwise; the test checks that bound.
#include <array>

#include "cuda/cuda_test.hpp"

namespace tr = terra;
namespace cu = terra::cuda;
using tr::Device;
using tr::DType;
using tr::Shape;
using tr::Tensor;

namespace {

struct Tol {
  double rtol, atol;
};
Tol tol_of(DType dt, bool conv = false) {
  switch (dt) {
    case DType::Float64: return {1e-10, 1e-10};
    case DType::Float32: return {1e-4, conv ? 1e-3 : 1e-4};
    case DType::Float16: return {2e-3, 2e-3};
    case DType::BFloat16: return {1.6e-2, 1.6e-2};
    default: return {0, 0};
  }
}

const DType kFloats[] = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16};
const DType kAll[] = {DType::Float32, DType::Float64, DType::Float16,
                      DType::BFloat16, DType::Int32, DType::Int64};

// A CUDA result against the CPU's: same device placement, dtype, shape, values within tol.
void expect_same(const Tensor& gpu, const Tensor& cpu, Tol t, const std::string& what) {
  ASSERT_TRUE(gpu.defined()) << what;
  EXPECT_EQ(gpu.device(), tt::kCuda) << what;
  EXPECT_EQ(gpu.dtype(), cpu.dtype()) << what;
  tt::expect_close(gpu.to(Device::cpu()), cpu.shape(), tt::f64(cpu), t.rtol, t.atol, what);
}


std::string name(const char* what, DType dt, size_t layout = 0) {
  return std::string(what) + " " + tr::dtype_name(dt) + " layout " + std::to_string(layout);
}

// Turns TF32 on for a scope.
struct Tf32Scope {
  bool prev = cu::allow_tf32();
  Tf32Scope() { cu::set_allow_tf32(true); }
  ~Tf32Scope() { cu::set_allow_tf32(prev); }
};

}  // namespace

// ---- matmul ----
TEST(CudaLinalg, Tf32IsOffByDefault) { EXPECT_FALSE(cu::allow_tf32()); }

TEST(CudaLinalg, MatmulShapesAndDtypes) {
  TERRA_REQUIRE_GPU();
  const std::pair<Shape, Shape> cases[] = {
      {{3, 4}, {4, 5}},       {{4}, {4}},          {{4}, {4, 5}},          {{3, 4}, {4}},
      {{2, 3, 4}, {4, 5}},    {{2, 3, 4}, {2, 4, 5}}, {{2, 1, 3, 4}, {5, 4, 6}}, {{4}, {2, 4, 5}},
      {{2, 3, 4}, {4}},       {{1, 3, 4}, {2, 4, 5}}, {{3, 1, 2, 7}, {1, 4, 7, 2}},
      {{65, 33}, {33, 17}},   {{0, 3, 4}, {4, 5}},  {{3, 0}, {0, 2}},       {{2, 3, 0}, {0, 4}}};
  for (DType dt : kAll) {
    uint32_t seed = 1;
    for (const auto& [sa, sb] : cases) {
      Tensor a = tt::random(sa, dt, seed++), b = tt::random(sb, dt, seed++);
      Tensor want = tr::matmul(a, b);
      std::string what = name("matmul", dt) + " " + tr::shape_str(sa) + " @ " + tr::shape_str(sb);
      expect_same(tr::matmul(a.to(tt::kCuda), b.to(tt::kCuda)), want, tol_of(dt), what);
    }
  }
}

// Transposed and strided operands (cuBLAS reads the transposed ones in place; the others are
// copied), and batch dims broadcast through stride-0 views.
TEST(CudaLinalg, MatmulStridedOperands) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll) {
    Tensor a = tt::random({2, 3, 6, 5}, dt, 11), b = tt::random({3, 5, 4}, dt, 12);
    Tensor want = tr::matmul(a, b);
    auto la = tt::device_layouts(a), lb = tt::device_layouts(b);
    for (size_t i = 0; i < la.size(); ++i)
      for (size_t j = 0; j < lb.size(); ++j)
        expect_same(tr::matmul(la[i], lb[j]), want, tol_of(dt), name("matmul", dt, i * 10 + j));
    // matrices transposed in their last two dims
    Tensor at = a.transpose(2, 3).contiguous().to(tt::kCuda).transpose(2, 3);
    Tensor bt = b.transpose(1, 2).contiguous().to(tt::kCuda).transpose(1, 2);
    expect_same(tr::matmul(at, bt), want, tol_of(dt), name("matmul transposed", dt));
    // a batch broadcast by a stride-0 view, and a vector read with a stride
    Tensor m = tt::random({6, 5}, dt, 13);
    Tensor mx = m.to(tt::kCuda).expand({3, 6, 5});
    expect_same(tr::matmul(mx, lb[0]), tr::matmul(m.expand({3, 6, 5}).contiguous(), b),
                tol_of(dt), name("matmul expanded", dt));
    Tensor v = tt::random({5}, dt, 14);
    auto lv = tt::device_layouts(v);
    for (size_t j = 0; j < lv.size(); ++j)
      expect_same(tr::matmul(la[0], lv[j]), tr::matmul(a, v), tol_of(dt),
                  name("matmul vector", dt, j));
  }
}

TEST(CudaLinalg, MatmulMixedDtypesPromote) {
  TERRA_REQUIRE_GPU();
  Tensor a = tt::random({3, 4}, DType::Float16, 1), b = tt::random({4, 2}, DType::Float32, 2);
  Tensor got = tr::matmul(a.to(tt::kCuda), b.to(tt::kCuda));
  EXPECT_EQ(got.dtype(), DType::Float32);
  expect_same(got, tr::matmul(a, b), tol_of(DType::Float32), "f16 @ f32");
}

TEST(CudaLinalg, MatmulTf32StaysWithinItsBound) {
  TERRA_REQUIRE_GPU();
  Tensor a = tt::random({2, 64, 96}, DType::Float32, 3), b = tt::random({96, 48}, DType::Float32, 4);
  std::vector<double> want = tt::f64(tr::matmul(a, b));
  std::vector<double> bound = tt::f64(tr::matmul(a.abs(), b.abs()));
  Tf32Scope on;
  EXPECT_TRUE(cu::allow_tf32());
  std::vector<double> got = tt::f64(tr::matmul(a.to(tt::kCuda), b.to(tt::kCuda)));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], std::ldexp(bound[i], -8) + 1e-5) << "at " << i;
}

TEST(CudaLinalg, MatmulErrors) {
  TERRA_REQUIRE_GPU();
  Tensor a = tt::random({3, 4}).to(tt::kCuda), b = tt::random({5, 2}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::matmul(a, b); }, {"matmul", "cannot be multiplied"});
  Tensor c = tt::random({2, 3, 4}).to(tt::kCuda), d = tt::random({3, 4, 2}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::matmul(c, d); }, {"matmul", "cannot be broadcast"});
  Tensor e = tt::random({3, 4}, DType::Bool).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::matmul(e, e.t()); }, {"matmul", "bool"});
  tt::expect_error([&] { (void)tr::matmul(a, tt::random({4, 2})); }, {"matmul", "one device"});
}

// ---- linear ----
TEST(CudaLinalg, LinearShapesLayoutsAndDtypes) {
  TERRA_REQUIRE_GPU();
  const Shape xs[] = {{5, 4}, {2, 3, 4}, {4}, {0, 4}};
  for (DType dt : kAll) {
    Tensor w = tt::random({3, 4}, dt, 21), b = tt::random({3}, dt, 22);
    for (const Shape& s : xs) {
      Tensor x = tt::random(s, dt, 23);
      auto lx = tt::device_layouts(x), lw = tt::device_layouts(w), lb = tt::device_layouts(b);
      for (size_t i = 0; i < lx.size(); ++i) {
        std::string what = name("linear", dt, i) + " x " + tr::shape_str(s);
        expect_same(tr::linear(lx[i], lw[i % lw.size()]), tr::linear(x, w), tol_of(dt), what);
        expect_same(tr::linear(lx[i], lw[(i + 1) % lw.size()], lb[i % lb.size()]),
                    tr::linear(x, w, b), tol_of(dt), what + " with bias");
      }
    }
  }
}

TEST(CudaLinalg, LinearEmptyInnerDimGivesTheBias) {
  TERRA_REQUIRE_GPU();
  Tensor x = tt::random({2, 0}), w = tt::random({3, 0}), b = tt::random({3});
  expect_same(tr::linear(x.to(tt::kCuda), w.to(tt::kCuda), b.to(tt::kCuda)), tr::linear(x, w, b),
              tol_of(DType::Float32), "linear in=0");
  expect_same(tr::linear(x.to(tt::kCuda), w.to(tt::kCuda)), tr::linear(x, w),
              tol_of(DType::Float32), "linear in=0 no bias");
}

TEST(CudaLinalg, LinearErrors) {
  TERRA_REQUIRE_GPU();
  Tensor x = tt::random({2, 4}).to(tt::kCuda), w = tt::random({3, 5}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::linear(x, w); }, {"linear", "does not match weight"});
  Tensor w2 = tt::random({3, 4}).to(tt::kCuda), b = tt::random({4}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::linear(x, w2, b); }, {"linear", "bias of shape"});
}

// ---- conv2d ----
namespace {
struct ConvCase {
  Shape x, w;
  int64_t stride, pad, dil, groups;
};
const ConvCase kConvCases[] = {{{2, 3, 7, 6}, {4, 3, 3, 3}, 1, 1, 1, 1},
                               {{2, 4, 9, 8}, {6, 2, 3, 2}, 2, 1, 1, 2},
                               {{1, 3, 10, 9}, {2, 3, 3, 3}, 1, 2, 2, 1},
                               {{2, 4, 6, 6}, {4, 1, 3, 3}, 1, 1, 1, 4},  // depthwise
                               {{3, 5, 5}, {2, 3, 1, 1}, 1, 0, 1, 1},     // unbatched, 1x1
                               {{0, 3, 5, 5}, {2, 3, 3, 3}, 1, 1, 1, 1}}; // no images
}  // namespace

#if defined(TERRA_HAS_CUDNN)
TEST(CudaConv, Conv2dMatchesCpu) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kFloats) {
    uint32_t seed = 31;
    for (const ConvCase& k : kConvCases) {
      Tensor x = tt::random(k.x, dt, seed++), w = tt::random(k.w, dt, seed++);
      Tensor b = tt::random({k.w[0]}, dt, seed++);
      Tensor want = tr::conv2d(x, w, b, k.stride, k.pad, k.dil, k.groups);
      Tensor want_nb = tr::conv2d(x, w, {}, k.stride, k.pad, k.dil, k.groups);
      auto lx = tt::device_layouts(x);
      for (size_t i = 0; i < lx.size(); ++i) {
        std::string what = name("conv2d", dt, i) + " x " + tr::shape_str(k.x);
        Tensor wd = w.to(tt::kCuda), bd = b.to(tt::kCuda);
        expect_same(tr::conv2d(lx[i], wd, bd, k.stride, k.pad, k.dil, k.groups), want,
                    tol_of(dt, true), what);
        expect_same(tr::conv2d(lx[i], wd, {}, k.stride, k.pad, k.dil, k.groups), want_nb,
                    tol_of(dt, true), what + " no bias");
      }
    }
  }
}

TEST(CudaConv, Conv2dBackwardMatchesCpu) {
  TERRA_REQUIRE_GPU();
  const std::array<bool, 3> masks[] = {{true, true, true}, {true, false, false},
                                       {false, true, false}, {false, false, true},
                                       {false, true, true}};
  for (DType dt : kFloats) {
    uint32_t seed = 51;
    for (const ConvCase& k : kConvCases) {
      Tensor x = tt::random(k.x, dt, seed++), w = tt::random(k.w, dt, seed++);
      Tensor y = tr::conv2d(x, w, {}, k.stride, k.pad, k.dil, k.groups);
      Tensor g = tt::random(y.shape(), dt, seed++);
      for (const auto& m : masks) {
        auto want = tr::conv2d_backward(g, x, w, k.stride, k.pad, k.dil, k.groups, m);
        auto got = tr::conv2d_backward(g.to(tt::kCuda), x.to(tt::kCuda), w.to(tt::kCuda),
                                       k.stride, k.pad, k.dil, k.groups, m);
        std::string what = name("conv2d_backward", dt) + " x " + tr::shape_str(k.x) + " mask " +
                           std::to_string(m[0]) + std::to_string(m[1]) + std::to_string(m[2]);
        Tol t = tol_of(dt, true);
        if (m[0]) expect_same(std::get<0>(got), std::get<0>(want), t, what + " dx");
        if (m[1]) expect_same(std::get<1>(got), std::get<1>(want), t, what + " dw");
        if (m[2]) expect_same(std::get<2>(got), std::get<2>(want), t, what + " db");
        EXPECT_EQ(std::get<0>(got).defined(), m[0]) << what;
      }
    }
  }
}

TEST(CudaConv, Conv2dErrors) {
  TERRA_REQUIRE_GPU();
  Tensor x = tt::random({1, 3, 5, 5}).to(tt::kCuda), w = tt::random({2, 4, 3, 3}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::conv2d(x, w); }, {"conv2d", "does not match input"});
  Tensor xi = tt::random({1, 3, 5, 5}, DType::Int32).to(tt::kCuda);
  Tensor wi = tt::random({2, 3, 3, 3}, DType::Int32).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::conv2d(xi, wi); }, {"conv2d", "floating"});
}
#else
TEST(CudaConv, Conv2dNeedsCudnn) {
  TERRA_REQUIRE_GPU();
  Tensor x = tt::random({1, 3, 5, 5}).to(tt::kCuda), w = tt::random({2, 3, 3, 3}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::conv2d(x, w); }, {"conv2d", "not implemented on cuda"});
}
#endif

// ---- pooling ----
namespace {
struct PoolCase {
  Shape x;
  int64_t k, s, p, d;
  bool ceil;
};
const PoolCase kPoolCases[] = {{{2, 3, 8, 8}, 2, 2, 0, 1, false}, {{2, 2, 7, 9}, 3, 2, 1, 1, true},
                               {{3, 9, 10}, 3, 1, 1, 2, false},   {{1, 2, 5, 6}, 2, 3, 1, 1, true},
                               {{0, 2, 4, 4}, 2, 2, 0, 1, false}};
}  // namespace

TEST(CudaPool, MaxPoolValuesAndIndicesAreExact) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll) {
    for (const PoolCase& k : kPoolCases) {
      Tensor x = tt::random(k.x, dt, 61);
      auto [v, i] = tr::max_pool2d_with_indices(x, k.k, k.s, k.p, k.d, k.ceil);
      auto lx = tt::device_layouts(x);
      for (size_t l = 0; l < lx.size(); ++l) {
        auto [gv, gi] = tr::max_pool2d_with_indices(lx[l], k.k, k.s, k.p, k.d, k.ceil);
        std::string what = name("max_pool2d", dt, l) + " x " + tr::shape_str(k.x);
        expect_same(gv, v, {0, 0}, what);
        expect_same(gi, i, {0, 0}, what + " indices");
        expect_same(tr::max_pool2d(lx[l], k.k, k.s, k.p, k.d, k.ceil), v, {0, 0}, what + " plain");
      }
    }
  }
}

TEST(CudaPool, MaxPoolNanWins) {
  TERRA_REQUIRE_GPU();
  Tensor x = tr::tensor(std::vector<double>{1, NAN, 3, 2}, Shape{1, 1, 2, 2});
  auto [v, i] = tr::max_pool2d_with_indices(x.to(tt::kCuda), 2);
  EXPECT_TRUE(std::isnan(tt::f64(v)[0]));
  EXPECT_EQ(tt::f64(i)[0], 1.0);
}

TEST(CudaPool, AvgAndAdaptivePoolMatchCpu) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kFloats) {
    for (const PoolCase& k : kPoolCases) {
      Tensor x = tt::random(k.x, dt, 71);
      for (bool include_pad : {true, false}) {
        Tensor want = tr::avg_pool2d(x, k.k, k.s, k.p, k.ceil, include_pad);
        auto lx = tt::device_layouts(x);
        for (size_t l = 0; l < lx.size(); ++l)
          expect_same(tr::avg_pool2d(lx[l], k.k, k.s, k.p, k.ceil, include_pad), want, tol_of(dt),
                      name("avg_pool2d", dt, l) + " x " + tr::shape_str(k.x));
      }
    }
    const std::pair<Shape, tr::IntPair> ad[] = {{{2, 3, 7, 5}, {3, 2}}, {{3, 3, 3}, {5, 4}},
                                                 {{1, 2, 8, 8}, {1, 1}}, {{0, 2, 4, 4}, {2, 2}}};
    for (const auto& [s, o] : ad) {
      Tensor x = tt::random(s, dt, 72);
      Tensor want = tr::adaptive_avg_pool2d(x, o);
      auto lx = tt::device_layouts(x);
      for (size_t l = 0; l < lx.size(); ++l)
        expect_same(tr::adaptive_avg_pool2d(lx[l], o), want, tol_of(dt),
                    name("adaptive_avg_pool2d", dt, l) + " x " + tr::shape_str(s));
    }
  }
}

TEST(CudaPool, PoolBackwardOpsMatchCpu) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kFloats) {
    for (const PoolCase& k : kPoolCases) {
      Tensor x = tt::random(k.x, dt, 81);
      tr::IntPair hw(k.x[k.x.size() - 2], k.x[k.x.size() - 1]);
      std::string what = name("pool backward", dt) + " x " + tr::shape_str(k.x);
      auto [v, idx] = tr::max_pool2d_with_indices(x, k.k, k.s, k.p, k.d, k.ceil);
      Tensor g = tt::random(v.shape(), dt, 82);
      expect_same(tr::max_pool2d_backward(g.to(tt::kCuda), idx.to(tt::kCuda), hw),
                  tr::max_pool2d_backward(g, idx, hw), tol_of(dt), what + " max");
      for (bool include_pad : {true, false}) {
        Tensor ga = tt::random(tr::avg_pool2d(x, k.k, k.s, k.p, k.ceil, include_pad).shape(), dt, 83);
        expect_same(tr::avg_pool2d_backward(ga.to(tt::kCuda), hw, k.k, k.s, k.p, k.ceil, include_pad),
                    tr::avg_pool2d_backward(ga, hw, k.k, k.s, k.p, k.ceil, include_pad),
                    tol_of(dt), what + " avg");
      }
    }
    const std::pair<Shape, tr::IntPair> ad[] = {{{2, 3, 7, 5}, {3, 2}}, {{3, 3, 3}, {5, 4}},
                                                 {{0, 2, 4, 4}, {2, 2}}};
    for (const auto& [s, o] : ad) {
      tr::IntPair hw(s[s.size() - 2], s[s.size() - 1]);
      Shape gs = s;
      gs[gs.size() - 2] = o.h, gs[gs.size() - 1] = o.w;
      Tensor g = tt::random(gs, dt, 85);
      expect_same(tr::adaptive_avg_pool2d_backward(g.to(tt::kCuda), hw),
                  tr::adaptive_avg_pool2d_backward(g, hw), tol_of(dt),
                  name("adaptive_avg_pool2d_backward", dt) + " x " + tr::shape_str(s));
    }
  }
}

// An index outside the plane is reported with the CPU's message (checked on the device).
TEST(CudaPool, MaxPoolBackwardRejectsBadIndices) {
  TERRA_REQUIRE_GPU();
  Tensor g = tt::random({1, 1, 2, 2}).to(tt::kCuda);
  Tensor idx = tr::tensor(std::vector<double>{0, 3, 16, 2}, Shape{1, 1, 2, 2}).to(DType::Int64);
  tt::expect_error([&] { (void)tr::max_pool2d_backward(g, idx.to(tt::kCuda), {4, 4}); },
                   {"max_pool2d_backward", "index 16 at position 2", "4x4"});
  Tensor neg = tr::tensor(std::vector<double>{0, -1, 1, 2}, Shape{1, 1, 2, 2}).to(DType::Int64);
  tt::expect_error([&] { (void)tr::max_pool2d_backward(g, neg.to(tt::kCuda), {4, 4}); },
                   {"max_pool2d_backward", "index -1 at position 1"});
}

TEST(CudaPool, PoolErrors) {
  TERRA_REQUIRE_GPU();
  Tensor x = tt::random({1, 2, 3, 3}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::max_pool2d(x, 5); }, {"max_pool2d", "too small"});
  Tensor xi = tt::random({1, 2, 4, 4}, DType::Int32).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::avg_pool2d(xi, 2); }, {"avg_pool2d", "floating"});
}

// ---- batch_norm ----
namespace {
// One call on `dev` with its own copies of the running stats (which it updates in place).
struct BnRun {
  Tensor y, mean, inv, rm, rv;
};
BnRun run_bn(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& rm0,
             const Tensor& rv0, bool training, Device dev) {
  auto on = [&](const Tensor& t) { return t.defined() ? t.to(dev) : t; };
  auto own = [&](const Tensor& t) { return !t.defined() ? t : dev.is_cpu() ? t.clone() : t.to(dev); };
  Tensor rm = own(rm0), rv = own(rv0);
  auto [y, m, i] = tr::native_batch_norm(on(x), on(w), on(b), rm, rv, training, 0.2, 1e-3);
  return {y, m, i, rm, rv};
}
}  // namespace

TEST(CudaNorm, BatchNormMatchesCpu) {
  TERRA_REQUIRE_GPU();
  const Shape shapes[] = {{4, 3, 5, 6}, {6, 3}, {2, 3, 7}};
  for (DType dt : kFloats) {
    DType sdt = tr::is_reduced_float(dt) ? DType::Float32 : dt;
    for (const Shape& s : shapes) {
      Tensor x = tt::random(s, dt, 91, -1, 3);
      Tensor w = tt::random({3}, sdt, 92), b = tt::random({3}, sdt, 93);
      Tensor rm = tt::random({3}, sdt, 94), rv = tt::random({3}, sdt, 95, 0.5, 2);
      for (bool training : {true, false}) {
        for (int variant = 0; variant < 3; ++variant) {
          bool affine = variant != 1, running = variant != 2 || !training;
          Tensor wv = affine ? w : Tensor(), bv = affine ? b : Tensor();
          Tensor rmv = running ? rm : Tensor(), rvv = running ? rv : Tensor();
          BnRun want = run_bn(x, wv, bv, rmv, rvv, training, Device::cpu());
          BnRun got = run_bn(x, wv, bv, rmv, rvv, training, tt::kCuda);
          std::string what = name("batch_norm", dt) + " x " + tr::shape_str(s) +
                             (training ? " train" : " eval") + " variant " + std::to_string(variant);
          Tol t = tol_of(dt), ts = tol_of(sdt);
          expect_same(got.y, want.y, t, what + " y");
          expect_same(got.mean, want.mean, ts, what + " save_mean");
          expect_same(got.inv, want.inv, ts, what + " save_invstd");
          if (running) {
            expect_same(got.rm, want.rm, ts, what + " running_mean");
            expect_same(got.rv, want.rv, ts, what + " running_var");
          }
        }
      }
    }
  }
}

TEST(CudaNorm, BatchNormBackwardMatchesCpu) {
  TERRA_REQUIRE_GPU();
  const std::array<bool, 3> masks[] = {{true, true, true}, {true, false, false},
                                       {false, true, true}};
  for (DType dt : {DType::Float32, DType::Float64}) {
    for (const Shape& s : {Shape{4, 3, 5, 6}, Shape{6, 3}}) {
      Tensor x = tt::random(s, dt, 101), g = tt::random(s, dt, 102);
      Tensor w = tt::random({3}, dt, 103);
      auto [y, mean, inv] = tr::native_batch_norm(x, w, {}, {}, {}, true, 0.1, 1e-5);
      for (bool with_w : {true, false}) {
        for (const auto& m : masks) {
          Tensor wv = with_w ? w : Tensor();
          auto want = tr::batch_norm_backward(g, x, wv, mean, inv, m);
          auto got = tr::batch_norm_backward(g.to(tt::kCuda), x.to(tt::kCuda),
                                             with_w ? w.to(tt::kCuda) : Tensor(),
                                             mean.to(tt::kCuda), inv.to(tt::kCuda), m);
          std::string what = name("batch_norm_backward", dt) + " x " + tr::shape_str(s);
          if (m[0]) expect_same(std::get<0>(got), std::get<0>(want), tol_of(dt), what + " dx");
          if (m[1]) expect_same(std::get<1>(got), std::get<1>(want), tol_of(dt), what + " dw");
          if (m[2]) expect_same(std::get<2>(got), std::get<2>(want), tol_of(dt), what + " db");
        }
      }
    }
  }
}

TEST(CudaNorm, BatchNormErrors) {
  TERRA_REQUIRE_GPU();
  Tensor x = tt::random({1, 3}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::native_batch_norm(x, {}, {}, {}, {}, true); },
                   {"batch_norm", "more than 1 value per channel"});
  Tensor x2 = tt::random({4, 3}).to(tt::kCuda), w = tt::random({4}).to(tt::kCuda);
  tt::expect_error([&] { (void)tr::native_batch_norm(x2, w, {}, {}, {}, true); },
                   {"batch_norm", "weight of shape"});
}
