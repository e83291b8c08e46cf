#!/usr/bin/env bash
# Installs the Debian packages, then builds and runs the whole test suite twice: an optimized
# build (with the install/consumer tests), and an AddressSanitizer+UBSan build. Any failure
# fails the script. TERRA_JOBS overrides the parallelism (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${TERRA_JOBS:-2}"
bash scripts/install-deps.sh

for preset in release asan; do
  echo "==== ${preset}: configure, build, test ===="
  start=$SECONDS
  cmake --preset "$preset"
  cmake --build --preset "$preset" -j "$jobs"
  ctest --preset "$preset" -j "$jobs"
  echo "==== ${preset}: passed in $((SECONDS - start)) s ===="
done
