#!/usr/bin/env bash
# Herd benchmark (issue 7 point 5): 1,000 keybridge-sync runs against keybridged with an HSM
# budget, all at once and then at their schedule offsets; metrics every 0.5 s; JSON + SVG in
# bench/results/. See README.md.
#   bench/herd/run.sh [BUILD_DIR] [--runs herd,offset] [--budget 200] [--burst 50] [--cache-ttl 0]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="${1:-$HERE/../../build}"
[ $# -gt 0 ] && shift
for b in keybridged keybridge-sync; do
  [ -x "$BUILD/$b" ] || { echo "build $b first (cmake --build $BUILD --target $b)" >&2; exit 2; }
done
export KB_BUILD_DIR="$(cd "$BUILD" && pwd)" KB_SOURCE_DIR="$(cd "$HERE/../.." && pwd)"
# 1,000 syncers each hold a few descriptors; keybridged holds one connection per syncer
ulimit -n 8192 2>/dev/null || true
# the whole benchmark is bounded: each run stops its syncers after 600 s at most
timeout --kill-after=10 1800 python3 "$HERE/herd.py" "$@"
TAG=""
prev=""
for a in "$@"; do
  case "$a" in --tag=*) TAG="${a#--tag=}" ;; esac
  [ "$prev" = "--tag" ] && TAG="$a"
  prev="$a"
done
python3 "$HERE/plot.py" "$KB_SOURCE_DIR/bench/results/herd$TAG.json" \
  "$KB_SOURCE_DIR/bench/results/herd$TAG.svg"
