// tests/cuda/cuda_test.hpp: what the CUDA tests share: the skip on machines without a GPU, and
// device-vs-CPU comparisons.
#pragma once

#include <gtest/gtest.h>

#include "op_test.hpp"

// Skips the test where no GPU can be used (every test of the `gpu` label starts with it).
#define TERRA_REQUIRE_GPU()                                                        \
  do {                                                                             \
    if (!::terra::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine"; \
  } while (0)

namespace tt {
inline const terra::Device kCuda = terra::Device::cuda();

// x's values (a CPU tensor) on the device in several layouts, the views taken on the device:
// contiguous, transposed storage read back in x's order, and every other element of a tensor
// twice as long in the last dim.
inline std::vector<Tensor> device_layouts(const Tensor& x) {
  std::vector<Tensor> out{x.to(kCuda)};
  int64_t r = x.dim();
  if (r >= 2) out.push_back(x.transpose(0, r - 1).contiguous().to(kCuda).transpose(0, r - 1));
  if (r >= 1) {
    Shape big = x.shape();
    big.back() *= 2;
    Tensor b = terra::zeros(big, {.dtype = x.dtype()});
    b.slice(r - 1, 0, big.back(), 2).copy_(x);
    out.push_back(b.to(kCuda).slice(r - 1, 0, big.back(), 2));
  }
  return out;
}
}  // namespace tt
