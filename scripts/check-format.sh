#!/usr/bin/env bash
# Checks clang-format (the root .clang-format) on the C++ files changed since a git revision
# (default: HEAD, i.e. the uncommitted changes), or on the files given after `--`.
#   bash scripts/check-format.sh [REV] [-- FILE...]
set -euo pipefail
cd "$(dirname "$0")/.."

rev="HEAD"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then rev="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then
  shift
  files=("$@")
else
  mapfile -t files < <({ git diff --name-only --diff-filter=d "$rev" -- ; \
                         git ls-files --others --exclude-standard; } |
                       grep -E '\.(hpp|cpp|h|cc|cu|cuh)$' | sort -u || true)
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "check-format: no C++ files to check"
  exit 0
fi
clang-format --dry-run --Werror "${files[@]}"
echo "check-format: ${#files[@]} files formatted"
