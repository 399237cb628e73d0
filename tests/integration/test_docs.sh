#!/usr/bin/env bash
# docs/configuration.md must match what the programs say about their own configuration.
set -euo pipefail
B=${KB_BUILD_DIR:?}; S=${KB_SOURCE_DIR:?}
if ! diff -u "$S/docs/configuration.md" <("$S/scripts/gen-docs.sh" "$B" --stdout); then
  echo "FAIL: docs/configuration.md is stale: run scripts/gen-docs.sh"
  exit 1
fi
echo "docs: 1 passed, 0 failed"
