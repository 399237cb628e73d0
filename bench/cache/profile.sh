#!/usr/bin/env bash
# bench/cache/profile.sh - run bench/cache/profile.c (a program of the build: BUILD/bench/cache/
# profile): keybridge-cache's request handler in-process (SigV4, dispatch, SQLite, JSON; no
# HTTP), alone or under callgrind or perf. Not part of ctest.
#
#   bench/cache/profile.sh [BUILD_DIR] OP COUNT [SECRETS]     OP: list | get
#   PROFILER=callgrind bench/cache/profile.sh build list 20   exact instruction counts per request
#   PROFILER=perf bench/cache/profile.sh build list 2000      perf record -g
set -euo pipefail
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="$(cd "${1:-$SRC/build}" && pwd)"
shift || true
# shellcheck source=bench/lib/harness.sh
. "$SRC/bench/lib/harness.sh"
PROFILE="$(hb_bench_bin "$BUILD" cache profile)"
OUT="$(mktemp -d /tmp/kbprofile.XXXXXX)"
case "${PROFILER:-}" in
callgrind)
  valgrind --tool=callgrind --toggle-collect=cache_api_handle \
    --callgrind-out-file="$OUT/callgrind.out" "$PROFILE" "$@" 2>&1 | grep -E 'refs|us of CPU'
  echo "instructions per request: 'I refs' / COUNT; callgrind_annotate --inclusive=yes $OUT/callgrind.out"
  ;;
perf)
  perf record -g -o "$OUT/perf.data" "$PROFILE" "$@"
  echo "perf report -i $OUT/perf.data"
  ;;
*) "$PROFILE" "$@" ;;
esac
