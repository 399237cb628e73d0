#!/usr/bin/env bash
# `keybridge audit verify [--anchor FILE]` finds an edited row, a deleted row and a truncated tail
# in the real SQLite file, a forged anchor is refused, and keybridged exports its signed chain head
# to [audit] anchor_file (0600). Each tamper case works on its own copy of the database.
set -euo pipefail
B=${KB_BUILD_DIR:?}; S=${KB_SOURCE_DIR:?}
W=$(mktemp -d /tmp/kbaudit.XXXXXX)
trap 'kb_softhsm_cleanup; rm -rf "$W"' EXIT
. "$S/tests/lib/softhsm.sh"
kb_softhsm_make audit-token
ADMIN=spiffe://example.org/admin
pass=0; fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

conf() { # conf DIR: a keybridged config whose store lives in DIR
  cat >"$1/kbd.conf" <<CONF
[store]
url = sqlite:$1/kbd.db
[hsm]
module = $KB_HSM_MODULE
token_label = audit-token
pin_file = $KB_HSM_PIN_FILE
[audit]
anchor_file = $1/anchor-auto.json
anchor_every_rows = 5
CONF
}
kb() { local d=$1; shift; "$B/keybridge" --local "$d/kbd.conf" --as "$ADMIN" "$@"; }

mkdir -p "$W/base"
conf "$W/base"
"$B/keybridged" --config "$W/base/kbd.conf" bootstrap --admin-id "$ADMIN" >/dev/null 2>&1
[ "$(stat -c %a "$W/base/anchor-auto.json")" = 600 ] && ok "bootstrap exported an anchor, 0600" ||
  bad "no 0600 anchor export after bootstrap"
for i in 1 2 3 4 5 6; do
  printf 'v%s' "$i" | kb "$W/base" secret create "s$i" --content-file - >/dev/null 2>&1
  kb "$W/base" secret get "s$i" >/dev/null 2>&1
done
kb "$W/base" audit anchor --out "$W/anchor.json" >/dev/null 2>"$W/err" || bad "audit anchor failed"
[ "$(stat -c %a "$W/anchor.json")" = 600 ] && ok "audit anchor --out writes 0600" || bad "anchor mode"
ASEQ=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seq"])' "$W/anchor.json")
[ "$ASEQ" -gt 10 ] && ok "anchor covers the log (seq $ASEQ)" || bad "anchor seq $ASEQ"
kb "$W/base" audit verify >"$W/out" 2>&1 && grep -q "audit chain: ok" "$W/out" &&
  ok "untouched log verifies" || { bad "untouched log fails"; cat "$W/out"; }
kb "$W/base" audit verify --anchor "$W/anchor.json" >"$W/out" 2>&1 &&
  ok "untouched log verifies against the exported anchor" || { bad "anchor verify"; cat "$W/out"; }

tamper() { # tamper NAME SQL: a copy of the database with SQL applied
  mkdir -p "$W/$1"
  cp "$W/base/kbd.db" "$W/$1/kbd.db"
  conf "$W/$1"
  sqlite3 "$W/$1/kbd.db" "$2"
}
expect_fail() { # expect_fail NAME REASON [verify args]
  local name=$1 reason=$2; shift 2
  set +e
  kb "$W/$name" audit verify "$@" >"$W/$name/out" 2>&1
  local rc=$?
  set -e
  if [ $rc -eq 1 ] && grep -Eq "FAILED .*: ($reason)" "$W/$name/out"; then
    ok "$name: exit 1, '$reason'"
  else
    bad "$name: exit $rc, expected 1 with '$reason'"; cat "$W/$name/out"
  fi
}
tamper edited "UPDATE audit_log SET object='s9' WHERE seq=7"
expect_fail edited "mac mismatch"
grep -q "first bad seq: 7" "$W/edited/out" && ok "edited: names seq 7" || bad "edited: seq"
tamper deleted "DELETE FROM audit_log WHERE seq=8"
expect_fail deleted "seq gap"
# Truncation with the stored anchors removed too: only the exported anchor can tell.
tamper truncated "DELETE FROM audit_log WHERE seq > 9; DELETE FROM audit_anchors WHERE seq > 9"
set +e; kb "$W/truncated" audit verify --anchor "$W/anchor.json" >"$W/truncated/out" 2>&1; trc=$?; set -e
if [ $trc -eq 1 ] && grep -Eq "FAILED .*: (anchor mismatch|truncated)" "$W/truncated/out"; then ok "truncated: exit 1 with --anchor"; else bad "truncated: exit $trc"; cat "$W/truncated/out"; fi
# A forged anchor (one hex digit of the MAC changed) is refused, not trusted.
python3 - "$W/anchor.json" "$W/forged.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
m = a["mac"]
a["mac"] = ("0" if m[0] != "0" else "1") + m[1:]
json.dump(a, open(sys.argv[2], "w"))
PY
set +e
kb "$W/base" audit verify --anchor "$W/forged.json" >"$W/out" 2>&1; rc=$?
set -e
[ $rc -eq 1 ] && grep -q "anchor signature invalid" "$W/out" && ok "forged anchor refused" ||
  { bad "forged anchor: exit $rc"; cat "$W/out"; }
printf '{"seq": 1}' >"$W/malformed.json"
set +e
kb "$W/base" audit verify --anchor "$W/malformed.json" >"$W/out" 2>&1; rc=$?
set -e
[ $rc -eq 2 ] && ok "malformed anchor: exit 2" || { bad "malformed anchor: exit $rc"; cat "$W/out"; }
echo "audit verify: $pass passed, $fail failed"
[ $fail -eq 0 ]
