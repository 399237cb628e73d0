#!/usr/bin/env bash
# test_internals_index.sh - docs/internals/README.md is the index of docs/internals/: it links
# every page there, links no page that is gone, and the README links the index (issue 11.5).
set -euo pipefail
S="$(cd "${KB_SOURCE_DIR:?}" && pwd)"
idx="$S/docs/internals/README.md"
errs=()
[ -f "$idx" ] || errs+=("docs/internals/README.md missing")
pages=0
for f in "$S"/docs/internals/*.md; do
  n="$(basename "$f")"
  [ "$n" = README.md ] && continue
  pages=$((pages + 1))
  grep -qF "]($n)" "$idx" 2>/dev/null || errs+=("the index does not link $n (add one line for it)")
done
links=0
while read -r l; do
  [ -n "$l" ] || continue
  links=$((links + 1))
  [ -e "$S/docs/internals/$l" ] || errs+=("the index links $l, which does not exist")
done < <(grep -oE '\]\([^)#]+\)' "$idx" 2>/dev/null | sed 's/^](//; s/)$//')
grep -qF '(docs/internals/README.md)' "$S/README.md" || errs+=("README.md does not link the index")
for e in "${errs[@]}"; do echo "FAIL: $e"; done
echo "internals index: $pages pages, $links links, ${#errs[@]} failed"
[ "${#errs[@]}" = 0 ]
