// terra/core/config.hpp: compiler switches shared by every header.
#pragma once

#include <cstdint>

// Functions usable from host and device code. Host bodies never depend on __CUDACC__ beyond
// this qualifier (one definition rule across .cpp and .cu translation units).
#if defined(__CUDACC__)
#define TERRA_HD __host__ __device__ __forceinline__
#else
#define TERRA_HD inline
#endif

#if defined(__GNUC__)
#define TERRA_LIKELY(x) __builtin_expect(!!(x), 1)
#define TERRA_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TERRA_RESTRICT __restrict__
#else
#define TERRA_LIKELY(x) (x)
#define TERRA_UNLIKELY(x) (x)
#define TERRA_RESTRICT
#endif

#ifndef TERRA_VERSION_MAJOR
#define TERRA_VERSION_MAJOR 0
#define TERRA_VERSION_MINOR 1
#define TERRA_VERSION_PATCH 0
#endif

namespace terra {

// "major.minor.patch" of the headers in use.
inline const char* version() {
#define TERRA_STR2(x) #x
#define TERRA_STR(x) TERRA_STR2(x)
  return TERRA_STR(TERRA_VERSION_MAJOR) "." TERRA_STR(TERRA_VERSION_MINOR) "." TERRA_STR(
      TERRA_VERSION_PATCH);
#undef TERRA_STR
#undef TERRA_STR2
}

}  // namespace terra
