// terra/kernels_tu.hpp: include from exactly one .cpp of a program built with
// TERRA_SEPARATE_KERNELS defined everywhere. The kernels are then compiled once, in that unit,
// instead of in every unit that includes terra.hpp (a large build-time saving for programs with
// many translation units; the results are identical).
#pragma once

#if !defined(TERRA_SEPARATE_KERNELS)
#error "define TERRA_SEPARATE_KERNELS for the whole program before using terra/kernels_tu.hpp"
#endif

#include "terra/terra.hpp"
#include "terra/backend/kernels.hpp"
