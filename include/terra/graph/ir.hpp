// terra/graph/ir.hpp: the dataflow IR of one compiled block.
// A block is a straight-line run of op calls, in the order the host issued them. Every tensor an
// op reads or writes is a view (shape, strides, offset, dtype) of a buffer. Buffers are either
// produced inside the block (a fresh op output) or come from outside it (parameters, optimizer
// state, feeds, values of earlier blocks), bound anew at every run. Views alias their input's
// buffer; in-place ops write into an existing buffer. Execution keeps the host's order, so the
// aliasing of eager execution is reproduced exactly; the passes only drop, share or fuse work,
// and every such decision has a run-time guard (see Plan).
#pragma once

#include <vector>

#include "terra/ops/op.hpp"

namespace terra::graph {

// A tensor as an op sees it: a view of buffer `buf`, which lives on `device`.
struct ValueRef {
  int32_t buf = -1;
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // elements
  DType dtype = DType::Float32;
  Device device = Device::cpu();

  friend bool operator==(const ValueRef& a, const ValueRef& b) {
    return a.buf == b.buf && a.offset == b.offset && a.dtype == b.dtype && a.device == b.device &&
           a.shape == b.shape && a.strides == b.strides;
  }
};

struct IrNode {
  Op op = Op::Copy;
  Attrs attrs;  // as traced; scalars, seed and offset are replaced by each run's values
  SmallVector<ValueRef, 3> ins;
  // One per output. A fresh output owns a new internal buffer; a view output (kind View, or
  // OutMeta::alias >= 0) refers to its input's buffer; the output of an in-place call is the
  // destination it writes into (an existing buffer).
  SmallVector<ValueRef, 2> outs;
  SmallVector<int8_t, 2> out_alias;  // per output: input index it aliases, or -1
  bool inplace = false;              // outs[0] is a destination written in place
  // Shape-dynamic: its views and integer attributes are each run's (NodeViews, the run's
  // attrs), not the traced ones: a value-sized result (masked_select) and what is computed
  // from it. Never fused or shared by cse; kernels run on whole tensors.
  bool dynamic = false;
};

// The views a dynamic node reads and writes in one run, as the host's call made them (the
// buffers are the node's; only shape, strides, offset are the run's).
struct NodeViews {
  SmallVector<ValueRef, 3> ins;
  SmallVector<ValueRef, 2> outs;
};

struct IrBuffer {
  bool external = false;  // bound per run (parameter, feed, earlier block); never planned
  int64_t nbytes = 0;     // internal buffers: the bytes the producer allocates
  int32_t producer = -1;  // internal buffers: the node that creates it
  Device device = Device::cpu();  // where its memory is (an internal buffer: its arena)
  // Internal buffers: its size changes from run to run (a dynamic node's fresh output). The
  // engine gives every run storage of the run's size; the arena slice (nbytes as first
  // traced) serves only runs made without one.
  bool dynamic = false;
};

struct BlockIr {
  std::vector<IrNode> nodes;
  std::vector<IrBuffer> bufs;
};

// What the passes decided. Every decision is guarded at run time by which buffers the host
// still holds when the block is launched (`alive`): a value the host can still read is always
// computed into its own buffer.
struct Step {
  SmallVector<int32_t, 4> nodes;  // one node, or an elementwise chain fused into one loop
  bool fused = false;
};

struct Plan {
  BlockIr ir;
  std::vector<Step> steps;              // in execution order; every node is in exactly one step
  std::vector<uint8_t> dead;            // per node: dce found its outputs unused in the block
  std::vector<int32_t> same_as;         // per node: cse found node same_as[n] < n computes it
  // Per node: for a batch_norm on the CPU whose output only a later relu reads, that relu's
  // node m, else -1. The executor may run m inside n (the batch_norm kernel writes relu(y)
  // into m's output in its own pass), when a run holds both and needs y nowhere else.
  std::vector<int32_t> epilogue;
  std::vector<int64_t> arena_offset;    // per buffer: byte offset in its device's arena, -1 if none
  int64_t arena_bytes = 0;              // the CPU arena
  std::vector<std::pair<Device, int64_t>> device_arenas;  // the arena of each other device used
  std::vector<Device> devices;  // every non-CPU device a node reads or writes, in order of first use
};

}  // namespace terra::graph
