// A .cu unit built with nvcc against terra::cuda (built, not run: no GPU is needed): the
// installed <terra/cuda.hpp> (every CUDA kernel) compiles as CUDA C++20, and CCCL (Thrust/CUB)
// and cuDNN come with the target.
#include <thrust/device_vector.h>
#include <cub/version.cuh>

#include <terra/cuda.hpp>
#if defined(TERRA_HAS_CUDNN)
#include <cudnn.h>
#endif

#if !defined(TERRA_WITH_CUDA) || TERRA_WITH_CUDA != 1
#error "terra::cuda must define TERRA_WITH_CUDA=1"
#endif

__global__ void scale(float* p, float s, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] *= s;
}

int main() {
  auto t = terra::ones({4});  // a CPU tensor from a .cu unit
  if (terra::cuda::is_available()) t = t.to(terra::Device::cuda());
  thrust::device_vector<float> d(t.numel(), 1.0f);
  scale<<<1, 32>>>(thrust::raw_pointer_cast(d.data()), 2.0f, int(d.size()));
#if defined(TERRA_HAS_CUDNN)
  if (cudnnGetVersion() == 0) return 1;
#endif
  return CUB_VERSION > 0 && t.numel() == 4 ? 0 : 1;
}
