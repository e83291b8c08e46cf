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

/// Base class of every layer, as torch::nn::Module: it owns named parameters (tensors that
/// require grad and that optimizers update), buffers (state saved in checkpoints but not
/// trained, e.g. BatchNorm's running stats) and submodules, and walks them recursively.
/// Write a layer as `class MyImpl : public nn::Module` that registers its tensors in the
/// constructor and overrides forward(), then `TERRA_MODULE(My);` for the `nn::My` holder.
/// Modules are not copyable; share them through their holder or std::shared_ptr.
class Module : public std::enable_shared_from_this<Module> {
 public:
  /// `name` is the type name shown in errors (e.g. "Linear"), not a registration name.
  explicit Module(std::string name = "Module") : name_(std::move(name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The type name given to the constructor ("Linear", "Sequential", ...).
  const std::string& name() const { return name_; }

  /// The forward pass of modules that map one tensor to one (what Sequential calls).
  virtual Tensor forward(const Tensor& x) {
    (void)x;
    detail::fail(name_, "this module does not take a single tensor");
  }

  // ---- registration ----
  /// Stores t (detached from any graph) as parameter `name` and returns a reference to the
  /// stored handle; keep it in a member: `weight = register_parameter("weight", w);`.
  /// requires_grad = false registers a frozen parameter. Registering a name again replaces
  /// the tensor. Throws on an undefined t, an empty name or a name containing '.'.
  Tensor& register_parameter(const std::string& name, Tensor t, bool requires_grad = true) {
    TERRA_CHECK(t.defined(), name_, "parameter '", name, "' is undefined");
    t = t.detach();
    if (requires_grad) t.set_requires_grad(true);
    return slot(params_, name) = std::move(t);
  }
  /// Stores t as buffer `name`: saved by state_dict() and converted by to(), but never
  /// returned by parameters() and so never trained. Same naming rules as parameters.
  Tensor& register_buffer(const std::string& name, Tensor t) { return slot(buffers_, name) = std::move(t); }
  template <class M>
  /// Adds a submodule (a holder such as nn::Linear, or a shared_ptr to a Module) under
  /// `name` and returns it, for `fc = register_module("fc", nn::Linear(4, 2));`. Its
  /// parameters then appear as "fc.weight", ...; a repeated name replaces the old child.
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
  /// (dotted name, tensor) for every parameter, in registration order, submodules' after
  /// this module's own ("0.weight", "0.bias", "2.weight", ...); recurse = false: own only.
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const {
    std::vector<std::pair<std::string, Tensor>> out;
    collect(out, "", recurse, &Module::params_);
    return out;
  }
  /// (dotted name, tensor) for every buffer, in the order of named_parameters().
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const {
    std::vector<std::pair<std::string, Tensor>> out;
    collect(out, "", recurse, &Module::buffers_);
    return out;
  }
  /// The tensors of named_parameters(): what to hand an optimizer,
  /// `optim::Adam opt(model->parameters());`. They are handles, not copies.
  std::vector<Tensor> parameters(bool recurse = true) const { return values(named_parameters(recurse)); }
  /// The tensors of named_buffers() (handles, not copies).
  std::vector<Tensor> buffers(bool recurse = true) const { return values(named_buffers(recurse)); }
  /// Direct submodules with their registration names, in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
  /// Direct submodules, in registration order (not recursive).
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
  /// Sets training mode (on) or evaluation mode (off) on this module and all submodules; it
  /// changes what Dropout and BatchNorm do. Modules start in training mode.
  virtual void train(bool on = true) {
    training_ = on;
    for (auto& [n, c] : children_) c->train(on);
  }
  /// train(false): Dropout passes values through and BatchNorm uses its running stats.
  void eval() { train(false); }
  /// True in training mode (the default), false after eval().
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
  /// Moves every parameter and buffer to `device`, in place (handles stay valid). Call before
  /// creating optimizers. A device whose backend this program lacks throws terra::Error.
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
  /// An empty holder (`nn::Linear fc{nullptr};`), to assign later as in LibTorch; using it
  /// before that throws.
  ModuleHolder(std::nullptr_t) {}
  /// Constructs the Impl from args: nn::Linear(784, 256) calls LinearImpl(784, 256).
  template <class... Args>
    requires(!(sizeof...(Args) == 1 && (std::is_same_v<std::decay_t<Args>, ModuleHolder> && ...)))
  explicit ModuleHolder(Args&&... args) : impl_(std::make_shared<Impl>(std::forward<Args>(args)...)) {}
  /// Wraps an existing Impl (shared: both handles see the same module).
  explicit ModuleHolder(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

  /// fc->weight, fc->parameters(): the Impl's members; throws if the holder is empty.
  Impl* operator->() const { return get(); }
  /// The Impl by reference; throws if the holder is empty.
  Impl& operator*() const { return *get(); }
  /// The Impl pointer; throws terra::Error if the holder is empty.
  Impl* get() const {
    TERRA_CHECK(impl_ != nullptr, "module", "use of an empty module holder");
    return impl_.get();
  }
  /// The shared_ptr to the Impl (null if empty), e.g. to keep the module alive elsewhere.
  const std::shared_ptr<Impl>& ptr() const { return impl_; }
  /// True for a holder made from nullptr and not assigned yet.
  bool is_empty() const { return impl_ == nullptr; }
  template <class... Args>
  /// fc(x): calls Impl::forward(args...). Prefer it to fc->forward(x): it also marks the
  /// module call, so co-execution tells apart the same line of forward() run by different
  /// module instances.
  decltype(auto) operator()(Args&&... args) const {
    trace::ModuleScope scope(get());  // part of the program location of the ops inside
    return get()->forward(std::forward<Args>(args)...);
  }

 private:
  std::shared_ptr<Impl> impl_;
};

#define TERRA_MODULE(Name) using Name = ::terra::nn::ModuleHolder<Name##Impl>

}  // namespace terra::nn
