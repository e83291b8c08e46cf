// tests/support/fake_device.hpp: a stand-in GPU for machines without one. DeviceType::CUDA is
// backed by host memory, and every op on its tensors runs the CPU kernel on host aliases of
// them. It exercises everything above the kernels on device tensors (dispatch, ToDevice,
// autograd, nn, optim, checkpoints, the engine's fallback) and says nothing about the CUDA
// kernels themselves, which tests/cuda/ checks on a real GPU. Include it in one CPU-only test
// binary (never with the real CUDA backend) and call tt::fake_device::install() first.
#pragma once

#include <atomic>
#include <cstring>
#include <functional>
#include <vector>

#include <terra/terra.hpp>
#include <terra/backend/to_device.hpp>

namespace tt::fake_device {

using terra::Device;
using terra::Tensor;

inline void* alloc(size_t n, int index) {
  TERRA_CHECK(index == 0, "allocate", "cuda:", index, " does not exist: this machine has 1 CUDA device");
  return terra::cpu_alloc(n);
}
inline void free(void* p, size_t n, int) { terra::cpu_free(p, n); }
inline void copy(void* dst, Device, const void* src, Device, size_t n, bool) { std::memcpy(dst, src, n); }
inline void synchronize(int) {}

// t's memory seen as a CPU tensor (same shape, strides and offset).
inline Tensor host_alias(const Tensor& t) {
  if (t.device().is_cpu()) return t;
  auto s = terra::Storage::wrap(t.storage()->data(), t.storage()->nbytes(), Device::cpu(), {});
  return Tensor::from_storage(std::move(s), t.shape(), t.strides(), t.storage_offset(), t.dtype());
}

// A stand-in for CUDA stream capture: while a thread records, the kernels it queues on the
// stand-in device are kept instead of run (nothing runs, as with a real recording), and a
// launch runs them in order. Copies are never recorded (the executor keeps host/device copies
// out of graphs). Tests steer it through graphs().
struct GraphControl {
  std::atomic<int> begun{0}, launched{0}, refused{0}, destroyed{0}, live{0};
  std::atomic<int> uncapturable_op{int(terra::Op::IndexSelect)};  // as the CUDA backend says
  std::atomic<int> fail_op{-1};             // recording this op throws (as a kernel that syncs)
  std::atomic<bool> refuse_launch{false};   // end_capture declines to launch
};
inline GraphControl& graphs() {
  static GraphControl g;
  return g;
}
struct Recording {
  bool on = false;
  std::vector<std::function<void()>> work;
};
inline Recording& recording() {
  thread_local Recording r;
  return r;
}

inline void run(const terra::OpCall& c, std::span<Tensor> outs) {
  terra::SmallVector<Tensor, 4> ins;
  for (const Tensor& t : c.inputs) ins.push_back(host_alias(t));
  terra::SmallVector<Tensor, 2> hs;
  for (const Tensor& t : outs) hs.push_back(host_alias(t));
  terra::OpCall h = c;
  h.inputs = {ins.data(), ins.size()};
  h.attrs.device = Device::cpu();
  h.out = nullptr;
  if (recording().on) {
    if (int(c.op) == graphs().fail_op)
      terra::detail::fail(terra::op_name(c.op), "cannot be recorded on the stand-in device");
    // The host aliases do not own their memory: keep the device tensors (a temporary freed
    // after queuing stays cached for the stream on a real device) alive until the launch.
    std::vector<Tensor> keep(c.inputs.begin(), c.inputs.end());
    keep.insert(keep.end(), outs.begin(), outs.end());
    recording().work.push_back([op = c.op, attrs = h.attrs, keep = std::move(keep),
                                in = std::vector<Tensor>(ins.begin(), ins.end()),
                                out = std::vector<Tensor>(hs.begin(), hs.end())]() mutable {
      terra::OpCall call{.op = op, .inputs = {in.data(), in.size()}, .attrs = attrs};
      terra::find_kernel(op, Device::cpu())(call, {out.data(), out.size()});
    });
    return;
  }
  terra::find_kernel(c.op, Device::cpu())(h, {hs.data(), hs.size()});
}

inline bool begin_capture(int, std::string*) {
  TERRA_CHECK(!recording().on, "fake-cuda", "already recording");
  recording() = {true, {}};
  ++graphs().begun;
  return true;
}
inline bool end_capture(int, void** graph, bool ok, std::string* why) {
  TERRA_CHECK(recording().on, "fake-cuda", "not recording");
  std::vector<std::function<void()>> work = std::move(recording().work);
  recording() = {};
  if (!ok) return false;
  if (graphs().refuse_launch) {
    ++graphs().refused;
    *why = "the stand-in device refused the launch";
    return false;
  }
  if (!*graph) {
    *graph = new int(0);
    ++graphs().live;
  }
  ++graphs().launched;
  for (auto& f : work) f();
  return true;
}
inline void destroy_graph(void* graph) {
  delete static_cast<int*>(graph);
  ++graphs().destroyed;
  --graphs().live;
}
inline bool capturable(int op) { return op != graphs().uncapturable_op; }

inline void install() {
  static const terra::DeviceBackend backend{"fake-cuda",   &alloc,         &free,
                                            &copy,         &synchronize,   nullptr,
                                            nullptr,       &begin_capture, &end_capture,
                                            &destroy_graph, &capturable};
  terra::detail::device_backend_slot(terra::DeviceType::CUDA) = &backend;
  terra::KernelFn* table = terra::detail::device_kernels(terra::DeviceType::CUDA);
  for (int i = 0; i < terra::kNumOps; ++i)
    table[i] = terra::find_kernel(terra::Op(i), Device::cpu()) ? &run : nullptr;
  table[int(terra::Op::ToDevice)] = &terra::detail::to_device_kernel;
}

}  // namespace tt::fake_device
