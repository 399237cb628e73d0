#!/usr/bin/env bash
# keybridge-sync benchmark against the real keybridged (SoftHSM2) and keybridge-cache: no-op
# sync of N managed secrets (secretsmanager sink and dir sink), one `aws secretsmanager
# get-secret-value`, and a full sync of N changed secrets. See README.md.
#   bench/sync/run.sh [BUILD_DIR] [--runs 31] [--n 100]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="${1:-$HERE/../../build}"
[ $# -gt 0 ] && shift
for b in keybridged keybridge-cache keybridge-sync; do
  [ -x "$BUILD/$b" ] || { echo "build $b first (cmake --build $BUILD --target $b)" >&2; exit 2; }
done
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 2; }
export KB_BUILD_DIR="$(cd "$BUILD" && pwd)" KB_SOURCE_DIR="$(cd "$HERE/../.." && pwd)"
exec python3 "$HERE/bench.py" "$@"
