// The kernels that split work across threads give the same bits for any thread count (and
// any partition of their loops into chunks, which co-execution's teams make differently):
// each case runs with one, two and three threads and compares every output byte. The same for the AVX2 paths
// against the baseline ones. Also batch_norm_backward, the fused first-order gradient of a
// training batch_norm, against the composite one.
#include <cstring>
#include <sstream>
#include <vector>

#include "op_test.hpp"

TERRA_COVERS("batch_norm_backward");

namespace tr = terra;
namespace ag = terra::autograd;
using tr::DType;
using tr::Shape;
using tr::Tensor;

namespace {

using Outputs = std::vector<Tensor>;

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.raw_data(), cb.raw_data(), size_t(ca.numel()) * ca.element_size()) == 0;
}

// f() with one, two and three threads: every output bit-identical.
void expect_same_bits_for_threads(const std::function<Outputs()>& f, const std::string& what) {
  tr::set_num_threads(1);
  Outputs one = f();
  for (int threads : {2, 3}) {
    tr::set_num_threads(threads);
    Outputs other = f();
    ASSERT_EQ(one.size(), other.size()) << what;
    for (size_t i = 0; i < one.size(); ++i)
      EXPECT_TRUE(same_bytes(one[i], other[i]))
          << what << ": output " << i << " differs with " << threads << " threads";
  }
  tr::set_num_threads(0);
}

// f() with the AVX2 paths and without: every output bit-identical.
void expect_same_bits_without_avx2(const std::function<Outputs()>& f) {
  Outputs fast = f();
  tr::cpu_use_avx2() = false;
  Outputs base = f();
  tr::cpu_use_avx2() = true;
  ASSERT_EQ(fast.size(), base.size());
  for (size_t i = 0; i < fast.size(); ++i)
    EXPECT_TRUE(same_bytes(fast[i], base[i])) << "output " << i;
}

// Forward output and the gradients of sum(y * r) wrt every input that requires one.
Outputs with_grads(const std::function<Tensor(const Outputs&)>& f, const Outputs& in) {
  Outputs leaves;
  for (const Tensor& t : in) leaves.push_back(t.detach().set_requires_grad());
  Tensor y = f(leaves);
  Tensor r = tt::random(y.shape(), y.dtype(), 99);
  auto g = ag::grad({(y * r).sum()}, leaves);
  Outputs out{y.detach()};
  out.insert(out.end(), g.begin(), g.end());
  return out;
}

// The paths float32 convolutions can take in this build: oneDNN (where built in), and
// im2col + gemm.
std::vector<bool> conv_paths() {
#if defined(TERRA_HAS_DNNL)
  return {true, false};
#else
  return {false};
#endif
}
void set_dnnl_conv([[maybe_unused]] bool on) {
#if defined(TERRA_HAS_DNNL)
  tr::cpu_use_dnnl() = on;
#endif
}

}  // namespace

// Float32 convolutions go through oneDNN where the build has it, else im2col + gemm: both
// paths give the same bits for any thread count.
TEST(KernelThreads, Conv2dForwardAndBackward) {
  for (bool dnnl : conv_paths()) {
    set_dnnl_conv(dnnl);
    SCOPED_TRACE(dnnl ? "oneDNN" : "im2col + gemm");
    Tensor x = tt::random({8, 3, 24, 24}, DType::Float32, 1);
    Tensor w = tt::random({16, 3, 3, 3}, DType::Float32, 2), b = tt::random({16}, DType::Float32, 3);
    expect_same_bits_for_threads(
        [&] { return with_grads([](auto& v) { return tr::conv2d(v[0], v[1], v[2], 1, 1); }, {x, w, b}); },
        "conv2d 3->16");
    Tensor x1 = tt::random({32, 1, 16, 16}, DType::Float32, 4);
    Tensor w1 = tt::random({8, 1, 3, 3}, DType::Float32, 5);
    expect_same_bits_for_threads(
        [&] { return with_grads([](auto& v) { return tr::conv2d(v[0], v[1], {}, 1, 1); }, {x1, w1}); },
        "conv2d 1->8");
    Tensor xs = tt::random({16, 16, 33, 33}, DType::Float32, 8);  // strided, grouped, with bias
    Tensor ws = tt::random({32, 8, 3, 3}, DType::Float32, 9), bs = tt::random({32}, DType::Float32, 10);
    expect_same_bits_for_threads(
        [&] {
          return with_grads([](auto& v) { return tr::conv2d(v[0], v[1], v[2], 2, 1, 1, 2); },
                            {xs, ws, bs});
        },
        "conv2d 16->32 stride 2, 2 groups");
    Tensor xd = tt::random({8, 16, 20, 20}, DType::Float64, 6);
    Tensor wd = tt::random({16, 1, 3, 3}, DType::Float64, 7);
    expect_same_bits_for_threads(
        [&] {
          return with_grads([](auto& v) { return tr::conv2d(v[0], v[1], {}, 1, 1, 1, 16); },
                            {xd, wd});
        },
        "depthwise conv2d");
  }
  set_dnnl_conv(true);
}

#if defined(TERRA_HAS_DNNL)
// The oneDNN path against the im2col + gemm one (float32 both; different summation orders):
// forward, grad_input, grad_weight and grad_bias agree to float32 rounding, over strides,
// dilations, groups, 1x1 and 5x5 kernels, batches that leave a shorter last chunk, a batch of
// one and an unbatched input.
TEST(Conv2dOneDnn, AgreesWithGemmPath) {
  struct Case {
    Shape x;
    int64_t o, k, stride, pad, dil, groups;
    bool bias;
  };
  const Case cases[] = {
      {{16, 16, 32, 32}, 16, 3, 1, 1, 1, 1, true},  {{16, 64, 8, 8}, 64, 3, 1, 1, 1, 1, false},
      {{5, 3, 13, 11}, 8, 3, 2, 1, 1, 1, true},     {{7, 8, 9, 10}, 12, 3, 1, 2, 2, 2, true},
      {{3, 6, 7, 7}, 6, 1, 1, 0, 1, 1, false},      {{9, 16, 33, 33}, 16, 3, 2, 1, 1, 2, true},
      {{1, 4, 5, 5}, 4, 5, 1, 2, 1, 1, true},       {{8, 8, 6, 6}, 8, 3, 1, 0, 1, 1, true},
      {{4, 6, 10, 10}, 6, 3, 3, 0, 1, 3, true},     {{32, 20, 12, 12}, 24, 3, 1, 1, 1, 1, true}};
  int seed = 20;
  for (const Case& c : cases) {
    std::ostringstream what;
    what << "x " << c.x << " o " << c.o << " k " << c.k << " stride " << c.stride << " pad " << c.pad
         << " dilation " << c.dil << " groups " << c.groups;
    Tensor x = tt::random(c.x, DType::Float32, ++seed);
    Tensor w = tt::random({c.o, c.x[1] / c.groups, c.k, c.k}, DType::Float32, ++seed);
    Tensor b = tt::random({c.o}, DType::Float32, ++seed);
    auto run = [&](bool dnnl) {
      set_dnnl_conv(dnnl);
      Outputs o = with_grads(
          [&](auto& v) {
            return tr::conv2d(v[0], v[1], v.size() == 3 ? v[2] : Tensor(), c.stride, c.pad, c.dil, c.groups);
          },
          c.bias ? Outputs{x, w, b} : Outputs{x, w});
      set_dnnl_conv(true);
      return o;
    };
    Outputs fast = run(true), ref = run(false);
    ASSERT_EQ(fast.size(), ref.size()) << what.str();
    for (size_t i = 0; i < fast.size(); ++i) {
      ASSERT_TRUE(fast[i].defined() && ref[i].defined()) << what.str() << ": output " << i;
      double scale = 1 + tr::abs(ref[i]).max().item<double>();
      double diff = tr::abs(fast[i] - ref[i]).max().item<double>();
      EXPECT_LE(diff, 2e-5 * scale) << what.str() << ": output " << i;
    }
  }
  // Unbatched [C, H, W]: the same as a batch of one.
  Tensor x3 = tt::random({6, 9, 9}, DType::Float32, 40), w3 = tt::random({4, 6, 3, 3}, DType::Float32, 41);
  Tensor y3 = tr::conv2d(x3, w3, {}, 1, 1);
  set_dnnl_conv(false);
  Tensor r3 = tr::conv2d(x3, w3, {}, 1, 1);
  set_dnnl_conv(true);
  EXPECT_EQ(y3.shape(), (Shape{4, 9, 9}));
  EXPECT_LE(tr::abs(y3 - r3).max().item<double>(), 2e-5 * (1 + tr::abs(r3).max().item<double>()));
}
#endif

TEST(KernelThreads, Pools) {
  Tensor x = tt::random({16, 8, 32, 32}, DType::Float32, 8);
  expect_same_bits_for_threads(
      [&] {
        auto [v, i] = tr::max_pool2d_with_indices(x, 2);
        Outputs o = with_grads([](auto& in) { return tr::max_pool2d(in[0], 2); }, {x});
        o.push_back(v);
        o.push_back(i);
        return o;
      },
      "max_pool2d 2x2");
  expect_same_bits_for_threads(
      [&] { return with_grads([](auto& in) { return tr::max_pool2d(in[0], 3, 2, 1); }, {x}); },
      "max_pool2d 3x3");
  expect_same_bits_for_threads(
      [&] { return with_grads([](auto& in) { return tr::adaptive_avg_pool2d(in[0], 3); }, {x}); },
      "adaptive_avg_pool2d");
}

TEST(KernelThreads, BatchNormReluSoftmax) {
  Tensor x = tt::random({16, 8, 24, 24}, DType::Float32, 9);
  Tensor w = tt::random({8}, DType::Float32, 10), b = tt::random({8}, DType::Float32, 11);
  expect_same_bits_for_threads(
      [&] {
        return with_grads(
            [](auto& v) { return tr::relu(tr::batch_norm(v[0], v[1], v[2], {}, {}, true)); },
            {x, w, b});
      },
      "batch_norm + relu");
  Tensor s = tt::random({64, 1024}, DType::Float32, 12, -20, 20);
  for (int64_t d : {0, 1})
    expect_same_bits_for_threads(
        [&] { return with_grads([d](auto& v) { return tr::softmax(v[0], d); }, {s}); },
        "softmax dim " + std::to_string(d));
}

// The AVX2 clones (picked at run time) and the baseline path give the same bits.
TEST(KernelIsa, SoftmaxAvx2AndBaselineAgree) {
  if (!tr::cpu_use_avx2()) GTEST_SKIP() << "this CPU (or build) has no AVX2 path";
  Tensor s = tt::random({33, 1029}, DType::Float32, 14, -90, 90);
  s.narrow(1, 5, 1).fill_(NAN);
  auto run = [&] {
    Outputs o;
    for (int64_t d : {0, 1}) {
      o.push_back(tr::softmax(s, d));
      o.push_back(tr::log_softmax(s, d));
    }
    return o;
  };
  expect_same_bits_without_avx2(run);
}

// The AVX2 clones of exp, sigmoid and silu (built on math::vexp) give the baseline loops'
// bytes, over both clamps of vexp (-87.3 and 88.7), NaN and infinities included.
TEST(KernelIsa, ExpSigmoidSiluAvx2AndBaselineAgree) {
  if (!tr::cpu_use_avx2()) GTEST_SKIP() << "this CPU (or build) has no AVX2 path";
  Tensor x = tt::random({4773}, DType::Float32, 23, -100, 100);
  x.narrow(0, 3, 1).fill_(NAN);
  x.narrow(0, 10, 1).fill_(INFINITY);
  x.narrow(0, 11, 1).fill_(-INFINITY);
  expect_same_bits_without_avx2([&] { return Outputs{tr::exp(x), tr::sigmoid(x), tr::silu(x)}; });
}

// The AVX2 clones of the contiguous loops of gelu (both forms), its gradient and tanh (built
// on math::verf/vexp/vtanh) give the baseline loops' bytes, NaN and infinities included.
TEST(KernelIsa, GeluTanhAvx2AndBaselineAgree) {
  if (!tr::cpu_use_avx2()) GTEST_SKIP() << "this CPU (or build) has no AVX2 path";
  Tensor x = tt::random({4773}, DType::Float32, 21, -7, 7);
  x.narrow(0, 3, 1).fill_(NAN);
  x.narrow(0, 10, 1).fill_(INFINITY);
  x.narrow(0, 11, 1).fill_(-INFINITY);
  Tensor g = tt::random({4773}, DType::Float32, 22);
  auto run = [&] {
    Outputs o{tr::tanh(x)};
    for (const char* form : {"none", "tanh"}) {
      o.push_back(tr::gelu(x, form));
      o.push_back(tr::gelu_backward(g, x, form));
    }
    return o;
  };
  expect_same_bits_without_avx2(run);
}

// terra's float32 gemm for CPUs with AVX-512 (backend/cpu/sgemm_avx512.hpp) against a float64
// product, across its tile edges (12-row strips, 32-column tiles, k slabs of at most 256) and
// every operand layout it packs differently (row-major, transposed, strided both ways): each
// element within the float32 rounding bound k * eps * sum |a||b|, the same bits for one, two
// and three threads, and the path it replaces (CBLAS) within the same bound.
TEST(KernelIsa, Avx512GemmMatchesFloat64) {
  if (!tr::cpu_use_avx512()) GTEST_SKIP() << "this CPU (or build) has no AVX-512 gemm";
  struct Case {
    int64_t m, n, k;
  };
  const Case cases[] = {{1, 24, 1},    {5, 33, 7},     {12, 32, 16},  {13, 31, 17},
                        {25, 100, 257}, {64, 257, 600}, {130, 64, 513}, {7, 24, 300}};
  // layout: 0 row-major, 1 transposed, 2 every other row and column of a larger matrix
  auto operand = [](int64_t r, int64_t c, int layout, uint32_t seed) {
    if (layout == 1) return tt::random({c, r}, DType::Float32, seed).transpose(0, 1);
    if (layout == 2)
      return tt::random({2 * r, 2 * c}, DType::Float32, seed).slice(0, 0, 2 * r, 2).slice(1, 1, 2 * c, 2);
    return tt::random({r, c}, DType::Float32, seed);
  };
  uint32_t seed = 100;
  for (const Case& cs : cases)
    for (int la = 0; la < 3; ++la)
      for (int lb = 0; lb < 3; ++lb) {
        std::ostringstream os;  // not "[" + to_string(...): GCC 12 warns (-Wrestrict) on it
        os << "[" << cs.m << ", " << cs.k << "] @ [" << cs.k << ", " << cs.n << "], layouts " << la
           << "/" << lb;
        std::string what = os.str();
        Tensor a = operand(cs.m, cs.k, la, ++seed), b = operand(cs.k, cs.n, lb, ++seed);
        Tensor ref = tr::matmul(a.to(DType::Float64), b.to(DType::Float64));
        Tensor bound = tr::matmul(a.abs().to(DType::Float64), b.abs().to(DType::Float64)) *
                       (double(cs.k + 2) * 1.2e-7);
        Tensor fast = tr::matmul(a, b);
        auto beyond = [&](const Tensor& y) {  // elements outside the bound
          return ((y.to(DType::Float64) - ref).abs() > bound).to(DType::Float64).sum().item<double>();
        };
        EXPECT_EQ(beyond(fast), 0) << what;
        tr::cpu_use_avx512() = false;
        Tensor other = tr::matmul(a, b);
        tr::cpu_use_avx512() = true;
        EXPECT_EQ(beyond(other), 0) << what;
        expect_same_bits_for_threads([&] { return Outputs{tr::matmul(a, b)}; }, what);
      }
}

// Dropout's 16-wide (AVX-512) and 8-wide (AVX2) Philox draw exactly the scalar generator's
// numbers, at any offset (counters whose low word wraps inside a group of 8 or 16 included)
// and any length: all paths give the same bytes, and element i is kept iff
// uniform_f32(seed, offset + i) >= p.
TEST(KernelIsa, DropoutAvx2AndBaselineAgree) {
  if (!tr::cpu_use_avx2()) GTEST_SKIP() << "this CPU (or build) has no AVX2 path";
  const uint64_t seed = 0x1234ABCD5678EF01ull;
  const double p = 0.3;
  for (uint64_t offset : {uint64_t(0), uint64_t(5), uint64_t(0xFFFFFFFCull), uint64_t(0xFFFFFFF3ull),
                          uint64_t(0x7FFFFFFFFFFFFFF9ull)}) {
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(8), int64_t(9), int64_t(16), int64_t(25),
                      int64_t(61), int64_t(37 * 129)}) {
      Tensor x = tt::random({n}, DType::Float32, 15, 0.5, 3);  // no zeros: y == 0 means dropped
      auto run = [&] {
        tr::default_generator() = tr::Generator{seed, offset};
        return tr::dropout(x, p, true);
      };
      Tensor fast = run();  // AVX-512 (16 at a time) where the CPU has it, then AVX2, scalar
      const bool avx512 = tr::cpu_use_avx512();
      tr::cpu_use_avx512() = false;
      Tensor avx2 = run();
      tr::cpu_use_avx2() = false;
      Tensor base = run();
      tr::cpu_use_avx2() = true;
      tr::cpu_use_avx512() = avx512;
      ASSERT_TRUE(same_bytes(fast, base)) << "offset " << offset << ", " << n << " elements";
      ASSERT_TRUE(same_bytes(avx2, base)) << "offset " << offset << ", " << n << " elements";
      std::vector<float> y = base.to_vector<float>();
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(y[size_t(i)] != 0.0f, tr::PhiloxDraw::uniform_f32(seed, offset + uint64_t(i)) >= float(p))
            << "offset " << offset << " + " << i;
    }
  }
}

// The small CNN of examples/cnn.cpp, three Adam steps: every parameter bit-identical.
TEST(KernelThreads, CnnTrainingSteps) {
  auto run = [] {
    tr::manual_seed(3);
    namespace nn = terra::nn;
    nn::Sequential net(nn::Conv2d(1, 8, 3, nn::Conv2dOptions{.padding = 1}), nn::BatchNorm2d(8),
                       nn::ReLU(), nn::MaxPool2d(2),
                       nn::Conv2d(8, 16, 3, nn::Conv2dOptions{.padding = 1}), nn::BatchNorm2d(16),
                       nn::ReLU(), nn::AdaptiveAvgPool2d(2), nn::Flatten(), nn::Dropout(0.1),
                       nn::Linear(64, 4));
    tr::optim::Adam opt(net->parameters(), {.lr = 1e-2});
    Tensor x = tt::random({32, 1, 16, 16}, DType::Float32, 13);
    Tensor y = tr::randint(0, 4, {32});
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad();
      tr::nn::functional::cross_entropy(net(x), y).backward();
      opt.step();
    }
    Outputs out;
    for (const auto& [name, t] : net->state_dict()) out.push_back(t.detach().clone());
    return out;
  };
  expect_same_bits_for_threads(run, "CNN training");
}

// ---- batch_norm_backward ----
namespace {
// Gradients of sum(batch_norm(x, w, b) * r) wrt (x, w, b): first order (the fused op) or
// with create_graph (the composite vjp).
Outputs bn_grads(const Tensor& x0, const Tensor& w0, const Tensor& b0, bool create_graph) {
  Outputs leaves;
  for (const Tensor& t : {x0, w0, b0})
    if (t.defined()) leaves.push_back(t.detach().set_requires_grad());
  Tensor w = w0.defined() ? leaves[1] : Tensor();
  Tensor b = b0.defined() ? leaves[w0.defined() ? 2 : 1] : Tensor();
  Tensor y = tr::batch_norm(leaves[0], w, b, {}, {}, true, 0.1, 1e-3);
  Tensor r = tt::random(y.shape(), y.dtype(), 21);
  return ag::grad({(y * r).sum()}, leaves, {}, std::nullopt, create_graph);
}
}  // namespace

TEST(BatchNormBackward, MatchesTheCompositeGradient) {
  for (Shape s : {Shape{4, 3}, Shape{5, 2, 7}, Shape{3, 4, 5, 6}}) {
    Tensor x = tt::rnd(s, 1, -3, 3), w = tt::rnd({s[1]}, 2), b = tt::rnd({s[1]}, 3);
    for (int affine = 0; affine < 3; ++affine) {
      Tensor wa = affine > 0 ? w : Tensor(), ba = affine > 1 ? b : Tensor();
      for (const Tensor& xv : tt::layouts(x)) {
        Outputs fused = bn_grads(xv, wa, ba, false), comp = bn_grads(xv, wa, ba, true);
        ASSERT_EQ(fused.size(), comp.size());
        for (size_t i = 0; i < fused.size(); ++i)
          tt::expect_close(fused[i], comp[i].shape(), tt::f64(comp[i]), 1e-10, 1e-10,
                           tr::shape_str(s) + " affine " + std::to_string(affine) + " grad " +
                               std::to_string(i));
      }
    }
  }
}

TEST(BatchNormBackward, DirectCallMasksAndFloat32) {
  Tensor x = tt::rnd({6, 3, 5}, 4), w = tt::rnd({3}, 5), g = tt::rnd({6, 3, 5}, 6);
  auto [y, mean, inv] = tr::native_batch_norm(x, w, {}, {}, {}, true);
  auto [dx, dw, db] = tr::batch_norm_backward(g, x, w, mean, inv);
  // grad_bias = sum(g), grad_weight = sum(g * xhat) over dims (0, 2).
  Tensor xhat = (x - mean.reshape({1, 3, 1})) * inv.reshape({1, 3, 1});
  tt::expect_close(db, {3}, tt::f64(g.sum({0, 2})), 1e-12, 1e-12, "grad_bias");
  tt::expect_close(dw, {3}, tt::f64((g * xhat).sum({0, 2})), 1e-12, 1e-12, "grad_weight");
  auto [dx2, dw2, db2] = tr::batch_norm_backward(g, x, w, mean, inv, {true, false, false});
  EXPECT_TRUE(dx2.defined() && !dw2.defined() && !db2.defined());
  tt::expect_close(dx2, x.shape(), tt::f64(dx), 0, 0, "mask: grad_input alone");
  auto [dx3, dw3, db3] = tr::batch_norm_backward(g, x, {}, mean, inv, {false, false, true});
  EXPECT_TRUE(!dx3.defined() && !dw3.defined() && db3.defined());
  // float32 within float32 rounding of float64.
  auto to32 = [](const Tensor& t) { return t.to(DType::Float32); };
  auto [fx, fw, fb] = tr::batch_norm_backward(to32(g), to32(x), to32(w), to32(mean), to32(inv));
  EXPECT_EQ(fx.dtype(), DType::Float32);
  tt::expect_close(fx, x.shape(), tt::f64(dx), 1e-4, 1e-5, "float32 grad_input");
  tt::expect_close(fw, {3}, tt::f64(dw), 1e-4, 1e-5, "float32 grad_weight");
  auto empty = tr::batch_norm_backward(to32(g).slice(0, 0, 0), to32(x).slice(0, 0, 0), {},
                                       to32(mean), to32(inv));
  EXPECT_EQ(std::get<0>(empty).shape(), (Shape{0, 3, 5}));
  tt::expect_close(std::get<2>(empty), {3}, {0, 0, 0}, 0, 0, "empty batch: grad_bias");
}

TEST(BatchNormBackward, Errors) {
  Tensor x = tt::rnd({4, 3, 2}, 7), m = tt::rnd({3}, 8), v = tt::rnd({3}, 9);
  tt::expect_error([&] { tr::batch_norm_backward(x, x.to(DType::Float32), {}, m, v); },
                   {"[terra::batch_norm_backward]", "float64", "float32"});
  tt::expect_error([&] { tr::batch_norm_backward(x.slice(0, 0, 2), x, {}, m, v); },
                   {"[terra::batch_norm_backward]", "grad_output", "[2, 3, 2]", "[4, 3, 2]"});
  tt::expect_error([&] { tr::batch_norm_backward(x, x, {}, tt::rnd({4}, 1), v); },
                   {"[terra::batch_norm_backward]", "[4]", "[3]"});
  Tensor xi = x.to(DType::Int64);
  tt::expect_error([&] { tr::batch_norm_backward(xi, xi, {}, m, v); },
                   {"[terra::batch_norm_backward]", "float32 or float64"});
  const Tensor in[] = {x, x, m, v};
  tr::Attrs a;
  a.ints = {0, 0, 0, 0};
  tt::expect_error([&] { tr::dispatch({.op = tr::Op::BatchNormBackward, .inputs = in, .attrs = a}); },
                   {"[terra::batch_norm_backward]", "selects no gradient"});
}
