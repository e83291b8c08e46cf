// terra/nn/module.hpp: nn::Module (registered parameters, buffers and submodules) and the
// ModuleHolder that gives modules LibTorch's value-like handles (`nn::Linear fc(784, 256);
// fc->forward(x)` or `fc(x)`).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "terra/autograd/engine.hpp"

namespace terra::nn {

class Module : public std::enable_shared_from_this<Module> {
 public:
  explicit Module(std::string name = "Module") : name_(std::move(name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& name() const { return name_; }

  /// The forward pass of modules that map one tensor to one (what Sequential calls).
  virtual Tensor forward(const Tensor& x) {
    (void)x;
    detail::fail(name_, "this module does not take a single tensor");
  }

  // ---- registration ----
  Tensor& register_parameter(const std::string& name, Tensor t, bool requires_grad = true) {
    TERRA_CHECK(t.defined(), name_, "parameter '", name, "' is undefined");
    t = t.detach();
    if (requires_grad) t.set_requires_grad(true);
    return slot(params_, name) = std::move(t);
  }
  Tensor& register_buffer(const std::string& name, Tensor t) { return slot(buffers_, name) = std::move(t); }
  template <class M>
  M register_module(const std::string& name, M holder) {
    auto ptr = as_module(holder);
    TERRA_CHECK(ptr != nullptr, name_, "submodule '", name, "' is null");
    for (auto& [n, c] : children_) {
      if (n == name) {
        c = ptr;
        return holder;
      }
    }
    children_.emplace_back(name, ptr);
    return holder;
  }

  // ---- traversal (registration order; names joined with '.') ----
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const {
    std::vector<std::pair<std::string, Tensor>> out;
    collect(out, "", recurse, &Module::params_);
    return out;
  }
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const {
    std::vector<std::pair<std::string, Tensor>> out;
    collect(out, "", recurse, &Module::buffers_);
    return out;
  }
  std::vector<Tensor> parameters(bool recurse = true) const { return values(named_parameters(recurse)); }
  std::vector<Tensor> buffers(bool recurse = true) const { return values(named_buffers(recurse)); }
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
  std::vector<std::shared_ptr<Module>> children() const {
    std::vector<std::shared_ptr<Module>> out;
    for (auto& [n, c] : children_) out.push_back(c);
    return out;
  }

  /// Parameters and buffers by dotted name.
  std::vector<std::pair<std::string, Tensor>> state_dict() const {
    auto out = named_parameters();
    auto b = named_buffers();
    out.insert(out.end(), b.begin(), b.end());
    return out;
  }
  /// Copy values into this module's tensors (in place: addresses and optimizers stay valid).
  /// strict: every key must match, with equal shapes.
  void load_state_dict(const std::vector<std::pair<std::string, Tensor>>& dict, bool strict = true) {
    auto mine = state_dict();
    NoGradGuard no_grad;
    for (auto& [name, t] : mine) {
      auto it = std::find_if(dict.begin(), dict.end(), [&](auto& kv) { return kv.first == name; });
      if (it == dict.end()) {
        TERRA_CHECK(!strict, "load_state_dict", "missing key '", name, "'");
        continue;
      }
      TERRA_CHECK(it->second.shape() == t.shape(), "load_state_dict", "'", name, "' has shape ",
                  it->second.shape(), " but the module expects ", t.shape());
      Tensor dst = t;
      dst.copy_(it->second);
    }
    if (strict)
      for (auto& [name, t] : dict) {
        bool known = std::any_of(mine.begin(), mine.end(), [&](auto& kv) { return kv.first == name; });
        TERRA_CHECK(known, "load_state_dict", "unexpected key '", name, "'");
      }
  }

  // ---- modes and placement ----
  virtual void train(bool on = true) {
    training_ = on;
    for (auto& [n, c] : children_) c->train(on);
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Zero (in place) or drop every parameter's gradient.
  void zero_grad(bool set_to_none = false) {
    NoGradGuard no_grad;
    for (Tensor p : parameters()) {
      if (!p.grad().defined()) continue;
      if (set_to_none) p.mutable_grad() = Tensor();
      else p.mutable_grad().zero_();
    }
  }

  /// Convert every floating parameter and buffer to dtype, in place: handles held elsewhere
  /// (members, optimizers) see the change. Call before creating optimizers.
  void to(DType dtype) { convert([&](const Tensor& t) { return is_floating(t.dtype()) ? t.to(dtype) : t; }); }
  void to(Device device) { convert([&](const Tensor& t) { return t.to(device); }); }

 private:
  using Slots = std::vector<std::pair<std::string, Tensor>>;

  Tensor& slot(Slots& slots, const std::string& name) {
    TERRA_CHECK(!name.empty() && name.find('.') == std::string::npos, name_, "invalid name '", name, "'");
    for (auto& [n, t] : slots)
      if (n == name) return t;
    slots.emplace_back(name, Tensor());
    return slots.back().second;
  }
  void collect(Slots& out, const std::string& prefix, bool recurse, Slots Module::*which) const {
    for (auto& [n, t] : this->*which) out.emplace_back(prefix + n, t);
    if (!recurse) return;
    for (auto& [n, c] : children_) c->collect(out, prefix + n + ".", true, which);
  }
  static std::vector<Tensor> values(const Slots& s) {
    std::vector<Tensor> v;
    for (auto& [n, t] : s) v.push_back(t);
    return v;
  }
  template <class F>
  void convert(const F& f) {
    NoGradGuard no_grad;
    for (Slots* s : {&params_, &buffers_})
      for (auto& [n, t] : *s) {
        Tensor c = f(t);
        if (c.is_same(t)) continue;
        bool rg = t.requires_grad();
        *t.unsafe_impl() = *c.detach().unsafe_impl();  // same handle, new data
        if (rg) t.set_requires_grad(true);
      }
    for (auto& [n, c] : children_) c->convert(f);
  }
  template <class M>
  static std::shared_ptr<Module> as_module(const M& m) {
    if constexpr (requires { m.ptr(); }) return m.ptr();
    else return std::static_pointer_cast<Module>(m);
  }

  std::string name_;
  bool training_ = true;
  Slots params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

/// A value-like handle to a module implementation, as LibTorch's ModuleHolder:
/// `nn::Linear fc(4, 2)` makes one; `nn::Linear fc{nullptr}` is empty until assigned.
template <class Impl>
class ModuleHolder {
 public:
  ModuleHolder(std::nullptr_t) {}
  template <class... Args>
    requires(!(sizeof...(Args) == 1 && (std::is_same_v<std::decay_t<Args>, ModuleHolder> && ...)))
  explicit ModuleHolder(Args&&... args) : impl_(std::make_shared<Impl>(std::forward<Args>(args)...)) {}
  explicit ModuleHolder(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

  Impl* operator->() const { return get(); }
  Impl& operator*() const { return *get(); }
  Impl* get() const {
    TERRA_CHECK(impl_ != nullptr, "module", "use of an empty module holder");
    return impl_.get();
  }
  const std::shared_ptr<Impl>& ptr() const { return impl_; }
  bool is_empty() const { return impl_ == nullptr; }
  template <class... Args>
  decltype(auto) operator()(Args&&... args) const {
    trace::ModuleScope scope(get());  // part of the program location of the ops inside
    return get()->forward(std::forward<Args>(args)...);
  }

 private:
  std::shared_ptr<Impl> impl_;
};

#define TERRA_MODULE(Name) using Name = ::terra::nn::ModuleHolder<Name##Impl>

}  // namespace terra::nn
