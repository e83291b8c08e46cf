// terra/core/allocator.hpp: the CPU block allocator behind Storage, with a bounded cache of
// freed large blocks.
//
// Why a cache: a training step frees and re-allocates the same activation-sized blocks every
// iteration. glibc serves blocks above its mmap threshold with fresh mappings and trims the
// heap top when large blocks are freed, so every step paid for page faults on memory it had
// just given back (a third of the small-CNN step, measured with perf). Blocks are reused only
// for an exact (rounded) size, so a steady training loop hits every time, and the cache never
// holds more than cpu_cache_limit() bytes.
#pragma once

#include <cstddef>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace terra {

namespace detail {

inline constexpr size_t kBlockAlign = 64;
// Smaller blocks come from malloc's own bins, which already reuse them cheaply.
inline constexpr size_t kCacheMinBytes = size_t(16) << 10;
inline constexpr size_t kCacheGranule = size_t(4) << 10;

// Sanitizer builds free every block at once, so use-after-free stays detectable.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kCacheEnabled = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kCacheEnabled = false;
#else
inline constexpr bool kCacheEnabled = true;
#endif
#else
inline constexpr bool kCacheEnabled = true;
#endif

struct BlockCache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free;  // rounded size -> blocks
  size_t bytes = 0;                                      // held in `free`
  size_t limit = size_t(256) << 20;
};
inline BlockCache& block_cache() {
  static BlockCache* c = new BlockCache;  // never destroyed: storages may outlive statics
  return *c;
}

inline void* raw_alloc(size_t n) {
  return ::operator new(n, std::align_val_t(kBlockAlign), std::nothrow);
}
inline void raw_free(void* p) { ::operator delete(p, std::align_val_t(kBlockAlign)); }

// The size a block of n bytes is really allocated with (cached blocks are interchangeable).
inline size_t block_size(size_t n) {
  if (!kCacheEnabled || n < kCacheMinBytes) return n;
  return (n + kCacheGranule - 1) / kCacheGranule * kCacheGranule;
}

}  // namespace detail

/// A 64-byte aligned CPU block of at least n bytes, or nullptr when out of memory. Free it
/// with cpu_free(p, n) (the same n).
inline void* cpu_alloc(size_t n) {
  size_t sz = detail::block_size(n);
  if (detail::kCacheEnabled && sz >= detail::kCacheMinBytes) {
    auto& c = detail::block_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free.find(sz);
    if (it != c.free.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.bytes -= sz;
      return p;
    }
  }
  return detail::raw_alloc(sz);
}

/// Returns a block from cpu_alloc(n): kept for reuse when the cache has room, else freed.
inline void cpu_free(void* p, size_t n) {
  if (p == nullptr) return;
  size_t sz = detail::block_size(n);
  if (detail::kCacheEnabled && sz >= detail::kCacheMinBytes) {
    auto& c = detail::block_cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.bytes + sz <= c.limit) {
      c.free[sz].push_back(p);
      c.bytes += sz;
      return;
    }
  }
  detail::raw_free(p);
}

/// Frees every cached CPU block (memory terra keeps for reuse after tensors die).
inline void cpu_empty_cache() {
  auto& c = detail::block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [sz, blocks] : c.free)
    for (void* p : blocks) detail::raw_free(p);
  c.free.clear();
  c.bytes = 0;
}

/// Bytes the CPU block cache holds now.
inline size_t cpu_cached_bytes() {
  auto& c = detail::block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.bytes;
}

/// Caps the CPU block cache at `bytes` (0 turns caching off); empties it first.
inline void set_cpu_cache_limit(size_t bytes) {
  cpu_empty_cache();
  auto& c = detail::block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.limit = bytes;
}

/// Uninitialized scratch memory for n values of T from the CPU block allocator (kernels'
/// temporary buffers: no zero fill, and large ones come back from the cache).
template <class T>
class ScratchBuffer {
 public:
  explicit ScratchBuffer(size_t n) : n_(n), p_(n ? static_cast<T*>(cpu_alloc(n * sizeof(T))) : nullptr) {
    if (n && !p_) throw std::bad_alloc();
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() { cpu_free(p_, n_ * sizeof(T)); }
  T* data() const { return p_; }
  T& operator[](size_t i) const { return p_[i]; }
  size_t size() const { return n_; }

 private:
  size_t n_;
  T* p_;
};

}  // namespace terra
