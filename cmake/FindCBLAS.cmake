# FindCBLAS: a C BLAS interface (OpenBLAS preferred). Creates the imported target terra::cblas.
#   CBLAS_FOUND, CBLAS_INCLUDE_DIR, CBLAS_LIBRARY
# Installed beside terraConfig.cmake, so a consumer finds its own CBLAS rather than a path of
# the machine terra was built on.
include(FindPackageHandleStandardArgs)

find_path(CBLAS_INCLUDE_DIR NAMES cblas.h
          PATH_SUFFIXES openblas x86_64-linux-gnu aarch64-linux-gnu)
find_library(CBLAS_LIBRARY NAMES openblas cblas blas)

# A library named "blas" need not export the C interface: check it does.
if(CBLAS_INCLUDE_DIR AND CBLAS_LIBRARY AND NOT DEFINED CBLAS_HAS_SGEMM)
  get_property(_cblas_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  if("CXX" IN_LIST _cblas_languages)
    include(CheckCXXSymbolExists)
    include(CMakePushCheckState)
    cmake_push_check_state(RESET)
    set(CMAKE_REQUIRED_QUIET ON)
    set(CMAKE_REQUIRED_INCLUDES "${CBLAS_INCLUDE_DIR}")
    set(CMAKE_REQUIRED_LIBRARIES "${CBLAS_LIBRARY}")
    check_cxx_symbol_exists(cblas_sgemm "cblas.h" CBLAS_HAS_SGEMM)
    cmake_pop_check_state()
  else()
    set(CBLAS_HAS_SGEMM ON CACHE INTERNAL "")  # no compiler to check with: trust the header
  endif()
  unset(_cblas_languages)
endif()

find_package_handle_standard_args(CBLAS
  REQUIRED_VARS CBLAS_LIBRARY CBLAS_INCLUDE_DIR CBLAS_HAS_SGEMM)

if(CBLAS_FOUND AND NOT TARGET terra::cblas)
  add_library(terra::cblas UNKNOWN IMPORTED)
  set_target_properties(terra::cblas PROPERTIES
    IMPORTED_LOCATION "${CBLAS_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${CBLAS_INCLUDE_DIR}")
endif()
mark_as_advanced(CBLAS_INCLUDE_DIR CBLAS_LIBRARY)
