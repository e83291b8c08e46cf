// terra/ops/vjp/linalg.hpp: the vjps of matmul and linear, as matmuls of the transposes.
#pragma once

#include "terra/ops/linalg.hpp"
#include "terra/ops/reduce.hpp"

namespace terra::op {

// For a = [.., n, k], b = [.., k, m]: da = g b^T, db = a^T g, summed over broadcast batch dims.
// A 1-D operand is treated as the matrix torch.matmul makes of it.
inline void MatMul::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor &a = c.inputs[0], &b = c.inputs[1];
  Tensor a2 = a.dim() == 1 ? a.unsqueeze(0) : a;
  Tensor b2 = b.dim() == 1 ? b.unsqueeze(1) : b;
  Tensor g2 = g[0];
  if (a.dim() == 1) g2 = g2.unsqueeze(g2.dim() - (b.dim() == 1 ? 0 : 1));
  if (b.dim() == 1) g2 = g2.unsqueeze(-1);
  if (c.needs_grad(0)) gi[0] = sum_to(matmul(g2, b2.transpose(-1, -2)), a2.shape()).reshape(a.shape());
  if (c.needs_grad(1)) gi[1] = sum_to(matmul(a2.transpose(-1, -2), g2), b2.shape()).reshape(b.shape());
}

// y = x w^T + b: dx = g w, dw = g^T x over all leading dims, db = sum of g over them.
inline void Linear::vjp(const VjpCtx& c, std::span<const Tensor> g, std::span<Tensor> gi) {
  const Tensor &x = c.inputs[0], &w = c.inputs[1];
  if (c.needs_grad(0)) gi[0] = matmul(g[0], w);
  Tensor g2 = g[0].reshape({-1, w.size(0)});
  if (c.needs_grad(1)) gi[1] = matmul(g2.t(), x.reshape({-1, w.size(1)}));
  if (gi.size() > 2 && c.needs_grad(2)) gi[2] = g2.sum({0});
}

}  // namespace terra::op
