// terra/ops/elementwise.hpp: elementwise unary, binary and ternary ops.
// Each op is a functor usable on host and device, plus the rule for its result dtype. The
// backends instantiate the same functors; a fused chain calls them one after another, so
// fused and unfused results round identically.
#pragma once

#include <optional>
#include <string_view>
#include <type_traits>

#include "terra/core/math.hpp"
#include "terra/ops/op.hpp"

namespace terra::op {

// How an op picks its compute and result dtype from its input dtype(s).
enum class DTypeRule : uint8_t {
  Same,       // result = input type (bool rejected where arithmetic makes no sense)
  Float,      // integers and bool compute in float32
  Bool,       // compute in the (promoted) input type, result bool
  Logical,    // compute in bool, result bool
};

struct Stateless {
  Stateless() = default;
  explicit Stateless(const Attrs&) {}
};

// ---- unary ----
template <class Derived, DTypeRule R, bool AllowBool = false>
struct UnaryOp : Stateless {
  using Stateless::Stateless;
  static constexpr DTypeRule rule = R;
  static DType compute_dtype(DType in, const char* name) {
    if (R == DTypeRule::Logical) return DType::Bool;
    TERRA_CHECK(AllowBool || in != DType::Bool || R == DTypeRule::Float, name,
                "is not supported for bool tensors");
    if (R == DTypeRule::Float && !is_floating(in)) return DType::Float32;
    return in;
  }
  static DType result_dtype(DType compute) {
    return R == DTypeRule::Bool || R == DTypeRule::Logical ? DType::Bool : compute;
  }
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    DType cd = compute_dtype(x.dtype(), op_name(c.op));
    out.push_back(detail::meta(x.shape(), result_dtype(cd), x.device()));
  }
};

// A unary op whose functor is one expression of x: its struct, dtype rule, save policy and vjp
// declaration (the vjp is in ops/vjp/elementwise.hpp).
#define TERRA_UNARY_FUNCTOR(Type, R, save, expr)                             \
  struct Type : UnaryOp<Type, DTypeRule::R> {                                \
    static constexpr uint8_t saves = save;                                   \
    TERRA_VJP;                                                               \
    using UnaryOp::UnaryOp;                                                  \
    template <class T> TERRA_HD T operator()(T x) const { return expr; }     \
  };
// The same for a float-rule functor on the vectorizable math of core/math.hpp: always inlined,
// and its contiguous CPU loop has an AVX2 clone (backend/cpu/loops.hpp).
#define TERRA_UNARY_VEC_FUNCTOR(Type, save, expr)                                 \
  struct Type : UnaryOp<Type, DTypeRule::Float> {                                 \
    static constexpr uint8_t saves = save;                                        \
    static constexpr bool avx2_clone = true;                                      \
    TERRA_VJP;                                                                    \
    using UnaryOp::UnaryOp;                                                       \
    template <class T> TERRA_MATH_VEC T operator()(T x) const { return expr; }    \
  };

TERRA_UNARY_FUNCTOR(Neg, Same, kSaveNone, -x)
TERRA_UNARY_FUNCTOR(Abs, Same, kSaveInputs, x < T(0) ? T(-x) : x)
// exp, sigmoid and silu through math::vexp: a polynomial the CPU loop vectorizes (glibc's
// expf is one call per element, 2-3x slower here); double and device code keep the library's.
TERRA_UNARY_VEC_FUNCTOR(Exp, kSaveOutputs, math::vexp(x))
TERRA_UNARY_FUNCTOR(Log, Float, kSaveInputs, math::log(x))
TERRA_UNARY_FUNCTOR(Sqrt, Float, kSaveOutputs, math::sqrt(x))
TERRA_UNARY_FUNCTOR(Rsqrt, Float, kSaveOutputs, T(1) / math::sqrt(x))
TERRA_UNARY_FUNCTOR(Sin, Float, kSaveInputs, math::sin(x))
TERRA_UNARY_FUNCTOR(Cos, Float, kSaveInputs, math::cos(x))
TERRA_UNARY_VEC_FUNCTOR(Tanh, kSaveOutputs, math::vtanh(x))
TERRA_UNARY_VEC_FUNCTOR(Sigmoid, kSaveOutputs, T(1) / (T(1) + math::vexp(-x)))
struct Relu : UnaryOp<Relu, DTypeRule::Same> {
  static constexpr uint8_t saves = kSaveOutputs;
  TERRA_VJP;
  using UnaryOp::UnaryOp;
  // x < 0 ? 0 : x keeps NaN, as PyTorch does.
  template <class T> TERRA_HD T operator()(T x) const { return x < T(0) ? T(0) : x; }
};
TERRA_UNARY_VEC_FUNCTOR(Silu, kSaveInputs, x / (T(1) + math::vexp(-x)))
struct LogicalNot : UnaryOp<LogicalNot, DTypeRule::Logical> {
  using UnaryOp::UnaryOp;
  template <class T> TERRA_HD bool operator()(T x) const { return !x; }
};

// attrs.ints[0]: 0 = exact (erf) form, 1 = tanh approximation.
// gelu's two forms as functors of their own. A functor with a run-time choice offers
// with_form(g): it calls g with the functor of its form, so that CPU loops make the choice
// once, outside the loop (backend/cpu/loops.hpp); GCC does not unswitch a loop on a member
// flag, and a loop with a branch inside does not vectorize.
struct GeluErfForm {
  static constexpr bool avx2_clone = true;  // CPU: see backend/cpu/loops.hpp
  template <class T> TERRA_MATH_VEC T operator()(T x) const {
    return T(0.5) * x * (T(1) + math::verf(x * T(0.7071067811865476)));
  }
};
struct GeluTanhForm {
  static constexpr bool avx2_clone = true;
  template <class T> TERRA_MATH_VEC T operator()(T x) const {
    const T k = T(0.7978845608028654);  // sqrt(2 / pi)
    return T(0.5) * x * (T(1) + math::vtanh(k * (x + T(0.044715) * x * x * x)));
  }
};

struct Gelu : UnaryOp<Gelu, DTypeRule::Float> {
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  bool tanh_form = false;
  Gelu() = default;
  explicit Gelu(const Attrs& a) : tanh_form(!a.ints.empty() && a.ints[0] != 0) {}
  template <class T> TERRA_HD T operator()(T x) const {
    return tanh_form ? GeluTanhForm{}(x) : GeluErfForm{}(x);
  }
  template <class G> void with_form(const G& g) const {
    if (tanh_form)
      g(GeluTanhForm{});
    else
      g(GeluErfForm{});
  }
};

// attrs.scalars: {beta, threshold}; linear above threshold, as PyTorch.
struct Softplus : UnaryOp<Softplus, DTypeRule::Float> {
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  double beta = 1, threshold = 20;
  Softplus() = default;
  explicit Softplus(const Attrs& a) : beta(a.scalars[0]), threshold(a.scalars[1]) {}
  template <class T> TERRA_HD T operator()(T x) const {
    T bx = T(beta) * x;
    return bx > T(threshold) ? x : math::log1p(math::exp(bx)) / T(beta);
  }
};

// attrs.scalars: {lo, hi}; attrs.ints: {has_lo, has_hi}. NaN stays NaN.
struct Clamp : UnaryOp<Clamp, DTypeRule::Same> {
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  double lo = 0, hi = 0;
  bool has_lo = false, has_hi = false;
  Clamp() = default;
  explicit Clamp(const Attrs& a)
      : lo(a.scalars[0]), hi(a.scalars[1]), has_lo(a.ints[0] != 0), has_hi(a.ints[1] != 0) {}
  template <class T> TERRA_HD T operator()(T x) const {
    if (has_lo && x < T(lo)) return T(lo);
    if (has_hi && x > T(hi)) return T(hi);
    return x;
  }
};

// Copy with conversion to attrs.dtype: clone, contiguous, to(dtype), copy_.
struct Copy : Stateless {
  using Stateless::Stateless;
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    out.push_back(detail::meta(x.shape(), c.attrs.dtype, x.device()));
  }
};

// ---- binary ----
// Binary ops take two tensors, or one tensor and a scalar: then attrs.scalars[0] is the
// scalar, attrs.ints = {scalar_on_left, scalar_is_integral}.
inline bool has_scalar_operand(const OpCall& c) { return c.inputs.size() == 1; }

template <class Derived, DTypeRule R, bool AllowBool = true, bool IntToFloat = false>
struct BinaryOp : Stateless {
  using Stateless::Stateless;
  static constexpr DTypeRule rule = R;
  static DType compute_dtype(const OpCall& c) {
    const char* name = op_name(c.op);
    if (R == DTypeRule::Logical) return DType::Bool;
    DType t = has_scalar_operand(c) ? promote_with_scalar(c.inputs[0].dtype(), c.attrs.ints[1] != 0)
                                    : promote_types(c.inputs[0].dtype(), c.inputs[1].dtype());
    TERRA_CHECK(AllowBool || t != DType::Bool, name, "is not supported for bool tensors");
    if (IntToFloat && !is_floating(t)) return DType::Float32;
    return t;
  }
  static void infer(const OpCall& c, MetaList& out) {
    const char* name = op_name(c.op);
    TERRA_CHECK(c.inputs.size() == 2 || (c.inputs.size() == 1 && c.attrs.scalars.size() == 1 &&
                                         c.attrs.ints.size() == 2),
                name, "expects two tensors, or a tensor and a scalar");
    Shape s = has_scalar_operand(c) ? c.inputs[0].shape()
                                    : broadcast_shapes(c.inputs[0].shape(), c.inputs[1].shape(), name);
    DType cd = compute_dtype(c);
    DType rd = R == DTypeRule::Bool || R == DTypeRule::Logical ? DType::Bool : cd;
    out.push_back(detail::meta(std::move(s), rd, c.inputs[0].device()));
  }
};

struct Add : BinaryOp<Add, DTypeRule::Same> {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  using BinaryOp::BinaryOp;
  template <class T> TERRA_HD T operator()(T a, T b) const {
    if constexpr (std::is_same_v<T, bool>) return a || b;
    else return a + b;
  }
};
struct Sub : BinaryOp<Sub, DTypeRule::Same, false> {
  static constexpr uint8_t saves = kSaveNone;
  TERRA_VJP;
  using BinaryOp::BinaryOp;
  template <class T> TERRA_HD T operator()(T a, T b) const { return a - b; }
};
struct Mul : BinaryOp<Mul, DTypeRule::Same> {
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  using BinaryOp::BinaryOp;
  template <class T> TERRA_HD T operator()(T a, T b) const {
    if constexpr (std::is_same_v<T, bool>) return a && b;
    else return a * b;
  }
};
// True division: integers divide in float32.
struct Div : BinaryOp<Div, DTypeRule::Same, true, true> {
  static constexpr uint8_t saves = kSaveAll;
  TERRA_VJP;
  using BinaryOp::BinaryOp;
  template <class T> TERRA_HD T operator()(T a, T b) const { return a / b; }
};
struct Pow : BinaryOp<Pow, DTypeRule::Same, false> {
  static constexpr uint8_t saves = kSaveAll;
  TERRA_VJP;
  using BinaryOp::BinaryOp;
  template <class T> TERRA_HD T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      return math::pow(a, b);
    } else if constexpr (std::is_same_v<T, bool>) {
      return a || !b;  // never reached: pow rejects bool; keeps the instantiation well-formed
    } else {  // integer power by squaring; negative exponents give 0 unless |a| == 1
      if (b < 0) return a == 1 ? T(1) : (a == -1 ? T((b & 1) ? -1 : 1) : T(0));
      T r = 1;
      for (; b; b >>= 1, a *= a)
        if (b & 1) r *= a;
      return r;
    }
  }
};
// maximum/minimum propagate NaN, as PyTorch.
struct Maximum : BinaryOp<Maximum, DTypeRule::Same> {
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  using BinaryOp::BinaryOp;
  template <class T> TERRA_HD T operator()(T a, T b) const {
    if (math::isnan(a)) return a;
    if (math::isnan(b)) return b;
    return a > b ? a : b;
  }
};
struct Minimum : BinaryOp<Minimum, DTypeRule::Same> {
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  using BinaryOp::BinaryOp;
  template <class T> TERRA_HD T operator()(T a, T b) const {
    if (math::isnan(a)) return a;
    if (math::isnan(b)) return b;
    return a < b ? a : b;
  }
};
#define TERRA_COMPARISON(Type, expr)                                   \
  struct Type : BinaryOp<Type, DTypeRule::Bool> {                      \
    using BinaryOp::BinaryOp;                                          \
    template <class T> TERRA_HD bool operator()(T a, T b) const { return expr; } \
  };
TERRA_COMPARISON(Eq, a == b)
TERRA_COMPARISON(Ne, a != b)
TERRA_COMPARISON(Lt, a < b)
TERRA_COMPARISON(Le, a <= b)
TERRA_COMPARISON(Gt, a > b)
TERRA_COMPARISON(Ge, a >= b)
#undef TERRA_COMPARISON
struct LogicalAnd : BinaryOp<LogicalAnd, DTypeRule::Logical> {
  using BinaryOp::BinaryOp;
  TERRA_HD bool operator()(bool a, bool b) const { return a && b; }
};
struct LogicalOr : BinaryOp<LogicalOr, DTypeRule::Logical> {
  using BinaryOp::BinaryOp;
  TERRA_HD bool operator()(bool a, bool b) const { return a || b; }
};
struct LogicalXor : BinaryOp<LogicalXor, DTypeRule::Logical> {
  using BinaryOp::BinaryOp;
  TERRA_HD bool operator()(bool a, bool b) const { return a != b; }
};

// gelu_backward(g, x) = g * gelu'(x); attrs.ints[0] as Gelu. The backward of gelu is its own
// elementwise op (it needs erf, which no other op provides), so it fuses like any other.
struct GeluBackwardErfForm {
  static constexpr bool avx2_clone = true;  // CPU: see backend/cpu/loops.hpp
  template <class T>
    requires std::is_floating_point_v<T>
  TERRA_MATH_VEC T operator()(T g, T x) const {
    const T cdf = T(0.5) * (T(1) + math::verf(x * T(0.7071067811865476)));
    const T pdf = math::vexp(T(-0.5) * x * x) * T(0.3989422804014327);  // 1 / sqrt(2 pi)
    return g * (cdf + x * pdf);
  }
};
struct GeluBackwardTanhForm {
  static constexpr bool avx2_clone = true;
  template <class T>
    requires std::is_floating_point_v<T>
  TERRA_MATH_VEC T operator()(T g, T x) const {
    const T k = T(0.7978845608028654), c = T(0.044715);
    T t = math::vtanh(k * (x + c * x * x * x));
    return g * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * c * x * x));
  }
};

struct GeluBackward : BinaryOp<GeluBackward, DTypeRule::Same, false, true> {
  bool tanh_form = false;
  GeluBackward() = default;
  explicit GeluBackward(const Attrs& a) : tanh_form(!a.ints.empty() && a.ints[0] != 0) {}
  template <class T>
    requires std::is_floating_point_v<T>
  TERRA_HD T operator()(T g, T x) const {
    return tanh_form ? GeluBackwardTanhForm{}(g, x) : GeluBackwardErfForm{}(g, x);
  }
  template <class G> void with_form(const G& g) const {
    if (tanh_form)
      g(GeluBackwardTanhForm{});
    else
      g(GeluBackwardErfForm{});
  }
};

// masked_fill(x, mask, value): x where !mask, else value. attrs.scalars[0] = value.
struct MaskedFill : Stateless {
  using Stateless::Stateless;
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor& x = c.inputs[0];
    const Tensor& m = c.inputs[1];
    TERRA_CHECK(m.dtype() == DType::Bool, "masked_fill", "mask must be bool, got ", m.dtype());
    TERRA_CHECK(c.attrs.scalars.size() == 1, "masked_fill", "expects one fill value");
    Shape s = broadcast_shapes(x.shape(), m.shape(), "masked_fill");
    TERRA_CHECK(s == x.shape(), "masked_fill", "mask of shape ", m.shape(),
                " does not broadcast to the input shape ", x.shape());
    out.push_back(detail::meta(x.shape(), x.dtype(), x.device()));
  }
};

// where(cond, a, b): a where cond, else b; all three broadcast.
struct Where : Stateless {
  using Stateless::Stateless;
  static constexpr uint8_t saves = kSaveInputs;
  TERRA_VJP;
  static void infer(const OpCall& c, MetaList& out) {
    const Tensor &cond = c.inputs[0], &a = c.inputs[1], &b = c.inputs[2];
    TERRA_CHECK(cond.dtype() == DType::Bool, "where", "condition must be bool, got ", cond.dtype());
    Shape s = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
    out.push_back(detail::meta(std::move(s), promote_types(a.dtype(), b.dtype()), a.device()));
  }
};

}  // namespace terra::op

namespace terra {

namespace detail {
inline Tensor unary(Op op, const Tensor& x, Loc loc, Attrs attrs = {}) {
  const Tensor in[] = {x};
  return dispatch1({.op = op, .inputs = in, .attrs = std::move(attrs), .loc = loc});
}
inline Tensor binary(Op op, const Tensor& a, const Tensor& b, Loc loc) {
  const Tensor in[] = {a, b};
  return dispatch1({.op = op, .inputs = in, .loc = loc});
}
template <class S>
Tensor binary_scalar(Op op, const Tensor& a, S s, bool scalar_left, Loc loc) {
  static_assert(std::is_arithmetic_v<S>, "scalar operand must be a number");
  const Tensor in[] = {a};
  Attrs attrs;
  attrs.scalars = {double(s)};
  attrs.ints = {scalar_left ? 1 : 0, std::is_integral_v<S> ? 1 : 0};
  return dispatch1({.op = op, .inputs = in, .attrs = std::move(attrs), .loc = loc});
}
}  // namespace detail

template <class S>
concept Scalar = std::is_arithmetic_v<S>;

// ---- unary: x -> same shape ----
#define TERRA_UNARY_FN(name, Type) \
  inline Tensor name(const Tensor& x, Loc loc = Loc::current()) { return detail::unary(Op::Type, x, loc); }
TERRA_UNARY_FN(neg, Neg)
TERRA_UNARY_FN(abs, Abs)
TERRA_UNARY_FN(exp, Exp)
TERRA_UNARY_FN(log, Log)
TERRA_UNARY_FN(sqrt, Sqrt)
TERRA_UNARY_FN(rsqrt, Rsqrt)
TERRA_UNARY_FN(sin, Sin)
TERRA_UNARY_FN(cos, Cos)
TERRA_UNARY_FN(tanh, Tanh)
TERRA_UNARY_FN(sigmoid, Sigmoid)
TERRA_UNARY_FN(relu, Relu)
TERRA_UNARY_FN(silu, Silu)
TERRA_UNARY_FN(logical_not, LogicalNot)
#undef TERRA_UNARY_FN

/// approximate: "none" (erf form) or "tanh".
inline Tensor gelu(const Tensor& x, std::string_view approximate = "none", Loc loc = Loc::current()) {
  TERRA_CHECK(approximate == "none" || approximate == "tanh", "gelu",
              "approximate must be \"none\" or \"tanh\", got \"", approximate, "\"");
  Attrs a;
  a.ints = {approximate == "tanh" ? 1 : 0};
  return detail::unary(Op::Gelu, x, loc, std::move(a));
}
/// log(1 + exp(beta * x)) / beta, elementwise; x where beta * x > threshold, for stability
/// (torch::softplus). Integer and bool inputs compute in float32. Throws if beta == 0.
inline Tensor softplus(const Tensor& x, double beta = 1.0, double threshold = 20.0,
                       Loc loc = Loc::current()) {
  TERRA_CHECK(beta != 0, "softplus", "beta must be non-zero");
  Attrs a;
  a.scalars = {beta, threshold};
  return detail::unary(Op::Softplus, x, loc, std::move(a));
}
/// x limited to [lo, hi]; either bound may be std::nullopt, not both (throws). Same shape
/// and dtype as x (bool is rejected); NaN stays NaN; if lo > hi every element becomes hi,
/// as torch::clamp. Its gradient is 1 where lo <= x <= hi, else 0.
inline Tensor clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi,
                    Loc loc = Loc::current()) {
  TERRA_CHECK(lo || hi, "clamp", "at least one of min and max must be given");
  Attrs a;
  a.scalars = {lo.value_or(0.0), hi.value_or(0.0)};
  a.ints = {lo ? 1 : 0, hi ? 1 : 0};
  return detail::unary(Op::Clamp, x, loc, std::move(a));
}
/// max(x, lo) elementwise: clamp(x, lo, std::nullopt).
inline Tensor clamp_min(const Tensor& x, double lo, Loc loc = Loc::current()) {
  return clamp(x, lo, std::nullopt, loc);
}
/// min(x, hi) elementwise: clamp(x, std::nullopt, hi).
inline Tensor clamp_max(const Tensor& x, double hi, Loc loc = Loc::current()) {
  return clamp(x, std::nullopt, hi, loc);
}
/// Copy converting to dtype (a new, contiguous tensor even when the dtype is unchanged).
inline Tensor copy(const Tensor& x, DType dtype, Loc loc = Loc::current()) {
  Attrs a;
  a.dtype = dtype;
  return detail::unary(Op::Copy, x, loc, std::move(a));
}

// ---- binary: broadcast(a, b) -> result ----
#define TERRA_BINARY_FN(name, Type)                                                          \
  inline Tensor name(const Tensor& a, const Tensor& b, Loc loc = Loc::current()) {          \
    return detail::binary(Op::Type, a, b, loc);                                             \
  }                                                                                          \
  template <Scalar S>                                                                        \
  Tensor name(const Tensor& a, S b, Loc loc = Loc::current()) {                              \
    return detail::binary_scalar(Op::Type, a, b, false, loc);                               \
  }                                                                                          \
  template <Scalar S>                                                                        \
  Tensor name(S a, const Tensor& b, Loc loc = Loc::current()) {                              \
    return detail::binary_scalar(Op::Type, b, a, true, loc);                                \
  }
TERRA_BINARY_FN(add, Add)
TERRA_BINARY_FN(sub, Sub)
TERRA_BINARY_FN(mul, Mul)
TERRA_BINARY_FN(div, Div)
TERRA_BINARY_FN(pow, Pow)
TERRA_BINARY_FN(maximum, Maximum)
TERRA_BINARY_FN(minimum, Minimum)
TERRA_BINARY_FN(eq, Eq)
TERRA_BINARY_FN(ne, Ne)
TERRA_BINARY_FN(lt, Lt)
TERRA_BINARY_FN(le, Le)
TERRA_BINARY_FN(gt, Gt)
TERRA_BINARY_FN(ge, Ge)
TERRA_BINARY_FN(logical_and, LogicalAnd)
TERRA_BINARY_FN(logical_or, LogicalOr)
TERRA_BINARY_FN(logical_xor, LogicalXor)
#undef TERRA_BINARY_FN

/// a + alpha * b (as LibTorch's add with alpha).
inline Tensor add(const Tensor& a, const Tensor& b, double alpha, Loc loc = Loc::current()) {
  return alpha == 1.0 ? add(a, b, loc) : add(a, mul(b, alpha, loc), loc);
}

/// x with `value` where mask is true; mask broadcasts to x's shape.
inline Tensor masked_fill(const Tensor& x, const Tensor& mask, double value, Loc loc = Loc::current()) {
  const Tensor in[] = {x, mask};
  Attrs a;
  a.scalars = {value};
  return dispatch1({.op = Op::MaskedFill, .inputs = in, .attrs = std::move(a), .loc = loc});
}
/// cond ? a : b, elementwise with broadcasting.
inline Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b, Loc loc = Loc::current()) {
  const Tensor in[] = {cond, a, b};
  return dispatch1({.op = Op::Where, .inputs = in, .loc = loc});
}

/// Operators, as in LibTorch: arithmetic, comparisons (bool tensors) and logical ops.
inline Tensor operator-(const Tensor& x) { return neg(x); }
#define TERRA_BINARY_OPERATOR(sym, fn)                                                   \
  inline Tensor operator sym(const Tensor& a, const Tensor& b) { return fn(a, b); }      \
  template <Scalar S> Tensor operator sym(const Tensor& a, S b) { return fn(a, b); }    \
  template <Scalar S> Tensor operator sym(S a, const Tensor& b) { return fn(a, b); }
TERRA_BINARY_OPERATOR(+, add)
TERRA_BINARY_OPERATOR(-, sub)
TERRA_BINARY_OPERATOR(*, mul)
TERRA_BINARY_OPERATOR(/, div)
TERRA_BINARY_OPERATOR(==, eq)
TERRA_BINARY_OPERATOR(!=, ne)
TERRA_BINARY_OPERATOR(<, lt)
TERRA_BINARY_OPERATOR(<=, le)
TERRA_BINARY_OPERATOR(>, gt)
TERRA_BINARY_OPERATOR(>=, ge)
TERRA_BINARY_OPERATOR(&, logical_and)
TERRA_BINARY_OPERATOR(|, logical_or)
TERRA_BINARY_OPERATOR(^, logical_xor)
#undef TERRA_BINARY_OPERATOR
/// logical_not(x): a bool tensor, true where x == 0 (any input dtype).
inline Tensor operator!(const Tensor& x) { return logical_not(x); }

/// gelu_backward(g, x): g * d gelu(x) / dx (the vjp of gelu).
inline Tensor gelu_backward(const Tensor& g, const Tensor& x, std::string_view approximate = "none",
                            Loc loc = Loc::current()) {
  const Tensor in[] = {g, x};
  Attrs a;
  a.ints = {approximate == "tanh" ? 1 : 0};
  return dispatch1({.op = Op::GeluBackward, .inputs = in, .attrs = std::move(a), .loc = loc});
}

}  // namespace terra

