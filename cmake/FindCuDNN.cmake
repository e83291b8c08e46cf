# FindCuDNN: NVIDIA cuDNN (headers and the libcudnn front library). Creates terra::cudnn.
#   CuDNN_FOUND, CuDNN_VERSION, CuDNN_INCLUDE_DIR, CuDNN_LIBRARY
# Looked for under CuDNN_ROOT / CUDNN_ROOT (CMake variable or environment), $CUDNN_PATH, the CUDA
# toolkit that find_package(CUDAToolkit) found (NVIDIA's tarballs are often unpacked into it),
# then the system paths (Debian/Ubuntu packages: /usr/include, /usr/lib/<multiarch>).
# Installed beside terraConfig.cmake, so a consumer finds its own cuDNN, never a build path.
include(FindPackageHandleStandardArgs)

set(_cudnn_hints "")
foreach(_v CuDNN_ROOT CUDNN_ROOT)
  if(DEFINED ${_v})
    list(APPEND _cudnn_hints "${${_v}}")
  endif()
  if(DEFINED ENV{${_v}})
    list(APPEND _cudnn_hints "$ENV{${_v}}")
  endif()
endforeach()
if(DEFINED ENV{CUDNN_PATH})
  list(APPEND _cudnn_hints "$ENV{CUDNN_PATH}")
endif()
if(CUDAToolkit_LIBRARY_ROOT)
  list(APPEND _cudnn_hints "${CUDAToolkit_LIBRARY_ROOT}")
endif()
foreach(_d IN LISTS CUDAToolkit_INCLUDE_DIRS)
  get_filename_component(_d "${_d}" DIRECTORY)
  list(APPEND _cudnn_hints "${_d}")
endforeach()

find_path(CuDNN_INCLUDE_DIR NAMES cudnn_version.h cudnn.h
          HINTS ${_cudnn_hints} ${CUDAToolkit_INCLUDE_DIRS}
          PATH_SUFFIXES include)
find_library(CuDNN_LIBRARY NAMES cudnn
             HINTS ${_cudnn_hints} ${CUDAToolkit_LIBRARY_DIR}
             PATH_SUFFIXES lib64 lib lib/x64)

set(CuDNN_VERSION "")
foreach(_h cudnn_version.h cudnn.h)
  if(CuDNN_INCLUDE_DIR AND EXISTS "${CuDNN_INCLUDE_DIR}/${_h}" AND CuDNN_VERSION STREQUAL "")
    file(STRINGS "${CuDNN_INCLUDE_DIR}/${_h}" _cudnn_defs
         REGEX "^#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) +[0-9]+")
    set(_cudnn_parts "")
    foreach(_p MAJOR MINOR PATCHLEVEL)
      foreach(_line IN LISTS _cudnn_defs)
        if(_line MATCHES "^#define CUDNN_${_p} +([0-9]+)")
          list(APPEND _cudnn_parts "${CMAKE_MATCH_1}")
        endif()
      endforeach()
    endforeach()
    list(LENGTH _cudnn_parts _n)
    if(_n EQUAL 3)
      list(JOIN _cudnn_parts "." CuDNN_VERSION)
    endif()
  endif()
endforeach()

find_package_handle_standard_args(CuDNN
  REQUIRED_VARS CuDNN_LIBRARY CuDNN_INCLUDE_DIR
  VERSION_VAR CuDNN_VERSION)

if(CuDNN_FOUND AND NOT TARGET terra::cudnn)
  add_library(terra::cudnn UNKNOWN IMPORTED)
  set_target_properties(terra::cudnn PROPERTIES
    IMPORTED_LOCATION "${CuDNN_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${CuDNN_INCLUDE_DIR}")
endif()
mark_as_advanced(CuDNN_INCLUDE_DIR CuDNN_LIBRARY)
unset(_cudnn_hints)
unset(_cudnn_defs)
unset(_cudnn_parts)
unset(_n)
unset(_d)
unset(_v)
unset(_h)
unset(_p)
