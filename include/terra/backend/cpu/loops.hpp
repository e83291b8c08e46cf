// terra/backend/cpu/loops.hpp: the strided elementwise loop every CPU elementwise kernel uses.
// Operands (output first) are described by byte strides over one common shape; dims that are
// contiguous across all operands are merged, so the common cases run as one flat loop that
// the compiler vectorizes.
#pragma once

#include <array>
#include <cstdint>
#include <tuple>
#include <utility>

#include "terra/core/parallel.hpp"
#include "terra/tensor.hpp"

namespace terra::cpu {

template <size_t N>
struct Strided {
  Shape sizes;                       // merged sizes, outermost first
  std::array<Strides, N> strides;    // byte strides per operand, same rank as sizes
  std::array<char*, N> base;         // first element of each operand
};

// Describe operands over `shape`. Each operand's own strides must already be broadcast to
// `shape` (stride 0 on broadcast dims), in elements; `elem` gives each operand's item size.
template <size_t N>
Strided<N> make_strided(const Shape& shape, const std::array<Strides, N>& strides,
                        const std::array<char*, N>& base, const std::array<size_t, N>& elem) {
  Strided<N> it;
  it.base = base;
  // Innermost first while merging, then reverse.
  for (size_t d = shape.size(); d-- > 0;) {
    if (shape[d] == 1) continue;
    bool merge = !it.sizes.empty();
    for (size_t k = 0; merge && k < N; ++k)
      merge = it.strides[k].back() * int64_t(it.sizes.back()) == strides[k][d] * int64_t(elem[k]);
    if (merge) {
      it.sizes.back() *= shape[d];
      continue;
    }
    it.sizes.push_back(shape[d]);
    for (size_t k = 0; k < N; ++k) it.strides[k].push_back(strides[k][d] * int64_t(elem[k]));
  }
  if (it.sizes.empty()) {  // a single element
    it.sizes.push_back(1);
    for (size_t k = 0; k < N; ++k) it.strides[k].push_back(0);
  }
  std::reverse(it.sizes.begin(), it.sizes.end());
  for (auto& s : it.strides) std::reverse(s.begin(), s.end());
  return it;
}

// Call inner(ptrs, inner_strides, n) for every run of the innermost dim, in parallel chunks.
// `cost` is the approximate work per element (1 for a cheap op).
template <size_t N, class Inner>
void for_each_run(const Strided<N>& it, int64_t cost, const Inner& inner) {
  size_t nd = it.sizes.size();
  int64_t n = it.sizes[nd - 1];
  std::array<int64_t, N> is;
  for (size_t k = 0; k < N; ++k) is[k] = it.strides[k][nd - 1];
  int64_t outer = 1;
  for (size_t d = 0; d + 1 < nd; ++d) outer *= it.sizes[d];
  if (outer * n == 0) return;
  if (outer == 1) {  // one long run: split it
    parallel_for(n, cost, [&](int64_t b, int64_t e) {
      std::array<char*, N> p;
      for (size_t k = 0; k < N; ++k) p[k] = it.base[k] + b * is[k];
      inner(p, is, e - b);
    });
    return;
  }
  parallel_for(outer, cost * n, [&](int64_t b, int64_t e) {
    SmallVector<int64_t, 6> idx(nd - 1, 0);
    int64_t rem = b;
    for (size_t d = nd - 1; d-- > 0;) {
      idx[d] = rem % it.sizes[d];
      rem /= it.sizes[d];
    }
    std::array<char*, N> p;
    for (size_t k = 0; k < N; ++k) {
      p[k] = it.base[k];
      for (size_t d = 0; d + 1 < nd; ++d) p[k] += idx[d] * it.strides[k][d];
    }
    for (int64_t r = b; r < e; ++r) {
      inner(p, is, n);
      for (size_t d = nd - 1; d-- > 0;) {  // odometer step
        for (size_t k = 0; k < N; ++k) p[k] += it.strides[k][d];
        if (++idx[d] < it.sizes[d]) break;
        for (size_t k = 0; k < N; ++k) p[k] -= it.strides[k][d] * it.sizes[d];
        idx[d] = 0;
      }
    }
  });
}

// Functors whose contiguous loop also has an AVX2 clone (`static constexpr bool
// avx2_clone = true;`): those built on polynomial math (math::verf, math::vexp), which
// vectorize 8 wide instead of 4. Their call operators are always inlined (TERRA_MATH_VEC):
// GCC otherwise calls the large ones out of line, one scalar call per element. The clone is
// compiled without FMA, so it computes the same operations in the same order and gives the
// same bits as the baseline loop (tested).
template <class F>
concept Avx2Clone = requires { requires F::avx2_clone; };
// Functors with a run-time choice of formula (gelu's form) hand the loop the functor of the
// chosen formula through with_form (see ops/elementwise.hpp).
template <class F>
concept HasForms = requires(const F& f) { f.with_form([](const auto&) {}); };

#if defined(TERRA_CPU_AVX2)
template <class O, class... I, class F, size_t... K>
__attribute__((target("avx2"))) void map_contiguous_avx2(const F& f, O* o,
                                                         const std::tuple<const I*...>& in,
                                                         int64_t n, std::index_sequence<K...>) {
  for (int64_t i = 0; i < n; ++i) o[i] = static_cast<O>(f(std::get<K>(in)[i]...));
}
#endif

template <class O, class... I, class F, size_t... K>
inline void map_contiguous(const F& f, O* o, const std::tuple<const I*...>& in, int64_t n,
                           std::index_sequence<K...> seq) {
#if defined(TERRA_CPU_AVX2)
  if constexpr (Avx2Clone<F>)
    if (cpu_use_avx2()) {
      map_contiguous_avx2<O, I...>(f, o, in, n, seq);
      return;
    }
#endif
  for (int64_t i = 0; i < n; ++i) o[i] = static_cast<O>(f(std::get<K>(in)[i]...));
}

// The run loop of an N-input map: out[i] = f(in_k[i]...). Contiguous and one-scalar cases
// are separate loops so that they vectorize.
template <class O, class... I, class F, size_t... K>
inline void map_run(const F& f, std::array<char*, sizeof...(I) + 1> p,
                    const std::array<int64_t, sizeof...(I) + 1>& s, int64_t n,
                    std::index_sequence<K...>) {
  O* o = reinterpret_cast<O*>(p[0]);
  std::tuple<const I*...> in{reinterpret_cast<const I*>(p[K + 1])...};
  bool contig = s[0] == int64_t(sizeof(O)) && ((s[K + 1] == int64_t(sizeof(I))) && ...);
  if (contig) {
    if constexpr (HasForms<F>)
      f.with_form([&](const auto& form) { map_contiguous<O, I...>(form, o, in, n, std::index_sequence<K...>{}); });
    else
      map_contiguous<O, I...>(f, o, in, n, std::index_sequence<K...>{});
    return;
  }
  if constexpr (sizeof...(I) == 2) {
    using A = std::tuple_element_t<0, std::tuple<I...>>;
    using B = std::tuple_element_t<1, std::tuple<I...>>;
    const A* a = std::get<0>(in);
    const B* b = std::get<1>(in);
    if (s[0] == int64_t(sizeof(O)) && s[1] == int64_t(sizeof(A)) && s[2] == 0) {
      const B bv = b[0];
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<O>(f(a[i], bv));
      return;
    }
    if (s[0] == int64_t(sizeof(O)) && s[1] == 0 && s[2] == int64_t(sizeof(B))) {
      const A av = a[0];
      for (int64_t i = 0; i < n; ++i) o[i] = static_cast<O>(f(av, b[i]));
      return;
    }
  }
  int64_t os = s[0] / int64_t(sizeof(O));
  std::array<int64_t, sizeof...(I)> is{(s[K + 1] / int64_t(sizeof(I)))...};
  for (int64_t i = 0; i < n; ++i) o[i * os] = static_cast<O>(f(std::get<K>(in)[i * is[K]]...));
}

// Elementwise map over tensors that already have the wanted dtypes: out = f(ins...), with
// inputs broadcast to out's shape. Works for any strides, including in-place (out == input).
template <class O, class... I, class F>
void map(const F& f, const Tensor& out, const std::array<Tensor, sizeof...(I)>& ins, int64_t cost = 1) {
  constexpr size_t N = sizeof...(I) + 1;
  std::array<Strides, N> st;
  std::array<char*, N> base;
  std::array<size_t, N> elem{sizeof(O), sizeof(I)...};
  st[0] = out.strides();
  base[0] = static_cast<char*>(out.raw_data());
  for (size_t k = 0; k < sizeof...(I); ++k) {
    st[k + 1] = broadcast_strides(ins[k].shape(), ins[k].strides(), out.shape());
    base[k + 1] = static_cast<char*>(ins[k].raw_data());
  }
  auto it = make_strided<N>(out.shape(), st, base, elem);
  for_each_run<N>(it, cost, [&](const std::array<char*, N>& p, const std::array<int64_t, N>& s, int64_t n) {
    map_run<O, I...>(f, p, s, n, std::index_sequence_for<I...>{});
  });
}

}  // namespace terra::cpu
