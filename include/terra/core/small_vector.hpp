// terra/core/small_vector.hpp: a vector that keeps up to N elements inline.
// Shapes, strides and attribute lists are short; keeping them out of the heap keeps eager
// dispatch cheap.
#pragma once

#include <algorithm>
#include <cstddef>
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

  SmallVector() = default;
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
  SmallVector(const SmallVector& o) { assign(o.begin(), o.end()); }
  SmallVector(SmallVector&& o) noexcept { move_from(std::move(o)); }
  SmallVector& operator=(const SmallVector& o) {
    if (this != &o) { clear(); assign(o.begin(), o.end()); }
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
    return a.size_ == b.size_ && std::equal(a.begin(), a.end(), b.begin());
  }
  friend bool operator!=(const SmallVector& a, const SmallVector& b) { return !(a == b); }

 private:
  template <class It>
  void assign(It first, It last) {
    reserve(static_cast<size_t>(std::distance(first, last)));
    for (; first != last; ++first) emplace_back(*first);
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
      size_ = 0;
      for (size_t i = 0; i < o.size_; ++i) emplace_back(std::move(o.ptr_[i]));
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
