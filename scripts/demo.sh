#!/usr/bin/env bash
# Installs the Debian packages, builds the main demo (release preset) and runs it: a short tour
# of tensors, then training the small CNN of examples/cnn.cpp to its stated loss.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${TERRA_JOBS:-2}"
bash scripts/install-deps.sh --no-conan
cmake --preset release
cmake --build --preset release --target demo cnn -j "$jobs"
./build/release/examples/demo
echo
echo "==== training examples/cnn.cpp ===="
./build/release/examples/cnn
