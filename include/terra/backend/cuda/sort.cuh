// terra/backend/cuda/sort.cuh: CUDA kernels of cumsum, sort and topk.
// Each works along one dim: x is seen as rows (every index of the other dims, row-major, via an
// Indexer) of n elements `sd` apart; outputs are contiguous [outer, n or k, inner].
// Sort and topk turn each value into an unsigned key whose order is the CPU's PairOrder (NaN
// largest, -0 == +0, descending = complemented keys) and run CUB's stable segmented sort of
// (key, index) pairs, one segment per row: stability makes ties keep the lower index first,
// exactly as the CPU orders them. Values are then read back from x at the sorted indices, so
// they are bit-identical to the input's.
#pragma once

#include <cub/device/device_segmented_sort.cuh>

#include "terra/backend/cuda/reduce.cuh"
#include "terra/ops/sort.hpp"

namespace terra::cuda {

namespace srt {

using red::calc_t;

// Rows of x along dim: every index of the other dims, each a run of n elements sd apart.
struct Rows {
  Indexer base;  // row r -> offset of its first element
  int64_t count = 1, n = 1, sd = 0, inner = 1;
};

inline Rows rows_of(const Tensor& x, int64_t dim, const char* name) {
  Rows r;
  if (x.dim() == 0) return r;
  const int64_t d = wrap_dim(dim, x.dim(), name);
  for (int64_t k = 0; k < x.dim(); ++k) {
    const int64_t s = x.shape()[k];
    if (k == d) {
      r.n = s, r.sd = x.strides()[k];
      continue;
    }
    r.count *= s;
    if (k > d) r.inner *= s;
    red::push_dim(r.base, s, x.strides()[k], name);
  }
  return r;
}

// An unsigned key per value, ordered as the CPU's sort orders values: NaN above +inf, -0 and +0
// equal. Integers flip their sign bit; floats flip all bits when negative, else the sign bit.
template <class C>
struct Key {
  using type = std::conditional_t<sizeof(C) == 8, uint64_t,
                                  std::conditional_t<sizeof(C) == 4, uint32_t, uint8_t>>;
};
template <class C>
using key_t = typename Key<C>::type;

template <class C>
__device__ key_t<C> ordered_key(C v) {
  using K = key_t<C>;
  constexpr K top = K(1) << (8 * sizeof(K) - 1);
  if constexpr (std::is_same_v<C, bool>) {
    return K(v ? 1 : 0);
  } else if constexpr (std::is_integral_v<C>) {
    return K(v) ^ top;
  } else {
    if (v != v) return ~K(0);
    if (v == C(0)) v = C(0);  // -0 sorts with +0
    K b;
    memcpy(&b, &v, sizeof(K));
    return (b & top) ? K(~b) : K(b | top);
  }
}

// ---- kernels ----
#define TERRA_SORT_LOOP(q, total)                                               \
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < (total); \
       q += int64_t(gridDim.x) * blockDim.x)

// One thread per row, in row order: the same running double/int64 sums as the CPU, so the
// results are the CPU's bit for bit. (Slow for few long rows; correct for every layout.)
template <class T, class O>
__global__ void cumsum_kernel(const T* x, O* y, Rows r) {
  TERRA_SORT_LOOP(q, r.count) {
    const T* xr = x + r.base.offset(q);
    O* yr = y + (q / r.inner) * r.n * r.inner + q % r.inner;
    red::acc_t<T> acc = 0;
    for (int64_t j = 0; j < r.n; ++j) {
      acc += red::acc_t<T>(red::load(xr + j * r.sd));
      yr[j * r.inner] = red::store<O>(acc);
    }
  }
}

template <class T>
__global__ void keys_kernel(const T* x, Rows r, bool descending, key_t<calc_t<T>>* keys,
                            int64_t* idx) {
  TERRA_SORT_LOOP(q, r.count * r.n) {
    const int64_t row = q / r.n, j = q - row * r.n;
    auto k = ordered_key(red::load(x + r.base.offset(row) + j * r.sd));
    keys[q] = descending ? decltype(k)(~k) : k;
    idx[q] = j;
  }
}

__global__ void offsets_kernel(int64_t* off, int64_t count, int64_t len) {
  TERRA_SORT_LOOP(q, count + 1) off[q] = q * len;
}

// The first k indices of each row of `order` (rows `stride` apart).
__global__ void head_kernel(const int64_t* order, int64_t stride, int64_t count, int64_t k,
                            int64_t* head) {
  TERRA_SORT_LOOP(q, count * k) {
    const int64_t row = q / k;
    head[q] = order[row * stride + (q - row * k)];
  }
}

// values/indices [outer, k, inner] from the first k entries of each row of `order`.
template <class T>
__global__ void gather_kernel(const T* x, Rows r, const int64_t* order, int64_t stride, int64_t k,
                              T* values, int64_t* indices) {
  TERRA_SORT_LOOP(q, r.count * k) {
    const int64_t row = q / k, t = q - row * k;
    const int64_t j = order[row * stride + t];
    const int64_t out = ((row / r.inner) * k + t) * r.inner + row % r.inner;
    values[out] = x[r.base.offset(row) + j * r.sd];
    indices[out] = j;
  }
}
#undef TERRA_SORT_LOOP

// ---- launchers ----
inline void check_cub(cudaError_t e, const char* name) {
  if (e != cudaSuccess)
    terra::detail::fail(name, "CUB segmented sort failed: ", cudaGetErrorName(e), " (",
                        cudaGetErrorString(e), ")");
}

inline Tensor offsets(int64_t count, int64_t len, Device dev, const char* name) {
  Tensor off = cuda::empty({count + 1}, DType::Int64, dev);
  offsets_kernel<<<grid_for(count + 1), kThreads, 0, stream()>>>(ptr<int64_t>(off), count, len);
  check_launch(name);
  return off;
}

// Stable sort of (keys, values) within `count` segments of `len`; returns the sorted values.
// CUB's temporary storage comes from terra's allocator.
template <class K, class V>
Tensor segmented_sort(const K* keys, const Tensor& vals, int64_t count, int64_t len,
                      const char* name) {
  const Device dev = vals.device();
  const int64_t total = count * len;
  Tensor keys_out = cuda::empty({total * int64_t(sizeof(K))}, DType::Bool, dev);
  Tensor vals_out = cuda::empty({total}, vals.dtype(), dev);
  Tensor off = offsets(count, len, dev, name);
  const int64_t* o = ptr<int64_t>(off);
  auto* ko = static_cast<K*>(keys_out.device_data());
  size_t bytes = 0;
  check_cub(
      cub::DeviceSegmentedSort::StableSortPairs(nullptr, bytes, keys, ko, ptr<V>(vals),
                                                ptr<V>(vals_out), total, count, o, o + 1, stream()),
      name);
  Tensor tmp = cuda::empty({int64_t(std::max<size_t>(bytes, 1))}, DType::Bool, dev);
  check_cub(
      cub::DeviceSegmentedSort::StableSortPairs(tmp.device_data(), bytes, keys, ko, ptr<V>(vals),
                                                ptr<V>(vals_out), total, count, o, o + 1, stream()),
      name);
  return vals_out;
}

// Indices of each row in the CPU's sort order: [count, n] int64.
template <class T>
Tensor sorted_order(const Tensor& x, const Rows& r, bool descending, const char* name) {
  using K = key_t<calc_t<T>>;
  const Device dev = x.device();
  const int64_t total = r.count * r.n;
  Tensor keys = cuda::empty({total * int64_t(sizeof(K))}, DType::Bool, dev);
  Tensor idx = cuda::empty({total}, DType::Int64, dev);
  auto* kp = static_cast<K*>(keys.device_data());
  keys_kernel<<<grid_for(total), kThreads, 0, stream()>>>(ptr<T>(x), r, descending, kp,
                                                          ptr<int64_t>(idx));
  check_launch(name);
  return segmented_sort<K, int64_t>(kp, idx, r.count, r.n, name);
}

// The first k of each sorted row, in index order: sort those indices themselves.
inline Tensor index_order(const Tensor& order, int64_t count, int64_t n, int64_t k,
                          const char* name) {
  Tensor head = cuda::empty({count * k}, DType::Int64, order.device());
  head_kernel<<<grid_for(count * k), kThreads, 0, stream()>>>(ptr<int64_t>(order), n, count, k,
                                                              ptr<int64_t>(head));
  check_launch(name);
  auto* keys = static_cast<const uint64_t*>(head.device_data());  // indices are >= 0
  return segmented_sort<uint64_t, int64_t>(keys, head, count, k, name);
}

inline void cumsum_kernel_fn(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& x = c.inputs[0];
  Rows r = rows_of(x, c.attrs.ints[0], "cumsum");
  if (outs[0].numel() == 0) return;
  TERRA_DISPATCH_ALL(x.dtype(), "cumsum", {
    using O = red::sum_out_t<T>;
    cumsum_kernel<<<grid_for(r.count), kThreads, 0, stream()>>>(ptr<T>(x), ptr<O>(outs[0]), r);
    check_launch("cumsum");
  });
}

// sort: k = n, sorted; topk: the first k, in sort order or (unsorted) in index order.
inline void sort_rows(const Tensor& x, const Rows& r, int64_t k, bool descending, bool sorted,
                      std::span<Tensor> outs, const char* name) {
  if (outs[0].numel() == 0) return;
  TERRA_DISPATCH_ALL(x.dtype(), name, {
    Tensor order = sorted_order<T>(x, r, descending, name);
    int64_t stride = r.n;
    if (!sorted) {
      order = index_order(order, r.count, r.n, k, name);
      stride = k;
    }
    gather_kernel<<<grid_for(r.count * k), kThreads, 0, stream()>>>(
        ptr<T>(x), r, ptr<int64_t>(order), stride, k, ptr<T>(outs[0]), ptr<int64_t>(outs[1]));
    check_launch(name);
  });
}

inline void sort_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& x = c.inputs[0];
  Rows r = rows_of(x, c.attrs.ints[0], "sort");
  sort_rows(x, r, r.n, c.attrs.ints[1] != 0, true, outs, "sort");
}

inline void topk_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& x = c.inputs[0];
  Rows r = rows_of(x, c.attrs.ints[1], "topk");
  sort_rows(x, r, c.attrs.ints[0], c.attrs.ints[2] != 0, c.attrs.ints[3] != 0, outs, "topk");
}

}  // namespace srt

template <>
inline constexpr KernelFn cuda_kernel<op::Cumsum> = &srt::cumsum_kernel_fn;
template <>
inline constexpr KernelFn cuda_kernel<op::Sort> = &srt::sort_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::Topk> = &srt::topk_kernel;

}  // namespace terra::cuda
