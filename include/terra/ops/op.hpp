// terra/ops/op.hpp: what an op call is. The op table (ops.def) names every op; an OpCall is
// (op, inputs, attributes); dispatch() is the one path every public op goes through.
#pragma once

#include <cstdint>
#include <span>

#include "terra/core/small_vector.hpp"
#include "terra/tensor.hpp"

namespace terra {

enum class Op : uint16_t {
#define X(Type, name, kind, arity) Type,
#include "terra/ops/ops.def"
#undef X
  NumOps
};
inline constexpr int kNumOps = static_cast<int>(Op::NumOps);

enum class OpKind : uint8_t { Factory, Unary, Binary, Ternary, Reduce, View, Contract, Other };
inline constexpr bool is_elementwise(OpKind k) {
  return k == OpKind::Unary || k == OpKind::Binary || k == OpKind::Ternary;
}

// The attributes of a call. One flat layout for every op, so that a trace can compare two
// calls and tell which parts differ: `ints` change shapes (a new specialization), `scalars`
// can become fed values, `seed`/`offset` are the Philox state of random ops.
struct Attrs {
  SmallVector<int64_t, 8> ints;
  SmallVector<double, 2> scalars;
  DType dtype = DType::Float32;
  Device device;
  uint64_t seed = 0, offset = 0;

  friend bool operator==(const Attrs& a, const Attrs& b) {
    return a.ints == b.ints && a.scalars == b.scalars && a.dtype == b.dtype &&
           a.device == b.device && a.seed == b.seed && a.offset == b.offset;
  }
};

struct OpCall {
  Op op;
  std::span<const Tensor> inputs;
  Attrs attrs;
  Tensor* out = nullptr;  // write the (single) result into this tensor: in-place ops
  Loc loc = Loc::current();
};

// What an op's shape/dtype rule computes for each output. An output with alias >= 0 is a
// view of that input's storage with the given strides and offset (views run no kernel).
struct OutMeta {
  Shape shape;
  DType dtype = DType::Float32;
  Device device;
  int alias = -1;
  Strides strides;
  int64_t offset = 0;
};
using MetaList = SmallVector<OutMeta, 2>;
using OutList = SmallVector<Tensor, 2>;

using InferFn = void (*)(const OpCall&, MetaList&);
using KernelFn = void (*)(const OpCall&, std::span<Tensor> outs);

// What a vector-Jacobian product sees of the call it differentiates. Inputs and outputs are
// the saved values (undefined when the op's `saves` policy did not keep them); in_shapes and
// in_dtypes are always there.
struct VjpCtx {
  Op op;
  const Attrs& attrs;
  std::span<const Tensor> inputs;
  std::span<const Tensor> outputs;
  std::span<const Shape> in_shapes;
  std::span<const DType> in_dtypes;
  uint32_t needs;  // bit i: input i needs a gradient
  bool needs_grad(size_t i) const { return (needs >> i) & 1u; }
};
// grad_ins[i] (for each input that needs one) from grad_outs (undefined = zero gradient).
// Written with public ops only, so a backward pass is itself recorded, traced and fused.
using VjpFn = void (*)(const VjpCtx&, std::span<const Tensor> grad_outs, std::span<Tensor> grad_ins);

// Declares an op struct's vjp; its definition follows the public ops in the family header.
#define TERRA_VJP                                                                     \
  static void vjp(const ::terra::VjpCtx& c, std::span<const ::terra::Tensor> grads, \
                  std::span<::terra::Tensor> grad_in)

// Which values an op's vjp reads; the autograd engine keeps only those alive.
enum SavePolicy : uint8_t { kSaveNone = 0, kSaveInputs = 1, kSaveOutputs = 2, kSaveAll = 3 };

struct OpInfo {
  const char* name;
  OpKind kind;
  int arity;  // -1: variadic
  InferFn infer;
  VjpFn vjp;       // null: not differentiable
  uint8_t saves;   // SavePolicy
  // The shape/dtype rule reads scalar attribute values (arange's bounds, dropout's check of
  // p), not just the inputs' layouts and the integer attributes. Co-execution otherwise takes
  // a call whose inputs and attributes match a traced node to have that node's outputs.
  bool infer_reads_scalars;
  // Bit i: output i is not kept for the vjp even under kSaveOutputs (the vjp never reads it).
  // batch_norm's y, for one: keeping it held an activation per layer until backward and
  // made every y "held by the host" to the co-execution planner (graph::Plan::epilogue).
  uint8_t unsaved_outputs;
};

// Defined in ops/table.hpp, once every op's rule is known.
inline const OpInfo& op_info(Op op);
inline const char* op_name(Op op) { return op_info(op).name; }

namespace autograd {
inline bool& grad_mode_flag();  // per thread; defined in autograd/autograd.hpp
}

// Autograd's hook in dispatch (defined in autograd/autograd.hpp): whether this call must be
// recorded, and the recording itself, given the input versions seen before the kernel ran.
inline bool autograd_wants(const OpCall& call, const OpInfo& info, const MetaList& metas);
inline void autograd_record(const OpCall& call, const OpInfo& info, OutList& outs,
                            std::span<const Tensor> saved_inputs,
                            const SmallVector<uint64_t, 4>& versions);

// g summed over the dims that broadcasting added or expanded, so it has `shape` (defined in
// ops/reduce.hpp; vjps and the autograd engine use it).
inline Tensor sum_to(const Tensor& g, const Shape& shape);

// Run one op call in the calling thread's mode (today: eager). Defined in ops/dispatch.hpp.
inline OutList dispatch(const OpCall& call);
inline Tensor dispatch1(const OpCall& call) { return std::move(dispatch(call)[0]); }

// The kernel of `op` for `device`, or nullptr. Defined by the backends (backend/kernels.hpp),
// inline in every translation unit; or, with TERRA_SEPARATE_KERNELS, once in the unit that
// includes <terra/kernels_tu.hpp> (see docs/architecture.md: compiling the kernels once).
#if defined(TERRA_SEPARATE_KERNELS)
KernelFn find_kernel(Op op, Device device);
#else
inline KernelFn find_kernel(Op op, Device device);
#endif

namespace detail {
// The kernels of the non-CPU device types, indexed by Op; a backend's registration fills its
// row before main (the CPU table is built by backend/kernels.hpp).
inline KernelFn* device_kernels(DeviceType t) {
  static KernelFn table[kNumDeviceTypes][kNumOps] = {};
  return table[static_cast<int>(t)];
}
}  // namespace detail

// Small helpers for the rules.
namespace detail {
inline OutMeta meta(Shape shape, DType dtype, Device device) {
  OutMeta m;
  m.shape = std::move(shape);
  m.dtype = dtype;
  m.device = device;
  return m;
}
inline OutMeta view_meta(const Tensor& in, Shape shape, Strides strides, int64_t offset) {
  OutMeta m;
  m.shape = std::move(shape);
  m.dtype = in.dtype();
  m.device = in.device();
  m.alias = 0;
  m.strides = std::move(strides);
  m.offset = offset;
  return m;
}
}  // namespace detail
}  // namespace terra
