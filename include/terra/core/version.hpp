// terra/core/version.hpp: the version of terra. THE one place the number is written:
// CMakeLists.txt (project VERSION), conanfile.py and the install tests read it from here, and
// tests/packaging/check_version.cmake checks the vcpkg port and the packages against it.
#pragma once

/// terra's major version (an API break in 0.x is a minor-version change).
#define TERRA_VERSION_MAJOR 0
/// terra's minor version.
#define TERRA_VERSION_MINOR 1
/// terra's patch version.
#define TERRA_VERSION_PATCH 0

/// The version as one comparable integer: major * 10000 + minor * 100 + patch.
#define TERRA_VERSION \
  (TERRA_VERSION_MAJOR * 10000 + TERRA_VERSION_MINOR * 100 + TERRA_VERSION_PATCH)

#define TERRA_VERSION_STR2_(x) #x
#define TERRA_VERSION_STR_(x) TERRA_VERSION_STR2_(x)
/// The version as a string literal, "major.minor.patch".
#define TERRA_VERSION_STRING              \
  TERRA_VERSION_STR_(TERRA_VERSION_MAJOR) \
  "." TERRA_VERSION_STR_(TERRA_VERSION_MINOR) "." TERRA_VERSION_STR_(TERRA_VERSION_PATCH)

namespace terra {

/// "major.minor.patch" of the headers in use (TERRA_VERSION_STRING).
inline const char* version() { return TERRA_VERSION_STRING; }

}  // namespace terra
