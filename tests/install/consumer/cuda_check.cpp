// Built (not run: no GPU is needed) against terra::cuda from a plain C++ unit: the definition
// and the CUDA runtime, cuBLAS and (when found) cuDNN headers and libraries come with the target.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <terra/core/config.hpp>
#if defined(TERRA_HAS_CUDNN)
#include <cudnn.h>
#endif

#if !defined(TERRA_WITH_CUDA) || TERRA_WITH_CUDA != 1
#error "terra::cuda must define TERRA_WITH_CUDA=1"
#endif

int main() {
  int version = 0;
  cudaRuntimeGetVersion(&version);
#if defined(TERRA_HAS_CUDNN)
  if (cudnnGetVersion() == 0) return 1;
#endif
  (void)&cublasCreate_v2;
  return version > 0 ? 0 : 1;
}
