# CTest packaging.vcpkg_port: runs ports/terra/portfile.cmake with plain CMake, then builds the
# snippets of ports/terra/usage against the result. vcpkg itself is not available, so its
# helpers are replaced here by small stand-ins that do what vcpkg does for this port:
#   vcpkg_check_features       FEATURES pairs -> -D<option>=ON/OFF
#   vcpkg_cmake_configure      one Release configure (the port sets VCPKG_BUILD_TYPE release)
#   vcpkg_cmake_install        cmake --install into CURRENT_PACKAGES_DIR
#   vcpkg_cmake_config_fixup   move CONFIG_PATH to share/<PACKAGE_NAME> (no path rewriting: the
#                              test fails instead if an absolute path is left)
#   vcpkg_install_copyright    FILE_LIST -> share/<port>/copyright
# then checks a subset of vcpkg's post-build checks (no lib/ or debug/ for a header-only port,
# copyright and usage present, no absolute paths in the CMake files).
#   cmake -DSOURCE_DIR=... -DWORK_DIR=... -DGENERATOR=... -DCXX_COMPILER=... -DTERRA_VERSION=...
#         [-DFEATURES=cuda,cudnn] [-DWITH_CUDA=ON] -P vcpkg_port_test.cmake
cmake_minimum_required(VERSION 3.25)
string(REPLACE "," ";" FEATURES "${FEATURES}")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc COMMAND_ECHO STDOUT)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}")
  endif()
endfunction()

set(port_dir "${SOURCE_DIR}/ports/terra")
file(READ "${port_dir}/vcpkg.json" manifest)
string(JSON PORT GET "${manifest}" name)
string(JSON VERSION GET "${manifest}" version)
if(NOT VERSION STREQUAL TERRA_VERSION)
  message(FATAL_ERROR "ports/terra/vcpkg.json has version ${VERSION}, terra is ${TERRA_VERSION}")
endif()
foreach(f IN LISTS FEATURES)
  string(JSON _ ERROR_VARIABLE err GET "${manifest}" features ${f})
  if(err)
    message(FATAL_ERROR "feature '${f}' is not declared in vcpkg.json")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
set(TARGET_TRIPLET x64-linux)
set(CURRENT_PACKAGES_DIR "${WORK_DIR}/packages/${PORT}_${TARGET_TRIPLET}")
set(CURRENT_BUILDTREES_DIR "${WORK_DIR}/buildtrees/${PORT}")
set(_vcpkg_build_dir "")

function(vcpkg_check_features)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "OUT_FEATURE_OPTIONS" "FEATURES;INVERTED_FEATURES")
  set(out "")
  set(pairs ${arg_FEATURES})
  while(pairs)
    list(POP_FRONT pairs feature option)
    if(feature IN_LIST FEATURES)
      list(APPEND out "-D${option}=ON")
    else()
      list(APPEND out "-D${option}=OFF")
    endif()
  endwhile()
  set(${arg_OUT_FEATURE_OPTIONS} "${out}" PARENT_SCOPE)
endfunction()

function(vcpkg_cmake_configure)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "SOURCE_PATH" "OPTIONS;OPTIONS_RELEASE;OPTIONS_DEBUG")
  if(NOT VCPKG_BUILD_TYPE STREQUAL "release")
    message(FATAL_ERROR "a header-only port sets VCPKG_BUILD_TYPE release")
  endif()
  set(build "${CURRENT_BUILDTREES_DIR}/${TARGET_TRIPLET}-rel")
  run(${CMAKE_COMMAND} -S "${arg_SOURCE_PATH}" -B "${build}" -G "${GENERATOR}"
      "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DCMAKE_BUILD_TYPE=Release
      "-DCMAKE_INSTALL_PREFIX=${CURRENT_PACKAGES_DIR}" -DCMAKE_INSTALL_LIBDIR:STRING=lib
      -DCMAKE_INSTALL_BINDIR:STRING=bin -DFETCHCONTENT_FULLY_DISCONNECTED=ON
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF ${arg_OPTIONS} ${arg_OPTIONS_RELEASE})
  set(_vcpkg_build_dir "${build}" PARENT_SCOPE)
endfunction()

macro(vcpkg_cmake_install)
  run(${CMAKE_COMMAND} --install "${_vcpkg_build_dir}")
endmacro()

function(vcpkg_cmake_config_fixup)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "PACKAGE_NAME;CONFIG_PATH" "")
  if(NOT arg_PACKAGE_NAME)
    set(arg_PACKAGE_NAME "${PORT}")
  endif()
  if(NOT arg_CONFIG_PATH)
    set(arg_CONFIG_PATH "share/${arg_PACKAGE_NAME}")
  endif()
  set(dest "${CURRENT_PACKAGES_DIR}/share/${arg_PACKAGE_NAME}")
  if(NOT "${CURRENT_PACKAGES_DIR}/${arg_CONFIG_PATH}" STREQUAL dest)
    file(GLOB files "${CURRENT_PACKAGES_DIR}/${arg_CONFIG_PATH}/*")
    file(MAKE_DIRECTORY "${dest}")
    file(COPY ${files} DESTINATION "${dest}")
    file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/${arg_CONFIG_PATH}")
  endif()
  if(NOT EXISTS "${dest}/${arg_PACKAGE_NAME}Config.cmake")
    message(FATAL_ERROR "config fixup: no ${arg_PACKAGE_NAME}Config.cmake in share/${arg_PACKAGE_NAME}")
  endif()
endfunction()

function(vcpkg_install_copyright)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "" "FILE_LIST")
  set(text "")
  foreach(f IN LISTS arg_FILE_LIST)
    file(READ "${f}" t)
    string(APPEND text "${t}")
  endforeach()
  file(WRITE "${CURRENT_PACKAGES_DIR}/share/${PORT}/copyright" "${text}")
endfunction()

# ---- the port itself ----
include("${port_dir}/portfile.cmake")

# ---- post-build checks (a subset of vcpkg's) ----
set(pkg "${CURRENT_PACKAGES_DIR}")
foreach(f share/terra/copyright share/terra/usage share/terra/terraConfig.cmake
          share/terra/terraConfigVersion.cmake include/terra/terra.hpp
          include/terra/core/version.hpp)
  if(NOT EXISTS "${pkg}/${f}")
    message(FATAL_ERROR "the port did not install ${f}")
  endif()
endforeach()
foreach(d lib debug bin share/doc)
  if(EXISTS "${pkg}/${d}")
    message(FATAL_ERROR "a header-only port must not install ${d}/")
  endif()
endforeach()
file(GLOB cmake_files "${pkg}/share/terra/*.cmake")
foreach(f IN LISTS cmake_files)
  file(READ "${f}" text)
  foreach(p "${pkg}" "${SOURCE_DIR}" "${WORK_DIR}")
    string(FIND "${text}" "${p}" at)
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "${f} holds the absolute path ${p}")
    endif()
  endforeach()
endforeach()
include("${pkg}/share/terra/terraConfigVersion.cmake")
if(NOT PACKAGE_VERSION STREQUAL VERSION)
  message(FATAL_ERROR "the port installed terra ${PACKAGE_VERSION}, vcpkg.json says ${VERSION}")
endif()

# ---- build the usage snippets against the installed port ----
# Each block of `usage` is a find_package line and a target_link_libraries line for `main`.
file(STRINGS "${port_dir}/usage" usage_lines REGEX "^  (find_package|target_link_libraries)\\(")
list(LENGTH usage_lines n)
if(n LESS 2)
  message(FATAL_ERROR "ports/terra/usage has no find_package/target_link_libraries snippet")
endif()
set(i 0)
while(usage_lines)
  list(POP_FRONT usage_lines find_line link_line)
  string(STRIP "${find_line}" find_line)
  string(STRIP "${link_line}" link_line)
  set(kind cpu)
  if(find_line MATCHES "cuda")
    set(kind cuda)
    if(NOT WITH_CUDA)
      message(STATUS "usage snippet '${find_line}': skipped (no CUDA toolkit)")
      continue()
    endif()
  endif()
  set(dir "${WORK_DIR}/usage${i}")
  math(EXPR i "${i} + 1")
  file(MAKE_DIRECTORY "${dir}")
  file(WRITE "${dir}/CMakeLists.txt" "cmake_minimum_required(VERSION 3.25)
project(usage LANGUAGES CXX)
add_executable(main main.cpp)
${find_line}
${link_line}
")
  if(kind STREQUAL "cpu")
    file(WRITE "${dir}/main.cpp" [=[
#include <cstdio>
#include <terra/terra.hpp>
int main() {
  auto x = terra::ones({2, 3}).sum();
  std::printf("terra %s from the vcpkg port: %g\n", terra::version(), x.item<double>());
  return x.item<double>() == 6.0 ? 0 : 1;
}
]=])
  else()
    file(WRITE "${dir}/main.cpp" [=[
#include <cuda_runtime_api.h>
#include <terra/core/config.hpp>
#ifndef TERRA_WITH_CUDA
#error "terra::cuda must define TERRA_WITH_CUDA"
#endif
int main() { int v = 0; cudaRuntimeGetVersion(&v); return v > 0 ? 0 : 1; }
]=])
  endif()
  message(STATUS "usage snippet: ${find_line} / ${link_line}")
  run(${CMAKE_COMMAND} -S "${dir}" -B "${dir}/build" -G "${GENERATOR}"
      "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_PREFIX_PATH=${pkg}"
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  run(${CMAKE_COMMAND} --build "${dir}/build")
  run("${dir}/build/main")
endwhile()
message(STATUS "vcpkg port: installed and used from ${pkg}")
