#!/usr/bin/env bash
# Installs the Debian packages, then builds and runs the whole test suite: an optimized build
# (with the install, packaging and docs tests), an AddressSanitizer+UBSan build, and a
# ThreadSanitizer build of the co-execution tests (graph runner vs host thread). Any failure
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

echo "==== tsan: the co-execution tests under ThreadSanitizer ===="
start=$SECONDS
cmake --preset tsan
cmake --build --preset tsan --target test_exec -j "$jobs"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build/tsan -R "^(CoExec|GraphPasses)\." -j "$jobs" --output-on-failure
echo "==== tsan: passed in $((SECONDS - start)) s ===="
