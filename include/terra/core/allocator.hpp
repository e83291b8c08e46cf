// terra/core/allocator.hpp: the CPU block allocator behind Storage, with a bounded cache of
// freed large blocks.
//
// Why a cache: a training step frees and re-allocates the same activation-sized blocks every
// iteration. glibc serves blocks above its mmap threshold with fresh mappings and trims the
// heap top when large blocks are freed, so every step paid for page faults on memory it had
// just given back (a third of the small-CNN step, measured with perf).
//
// Why size classes and a best fit: programs whose shapes change (a sequence length per batch,
// a host-chosen downsampling) ask for many nearby sizes. With exact-size reuse each size kept
// blocks of its own until the cache was full, and every further size faulted fresh pages in
// (BERT-CLS spent a fifth of its time clearing pages). A large block's size is rounded up to
// one of 8 classes per power of two (at most 12.5% over), and a request takes the smallest
// cached block of its class or up to a quarter larger. The block's real size sits in a
// 64-byte header in front of it, so it goes back to the cache under that size.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace terra {

namespace detail {

inline constexpr size_t kBlockAlign = 64;
// Smaller blocks come from malloc's own bins, which already reuse them cheaply.
inline constexpr size_t kCacheMinBytes = size_t(16) << 10;
inline constexpr size_t kCacheGranule = size_t(4) << 10;
inline constexpr size_t kBlockHeader = kBlockAlign;  // in front of every cached-size block

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
  std::map<size_t, std::vector<void*>> free;  // block size -> cached blocks (user pointers)
  size_t bytes = 0;                           // held in `free`
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

inline bool cached_size(size_t n) { return kCacheEnabled && n >= kCacheMinBytes; }

// The class a request of n bytes (n >= kCacheMinBytes) is served from: n rounded up to an
// eighth of its power of two, and to the 4 KiB granule.
inline size_t size_class(size_t n) {
  int lg = 63 - __builtin_clzll(uint64_t(n));
  size_t step = std::max<size_t>(size_t(1) << (lg - 3), kCacheGranule);
  return (n + step - 1) / step * step;
}
// A cached block's real size, from its header.
inline size_t& block_bytes(void* p) {
  return *reinterpret_cast<size_t*>(static_cast<char*>(p) - kBlockHeader);
}

}  // namespace detail

/// A 64-byte aligned CPU block of at least n bytes, or nullptr when out of memory. Free it
/// with cpu_free(p, n) (the same n).
inline void* cpu_alloc(size_t n) {
  if (!detail::cached_size(n)) return detail::raw_alloc(n);
  size_t want = detail::size_class(n);
  auto& c = detail::block_cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free.lower_bound(want);
    if (it != c.free.end() && it->first <= want + want / 4) {
      void* p = it->second.back();
      it->second.pop_back();
      c.bytes -= it->first;
      if (it->second.empty()) c.free.erase(it);
      return p;
    }
  }
  void* block = detail::raw_alloc(detail::kBlockHeader + want);
  if (!block) return nullptr;
  void* p = static_cast<char*>(block) + detail::kBlockHeader;
  detail::block_bytes(p) = want;
  return p;
}

/// Returns a block from cpu_alloc(n): kept for reuse when the cache has room, else freed.
inline void cpu_free(void* p, size_t n) {
  if (p == nullptr) return;
  if (!detail::cached_size(n)) return detail::raw_free(p);
  size_t sz = detail::block_bytes(p);
  auto& c = detail::block_cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.bytes + sz <= c.limit) {
      c.free[sz].push_back(p);
      c.bytes += sz;
      return;
    }
  }
  detail::raw_free(static_cast<char*>(p) - detail::kBlockHeader);
}

/// Frees every cached CPU block (memory terra keeps for reuse after tensors die).
inline void cpu_empty_cache() {
  auto& c = detail::block_cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [sz, blocks] : c.free)
    for (void* p : blocks) detail::raw_free(static_cast<char*>(p) - detail::kBlockHeader);
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
