#!/usr/bin/env bash
# Size and cold start of the Lambda artifact (scripts/package-lambda.sh) against the Runtime API
# stand-in of the tests, beside the ordinary build and a minimal C runtime loop. See README.md.
#   bench/lambda/run.sh [BUILD_DIR] [--runs 21] [--n 10]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="${1:-$HERE/../../build}"
[ $# -gt 0 ] && shift
for b in keybridge-cache keybridge-sync; do
  [ -x "$BUILD/$b" ] || { echo "build $b first (cmake --build $BUILD --target $b)" >&2; exit 2; }
done
# shellcheck source=bench/lib/harness.sh
. "$HERE/../lib/harness.sh"
REF="$(hb_bench_bin "$BUILD" lambda ref_bootstrap)" # the CMake target, libc only
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 2; }
export KB_BUILD_DIR="$(cd "$BUILD" && pwd)" KB_SOURCE_DIR="$(cd "$HERE/../.." && pwd)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$KB_SOURCE_DIR/scripts/package-lambda.sh" "$work/out"
python3 -m zipfile -e "$work/out/keybridge-sync-lambda-x86_64.zip" "$work/task"
chmod 0755 "$work/task/bootstrap" # zipfile does not restore modes
zips=("$work"/out/*.zip)
python3 "$HERE/bench.py" --bootstrap "$work/task/bootstrap" --ref "$REF" \
  --zip "${zips[@]}" "$@"
