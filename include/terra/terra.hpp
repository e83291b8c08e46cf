// terra/terra.hpp: the whole library. Reaches no CUDA header unless TERRA_WITH_CUDA is defined
// (by the terra::cuda target); then it adds the host side of the CUDA backend (devices, streams,
// allocator). The CUDA kernels come from <terra/cuda.hpp>, included by one .cu unit.
#pragma once

#include "terra/core/config.hpp"
#include "terra/core/device.hpp"
#include "terra/core/dtype.hpp"
#include "terra/core/error.hpp"
#include "terra/core/philox.hpp"
#include "terra/core/shape.hpp"
#include "terra/tensor.hpp"
#include "terra/ops/ops.hpp"
// The kernels: in every translation unit (header-only), or with TERRA_SEPARATE_KERNELS only
// in the one that includes <terra/kernels_tu.hpp>.
#if !defined(TERRA_SEPARATE_KERNELS)
#include "terra/backend/kernels.hpp"
#endif
#include "terra/tensor_methods.hpp"
#include "terra/io/print.hpp"
#include "terra/autograd/engine.hpp"
#include "terra/autograd/gradcheck.hpp"
#include "terra/optim/optim.hpp"
#include "terra/nn/nn.hpp"
#include "terra/io/checkpoint.hpp"
#include "terra/exec/engine.hpp"
#if defined(TERRA_WITH_CUDA)
#include "terra/backend/cuda/allocator.hpp"
#include "terra/backend/cuda/math_mode.hpp"
#endif
