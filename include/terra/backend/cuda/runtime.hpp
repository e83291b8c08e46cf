// terra/backend/cuda/runtime.hpp: devices, streams and events. Host C++ over the CUDA runtime
// API (no kernels), so .cpp units of a program built with TERRA_WITH_CUDA can use it too.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>

#include "terra/core/device.hpp"
#include "terra/core/error.hpp"

namespace terra::cuda {

namespace detail {
[[noreturn]] inline void fail_cuda(cudaError_t e, const char* what) {
  cudaGetLastError();  // clear the sticky "last error" of non-fatal failures
  terra::detail::fail("cuda", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}
inline void check(cudaError_t e, const char* what) {
  if (TERRA_UNLIKELY(e != cudaSuccess)) fail_cuda(e, what);
}
inline constexpr int kMaxDevices = 64;
}  // namespace detail

// Throws terra::Error naming the failed call: TERRA_CUDA_CHECK(cudaMemsetAsync(p, 0, n, s)).
#define TERRA_CUDA_CHECK(expr) ::terra::cuda::detail::check((expr), #expr)

/// Number of usable GPUs. Every CUDA error counts as "none": a machine with the toolkit but no
/// driver answers cudaErrorInsufficientDriver, one without a device cudaErrorNoDevice.
inline int device_count() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return std::min(c, detail::kMaxDevices);
  }();
  return n;
}
/// True when at least one GPU can be used.
inline bool is_available() { return device_count() > 0; }

/// Throws terra::Error (naming `what`) unless cuda:index exists on this machine.
inline void check_device(int index, const char* what) {
  int n = device_count();
  TERRA_CHECK(index >= 0 && index < n, what, "cuda:", index, " does not exist: this machine has ",
              n, n == 1 ? " CUDA device" : " CUDA devices");
}

/// The calling thread's current device.
inline int current_device() {
  int d = 0;
  TERRA_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}
/// Makes cuda:index the calling thread's current device.
inline void set_device(int index) {
  check_device(index, "cuda::set_device");
  TERRA_CUDA_CHECK(cudaSetDevice(index));
}

/// Makes a device current for a scope and restores the previous one (a no-op when it already is).
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) : prev_(current_device()) {
    if (index != prev_) set_device(index);
  }
  ~DeviceGuard() {
    if (current_device() != prev_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_;
};

/// Waits for all work queued on cuda:index (every stream); -1: the current device.
inline void synchronize(int index = -1) {
  if (index < 0) index = current_device();
  DeviceGuard g(index);
  TERRA_CUDA_CHECK(cudaDeviceSynchronize());
}

/// A CUDA stream, owned (created by terra, destroyed with the object) or borrowed.
class Stream {
 public:
  Stream() = default;
  /// A new non-blocking stream on cuda:device (it never waits for the legacy default stream).
  static Stream create(int device, int priority = 0) {
    DeviceGuard g(device);
    cudaStream_t s = nullptr;
    TERRA_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, priority));
    return Stream(s, device, true);
  }
  /// A stream made elsewhere (PyTorch, cuDNN, the user); terra never destroys it.
  static Stream borrow(cudaStream_t s, int device) { return Stream(s, device, false); }
  Stream(Stream&& o) noexcept : s_(o.s_), device_(o.device_), owned_(o.owned_) { o.owned_ = false; }
  Stream& operator=(Stream&& o) noexcept {
    std::swap(s_, o.s_);
    std::swap(device_, o.device_);
    std::swap(owned_, o.owned_);
    return *this;
  }
  ~Stream() {
    if (owned_ && s_) cudaStreamDestroy(s_);
  }
  cudaStream_t get() const { return s_; }
  int device() const { return device_; }
  /// Waits until the work queued on this stream is done.
  void synchronize() const { TERRA_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  Stream(cudaStream_t s, int device, bool owned) : s_(s), device_(device), owned_(owned) {}
  cudaStream_t s_ = nullptr;
  int device_ = 0;
  bool owned_ = false;
};

namespace detail {
// Per device: terra's default stream, made on first use and shared by every thread (as torch's
// default stream is). Non-blocking, so it can be captured into CUDA graphs.
// The streams are never destroyed (work may still be queued on them at exit).
inline cudaStream_t default_stream(int device) {
  static auto* streams = new std::array<std::atomic<cudaStream_t>, kMaxDevices>{};
  static std::mutex mu;
  cudaStream_t s = (*streams)[size_t(device)].load(std::memory_order_acquire);
  if (TERRA_LIKELY(s != nullptr)) return s;
  std::lock_guard<std::mutex> lock(mu);
  s = (*streams)[size_t(device)].load(std::memory_order_relaxed);
  if (!s) {
    DeviceGuard g(device);
    TERRA_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    (*streams)[size_t(device)].store(s, std::memory_order_release);
  }
  return s;
}
// Per thread and device: the stream set by a StreamGuard, or null (the default stream).
inline cudaStream_t* thread_streams() {
  thread_local cudaStream_t table[kMaxDevices] = {};
  return table;
}
}  // namespace detail

/// The stream the calling thread's ops on cuda:device are queued on; -1: the current device.
inline cudaStream_t current_stream(int device = -1) {
  if (device < 0) device = current_device();
  cudaStream_t s = detail::thread_streams()[device];
  return s ? s : detail::default_stream(device);
}

/// Queues the calling thread's ops on `stream` (its device) for a scope.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& s) : device_(s.device()) {
    check_device(device_, "cuda::StreamGuard");
    prev_ = detail::thread_streams()[device_];
    detail::thread_streams()[device_] = s.get();
  }
  ~StreamGuard() { detail::thread_streams()[device_] = prev_; }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_;
  cudaStream_t prev_;
};

/// A CUDA event: a point in a stream that the host or other streams can wait for.
class Event {
 public:
  /// timing: whether elapsed_ms may be asked of it (events without timing are cheaper).
  explicit Event(bool timing = false) {
    TERRA_CUDA_CHECK(cudaEventCreateWithFlags(&e_, timing ? cudaEventDefault : cudaEventDisableTiming));
  }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  /// Marks the current end of `stream` (default: the current stream).
  void record(cudaStream_t stream = current_stream()) { TERRA_CUDA_CHECK(cudaEventRecord(e_, stream)); }
  /// Makes `stream` wait for this event without blocking the host.
  void block(cudaStream_t stream = current_stream()) const {
    TERRA_CUDA_CHECK(cudaStreamWaitEvent(stream, e_, 0));
  }
  /// Whether the work before the event is done.
  bool query() const {
    cudaError_t r = cudaEventQuery(e_);
    if (r == cudaErrorNotReady) {
      cudaGetLastError();
      return false;
    }
    detail::check(r, "cudaEventQuery");
    return true;
  }
  /// Blocks the host until the event has happened.
  void synchronize() const { TERRA_CUDA_CHECK(cudaEventSynchronize(e_)); }
  /// Milliseconds from `start` to this event (both recorded with timing).
  float elapsed_ms(const Event& start) const {
    float ms = 0;
    TERRA_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
  }
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace terra::cuda
