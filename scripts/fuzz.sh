#!/usr/bin/env bash
# fuzz.sh - build every libFuzzer target (tests/fuzz/fuzz_*.c) with clang, ASan and UBSan into
# build-fuzz/, and run each for FUZZ_SECONDS (default 10) from its checked-in corpus. Fails on
# any crash, leak, sanitizer report or timeout; the input is kept as
# build-fuzz/artifacts/<target>/crash-* (minimize it with -minimize_crash=1, then add it to
# tests/fuzz/corpus/<target>/ with the fix).
#
#   scripts/fuzz.sh                 # all targets, 10 s each
#   FUZZ_SECONDS=60 scripts/fuzz.sh # longer
#   scripts/fuzz.sh fuzz_sigv4      # only the named targets
#
# New inputs found while fuzzing go to build-fuzz/corpus/<target>/, never into the source tree.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${FUZZ_BUILD_DIR:-$SRC/build-fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-10}"
JOBS="${FUZZ_BUILD_JOBS:-$(nproc)}"

case "$SECONDS_EACH" in
'' | *[!0-9]*)
  echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds" >&2
  exit 2
  ;;
esac
if ! command -v clang >/dev/null; then
  echo "fuzz.sh: clang is required (apt-get install clang)" >&2
  exit 2
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in "$SRC"/tests/fuzz/fuzz_*.c; do
    targets+=("$(basename "$f" .c)")
  done
fi
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz.sh: no fuzz targets in tests/fuzz" >&2
  exit 2
fi

cmake -S "$SRC" -B "$BUILD" -DKB_FUZZ=ON -DCMAKE_C_COMPILER=clang \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$JOBS" --target "${targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
for t in "${targets[@]}"; do
  seeds="$SRC/tests/fuzz/corpus/$t"
  work="$BUILD/corpus/$t"
  art="$BUILD/artifacts/$t"
  log="$BUILD/fuzz-$t.log"
  mkdir -p "$work" "$art"
  if [ ! -d "$seeds" ]; then
    echo "fuzz.sh: $t has no seed corpus ($seeds)" >&2
    failed+=("$t")
    continue
  fi
  echo "== $t: ${SECONDS_EACH}s"
  # The first corpus dir receives new inputs; the seed dir is only read.
  if "$BUILD/$t" -max_total_time="$SECONDS_EACH" -timeout=25 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art/" "$work" "$seeds" >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^Done' "$log" | tail -n 2 || true
  else
    echo "fuzz.sh: $t FAILED (log: $log)" >&2
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -n 20 >&2 || true
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz.sh: failing targets: ${failed[*]}" >&2
  echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets ran ${SECONDS_EACH}s each without a finding"
echo "fuzz: ${#targets[@]} passed, 0 failed"
