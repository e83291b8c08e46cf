#!/usr/bin/env bash
# CTest packaging.conan: `conan create` of terra's recipe (conanfile.py + test_package/) in a
# private CONAN_HOME, offline. nlohmann_json comes from the system (a stand-in recipe in
# tests/packaging/conan_system/ with the system header's version). With nvcc on PATH (or
# TERRA_CONAN_CUDA=1) the cuda=True variant is created too.
#   conan_test.sh SOURCE_DIR WORK_DIR [cuda]
# Exit 77 (CTest SKIP_RETURN_CODE) when conan or the system nlohmann_json is missing.
set -euo pipefail
src="$1"
work="$2"
with_cuda="${3:-}"

# Where scripts/install-deps.sh may have put conan: PATH, pip --user, a private venv.
conan=""
for c in "$(command -v conan 2>/dev/null || true)" "$HOME/.local/bin/conan" \
         "$src/.deps/conan-venv/bin/conan"; do
  if [ -n "$c" ] && [ -x "$c" ]; then conan="$c"; break; fi
done
if [ -z "$conan" ]; then
  echo "SKIP: conan is not installed (pip install conan; scripts/install-deps.sh does it)"
  exit 77
fi
conan() { "$conan" "$@"; }
json_h=""
for d in /usr/include /usr/local/include; do
  [ -f "$d/nlohmann/json.hpp" ] && json_h="$d/nlohmann" && break
done
if [ -z "$json_h" ]; then
  echo "SKIP: no system nlohmann_json (Debian: nlohmann-json3-dev) to stand in for ConanCenter's"
  exit 77
fi
json_version=""
for part in MAJOR MINOR PATCH; do
  v=$(grep -rhoE "^#define NLOHMANN_JSON_VERSION_${part} +[0-9]+" "$json_h" | head -1 |
      awk '{print $3}')
  json_version="${json_version:+$json_version.}${v}"
done

export CONAN_HOME="$work/conan_home"
rm -rf "$work"
mkdir -p "$work"
conan --version
conan profile detect --force >/dev/null 2>&1
conan remote remove "*" >/dev/null 2>&1 || true   # offline: only the local cache

# test_package is copied so that its build folder stays out of the source tree. Debug: the
# package is the same for every build type, and -O0 compiles terra.hpp fastest.
cp -r "$src/test_package" "$work/test_package"
common=(-s compiler.cppstd=20 -s build_type=Debug --build=missing -nr -tf "$work/test_package")
conan export "$src/tests/packaging/conan_system/nlohmann_json" --version "$json_version"
echo "==== conan create terra (cpu) ===="
conan create "$src" "${common[@]}"
if [ "$with_cuda" = "cuda" ]; then
  echo "==== conan create terra -o terra/*:cuda=True ===="
  conan create "$src" "${common[@]}" -o "terra/*:cuda=True"
fi
echo "conan_test: passed"
