// terra/backend/cuda/elementwise.cuh: CUDA kernels of the elementwise ops (copy, unary, binary,
// masked_fill, where), instantiated from the same TERRA_HD functors as the CPU kernels
// (ops/elementwise.hpp) and converting dtypes with the same cpu::convert. nvcc only.
//
// dtypes follow the CPU exactly: the CPU computes float16/bfloat16 in float32 (inputs upcast
// exactly, results rounded once into the 16-bit output), every other input is first cast to the
// op's compute dtype. Here a 16-bit input is read and widened in registers instead of through a
// float32 copy, which gives the same values; any other input whose dtype is not the compute
// dtype is cast by the copy kernel first, exactly as the CPU's cast().
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <span>
#include <type_traits>
#include <utility>

#include "terra/backend/cpu/elementwise.hpp"  // cpu::convert: the one dtype conversion
#include "terra/backend/cuda/common.cuh"
#include "terra/ops/elementwise.hpp"

namespace terra::cuda {

// ---- operand layout ----
// The strided path's offsets of N operands (output first): size-1 dims are dropped and dims
// contiguous in every operand merged, so most views need 1-3 dims.
template <int N>
using Offsets = MultiIndexer<N>;

// ts[k] broadcast to `shape` (ts[0], the output, has that shape).
template <int N>
Offsets<N> offsets_for(const Shape& shape, const std::array<const Tensor*, N>& ts) {
  std::array<Strides, N> st;
  for (int k = 0; k < N; ++k) st[k] = broadcast_strides(ts[k]->shape(), ts[k]->strides(), shape);
  SmallVector<int64_t, 8> sizes;  // innermost first while merging
  std::array<SmallVector<int64_t, 8>, N> strides;
  for (size_t d = shape.size(); d-- > 0;) {
    if (shape[d] == 1) continue;
    bool merge = !sizes.empty();
    for (int k = 0; merge && k < N; ++k) merge = strides[k].back() * sizes.back() == st[k][d];
    if (merge) {
      sizes.back() *= shape[d];
      continue;
    }
    sizes.push_back(shape[d]);
    for (int k = 0; k < N; ++k) strides[k].push_back(st[k][d]);
  }
  TERRA_CHECK(sizes.size() <= size_t(kMaxDims), "cuda", "a strided operand of rank ",
              sizes.size(), " (after merging dims) exceeds the CUDA kernels' limit of ", kMaxDims,
              " dims");
  Offsets<N> o;
  o.ndim = int(sizes.size());
  for (int d = 0; d < o.ndim; ++d) {
    o.sizes[o.ndim - 1 - d] = sizes[size_t(d)];
    for (int k = 0; k < N; ++k) o.strides[k][o.ndim - 1 - d] = strides[k][size_t(d)];
  }
  return o;
}

// ---- vector loads ----
// An unsigned type of B bytes: V elements of a type are moved as one B-byte load/store.
template <int B> struct RawOf;
template <> struct RawOf<16> { using type = uint4; };
template <> struct RawOf<8> { using type = uint2; };
template <> struct RawOf<4> { using type = uint32_t; };
template <> struct RawOf<2> { using type = uint16_t; };
template <> struct RawOf<1> { using type = uint8_t; };

template <int V, class T>
__device__ __forceinline__ void load_vec(const T* p, T (&v)[V]) {
  using R = typename RawOf<int(sizeof(T)) * V>::type;
  R r = *reinterpret_cast<const R*>(p);
  memcpy(v, &r, sizeof(R));
}
template <int V, class T>
__device__ __forceinline__ void store_vec(T* p, const T (&v)[V]) {
  using R = typename RawOf<int(sizeof(T)) * V>::type;
  R r;
  memcpy(&r, v, sizeof(R));
  *reinterpret_cast<R*>(p) = r;
}

// Registers of V lanes for each input of a map: input K of type I lives in Lane<K, I, V>.
template <size_t K, class T, int V>
struct Lane {
  T v[V];
};
template <class Seq, int V, class... I>
struct Lanes;
template <size_t... K, int V, class... I>
struct Lanes<std::index_sequence<K...>, V, I...> : Lane<K, I, V>... {};

// ---- the map: out[i] = f(in_0[i], ...), f taking the stored types and returning O ----
template <class F, class O, class... I>
struct Map {
  static constexpr int kIn = int(sizeof...(I));
  F f;
  O* out;
  const void* in[kIn];

  template <size_t... K>
  __device__ void scalar(int64_t i, std::index_sequence<K...>) const {
    out[i] = f(static_cast<const I*>(in[K])[i]...);
  }
  template <size_t... K>
  __device__ void strided(const int64_t (&off)[kIn + 1], std::index_sequence<K...>) const {
    out[off[0]] = f(static_cast<const I*>(in[K])[off[K + 1]]...);
  }
  // V consecutive elements from i0, every pointer aligned to V elements.
  template <int V, size_t... K>
  __device__ void vector(int64_t i0, std::index_sequence<K...> seq) const {
    Lanes<std::index_sequence<K...>, V, I...> x;
    (load_vec<V>(static_cast<const I*>(in[K]) + i0, static_cast<Lane<K, I, V>&>(x).v), ...);
    O y[V];
#pragma unroll
    for (int j = 0; j < V; ++j) y[j] = f(static_cast<Lane<K, I, V>&>(x).v[j]...);
    store_vec<V>(out + i0, y);
  }
};

// ---- kernels ----
template <int V, class M>
__global__ void map_contiguous_kernel(M m, int64_t n, bool vectorized) {
  constexpr auto seq = std::make_index_sequence<M::kIn>{};
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vectorized) {
    const int64_t nv = n / V;
    for (int64_t j = t; j < nv; j += step) m.template vector<V>(j * V, seq);
    done = nv * V;
  }
  for (int64_t i = done + t; i < n; i += step) m.scalar(i, seq);
}

template <class M>
__global__ void map_strided_kernel(M m, Offsets<M::kIn + 1> o, int64_t n) {
  constexpr auto seq = std::make_index_sequence<M::kIn>{};
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[M::kIn + 1];
    o.offsets(i, off);
    m.strided(off, seq);
  }
}

// ---- launchers ----
inline bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// out = f(ins...) with ins broadcast to out's shape; out may be strided (an in-place call) and
// may be one of the inputs (the same view). Tensors must already hold O and I... .
template <class O, class... I, class F>
void launch_map(const char* name, const F& f, const Tensor& out,
                const std::array<Tensor, sizeof...(I)>& ins) {
  constexpr int N = int(sizeof...(I));
  const int64_t n = out.numel();
  if (n == 0) return;
  Map<F, O, I...> m{f, ptr<O>(out), {}};
  for (int k = 0; k < N; ++k) m.in[k] = ins[size_t(k)].device_data();
  bool contiguous = out.is_contiguous();
  for (const Tensor& t : ins) contiguous = contiguous && t.is_contiguous() && t.shape() == out.shape();
  if (contiguous) {
    // 16 bytes of the widest operand per vector; the narrower ones move fewer.
    constexpr int V = 16 / int(std::max({sizeof(O), sizeof(I)...}));
    bool vec = aligned(m.out, sizeof(O) * V);
    for (int k = 0; k < N; ++k) vec = vec && aligned(m.in[k], ins[size_t(k)].element_size() * V);
    map_contiguous_kernel<V><<<grid_for(vec ? (n + V - 1) / V : n), kThreads, 0, stream()>>>(m, n, vec);
  } else {
    std::array<const Tensor*, N + 1> ts{&out};
    for (int k = 0; k < N; ++k) ts[size_t(k + 1)] = &ins[size_t(k)];
    Offsets<N + 1> o = offsets_for<N + 1>(out.shape(), ts);
    map_strided_kernel<<<grid_for(n), kThreads, 0, stream()>>>(m, o, n);
  }
  check_launch(name);
}

// ---- copy with conversion ----
template <class To>
struct ConvertF {
  template <class From>
  TERRA_HD To operator()(From v) const { return cpu::convert<To>(v); }
};

// dst = src (broadcast to dst's shape), converting dtypes; dst may be strided. A contiguous
// copy within one dtype is a single cudaMemcpyAsync.
inline void copy_into(const Tensor& src, const Tensor& dst) {
  if (dst.numel() == 0) return;
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous() &&
      src.shape() == dst.shape()) {
    TERRA_CUDA_CHECK(cudaMemcpyAsync(dst.device_data(), src.device_data(), dst.nbytes(),
                                     cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  TERRA_DISPATCH_ALL(dst.dtype(), "copy", {
    using To = T;
    TERRA_DISPATCH_ALL(src.dtype(), "copy", { launch_map<To, T>("copy", ConvertF<To>{}, dst, {src}); });
  });
}

// A contiguous copy of x in dtype dt (x itself when the dtype already matches).
inline Tensor cast(const Tensor& x, DType dt) {
  if (x.dtype() == dt) return x;
  Tensor y = cuda::empty(x.shape(), dt, x.device());
  copy_into(x, y);
  return y;
}

inline void copy_kernel(const OpCall& c, std::span<Tensor> outs) { copy_into(c.inputs[0], outs[0]); }
template <> inline constexpr KernelFn cuda_kernel<op::Copy> = &copy_kernel;

// ---- compute and storage dtypes ----
// The compute dtype the CPU ends up with: float16/bfloat16 compute in float32.
inline DType upcast(DType t) { return is_reduced_float(t) ? DType::Float32 : t; }

// The dtype the kernel reads its tensor inputs in: a 16-bit float when every input has it and
// the op computes in float32 (widened in registers), else the compute dtype (inputs cast).
inline DType storage_dtype(std::span<const Tensor> ins, DType cd) {
  if (cd != DType::Float32 || ins.empty() || !is_reduced_float(ins[0].dtype())) return cd;
  for (const Tensor& t : ins)
    if (t.dtype() != ins[0].dtype()) return cd;
  return ins[0].dtype();
}

// Calls fn(type_identity<C>, type_identity<S>) for compute dtype cd and storage dtype s
// (s == cd, or a 16-bit float when cd is float32).
template <class Fn>
void with_compute(DType cd, DType s, const char* name, const Fn& fn) {
  using std::type_identity;
  switch (cd) {
    case DType::Bool: return fn(type_identity<bool>{}, type_identity<bool>{});
    case DType::Int32: return fn(type_identity<int32_t>{}, type_identity<int32_t>{});
    case DType::Int64: return fn(type_identity<int64_t>{}, type_identity<int64_t>{});
    case DType::Float64: return fn(type_identity<double>{}, type_identity<double>{});
    case DType::Float32:
      if (s == DType::Float16) return fn(type_identity<float>{}, type_identity<Half>{});
      if (s == DType::BFloat16) return fn(type_identity<float>{}, type_identity<BFloat16>{});
      return fn(type_identity<float>{}, type_identity<float>{});
    default: terra::detail::fail(name, "unsupported dtype ", dtype_name(cd));
  }
}

// The output the kernel writes: `out` itself when it holds O, else a temporary of O's dtype that
// finish_output() copies (rounding, as the CPU's copy back from float32) into `out`.
template <class O>
Tensor output_for(const Tensor& out) {
  return out.dtype() == dtype_v<O> ? out : cuda::empty(out.shape(), dtype_v<O>, out.device());
}
inline void finish_output(const Tensor& tmp, const Tensor& out) {
  if (!tmp.is_same(out)) copy_into(tmp, out);
}

// ---- unary ----
// Reads S, computes f in C, stores O (R rounded into O, as the CPU rounds its float32 results).
template <class OpT, class C, class O>
struct UnaryF {
  OpT op;
  template <class S>
  TERRA_HD O operator()(S x) const { return cpu::convert<O>(op(cpu::convert<C>(x))); }
};

template <class OpT>
void unary_kernel(const OpCall& c, std::span<Tensor> outs) {
  const char* name = op_name(c.op);
  const Tensor& out = outs[0];
  DType cd = upcast(OpT::compute_dtype(c.inputs[0].dtype(), name));
  if (out.numel() == 0) return;
  DType sd = storage_dtype(c.inputs, cd);
  Tensor x = cast(c.inputs[0], sd);
  OpT f(c.attrs);
  with_compute(cd, sd, name, [&](auto ct, auto st) {
    using C = typename decltype(ct)::type;
    using S = typename decltype(st)::type;
    constexpr bool logical = OpT::rule == op::DTypeRule::Logical;
    constexpr bool is_float = std::is_floating_point_v<C>;
    if constexpr (logical ? std::is_same_v<C, bool>
                          : (OpT::rule == op::DTypeRule::Float ? is_float : !std::is_same_v<C, bool>)) {
      using R = std::conditional_t<logical, bool, C>;
      // A 16-bit input gives a 16-bit output (rules Same and Float keep a floating dtype).
      using O = std::conditional_t<!logical && !std::is_same_v<S, C>, S, R>;
      Tensor y = output_for<O>(out);
      launch_map<O, S>(name, UnaryF<OpT, C, O>{f}, y, {x});
      finish_output(y, out);
    } else {  // compute_dtype never picks these; say so rather than skip the op
      terra::detail::fail(name, "unsupported dtype ", dtype_name(cd));
    }
  });
}

// ---- binary ----
template <class OpT, class C, class O>
struct BinaryF {
  OpT op;
  template <class S>
  TERRA_HD O operator()(S a, S b) const {
    return cpu::convert<O>(op(cpu::convert<C>(a), cpu::convert<C>(b)));
  }
};
// One tensor and a scalar operand (already in C), on the left when `left`.
template <class OpT, class C, class O>
struct ScalarF {
  OpT op;
  C s;
  bool left;
  template <class S>
  TERRA_HD O operator()(S x) const {
    C a = cpu::convert<C>(x);
    return cpu::convert<O>(left ? op(s, a) : op(a, s));
  }
};

template <class OpT>
void binary_kernel(const OpCall& c, std::span<Tensor> outs) {
  const char* name = op_name(c.op);
  const Tensor& out = outs[0];
  DType cd = upcast(OpT::compute_dtype(c));
  if (out.numel() == 0) return;
  const bool scalar = op::has_scalar_operand(c);
  DType sd = storage_dtype(c.inputs, cd);
  Tensor a = cast(c.inputs[0], sd), b = scalar ? Tensor() : cast(c.inputs[1], sd);
  OpT f(c.attrs);
  with_compute(cd, sd, name, [&](auto ct, auto st) {
    using C = typename decltype(ct)::type;
    using S = typename decltype(st)::type;
    constexpr bool logical = OpT::rule == op::DTypeRule::Logical;
    if constexpr (std::is_invocable_v<OpT, C, C> && (!logical || std::is_same_v<C, bool>)) {
      using R = std::conditional_t<OpT::rule == op::DTypeRule::Same, C, bool>;
      using O = std::conditional_t<std::is_same_v<R, C> && !std::is_same_v<S, C>, S, R>;
      Tensor y = output_for<O>(out);
      if (scalar) {
        // The scalar reaches C as the CPU's float64 -> C copy converts it.
        C s = cpu::convert<C>(c.attrs.scalars[0]);
        launch_map<O, S>(name, ScalarF<OpT, C, O>{f, s, c.attrs.ints[0] != 0}, y, {a});
      } else {
        launch_map<O, S, S>(name, BinaryF<OpT, C, O>{f}, y, {a, b});
      }
      finish_output(y, out);
    } else {  // compute_dtype never picks these; say so rather than skip the op
      terra::detail::fail(name, "unsupported dtype ", dtype_name(cd));
    }
  });
}

// ---- masked_fill and where ----
template <class C, class O>
struct MaskedFillF {
  C v;
  template <class S>
  TERRA_HD O operator()(S x, bool m) const { return cpu::convert<O>(m ? v : cpu::convert<C>(x)); }
};

inline void masked_fill_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor &x = c.inputs[0], &m = c.inputs[1];
  DType cd = upcast(x.dtype());
  with_compute(cd, x.dtype(), "masked_fill", [&](auto ct, auto st) {
    using C = typename decltype(ct)::type;
    using S = typename decltype(st)::type;  // x's dtype, also the output's
    C v = cpu::convert<C>(c.attrs.scalars[0]);
    launch_map<S, S, bool>("masked_fill", MaskedFillF<C, S>{v}, outs[0], {x, m});
  });
}
template <> inline constexpr KernelFn cuda_kernel<op::MaskedFill> = &masked_fill_kernel;

template <class C, class O>
struct WhereF {
  template <class S>
  TERRA_HD O operator()(bool k, S x, S y) const {
    return cpu::convert<O>(k ? cpu::convert<C>(x) : cpu::convert<C>(y));
  }
};

inline void where_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& out = outs[0];
  if (out.numel() == 0) return;
  DType cd = upcast(out.dtype());
  DType sd = storage_dtype(c.inputs.subspan(1), cd);
  Tensor a = cast(c.inputs[1], sd), b = cast(c.inputs[2], sd);
  with_compute(cd, sd, "where", [&](auto ct, auto st) {
    using C = typename decltype(ct)::type;
    using S = typename decltype(st)::type;
    Tensor y = output_for<S>(out);
    launch_map<S, bool, S, S>("where", WhereF<C, S>{}, y, {c.inputs[0], a, b});
    finish_output(y, out);
  });
}
template <> inline constexpr KernelFn cuda_kernel<op::Where> = &where_kernel;

#define TERRA_CUDA_UNARY(Type) \
  template <> inline constexpr KernelFn cuda_kernel<op::Type> = &unary_kernel<op::Type>;
TERRA_CUDA_UNARY(Neg)
TERRA_CUDA_UNARY(Abs)
TERRA_CUDA_UNARY(Exp)
TERRA_CUDA_UNARY(Log)
TERRA_CUDA_UNARY(Sqrt)
TERRA_CUDA_UNARY(Rsqrt)
TERRA_CUDA_UNARY(Sin)
TERRA_CUDA_UNARY(Cos)
TERRA_CUDA_UNARY(Tanh)
TERRA_CUDA_UNARY(Sigmoid)
TERRA_CUDA_UNARY(Relu)
TERRA_CUDA_UNARY(Gelu)
TERRA_CUDA_UNARY(Silu)
TERRA_CUDA_UNARY(Softplus)
TERRA_CUDA_UNARY(Clamp)
TERRA_CUDA_UNARY(LogicalNot)
#undef TERRA_CUDA_UNARY
#define TERRA_CUDA_BINARY(Type) \
  template <> inline constexpr KernelFn cuda_kernel<op::Type> = &binary_kernel<op::Type>;
TERRA_CUDA_BINARY(Add)
TERRA_CUDA_BINARY(Sub)
TERRA_CUDA_BINARY(Mul)
TERRA_CUDA_BINARY(Div)
TERRA_CUDA_BINARY(Pow)
TERRA_CUDA_BINARY(Maximum)
TERRA_CUDA_BINARY(Minimum)
TERRA_CUDA_BINARY(Eq)
TERRA_CUDA_BINARY(Ne)
TERRA_CUDA_BINARY(Lt)
TERRA_CUDA_BINARY(Le)
TERRA_CUDA_BINARY(Gt)
TERRA_CUDA_BINARY(Ge)
TERRA_CUDA_BINARY(LogicalAnd)
TERRA_CUDA_BINARY(LogicalOr)
TERRA_CUDA_BINARY(LogicalXor)
TERRA_CUDA_BINARY(GeluBackward)
#undef TERRA_CUDA_BINARY

}  // namespace terra::cuda
