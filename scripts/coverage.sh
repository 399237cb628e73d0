#!/usr/bin/env bash
# coverage.sh - the Debug build (-O0 -g, warnings are errors) instrumented with gcov (--coverage)
# in build-cov/, every ctest test run against it (unit, integration and fuzz-corpus replay: the
# integration tests run the real programs, whose .gcda files gcov merges), then line coverage per
# source folder (gcovr), printed as a table and checked against the floors in
# scripts/coverage-floors.txt. Fails if any folder is under its floor (or a test fails).
# -fprofile-update=atomic: the servers and several tests are multi-threaded; without it the
# counters race and gcov reports negative counts that gcovr refuses.
#
#   scripts/coverage.sh              build, test, report, enforce
#   scripts/coverage.sh --report     only report and enforce (after a run; no build or tests)
#   COVERAGE_TESTS=unit scripts/coverage.sh   count only one ctest label (to measure, not CI)
#
# The floors ratchet: each is just under the measured value (rounded down, minus one point of
# headroom), raised when tests raise the coverage; lowering one needs a reason in the commit.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${COVERAGE_BUILD_DIR:-$SRC/build-cov}"
FLOORS="$SRC/scripts/coverage-floors.txt"

if [ "${1:-}" != "--report" ]; then
  "$SRC/scripts/deps.sh"
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS="--coverage -fprofile-update=atomic" -DCMAKE_EXE_LINKER_FLAGS="--coverage" \
    >/dev/null
  cmake --build "$BUILD" -j "$(nproc)"
  find "$BUILD" -name '*.gcda' -delete
  label=()
  [ -z "${COVERAGE_TESTS:-}" ] || label=(-L "$COVERAGE_TESTS")
  (cd "$BUILD" && ctest --output-on-failure -j "$(nproc)" --timeout 1200 "${label[@]}")
fi

gcovr --root "$SRC" --object-directory "$BUILD" --filter "$SRC/src/" \
  --exclude-directories "$BUILD/CMakeFiles/[0-9.]+" \
  --json-summary "$BUILD/coverage-summary.json" --json-summary-pretty >/dev/null
python3 - "$BUILD/coverage-summary.json" "$FLOORS" <<'PY'
import json, sys

summary, floors_path = sys.argv[1], sys.argv[2]
floors = {}
for line in open(floors_path, encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if line:
        folder, pct = line.split()
        floors[folder] = float(pct)
per = {}
for f in json.load(open(summary, encoding="utf-8"))["files"]:
    folder = f["filename"].rsplit("/", 1)[0]
    c, t = per.get(folder, (0, 0))
    per[folder] = (c + f["line_covered"], t + f["line_total"])
fail = []
print(f"{'folder':<12} {'lines':>7} {'covered':>8} {'coverage':>9} {'floor':>6}")
for folder in sorted(set(per) | set(floors)):
    c, t = per.get(folder, (0, 0))
    pct = 100.0 * c / t if t else 0.0
    floor = floors.get(folder)
    mark = ""
    if floor is None:
        mark = "  (no floor: add one to scripts/coverage-floors.txt)"
        fail.append(f"{folder} has no floor")
    elif pct < floor:
        mark = "  BELOW FLOOR"
        fail.append(f"{folder} {pct:.1f}% < {floor:.0f}%")
    fl = f"{floor:.0f}%" if floor is not None else "-"
    print(f"{folder:<12} {t:>7} {c:>8} {pct:>8.1f}% {fl:>6}{mark}")
c = sum(v[0] for v in per.values())
t = sum(v[1] for v in per.values())
print(f"{'total':<12} {t:>7} {c:>8} {100.0 * c / max(t, 1):>8.1f}%")
if fail:
    print("coverage.sh: " + "; ".join(fail), file=sys.stderr)
    sys.exit(1)
print("coverage: every folder at or above its floor")
PY
