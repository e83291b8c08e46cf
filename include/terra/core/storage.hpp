// terra/core/storage.hpp: reference-counted memory blocks shared by a tensor and its views.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <new>
#include <utility>

#include "terra/core/device.hpp"
#include "terra/core/error.hpp"

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
  static constexpr size_t kAlign = 64;

  static Ref<Storage> allocate(size_t nbytes, Device device) {
    TERRA_CHECK(device.is_cpu(), "allocate", "no allocator registered for ", device);
    size_t header = (sizeof(Storage) + kAlign - 1) / kAlign * kAlign;
    void* block = ::operator new(header + nbytes, std::align_val_t(kAlign), std::nothrow);
    TERRA_CHECK(block != nullptr, "allocate", "out of memory allocating ", nbytes,
                " bytes on ", device);
    auto* s = new (block) Storage(static_cast<char*>(block) + header, nbytes, device);
    s->inline_ = true;
    return Ref<Storage>(s);
  }

  // Memory owned elsewhere. `deleter` (may be empty) runs when the last reference goes.
  static Ref<Storage> wrap(void* data, size_t nbytes, Device device,
                           std::function<void(void*)> deleter) {
    auto* s = new Storage(data, nbytes, device);
    s->deleter_ = std::move(deleter);
    return Ref<Storage>(s);
  }

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

  // Bumped by every in-place write; autograd compares it with the value it saved.
  std::atomic<uint64_t> version{0};

 private:
  template <class> friend class Ref;
  Storage(void* data, size_t nbytes, Device device) : data_(data), nbytes_(nbytes), device_(device) {}
  static void destroy(Storage* s) {
    if (s->inline_) {
      s->~Storage();
      ::operator delete(static_cast<void*>(s), std::align_val_t(kAlign));
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
  std::function<void(void*)> deleter_;
};

}  // namespace terra
