// terra/backend/cuda/allocator.hpp: the caching device allocator, pinned host staging buffers,
// and the DeviceBackend entry that core/ calls for CUDA memory and copies.
//
// cudaMalloc and cudaFree synchronize the device and cost tens of microseconds, so freed blocks
// are kept per (stream, size class) and handed out again. A block is reused only on the stream
// it was made for: work queued there later runs after the work that used it before. A tensor
// used on another stream must be synchronized by its user (torch's record_stream is not built).
#pragma once

#include <atomic>
#include <cstring>
#include <map>
#include <set>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "terra/backend/cuda/graphs.hpp"
#include "terra/backend/cuda/runtime.hpp"
#include "terra/core/device_backend.hpp"

namespace terra::cuda {

/// Byte counts of one device's allocator.
struct AllocatorStats {
  size_t allocated = 0;       ///< in tensors now (rounded to size classes)
  size_t reserved = 0;        ///< taken from the driver: allocated + cached
  size_t peak_allocated = 0;  ///< highest `allocated` since start or reset_peak()
  int64_t device_mallocs = 0; ///< cudaMalloc calls
  int64_t cache_hits = 0;     ///< requests served from the cache
  int64_t oom_retries = 0;    ///< cudaMalloc failures answered by emptying the cache
};

namespace detail {

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}

  // Size classes: 512-byte steps up to 1 MiB; above, steps of an eighth of the next power of two
  // (at least 2 MiB), so at most 12.5% is wasted and repeated sizes hit their class exactly.
  static size_t round(size_t n) {
    constexpr size_t kSmall = size_t(1) << 20, kStep = 512, kMin = size_t(2) << 20;
    if (n <= kSmall) return (std::max<size_t>(n, 1) + kStep - 1) / kStep * kStep;
    size_t p = 1;
    while (p < n) p <<= 1;
    size_t step = std::max(kMin, p / 8);
    return (n + step - 1) / step * step;
  }

  void* alloc(size_t nbytes, cudaStream_t stream) {
    size_t size = round(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.lower_bound({stream, size, nullptr});
    if (it != cache_.end() && std::get<0>(*it) == stream && std::get<1>(*it) == size) {
      void* p = std::get<2>(*it);
      cache_.erase(it);
      ++stats_.cache_hits;
      return take(p, size, stream);
    }
    return take(device_malloc(nbytes, size), size, stream);
  }

  void free(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours (cannot happen through Storage)
    stats_.allocated -= it->second.size;
    cache_.insert({it->second.stream, it->second.size, p});
    live_.erase(it);
  }

  // Gives every cached block back to the driver (tensors in use keep theirs).
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cache();
  }
  // Gives the cached blocks made for `stream` back to the driver (the stream is going away).
  void release_stream(cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);  // no DeviceGuard: it may throw, and this runs at thread exit
    for (auto it = cache_.begin(); it != cache_.end();) {
      if (std::get<0>(*it) != stream) {
        ++it;
        continue;
      }
      cudaFree(std::get<2>(*it));
      cudaGetLastError();
      stats_.reserved -= std::get<1>(*it);
      it = cache_.erase(it);
    }
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated = stats_.allocated;
  }

 private:
  struct Live {
    size_t size;
    cudaStream_t stream;
  };

  void* take(void* p, size_t size, cudaStream_t stream) {
    live_[p] = {size, stream};
    stats_.allocated += size;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    return p;
  }

  void release_cache() {
    DeviceGuard g(device_);
    for (const auto& [stream, size, p] : cache_) {
      cudaFree(p);
      stats_.reserved -= size;
    }
    cache_.clear();
  }

  // On out-of-memory: give the cache back and try once more, then report the state.
  void* device_malloc(size_t nbytes, size_t size) {
    DeviceGuard g(device_);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation && !cache_.empty()) {
      cudaGetLastError();
      ++stats_.oom_retries;
      release_cache();
      e = cudaMalloc(&p, size);
    }
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      cudaGetLastError();
      terra::detail::fail("cuda_alloc", "out of memory on cuda:", device_, " allocating ",
                          nbytes, " bytes (", mib(size), " MiB): terra has ", mib(stats_.allocated),
                          " MiB in tensors and ", mib(stats_.reserved), " MiB reserved (peak ",
                          mib(stats_.peak_allocated), " MiB); the device has ", mib(free_b),
                          " MiB free of ", mib(total_b), " MiB");
    }
    check(e, "cudaMalloc");
    ++stats_.device_mallocs;
    stats_.reserved += size;
    return p;
  }
  static double mib(size_t b) { return double(b) / double(1 << 20); }

  int device_;
  std::mutex mu_;
  std::unordered_map<void*, Live> live_;
  std::set<std::tuple<cudaStream_t, size_t, void*>> cache_;
  AllocatorStats stats_;
};

// Never destroyed: tensors in static objects may be freed after every other static is gone.
inline CachingAllocator& allocator(int device) {
  static auto* table = new std::array<std::atomic<CachingAllocator*>, kMaxDevices>{};
  static std::mutex mu;
  CachingAllocator* a = (*table)[size_t(device)].load(std::memory_order_acquire);
  if (TERRA_LIKELY(a != nullptr)) return *a;
  std::lock_guard<std::mutex> lock(mu);
  a = (*table)[size_t(device)].load(std::memory_order_relaxed);
  if (!a) (*table)[size_t(device)].store(a = new CachingAllocator(device), std::memory_order_release);
  return *a;
}

inline void release_stream_blocks(int device, cudaStream_t s) { allocator(device).release_stream(s); }

// Page-locked host buffers for asynchronous host-to-device copies. A buffer goes back to the
// pool with an event recorded after the copy that reads it; it is reused once that event has
// happened.
class PinnedPool {
 public:
  void* alloc(size_t nbytes) {
    std::lock_guard<std::mutex> lock(mu_);
    reclaim();
    size_t size = CachingAllocator::round(nbytes);
    auto it = free_.lower_bound(size);
    if (it != free_.end() && it->first == size) {
      void* p = it->second;
      free_.erase(it);
      return p;
    }
    void* p = nullptr;
    TERRA_CUDA_CHECK(cudaHostAlloc(&p, size, cudaHostAllocDefault));
    sizes_[p] = size;
    return p;
  }
  // p may be reused once the work queued on `stream` so far is done.
  void release_after(void* p, cudaStream_t stream) {
    cudaEvent_t e = nullptr;
    TERRA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    TERRA_CUDA_CHECK(cudaEventRecord(e, stream));
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({p, e});
  }

 private:
  void reclaim() {
    for (size_t i = 0; i < pending_.size();) {
      cudaError_t r = cudaEventQuery(pending_[i].second);
      if (r == cudaErrorNotReady) {
        cudaGetLastError();
        ++i;
        continue;
      }
      cudaEventDestroy(pending_[i].second);
      free_.insert({sizes_[pending_[i].first], pending_[i].first});
      pending_[i] = pending_.back();
      pending_.pop_back();
    }
  }
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> sizes_;
  std::vector<std::pair<void*, cudaEvent_t>> pending_;
};

inline PinnedPool& pinned_pool() {
  static PinnedPool* pool = new PinnedPool();  // never destroyed: copies may be in flight at exit
  return *pool;
}

// ---- the DeviceBackend entry ----
inline void* backend_alloc(size_t nbytes, int index) {
  check_device(index, "allocate");
  return allocator(index).alloc(nbytes, current_stream(index));
}
inline void backend_free(void* p, size_t, int index) { allocator(index).free(p); }

inline void backend_copy(void* dst, Device dd, const void* src, Device sd, size_t n, bool non_blocking) {
  if (dd.is_cuda() && sd.is_cuda()) {  // ordered on the destination's stream
    cudaStream_t s = current_stream(dd.index);
    if (dd.index == sd.index) {
      TERRA_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s));
    } else {
      TERRA_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dd.index, src, sd.index, n, s));
    }
    return;
  }
  if (dd.is_cuda()) {  // host to device
    DeviceGuard g(dd.index);
    cudaStream_t s = current_stream(dd.index);
    if (non_blocking) {
      void* staged = pinned_pool().alloc(n);
      std::memcpy(staged, src, n);
      TERRA_CUDA_CHECK(cudaMemcpyAsync(dst, staged, n, cudaMemcpyHostToDevice, s));
      pinned_pool().release_after(staged, s);
    } else {
      TERRA_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s));
      TERRA_CUDA_CHECK(cudaStreamSynchronize(s));
    }
    return;
  }
  DeviceGuard g(sd.index);  // device to host: the values are needed on return
  cudaStream_t s = current_stream(sd.index);
  TERRA_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s));
  TERRA_CUDA_CHECK(cudaStreamSynchronize(s));
}

inline void backend_synchronize(int index) { synchronize(index); }
inline void* backend_get_stream(int index) { return static_cast<void*>(thread_streams()[index]); }
inline void backend_set_stream(void* stream, int index) {
  thread_streams()[index] = static_cast<cudaStream_t>(stream);
}

inline const DeviceBackend kBackend{"cuda",
                                    &backend_alloc,
                                    &backend_free,
                                    &backend_copy,
                                    &backend_synchronize,
                                    &backend_get_stream,
                                    &backend_set_stream,
                                    &backend_begin_capture,
                                    &backend_end_capture,
                                    &backend_destroy_graph,
                                    &backend_capturable};
// Registered before main by every unit that includes this header (one variable per program).
inline const bool kBackendRegistered =
    (terra::detail::device_backend_slot(DeviceType::CUDA) = &kBackend, true);

}  // namespace detail

/// The allocator's byte counts for cuda:device.
inline AllocatorStats memory_stats(int device = 0) {
  check_device(device, "cuda::memory_stats");
  return detail::allocator(device).stats();
}
/// Restarts peak_allocated from the bytes in use now.
inline void reset_peak_memory(int device = 0) {
  check_device(device, "cuda::reset_peak_memory");
  detail::allocator(device).reset_peak();
}
/// Gives the cached blocks of cuda:device back to the driver (tensors keep theirs).
inline void empty_cache(int device = 0) {
  check_device(device, "cuda::empty_cache");
  detail::allocator(device).empty_cache();
}

}  // namespace terra::cuda
