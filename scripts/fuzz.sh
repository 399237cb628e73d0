#!/usr/bin/env bash
# fuzz.sh - build every libFuzzer target (tests/fuzz/fuzz_*.c) with clang, ASan and UBSan into
# build-fuzz/, and run each for FUZZ_SECONDS (default 10) from its checked-in corpus. Fails on
# any crash, leak, sanitizer report or timeout; the input is kept as
# build-fuzz/artifacts/<target>/crash-* (minimize it with -minimize_crash=1, then add it to
# tests/fuzz/corpus/<target>/ with the fix).
#
#   scripts/fuzz.sh                        # all targets, 10 s each
#   FUZZ_SECONDS=60 scripts/fuzz.sh        # 60 s per target
#   FUZZ_TOTAL_SECONDS=1800 scripts/fuzz.sh  # a campaign: 30 min shared equally by the targets
#   scripts/fuzz.sh fuzz_sigv4             # only the named targets
#   FUZZ_RECORD=1 FUZZ_SECONDS=150 nice scripts/fuzz.sh
#       # a recorded campaign: the per-target summary goes to tests/fuzz/campaign.tsv and
#       # docs/internals/fuzzing.md is regenerated from it (scripts/gen-fuzz-doc.sh)
#
# Each run writes build-fuzz/fuzz-summary.tsv: per target the seconds, executions, exec/s,
# coverage (edges) and features at the end, corpus size (entries, bytes) and findings.
# New inputs found while fuzzing go to build-fuzz/corpus/<target>/, never into the source tree;
# they persist between runs, so repeated runs continue a campaign.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${FUZZ_BUILD_DIR:-$SRC/build-fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-10}"
JOBS="${FUZZ_BUILD_JOBS:-$(nproc)}"

TOTAL="${FUZZ_TOTAL_SECONDS:-}"
for v in "$SECONDS_EACH" "${TOTAL:-0}"; do
  case "$v" in
  '' | *[!0-9]*)
    echo "fuzz.sh: FUZZ_SECONDS and FUZZ_TOTAL_SECONDS must be whole numbers of seconds" >&2
    exit 2
    ;;
  esac
done
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

if [ -n "$TOTAL" ]; then
  SECONDS_EACH=$((TOTAL / ${#targets[@]}))
  [ "$SECONDS_EACH" -ge 1 ] || SECONDS_EACH=1
fi

cmake -S "$SRC" -B "$BUILD" -DKB_FUZZ=ON -DCMAKE_C_COMPILER=clang \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$JOBS" --target "${targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
summary="$BUILD/fuzz-summary.tsv"
printf 'target\tseconds\texecs\texec_per_sec\tcov\tft\tcorpus_entries\tcorpus_bytes\tfindings\n' \
  >"$summary"
# One summary row from a libFuzzer log: the last status line ("#N DONE cov: C ft: F corp: E/B")
# and the final stats; findings are the artifacts this run left.
record() {
  local t=$1 log=$2 art=$3 line execs eps cov ft corp entries bytes findings
  line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$line")
  ft=$(sed -n 's/.* ft: \([0-9]*\) .*/\1/p' <<<"$line")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[KMG]\{0,1\}b\).*/\1/p' <<<"$line")
  entries=${corp%%/*}
  bytes=${corp#*/}
  findings=$(find "$art" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o \
    -name 'timeout-*' -o -name 'oom-*' \) -newer "$log.start" | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$SECONDS_EACH" "${execs:-0}" "${eps:-0}" \
    "${cov:-?}" "${ft:-?}" "${entries:-?}" "${bytes:-?}" "$findings" >>"$summary"
}
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
  touch "$log.start"
  # The first corpus dir receives new inputs; the seed dir is only read.
  if "$BUILD/$t" -max_total_time="$SECONDS_EACH" -timeout=25 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art/" "$work" "$seeds" >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^Done' "$log" | tail -n 2 || true
  else
    echo "fuzz.sh: $t FAILED (log: $log)" >&2
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -n 20 >&2 || true
    failed+=("$t")
  fi
  record "$t" "$log" "$art"
done
column -t -s $'\t' "$summary" 2>/dev/null || cat "$summary"
if [ "${FUZZ_RECORD:-0}" = 1 ]; then
  # Rows of the targets run now replace their old rows; other targets keep theirs.
  camp="$SRC/tests/fuzz/campaign.tsv"
  {
    printf '# campaign %s, clang %s, %s CPUs: scripts/fuzz.sh, seconds per target as listed\n' \
      "$(date -u +%Y-%m-%d)" "$(clang -dumpversion)" "$(nproc)"
    head -n 1 "$summary"
    {
      if [ -f "$camp" ]; then
        grep -v -e '^#' -e '^target' "$camp" |
          awk -F'\t' 'NR == FNR { ran[$1] = 1; next } !($1 in ran)' <(tail -n +2 "$summary") -
      fi
      tail -n +2 "$summary"
    } | sort
  } >"$camp.new"
  mv "$camp.new" "$camp"
  "$SRC/scripts/gen-fuzz-doc.sh"
fi

if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz.sh: failing targets: ${failed[*]}" >&2
  echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets ran ${SECONDS_EACH}s each without a finding"
echo "fuzz: ${#targets[@]} passed, 0 failed"
