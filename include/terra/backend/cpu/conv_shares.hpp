// terra/backend/cpu/conv_shares.hpp: grad_weight of a convolution as the sum of its chunks'
// shares, shared by the im2col + gemm path (conv.hpp) and the oneDNN one (conv_dnnl.hpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "terra/core/parallel.hpp"

namespace terra::cpu {

// dw[i] = (accumulate ? dw[i] : 0) + shares[0][i] + shares[1][i] + ..., added left to right for
// every i (shares: `count` arrays of `part` values, one after the other). The order is the
// chunks' whatever the threads, so the bits do not depend on them; a sum in several calls
// (accumulate on all but the first) gives the bits of one call.
template <class T>
void add_shares(T* dw, const T* shares, int64_t count, size_t part, bool accumulate) {
  parallel_for(int64_t(part), count, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      T acc = accumulate ? dw[i] + shares[size_t(i)] : shares[size_t(i)];
      for (int64_t q = 1; q < count; ++q) acc += shares[size_t(q) * part + size_t(i)];
      dw[i] = acc;
    }
  });
}

}  // namespace terra::cpu
