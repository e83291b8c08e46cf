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
}  // namespace tt
