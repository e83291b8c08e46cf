// tests/support/fake_device.hpp: a stand-in GPU for machines without one. DeviceType::CUDA is
// backed by host memory, and every op on its tensors runs the CPU kernel on host aliases of
// them. It exercises everything above the kernels on device tensors (dispatch, ToDevice,
// autograd, nn, optim, checkpoints, the engine's fallback) and says nothing about the CUDA
// kernels themselves, which tests/cuda/ checks on a real GPU. Include it in one CPU-only test
// binary (never with the real CUDA backend) and call tt::fake_device::install() first.
#pragma once

#include <cstring>

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

inline void run(const terra::OpCall& c, std::span<Tensor> outs) {
  terra::SmallVector<Tensor, 4> ins;
  for (const Tensor& t : c.inputs) ins.push_back(host_alias(t));
  terra::SmallVector<Tensor, 2> hs;
  for (const Tensor& t : outs) hs.push_back(host_alias(t));
  terra::OpCall h = c;
  h.inputs = {ins.data(), ins.size()};
  h.attrs.device = Device::cpu();
  h.out = nullptr;
  terra::find_kernel(c.op, Device::cpu())(h, {hs.data(), hs.size()});
}

inline void install() {
  static const terra::DeviceBackend backend{"fake-cuda", &alloc, &free, &copy, &synchronize};
  terra::detail::device_backend_slot(terra::DeviceType::CUDA) = &backend;
  terra::KernelFn* table = terra::detail::device_kernels(terra::DeviceType::CUDA);
  for (int i = 0; i < terra::kNumOps; ++i)
    table[i] = terra::find_kernel(terra::Op(i), Device::cpu()) ? &run : nullptr;
  table[int(terra::Op::ToDevice)] = &terra::detail::to_device_kernel;
}

}  // namespace tt::fake_device
