// terra/backend/cpu/elementwise.hpp: CPU kernels of the elementwise ops, instantiated from the
// functors in ops/elementwise.hpp.
#pragma once

#include <bit>
#include <cstdint>
#include <type_traits>

#include "terra/backend/cpu/loops.hpp"
#include "terra/backend/cpu/registry.hpp"
#include "terra/ops/elementwise.hpp"

namespace terra::cpu {

// ---- copy with conversion: the one kernel that sees every dtype pair ----
template <class To, class From>
TERRA_HD To convert(From v) {
  if constexpr (std::is_same_v<To, bool>) return static_cast<float>(v) != 0.0f;
  else if constexpr (std::is_same_v<To, Half> || std::is_same_v<To, BFloat16>) return To(float(v));
  else if constexpr (std::is_same_v<From, Half> || std::is_same_v<From, BFloat16>) return To(float(v));
  else return static_cast<To>(v);
}

// dst = src (broadcast to dst's shape), converting dtypes; dst may be strided.
inline void copy_into(const Tensor& src, const Tensor& dst) {
  if (dst.numel() == 0) return;
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous() &&
      src.shape() == dst.shape()) {
    std::memcpy(dst.raw_data(), src.raw_data(), dst.nbytes());
    return;
  }
  TERRA_DISPATCH_ALL(dst.dtype(), "copy", {
    using To = T;
    TERRA_DISPATCH_ALL(src.dtype(), "copy", {
      map<To, T>([](T v) { return convert<To, T>(v); }, dst, {src});
    });
  });
}

// A contiguous copy of x in dtype dt (x itself when nothing needs to change).
inline Tensor cast(const Tensor& x, DType dt) {
  if (x.dtype() == dt) return x;
  Tensor y = empty(x.shape(), dt);
  copy_into(x, y);
  return y;
}

inline void copy_kernel(const OpCall& c, std::span<Tensor> outs) { copy_into(c.inputs[0], outs[0]); }
template <> inline constexpr KernelFn cpu_kernel<op::Copy> = &copy_kernel;

// ---- unary ----
template <class OpT>
void unary_kernel(const OpCall& c, std::span<Tensor> outs) {
  const char* name = op_name(c.op);
  DType cd = OpT::compute_dtype(c.inputs[0].dtype(), name);
  Tensor x = cast(c.inputs[0], cd);
  OpT f(c.attrs);
  TERRA_DISPATCH_COMPUTE(cd, name, {
    if constexpr (OpT::rule == op::DTypeRule::Logical) {
      map<bool, T>(f, outs[0], {x});
    } else if constexpr (OpT::rule == op::DTypeRule::Float) {
      if constexpr (std::is_floating_point_v<T>) map<T, T>(f, outs[0], {x}, 4);
    } else if constexpr (!std::is_same_v<T, bool>) {
      map<T, T>(f, outs[0], {x});
    }
  });
}

// ---- binary ----
template <class OpT>
void binary_kernel(const OpCall& c, std::span<Tensor> outs) {
  const char* name = op_name(c.op);
  DType cd = OpT::compute_dtype(c);
  Tensor a = cast(c.inputs[0], cd);
  OpT f(c.attrs);
  if (op::has_scalar_operand(c)) {  // the scalar, converted as a copy would, in a register
    const bool left = c.attrs.ints[0] != 0;
    TERRA_DISPATCH_COMPUTE(cd, name, {
      using R = std::conditional_t<OpT::rule == op::DTypeRule::Same, T, bool>;
      if constexpr (std::is_invocable_v<OpT, T, T>) {
        const T sv = convert<T, double>(c.attrs.scalars[0]);
        if (left) map<R, T>([&](T x) { return f(sv, x); }, outs[0], {a});
        else map<R, T>([&](T x) { return f(x, sv); }, outs[0], {a});
      }
    });
    return;
  }
  Tensor b = cast(c.inputs[1], cd);
  TERRA_DISPATCH_COMPUTE(cd, name, {
    using R = std::conditional_t<OpT::rule == op::DTypeRule::Same, T, bool>;
    if constexpr (std::is_invocable_v<OpT, T, T>) map<R, T, T>(f, outs[0], {a, b});
  });
}

// ---- masked_fill and where ----
// k ? x : y without a branch. For floats GCC emits a branch, which a random mask (relu's
// gradient) mispredicts half the time: masked_fill ran 10x slower than a multiply.
// Always inlined: callers compiled with other flags (no-trapping-math, AVX2 clones) would
// otherwise call it out of line and lose their vectorized loops.
template <class T>
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))
#endif
inline T select(bool k, T x, T y) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    return math::select_bits(k, x, y);
  } else {
    return k ? x : y;
  }
}

inline void masked_fill_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor &x = c.inputs[0], &m = c.inputs[1];
  TERRA_DISPATCH_COMPUTE(x.dtype(), "masked_fill", {
    const T v = convert<T, double>(c.attrs.scalars[0]);
    map<T, T, bool>([v](T a, bool mk) { return select(mk, v, a); }, outs[0], {x, m});
  });
}
template <> inline constexpr KernelFn cpu_kernel<op::MaskedFill> = &masked_fill_kernel;

inline void where_kernel(const OpCall& c, std::span<Tensor> outs) {
  DType dt = outs[0].dtype();
  Tensor a = cast(c.inputs[1], dt), b = cast(c.inputs[2], dt);
  TERRA_DISPATCH_COMPUTE(dt, "where", {
    map<T, bool, T, T>([](bool k, T x, T y) { return select(k, x, y); }, outs[0],
                       {c.inputs[0], a, b});
  });
}
template <> inline constexpr KernelFn cpu_kernel<op::Where> = &where_kernel;

#define TERRA_CPU_UNARY(Type) \
  template <> inline constexpr KernelFn cpu_kernel<op::Type> = &unary_kernel<op::Type>;
TERRA_CPU_UNARY(Neg)
TERRA_CPU_UNARY(Abs)
TERRA_CPU_UNARY(Exp)
TERRA_CPU_UNARY(Log)
TERRA_CPU_UNARY(Sqrt)
TERRA_CPU_UNARY(Rsqrt)
TERRA_CPU_UNARY(Sin)
TERRA_CPU_UNARY(Cos)
TERRA_CPU_UNARY(Tanh)
TERRA_CPU_UNARY(Sigmoid)
TERRA_CPU_UNARY(Relu)
TERRA_CPU_UNARY(Gelu)
TERRA_CPU_UNARY(Silu)
TERRA_CPU_UNARY(Softplus)
TERRA_CPU_UNARY(Clamp)
TERRA_CPU_UNARY(LogicalNot)
#undef TERRA_CPU_UNARY
#define TERRA_CPU_BINARY(Type) \
  template <> inline constexpr KernelFn cpu_kernel<op::Type> = &binary_kernel<op::Type>;
TERRA_CPU_BINARY(Add)
TERRA_CPU_BINARY(Sub)
TERRA_CPU_BINARY(Mul)
TERRA_CPU_BINARY(Div)
TERRA_CPU_BINARY(Pow)
TERRA_CPU_BINARY(Maximum)
TERRA_CPU_BINARY(Minimum)
TERRA_CPU_BINARY(Eq)
TERRA_CPU_BINARY(Ne)
TERRA_CPU_BINARY(Lt)
TERRA_CPU_BINARY(Le)
TERRA_CPU_BINARY(Gt)
TERRA_CPU_BINARY(Ge)
TERRA_CPU_BINARY(LogicalAnd)
TERRA_CPU_BINARY(LogicalOr)
TERRA_CPU_BINARY(LogicalXor)
TERRA_CPU_BINARY(GeluBackward)
#undef TERRA_CPU_BINARY

}  // namespace terra::cpu
