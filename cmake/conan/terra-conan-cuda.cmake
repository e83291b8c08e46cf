# Included by the terraConfig.cmake that Conan's CMakeDeps generates when terra was required
# with -o terra/*:cuda=True: finds the CUDA toolkit (with CCCL and cuDNN) on this machine and
# links it to terra::cuda, as the CMake package's own config does.
if(TARGET terra::cuda AND NOT TARGET CUDA::cudart)
  find_package(CUDAToolkit REQUIRED)
endif()
if(TARGET terra::cuda)
  get_target_property(_terra_cuda_links terra::cuda INTERFACE_LINK_LIBRARIES)
endif()
if(TARGET terra::cuda AND NOT "CUDA::cudart" IN_LIST _terra_cuda_links)
  set(_terra_saved_module_path "${CMAKE_MODULE_PATH}")
  list(PREPEND CMAKE_MODULE_PATH "${CMAKE_CURRENT_LIST_DIR}")
  set(_terra_cudnn_required FALSE)
  include("${CMAKE_CURRENT_LIST_DIR}/terraCudaDeps.cmake")
  set(CMAKE_MODULE_PATH "${_terra_saved_module_path}")
  # TERRA_WITH_CUDA=1 comes from the recipe; the rest from what was found here.
  list(REMOVE_ITEM _terra_cuda_defs TERRA_WITH_CUDA=1)
  set_property(TARGET terra::cuda APPEND PROPERTY INTERFACE_LINK_LIBRARIES ${_terra_cuda_libs})
  if(_terra_cuda_defs)
    set_property(TARGET terra::cuda APPEND PROPERTY INTERFACE_COMPILE_DEFINITIONS
                 ${_terra_cuda_defs})
  endif()
  unset(_terra_saved_module_path)
  unset(_terra_cuda_libs)
  unset(_terra_cuda_defs)
  unset(_terra_cudnn_required)
endif()
unset(_terra_cuda_links)
