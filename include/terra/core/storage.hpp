// terra/core/storage.hpp: reference-counted memory blocks shared by a tensor and its views.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <utility>

#include "terra/core/allocator.hpp"
#include "terra/core/device.hpp"
#include "terra/core/device_backend.hpp"
#include "terra/core/error.hpp"
#include "terra/core/pending.hpp"

namespace terra {

// A pointer to an object that counts its own references (one allocation per object, and a
// copy is a single atomic increment).
template <class T>
class Ref {
 public:
  Ref() = default;
  explicit Ref(T* p) : p_(p) {}  // adopts a fresh object (refs == 1)
  Ref(const Ref& o) : p_(o.p_) { if (p_) p_->refs_.fetch_add(1, std::memory_order_relaxed); }
  Ref(Ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Ref& operator=(Ref o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~Ref() {
    if (p_ && p_->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) T::destroy(p_);
  }
  T* get() const { return p_; }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  explicit operator bool() const { return p_ != nullptr; }
  friend bool operator==(const Ref& a, const Ref& b) { return a.p_ == b.p_; }

 private:
  T* p_ = nullptr;
};

// A block of device memory. Owned blocks on the CPU live in the same allocation as this
// header (64-byte aligned); wrapped blocks call the user's deleter (or none).
class Storage {
 public:
  static constexpr size_t kAlign = detail::kBlockAlign;

  static Ref<Storage> allocate(size_t nbytes, Device device) {
    if (!device.is_cpu()) return allocate_on(nbytes, device);
    size_t header = header_bytes();
    void* block = cpu_alloc(header + nbytes);
    TERRA_CHECK(block != nullptr, "allocate", "out of memory allocating ", nbytes,
                " bytes on ", device);
    auto* s = new (block) Storage(static_cast<char*>(block) + header, nbytes, device);
    s->inline_ = true;
    return Ref<Storage>(s);
  }

  // nbytes on a device: from its backend's allocator, given back to it by the last reference.
  static Ref<Storage> allocate_on(size_t nbytes, Device device) {
    const DeviceBackend& b = device_backend(device, "allocate");
    void* p = nbytes ? b.alloc(nbytes, device.index) : nullptr;
    auto* s = new Storage(p, nbytes, device);
    if (p) s->deleter_ = [&b, nbytes, i = int(device.index)](void* q) { b.free(q, nbytes, i); };
    return Ref<Storage>(s);
  }

  // Memory owned elsewhere. `deleter` (may be empty) runs when the last reference goes.
  static Ref<Storage> wrap(void* data, size_t nbytes, Device device,
                           std::function<void(void*)> deleter) {
    auto* s = new Storage(data, nbytes, device);
    s->deleter_ = std::move(deleter);
    s->user_memory_ = true;
    return Ref<Storage>(s);
  }

  // A co-executed op's output: no memory until its block is launched (see set_memory), and a
  // signal that host accesses wait on.
  // `pending`, if given, is the signal of the run that will produce it.
  static Ref<Storage> lazy(size_t nbytes, Device device, Signal* pending = nullptr) {
    auto* s = new Storage(nullptr, nbytes, device);
    s->lazy_ = true;
    if (pending) {
      pending->retain();
      s->pending_.store(pending, std::memory_order_relaxed);  // not shared with anyone yet
    }
    return Ref<Storage>(s);
  }
  // Gives a lazy storage its own memory (owned; on the CPU 64-byte aligned, on a device from
  // its backend's allocator).
  void allocate_lazy() {
    if (data_ != nullptr || nbytes_ == 0) return;
    if (!device_.is_cpu()) {
      const DeviceBackend& b = device_backend(device_, "allocate");
      data_ = b.alloc(nbytes_, device_.index);
      deleter_ = [&b, n = nbytes_, i = int(device_.index)](void* q) { b.free(q, n, i); };
      return;
    }
    data_ = cpu_alloc(nbytes_);
    TERRA_CHECK(data_ != nullptr, "allocate", "out of memory allocating ", nbytes_, " bytes");
    deleter_ = [n = nbytes_](void* p) { cpu_free(p, n); };
  }

  // A fresh number from the process-wide creation counter (every storage takes one).
  static uint64_t next_birth() {
    static std::atomic<uint64_t> counter{1};
    return counter.fetch_add(1, std::memory_order_relaxed);
  }

  void* data() const { return data_; }
  // Memory that the user wrapped (from_blob without copy): it may change behind terra's back.
  bool user_memory() const { return user_memory_; }
  // References held to this storage (by tensors, views, autograd, the engine).
  int use_count() const { return refs_.load(std::memory_order_acquire); }

  // ---- co-execution (owned by the host thread that uses the storage) ----
  // Waits for the run that produces or uses this storage, if any. Never waits on a runner.
  void wait_ready() const {
    if (detail::in_runner()) return;
    // A storage that only exists as a run's output throws that run's error; memory that existed
    // before (parameters) keeps what the ops before the failure wrote, as in eager execution.
    if (Signal* s = pending_.load(std::memory_order_acquire); s && (!s->done() || (lazy_ && s->failed())))
      s->wait();
  }
  Signal* pending() const { return pending_.load(std::memory_order_acquire); }
  // read_only: the run only reads this memory, and nothing before it writes it (so a host read
  // need not wait: see readable()).
  void set_pending(Signal* s, bool read_only = false) {
    if (s) s->retain();
    if (Signal* old = pending_.exchange(s, std::memory_order_acq_rel)) old->release();
    pending_read_only_ = read_only;
  }
  // May the host read the memory now (a run may still read it, none will write it)? Then
  // reads (to_vector, item) go ahead; writes still wait (wait_ready).
  bool readable() const {
    Signal* s = pending_.load(std::memory_order_acquire);
    return !s || s->done() ? !(lazy_ && s && s->failed()) : pending_read_only_ && !lazy_;
  }
  uint64_t trace_tag = 0;     // (iteration serial << 32) | (buffer index + 1), set by the recorder
  uint64_t produced_by = 0;   // serial of the traced iteration whose op produced it, or 0
  // Creation order across the process: tells a feed built during an iteration from a tensor
  // that existed before it.
  const uint64_t birth = next_birth();
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

  // Bumped by every in-place write; autograd compares it with the value it saved.
  std::atomic<uint64_t> version{0};

 private:
  template <class> friend class Ref;
  Storage(void* data, size_t nbytes, Device device) : data_(data), nbytes_(nbytes), device_(device) {}
  ~Storage() {
    if (Signal* p = pending_.load(std::memory_order_acquire)) p->release();
  }
  static size_t header_bytes() { return (sizeof(Storage) + kAlign - 1) / kAlign * kAlign; }
  static void destroy(Storage* s) {
    if (s->inline_) {
      size_t total = header_bytes() + s->nbytes_;
      s->~Storage();
      cpu_free(static_cast<void*>(s), total);
    } else {
      if (s->deleter_) s->deleter_(s->data_);
      delete s;
    }
  }

  std::atomic<int> refs_{1};
  void* data_;
  size_t nbytes_;
  Device device_;
  bool inline_ = false;
  bool user_memory_ = false;
  bool lazy_ = false;
  bool pending_read_only_ = false;  // the pending run only reads it (set_pending)
  std::atomic<Signal*> pending_{nullptr};
  std::function<void(void*)> deleter_;
};

// Copies the first nbytes of src into dst, either of which may be device memory (through the
// device's backend: a copy from or to the host is complete on return, one between device
// buffers is queued on the calling thread's stream, ahead of the work queued there after it).
inline void copy_storage(Storage& dst, const Storage& src, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst.device().is_cpu() && src.device().is_cpu()) {
    std::memcpy(dst.data(), src.data(), nbytes);
    return;
  }
  Device d = dst.device().is_cpu() ? src.device() : dst.device();
  device_backend(d, "copy").copy(dst.data(), dst.device(), src.data(), src.device(), nbytes, false);
}

}  // namespace terra
