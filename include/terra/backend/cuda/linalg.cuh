// terra/backend/cuda/linalg.cuh: matmul and linear on CUDA through cuBLAS
// (cublasGemmStridedBatchedEx), plus what the conv family shares with it: per-thread library
// handles, the strided copy-and-cast kernel, and block reductions. nvcc only.
//
// float32 computes in float32 (TF32 tensor cores only after cuda::set_allow_tf32(true)),
// float64 in float64, float16/bfloat16 with float32 accumulation (reduced-precision split-K
// reductions disallowed). Integer products (which the CPU accepts) use a plain kernel.
#pragma once

#include <cublas_v2.h>

#include <climits>
#include <mutex>
#include <type_traits>
#include <vector>

#include "terra/backend/cuda/common.cuh"
#include "terra/backend/cuda/elementwise.cuh"  // copy_into: the one strided cast
#include "terra/backend/cuda/math_mode.hpp"
#include "terra/ops/linalg.hpp"

namespace terra::cuda::la {

// ---- library handles ----
// One handle per (thread, device), made on first use; a thread that ends hands its handles to a
// pool for the next thread. They are never destroyed: at exit the driver may already be gone.
template <class H>
struct HandlePool {
  std::mutex mu;
  std::vector<H> free[terra::cuda::detail::kMaxDevices];
};
template <class H>
HandlePool<H>& handle_pool() {
  static auto* p = new HandlePool<H>;
  return *p;
}
template <class H>
struct ThreadHandles {
  H h[terra::cuda::detail::kMaxDevices] = {};
  ~ThreadHandles() {
    auto& p = handle_pool<H>();
    std::lock_guard<std::mutex> lock(p.mu);
    for (int d = 0; d < terra::cuda::detail::kMaxDevices; ++d)
      if (h[d]) p.free[d].push_back(h[d]);
  }
};
// The calling thread's handle for the current device; create() makes a new one.
template <class H, class Create>
H thread_handle(Create create) {
  thread_local ThreadHandles<H> mine;
  int dev = current_device();
  H& h = mine.h[dev];
  if (h) return h;
  auto& p = handle_pool<H>();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    if (!p.free[dev].empty()) {
      h = p.free[dev].back();
      p.free[dev].pop_back();
    }
  }
  if (!h) h = create();
  return h;
}

inline void check_blas(cublasStatus_t s, const char* op, const char* what) {
  if (TERRA_UNLIKELY(s != CUBLAS_STATUS_SUCCESS))
    terra::detail::fail(op, "cuBLAS ", what, " failed: ", cublasGetStatusName(s), " (",
                        cublasGetStatusString(s), ")");
}

inline cublasHandle_t blas_handle(const char* op) {
  return thread_handle<cublasHandle_t>([op] {
    cublasHandle_t h = nullptr;
    check_blas(cublasCreate(&h), op, "cublasCreate");
    // float16/bfloat16 keep float32 accumulation also in split-K reductions.
    auto mode = cublasMath_t(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    check_blas(cublasSetMathMode(h, mode), op, "cublasSetMathMode");
    return h;
  });
}

// ---- element types on the device ----
template <class T>
inline constexpr bool kHalfLike = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;
// What a kernel computes/accumulates T in: double for float64, float for the other floats.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class D, class S>
__device__ __forceinline__ D cvt(S v) {
  if constexpr (std::is_same_v<D, S>)
    return v;
  else if constexpr (kHalfLike<S> || kHalfLike<D>)
    return D(float(v));  // 16-bit floats convert only through float
  else
    return static_cast<D>(v);
}

// Runs body.template operator()<T>() with T the device type of dt.
template <class F>
void dispatch_all(DType dt, const char* op, F&& body) {
  switch (dt) {
    case DType::Bool: return body.template operator()<bool>();
    case DType::Int32: return body.template operator()<int32_t>();
    case DType::Int64: return body.template operator()<int64_t>();
    case DType::Float16: return body.template operator()<Half>();
    case DType::BFloat16: return body.template operator()<BFloat16>();
    case DType::Float32: return body.template operator()<float>();
    case DType::Float64: return body.template operator()<double>();
  }
  terra::detail::fail(op, "unsupported dtype ", dtype_name(dt));
}
template <class F>
void dispatch_float(DType dt, const char* op, F&& body) {
  switch (dt) {
    case DType::Float16: return body.template operator()<Half>();
    case DType::BFloat16: return body.template operator()<BFloat16>();
    case DType::Float32: return body.template operator()<float>();
    case DType::Float64: return body.template operator()<double>();
    default: terra::detail::fail(op, "expected a floating dtype, got ", dtype_name(dt));
  }
}

#define TERRA_LA_LOOP(i, n)                                                             \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);            \
       i += int64_t(gridDim.x) * blockDim.x)

// ---- kernels ----
// c[row, j] = b[j] for `rows` rows of length n: the bias a linear product accumulates onto.
template <class T>
__global__ void fill_rows_kernel(const T* b, T* c, int64_t rows, int64_t n) {
  TERRA_LA_LOOP(i, rows * n) c[i] = b[i % n];
}

struct NaiveGemm {
  int64_t m, n, k, ars, acs, brs, bcs, sa, sb, sc, count;
  bool accumulate;
};
// Integer products: one thread per output element, summed in T in order (as the CPU does).
template <class T>
__global__ void gemm_naive_kernel(const T* a, const T* b, T* c, NaiveGemm g) {
  TERRA_LA_LOOP(idx, g.count * g.m * g.n) {
    int64_t j = idx % g.n, t = idx / g.n, i = t % g.m, bt = t / g.m;
    const T* ap = a + bt * g.sa + i * g.ars;
    const T* bp = b + bt * g.sb + j * g.bcs;
    T* cp = c + bt * g.sc + i * g.n + j;
    T acc = g.accumulate ? *cp : T(0);
    for (int64_t p = 0; p < g.k; ++p) acc += ap[p * g.acs] * bp[p * g.brs];
    *cp = acc;
  }
}

// Sum over a block (blockDim.x a power of two <= 1024) of one value per thread; every thread
// gets the total. `buf` is shared memory of blockDim.x elements.
template <class A>
__device__ A block_sum(A v, A* buf) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  A total = buf[0];
  __syncthreads();  // buf may be reused right after
  return total;
}

// ---- launchers ----
// A contiguous copy of x in dtype dt on x's device (x itself when it already is one).
inline Tensor dense(const Tensor& x, DType dt, const char* op) {
  if (x.dtype() == dt && x.is_contiguous()) return x;
  Tensor y = cuda::empty(x.shape(), dt, x.device());
  copy_into(x, y);
  return y;
}

inline void zero(Tensor& t) {
  if (t.numel() > 0)
    TERRA_CUDA_CHECK(cudaMemsetAsync(t.device_data(), 0, size_t(t.numel()) * t.element_size(),
                                     stream()));
}

// Scratch memory from terra's caching allocator; it lives as long as the returned tensor, and
// freeing it right after the work is queued is safe (blocks are reused on the same stream only).
inline Tensor workspace(size_t bytes, Device d) {
  return cuda::empty({int64_t(std::max<size_t>(bytes, 1))}, DType::Bool, d);
}

// How cuBLAS can read a strided r x c (row-major view) matrix in place: element (i, j) at
// i * ld + j (trans = false) or i + j * ld (trans = true). Strides of dims of size <= 1 are
// never used, so they may be anything.
struct Layout {
  bool ok = false, trans = false;
  int64_t ld = 0;
};
inline Layout layout(int64_t r, int64_t c, int64_t rs, int64_t cs) {
  int64_t r1 = std::max<int64_t>(r, 1), c1 = std::max<int64_t>(c, 1);
  int64_t ers = r <= 1 ? c1 : rs, ecs = c <= 1 ? 1 : cs;
  if (ecs == 1 && ers >= c1 && ers <= INT_MAX) return {true, false, ers};
  ers = r <= 1 ? 1 : rs, ecs = c <= 1 ? r1 : cs;
  if (ers == 1 && ecs >= r1 && ecs <= INT_MAX) return {true, true, ecs};
  return {};
}

// One operand of a batched product: matrices (rs, cs) at broadcast batch strides.
struct Operand {
  const char* p;  // first element
  int64_t rs, cs;
  std::vector<int64_t> batch;
};

inline cudaDataType_t blas_type(DType dt) {
  switch (dt) {
    case DType::Float16: return CUDA_R_16F;
    case DType::BFloat16: return CUDA_R_16BF;
    case DType::Float64: return CUDA_R_64F;
    default: return CUDA_R_32F;
  }
}

// `count` products C_b[m, n] (row-major, ldc n, C_b at c + b * sc) = A_b @ B_b (+ C_b when
// accumulate), A_b at a + b * sa. Row-major C = A @ B is column-major C^T = B^T @ A^T: cuBLAS
// gets B as its first operand.
inline void gemm_call(const char* op, DType dt, int64_t m, int64_t n, int64_t k, const char* a,
                      int64_t ars, int64_t acs, int64_t sa, const char* b, int64_t brs,
                      int64_t bcs, int64_t sb, char* c, int64_t sc, int64_t count, bool accumulate,
                      void* ws, size_t ws_bytes) {
  if (is_integral(dt)) {
    NaiveGemm g{m, n, k, ars, acs, brs, bcs, sa, sb, sc, count, accumulate};
    dispatch_all(dt, op, [&]<class T>() {
      if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
        gemm_naive_kernel<T><<<grid_for(count * m * n), kThreads, 0, stream()>>>(
            reinterpret_cast<const T*>(a), reinterpret_cast<const T*>(b),
            reinterpret_cast<T*>(c), g);
    });
    return check_launch(op);
  }
  Layout la = layout(m, k, ars, acs), lb = layout(k, n, brs, bcs);
  TERRA_CHECK(la.ok && lb.ok, op, "internal error: operand layout not readable by cuBLAS");
  TERRA_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX, op, "matrix dims (", m, ", ", n, ", ",
              k, ") exceed cuBLAS's int range");
  cublasHandle_t h = blas_handle(op);
  check_blas(cublasSetStream(h, stream()), op, "cublasSetStream");  // resets the workspace
  check_blas(cublasSetWorkspace(h, ws, ws_bytes), op, "cublasSetWorkspace");
  cublasComputeType_t ct = dt == DType::Float64 ? CUBLAS_COMPUTE_64F
                           : dt == DType::Float32 && allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                  : CUBLAS_COMPUTE_32F;
  const float f1 = 1.0f, fb = accumulate ? 1.0f : 0.0f;
  const double d1 = 1.0, db = accumulate ? 1.0 : 0.0;
  const void* alpha = dt == DType::Float64 ? static_cast<const void*>(&d1) : &f1;
  const void* beta = dt == DType::Float64 ? static_cast<const void*>(&db) : &fb;
  cudaDataType_t ty = blas_type(dt);
  size_t es = itemsize(dt);
  for (int64_t b0 = 0; b0 < count; b0 += INT_MAX) {
    int64_t cnt = std::min<int64_t>(INT_MAX, count - b0);
    check_blas(cublasGemmStridedBatchedEx(
                   h, lb.trans ? CUBLAS_OP_T : CUBLAS_OP_N, la.trans ? CUBLAS_OP_T : CUBLAS_OP_N,
                   int(n), int(m), int(k), alpha, b + b0 * sb * es, ty, int(lb.ld), sb,
                   a + b0 * sa * es, ty, int(la.ld), sa, beta, c + b0 * sc * es, ty, int(n), sc,
                   int(cnt), ct, CUBLAS_GEMM_DEFAULT),
               op, "cublasGemmStridedBatchedEx");
  }
}

// True when A's batch dims and rows merge into one dim of stride rs.
inline bool rows_merge(const Shape& batch, const std::vector<int64_t>& bs, int64_t m,
                       int64_t rs) {
  int64_t expect = m * rs;
  for (size_t d = batch.size(); d-- > 0;) {
    if (batch[d] == 1) continue;
    if (bs[d] != expect) return false;
    expect *= batch[d];
  }
  return true;
}

// C[batch..., m, n] (contiguous at c) = A @ B (+ C when accumulate) over the broadcast batch:
// one gemm when B is shared and A's batch folds into its rows; else strided-batched calls over
// the longest suffix of batch dims that has one stride per operand, looping over the rest.
inline void gemm_batched(const char* op, DType dt, const Shape& batch, const Operand& A,
                         const Operand& B, int64_t m, int64_t n, int64_t k, void* c_,
                         bool accumulate, Device dev) {
  char* c = static_cast<char*>(c_);
  size_t es = itemsize(dt);
  // 32 MiB: what cuBLAS asks for on Hopper.
  size_t ws_bytes = is_integral(dt) ? 0 : size_t(32) << 20;
  Tensor ws = ws_bytes ? workspace(ws_bytes, dev) : Tensor();
  void* wp = ws_bytes ? ws.device_data() : nullptr;
  int64_t nb = numel_of(batch);
  bool b_shared = std::all_of(B.batch.begin(), B.batch.end(), [](int64_t s) { return s == 0; });
  if (nb > 1 && b_shared && m * nb <= INT_MAX && rows_merge(batch, A.batch, m, A.rs) &&
      (is_integral(dt) || layout(m * nb, k, A.rs, A.cs).ok)) {
    return gemm_call(op, dt, m * nb, n, k, A.p, A.rs, A.cs, 0, B.p, B.rs, B.cs, 0, c, 0, 1,
                     accumulate, wp, ws_bytes);
  }
  std::vector<int64_t> sz, as, bs;  // batch dims of size > 1 (the others never move)
  for (size_t d = 0; d < batch.size(); ++d)
    if (batch[d] != 1) sz.push_back(batch[d]), as.push_back(A.batch[d]), bs.push_back(B.batch[d]);
  size_t nd = sz.size(), j = nd;
  int64_t inner = 1;
  if (nd > 0) {
    j = nd - 1;
    inner = sz[j];
    while (j > 0 && as[j - 1] == as[j] * sz[j] && bs[j - 1] == bs[j] * sz[j]) inner *= sz[--j];
  }
  int64_t sa = nd ? as[nd - 1] : 0, sb = nd ? bs[nd - 1] : 0, outer = nb / inner;
  std::vector<int64_t> idx(j, 0);
  int64_t oa = 0, ob = 0;  // element offsets of the current outer index
  for (int64_t o = 0; o < outer; ++o) {
    gemm_call(op, dt, m, n, k, A.p + oa * int64_t(es), A.rs, A.cs, sa, B.p + ob * int64_t(es),
              B.rs, B.cs, sb, c + o * inner * m * n * int64_t(es), m * n, inner, accumulate, wp,
              ws_bytes);
    for (size_t d = j; d-- > 0;) {  // odometer over the outer dims
      oa += as[d], ob += bs[d];
      if (++idx[d] < sz[d]) break;
      oa -= as[d] * sz[d], ob -= bs[d] * sz[d];
      idx[d] = 0;
    }
  }
}

// ---- matmul ----
// (row stride, col stride) of t's matrices; a vector is a row on the left, a column on the right.
inline std::pair<int64_t, int64_t> inner_strides(const Tensor& t, bool vec, bool row) {
  if (vec) return row ? std::pair<int64_t, int64_t>{0, t.strides()[0]}
                      : std::pair<int64_t, int64_t>{t.strides()[0], 0};
  return {t.strides()[t.dim() - 2], t.strides().back()};
}

// t in dtype dt with matrices cuBLAS can read (a contiguous copy when they are not).
inline Tensor blas_ready(const Tensor& t, DType dt, int64_t r, int64_t c, int64_t rs, int64_t cs,
                         const char* op) {
  if (t.dtype() != dt || (!is_integral(dt) && !layout(r, c, rs, cs).ok)) return dense(t, dt, op);
  return t;
}

// t's batch strides broadcast to `batch` (0 along dims t lacks or has of size 1).
inline std::vector<int64_t> batch_strides(const Tensor& t, const Shape& batch) {
  Shape tb = op::detail_linalg::batch_of(t);
  std::vector<int64_t> s(batch.size(), 0);
  size_t off = batch.size() - tb.size();
  for (size_t d = 0; d < tb.size(); ++d)
    if (tb[d] != 1) s[off + d] = t.strides()[d];
  return s;
}

inline Operand operand(const Tensor& t, bool vec, bool row, const Shape& batch) {
  auto [rs, cs] = inner_strides(t, vec, row);
  return {static_cast<const char*>(t.device_data()), rs, cs, batch_strides(t, batch)};
}

inline void check_dtype(DType dt, const char* op) {
  TERRA_CHECK(dt != DType::Bool, op, "is not supported for bool tensors");
}

inline void matmul_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor& out = outs[0];
  DType dt = out.dtype();
  check_dtype(dt, "matmul");
  if (out.numel() == 0) return;
  const Tensor &a0 = c.inputs[0], &b0 = c.inputs[1];
  bool av = a0.dim() == 1, bv = b0.dim() == 1;
  int64_t m = av ? 1 : a0.shape()[a0.dim() - 2], k = a0.shape().back();
  int64_t n = bv ? 1 : b0.shape().back();
  if (k == 0) return zero(out);
  auto [ars, acs] = inner_strides(a0, av, true);
  auto [brs, bcs] = inner_strides(b0, bv, false);
  Tensor a = blas_ready(a0, dt, m, k, ars, acs, "matmul");
  Tensor b = blas_ready(b0, dt, k, n, brs, bcs, "matmul");
  Shape batch(out.shape().begin(), out.shape().end() - (av ? 0 : 1) - (bv ? 0 : 1));
  gemm_batched("matmul", dt, batch, operand(a, av, true, batch), operand(b, bv, false, batch), m,
               n, k, out.device_data(), false, out.device());
}

// ---- linear ----
// out[rows, o] = x[rows, in] @ w^T (+ bias, which is written first and accumulated onto).
inline void linear_kernel(const OpCall& c, std::span<Tensor> outs) {
  Tensor& out = outs[0];
  DType dt = out.dtype();
  check_dtype(dt, "linear");
  if (out.numel() == 0) return;
  const Tensor &x0 = c.inputs[0], &w0 = c.inputs[1];
  int64_t o = w0.shape()[0], in = w0.shape()[1], r = x0.dim(), rows = out.numel() / o;
  bool has_bias = c.inputs.size() == 3;
  if (has_bias) {
    Tensor b = dense(c.inputs[2], dt, "linear");
    dispatch_all(dt, "linear", [&]<class T>() {
      fill_rows_kernel<T><<<grid_for(rows * o), kThreads, 0, stream()>>>(ptr<const T>(b),
                                                                         ptr<T>(out), rows, o);
    });
    check_launch("linear");
  } else if (in == 0) {
    zero(out);
  }
  if (in == 0) return;
  // x's leading dims must merge into one row dim of stride xrs: a copy otherwise.
  Tensor x = x0.dtype() == dt ? x0 : dense(x0, dt, "linear");
  int64_t xrs = r > 1 ? x.strides()[r - 2] : 0, xcs = x.strides()[r - 1];
  std::vector<int64_t> lead(x.strides().begin(), x.strides().end() - std::min<int64_t>(r, 2));
  bool merge = r < 2 || rows_merge(Shape(x.shape().begin(), x.shape().end() - 2), lead,
                                   x.shape()[r - 2], xrs);
  if (!merge || (!is_integral(dt) && !layout(rows, in, xrs, xcs).ok)) {
    x = dense(x0, dt, "linear");
    xrs = in, xcs = 1;
  }
  Tensor w = blas_ready(w0, dt, in, o, w0.strides()[1], w0.strides()[0], "linear");
  Operand A{static_cast<const char*>(x.device_data()), xrs, xcs, {}};
  Operand B{static_cast<const char*>(w.device_data()), w.strides()[1], w.strides()[0], {}};
  gemm_batched("linear", dt, Shape{}, A, B, rows, o, in, out.device_data(), has_bias,
               out.device());
}

}  // namespace terra::cuda::la

namespace terra::cuda {
template <>
inline constexpr KernelFn cuda_kernel<op::MatMul> = &la::matmul_kernel;
template <>
inline constexpr KernelFn cuda_kernel<op::Linear> = &la::linear_kernel;
}  // namespace terra::cuda
