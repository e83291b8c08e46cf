// Elementwise ops against float64 references: every unary and binary op of the table, on
// several shapes and memory layouts, with broadcasting, scalars, promotion and in-place forms.
#include <cmath>

#include "op_test.hpp"

namespace tr = terra;
using tr::DType;
using tr::Shape;
using tr::Tensor;

TERRA_COVERS("copy", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh",
             "sigmoid", "relu", "gelu", "silu", "softplus", "clamp", "logical_not", "add", "sub",
             "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge",
             "logical_and", "logical_or", "logical_xor", "where", "masked_fill",
             "gelu_backward");

namespace {

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> fn;
  std::function<double(double)> ref;
  double lo = -3, hi = 3;  // input range
};

double gelu_erf(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return tr::neg(x); }, [](double x) { return -x; }},
      {"abs", [](const Tensor& x) { return tr::abs(x); }, [](double x) { return std::fabs(x); }},
      {"exp", [](const Tensor& x) { return tr::exp(x); }, [](double x) { return std::exp(x); }},
      {"log", [](const Tensor& x) { return tr::log(x); }, [](double x) { return std::log(x); }, 0.01, 5},
      {"sqrt", [](const Tensor& x) { return tr::sqrt(x); }, [](double x) { return std::sqrt(x); }, 0, 5},
      {"rsqrt", [](const Tensor& x) { return tr::rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, 0.05, 5},
      {"sin", [](const Tensor& x) { return tr::sin(x); }, [](double x) { return std::sin(x); }},
      {"cos", [](const Tensor& x) { return tr::cos(x); }, [](double x) { return std::cos(x); }},
      {"tanh", [](const Tensor& x) { return tr::tanh(x); }, [](double x) { return std::tanh(x); }},
      {"sigmoid", [](const Tensor& x) { return tr::sigmoid(x); }, [](double x) { return 1 / (1 + std::exp(-x)); }},
      {"relu", [](const Tensor& x) { return tr::relu(x); }, [](double x) { return x < 0 ? 0 : x; }},
      {"gelu", [](const Tensor& x) { return tr::gelu(x); }, gelu_erf},
      {"gelu_tanh", [](const Tensor& x) { return tr::gelu(x, "tanh"); }, gelu_tanh},
      {"silu", [](const Tensor& x) { return tr::silu(x); }, [](double x) { return x / (1 + std::exp(-x)); }},
      {"softplus", [](const Tensor& x) { return tr::softplus(x); }, [](double x) { return std::log1p(std::exp(x)); }},
      {"softplus_beta", [](const Tensor& x) { return tr::softplus(x, 2.0, 1.0); },
       [](double x) { return 2 * x > 1 ? x : std::log1p(std::exp(2 * x)) / 2; }},
      {"clamp", [](const Tensor& x) { return tr::clamp(x, -1.0, 0.5); },
       [](double x) { return std::min(std::max(x, -1.0), 0.5); }},
      {"clamp_min", [](const Tensor& x) { return tr::clamp_min(x, 0.25); }, [](double x) { return std::max(x, 0.25); }},
      {"pow_scalar", [](const Tensor& x) { return x.pow(3.0); }, [](double x) { return x * x * x; }},
      {"pow_half", [](const Tensor& x) { return tr::pow(x, 0.5); }, [](double x) { return std::sqrt(x); }, 0, 4},
      {"scalar_minus", [](const Tensor& x) { return 2.5 - x; }, [](double x) { return 2.5 - x; }},
      {"scalar_div", [](const Tensor& x) { return 1.0 / x; }, [](double x) { return 1.0 / x; }, 0.5, 3},
  };
}

const std::vector<Shape> kShapes = {{}, {0}, {1}, {7}, {3, 4}, {2, 3, 5}, {2, 0, 3}};

}  // namespace

TEST(Elementwise, UnaryMatchesFloat64Reference) {
  for (const auto& c : unary_cases()) {
    for (DType dt : {DType::Float32, DType::Float64}) {
      for (const Shape& s : kShapes) {
        Tensor x = tt::random(s, dt, 7, c.lo, c.hi);
        std::vector<double> xv = tt::f64(x), ref(xv.size());
        for (size_t i = 0; i < xv.size(); ++i) ref[i] = c.ref(xv[i]);
        for (const Tensor& xl : tt::layouts(x)) {
          Tensor y = c.fn(xl);
          EXPECT_EQ(y.dtype(), dt) << c.name;
          tt::expect_close(y, s, ref, tt::rtol_of(dt) * 4, dt == DType::Float32 ? 1e-6 : 1e-13,
                           std::string(c.name) + " " + tr::dtype_name(dt) + " " + tr::shape_str(s));
        }
      }
    }
  }
}

TEST(Elementwise, UnaryLargeTensorsUseTheParallelPath) {
  Tensor x = tt::random({300, 257}, DType::Float32, 3);
  Tensor y = tr::exp(x.t());  // strided and big enough to split across threads
  std::vector<double> xv = tt::f64(x.t()), ref(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) ref[i] = std::exp(xv[i]);
  tt::expect_close(y, {257, 300}, ref, 1e-6, 1e-6);
}

TEST(Elementwise, UnaryDtypeRules) {
  Tensor i = tr::tensor<int64_t>({-2, 0, 3});
  EXPECT_EQ(tr::neg(i).dtype(), DType::Int64);
  EXPECT_EQ(tr::neg(i).to_vector<int64_t>(), (std::vector<int64_t>{2, 0, -3}));
  EXPECT_EQ(tr::abs(i).to_vector<int64_t>(), (std::vector<int64_t>{2, 0, 3}));
  EXPECT_EQ(tr::relu(i).to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 3}));
  EXPECT_EQ(tr::exp(i).dtype(), DType::Float32);  // integers compute in float32
  tt::expect_close(tr::exp(i), {3}, {std::exp(-2.0), 1.0, std::exp(3.0)}, 1e-6);
  EXPECT_EQ(tr::clamp(i, -1.0, 1.0).to_vector<int64_t>(), (std::vector<int64_t>{-1, 0, 1}));
  Tensor b = tr::tensor<bool>({true, false});
  EXPECT_EQ(tr::logical_not(b).to_vector<bool>(), (std::vector<bool>{false, true}));
  EXPECT_EQ(tr::logical_not(i).to_vector<bool>(), (std::vector<bool>{false, true, false}));
  tt::expect_error([&] { tr::neg(b); }, {"[terra::neg]", "bool"});
  tt::expect_error([&] { tr::gelu(i, "fast"); }, {"[terra::gelu]", "fast"});
  tt::expect_error([&] { tr::clamp(i, std::nullopt, std::nullopt); }, {"[terra::clamp]"});
}

TEST(Elementwise, NanPropagation) {
  double nan = std::nan("");
  Tensor x = tr::tensor<double>({nan, 1.0, -1.0});
  auto r = tr::relu(x).to_vector<double>();
  EXPECT_TRUE(std::isnan(r[0]));
  auto c = tr::clamp(x, 0.0, 0.5).to_vector<double>();
  EXPECT_TRUE(std::isnan(c[0]));
  EXPECT_EQ(c[1], 0.5);
  auto m = tr::maximum(x, tr::zeros({3}, {.dtype = DType::Float64})).to_vector<double>();
  EXPECT_TRUE(std::isnan(m[0]));
  EXPECT_EQ(m[2], 0.0);
}

namespace {
struct BinaryCase {
  const char* name;
  std::function<Tensor(const Tensor&, const Tensor&)> fn;
  std::function<double(double, double)> ref;
  bool is_bool = false;  // result dtype bool
  double lo = -3, hi = 3;
};
std::vector<BinaryCase> binary_cases() {
  return {
      {"add", [](auto& a, auto& b) { return a + b; }, [](double a, double b) { return a + b; }},
      {"sub", [](auto& a, auto& b) { return a - b; }, [](double a, double b) { return a - b; }},
      {"mul", [](auto& a, auto& b) { return a * b; }, [](double a, double b) { return a * b; }},
      {"div", [](auto& a, auto& b) { return a / b; }, [](double a, double b) { return a / b; }, false, 0.5, 3},
      {"pow", [](auto& a, auto& b) { return tr::pow(a, b); }, [](double a, double b) { return std::pow(a, b); }, false, 0.1, 2},
      {"maximum", [](auto& a, auto& b) { return tr::maximum(a, b); }, [](double a, double b) { return std::max(a, b); }},
      {"minimum", [](auto& a, auto& b) { return tr::minimum(a, b); }, [](double a, double b) { return std::min(a, b); }},
      {"eq", [](auto& a, auto& b) { return a == b; }, [](double a, double b) { return double(a == b); }, true},
      {"ne", [](auto& a, auto& b) { return a != b; }, [](double a, double b) { return double(a != b); }, true},
      {"lt", [](auto& a, auto& b) { return a < b; }, [](double a, double b) { return double(a < b); }, true},
      {"le", [](auto& a, auto& b) { return a <= b; }, [](double a, double b) { return double(a <= b); }, true},
      {"gt", [](auto& a, auto& b) { return a > b; }, [](double a, double b) { return double(a > b); }, true},
      {"ge", [](auto& a, auto& b) { return a >= b; }, [](double a, double b) { return double(a >= b); }, true},
  };
}

// Reference broadcast: the flat index of `shape` element i read through broadcasting from `from`.
std::vector<double> broadcast_values(const std::vector<double>& v, const Shape& from, const Shape& to) {
  std::vector<double> out(size_t(tr::numel_of(to)));
  tr::Strides st = tr::broadcast_strides(from, tr::contiguous_strides(from), to);
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t rem = int64_t(i), off = 0;
    for (size_t d = to.size(); d-- > 0;) {
      off += (rem % to[d]) * st[d];
      rem /= to[d];
    }
    out[i] = v[size_t(off)];
  }
  return out;
}
}  // namespace

TEST(Elementwise, BinaryWithBroadcastingMatchesReference) {
  const std::vector<std::pair<Shape, Shape>> pairs = {
      {{}, {}},          {{5}, {5}},       {{3, 4}, {4}},      {{3, 1}, {1, 4}},
      {{2, 3, 4}, {3, 1}}, {{1}, {2, 3}},  {{2, 0, 3}, {3}},   {{4}, {}},
      {{2, 1, 3}, {2, 4, 1}}};
  for (const auto& c : binary_cases()) {
    for (DType dt : {DType::Float32, DType::Float64}) {
      for (const auto& [sa, sb] : pairs) {
        Tensor a = tt::random(sa, dt, 11, c.lo, c.hi), b = tt::random(sb, dt, 12, c.lo, c.hi);
        if (c.is_bool) b = tr::where(tt::random(sb, DType::Bool, 5), b, tr::zeros({}, {.dtype = dt}) + 0.5);
        Shape so = tr::broadcast_shapes(sa, sb, "test");
        auto av = broadcast_values(tt::f64(a), sa, so), bv = broadcast_values(tt::f64(b), sb, so);
        std::vector<double> ref(av.size());
        for (size_t i = 0; i < ref.size(); ++i) ref[i] = c.ref(av[i], bv[i]);
        for (const Tensor& al : tt::layouts(a)) {
          for (const Tensor& bl : tt::layouts(b)) {
            Tensor y = c.fn(al, bl);
            EXPECT_EQ(y.dtype(), c.is_bool ? DType::Bool : dt) << c.name;
            tt::expect_close(y, so, ref, tt::rtol_of(dt) * 4, 1e-12,
                             std::string(c.name) + " " + tr::shape_str(sa) + " " + tr::shape_str(sb));
          }
        }
      }
    }
  }
}

TEST(Elementwise, TypePromotion) {
  Tensor i32 = tr::tensor<int32_t>({1, 2, 3}), i64 = tr::tensor<int64_t>({4, 5, 6});
  Tensor f32 = tr::tensor<float>({0.5f, 1.5f, 2.5f}), f64 = tr::tensor<double>({1, 2, 3});
  Tensor b = tr::tensor<bool>({true, false, true});
  EXPECT_EQ((i32 + i64).dtype(), DType::Int64);
  EXPECT_EQ((i64 + f32).dtype(), DType::Float32);
  EXPECT_EQ((f32 + f64).dtype(), DType::Float64);
  EXPECT_EQ((b + b).dtype(), DType::Bool);
  EXPECT_EQ((b + i32).dtype(), DType::Int32);
  EXPECT_EQ((i32 * 2).dtype(), DType::Int32);      // an integral scalar keeps the tensor's type
  EXPECT_EQ((i32 * 2.5).dtype(), DType::Float32);  // a floating scalar lifts integers to float32
  EXPECT_EQ((f32 * 2.5).dtype(), DType::Float32);  // and never widens a float tensor
  EXPECT_EQ((b * 2).dtype(), DType::Int64);
  EXPECT_EQ((i32 / i64).dtype(), DType::Float32);  // true division
  EXPECT_EQ((i32 / i64).to_vector<float>(), (std::vector<float>{0.25f, 0.4f, 0.5f}));
  EXPECT_EQ((i64 - 10).to_vector<int64_t>(), (std::vector<int64_t>{-6, -5, -4}));
  EXPECT_EQ((10 - i64).to_vector<int64_t>(), (std::vector<int64_t>{6, 5, 4}));
  EXPECT_EQ(tr::pow(i64, 2).to_vector<int64_t>(), (std::vector<int64_t>{16, 25, 36}));
  EXPECT_EQ(tr::pow(tr::tensor<int64_t>({2, 1, -1}), -1).to_vector<int64_t>(),
            (std::vector<int64_t>{0, 1, -1}));
  EXPECT_EQ((i32 < 2.5).to_vector<bool>(), (std::vector<bool>{true, true, false}));
  EXPECT_EQ((b & (i32 > 1)).to_vector<bool>(), (std::vector<bool>{false, false, true}));
  EXPECT_EQ((b | (i32 > 1)).to_vector<bool>(), (std::vector<bool>{true, true, true}));
  EXPECT_EQ((b ^ (i32 > 1)).to_vector<bool>(), (std::vector<bool>{true, true, false}));
  tt::expect_error([&] { auto r = b - b; }, {"[terra::sub]", "bool"});
}

TEST(Elementwise, ReducedPrecisionComputesInFloat32) {
  for (DType dt : {DType::Float16, DType::BFloat16}) {
    Tensor x = tt::random({4, 5}, DType::Float32, 3);
    Tensor h = x.to(dt);
    Tensor y = tr::exp(h) * 2.0 + h;
    EXPECT_EQ(y.dtype(), dt);
    std::vector<double> hv = tt::f64(h), ref(hv.size());
    for (size_t i = 0; i < hv.size(); ++i) ref[i] = std::exp(hv[i]) * 2 + hv[i];
    tt::expect_close(y, {4, 5}, ref, tt::rtol_of(dt) * 2, 1e-3);
    EXPECT_EQ((h + x).dtype(), DType::Float32);
  }
  EXPECT_EQ(tr::promote_types(DType::Float16, DType::BFloat16), DType::Float32);
}

TEST(Elementwise, WhereAndMaskedFill) {
  Tensor c = tr::tensor<bool>({true, false, true, false}, {2, 2});
  Tensor a = tr::tensor<float>({1, 2, 3, 4}, {2, 2});
  Tensor b = tr::tensor<double>({10, 20});
  Tensor w = tr::where(c, a, b);
  EXPECT_EQ(w.dtype(), DType::Float64);
  EXPECT_EQ(w.to_vector<double>(), (std::vector<double>{1, 20, 3, 20}));
  EXPECT_EQ(tr::where(c.t(), a, b).to_vector<double>(), (std::vector<double>{1, 2, 10, 20}));
  Tensor m = tr::masked_fill(a, tr::tensor<bool>({false, true}), -1.0);
  EXPECT_EQ(m.to_vector<float>(), (std::vector<float>{1, -1, 3, -1}));
  Tensor x = a.clone();
  x.masked_fill_(x > 2.5, 0.0);
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{1, 2, 0, 0}));
  tt::expect_error([&] { tr::where(a, a, a); }, {"[terra::where]", "bool"});
  tt::expect_error([&] { tr::masked_fill(a, tr::tensor<bool>({true, false, true}), 0); },
                   {"[terra::masked_fill]", "[2, 2]"});
  tt::expect_error([&] { tr::masked_fill(b, c, 0); }, {"[terra::masked_fill]", "[2, 2]", "[2]"});
}

TEST(Elementwise, InPlaceOps) {
  Tensor x = tr::tensor<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  auto version = x.storage()->version.load();
  x.add_(tr::tensor<float>({1, 1, 1}));
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{2, 3, 4, 5, 6, 7}));
  EXPECT_GT(x.storage()->version.load(), version);
  x.mul_(2.0).sub_(tr::ones({2, 3}));
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{3, 5, 7, 9, 11, 13}));
  x.add_(tr::ones({2, 3}), -3.0);  // alpha
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{0, 2, 4, 6, 8, 10}));
  x.div_(2.0).clamp_(1, 4);
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{1, 1, 2, 3, 4, 4}));
  // Writing into a strided view updates the base tensor.
  Tensor col = x.select(1, 0);
  col.fill_(9);
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{9, 1, 2, 9, 4, 4}));
  // In-place with an input that overlaps the output differently must not read clobbered values.
  Tensor sq = tr::tensor<float>({1, 2, 3, 4}, {2, 2});
  sq.add_(sq.t());
  EXPECT_EQ(sq.to_vector<float>(), (std::vector<float>{2, 5, 5, 8}));
  // Results are cast into the destination's dtype; floats never go into integer tensors.
  Tensor i = tr::tensor<int64_t>({1, 2});
  i.add_(tr::tensor<int32_t>({5, 5}));
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{6, 7}));
  tt::expect_error([&] { i.add_(tr::tensor<float>({0.5f, 0.5f})); }, {"[terra::add]", "int64"});
  tt::expect_error([&] { x.add_(tr::ones({4})); }, {"[terra::add]", "[2, 3]", "[4]"});
  // A result that would need broadcasting the destination is an error.
  Tensor row = tr::ones({3});
  tt::expect_error([&] { row.add_(tr::ones({2, 3})); }, {"[terra::add]", "[2, 3]", "[3]"});
}

TEST(Elementwise, CopyAndCastBetweenAllDtypes) {
  std::vector<double> v = {0, 1, -2, 3.5, 100};
  Tensor src = tr::tensor(v);
  for (DType a : {DType::Bool, DType::Int32, DType::Int64, DType::Float16, DType::BFloat16,
                  DType::Float32, DType::Float64}) {
    Tensor x = src.to(a);
    EXPECT_EQ(x.dtype(), a);
    for (DType b : {DType::Int64, DType::Float64}) {
      std::vector<double> got = x.to(b).to_vector<double>();
      for (size_t i = 0; i < v.size(); ++i) {
        double e = a == DType::Bool ? double(v[i] != 0) : (tr::is_floating(a) ? v[i] : std::trunc(v[i]));
        if (b == DType::Int64) e = std::trunc(e);
        EXPECT_EQ(got[i], e) << tr::dtype_name(a) << " -> " << tr::dtype_name(b) << " at " << i;
      }
    }
  }
  Tensor dst = tr::zeros({2, 3}, {.dtype = DType::Int32});
  dst.copy_(tr::tensor<double>({1.9, -2.9, 3}));  // broadcast rows, truncating cast
  EXPECT_EQ(dst.to_vector<int32_t>(), (std::vector<int32_t>{1, -2, 3, 1, -2, 3}));
  Tensor c = tr::clone(dst.t());
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.to_vector<int32_t>(), (std::vector<int32_t>{1, 1, -2, -2, 3, 3}));
}

TEST(Elementwise, HalfConversionsRoundCorrectly) {
  EXPECT_EQ(float(tr::Half(1.0f)), 1.0f);
  EXPECT_EQ(float(tr::Half(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(float(tr::Half(65520.0f))));
  EXPECT_EQ(float(tr::Half(5.960464477539063e-08f)), 5.960464477539063e-08f);  // smallest subnormal
  EXPECT_EQ(float(tr::Half(2.98e-08f)), 0.0f);                                  // rounds to zero
  EXPECT_EQ(float(tr::Half(1.0009765625f)), 1.0009765625f);                      // 1 + 2^-10
  EXPECT_EQ(float(tr::Half(1.00048828125f)), 1.0f);  // halfway: ties to even
  EXPECT_TRUE(std::isnan(float(tr::Half(std::nanf("")))));
  EXPECT_EQ(float(tr::BFloat16(1.0f)), 1.0f);
  EXPECT_EQ(float(tr::BFloat16(1.00390625f)), 1.0f);  // halfway: ties to even
  EXPECT_EQ(float(tr::BFloat16(3.0f)), 3.0f);
  EXPECT_TRUE(std::isnan(float(tr::BFloat16(std::nanf("")))));
}

TEST(Elementwise, Errors) {
  Tensor a = tr::ones({2, 3}), b = tr::ones({4});
  tt::expect_error([&] { auto r = a + b; }, {"[terra::add]", "[2, 3]", "[4]", "broadcast"});
  tt::expect_error([&] { auto r = a * Tensor(); }, {"[terra::mul]", "undefined"});
  tt::expect_error([&] { Tensor u; u.shape(); }, {"undefined"});
}

TEST(Elementwise, GeluBackwardIsTheDerivativeOfGelu) {
  Tensor x = tt::random({50}, DType::Float64, 9, -4, 4);
  Tensor g = tt::random({50}, DType::Float64, 10);
  for (const char* form : {"none", "tanh"}) {
    auto xv = tt::f64(x), gv = tt::f64(g);
    std::vector<double> ref(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) {
      auto f = [&](double v) { return std::string(form) == "tanh" ? gelu_tanh(v) : gelu_erf(v); };
      ref[i] = gv[i] * (f(xv[i] + 1e-6) - f(xv[i] - 1e-6)) / 2e-6;
    }
    tt::expect_close(tr::gelu_backward(g, x, form), {50}, ref, 1e-7, 1e-8, form);
    tt::expect_close(tr::gelu_backward(g.to(DType::Float32), x.to(DType::Float32), form), {50}, ref, 1e-5, 1e-5, form);
  }
  tt::expect_error([&] { tr::gelu_backward(g, tr::ones({3}, {.dtype = DType::Float64})); }, {"[terra::gelu_backward]", "[50]", "[3]"});
}
