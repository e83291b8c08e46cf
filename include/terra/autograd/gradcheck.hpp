// terra/autograd/gradcheck.hpp: check a function's gradients against central finite
// differences, for tests of vjps (terra's and users' own).
#pragma once

#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "terra/autograd/engine.hpp"

namespace terra::autograd {

struct GradcheckOptions {
  double eps = 1e-6;   // finite-difference step
  double atol = 1e-5;
  double rtol = 1e-3;
  uint32_t seed = 0;   // of the random projection of the output
};

// f maps float64 inputs to one tensor. The analytic vjp of a random projection of f's output
// must match central differences element by element. Returns an empty string when it does,
// else a description of the first mismatch.
inline std::string gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                             const std::vector<Tensor>& inputs, GradcheckOptions o = {}) {
  std::vector<Tensor> xs;
  for (const Tensor& x : inputs) {
    TERRA_CHECK(x.dtype() == DType::Float64, "gradcheck", "inputs must be float64, got ", x.dtype());
    xs.push_back(x.detach().clone().set_requires_grad(true));
  }
  Tensor y = f(xs);
  std::mt19937 gen(o.seed);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> rv(size_t(y.numel()));
  for (double& v : rv) v = u(gen);
  Tensor r = tensor(rv, y.shape().empty() ? Shape{} : y.shape());
  if (y.dim() == 0) r = r.reshape({});
  std::vector<Tensor> analytic = grad({(y * r).sum()}, xs, {}, std::nullopt, false, true);
  auto project = [&](const std::vector<Tensor>& in) {
    NoGradGuard no_grad;
    return (f(in).to(DType::Float64) * r).sum().item<double>();
  };
  for (size_t i = 0; i < xs.size(); ++i) {
    std::vector<Tensor> probe;
    for (const Tensor& x : xs) probe.push_back(x.detach().clone());
    double* p = probe[i].data<double>();
    std::vector<double> a = analytic[i].defined() ? analytic[i].to_vector<double>()
                                                  : std::vector<double>(size_t(xs[i].numel()), 0.0);
    for (int64_t j = 0; j < xs[i].numel(); ++j) {
      double keep = p[j];
      p[j] = keep + o.eps;
      double hi = project(probe);
      p[j] = keep - o.eps;
      double lo = project(probe);
      p[j] = keep;
      double numeric = (hi - lo) / (2 * o.eps);
      if (std::abs(numeric - a[size_t(j)]) > o.atol + o.rtol * std::abs(numeric)) {
        std::ostringstream os;
        os << "input " << i << " (shape " << xs[i].shape() << ") element " << j
           << ": analytic " << a[size_t(j)] << " vs numeric " << numeric;
        return os.str();
      }
    }
  }
  return {};
}

}  // namespace terra::autograd
