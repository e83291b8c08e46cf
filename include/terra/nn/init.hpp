// terra/nn/init.hpp: in-place parameter initializations (PyTorch's defaults), drawn from the
// calling thread's generator.
#pragma once

#include <cmath>

#include "terra/autograd/engine.hpp"

namespace terra::nn::init {

// t ~ U(lo, hi), in place.
inline Tensor& uniform_(Tensor& t, double lo, double hi) {
  NoGradGuard no_grad;
  return t.copy_(rand(t.shape(), {.dtype = t.dtype(), .device = t.device()}) * (hi - lo) + lo);
}
// t ~ N(mean, std^2), in place.
inline Tensor& normal_(Tensor& t, double mean = 0, double std = 1) {
  NoGradGuard no_grad;
  return t.copy_(randn(t.shape(), {.dtype = t.dtype(), .device = t.device()}) * std + mean);
}
inline Tensor& constant_(Tensor& t, double v) {
  NoGradGuard no_grad;
  return t.fill_(v);
}
inline Tensor& zeros_(Tensor& t) { return constant_(t, 0); }
inline Tensor& ones_(Tensor& t) { return constant_(t, 1); }

// (fan_in, fan_out) of a weight [out, in, *kernel].
inline std::pair<double, double> fans(const Tensor& w) {
  TERRA_CHECK(w.dim() >= 2, "init", "fan in and fan out need a tensor of rank >= 2, got ", w.shape());
  double receptive = 1;
  for (int64_t i = 2; i < w.dim(); ++i) receptive *= double(w.size(i));
  return {double(w.size(1)) * receptive, double(w.size(0)) * receptive};
}
// He uniform with leaky-relu slope a: bound = sqrt(6 / ((1 + a^2) fan_in)).
inline Tensor& kaiming_uniform_(Tensor& w, double a = 0) {
  double bound = std::sqrt(6.0 / ((1 + a * a) * fans(w).first));
  return uniform_(w, -bound, bound);
}
// Glorot uniform: bound = gain * sqrt(6 / (fan_in + fan_out)).
inline Tensor& xavier_uniform_(Tensor& w, double gain = 1) {
  auto [fi, fo] = fans(w);
  double bound = gain * std::sqrt(6.0 / (fi + fo));
  return uniform_(w, -bound, bound);
}

}  // namespace terra::nn::init
