// terra/tensor_methods.hpp: Tensor's member functions, defined in terms of the public ops.
#pragma once

#include "terra/ops/ops.hpp"

namespace terra {

template <class T>
std::vector<T> Tensor::to_vector() const {
  // A host read: the copy kernel runs directly (not through dispatch, which would record it).
  if (trace::Hook* h = trace::active_hook()) h->on_fetch(*this);
  Tensor src = device().is_cpu() ? *this : to(Device::cpu());
  const Ref<Storage>& st = src.storage();
  if (Signal* p = st->pending(); p && !p->done() && st->readable())
    // A co-executed run still reads this memory but none writes it (a feed): read it now,
    // through an alias the copy kernel does not wait on.
    src = Tensor::from_storage(Storage::wrap(st->data(), st->nbytes(), st->device(), {}),
                               src.shape(), src.strides(), src.storage_offset(), src.dtype());
  const Tensor in[] = {src};
  Tensor y = Tensor::empty(in[0].shape(), dtype_v<T>, Device::cpu());
  Attrs a;
  a.dtype = dtype_v<T>;
  find_kernel(Op::Copy, Device::cpu())({.op = Op::Copy, .inputs = in, .attrs = a}, {&y, 1});
  const T* p = y.data<T>();
  return std::vector<T>(p, p + y.numel());
}

template <class T>
T Tensor::item() const {
  TERRA_CHECK(numel() == 1, "item", "a tensor with ", numel(),
              " elements cannot be converted to a scalar (shape ", shape(), ")");
  return to_vector<T>()[0];
}

inline Tensor::operator bool() const {
  TERRA_CHECK(numel() == 1, "bool", "the truth value of a tensor with ", numel(),
              " elements is ambiguous (shape ", shape(), ")");
  return item<double>() != 0.0;
}

// ---- movement and views ----
inline Tensor Tensor::view(const Shape& s, Loc loc) const { return terra::view(*this, s, loc); }
inline Tensor Tensor::reshape(const Shape& s, Loc loc) const { return terra::reshape(*this, s, loc); }
inline Tensor Tensor::permute(const Dims& d, Loc loc) const { return terra::permute(*this, d, loc); }
inline Tensor Tensor::transpose(int64_t a, int64_t b, Loc loc) const { return terra::transpose(*this, a, b, loc); }
inline Tensor Tensor::t(Loc loc) const {
  TERRA_CHECK(dim() <= 2, "t", "expects a tensor of rank <= 2, got shape ", shape());
  return dim() < 2 ? *this : terra::transpose(*this, 0, 1, loc);
}
inline Tensor Tensor::slice(int64_t d, int64_t s, int64_t e, int64_t st, Loc loc) const {
  return terra::slice(*this, d, s, e, st, loc);
}
inline Tensor Tensor::narrow(int64_t d, int64_t s, int64_t n, Loc loc) const { return terra::narrow(*this, d, s, n, loc); }
inline Tensor Tensor::select(int64_t d, int64_t i, Loc loc) const { return terra::select(*this, d, i, loc); }
inline Tensor Tensor::expand(const Shape& s, Loc loc) const { return terra::expand(*this, s, loc); }
inline Tensor Tensor::expand_as(const Tensor& o, Loc loc) const { return terra::expand(*this, o.shape(), loc); }
inline Tensor Tensor::unsqueeze(int64_t d, Loc loc) const { return terra::unsqueeze(*this, d, loc); }
inline Tensor Tensor::squeeze(Loc loc) const { return terra::squeeze(*this, loc); }
inline Tensor Tensor::squeeze(int64_t d, Loc loc) const { return terra::squeeze(*this, d, loc); }
inline Tensor Tensor::flatten(int64_t s, int64_t e, Loc loc) const { return terra::flatten(*this, s, e, loc); }
inline Tensor Tensor::contiguous(Loc loc) const { return terra::contiguous(*this, loc); }
inline Tensor Tensor::clone(Loc loc) const { return terra::clone(*this, loc); }
inline Tensor Tensor::to(DType dt, Loc loc) const { return dt == dtype() ? *this : terra::copy(*this, dt, loc); }
inline Tensor Tensor::to(Device d, Loc loc) const { return terra::to_device(*this, d, false, loc); }
inline Tensor Tensor::to(Device d, bool non_blocking, Loc loc) const {
  return terra::to_device(*this, d, non_blocking, loc);
}
inline std::vector<Tensor> Tensor::split(int64_t n, int64_t d, Loc loc) const { return terra::split(*this, n, d, loc); }
inline std::vector<Tensor> Tensor::chunk(int64_t n, int64_t d, Loc loc) const { return terra::chunk(*this, n, d, loc); }

// ---- in place: the result of an op written into *this ----
namespace detail {
inline Tensor& write_into(Tensor& self, OpCall call) {
  call.out = &self;
  dispatch(call);
  return self;
}
}  // namespace detail

inline Tensor& Tensor::copy_(const Tensor& src, Loc loc) {
  // From another device: move the values here first (as torch's copy_ does).
  const Tensor& s = src.device() == device() ? src : terra::to_device(src, device(), false, loc);
  const Tensor in[] = {s.shape() == shape() ? s : terra::expand(s, shape(), loc)};
  Attrs a;
  a.dtype = dtype();
  return detail::write_into(*this, {.op = Op::Copy, .inputs = in, .attrs = a, .loc = loc});
}
inline Tensor& Tensor::fill_(double v, Loc loc) {
  Attrs a = detail::shape_attrs(shape());
  a.scalars = {v};
  a.dtype = dtype();
  a.device = device();
  return detail::write_into(*this, {.op = Op::Full, .attrs = a, .loc = loc});
}
inline Tensor& Tensor::zero_(Loc loc) { return fill_(0.0, loc); }

namespace detail {
inline Tensor& binary_(Tensor& self, Op op, const Tensor& other, Loc loc) {
  const Tensor in[] = {self, other};
  return write_into(self, {.op = op, .inputs = in, .loc = loc});
}
inline Tensor& binary_scalar_(Tensor& self, Op op, double s, Loc loc) {
  const Tensor in[] = {self};
  Attrs a;
  a.scalars = {s};
  a.ints = {0, 0};
  return write_into(self, {.op = op, .inputs = in, .attrs = a, .loc = loc});
}
}  // namespace detail

inline Tensor& Tensor::add_(const Tensor& o, double alpha, Loc loc) {
  return detail::binary_(*this, Op::Add, alpha == 1.0 ? o : terra::mul(o, alpha, loc), loc);
}
inline Tensor& Tensor::add_(double o, Loc loc) { return detail::binary_scalar_(*this, Op::Add, o, loc); }
inline Tensor& Tensor::sub_(const Tensor& o, Loc loc) { return detail::binary_(*this, Op::Sub, o, loc); }
inline Tensor& Tensor::mul_(const Tensor& o, Loc loc) { return detail::binary_(*this, Op::Mul, o, loc); }
inline Tensor& Tensor::mul_(double o, Loc loc) { return detail::binary_scalar_(*this, Op::Mul, o, loc); }
inline Tensor& Tensor::div_(const Tensor& o, Loc loc) { return detail::binary_(*this, Op::Div, o, loc); }
inline Tensor& Tensor::div_(double o, Loc loc) { return detail::binary_scalar_(*this, Op::Div, o, loc); }
inline Tensor& Tensor::masked_fill_(const Tensor& mask, double v, Loc loc) {
  const Tensor in[] = {*this, mask};
  Attrs a;
  a.scalars = {v};
  return detail::write_into(*this, {.op = Op::MaskedFill, .inputs = in, .attrs = a, .loc = loc});
}
inline Tensor& Tensor::clamp_(double lo, double hi, Loc loc) {
  const Tensor in[] = {*this};
  Attrs a;
  a.scalars = {lo, hi};
  a.ints = {1, 1};
  return detail::write_into(*this, {.op = Op::Clamp, .inputs = in, .attrs = a, .loc = loc});
}

// ---- elementwise ----
inline Tensor Tensor::neg(Loc loc) const { return terra::neg(*this, loc); }
inline Tensor Tensor::abs(Loc loc) const { return terra::abs(*this, loc); }
inline Tensor Tensor::exp(Loc loc) const { return terra::exp(*this, loc); }
inline Tensor Tensor::log(Loc loc) const { return terra::log(*this, loc); }
inline Tensor Tensor::sqrt(Loc loc) const { return terra::sqrt(*this, loc); }
inline Tensor Tensor::rsqrt(Loc loc) const { return terra::rsqrt(*this, loc); }
inline Tensor Tensor::sin(Loc loc) const { return terra::sin(*this, loc); }
inline Tensor Tensor::cos(Loc loc) const { return terra::cos(*this, loc); }
inline Tensor Tensor::tanh(Loc loc) const { return terra::tanh(*this, loc); }
inline Tensor Tensor::sigmoid(Loc loc) const { return terra::sigmoid(*this, loc); }
inline Tensor Tensor::relu(Loc loc) const { return terra::relu(*this, loc); }
inline Tensor Tensor::pow(double e, Loc loc) const { return terra::pow(*this, e, loc); }
inline Tensor Tensor::pow(const Tensor& e, Loc loc) const { return terra::pow(*this, e, loc); }
inline Tensor Tensor::clamp(double lo, double hi, Loc loc) const { return terra::clamp(*this, lo, hi, loc); }
inline Tensor Tensor::masked_fill(const Tensor& m, double v, Loc loc) const { return terra::masked_fill(*this, m, v, loc); }

// ---- reductions ----
inline Tensor Tensor::sum(Loc loc) const { return terra::sum(*this, {}, false, loc); }
inline Tensor Tensor::sum(const Dims& d, bool k, Loc loc) const { return terra::sum(*this, d, k, loc); }
inline Tensor Tensor::mean(Loc loc) const { return terra::mean(*this, {}, false, loc); }
inline Tensor Tensor::mean(const Dims& d, bool k, Loc loc) const { return terra::mean(*this, d, k, loc); }
inline Tensor Tensor::prod(Loc loc) const { return terra::prod(*this, {}, false, loc); }
inline Tensor Tensor::prod(const Dims& d, bool k, Loc loc) const { return terra::prod(*this, d, k, loc); }
inline Tensor Tensor::var(const Dims& d, int64_t c, bool k, Loc loc) const { return terra::var(*this, d, c, k, loc); }
inline Tensor Tensor::std(const Dims& d, int64_t c, bool k, Loc loc) const { return terra::std(*this, d, c, k, loc); }
inline Tensor Tensor::amax(const Dims& d, bool k, Loc loc) const { return terra::amax(*this, d, k, loc); }
inline Tensor Tensor::amin(const Dims& d, bool k, Loc loc) const { return terra::amin(*this, d, k, loc); }
inline Tensor Tensor::max(Loc loc) const { return terra::amax(*this, {}, false, loc); }
inline Tensor Tensor::min(Loc loc) const { return terra::amin(*this, {}, false, loc); }
inline std::pair<Tensor, Tensor> Tensor::max(int64_t d, bool k, Loc loc) const { return terra::max(*this, d, k, loc); }
inline std::pair<Tensor, Tensor> Tensor::min(int64_t d, bool k, Loc loc) const { return terra::min(*this, d, k, loc); }
inline Tensor Tensor::argmax(int64_t d, bool k, Loc loc) const { return terra::argmax(*this, d, k, loc); }
inline Tensor Tensor::argmin(int64_t d, bool k, Loc loc) const { return terra::argmin(*this, d, k, loc); }
inline Tensor Tensor::logsumexp(const Dims& d, bool k, Loc loc) const { return terra::logsumexp(*this, d, k, loc); }
inline Tensor Tensor::softmax(int64_t d, Loc loc) const { return terra::softmax(*this, d, loc); }
inline Tensor Tensor::log_softmax(int64_t d, Loc loc) const { return terra::log_softmax(*this, d, loc); }
inline Tensor Tensor::matmul(const Tensor& o, Loc loc) const { return terra::matmul(*this, o, loc); }

}  // namespace terra
