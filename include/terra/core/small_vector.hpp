// terra/core/small_vector.hpp: a vector that keeps up to N elements inline.
// Shapes, strides and attribute lists are short; keeping them out of the heap keeps eager
// dispatch cheap.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace terra {

template <class T, size_t N>
class SmallVector {
 public:
  using value_type = T;
  using iterator = T*;
  using const_iterator = const T*;

  SmallVector() noexcept {}  // user-provided: value-initialization must not zero the inline buffer
  SmallVector(std::initializer_list<T> init) { assign(init.begin(), init.end()); }
  explicit SmallVector(size_t n, const T& v = T()) {
    reserve(n);
    for (size_t i = 0; i < n; ++i) push_back(v);
  }
  template <class It, class = decltype(*std::declval<It>())>
  SmallVector(It first, It last) { assign(first, last); }
  template <class C, class = decltype(std::declval<const C&>().begin()),
            class = std::enable_if_t<!std::is_same_v<std::decay_t<C>, SmallVector>>>
  SmallVector(const C& c) { assign(c.begin(), c.end()); }
  SmallVector(const SmallVector& o) { copy_from(o); }
  SmallVector(SmallVector&& o) noexcept { move_from(std::move(o)); }
  SmallVector& operator=(const SmallVector& o) {
    if (this != &o) { clear(); copy_from(o); }
    return *this;
  }
  SmallVector& operator=(SmallVector&& o) noexcept {
    if (this != &o) { destroy(); move_from(std::move(o)); }
    return *this;
  }
  ~SmallVector() { destroy(); }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  T* begin() { return ptr_; }
  T* end() { return ptr_ + size_; }
  const T* begin() const { return ptr_; }
  const T* end() const { return ptr_ + size_; }
  T& operator[](size_t i) { return ptr_[i]; }
  const T& operator[](size_t i) const { return ptr_[i]; }
  T& back() { return ptr_[size_ - 1]; }
  const T& back() const { return ptr_[size_ - 1]; }
  T& front() { return ptr_[0]; }
  const T& front() const { return ptr_[0]; }

  void reserve(size_t n) {
    if (n <= cap_) return;
    T* p = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(alignof(T))));
    for (size_t i = 0; i < size_; ++i) {
      new (p + i) T(std::move(ptr_[i]));
      ptr_[i].~T();
    }
    release_heap();
    ptr_ = p;
    cap_ = n;
  }
  void push_back(const T& v) { emplace_back(v); }
  void push_back(T&& v) { emplace_back(std::move(v)); }
  template <class... A>
  T& emplace_back(A&&... a) {
    if (size_ == cap_) reserve(cap_ * 2);
    new (ptr_ + size_) T(std::forward<A>(a)...);
    return ptr_[size_++];
  }
  void pop_back() { ptr_[--size_].~T(); }
  void clear() {
    if constexpr (!std::is_trivially_destructible_v<T>)
      for (size_t i = 0; i < size_; ++i) ptr_[i].~T();
    size_ = 0;
  }
  void resize(size_t n, const T& v = T()) {
    reserve(n);
    while (size_ > n) pop_back();
    while (size_ < n) push_back(v);
  }
  T* insert(T* pos, const T& v) {
    size_t i = pos - ptr_;
    push_back(v);
    std::rotate(ptr_ + i, ptr_ + size_ - 1, ptr_ + size_);
    return ptr_ + i;
  }
  T* erase(T* pos) {
    std::move(pos + 1, end(), pos);
    pop_back();
    return pos;
  }

  friend bool operator==(const SmallVector& a, const SmallVector& b) {
    if (a.size_ != b.size_) return false;
    // An inline loop: shapes have a handful of elements, too few for a call to memcmp.
    for (size_t i = 0; i < a.size_; ++i)
      if (!(a.ptr_[i] == b.ptr_[i])) return false;
    return true;
  }
  friend bool operator!=(const SmallVector& a, const SmallVector& b) { return !(a == b); }

 private:
  static constexpr bool kTrivial = std::is_trivially_copyable_v<T>;
  // Small trivially copyable contents (shapes, strides) are copied as the whole inline buffer:
  // a fixed-size copy the compiler inlines, instead of a call to memmove for a few elements.
  static constexpr bool kCopyWhole = kTrivial && N * sizeof(T) <= 128;
  // The whole-buffer copy reads the unused tail too: bytes of an unsigned char array, which
  // memcpy may copy whatever they hold, but GCC's flow analysis warns about them.
  static void copy_inline(void* to, const void* from) {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
    std::memcpy(to, from, N * sizeof(T));
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
  }

  // *this is empty.
  void copy_from(const SmallVector& o) {
    if constexpr (kCopyWhole) {
      if (o.size_ <= N && ptr_ == inline_ptr()) {
        copy_inline(storage_, o.ptr_);
        size_ = o.size_;
        return;
      }
    }
    assign(o.begin(), o.end());
  }

  template <class It>
  void assign(It first, It last) {
    size_t n = static_cast<size_t>(std::distance(first, last));
    reserve(size_ + n);
    if constexpr (kTrivial && std::is_pointer_v<It> &&
                  std::is_same_v<std::remove_cv_t<std::remove_pointer_t<It>>, T>) {
      if (n) std::memcpy(static_cast<void*>(ptr_ + size_), first, n * sizeof(T));
      size_ += n;
    } else {
      for (; first != last; ++first) new (ptr_ + size_++) T(*first);
    }
  }
  void move_from(SmallVector&& o) {
    if (o.ptr_ != o.inline_ptr()) {  // steal the heap block
      ptr_ = o.ptr_;
      cap_ = o.cap_;
      size_ = o.size_;
      o.ptr_ = o.inline_ptr();
      o.cap_ = N;
      o.size_ = 0;
    } else {
      ptr_ = inline_ptr();
      cap_ = N;
      size_ = o.size_;
      if constexpr (kCopyWhole) {
        copy_inline(storage_, o.storage_);
      } else if constexpr (kTrivial) {
        if (size_) std::memcpy(static_cast<void*>(ptr_), o.ptr_, size_ * sizeof(T));
      } else {
        for (size_t i = 0; i < size_; ++i) new (ptr_ + i) T(std::move(o.ptr_[i]));
      }
      o.clear();
    }
  }
  void destroy() {
    clear();
    release_heap();
    ptr_ = inline_ptr();
    cap_ = N;
  }
  void release_heap() {
    if (ptr_ != inline_ptr()) ::operator delete(ptr_, std::align_val_t(alignof(T)));
  }
  T* inline_ptr() { return reinterpret_cast<T*>(storage_); }

  alignas(T) unsigned char storage_[N * sizeof(T)];
  T* ptr_ = inline_ptr();
  size_t size_ = 0;
  size_t cap_ = N;
};

}  // namespace terra
