#!/usr/bin/env bash
# Build keybridge and run every test (unit, integration, fuzz-corpus replay).
#   scripts/test.sh              install deps, build in build/, run all tests
#   scripts/test.sh --sanitize   the same in build-asan/ with ASan+UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build
CMAKE_ARGS=()
if [ "${1:-}" = "--sanitize" ]; then
  BUILD=build-asan
  # Same optimisation level as the plain build (-O2 -g): identical warnings, faster tests.
  CMAKE_ARGS+=(-DKB_SANITIZE=ON)
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
scripts/deps.sh
scripts/check-banned.sh
scripts/check-format.sh
cmake -S . -B "$BUILD" "${CMAKE_ARGS[@]}"
cmake --build "$BUILD" -j "$(nproc)"
cd "$BUILD"
ctest --output-on-failure -j "$(nproc)" --timeout 1200
