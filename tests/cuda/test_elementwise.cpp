// CUDA elementwise and factory kernels against the CPU: every op on every dtype it allows, on
// contiguous, transposed, strided, misaligned and broadcast inputs; the random factories draw
// the CPU's numbers to the bit.
#include <algorithm>
#include <cmath>
#include <optional>

#include "cuda/cuda_test.hpp"

namespace tr = terra;
using tr::Device;
using tr::DType;
using tr::Shape;
using tr::Tensor;

namespace {

const std::vector<DType> kAll = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16,
                                 DType::Int32,   DType::Int64,   DType::Bool};

Tensor dev(const Tensor& x) { return x.to(tt::kCuda); }

// The same values as the device tensor xd in several device layouts, each built on the device
// (so the copy and fill kernels make them): contiguous, transposed storage, every other element
// of a wider tensor, and contiguous but one element past an aligned start (no vector loads).
std::vector<Tensor> device_made_layouts(const Tensor& xd) {
  std::vector<Tensor> out{xd.contiguous()};
  int64_t r = xd.dim();
  tr::TensorOptions o{.dtype = xd.dtype(), .device = xd.device()};
  if (r >= 2) out.push_back(xd.transpose(0, r - 1).contiguous().transpose(0, r - 1));
  if (r >= 1) {
    Shape big = xd.shape();
    big.back() *= 2;
    Tensor v = tr::zeros(big, o).slice(r - 1, 0, big.back(), 2);
    v.copy_(xd);
    out.push_back(v);
  }
  Tensor flat = tr::zeros({xd.numel() + 1}, o);
  Tensor v = flat.slice(0, 1, xd.numel() + 1).view(xd.shape());
  v.copy_(xd);
  out.push_back(v);
  return out;
}

// 16-bit results may differ by one rounding where float32 math functions differ in the last
// bit; exact ops (arithmetic, comparisons, selects, copies) must agree to the bit.
double tolerance(DType dt, bool exact) {
  if (exact || !tr::is_floating(dt)) return 0;
  return dt == DType::Float32 ? 2e-6 : (dt == DType::Float64 ? 1e-13 : tt::rtol_of(dt));
}

void expect_matches(const Tensor& got, const Tensor& want, bool exact, const std::string& what) {
  ASSERT_EQ(got.device(), tt::kCuda) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  ASSERT_EQ(got.shape(), want.shape()) << what;
  std::vector<double> g = tt::f64(got), w = tt::f64(want);
  double tol = tolerance(want.dtype(), exact);
  for (size_t i = 0; i < w.size(); ++i) {
    if (std::isnan(w[i])) {
      EXPECT_TRUE(std::isnan(g[i])) << what << " at " << i;
    } else if (tol == 0 || std::isinf(w[i])) {
      EXPECT_EQ(g[i], w[i]) << what << " at " << i;
      if (g[i] != w[i]) return;  // one report per case is enough
    } else {
      EXPECT_NEAR(g[i], w[i], tol * (1 + std::fabs(w[i]))) << what << " at " << i;
      if (std::fabs(g[i] - w[i]) > tol * (1 + std::fabs(w[i]))) return;
    }
  }
}

// f on the CPU and on CUDA: both throw (CUDA naming the op too) or both give the same values.
// `inputs` are CPU tensors; every combination of the device layouts of the first input is run.
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
void expect_like_cpu(const Fn& f, const std::vector<Tensor>& inputs, bool exact,
                     const std::string& what) {
  Tensor want;
  std::string cpu_error;
  try {
    want = f(inputs);
  } catch (const tr::Error& e) {
    cpu_error = e.what();
  }
  std::vector<Tensor> d;
  for (const Tensor& t : inputs) d.push_back(dev(t));
  for (const Tensor& lay : device_made_layouts(d[0])) {
    std::vector<Tensor> in = d;
    in[0] = lay;
    if (!cpu_error.empty()) {
      try {
        (void)f(in);
        ADD_FAILURE() << what << ": CPU threw \"" << cpu_error << "\", CUDA did not";
      } catch (const tr::Error&) {
      }
      return;
    }
    expect_matches(f(in), want, exact, what);
  }
}

std::string name_of(const char* op, std::initializer_list<DType> dts) {
  std::string s = op;
  for (DType dt : dts) s += std::string(" ") + tr::dtype_name(dt);
  return s;
}

// Values with the special cases of floating dtypes (NaN, infinities, signed zero, huge), in
// two orders so that a binary op meets every pair kind.
Tensor specials(DType dt, bool reversed = false) {
  std::vector<double> v = {NAN, INFINITY, -INFINITY, 0.0, -0.0, 1.0, -1.0, 0.5, 1e30, -1e30, 3.0, -2.5};
  if (reversed) std::reverse(v.begin(), v.end());
  return tr::tensor(v, {12}).to(dt);
}

struct Case {
  const char* name;
  Fn f;
  bool exact;
};

Fn un(Tensor (*g)(const Tensor&, tr::Loc)) {
  return [g](const std::vector<Tensor>& x) { return g(x[0], tr::Loc::current()); };
}

std::vector<Case> unary_cases() {
  return {
      {"neg", un(&tr::neg), true},
      {"abs", un(&tr::abs), true},
      {"exp", un(&tr::exp), false},
      {"log", un(&tr::log), false},
      {"sqrt", un(&tr::sqrt), true},
      {"rsqrt", un(&tr::rsqrt), true},
      {"sin", un(&tr::sin), false},
      {"cos", un(&tr::cos), false},
      {"tanh", un(&tr::tanh), false},
      {"sigmoid", un(&tr::sigmoid), false},
      {"relu", un(&tr::relu), true},
      {"silu", un(&tr::silu), false},
      {"logical_not", un(&tr::logical_not), true},
      {"gelu", [](auto& x) { return tr::gelu(x[0]); }, false},
      {"gelu tanh", [](auto& x) { return tr::gelu(x[0], "tanh"); }, false},
      {"softplus", [](auto& x) { return tr::softplus(x[0]); }, false},
      {"softplus 2 1", [](auto& x) { return tr::softplus(x[0], 2.0, 1.0); }, false},
      {"clamp", [](auto& x) { return tr::clamp(x[0], -0.5, 0.7); }, true},
      {"clamp_min", [](auto& x) { return tr::clamp_min(x[0], 0.25); }, true},
      {"clamp_max", [](auto& x) { return tr::clamp_max(x[0], -1.0); }, true},
      {"clamp lo > hi", [](auto& x) { return tr::clamp(x[0], 1.0, -1.0); }, true},
  };
}

std::vector<Case> binary_cases() {
#define BIN(fn, exact) {#fn, [](auto& x) { return tr::fn(x[0], x[1]); }, exact}
  return {BIN(add, true),         BIN(sub, true),         BIN(mul, true),
          BIN(div, true),         BIN(pow, false),        BIN(maximum, true),
          BIN(minimum, true),     BIN(eq, true),          BIN(ne, true),
          BIN(lt, true),          BIN(le, true),          BIN(gt, true),
          BIN(ge, true),          BIN(logical_and, true), BIN(logical_or, true),
          BIN(logical_xor, true),
          {"gelu_backward", [](auto& x) { return tr::gelu_backward(x[0], x[1]); }, false},
          {"gelu_backward tanh", [](auto& x) { return tr::gelu_backward(x[0], x[1], "tanh"); }, false}};
#undef BIN
}

// The one-tensor-plus-scalar forms, the scalar on either side, integral or floating.
std::vector<Case> scalar_cases() {
  return {
      {"add 2", [](auto& x) { return tr::add(x[0], 2); }, true},
      {"2.5 + x", [](auto& x) { return tr::add(2.5, x[0]); }, true},
      {"3 - x", [](auto& x) { return tr::sub(3, x[0]); }, true},
      {"x - 0.75", [](auto& x) { return tr::sub(x[0], 0.75); }, true},
      {"x * -3", [](auto& x) { return tr::mul(x[0], -3); }, true},
      {"x / 2", [](auto& x) { return tr::div(x[0], 2); }, true},
      {"1 / x", [](auto& x) { return tr::div(1.0, x[0]); }, true},
      {"x ^ 2", [](auto& x) { return tr::pow(x[0], 2); }, true},
      {"x ^ 0.5", [](auto& x) { return tr::pow(x[0], 0.5); }, false},
      {"2 ^ x", [](auto& x) { return tr::pow(2.0, x[0]); }, false},
      {"max(x, 0.5)", [](auto& x) { return tr::maximum(x[0], 0.5); }, true},
      {"min(1, x)", [](auto& x) { return tr::minimum(1, x[0]); }, true},
      {"x == 1", [](auto& x) { return tr::eq(x[0], 1); }, true},
      {"1.5 < x", [](auto& x) { return tr::lt(1.5, x[0]); }, true},
      {"x >= -1", [](auto& x) { return tr::ge(x[0], -1); }, true},
      {"x and 1", [](auto& x) { return tr::logical_and(x[0], 1); }, true},
      {"0 xor x", [](auto& x) { return tr::logical_xor(0, x[0]); }, true},
  };
}

}  // namespace

TEST(CudaElementwise, UnaryOpsMatchTheCpu) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll)
    for (const Case& c : unary_cases()) {
      expect_like_cpu(c.f, {tt::random({3, 5, 7}, dt, 11)}, c.exact, name_of(c.name, {dt}));
      expect_like_cpu(c.f, {tt::random({2053}, dt, 12)}, c.exact, name_of(c.name, {dt}) + " long");
      if (tr::is_floating(dt))
        expect_like_cpu(c.f, {specials(dt)}, c.exact, name_of(c.name, {dt}) + " specials");
    }
}

TEST(CudaElementwise, UnaryOpsOnBroadcastEmptyAndScalarInputs) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Float32, DType::Float16, DType::Int64})
    for (const Case& c : unary_cases()) {
      Tensor x = tt::random({1, 5, 1}, dt, 13);
      Tensor want;
      try {
        want = c.f({x.expand({4, 5, 3})});
      } catch (const tr::Error&) {
        continue;
      }
      expect_matches(c.f({dev(x).expand({4, 5, 3})}), want, c.exact, name_of(c.name, {dt}) + " expanded");
      expect_like_cpu(c.f, {tt::random({0, 3}, dt, 1)}, c.exact, name_of(c.name, {dt}) + " empty");
      expect_like_cpu(c.f, {tt::random({}, dt, 2)}, c.exact, name_of(c.name, {dt}) + " 0-dim");
    }
}

TEST(CudaElementwise, BinaryOpsMatchTheCpuOnEveryDtype) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll)
    for (const Case& c : binary_cases()) {
      std::string what = name_of(c.name, {dt, dt});
      expect_like_cpu(c.f, {tt::random({3, 5, 7}, dt, 21), tt::random({3, 5, 7}, dt, 22, 0.5, 2)}, c.exact, what);
      expect_like_cpu(c.f, {tt::random({2053}, dt, 23), tt::random({2053}, dt, 24)}, c.exact, what + " long");
      expect_like_cpu(c.f, {tt::random({4, 1, 6}, dt, 25), tt::random({5, 1}, dt, 26)}, c.exact, what + " broadcast");
      if (tr::is_floating(dt))
        expect_like_cpu(c.f, {specials(dt), specials(dt, true)}, c.exact, what + " specials");
    }
}

TEST(CudaElementwise, BinaryOpsPromoteMixedDtypesAsTheCpu) {
  TERRA_REQUIRE_GPU();
  const std::pair<DType, DType> pairs[] = {
      {DType::Float16, DType::Float32}, {DType::BFloat16, DType::Float16}, {DType::Int32, DType::Float16},
      {DType::Int64, DType::Float32},   {DType::Bool, DType::Int32},       {DType::Float32, DType::Float64},
      {DType::Int32, DType::BFloat16},  {DType::Int32, DType::Int64},     {DType::Bool, DType::Float16}};
  for (auto [da, db] : pairs)
    for (const Case& c : binary_cases()) {
      expect_like_cpu(c.f, {tt::random({3, 4, 5}, da, 31), tt::random({4, 1}, db, 32)}, c.exact,
                      name_of(c.name, {da, db}));
      expect_like_cpu(c.f, {tt::random({2, 4}, db, 33), tt::random({2, 4}, da, 34)}, c.exact,
                      name_of(c.name, {db, da}));
    }
}

TEST(CudaElementwise, TensorScalarFormsMatchTheCpu) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll)
    for (const Case& c : scalar_cases()) {
      expect_like_cpu(c.f, {tt::random({3, 5, 7}, dt, 41)}, c.exact, name_of(c.name, {dt}));
      expect_like_cpu(c.f, {tt::random({1029}, dt, 42)}, c.exact, name_of(c.name, {dt}) + " long");
    }
}

TEST(CudaElementwise, IntegerPowAndDivisionEdgeCases) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Int32, DType::Int64}) {
    Tensor a = tr::tensor(std::vector<double>{-3, -1, 0, 1, 2, 5, -2, 7}, {8}).to(dt);
    Tensor b = tr::tensor(std::vector<double>{3, -3, 0, -1, 10, 0, 5, -2}, {8}).to(dt);
    for (const Case& c : binary_cases()) expect_like_cpu(c.f, {a, b}, c.exact, name_of(c.name, {dt}) + " edges");
  }
}

TEST(CudaElementwise, MaskedFillAndWhere) {
  TERRA_REQUIRE_GPU();
  Tensor mask = tt::random({1, 6}, DType::Bool, 51);
  Tensor cond = tt::random({4, 1}, DType::Bool, 52);
  for (DType dt : kAll) {
    for (double v : {-1.5, 0.0, 3.0})
      expect_like_cpu([v](auto& x) { return tr::masked_fill(x[0], x[1], v); },
                      {tt::random({4, 6}, dt, 53), mask}, true, name_of("masked_fill", {dt}));
    expect_like_cpu([](auto& x) { return tr::masked_fill(x[0], x[1], 2.0); },
                    {tt::random({1031}, dt, 54), tt::random({1031}, DType::Bool, 55)}, true,
                    name_of("masked_fill long", {dt}));
    for (DType db : kAll) {
      Fn w0 = [](auto& x) { return tr::where(x[2], x[0], x[1]); };
      expect_like_cpu(w0, {tt::random({4, 6}, dt, 56), tt::random({6}, db, 57), cond}, true,
                      name_of("where", {dt, db}));
      expect_like_cpu(w0, {tt::random({1030}, dt, 58), tt::random({1030}, db, 59),
                           tt::random({1030}, DType::Bool, 60)}, true, name_of("where long", {dt, db}));
    }
  }
  // The condition in several layouts too.
  Fn w1 = [](auto& x) { return tr::where(x[0], x[1], x[2]); };
  expect_like_cpu(w1, {tt::random({3, 5, 7}, DType::Bool, 61), tt::random({5, 7}, DType::Float16, 62),
                       tt::random({3, 1, 7}, DType::Float16, 63)}, true, "where cond layouts");
}

TEST(CudaElementwise, CopyConvertsEveryDtypePair) {
  TERRA_REQUIRE_GPU();
  for (DType from : kAll)
    for (DType to : kAll) {
      Fn f = [to](auto& x) { return tr::copy(x[0], to); };
      // Values that every dtype holds exactly enough for a defined conversion (no float->int
      // overflow, which C++ leaves undefined).
      expect_like_cpu(f, {tt::random({3, 5, 7}, from, 71, -100, 100)}, true, name_of("copy", {from, to}));
      expect_like_cpu(f, {tt::random({2051}, from, 72, -3e4, 3e4)}, true, name_of("copy long", {from, to}));
      if (tr::is_floating(from) && tr::is_floating(to))
        expect_like_cpu(f, {specials(from)}, true, name_of("copy specials", {from, to}));
    }
}

TEST(CudaElementwise, CopyIntoStridedAndFromBroadcastViews) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Float32, DType::Float16, DType::Int64, DType::Bool}) {
    Tensor x = tt::random({4, 5}, DType::Float64, 81);
    Tensor want = tr::zeros({4, 10}, {.dtype = dt});
    want.slice(1, 1, 10, 2).copy_(x);
    Tensor got = tr::zeros({4, 10}, {.dtype = dt, .device = tt::kCuda});
    got.slice(1, 1, 10, 2).copy_(dev(x));
    expect_matches(got, want, true, name_of("copy_ into strided", {dt}));
    Tensor row = tt::random({5}, DType::Float32, 82);  // broadcast source (stride 0)
    want.t().slice(0, 0, 10, 2).copy_(row.view({5, 1}));
    got.t().slice(0, 0, 10, 2).copy_(dev(row).view({5, 1}));
    expect_matches(got, want, true, name_of("copy_ from broadcast", {dt}));
  }
}

TEST(CudaElementwise, InPlaceOpsOnStridedOutputs) {
  TERRA_REQUIRE_GPU();
  for (DType dt : {DType::Float32, DType::BFloat16, DType::Int32}) {
    Tensor h = tt::random({6, 8}, dt, 91);
    Tensor d = dev(h);
    Tensor hv = h.slice(1, 0, 8, 2), dv = d.slice(1, 0, 8, 2);
    Tensor o = tt::random({6, 1}, dt, 92);
    hv.add_(o).mul_(o).sub_(o);
    dv.add_(dev(o)).mul_(dev(o)).sub_(dev(o));
    hv.t().masked_fill_(tt::random({4, 1}, DType::Bool, 93), -7);
    dv.t().masked_fill_(dev(tt::random({4, 1}, DType::Bool, 93)), -7);
    expect_matches(d, h, true, name_of("in-place on strided views", {dt}));
  }
}

TEST(CudaElementwise, ErrorsNameTheOp) {
  TERRA_REQUIRE_GPU();
  Tensor b = dev(tt::random({3}, DType::Bool, 1));
  Tensor f = dev(tt::random({3}, DType::Float32, 2));
  tt::expect_error([&] { (void)tr::sub(b, b); }, {"sub", "not supported for bool"});
  tt::expect_error([&] { (void)tr::neg(b); }, {"neg", "not supported for bool"});
  tt::expect_error([&] { (void)tr::add(f, dev(tt::random({4}))); }, {"add"});
  tt::expect_error([&] { (void)tr::add(f, tt::random({3})); }, {"add", "one device"});
  tt::expect_error([&] { (void)tr::masked_fill(f, f, 1.0); }, {"masked_fill", "mask must be bool"});
  tt::expect_error([&] { (void)tr::where(f, f, f); }, {"where", "condition must be bool"});
  Tensor deep = dev(tt::random({2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 2, 2}));  // size-1 dims merge away
  expect_matches(tr::neg(deep.transpose(0, 12)), tr::neg(deep.to(Device::cpu()).transpose(0, 12)), true,
                 "rank 13: size-1 dims merge away");
}

// ---- factories ----

TEST(CudaFactory, FullArangeLinspaceEyeMatchTheCpu) {
  TERRA_REQUIRE_GPU();
  for (DType dt : kAll) {
    auto both = [&](const std::function<Tensor(Device)>& f, const std::string& what) {
      Tensor want;
      try {
        want = f(Device::cpu());
      } catch (const tr::Error&) {
        return;
      }
      expect_matches(f(tt::kCuda), want, true, what + " " + tr::dtype_name(dt));
    };
    both([&](Device d) { return tr::full({3, 1029}, 2.7182818, {dt, d}); }, "full");
    both([&](Device d) { return tr::full({0, 4}, 1.0, {dt, d}); }, "full empty");
    both([&](Device d) { return tr::arange(-3.0, 40.0, 0.1, {dt, d}); }, "arange");
    both([&](Device d) { return tr::arange(5.0, -7.0, -1.5, {dt, d}); }, "arange down");
    for (int64_t n : {0, 1, 2, 5, 6, 1001})
      both([&](Device d) { return tr::linspace(-1.3, 7.9, n, {dt, d}); }, "linspace " + std::to_string(n));
    both([&](Device d) { return tr::eye(5, 7, {dt, d}); }, "eye 5x7");
    both([&](Device d) { return tr::eye(6, 3, {dt, d}); }, "eye 6x3");
    both([&](Device d) { return tr::eye(0, 3, {dt, d}); }, "eye 0x3");
  }
  Tensor h = tr::zeros({4, 6});
  Tensor d = tr::zeros({4, 6}, {.device = tt::kCuda});
  h.t().slice(0, 1, 6, 2).fill_(-2.5);
  d.t().slice(0, 1, 6, 2).fill_(-2.5);
  expect_matches(d, h, true, "fill_ of a strided view");
}

// The same (seed, offset) on both devices: every random dtype bit for bit. A float64 normal
// goes through log and cos, whose last bit CUDA's libdevice and the host libm may round
// differently, so float64 randn alone is compared to a few ulp.
TEST(CudaFactory, RandomNumbersAreTheCpusToTheBit) {
  TERRA_REQUIRE_GPU();
  auto both = [](const std::function<Tensor(Device)>& f, bool exact, const std::string& what) {
    tr::manual_seed(1234);
    Tensor h1 = f(Device::cpu()), h2 = f(Device::cpu());  // the second at a later offset
    tr::manual_seed(1234);
    Tensor d1 = f(tt::kCuda), d2 = f(tt::kCuda);
    expect_matches(d1, h1, exact, what);
    expect_matches(d2, h2, exact, what + " (second draw)");
  };
  for (DType dt : {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16}) {
    std::string n = tr::dtype_name(dt);
    both([&](Device d) { return tr::rand({3, 4099}, {dt, d}); }, true, "rand " + n);
    both([&](Device d) { return tr::randn({3, 4099}, {dt, d}); }, dt != DType::Float64, "randn " + n);
  }
  for (DType dt : {DType::Int64, DType::Int32, DType::Float32, DType::Float16, DType::Float64}) {
    std::string n = tr::dtype_name(dt);
    both([&](Device d) { return tr::randint(-5, 17, {5000}, {dt, d}); }, true, "randint " + n);
    both([&](Device d) { return tr::randint(0, 1000000007, {777}, {dt, d}); }, true, "randint big " + n);
  }
  both([](Device d) { return tr::rand({0, 7}, {.device = d}); }, true, "rand empty");
  tr::manual_seed(99);
  Tensor r = tr::randn({1 << 16}, {.dtype = DType::Float64, .device = tt::kCuda});
  tr::manual_seed(99);
  std::vector<double> g = tt::f64(r), w = tt::f64(tr::randn({1 << 16}, {.dtype = DType::Float64}));
  for (size_t i = 0; i < w.size(); ++i)
    ASSERT_NEAR(g[i], w[i], 2e-15 * std::fabs(w[i]) + 1e-300) << "randn float64 at " << i;
}
