# CTest packaging.version: the version is written once, in include/terra/core/version.hpp;
# everything that states it must agree:
#   CMake's project VERSION (parsed from the header), the build tree's terraConfigVersion.cmake,
#   ports/terra/vcpkg.json (the one copy JSON forces on us), conanfile.py (reads the header:
#   checked with `conan inspect` when conan is installed, and for having no literal version),
#   CHANGELOG.md (a section for it), and terra::version() compiled from the headers.
# Checkpoint headers store terra::version(); install.consumer checks a saved file.
#   cmake -DSOURCE_DIR=... -DBUILD_DIR=... -DPROJECT_VERSION=... -DCXX_COMPILER=...
#         [-DCONAN=...] -P check_version.cmake
cmake_minimum_required(VERSION 3.25)

set(errors "")
macro(expect what got)
  if(NOT "${got}" STREQUAL "${header_version}")
    list(APPEND errors "${what} says '${got}'")
  else()
    message(STATUS "${what}: ${got}")
  endif()
endmacro()

file(STRINGS "${SOURCE_DIR}/include/terra/core/version.hpp" lines
     REGEX "^#define TERRA_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+$")
set(parts "")
foreach(p MAJOR MINOR PATCH)
  foreach(l IN LISTS lines)
    if(l MATCHES "^#define TERRA_VERSION_${p} +([0-9]+)$")
      list(APPEND parts "${CMAKE_MATCH_1}")
    endif()
  endforeach()
endforeach()
list(JOIN parts "." header_version)
if(NOT header_version MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+$")
  message(FATAL_ERROR "cannot read the version from include/terra/core/version.hpp")
endif()
message(STATUS "include/terra/core/version.hpp: ${header_version}")

expect("CMake project(VERSION)" "${PROJECT_VERSION}")

if(EXISTS "${BUILD_DIR}/terraConfigVersion.cmake")
  include("${BUILD_DIR}/terraConfigVersion.cmake")
  expect("terraConfigVersion.cmake" "${PACKAGE_VERSION}")
endif()

file(READ "${SOURCE_DIR}/ports/terra/vcpkg.json" manifest)
string(JSON port_version GET "${manifest}" version)
expect("ports/terra/vcpkg.json" "${port_version}")

file(STRINGS "${SOURCE_DIR}/conanfile.py" literal REGEX "^[ \t]*version *= *['\"]")
if(literal)
  list(APPEND errors "conanfile.py writes a version of its own: ${literal}")
endif()
if(CONAN)
  set(ENV{CONAN_HOME} "${BUILD_DIR}/tests/packaging/conan_inspect_home")
  execute_process(COMMAND "${CONAN}" inspect "${SOURCE_DIR}" --format=json
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    list(APPEND errors "conan inspect failed: ${err}")
  else()
    string(JSON conan_version GET "${out}" version)
    expect("conanfile.py (conan inspect)" "${conan_version}")
  endif()
else()
  message(STATUS "conanfile.py: conan not installed, only checked for a literal version")
endif()

file(STRINGS "${SOURCE_DIR}/CHANGELOG.md" section REGEX "^## \\[${header_version}\\]")
if(NOT section)
  list(APPEND errors "CHANGELOG.md has no '## [${header_version}]' section")
endif()

# terra::version() as a user compiling with -I include sees it.
set(work "${BUILD_DIR}/tests/packaging/version_check")
file(MAKE_DIRECTORY "${work}")
file(WRITE "${work}/version.cpp" [=[
#include <cstdio>
#include <terra/core/config.hpp>
int main() { std::printf("%s", terra::version()); }
]=])
execute_process(COMMAND "${CXX_COMPILER}" -std=c++20 "-I${SOURCE_DIR}/include" "${work}/version.cpp"
                        -o "${work}/version"
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  list(APPEND errors "cannot compile terra::version(): ${err}")
else()
  execute_process(COMMAND "${work}/version" OUTPUT_VARIABLE v)
  expect("terra::version()" "${v}")
endif()

if(errors)
  list(JOIN errors "\n  " msg)
  message(FATAL_ERROR "the version is not ${header_version} everywhere:\n  ${msg}")
endif()
message(STATUS "version ${header_version} agrees everywhere")
