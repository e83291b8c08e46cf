#!/usr/bin/env bash
# Installs the Debian packages, builds the main demo (release preset) and runs it: a dynamic
# training program (host-decided path, host library calls, host reads) run eagerly and then
# co-executed by terra::Engine, with both step times, the engine's stats and a check that the
# results are bit-identical; then a short tour of tensors.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${TERRA_JOBS:-2}"
bash scripts/install-deps.sh --no-conan
cmake --preset release
cmake --build --preset release --target coexec_demo demo -j "$jobs"
./build/release/examples/coexec_demo
echo
echo "==== a tour of tensors (examples/demo.cpp) ===="
./build/release/examples/demo
