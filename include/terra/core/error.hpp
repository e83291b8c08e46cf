// terra/core/error.hpp: the one exception type and the checks that raise it.
#pragma once

#include "terra/core/config.hpp"

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace terra {

// Every misuse of the library throws terra::Error. Messages start with the op's name:
// "[terra::matmul] shapes [2, 3] and [4, 5] cannot be multiplied".
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Args>
std::string cat_str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(std::string_view op, const Args&... args) {
  throw Error(cat_str("[terra::", op, "] ", args...));
}

}  // namespace detail
}  // namespace terra

// TERRA_CHECK(cond, "op", message parts...): throw terra::Error naming the op when cond fails.
#define TERRA_CHECK(cond, op, ...)                                   \
  do {                                                               \
    if (TERRA_UNLIKELY(!(cond))) ::terra::detail::fail(op, __VA_ARGS__); \
  } while (0)
