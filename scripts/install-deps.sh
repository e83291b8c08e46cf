#!/usr/bin/env bash
# Installs the Debian 12 packages terra's build, tests, demo and benchmarks need, and Conan 2
# from pip (for the packaging test; doxygen is for the API reference and its check).
# Skips apt entirely when everything is present; without root (and without passwordless
# sudo) it says what to install and carries on. Conan that cannot be installed only makes the
# Conan test skip.
#   install-deps.sh [--no-conan]     (--no-conan: apt packages only; the demo uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
with_conan=1
[ "${1:-}" = "--no-conan" ] && with_conan=0

packages=(build-essential cmake libgtest-dev libbenchmark-dev nlohmann-json3-dev libopenblas-dev
          libdnnl-dev ocl-icd-opencl-dev doxygen)

# Conan 2 from pip: the pip on PATH, else `python3 -m pip` (also --user), else a private
# virtual environment in .deps/conan-venv (Debian's python3 refuses system-wide pip installs,
# PEP 668). tests/packaging/conan_test.sh looks in all of these places.
install_conan() {
  [ "$with_conan" = 1 ] || return 0
  if command -v conan >/dev/null 2>&1 || [ -x "$HOME/.local/bin/conan" ] ||
     [ -x .deps/conan-venv/bin/conan ]; then
    echo "install-deps: conan present"
    return 0
  fi
  local quiet=(--quiet --disable-pip-version-check --no-input)
  if command -v pip >/dev/null 2>&1 && pip --version >/dev/null 2>&1 &&
     pip install "${quiet[@]}" conan >/dev/null 2>&1 && command -v conan >/dev/null 2>&1; then
    echo "install-deps: installed conan with pip"
    return 0
  fi
  if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    if python3 -m pip install "${quiet[@]}" conan >/dev/null 2>&1 &&
       command -v conan >/dev/null 2>&1; then
      echo "install-deps: installed conan with python3 -m pip"
      return 0
    fi
    if python3 -m pip install "${quiet[@]}" --user conan >/dev/null 2>&1 &&
       [ -x "$HOME/.local/bin/conan" ]; then
      echo "install-deps: installed conan with python3 -m pip --user"
      return 0
    fi
  fi
  if command -v python3 >/dev/null 2>&1 && python3 -m venv .deps/conan-venv >/dev/null 2>&1 &&
     .deps/conan-venv/bin/python -m pip install "${quiet[@]}" conan >/dev/null 2>&1; then
    echo "install-deps: installed conan into .deps/conan-venv"
    return 0
  fi
  rm -rf .deps/conan-venv
  echo "install-deps: could not install conan from pip; the Conan packaging test will be skipped"
  return 0
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: not a Debian system; make sure these are installed: ${packages[*]}"
  install_conan
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present (${packages[*]})"
  install_conan
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    echo "install-deps: not root; please run:"
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    echo "install-deps: continuing without them"
    install_conan
    exit 0
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
install_conan
