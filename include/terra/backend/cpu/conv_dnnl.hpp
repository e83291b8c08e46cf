// terra/backend/cpu/conv_dnnl.hpp: float32 conv2d, forward and backward, through oneDNN (the
// CPU convolution library PyTorch uses), when terra is built with it (TERRA_HAS_DNNL; CMake
// option TERRA_USE_DNNL). backend/cpu/conv.hpp calls it first and falls back to im2col + gemm
// where it declines (other dtypes, depthwise convolutions, a build without oneDNN).
//
// oneDNN's direct kernels want its blocked layouts (channels in blocks of 16); on terra's plain
// NCHW/OIHW tensors it would pick its own im2col + gemm, no faster than terra's. So every call
// reorders: weights once per call, activations per chunk of images, and the results back.
// Even so it is 1.9-2.3x terra's gemm path on the small images of the paper programs
// (docs/benchmarks.md).
//
// terra calls oneDNN's C API: nvcc (which compiles terra's headers in CUDA units too) stops
// with an internal error on its C++ header in C++20.
//
// Threads and bits. terra's loops run on its own teams (core/team.hpp), not in OpenMP regions,
// and a graph runner must never start an OpenMP team (an absent member stalls the whole loop).
// So the batch is cut into chunks of a fixed number of images (chunk_images: a function of the
// shapes only), each chunk runs oneDNN on one thread (OpenMP's thread count is 1 around every
// oneDNN call), and the chunks are spread over the team. grad_weight is the sum of the chunks'
// shares added in chunk order. A single-threaded oneDNN call gives the same bits every time,
// so results do not depend on the number of threads, and co-executed runs match eager ones.
#pragma once

#if defined(TERRA_HAS_DNNL)

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_map>

#include "terra/backend/cpu/conv_shares.hpp"
#include "terra/core/allocator.hpp"
#include "terra/core/error.hpp"
#include "terra/core/parallel.hpp"

namespace terra::cpu::dnnl_conv {

// OpenMP's thread count is 1 on this thread while it lives (oneDNN reads it when it creates and
// runs a primitive), then what it was: get_num_threads() reads the same setting.
class OneThread {
 public:
  OneThread() : prev_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneThread() { omp_set_num_threads(prev_); }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int prev_;
};

inline void check(dnnl_status_t st, const char* what) {
  if (st != dnnl_success)
    detail::fail("conv2d", "oneDNN ", what, " failed with status ", int(st));
}

inline dnnl_engine_t cpu_engine() {
  static const std::unique_ptr<dnnl_engine, dnnl_status_t (*)(dnnl_engine_t)> e = [] {
    dnnl_engine_t h = nullptr;
    check(dnnl_engine_create(&h, dnnl_cpu, 0), "engine_create");
    return std::unique_ptr<dnnl_engine, dnnl_status_t (*)(dnnl_engine_t)>(h, dnnl_engine_destroy);
  }();
  return e.get();
}

using Md = dnnl_memory_desc_t;
using PrimPtr = std::unique_ptr<dnnl_primitive, dnnl_status_t (*)(dnnl_primitive_t)>;
using DescPtr = std::unique_ptr<dnnl_primitive_desc, dnnl_status_t (*)(dnnl_primitive_desc_t)>;

inline Md make_md(std::initializer_list<int64_t> dims, dnnl_format_tag_t tag) {
  Md d;
  dnnl_dims_t dd;
  int n = 0;
  for (int64_t v : dims) dd[n++] = v;
  check(dnnl_memory_desc_init_by_tag(&d, n, dd, dnnl_f32, tag), "memory_desc_init_by_tag");
  return d;
}
inline bool same(const Md& a, const Md& b) { return dnnl_memory_desc_equal(&a, &b) != 0; }
inline size_t bytes(const Md& d) { return dnnl_memory_desc_get_size(&d); }
inline Md query(const_dnnl_primitive_desc_t pd, dnnl_query_t what) {
  return *dnnl_primitive_desc_query_md(pd, what, 0);
}

// Primitive descriptors with a user-managed scratchpad: ours per chunk, as threads run at once.
inline DescPtr make_desc(const void* op_desc, const_dnnl_primitive_desc_t hint) {
  dnnl_primitive_attr_t attr = nullptr;
  check(dnnl_primitive_attr_create(&attr), "primitive_attr_create");
  std::unique_ptr<dnnl_primitive_attr, dnnl_status_t (*)(dnnl_primitive_attr_t)> a(attr, dnnl_primitive_attr_destroy);
  check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "set_scratchpad_mode");
  dnnl_primitive_desc_t pd = nullptr;
  dnnl_status_t st = op_desc ? dnnl_primitive_desc_create(&pd, op_desc, attr, cpu_engine(), hint)
                             : dnnl_invalid_arguments;
  if (st != dnnl_success) return DescPtr(nullptr, dnnl_primitive_desc_destroy);
  return DescPtr(pd, dnnl_primitive_desc_destroy);
}
inline PrimPtr make_prim(const_dnnl_primitive_desc_t pd) {
  dnnl_primitive_t p = nullptr;
  check(dnnl_primitive_create(&p, pd), "primitive_create");
  return PrimPtr(p, dnnl_primitive_destroy);
}

// The memory arguments of one execution (created for it, released after it). A plain array:
// nvcc's front end fails (an internal error) on a std::vector of the unnamed C struct.
class Args {
 public:
  Args() = default;
  Args(const Args&) = delete;
  Args& operator=(const Args&) = delete;
  ~Args() {
    for (int i = 0; i < n_; ++i) dnnl_memory_destroy(args_[i].memory);
  }
  Args& add(int arg, const Md& md, const void* p) {
    if (n_ == kMax) detail::fail("conv2d", "oneDNN: too many arguments");
    dnnl_memory_t m = nullptr;
    check(dnnl_memory_create(&m, &md, cpu_engine(), const_cast<void*>(p)), "memory_create");
    args_[n_].arg = arg;
    args_[n_++].memory = m;
    return *this;
  }
  // Runs p on this thread's stream, with its scratchpad at `scratch`, and waits.
  void run(dnnl_primitive_t p, const Md& scratch_md, void* scratch) {
    add(DNNL_ARG_SCRATCHPAD, scratch_md, scratch);
    check(dnnl_primitive_execute(p, stream(), n_, args_), "primitive_execute");
    check(dnnl_stream_wait(stream()), "stream_wait");
  }

 private:
  static dnnl_stream_t stream() {
    thread_local const std::unique_ptr<dnnl_stream, dnnl_status_t (*)(dnnl_stream_t)> s = [] {
      dnnl_stream_t h = nullptr;
      check(dnnl_stream_create(&h, cpu_engine(), dnnl_stream_default_flags), "stream_create");
      return std::unique_ptr<dnnl_stream, dnnl_status_t (*)(dnnl_stream_t)>(h, dnnl_stream_destroy);
    }();
    return s.get();
  }
  static constexpr int kMax = 8;
  dnnl_exec_arg_t args_[kMax];
  int n_ = 0;
};

// One convolution's shapes, with n = the images of one chunk.
struct Shape {
  int64_t n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, groups;
  bool bias;
  auto tie() const { return std::tie(n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, groups, bias); }
  bool operator==(const Shape& b) const { return tie() == b.tie(); }
  // Padding on the bottom/right: what the output size needs (oneDNN wants it explicit).
  int64_t pad_b() const { return (oh - 1) * sh + (kh - 1) * dh + 1 - h - ph; }
  int64_t pad_r() const { return (ow - 1) * sw + (kw - 1) * dw + 1 - w - pw; }

  Md src(dnnl_format_tag_t t = dnnl_nchw) const { return make_md({n, c, h, w}, t); }
  Md dst(dnnl_format_tag_t t = dnnl_nchw) const { return make_md({n, o, oh, ow}, t); }
  Md wei(bool any = false) const {
    if (groups == 1) return make_md({o, c, kh, kw}, any ? dnnl_format_tag_any : dnnl_oihw);
    return make_md({groups, o / groups, c / groups, kh, kw}, any ? dnnl_format_tag_any : dnnl_goihw);
  }
  Md bias_md() const { return make_md({o}, dnnl_x); }
};
struct ShapeHash {
  size_t operator()(const Shape& s) const {
    size_t h = 0;
    std::apply([&](auto... v) { ((h = (h ^ size_t(int64_t(v))) * 0x100000001b3ull), ...); }, s.tie());
    return h;
  }
};

// The geometry arguments of oneDNN's convolution descriptors.
struct Geometry {
  dnnl_dims_t strides, dilates, pad_l, pad_r;
  explicit Geometry(const Shape& s)
      : strides{s.sh, s.sw}, dilates{s.dh - 1, s.dw - 1}, pad_l{s.ph, s.pw}, pad_r{s.pad_b(), s.pad_r()} {}
};

// A layout change from one desc to another (nothing to do where they are the same layout).
struct Reorder {
  Md from{}, to{}, scratch{};
  PrimPtr prim{nullptr, dnnl_primitive_destroy};
  Reorder() = default;
  Reorder(const Md& f, const Md& t) : from(f), to(t) {
    if (same(f, t)) return;
    dnnl_primitive_attr_t attr = nullptr;
    check(dnnl_primitive_attr_create(&attr), "primitive_attr_create");
    std::unique_ptr<dnnl_primitive_attr, dnnl_status_t (*)(dnnl_primitive_attr_t)> a(attr, dnnl_primitive_attr_destroy);
    check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "set_scratchpad_mode");
    dnnl_primitive_desc_t pd = nullptr;
    check(dnnl_reorder_primitive_desc_create(&pd, &f, cpu_engine(), &t, cpu_engine(), attr),
          "reorder_primitive_desc_create");
    DescPtr d(pd, dnnl_primitive_desc_destroy);
    scratch = query(pd, dnnl_query_scratchpad_md);
    prim = make_prim(pd);
  }
  size_t scratch_bytes() const { return prim ? bytes(scratch) : 0; }
  // Bytes of the blocked side's buffer: the copy made from plain data (an input), or the
  // result to copy into plain data (an output).
  size_t in_bytes() const { return prim ? bytes(to) : 0; }
  size_t out_bytes() const { return prim ? bytes(from) : 0; }
  // The data at p in layout `to`: p itself, or its copy in buf.
  void* operator()(const void* p, void* buf, void* scratch_buf) const {
    if (!prim) return const_cast<void*>(p);
    Args().add(DNNL_ARG_FROM, from, p).add(DNNL_ARG_TO, to, buf).run(prim.get(), scratch, scratch_buf);
    return buf;
  }
};

// A convolution primitive with the layouts it chose and its scratchpad.
struct Conv {
  PrimPtr prim{nullptr, dnnl_primitive_destroy};
  Md src{}, wei{}, dst{}, scratch{};  // src/dst: diff_src/diff_dst for backward data, etc.
};

// Everything one chunk's forward needs, made once per shape.
struct Forward {
  Conv conv;
  Reorder wei_in, src_in, dst_out;
  size_t scratch = 0;
};
// And its backward (data and weights; the bias gradient is terra's own loop).
struct Backward {
  Conv data, wei;
  Reorder wei_in, dy_data, dy_wei, src_in, dx_out, dw_out;
  size_t scratch = 0;
};

inline DescPtr forward_desc(const Shape& s, bool bias) {
  Geometry g(s);
  Md src = s.src(dnnl_format_tag_any), wei = s.wei(true), dst = s.dst(dnnl_format_tag_any), b = s.bias_md();
  dnnl_convolution_desc_t cd;
  bool ok = dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct,
                                                       &src, &wei, bias ? &b : nullptr, &dst, g.strides,
                                                       g.dilates, g.pad_l, g.pad_r) == dnnl_success;
  return make_desc(ok ? &cd : nullptr, nullptr);
}

// Null where oneDNN has no implementation for these shapes (terra's gemm path takes them).
inline std::shared_ptr<const Forward> make_forward(const Shape& s) {
  DescPtr pd = forward_desc(s, s.bias);
  if (!pd) return nullptr;
  auto f = std::make_shared<Forward>();
  f->conv = {make_prim(pd.get()), query(pd.get(), dnnl_query_src_md), query(pd.get(), dnnl_query_weights_md),
             query(pd.get(), dnnl_query_dst_md), query(pd.get(), dnnl_query_scratchpad_md)};
  f->wei_in = Reorder(s.wei(), f->conv.wei);
  f->src_in = Reorder(s.src(), f->conv.src);
  f->dst_out = Reorder(f->conv.dst, s.dst());
  f->scratch = std::max({bytes(f->conv.scratch), f->wei_in.scratch_bytes(), f->src_in.scratch_bytes(),
                         f->dst_out.scratch_bytes()});
  return f;
}

inline std::shared_ptr<const Backward> make_backward(const Shape& s) {
  DescPtr hint = forward_desc(s, false);
  if (!hint) return nullptr;
  Geometry g(s);
  Md src = s.src(dnnl_format_tag_any), wei = s.wei(true), dst = s.dst(dnnl_format_tag_any);
  dnnl_convolution_desc_t dd, wd;
  bool ok = dnnl_dilated_convolution_backward_data_desc_init(&dd, dnnl_convolution_direct, &src, &wei, &dst,
                                                             g.strides, g.dilates, g.pad_l, g.pad_r) == dnnl_success;
  ok = ok && dnnl_dilated_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &src, &wei,
                                                                 nullptr, &dst, g.strides, g.dilates, g.pad_l,
                                                                 g.pad_r) == dnnl_success;
  DescPtr dpd = make_desc(ok ? &dd : nullptr, hint.get()), wpd = make_desc(ok ? &wd : nullptr, hint.get());
  if (!dpd || !wpd) return nullptr;
  auto b = std::make_shared<Backward>();
  b->data = {make_prim(dpd.get()), query(dpd.get(), dnnl_query_diff_src_md),
             query(dpd.get(), dnnl_query_weights_md), query(dpd.get(), dnnl_query_diff_dst_md),
             query(dpd.get(), dnnl_query_scratchpad_md)};
  b->wei = {make_prim(wpd.get()), query(wpd.get(), dnnl_query_src_md),
            query(wpd.get(), dnnl_query_diff_weights_md), query(wpd.get(), dnnl_query_diff_dst_md),
            query(wpd.get(), dnnl_query_scratchpad_md)};
  b->wei_in = Reorder(s.wei(), b->data.wei);
  b->dy_data = Reorder(s.dst(), b->data.dst);
  b->dy_wei = Reorder(s.dst(), b->wei.dst);
  b->src_in = Reorder(s.src(), b->wei.src);
  b->dx_out = Reorder(b->data.src, s.src());
  b->dw_out = Reorder(b->wei.wei, s.wei());
  b->scratch = std::max({bytes(b->data.scratch), bytes(b->wei.scratch), b->wei_in.scratch_bytes(),
                         b->dy_data.scratch_bytes(), b->dy_wei.scratch_bytes(), b->src_in.scratch_bytes(),
                         b->dx_out.scratch_bytes(), b->dw_out.scratch_bytes()});
  return b;
}

// Primitives by shape, made on first use (creating one JIT-compiles it: far dearer than a run)
// and shared by every thread; oneDNN primitives may run on several threads at once. A null
// entry: oneDNN declined these shapes, or failed to make them (the gemm path takes them).
template <class P>
std::shared_ptr<const P> cached(const Shape& s, std::shared_ptr<const P> (*make)(const Shape&)) {
  static std::mutex mu;
  static std::unordered_map<Shape, std::shared_ptr<const P>, ShapeHash> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto [it, fresh] = cache.try_emplace(s);
  if (fresh) {
    OneThread one;
    try {
      it->second = make(s);
    } catch (const Error&) {
      it->second = nullptr;
    }
  }
  return it->second;
}

// Images per chunk: a function of the shapes only (so the bits do not depend on the threads),
// about 1024 output pixels, and at most half the batch, so that any batch of two or more feeds
// two threads.
inline int64_t chunk_images(const Shape& s) {
  int64_t opix = std::max<int64_t>(1, s.oh * s.ow);
  return std::clamp<int64_t>((1024 + opix - 1) / opix, 1, std::max<int64_t>(1, (s.n + 1) / 2));
}

// Whether a conv with these shapes (the whole batch) may go through oneDNN.
inline bool usable(const Shape& s) {
  return cpu_use_dnnl() && s.n > 0 && s.pad_b() >= 0 && s.pad_r() >= 0 &&
         !(s.groups > 1 && s.c == s.groups);  // depthwise: terra's direct loop is cheaper
}

// The primitives of the full chunks and of the shorter last one (null where all are full);
// false where oneDNN declined either.
template <class P>
bool chunk_prims(const Shape& s, int64_t nb, std::shared_ptr<const P> (*make)(const Shape&),
                 std::shared_ptr<const P>& full, std::shared_ptr<const P>& tail) {
  Shape f = s, t = s;
  f.n = nb;
  t.n = s.n % nb;
  full = cached<P>(f, make);
  tail = t.n ? cached<P>(t, make) : nullptr;
  return full && (tail || !t.n);
}

// The weights in each primitive's layout, reordered once per call (the full and the last
// chunk's primitives may want different layouts).
class BlockedWeights {
 public:
  BlockedWeights(const float* w, const Reorder& full, const Reorder* tail) {
    OneThread one;
    ScratchBuffer<unsigned char> sc(std::max(full.scratch_bytes(), tail ? tail->scratch_bytes() : 0));
    full_.emplace(full.in_bytes());
    fp_ = full(w, full_->data(), sc.data());
    tp_ = fp_;
    if (tail && !same(tail->to, full.to)) {
      tail_.emplace(tail->in_bytes());
      tp_ = (*tail)(w, tail_->data(), sc.data());
    }
  }
  const void* get(bool last) const { return last ? tp_ : fp_; }

 private:
  std::optional<ScratchBuffer<unsigned char>> full_, tail_;
  const void *fp_ = nullptr, *tp_ = nullptr;
};

// out = conv(x, w) (+ bias) for a batch of s.n images; false, having written nothing, where
// oneDNN is not used.
inline bool forward(const Shape& s, const float* x, const float* w, const float* bias, float* out) {
  if (!usable(s)) return false;
  const int64_t nb = chunk_images(s), chunks = (s.n + nb - 1) / nb;
  const int64_t in_img = s.c * s.h * s.w, out_img = s.o * s.oh * s.ow;
  std::shared_ptr<const Forward> full, tail;
  if (!chunk_prims<Forward>(s, nb, make_forward, full, tail)) return false;
  BlockedWeights wb(w, full->wei_in, tail ? &tail->wei_in : nullptr);
  Md bias_md = s.bias_md();
  int64_t flops = 2 * nb * out_img * (s.c / s.groups) * s.kh * s.kw;
  parallel_for(chunks, flops, [&](int64_t b, int64_t e) {
    OneThread one;
    for (int64_t q = b; q < e; ++q) {
      bool last = q == chunks - 1 && tail;
      const Forward& F = last ? *tail : *full;
      ScratchBuffer<unsigned char> sbuf(F.src_in.in_bytes()), dbuf(F.dst_out.out_bytes()), sc(F.scratch);
      float* o = out + q * nb * out_img;
      void* dst = F.dst_out.prim ? static_cast<void*>(dbuf.data()) : o;
      Args a;
      a.add(DNNL_ARG_SRC, F.conv.src, F.src_in(x + q * nb * in_img, sbuf.data(), sc.data()))
          .add(DNNL_ARG_WEIGHTS, F.conv.wei, wb.get(last))
          .add(DNNL_ARG_DST, F.conv.dst, dst);
      if (s.bias) a.add(DNNL_ARG_BIAS, bias_md, bias);
      a.run(F.conv.prim.get(), F.conv.scratch, sc.data());
      if (F.dst_out.prim) F.dst_out(dst, o, sc.data());
    }
  });
  return true;
}

// dx and/or dw (either may be null: not wanted) of a conv over s.n images, from its output
// gradient dy; false, having written nothing, where oneDNN is not used. dw is the sum of the
// chunks' shares in chunk order.
inline bool backward(const Shape& s, const float* dy, const float* x, const float* w, float* dx,
                     float* dw) {
  if (!usable(s) || !(dx || dw)) return false;
  const int64_t nb = chunk_images(s), chunks = (s.n + nb - 1) / nb;
  const int64_t in_img = s.c * s.h * s.w, out_img = s.o * s.oh * s.ow;
  const size_t part = size_t(s.o * (s.c / s.groups) * s.kh * s.kw);  // one chunk's dw share
  std::shared_ptr<const Backward> full, tail;
  if (!chunk_prims<Backward>(s, nb, make_backward, full, tail)) return false;
  std::optional<BlockedWeights> wb;
  if (dx) wb.emplace(w, full->wei_in, tail ? &tail->wei_in : nullptr);
  // Shares of at most 64 MB at a time: passes of chunks, each summed onto dw in order.
  const int64_t per_pass =
      dw ? std::max<int64_t>(1, int64_t((size_t(64) << 20) / (part * sizeof(float)))) : chunks;
  ScratchBuffer<float> shares(dw ? size_t(std::min(chunks, per_pass)) * part : 0);
  int64_t flops = 4 * nb * out_img * (s.c / s.groups) * s.kh * s.kw;
  for (int64_t p0 = 0; p0 < chunks; p0 += per_pass) {
    const int64_t p1 = std::min(chunks, p0 + per_pass);
    parallel_for(p1 - p0, flops, [&](int64_t b, int64_t e) {
      OneThread one;
      for (int64_t q = p0 + b; q < p0 + e; ++q) {
        bool last = q == chunks - 1 && tail;
        const Backward& B = last ? *tail : *full;
        const float* g = dy + q * nb * out_img;
        ScratchBuffer<unsigned char> gd(dx ? B.dy_data.in_bytes() : 0), gw(dw ? B.dy_wei.in_bytes() : 0),
            xb(dw ? B.src_in.in_bytes() : 0), dxb(dx ? B.dx_out.out_bytes() : 0),
            dwb(dw ? B.dw_out.out_bytes() : 0), sc(B.scratch);
        if (dx) {
          float* o = dx + q * nb * in_img;
          void* dxp = B.dx_out.prim ? static_cast<void*>(dxb.data()) : o;
          Args()
              .add(DNNL_ARG_DIFF_DST, B.data.dst, B.dy_data(g, gd.data(), sc.data()))
              .add(DNNL_ARG_WEIGHTS, B.data.wei, wb->get(last))
              .add(DNNL_ARG_DIFF_SRC, B.data.src, dxp)
              .run(B.data.prim.get(), B.data.scratch, sc.data());
          if (B.dx_out.prim) B.dx_out(dxp, o, sc.data());
        }
        if (dw) {
          float* share = shares.data() + size_t(q - p0) * part;
          void* dwp = B.dw_out.prim ? static_cast<void*>(dwb.data()) : share;
          Args()
              .add(DNNL_ARG_SRC, B.wei.src, B.src_in(x + q * nb * in_img, xb.data(), sc.data()))
              .add(DNNL_ARG_DIFF_DST, B.wei.dst, B.dy_wei(g, gw.data(), sc.data()))
              .add(DNNL_ARG_DIFF_WEIGHTS, B.wei.wei, dwp)
              .run(B.wei.prim.get(), B.wei.scratch, sc.data());
          if (B.dw_out.prim) B.dw_out(dwp, share, sc.data());
        }
      }
    });
    if (dw) add_shares(dw, shares.data(), p1 - p0, part, p0 > 0);
  }
  return true;
}

}  // namespace terra::cpu::dnnl_conv

#endif  // TERRA_HAS_DNNL
