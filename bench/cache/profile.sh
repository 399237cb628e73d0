#!/usr/bin/env bash
# bench/cache/profile.sh - build bench/cache/profile.c against a build's static libraries and run
# it: keybridge-cache's request handler in-process (SigV4, dispatch, SQLite, JSON; no HTTP), for
# callgrind or perf. Not part of ctest.
#
#   bench/cache/profile.sh [BUILD_DIR] OP COUNT [SECRETS]     OP: list | get
#   PROFILER=callgrind bench/cache/profile.sh build list 20   exact instruction counts per request
#   PROFILER=perf bench/cache/profile.sh build list 2000      perf record -g into /tmp
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$(cd "$HERE/../.." && pwd)"
BUILD="$(cd "${1:-$SRC/build}" && pwd)"
shift || true
OUT="$(mktemp -d /tmp/kbprofile.XXXXXX)"
# shellcheck disable=SC2046 # pkg-config output is meant to split into flags
cc -std=c11 -O2 -g -D_GNU_SOURCE -I"$SRC/src" $(pkg-config --cflags jansson) "$HERE/profile.c" \
  "$BUILD/libkbcache.a" "$BUILD/libkb.a" \
  $(pkg-config --libs jansson sqlite3 inih libevent libevent_openssl libevent_pthreads libcurl) \
  -lssl -lcrypto -lpthread -ldl -o "$OUT/profile"
case "${PROFILER:-}" in
callgrind)
  valgrind --tool=callgrind --toggle-collect=cache_api_handle \
    --callgrind-out-file="$OUT/callgrind.out" "$OUT/profile" "$@" 2>&1 | grep -E 'refs|us of CPU'
  echo "instructions per request: divide 'I refs' by COUNT; callgrind_annotate --inclusive=yes $OUT/callgrind.out"
  ;;
perf)
  perf record -g -o "$OUT/perf.data" "$OUT/profile" "$@"
  echo "perf report -i $OUT/perf.data"
  ;;
*) "$OUT/profile" "$@" ;;
esac
