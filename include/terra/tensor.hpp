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
  // Views made with grad mode on: the tensor (itself not a view) whose storage they share. An
  // in-place op through the view rewrites that tensor's autograd history too.
  std::shared_ptr<TensorImpl> view_base;
};

/// An n-dimensional array: a cheap, shared handle (like torch::Tensor) to a shape, strides,
/// offset, dtype, device and a reference-counted storage. Copying a Tensor copies the
/// handle, not the values; views (slice, transpose, view, ...) share the storage, so an
/// in-place op on one is seen through all of them. Use clone() for an independent copy.
///
/// Member ops forward to the free functions of terra/ops (x.sum({1}) is terra::sum(x, {1}))
/// and follow LibTorch's names and semantics; see the free function for the full contract.
/// Every op takes a trailing `Loc loc = Loc::current()`: the call site, which the tracer
/// keys recorded ops by for co-execution. Leave it defaulted. Bad arguments (shapes, dims,
/// dtypes) throw terra::Error naming the op and the offending values.
class Tensor {
 public:
  Tensor() = default;  // an undefined tensor: defined() is false
  /// Wraps an existing TensorImpl (shared, not copied). For library internals and backends;
  /// users make tensors with the factories (zeros, tensor, from_blob, ...).
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  /// A fresh, uninitialized, contiguous tensor.
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  /// A view of an existing storage.
  static Tensor from_storage(Ref<Storage> storage, const Shape& shape, const Strides& strides,
                             int64_t offset, DType dtype);

  /// False for a default-constructed Tensor (LibTorch's undefined tensor, e.g. grad() before
  /// any backward()). Most other members throw terra::Error on an undefined tensor.
  bool defined() const { return impl_ != nullptr; }
  /// Size of every dim, outermost first; {} for a 0-d (scalar) tensor.
  const Shape& shape() const { return impl().shape; }
  /// Same as shape(), under LibTorch's name.
  const Shape& sizes() const { return impl().shape; }
  /// Per dim, how many elements (not bytes) apart in storage consecutive indices are: a
  /// contiguous [2, 3] has {3, 1}, its transpose {1, 3}, an expanded dim 0.
  const Strides& strides() const { return impl().strides; }
  /// shape()[dim]; a negative dim counts from the end; throws when dim is out of range.
  int64_t size(int64_t dim) const { return shape()[wrap_dim(dim, this->dim(), "size")]; }
  /// strides()[dim], in elements; a negative dim counts from the end; throws when out of range.
  int64_t stride(int64_t dim) const { return strides()[wrap_dim(dim, this->dim(), "stride")]; }
  /// Number of dims (the rank); 0 for a scalar tensor.
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  /// Number of elements: the product of shape() (1 for a 0-d tensor, 0 if any size is 0).
  int64_t numel() const { return numel_of(impl().shape); }
  /// Element type (kFloat32, kInt64, ...). Binary ops promote as PyTorch does: bool < ints <
  /// floats, the wider type within a category (int32 + int64 -> int64).
  DType dtype() const { return impl().dtype; }
  /// Same as dtype(), under LibTorch's name.
  DType scalar_type() const { return impl().dtype; }
  /// Where the storage lives (Device::cpu() in this version).
  Device device() const { return impl().device; }
  /// Index, in elements, of this tensor's first element within storage() (non-zero for views
  /// such as slices).
  int64_t storage_offset() const { return impl().offset; }
  /// Bytes per element: 1 for bool, 2 for float16/bfloat16, 4 for int32/float32, 8 otherwise.
  size_t element_size() const { return itemsize(dtype()); }
  /// numel() * element_size(): the bytes the elements take when dense (a view's storage may
  /// be larger).
  size_t nbytes() const { return numel() * element_size(); }
  /// True when the elements are dense in row-major order (size-1 dims and empty tensors are
  /// ignored), so data<T>() can read them as one array. Transposes and slices with a step are
  /// not; contiguous() makes a copy that is.
  bool is_contiguous() const { return is_contiguous_layout(shape(), strides()); }
  /// True for float16, bfloat16, float32 and float64: the dtypes that can require grad.
  bool is_floating_point() const { return is_floating(dtype()); }
  /// The shared memory block (reference-counted; views of one tensor share it).
  const Ref<Storage>& storage() const { return impl().storage; }
  /// The TensorImpl behind this handle, without taking a reference (null when undefined); for
  /// library internals.
  TensorImpl* unsafe_impl() const { return impl_.get(); }
  /// The shared TensorImpl behind this handle; for library internals that keep it alive.
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  /// True when both handles share a TensorImpl (not merely storage).
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- host access (CPU tensors) ----
  /// Pointer to the first element; T must match dtype(). Valid for strided tensors too.
  template <class T> T* data_ptr() const;
  /// As data_ptr, but also requires a contiguous tensor: the elements are data<T>()[0..numel).
  template <class T> T* data() const;
  /// Untyped pointer to the first element (storage base + storage_offset()); CPU tensors only
  /// (throws otherwise). Waits until a co-executed run has produced the values.
  void* raw_data() const;
  /// Untyped address of the first element on the tensor's own device (a device pointer for a
  /// CUDA tensor): for backends and kernels; host code reads values through to_vector/item.
  void* device_data() const;
  /// The value of a one-element tensor, converted to T.
  template <class T> T item() const;
  /// All elements in row-major order, converted to T.
  template <class T> std::vector<T> to_vector() const;
  /// PyTorch-style text: values, shape and dtype, e.g. `tensor([[0.0000, 1.5000]],
  /// shape=[1, 2], dtype=float32)`; tensors over 1000 elements are summarized with "...".
  /// `std::cout << x` prints the same (terra/io/print.hpp).
  std::string to_string() const;

  // ---- movement and views (no copies) ----
  Tensor view(const Shape& shape, Loc loc = Loc::current()) const;      ///< -1 infers one size
  Tensor reshape(const Shape& shape, Loc loc = Loc::current()) const;   ///< view, or copy if needed
  /// A view with dims reordered, as terra::permute: [N, H, W, C].permute({0, 3, 1, 2}) ->
  /// [N, C, H, W].
  Tensor permute(const Dims& dims, Loc loc = Loc::current()) const;
  /// A view with dims d0 and d1 swapped (terra::transpose).
  Tensor transpose(int64_t d0, int64_t d1, Loc loc = Loc::current()) const;
  Tensor t(Loc loc = Loc::current()) const;                              ///< 2-D transpose
  /// A view of x[..., start:end:step, ...] along dim (Python-style clamping of start/end,
  /// negatives count from the end, step > 0); terra::slice.
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1,
               Loc loc = Loc::current()) const;
  /// A view of `length` entries of dim from `start`; throws if the range leaves the dim.
  Tensor narrow(int64_t dim, int64_t start, int64_t length, Loc loc = Loc::current()) const;
  /// A view of entry `index` of dim, with dim removed: [a, b, c].select(1, i) -> [a, c].
  Tensor select(int64_t dim, int64_t index, Loc loc = Loc::current()) const;
  /// x[i]: select(0, i), a view of row i: [a, b, c] -> [b, c]; negative i counts from the end.
  Tensor operator[](int64_t index) const { return select(0, index); }
  Tensor expand(const Shape& shape, Loc loc = Loc::current()) const;   ///< -1 keeps a size
  /// expand(other.shape()): a broadcast view of this tensor with other's shape (no copy).
  Tensor expand_as(const Tensor& other, Loc loc = Loc::current()) const;
  /// A view with a new size-1 dim at dim: [3, 4].unsqueeze(0) -> [1, 3, 4].
  Tensor unsqueeze(int64_t dim, Loc loc = Loc::current()) const;
  /// A view without every size-1 dim: [1, 3, 1] -> [3].
  Tensor squeeze(Loc loc = Loc::current()) const;
  /// A view without dim if its size is 1, else the same shape.
  Tensor squeeze(int64_t dim, Loc loc = Loc::current()) const;
  /// Dims start_dim..end_dim merged into one: [N, C, H, W].flatten(1) -> [N, C * H * W]; a
  /// view when the layout allows, else a copy (as reshape); a 0-d tensor becomes [1].
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1, Loc loc = Loc::current()) const;
  /// This tensor if already contiguous, else a dense row-major copy.
  Tensor contiguous(Loc loc = Loc::current()) const;
  /// A contiguous copy that shares no storage with this tensor; gradients flow back through
  /// it (detach() cuts them).
  Tensor clone(Loc loc = Loc::current()) const;
  /// A copy converted to dtype (as static_cast; float -> int truncates), or this tensor
  /// itself when it already has that dtype. Differentiable between floating dtypes.
  Tensor to(DType dtype, Loc loc = Loc::current()) const;
  /// The values on `device` (this tensor when already there); differentiable: gradients flow
  /// back to this tensor's device. A program without the device's backend throws terra::Error.
  Tensor to(Device device, Loc loc = Loc::current()) const;
  /// As to(device); non_blocking lets a host-to-device copy finish after the call returns (the
  /// host values are staged first, so this tensor may be changed at once).
  Tensor to(Device device, bool non_blocking, Loc loc = Loc::current()) const;
  /// Views of split_size entries each along dim (the last may be smaller): [10, 4].split(4)
  /// -> [4, 4], [4, 4], [2, 4]. terra::split also takes a list of sizes.
  std::vector<Tensor> split(int64_t split_size, int64_t dim = 0, Loc loc = Loc::current()) const;
  /// `chunks` views of ceil(size(dim) / chunks) entries along dim (the last may be smaller,
  /// and fewer come back when the dim is too short), as torch::chunk.
  std::vector<Tensor> chunk(int64_t chunks, int64_t dim = 0, Loc loc = Loc::current()) const;

  // ---- in place ----
  /// Writes src's values into this tensor, keeping its shape, dtype and storage: src
  /// broadcasts to shape() and converts to dtype(). Returns *this.
  Tensor& copy_(const Tensor& src, Loc loc = Loc::current());
  /// Sets every element to value (converted to dtype()); the previous gradient history of
  /// this tensor is cut. Returns *this.
  Tensor& fill_(double value, Loc loc = Loc::current());
  /// fill_(0): the usual way to reset a buffer or a gradient. Returns *this.
  Tensor& zero_(Loc loc = Loc::current());
  /// this += alpha * other, in place (torch's add_ with alpha); other broadcasts to shape().
  /// A float result cannot be written into an integer tensor (throws). Returns *this.
  Tensor& add_(const Tensor& other, double alpha = 1.0, Loc loc = Loc::current());
  /// this += other (a scalar), in place. Returns *this.
  Tensor& add_(double other, Loc loc = Loc::current());
  /// this -= other, in place; other broadcasts to shape(). Returns *this.
  Tensor& sub_(const Tensor& other, Loc loc = Loc::current());
  /// this *= other, in place; other broadcasts to shape(). Returns *this.
  Tensor& mul_(const Tensor& other, Loc loc = Loc::current());
  /// this *= other (a scalar), in place. Returns *this.
  Tensor& mul_(double other, Loc loc = Loc::current());
  /// this /= other, in place (true division; throws for integer tensors, whose quotient would
  /// be float). Returns *this.
  Tensor& div_(const Tensor& other, Loc loc = Loc::current());
  /// this /= other (a scalar), in place. Returns *this.
  Tensor& div_(double other, Loc loc = Loc::current());
  /// Sets the elements where the bool mask is true to value; mask broadcasts to shape().
  /// Returns *this.
  Tensor& masked_fill_(const Tensor& mask, double value, Loc loc = Loc::current());
  /// Limits every element to [lo, hi] in place (NaN stays NaN). Returns *this.
  Tensor& clamp_(double lo, double hi, Loc loc = Loc::current());

  // ---- elementwise ----
  /// -x elementwise; same dtype (bool is rejected).
  Tensor neg(Loc loc = Loc::current()) const;
  /// |x| elementwise; same dtype (bool is rejected).
  Tensor abs(Loc loc = Loc::current()) const;
  /// e^x elementwise; integer and bool inputs compute and return float32.
  Tensor exp(Loc loc = Loc::current()) const;
  /// Natural log elementwise (-inf at 0, NaN below); integers and bool give float32.
  Tensor log(Loc loc = Loc::current()) const;
  /// Square root elementwise (NaN below 0); integers and bool give float32.
  Tensor sqrt(Loc loc = Loc::current()) const;
  /// 1 / sqrt(x) elementwise; integers and bool give float32.
  Tensor rsqrt(Loc loc = Loc::current()) const;
  /// Sine (radians) elementwise; integers and bool give float32.
  Tensor sin(Loc loc = Loc::current()) const;
  /// Cosine (radians) elementwise; integers and bool give float32.
  Tensor cos(Loc loc = Loc::current()) const;
  /// Hyperbolic tangent elementwise; integers and bool give float32.
  Tensor tanh(Loc loc = Loc::current()) const;
  /// 1 / (1 + e^-x) elementwise; integers and bool give float32.
  Tensor sigmoid(Loc loc = Loc::current()) const;
  /// max(x, 0) elementwise, same dtype (NaN stays NaN, as in PyTorch).
  Tensor relu(Loc loc = Loc::current()) const;
  /// x^exponent elementwise; a double exponent lifts an integer tensor to float32, as in
  /// torch (bool is rejected).
  Tensor pow(double exponent, Loc loc = Loc::current()) const;
  /// x^exponent elementwise, broadcasting the two shapes; dtypes promote. Integer powers are
  /// exact (a negative exponent gives 0 unless |x| == 1); bool is rejected.
  Tensor pow(const Tensor& exponent, Loc loc = Loc::current()) const;
  /// Every element limited to [lo, hi]; same dtype. terra::clamp takes optional bounds.
  Tensor clamp(double lo, double hi, Loc loc = Loc::current()) const;
  /// A copy with value where the bool mask is true; mask broadcasts to this shape.
  Tensor masked_fill(const Tensor& mask, double value, Loc loc = Loc::current()) const;

  // ---- reductions (an empty dims list means all dims) ----
  /// Sum of all elements -> 0-d; bool and integers give int64, floats keep their dtype.
  Tensor sum(Loc loc = Loc::current()) const;
  /// Sum over dims ({} = all) -> the other dims (reduced ones kept as size 1 if keepdim):
  /// [N, C].sum({1}) -> [N]. bool and integers give int64.
  Tensor sum(const Dims& dims, bool keepdim = false, Loc loc = Loc::current()) const;
  /// Mean of all elements -> 0-d; floating dtypes only (throws for int/bool).
  Tensor mean(Loc loc = Loc::current()) const;
  /// Mean over dims ({} = all): [N, C].mean({0}) -> [C]; floating dtypes only.
  Tensor mean(const Dims& dims, bool keepdim = false, Loc loc = Loc::current()) const;
  /// Product of all elements -> 0-d; bool and integers give int64.
  Tensor prod(Loc loc = Loc::current()) const;
  /// Product over dims ({} = all); bool and integers give int64.
  Tensor prod(const Dims& dims, bool keepdim = false, Loc loc = Loc::current()) const;
  /// Variance over dims ({} = all) with `correction` subtracted from the count (1 =
  /// unbiased, as torch's default; 0 = population); floating dtypes only.
  Tensor var(const Dims& dims = {}, int64_t correction = 1, bool keepdim = false,
             Loc loc = Loc::current()) const;
  /// sqrt(var(dims, correction)): the standard deviation; floating dtypes only.
  Tensor std(const Dims& dims = {}, int64_t correction = 1, bool keepdim = false,
             Loc loc = Loc::current()) const;
  /// Largest value over dims ({} = all), same dtype; NaN wins; throws on an empty extent.
  Tensor amax(const Dims& dims = {}, bool keepdim = false, Loc loc = Loc::current()) const;
  /// Smallest value over dims ({} = all), same dtype; NaN wins; throws on an empty extent.
  Tensor amin(const Dims& dims = {}, bool keepdim = false, Loc loc = Loc::current()) const;
  Tensor max(Loc loc = Loc::current()) const;  ///< over all elements
  /// Smallest of all elements -> 0-d (amin over all dims).
  Tensor min(Loc loc = Loc::current()) const;
  /// (values, int64 indices) of the max along dim, like torch's std::tuple from x.max(dim):
  /// `auto [v, i] = x.max(1);` [N, C] -> [N], [N]. Ties give the first index.
  std::pair<Tensor, Tensor> max(int64_t dim, bool keepdim = false, Loc loc = Loc::current()) const;
  /// (values, int64 indices) of the min along dim: `auto [v, i] = x.min(1);`.
  std::pair<Tensor, Tensor> min(int64_t dim, bool keepdim = false, Loc loc = Loc::current()) const;
  /// int64 index of the max along dim (first on ties): logits [N, C].argmax(1) -> [N] labels.
  Tensor argmax(int64_t dim, bool keepdim = false, Loc loc = Loc::current()) const;
  /// int64 index of the min along dim (first on ties).
  Tensor argmin(int64_t dim, bool keepdim = false, Loc loc = Loc::current()) const;
  /// log(sum(exp(x))) over dims, computed stably; floating dtypes only.
  Tensor logsumexp(const Dims& dims, bool keepdim = false, Loc loc = Loc::current()) const;
  /// exp(x) / sum(exp(x)) along dim, same shape; rows of the result sum to 1.
  Tensor softmax(int64_t dim, Loc loc = Loc::current()) const;
  /// x - logsumexp(x) along dim, same shape; more accurate than softmax(dim).log().
  Tensor log_softmax(int64_t dim, Loc loc = Loc::current()) const;
  /// Matrix product as torch::matmul: [..., n, k] x [..., k, p] -> [..., n, p] with broadcast
  /// batch dims; a 1-D operand acts as a row (left) or column (right) and its dim is dropped.
  Tensor matmul(const Tensor& other, Loc loc = Loc::current()) const;

  /// A comparison result used as a condition: a one-element tensor, true when non-zero.
  explicit operator bool() const;

  // ---- autograd (autograd/autograd.hpp) ----
  /// True when ops on this tensor are recorded for backward(): set on leaves with
  /// set_requires_grad(), inherited by results of recorded ops.
  bool requires_grad() const;
  /// Make this (leaf) tensor record the ops that use it, so backward() fills its grad().
  Tensor& set_requires_grad(bool requires_grad = true);
  /// set_requires_grad(requires_grad), under LibTorch's name; returns *this.
  Tensor& requires_grad_(bool requires_grad = true) { return set_requires_grad(requires_grad); }
  /// The gradient accumulated by backward(); undefined until one ran.
  const Tensor& grad() const;
  /// grad(), writable: assign, zero or scale the accumulated gradient (as torch's
  /// mutable_grad()), e.g. to clip it or to set it to an undefined Tensor.
  Tensor& mutable_grad();
  /// True for tensors not produced by a recorded op (parameters, inputs, detached values).
  bool is_leaf() const;
  /// True for a view (slice, select, view, transpose, ...) made with grad mode on: it shares
  /// its base's storage, and an in-place op through it rewrites the base's autograd history
  /// too, as in PyTorch (a view of a leaf that requires grad cannot be written in place).
  bool is_view() const { return impl().view_base != nullptr; }
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

inline void* Tensor::device_data() const {
  storage()->wait_ready();
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
