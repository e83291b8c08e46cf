#!/usr/bin/env bash
# Installs the Debian 12 packages terra's build, tests, demo and benchmarks need.
# Skips apt entirely when everything is present; without root (and without passwordless
# sudo) it says what to install and carries on.
set -euo pipefail

packages=(build-essential cmake libgtest-dev libbenchmark-dev nlohmann-json3-dev libopenblas-dev)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps: not a Debian system; make sure these are installed: ${packages[*]}"
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
    exit 0
  fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
