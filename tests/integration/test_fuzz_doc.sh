#!/usr/bin/env bash
# test_fuzz_doc.sh - docs/internals/fuzzing.md is what scripts/gen-fuzz-doc.sh makes of
# tests/fuzz/ today: every fuzz target listed, with its last campaign figures.
set -euo pipefail
cd "${KB_SOURCE_DIR:-$(dirname "$0")/../..}"
scripts/gen-fuzz-doc.sh --check
