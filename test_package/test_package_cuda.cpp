// Conan test_package with cuda=True: built against terra::cuda. It runs without a GPU (the
// runtime version needs no device).
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>

#include <terra/core/config.hpp>

#if !defined(TERRA_WITH_CUDA)
#error "terra::cuda must define TERRA_WITH_CUDA"
#endif

int main() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  std::printf("terra %s with CUDA runtime %d\n", terra::version(), v);
  return v > 0 && std::strcmp(terra::version(), EXPECTED_VERSION) == 0 ? 0 : 1;
}
