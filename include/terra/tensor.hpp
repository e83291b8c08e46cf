// terra/tensor.hpp: the Tensor handle.
// A Tensor is a cheap, shared handle to a TensorImpl (shape, strides, offset, dtype, device
// and a storage). Views share storage. Member functions that run ops are declared here and
// defined in tensor_methods.hpp, after the ops: the handle sits between core/ and ops/.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <source_location>
#include <string>
#include <vector>

#include "terra/core/device.hpp"
#include "terra/core/dtype.hpp"
#include "terra/core/error.hpp"
#include "terra/core/shape.hpp"
#include "terra/core/storage.hpp"

namespace terra {

using Loc = std::source_location;  ///< the call site every public op records

namespace autograd {
struct Meta;
struct Node;
}  // namespace autograd

struct TensorImpl {
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::Float32;
  Device device;
  Ref<Storage> storage;
  std::shared_ptr<autograd::Meta> autograd;  // null unless the tensor takes part in autograd
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor: defined() is false
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  /// A fresh, uninitialized, contiguous tensor.
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  /// A view of an existing storage.
  static Tensor from_storage(Ref<Storage> storage, const Shape& shape, const Strides& strides,
                             int64_t offset, DType dtype);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& sizes() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  int64_t size(int64_t dim) const { return shape()[wrap_dim(dim, this->dim(), "size")]; }
  int64_t stride(int64_t dim) const { return strides()[wrap_dim(dim, this->dim(), "stride")]; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t numel() const { return numel_of(impl().shape); }
  DType dtype() const { return impl().dtype; }
  DType scalar_type() const { return impl().dtype; }
  Device device() const { return impl().device; }
  int64_t storage_offset() const { return impl().offset; }
  size_t element_size() const { return itemsize(dtype()); }
  size_t nbytes() const { return numel() * element_size(); }
  bool is_contiguous() const { return is_contiguous_layout(shape(), strides()); }
  bool is_floating_point() const { return is_floating(dtype()); }
  const Ref<Storage>& storage() const { return impl().storage; }
  TensorImpl* unsafe_impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  /// True when both handles share a TensorImpl (not merely storage).
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- host access (CPU tensors) ----
  /// Pointer to the first element; T must match dtype(). Valid for strided tensors too.
  template <class T> T* data_ptr() const;
  /// As data_ptr, but also requires a contiguous tensor: the elements are data<T>()[0..numel).
  template <class T> T* data() const;
  void* raw_data() const;
  /// The value of a one-element tensor, converted to T.
  template <class T> T item() const;
  /// All elements in row-major order, converted to T.
  template <class T> std::vector<T> to_vector() const;
  std::string to_string() const;

  // ---- movement and views (no copies) ----
  Tensor view(const Shape& shape, Loc loc = Loc::current()) const;      ///< -1 infers one size
  Tensor reshape(const Shape& shape, Loc loc = Loc::current()) const;   ///< view, or copy if needed
  Tensor permute(const Dims& dims, Loc loc = Loc::current()) const;
  Tensor transpose(int64_t d0, int64_t d1, Loc loc = Loc::current()) const;
  Tensor t(Loc loc = Loc::current()) const;                              ///< 2-D transpose
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1,
               Loc loc = Loc::current()) const;
  Tensor narrow(int64_t dim, int64_t start, int64_t length, Loc loc = Loc::current()) const;
  Tensor select(int64_t dim, int64_t index, Loc loc = Loc::current()) const;
  Tensor operator[](int64_t index) const { return select(0, index); }
  Tensor expand(const Shape& shape, Loc loc = Loc::current()) const;   ///< -1 keeps a size
  Tensor expand_as(const Tensor& other, Loc loc = Loc::current()) const;
  Tensor unsqueeze(int64_t dim, Loc loc = Loc::current()) const;
  Tensor squeeze(Loc loc = Loc::current()) const;
  Tensor squeeze(int64_t dim, Loc loc = Loc::current()) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1, Loc loc = Loc::current()) const;
  Tensor contiguous(Loc loc = Loc::current()) const;
  Tensor clone(Loc loc = Loc::current()) const;
  Tensor to(DType dtype, Loc loc = Loc::current()) const;
  Tensor to(Device device, Loc loc = Loc::current()) const;
  std::vector<Tensor> split(int64_t split_size, int64_t dim = 0, Loc loc = Loc::current()) const;
  std::vector<Tensor> chunk(int64_t chunks, int64_t dim = 0, Loc loc = Loc::current()) const;

  // ---- in place ----
  Tensor& copy_(const Tensor& src, Loc loc = Loc::current());
  Tensor& fill_(double value, Loc loc = Loc::current());
  Tensor& zero_(Loc loc = Loc::current());
  Tensor& add_(const Tensor& other, double alpha = 1.0, Loc loc = Loc::current());
  Tensor& add_(double other, Loc loc = Loc::current());
  Tensor& sub_(const Tensor& other, Loc loc = Loc::current());
  Tensor& mul_(const Tensor& other, Loc loc = Loc::current());
  Tensor& mul_(double other, Loc loc = Loc::current());
  Tensor& div_(const Tensor& other, Loc loc = Loc::current());
  Tensor& div_(double other, Loc loc = Loc::current());
  Tensor& masked_fill_(const Tensor& mask, double value, Loc loc = Loc::current());
  Tensor& clamp_(double lo, double hi, Loc loc = Loc::current());

  // ---- elementwise ----
  Tensor neg(Loc loc = Loc::current()) const;
  Tensor abs(Loc loc = Loc::current()) const;
  Tensor exp(Loc loc = Loc::current()) const;
  Tensor log(Loc loc = Loc::current()) const;
  Tensor sqrt(Loc loc = Loc::current()) const;
  Tensor rsqrt(Loc loc = Loc::current()) const;
  Tensor sin(Loc loc = Loc::current()) const;
  Tensor cos(Loc loc = Loc::current()) const;
  Tensor tanh(Loc loc = Loc::current()) const;
  Tensor sigmoid(Loc loc = Loc::current()) const;
  Tensor relu(Loc loc = Loc::current()) const;
  Tensor pow(double exponent, Loc loc = Loc::current()) const;
  Tensor pow(const Tensor& exponent, Loc loc = Loc::current()) const;
  Tensor clamp(double lo, double hi, Loc loc = Loc::current()) const;
  Tensor masked_fill(const Tensor& mask, double value, Loc loc = Loc::current()) const;

  // ---- reductions (an empty dims list means all dims) ----
  Tensor sum(Loc loc = Loc::current()) const;
  Tensor sum(const Dims& dims, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor mean(Loc loc = Loc::current()) const;
  Tensor mean(const Dims& dims, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor prod(Loc loc = Loc::current()) const;
  Tensor prod(const Dims& dims, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor var(const Dims& dims = {}, int64_t correction = 1, bool keepdim = false,
             Loc loc = Loc::current()) const;
  Tensor std(const Dims& dims = {}, int64_t correction = 1, bool keepdim = false,
             Loc loc = Loc::current()) const;
  Tensor amax(const Dims& dims = {}, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor amin(const Dims& dims = {}, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor max(Loc loc = Loc::current()) const;  ///< over all elements
  Tensor min(Loc loc = Loc::current()) const;
  std::pair<Tensor, Tensor> max(int64_t dim, bool keepdim = false, Loc loc = Loc::current()) const;
  std::pair<Tensor, Tensor> min(int64_t dim, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor argmax(int64_t dim, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor argmin(int64_t dim, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor logsumexp(const Dims& dims, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor softmax(int64_t dim, Loc loc = Loc::current()) const;
  Tensor log_softmax(int64_t dim, Loc loc = Loc::current()) const;
  Tensor matmul(const Tensor& other, Loc loc = Loc::current()) const;

  /// A comparison result used as a condition: a one-element tensor, true when non-zero.
  explicit operator bool() const;

  // ---- autograd (autograd/autograd.hpp) ----
  bool requires_grad() const;
  /// Make this (leaf) tensor record the ops that use it, so backward() fills its grad().
  Tensor& set_requires_grad(bool requires_grad = true);
  Tensor& requires_grad_(bool requires_grad = true) { return set_requires_grad(requires_grad); }
  /// The gradient accumulated by backward(); undefined until one ran.
  const Tensor& grad() const;
  Tensor& mutable_grad();
  /// True for tensors not produced by a recorded op (parameters, inputs, detached values).
  bool is_leaf() const;
  /// The node that produced this tensor, or null for leaves.
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  /// Keep grad() of this non-leaf tensor after backward().
  void retain_grad();
  /// The same values, cut from the graph (shares storage).
  Tensor detach() const;
  /// Gradients of this tensor with respect to every leaf that requires grad. `gradient` is
  /// required unless this is a one-element tensor.
  void backward(const Tensor& gradient = {}, bool retain_graph = false,
                bool create_graph = false) const;

 private:
  TensorImpl& impl() const {
    TERRA_CHECK(impl_ != nullptr, "tensor", "use of an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

inline Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) TERRA_CHECK(d >= 0, "empty", "negative size in shape ", shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  impl->device = device;
  impl->storage = Storage::allocate(numel_of(shape) * itemsize(dtype), device);
  return Tensor(std::move(impl));
}

inline Tensor Tensor::from_storage(Ref<Storage> storage, const Shape& shape,
                                   const Strides& strides, int64_t offset, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = dtype;
  impl->device = storage->device();
  impl->storage = std::move(storage);
  return Tensor(std::move(impl));
}

inline void* Tensor::raw_data() const {
  TERRA_CHECK(device().is_cpu(), "data", "tensor is on ", device(), "; copy it to the cpu first");
  storage()->wait_ready();  // a co-executed value: wait for the run that produces it
  return static_cast<char*>(storage()->data()) + storage_offset() * element_size();
}

template <class T>
T* Tensor::data_ptr() const {
  TERRA_CHECK(dtype_v<T> == dtype(), "data", "requested ", dtype_name(dtype_v<T>),
              " from a tensor of dtype ", dtype());
  return static_cast<T*>(raw_data());
}

template <class T>
T* Tensor::data() const {
  TERRA_CHECK(is_contiguous(), "data", "tensor of shape ", shape(),
              " is not contiguous; call contiguous() first");
  return data_ptr<T>();
}

}  // namespace terra
