#!/usr/bin/env bash
# Reject calls to functions that are easy to misuse (unbounded copies, non-reentrant parsing,
# unchecked conversions). Use snprintf, kb_dbuf, kb_parse_int64 and bounded readers instead.
set -euo pipefail
cd "$(dirname "$0")/.."
banned='strcpy|strcat|strncpy|strncat|sprintf|vsprintf|gets|strtok|atoi|atol|atoll|atof|alloca|tmpnam|tempnam|mktemp|rand|srand|getpass|system|popen'
hits=$(grep -RnE "(^|[^A-Za-z0-9_])(${banned})[[:space:]]*\(" src tests --include='*.c' --include='*.h' \
       | grep -vE '^\S+:[0-9]+:\s*(/\*|\*|//)' || true)
if [ -n "$hits" ]; then
  echo "banned functions used:"
  echo "$hits"
  exit 1
fi
echo "banned-function check: ok"
