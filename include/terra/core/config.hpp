// terra/core/config.hpp: compiler switches shared by every header.
#pragma once

#include <cstdint>

#include "terra/core/version.hpp"  // TERRA_VERSION_*, terra::version()

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
