# What terra::cuda links, found on this machine. Included once find_package(CUDAToolkit) has
# succeeded, by terra's CMakeLists.txt (build tree, add_subdirectory) and by the installed
# terraConfig.cmake, so that both give the same target. Needs FindCuDNN.cmake on
# CMAKE_MODULE_PATH. Input: _terra_cudnn_required (fail when cuDNN is missing). Sets:
#   _terra_cuda_libs  CUDA::cudart CUDA::cublas CUDA::cublasLt [CCCL::CCCL] [terra::cudnn]
#   _terra_cuda_defs  TERRA_WITH_CUDA=1 [TERRA_HAS_CUDNN=1]
#   terra_HAS_CCCL, terra_HAS_CUDNN, CuDNN_VERSION
set(_terra_cuda_libs CUDA::cudart CUDA::cublas CUDA::cublasLt)
set(_terra_cuda_defs TERRA_WITH_CUDA=1)

# CCCL (Thrust, CUB, libcu++): the package config that ships with the toolkit (CUDA >= 12.x),
# preferred over any other CCCL on the machine. Older toolkits keep the headers in the toolkit
# include directory, which CUDA::cudart already provides.
set(terra_HAS_CCCL OFF)
if(NOT TARGET CCCL::CCCL)
  find_package(CCCL CONFIG QUIET HINTS "${CUDAToolkit_LIBRARY_DIR}/cmake")
endif()
if(TARGET CCCL::CCCL)
  set(terra_HAS_CCCL ON)
  list(APPEND _terra_cuda_libs CCCL::CCCL)
endif()

# cuDNN through terra's own finder (terra::cudnn); optional unless asked for.
set(terra_HAS_CUDNN OFF)
if(_terra_cudnn_required)
  find_package(CuDNN MODULE)
else()
  find_package(CuDNN MODULE QUIET)
endif()
if(CuDNN_FOUND)
  set(terra_HAS_CUDNN ON)
  list(APPEND _terra_cuda_libs terra::cudnn)
  list(APPEND _terra_cuda_defs TERRA_HAS_CUDNN=1)
endif()
