#!/usr/bin/env bash
# scan-build.sh - clang's static analyzer (scan-build, Debian clang-tools) over the whole tree:
# the libraries, the programs, the unit tests and the fuzz targets (replay build), from scratch in
# build-scan/ (Debug, -O0; the analyzer sees only what it compiles, so nothing is reused). Every
# default checker is on. Fails on any finding; the HTML reports are kept in build-scan/report/
# (open index.html), and each finding is printed as file:line: warning.
#
# A false positive is fixed by restructuring the code so the analyzer can follow it, or, where
# that would make the code worse, by a minimal annotation with a comment saying why (e.g. an
# assert() of the invariant, or #ifdef __clang_analyzer__ around the smallest possible hint).
# Checkers are never disabled.
#
#   scripts/scan-build.sh
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${SCAN_BUILD_DIR:-$SRC/build-scan}"
SCAN="$(command -v scan-build-14 || command -v scan-build || true)"
if [ -z "$SCAN" ]; then
  echo "scan-build.sh: scan-build is required (apt-get install clang-tools-14)" >&2
  exit 2
fi
rm -rf "$BUILD"
mkdir -p "$BUILD/report"
"$SCAN" cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug >/dev/null
# --status-bugs: exit 1 if anything was found. The real compiler behind the analyzer is the
# default cc (gcc), so the build itself is the ordinary -Werror Debug build.
set +e
"$SCAN" -o "$BUILD/report" --status-bugs cmake --build "$BUILD" -j "$(nproc)" \
  >"$BUILD/scan-build.log" 2>&1
rc=$?
set -e
grep -E '^/[^ ]+:[0-9]+:[0-9]+: warning:' "$BUILD/scan-build.log" | sort -u || true
n=$(grep -cE '^/[^ ]+:[0-9]+:[0-9]+: warning:' "$BUILD/scan-build.log" || true)
if [ "$rc" -ne 0 ]; then
  grep -E 'error:|Error ' "$BUILD/scan-build.log" | head -n 20 >&2 || true
  echo "scan-build.sh: ${n:-0} finding(s) or a build error (log: $BUILD/scan-build.log," \
    "reports: $BUILD/report)" >&2
  exit 1
fi
echo "scan-build: 0 findings"
