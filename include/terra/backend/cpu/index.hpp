// terra/backend/cpu/index.hpp: CPU kernels of the indexing ops (index_select, gather,
// scatter_add, masked_select, one_hot). Inputs may be any strided view; index values are
// validated in one pass before any element is read or written.
#pragma once

#include <atomic>

#include "terra/backend/cpu/elementwise.hpp"
#include "terra/ops/index.hpp"

namespace terra::cpu {

namespace ix {

// t as a contiguous tensor of dtype dt (t itself when it already is one).
inline Tensor dense(const Tensor& t, DType dt) {
  if (t.dtype() == dt && t.is_contiguous()) return t;
  Tensor y = empty(t.shape(), dt);
  copy_into(t, y);
  return y;
}

// The position of the first value of p[0, n) outside [0, size), or n when all are inside.
inline int64_t first_out_of_range(const int64_t* p, int64_t n, int64_t size) {
  std::atomic<int64_t> first{n};
  parallel_for(n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (uint64_t(p[i]) < uint64_t(size)) continue;  // one compare also rejects negatives
      int64_t cur = first.load();
      while (i < cur && !first.compare_exchange_weak(cur, i)) {
      }
      return;
    }
  });
  return first.load();
}

// The index as contiguous int64, after checking every value lies in [0, size) (the size of
// dim `dim` of the indexed tensor).
inline Tensor checked_index(const Tensor& index, int64_t size, int64_t dim, const char* name) {
  Tensor ix = dense(index, DType::Int64);
  const int64_t* p = ix.data_ptr<int64_t>();
  int64_t bad = first_out_of_range(p, ix.numel(), size);
  if (bad < ix.numel()) detail::fail(name, op::index_range_msg(p[bad], dim, size));
  return ix;
}

inline char* bytes(const Tensor& t) { return static_cast<char*>(t.raw_data()); }

// out[i] = x[i, with coordinate d replaced by idx[i]], over out's shape. x is described with
// stride 0 at d (its real stride `xsd` is applied to the index), idx with its own strides.
// Shared by index_select (idx broadcast along the other dims) and gather.
template <class T>
void gather_loop(const Tensor& out, const Tensor& x, Strides xs, int64_t d, const Tensor& idx,
                 const Strides& is) {
  int64_t xsd = x.dim() == 0 ? 0 : x.strides()[d];
  xs[d] = 0;
  auto it =
      make_strided<3>(out.shape(), {out.strides(), xs, is}, {bytes(out), bytes(x), bytes(idx)},
                      {sizeof(T), sizeof(T), sizeof(int64_t)});
  for_each_run<3>(
      it, 2, [xsd](const std::array<char*, 3>& p, const std::array<int64_t, 3>& s, int64_t n) {
        T* o = reinterpret_cast<T*>(p[0]);
        const T* xp = reinterpret_cast<const T*>(p[1]);
        const int64_t* ip = reinterpret_cast<const int64_t*>(p[2]);
        int64_t os = s[0] / int64_t(sizeof(T)), xst = s[1] / int64_t(sizeof(T)), ist = s[2] / 8;
        if (ist == 0) {  // one index for the whole run: a strided (often contiguous) copy
          const T* src = xp + ip[0] * xsd;
          if (os == 1 && xst == 1)
            std::copy_n(src, n, o);
          else
            for (int64_t i = 0; i < n; ++i) o[i * os] = src[i * xst];
          return;
        }
        for (int64_t i = 0; i < n; ++i) o[i * os] = xp[i * xst + ip[i * ist] * xsd];
      });
}

// Strides of a tensor seen with at least one dim (a 0-d tensor reads as [1]).
inline Strides strides1(const Tensor& t) { return t.dim() == 0 ? Strides{1} : t.strides(); }
inline Shape shape1(const Tensor& t) { return t.dim() == 0 ? Shape{1} : t.shape(); }
inline Tensor as1d(const Tensor& t) {
  return t.dim() ? t : Tensor::from_storage(t.storage(), {1}, {1}, t.storage_offset(), t.dtype());
}

}  // namespace ix

// ---- index_select: one index list applied along dim ----
inline void index_select_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& x = c.inputs[0];
  int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "index_select");
  Tensor idx = ix::checked_index(c.inputs[1], op::size_or_one(x, d), d, "index_select");
  if (outs[0].numel() == 0) return;
  Tensor xv = ix::as1d(x), ov = ix::as1d(outs[0]);
  Strides is(ov.dim(), 0);
  is[d] = 1;
  TERRA_DISPATCH_COMPUTE(x.dtype(), "index_select",
                         { ix::gather_loop<T>(ov, xv, xv.strides(), d, idx, is); });
}
template <>
inline constexpr KernelFn cpu_kernel<op::IndexSelect> = &index_select_kernel;

// ---- gather: one index per output element ----
inline void gather_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor& x = c.inputs[0];
  int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "gather");
  Tensor idx = ix::checked_index(c.inputs[1], op::size_or_one(x, d), d, "gather");
  if (outs[0].numel() == 0) return;
  Tensor xv = ix::as1d(x), ov = ix::as1d(outs[0]);
  TERRA_DISPATCH_COMPUTE(x.dtype(), "gather", {
    ix::gather_loop<T>(ov, xv, xv.strides(), d, ix::as1d(idx), ov.strides());
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::Gather> = &gather_kernel;

// ---- scatter_add: out = x, then out[.., idx, ..] += src ----
// Work is split by lines along dim: two lines never touch the same output element, so the
// sums are race-free and each element adds its contributions in index order (deterministic).
inline void scatter_add_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor &x = c.inputs[0], &src = c.inputs[2];
  Tensor& out = outs[0];
  int64_t d = wrap_dim(c.attrs.ints[0], x.dim(), "scatter_add");
  Tensor idx = ix::as1d(ix::checked_index(c.inputs[1], op::size_or_one(x, d), d, "scatter_add"));
  copy_into(x, out);
  if (idx.numel() == 0) return;
  Tensor ov = ix::as1d(out), sv = ix::as1d(src);
  Shape lines = idx.shape();
  int64_t len = lines[d], isd = idx.strides()[d], ssd = sv.strides()[d], osd = ov.strides()[d];
  lines[d] = 1;
  Strides ss(sv.strides().begin(), sv.strides().begin() + idx.dim());
  Strides os(ov.strides().begin(), ov.strides().begin() + idx.dim());
  TERRA_DISPATCH_COMPUTE(x.dtype(), "scatter_add", {
    auto it = make_strided<3>(lines, {os, idx.strides(), ss},
                              {ix::bytes(ov), ix::bytes(idx), ix::bytes(sv)},
                              {sizeof(T), sizeof(int64_t), sizeof(T)});
    for_each_run<3>(it, len,
                    [&](const std::array<char*, 3>& p, const std::array<int64_t, 3>& s, int64_t n) {
                      for (int64_t l = 0; l < n; ++l) {
                        T* o = reinterpret_cast<T*>(p[0] + l * s[0]);
                        const int64_t* ip = reinterpret_cast<const int64_t*>(p[1] + l * s[1]);
                        const T* sp = reinterpret_cast<const T*>(p[2] + l * s[2]);
                        for (int64_t j = 0; j < len; ++j) {
                          T& dst = o[ip[j * isd] * osd];
                          if constexpr (std::is_same_v<T, bool>)
                            dst = dst || sp[j * ssd];
                          else
                            dst += sp[j * ssd];
                        }
                      }
                    });
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::ScatterAdd> = &scatter_add_kernel;

// ---- masked_select: the selected elements in row-major order ----
inline void masked_select_kernel(const OpCall& c, std::span<Tensor> outs) {
  const Tensor &x = c.inputs[0], &mask = c.inputs[1];
  Shape s = broadcast_shapes(x.shape(), mask.shape(), "masked_select");
  Tensor m = empty(s, DType::Bool);
  copy_into(mask, m);
  const bool* mp = m.data_ptr<bool>();
  int64_t n = m.numel(), count = 0;
  for (int64_t i = 0; i < n; ++i) count += mp[i];
  // The result was sized from the mask read earlier: never write past it.
  TERRA_CHECK(count == outs[0].numel(), "masked_select", "mask has ", count,
              " true elements but the result was sized for ", outs[0].numel());
  if (count == 0) return;
  Tensor xb = empty(s, x.dtype());
  copy_into(x, xb);
  TERRA_DISPATCH_COMPUTE(x.dtype(), "masked_select", {
    const T* xp = xb.data_ptr<T>();
    T* o = outs[0].data_ptr<T>();
    for (int64_t i = 0, k = 0; i < n; ++i)
      if (mp[i]) o[k++] = xp[i];
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::MaskedSelect> = &masked_select_kernel;

// ---- one_hot ----
inline void one_hot_kernel(const OpCall& c, std::span<Tensor> outs) {
  int64_t nc = c.attrs.ints[0];
  Tensor idx = ix::dense(c.inputs[0], DType::Int64);
  const int64_t* ip = idx.data_ptr<int64_t>();
  int64_t bad = ix::first_out_of_range(ip, idx.numel(), nc);
  TERRA_CHECK(bad == idx.numel(), "one_hot", "class value ", ip[bad],
              " is out of range for num_classes ", nc, " (valid range [0, ", nc, "))");
  int64_t* o = outs[0].data_ptr<int64_t>();
  std::fill_n(o, outs[0].numel(), int64_t(0));
  parallel_for(idx.numel(), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i * nc + ip[i]] = 1;
  });
}
template <>
inline constexpr KernelFn cpu_kernel<op::OneHot> = &one_hot_kernel;

}  // namespace terra::cpu
