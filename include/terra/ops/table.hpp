// terra/ops/table.hpp: the op table, generated from ops.def once every family's rules are
// declared. Include after all ops/ family headers.
#pragma once

#include "terra/ops/op.hpp"

namespace terra {

namespace detail {
template <class T>
constexpr VjpFn vjp_of() {
  if constexpr (requires { &T::vjp; }) return &T::vjp;
  else return nullptr;
}
template <class T>
constexpr uint8_t saves_of() {
  if constexpr (requires { T::saves; }) return T::saves;
  else return kSaveAll;
}
template <class T>
constexpr uint8_t unsaved_outputs_of() {
  if constexpr (requires { T::unsaved_outputs; }) return T::unsaved_outputs;
  else return 0;
}
template <class T>
constexpr bool infer_reads_scalars_of() {
  if constexpr (requires { T::infer_reads_scalars; }) return T::infer_reads_scalars;
  else return false;
}
inline constexpr OpInfo kOpTable[] = {
#define X(Type, name, kind, arity)                                                          \
  {#name, OpKind::kind, arity, &op::Type::infer, vjp_of<op::Type>(), saves_of<op::Type>(), \
   infer_reads_scalars_of<op::Type>(), unsaved_outputs_of<op::Type>()},
#include "terra/ops/ops.def"
#undef X
};
static_assert(sizeof(kOpTable) / sizeof(kOpTable[0]) == kNumOps);
}  // namespace detail

inline const OpInfo& op_info(Op op) { return detail::kOpTable[static_cast<int>(op)]; }

}  // namespace terra
