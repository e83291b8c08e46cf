// Built (not run: no GPU is needed) against terra::cuda: the definition and the CUDA runtime
// headers and libraries come with the target.
#include <cuda_runtime_api.h>

#include <terra/terra.hpp>

#if !defined(TERRA_WITH_CUDA) || TERRA_WITH_CUDA != 1
#error "terra::cuda must define TERRA_WITH_CUDA=1"
#endif

int main() {
  int version = 0;
  cudaRuntimeGetVersion(&version);
  return version > 0 ? 0 : 1;
}
