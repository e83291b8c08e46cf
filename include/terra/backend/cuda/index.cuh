// terra/backend/cuda/index.cuh: CUDA kernels of the indexing ops (index_select, gather,
// scatter_add, masked_select, one_hot; embedding is index_select). Inputs may be any strided
// view, indices int32 or int64. Index values are checked on the device: a kernel records the
// lowest row-major position of a bad value, the op's kernels skip bad values (never an
// out-of-bounds access), and the host copies the position back and throws the CPU's message.
// nvcc only.
#pragma once

#include <array>
#include <cub/device/device_scan.cuh>
#include <optional>

#include "terra/backend/cuda/shape.cuh"

namespace terra::cuda {

namespace ix {

using sh::first_thread;
using sh::thread_count;

// ---- kernels ----
// *first = the lowest row-major position of an index value outside [0, size).
template <class I>
__global__ void check_index_kernel(const I* idx, Indexer ii, int64_t n, int64_t size,
                                   unsigned long long* first) {
  for (int64_t i = first_thread(); i < n; i += thread_count())
    if (uint64_t(int64_t(idx[ii.offset(i)])) >= uint64_t(size))  // also rejects negatives
      atomicMin(first, (unsigned long long)i);
}

// out (contiguous)[i] = x[i's coordinates with the one at dim d replaced by the index value].
// m walks {x with stride 0 at d, idx}; xsd is x's real stride at d.
template <class U, class I>
__global__ void gather_elems(U* out, const U* x, const I* idx, MultiIndexer<2> m, int64_t xsd,
                             int64_t size, int64_t n) {
  for (int64_t i = first_thread(); i < n; i += thread_count()) {
    int64_t off[2];
    m.offsets(i, off);
    int64_t v = int64_t(idx[off[1]]);
    if (uint64_t(v) < uint64_t(size)) out[i] = x[off[0] + v * xsd];
  }
}

__device__ inline void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ inline void atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ inline void atomic_add(int32_t* p, int32_t v) { atomicAdd(p, v); }
// Two's complement: an unsigned 64-bit add is the signed one.
__device__ inline void atomic_add(int64_t* p, int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}
// bool sums are logical or (as on the CPU): every writer stores the same true.
__device__ inline void atomic_add(bool* p, bool v) {
  if (v) *p = true;
}

// acc[idx coords with dim d replaced by the index value] += src[idx coords], over idx's
// elements. m walks {acc with stride 0 at d, idx, src}; asd is acc's stride at d. The order of
// the additions into one element is the hardware's: not deterministic for floats.
template <class A, class S, class I>
__global__ void scatter_add_elems(A* acc, const S* src, const I* idx, MultiIndexer<3> m,
                                  int64_t asd, int64_t size, int64_t n) {
  for (int64_t i = first_thread(); i < n; i += thread_count()) {
    int64_t off[3];
    m.offsets(i, off);
    int64_t v = int64_t(idx[off[1]]);
    if (uint64_t(v) < uint64_t(size)) atomic_add(acc + off[0] + v * asd, A(src[off[2]]));
  }
}

// flags[i] = mask[i] != 0 over the broadcast shape (an inclusive scan then gives positions).
static __global__ void mask_flags_kernel(int64_t* flags, const uint8_t* mask, Indexer mi,
                                         int64_t n) {
  for (int64_t i = first_thread(); i < n; i += thread_count()) flags[i] = mask[mi.offset(i)] != 0;
}

// out[incl[i] - 1] = x[i] where mask[i]; m walks {x, mask} broadcast.
template <class U>
__global__ void masked_select_elems(U* out, const U* x, const uint8_t* mask, MultiIndexer<2> m,
                                    const int64_t* incl, int64_t count, int64_t n) {
  for (int64_t i = first_thread(); i < n; i += thread_count()) {
    int64_t off[2];
    m.offsets(i, off);
    int64_t k = incl[i] - 1;
    if (mask[off[1]] && k < count) out[k] = x[off[0]];
  }
}

// out (zeroed, [n, nc])[i, idx[i]] = 1.
template <class I>
__global__ void one_hot_elems(int64_t* out, const I* idx, Indexer ii, int64_t nc, int64_t n) {
  for (int64_t i = first_thread(); i < n; i += thread_count()) {
    int64_t v = int64_t(idx[ii.offset(i)]);
    if (uint64_t(v) < uint64_t(nc)) out[i * nc + v] = 1;
  }
}

// ---- host helpers ----
// f(I{}) with I the C++ type of an index dtype (infer has checked it is int32 or int64).
template <class F>
void by_index(DType dt, F&& f) {
  if (dt == DType::Int32) return f(int32_t{});
  return f(int64_t{});
}

// A 0-d tensor reads as [1], like on the CPU.
inline Shape shape1(const Tensor& t) { return t.dim() ? t.shape() : Shape{1}; }
inline Strides strides1(const Tensor& t) { return t.dim() ? t.strides() : Strides{1}; }
// t's strides broadcast to shape s (0 on broadcast dims).
inline Strides bcast(const Tensor& t, const Shape& s) {
  Indexer i = indexer(t, s);
  return Strides(i.strides, i.strides + i.ndim);
}

// Each stride list holds at least shape.size() entries; the first shape.size() are used.
template <int K>
MultiIndexer<K> multi(const Shape& shape, const std::array<Strides, K>& st) {
  int r = int(shape.size());
  TERRA_CHECK(r <= kMaxDims, "cuda", "tensors of rank ", r, " exceed the CUDA kernels' limit of ",
              kMaxDims, " dims");
  MultiIndexer<K> m;
  m.ndim = r;
  for (int d = 0; d < r; ++d) {
    m.sizes[d] = shape[size_t(d)];
    for (int k = 0; k < K; ++k) m.strides[k][d] = st[size_t(k)][size_t(d)];
  }
  return m;
}

// A value copied back from the device after everything queued on stream() before it.
template <class T>
T read_back(const void* p) {
  T v{};
  TERRA_CUDA_CHECK(cudaMemcpyAsync(&v, p, sizeof(T), cudaMemcpyDeviceToHost, stream()));
  TERRA_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return v;
}

// The check of an index tensor's values against [0, size), queued on construction;
// first_bad() waits for it (so queue the op's own kernels before asking).
class IndexCheck {
 public:
  IndexCheck(const Tensor& index, int64_t size, const char* op)
      : index_(index), ii_(indexer(index, index.shape())) {
    int64_t n = index.numel();
    if (n == 0) return;
    slot_ = cuda::empty({1}, DType::Int64, index.device());
    TERRA_CUDA_CHECK(cudaMemsetAsync(slot_.device_data(), 0xFF, 8, stream()));  // none bad yet
    auto* first = ptr<unsigned long long>(slot_);
    by_index(index.dtype(), [&](auto tag) {
      using I = decltype(tag);
      check_index_kernel<I>
          <<<grid_for(n), kThreads, 0, stream()>>>(ptr<I>(index), ii_, n, size, first);
    });
    check_launch(op);
  }

  // The out-of-range value at the lowest row-major position, as the CPU reports it.
  std::optional<int64_t> first_bad() const {
    if (!slot_.defined() || capturing()) return std::nullopt;
    uint64_t pos = read_back<uint64_t>(slot_.device_data());
    if (pos == ~uint64_t(0)) return std::nullopt;
    const char* p = static_cast<const char*>(index_.device_data()) +
                    ii_.offset(int64_t(pos)) * int64_t(index_.element_size());
    if (index_.dtype() == DType::Int32) return int64_t(read_back<int32_t>(p));
    return read_back<int64_t>(p);
  }

  // Throws the CPU kernels' message for a value outside [0, size) along dim.
  void raise(const char* op, int64_t dim, int64_t size) const {
    if (auto v = first_bad()) terra::detail::fail(op, op::index_range_msg(*v, dim, size));
  }

 private:
  Tensor index_, slot_;
  Indexer ii_;
};

// out = x gathered along d through index; m walks {x (stride 0 at d), index} over out's shape.
inline void launch_gather(const Tensor& out, const Tensor& x, const Tensor& index,
                          const MultiIndexer<2>& m, int64_t xsd, int64_t size, const char* op) {
  int64_t n = out.numel();
  sh::by_size(x.element_size(), op, [&](auto utag) {
    using U = decltype(utag);
    by_index(index.dtype(), [&](auto itag) {
      using I = decltype(itag);
      gather_elems<U, I><<<grid_for(n), kThreads, 0, stream()>>>(ptr<U>(out), ptr<U>(x),
                                                                 ptr<I>(index), m, xsd, size, n);
    });
  });
  check_launch(op);
}

// acc (dtype A) += src (dtype S) scattered through index; m walks {acc, index, src}.
template <class A, class S>
void launch_scatter_add(const Tensor& acc, const Tensor& src, const Tensor& index,
                        const MultiIndexer<3>& m, int64_t asd, int64_t size) {
  int64_t n = index.numel();
  by_index(index.dtype(), [&](auto itag) {
    using I = decltype(itag);
    scatter_add_elems<A, S, I><<<grid_for(n), kThreads, 0, stream()>>>(
        ptr<A>(acc), ptr<S>(src), ptr<I>(index), m, asd, size, n);
  });
  check_launch("scatter_add");
}

// p[0, n) = its inclusive prefix sum (CUB, on stream()).
inline void inclusive_sum(int64_t* p, int64_t n, Device dev) {
  size_t bytes = 0;
  TERRA_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, bytes, p, n, stream()));
  Tensor tmp = cuda::empty({int64_t(std::max<size_t>(bytes, 1))}, DType::Bool, dev);
  TERRA_CUDA_CHECK(cub::DeviceScan::InclusiveSum(tmp.device_data(), bytes, p, n, stream()));
}

}  // namespace ix

// ---- launchers ----
// ---- index_select: one index list applied along dim ----
inline void index_select_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor &x = c.inputs[0], &index = c.inputs[1], &out = outs[0];
  int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "index_select");
  int64_t size = op::size_or_one(x, d);
  ix::IndexCheck check(index, size, "index_select");
  if (out.numel() > 0) {
    Strides xs = ix::strides1(x), is(xs.size(), 0);
    int64_t xsd = xs[size_t(d)];
    xs[size_t(d)] = 0;
    is[size_t(d)] = index.dim() ? index.strides()[0] : 0;  // the index runs along d only
    ix::launch_gather(out, x, index, ix::multi<2>(ix::shape1(out), {xs, is}), xsd, size,
                      "index_select");
  }
  check.raise("index_select", d, size);
}
template <>
inline constexpr KernelFn cuda_kernel<op::IndexSelect> = &index_select_kernel;

// ---- gather: one index per output element ----
inline void gather_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor &x = c.inputs[0], &index = c.inputs[1], &out = outs[0];
  int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "gather");
  int64_t size = op::size_or_one(x, d);
  ix::IndexCheck check(index, size, "gather");
  if (out.numel() > 0) {
    Strides xs = ix::strides1(x);
    int64_t xsd = xs[size_t(d)];
    xs[size_t(d)] = 0;
    ix::launch_gather(out, x, index, ix::multi<2>(ix::shape1(out), {xs, ix::strides1(index)}), xsd,
                      size, "gather");
  }
  check.raise("gather", d, size);
}
template <>
inline constexpr KernelFn cuda_kernel<op::Gather> = &gather_kernel;

// ---- scatter_add: out = x, then out[.., idx, ..] += src ----
// Atomic adds, so the order of the additions into one element varies from run to run: float
// results may differ from the CPU's (index-ordered) sums in the last bits. float16/bfloat16
// accumulate in a float32 temporary rounded once at the end, as the CPU's upcast path does.
inline void scatter_add_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor &x = c.inputs[0], &index = c.inputs[1], &src = c.inputs[2], &out = outs[0];
  int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "scatter_add");
  int64_t size = op::size_or_one(x, d);
  ix::IndexCheck check(index, size, "scatter_add");
  const bool reduced = is_reduced_float(x.dtype());
  Tensor acc = reduced ? cuda::empty(x.shape(), DType::Float32, out.device()) : out;
  copy_into(x, acc);
  if (index.numel() > 0) {
    Strides as = ix::strides1(acc);  // acc is contiguous
    int64_t asd = as[size_t(d)];
    as[size_t(d)] = 0;
    auto m = ix::multi<3>(ix::shape1(index), {as, ix::strides1(index), ix::strides1(src)});
    if (src.dtype() == DType::Float16) {
      ix::launch_scatter_add<float, Half>(acc, src, index, m, asd, size);
    } else if (src.dtype() == DType::BFloat16) {
      ix::launch_scatter_add<float, BFloat16>(acc, src, index, m, asd, size);
    } else {
      TERRA_DISPATCH_COMPUTE(acc.dtype(), "scatter_add",
                             { ix::launch_scatter_add<T, T>(acc, src, index, m, asd, size); });
    }
  }
  if (reduced) copy_into(acc, out);
  check.raise("scatter_add", d, size);
}
template <>
inline constexpr KernelFn cuda_kernel<op::ScatterAdd> = &scatter_add_kernel;

// ---- masked_select: the selected elements in row-major order ----
// The result was sized on the host (attrs.ints[0], from the mask's values); the count is
// taken again on the device (a scan of the mask) and copied back to check it, as the CPU does.
inline void masked_select_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor &x = c.inputs[0], &mask = c.inputs[1], &out = outs[0];
  Shape s = broadcast_shapes(x.shape(), mask.shape(), "masked_select");
  int64_t n = numel_of(s), count = 0;
  Tensor incl;
  if (n > 0) {
    incl = cuda::empty({n}, DType::Int64, out.device());
    int64_t* ip = ptr<int64_t>(incl);
    ix::mask_flags_kernel<<<grid_for(n), kThreads, 0, stream()>>>(ip, ptr<uint8_t>(mask),
                                                                  indexer(mask, s), n);
    check_launch("masked_select");
    ix::inclusive_sum(ip, n, out.device());
    count = capturing() ? out.numel() : ix::read_back<int64_t>(ip + n - 1);
  }
  // The result was sized from the mask read earlier: never write past it.
  TERRA_CHECK(count == out.numel(), "masked_select", "mask has ", count,
              " true elements but the result was sized for ", out.numel());
  if (count == 0) return;
  auto m = ix::multi<2>(s, {ix::bcast(x, s), ix::bcast(mask, s)});
  sh::by_size(x.element_size(), "masked_select", [&](auto tag) {
    using U = decltype(tag);
    ix::masked_select_elems<U><<<grid_for(n), kThreads, 0, stream()>>>(
        ptr<U>(out), ptr<U>(x), ptr<uint8_t>(mask), m, ptr<int64_t>(incl), count, n);
  });
  check_launch("masked_select");
}
template <>
inline constexpr KernelFn cuda_kernel<op::MaskedSelect> = &masked_select_kernel;

// ---- one_hot: index: any shape -> [*, num_classes] int64 ----
inline void one_hot_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor &index = c.inputs[0], &out = outs[0];
  int64_t nc = c.attrs.ints[0], n = index.numel();
  ix::IndexCheck check(index, nc, "one_hot");
  if (out.numel() > 0) {
    TERRA_CUDA_CHECK(cudaMemsetAsync(out.device_data(), 0, out.nbytes(), stream()));
    Indexer ii = indexer(index, index.shape());
    ix::by_index(index.dtype(), [&](auto tag) {
      using I = decltype(tag);
      ix::one_hot_elems<I>
          <<<grid_for(n), kThreads, 0, stream()>>>(ptr<int64_t>(out), ptr<I>(index), ii, nc, n);
    });
    check_launch("one_hot");
  }
  if (auto v = check.first_bad())
    terra::detail::fail("one_hot", "class value ", *v, " is out of range for num_classes ", nc,
                        " (valid range [0, ", nc, "))");
}
template <>
inline constexpr KernelFn cuda_kernel<op::OneHot> = &one_hot_kernel;

}  // namespace terra::cuda
