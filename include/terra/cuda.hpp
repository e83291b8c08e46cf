// terra/cuda.hpp: terra with its CUDA kernels. Include it from (at least) one .cu unit of a
// program linked with terra::cuda; the other units include <terra/terra.hpp> as usual. The
// kernels register themselves before main, so `x.to(Device::cuda())` and every op on CUDA
// tensors work from any unit of the program.
#pragma once

#if !defined(__CUDACC__)
#error "terra/cuda.hpp holds CUDA kernels: include it from a .cu unit compiled by nvcc"
#endif
#if !defined(TERRA_WITH_CUDA)
#error "terra/cuda.hpp needs TERRA_WITH_CUDA: link the terra::cuda CMake target"
#endif

#include "terra/terra.hpp"
#include "terra/backend/cuda/common.cuh"
// ---- kernel families ----
#include "terra/backend/cuda/elementwise.cuh"
#include "terra/backend/cuda/factory.cuh"
#include "terra/backend/cuda/linalg.cuh"
#include "terra/backend/cuda/conv.cuh"
#include "terra/backend/cuda/batch_norm.cuh"
#include "terra/backend/cuda/index.cuh"
#include "terra/backend/cuda/random.cuh"
#include "terra/backend/cuda/shape.cuh"
#include "terra/backend/cuda/nn.cuh"
#include "terra/backend/cuda/reduce.cuh"
#include "terra/backend/cuda/sort.cuh"
// ---- registration (last: it reads every family's specializations) ----
#include "terra/backend/cuda/register.cuh"
