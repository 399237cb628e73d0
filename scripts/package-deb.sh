#!/usr/bin/env bash
# Build the Debian packages (CPack DEB, cmake/packaging.cmake) from a build of this tree:
# keybridged, keybridge-ca, keybridge-cache, keybridge-sync and keybridge (the CLI), each with
# its systemd unit, default configuration in /etc/keybridge, maintainer scripts and man pages
# generated from the programs' command tables and configuration schemas (scripts/gen-man.py).
#   scripts/package-deb.sh [BUILD_DIR [OUT_DIR]]   default build/ and BUILD_DIR/deb/
#   KB_DEB_VERSION=0.1.0~rc1 scripts/package-deb.sh ...   another package version (upgrade tests)
# BUILD_DIR is configured and its programs built if needed; OUT_DIR gets the .deb files only.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
B="$(realpath -m "${1:-$SRC/build}")"
OUT="$(realpath -m "${2:-$B/deb}")"
[ -f "$B/CMakeCache.txt" ] || cmake -S "$SRC" -B "$B" >/dev/null
cmake --build "$B" -j "$(nproc)" --target keybridged keybridge-ca keybridge-cache keybridge-sync keybridge
rm -rf "$B/man"
python3 "$SRC/scripts/gen-man.py" "$B" "$B/man"
mkdir -p "$OUT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
args=()
[ -z "${KB_DEB_VERSION:-}" ] || args+=(-D "CPACK_PACKAGE_VERSION=$KB_DEB_VERSION")
# Reproducible archives: file times from the last commit, not from the build.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$SRC" log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH
(cd "$work" && cpack --config "$B/CPackConfig.cmake" -B "$work" "${args[@]}" >"$work/cpack.log" 2>&1) || {
  cat "$work/cpack.log" >&2
  exit 1
}
mv "$work"/*.deb "$OUT"/
ls "$OUT"/*.deb
