// terra/backend/cuda/math_mode.hpp: the process-wide switch for TF32 tensor-core math in float32
// matrix products and convolutions (host C++, usable from .cpp units). Off by default: float32
// results then carry float32 precision; on, cuBLAS and cuDNN may round the inputs of float32
// products to 10-bit mantissas (about 1e-3 relative error), as torch's allow_tf32 does.
#pragma once

#include <atomic>

namespace terra::cuda {

namespace detail {
inline std::atomic<bool>& tf32_flag() {
  static std::atomic<bool> on{false};
  return on;
}
}  // namespace detail

/// Lets float32 matmul/linear/conv2d on CUDA use TF32 tensor cores (default: off).
inline void set_allow_tf32(bool on) { detail::tf32_flag().store(on, std::memory_order_relaxed); }
/// Whether float32 products on CUDA may use TF32 tensor cores.
inline bool allow_tf32() { return detail::tf32_flag().load(std::memory_order_relaxed); }

}  // namespace terra::cuda
