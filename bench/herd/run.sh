#!/usr/bin/env bash
# Herd benchmark (issue 7 point 5): 1,000 keybridge-sync runs against keybridged with an HSM
# budget, all at once and then at their schedule offsets, with the data-key cache off and then
# on; metrics every 0.5 s. Writes bench/results/herd-cache-{off,on}.{csv,json} and draws both
# into bench/results/herd.png (plot.py, matplotlib). See README.md.
#   bench/herd/run.sh [BUILD_DIR] [herd.py options: --runs herd,offset --budget 200 --burst 50]
# CONFIGS="off on" (default) chooses the configurations; OUT=DIR writes elsewhere than
# bench/results. Takes ~5 min (off) + ~1 min (on) on 2 quiet cores; run it with nice on a
# shared machine.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="${1:-$HERE/../../build}"
[ $# -gt 0 ] && shift
for b in keybridged keybridge-sync; do
  [ -x "$BUILD/$b" ] || { echo "build $b first (cmake --build $BUILD --target $b)" >&2; exit 2; }
done
export KB_BUILD_DIR="$(cd "$BUILD" && pwd)" KB_SOURCE_DIR="$(cd "$HERE/../.." && pwd)"
OUT="${OUT:-$KB_SOURCE_DIR/bench/results}"
# the plot needs matplotlib (Debian python3-matplotlib): Debian's python3 when the first python3
# on PATH lacks it
PLOT_PY=python3
python3 -c 'import matplotlib' 2>/dev/null || PLOT_PY=/usr/bin/python3
"$PLOT_PY" -c 'import matplotlib' || {
  echo "run.sh: matplotlib is required (apt-get install python3-matplotlib)" >&2
  exit 2
}
# 1,000 syncers each hold a few descriptors; keybridged holds one connection per syncer
ulimit -n 8192 2>/dev/null || true
for c in ${CONFIGS:-off on}; do
  case "$c" in
  off) ttl=0 ;;
  on) ttl=60s ;; # the default cache_ttl
  *) echo "run.sh: CONFIGS takes off and on" >&2; exit 2 ;;
  esac
  # each run stops its syncers after 600 s at most: the whole configuration is bounded
  timeout --kill-after=10 1800 python3 "$HERE/herd.py" --cache-ttl "$ttl" --tag="-cache-$c" \
    --out "$OUT" "$@"
done
# both configurations in one figure when both series are there (one may come from an earlier run)
csvs=()
for c in off on; do [ -f "$OUT/herd-cache-$c.csv" ] && csvs+=("$OUT/herd-cache-$c.csv"); done
"$PLOT_PY" "$HERE/plot.py" "$OUT/herd.png" "${csvs[@]}"
echo "plot: $OUT/herd.png" >&2
