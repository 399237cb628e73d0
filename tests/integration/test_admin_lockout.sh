#!/usr/bin/env bash
# Issue 10 items 4, 5 and 8 through the real binaries (SoftHSM2 token, `keybridge --local`):
#   - the last enabled admin cannot be disabled or deleted (409 last_admin, nothing changes);
#   - `keybridged recover-admin` (break-glass) refuses while an enabled admin exists, works with
#     --force, and both are audited (admin.recover);
#   - client IDs the mTLS handshake would refuse are refused with the reason (400);
#   - `keybridge audit verify` without --anchor uses [audit] anchor_file: an emptied log fails;
#     without anchor_file it says so, and an emptied log still fails (no rows).
set -euo pipefail
B=${KB_BUILD_DIR:?}; S=${KB_SOURCE_DIR:?}
W=$(mktemp -d /tmp/kblockout.XXXXXX)
trap 'kb_softhsm_cleanup; rm -rf "$W"' EXIT
. "$S/tests/lib/softhsm.sh"
kb_softhsm_make lockout-token
ADMIN=spiffe://example.org/ns/ops/sa/admin
pass=0; fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

conf() { # conf DIR [no-anchor]
  cat >"$1/kbd.conf" <<CONF
[server]
trust_domain = example.org
[store]
url = sqlite:$1/kbd.db
[hsm]
module = $KB_HSM_MODULE
token_label = lockout-token
pin_file = $KB_HSM_PIN_FILE
CONF
  if [ "${2:-}" != no-anchor ]; then
    printf '[audit]\nanchor_file = %s/anchor.json\n' "$1" >>"$1/kbd.conf"
  fi
}
kb() { local d=$1; shift; "$B/keybridge" --local "$d/kbd.conf" --as "$ADMIN" "$@"; }
# expect_rc WANT OUTFILE CMD...: run, capture stdout+stderr, compare the exit status
expect_rc() {
  local want=$1 out=$2; shift 2
  set +e; "$@" >"$out" 2>&1; local rc=$?; set -e
  [ "$rc" -eq "$want" ]
}

D=$W/base
mkdir -p "$D"
conf "$D"
"$B/keybridged" --config "$D/kbd.conf" bootstrap --admin-id "$ADMIN" >/dev/null 2>&1
AID=$(kb "$D" -o json admin client list | python3 -c 'import json,sys
print([c["id"] for c in json.load(sys.stdin)["clients"] if c["admin"]][0])')

# -- item 4: the last enabled admin
for verb in disable delete; do
  if expect_rc 2 "$W/out" kb "$D" admin client "$verb" "$AID" &&
    grep -q "last enabled admin.*(last_admin, HTTP 409)" "$W/out"; then
    ok "client $verb of the last admin: 409 last_admin"
  else bad "client $verb of the last admin"; cat "$W/out"; fi
done
kb "$D" -o json admin client show "$AID" | grep '"enabled": *true' >/dev/null &&
  kb "$D" admin client list >/dev/null 2>&1 && ok "the admin is unchanged and still works" ||
  bad "admin changed"
kb "$D" -o json admin audit list --object "$ADMIN" 2>/dev/null | grep '"result": *"conflict"' >/dev/null &&
  ok "refusals are audited" || bad "no audit row for the refusal"

# -- item 4: break-glass recovery
if expect_rc 1 "$W/out" "$B/keybridged" --config "$D/kbd.conf" recover-admin --admin-id "$ADMIN"; then
  grep -q "an enabled admin exists" "$W/out" && ok "recover-admin refused while an admin exists" ||
    { bad "recover-admin refusal message"; cat "$W/out"; }
else
  rc=$?; bad "recover-admin without --force"; cat "$W/out"
fi
NEW=spiffe://example.org/ns/ops/sa/breakglass
if "$B/keybridged" --config "$D/kbd.conf" recover-admin --admin-id "$NEW" --force >"$W/out" 2>&1; then
  ok "recover-admin --force"
else bad "recover-admin --force failed"; cat "$W/out"; fi
kb "$D" -o json admin client list | python3 -c 'import json,sys
c=[c for c in json.load(sys.stdin)["clients"] if c["spiffe_id"]==sys.argv[1]]
sys.exit(0 if c and c[0]["admin"] and c[0]["enabled"] else 1)' "$NEW" &&
  ok "recovered ID is an enabled admin" || bad "recovered ID not an admin"
kb "$D" -o json admin audit list --object "$NEW" | grep '"action": *"admin.recover"' >/dev/null &&
  ok "recover-admin is audited" || bad "no admin.recover audit row"
expect_rc 1 "$W/out" "$B/keybridged" --config "$D/kbd.conf" recover-admin \
  --admin-id spiffe://other.org/x --force && ok "recover-admin refuses another trust domain" ||
  { bad "recover-admin other trust domain"; cat "$W/out"; }
# now the first admin may go: another enabled admin exists
kb "$D" admin client disable "$AID" >/dev/null 2>&1 && ok "disable allowed with another admin" ||
  bad "disable with another admin"
"$B/keybridge" --local "$D/kbd.conf" --as "$NEW" admin client enable "$AID" >/dev/null 2>&1 ||
  bad "re-enable by the recovered admin"

# -- item 8: IDs the handshake would refuse
for id in spiffe://example.org/ns/a/ spiffe://EXAMPLE.org/ns/a spiffe://other.org/ns/a \
  spiffe://example.org; do
  if expect_rc 2 "$W/out" kb "$D" admin client create "$id" &&
    grep -q "invalid SPIFFE ID: .*(invalid, HTTP 400)" "$W/out"; then
    ok "create $id: 400 with the reason"
  else bad "create $id"; cat "$W/out"; fi
done

# -- item 5: audit verify uses [audit] anchor_file by default
kb "$D" audit anchor >/dev/null 2>&1
if kb "$D" audit verify >"$W/out" 2>&1 && grep -q "anchor_file" "$W/out"; then
  ok "untouched log verifies against the anchor file"
else bad "untouched verify"; cat "$W/out"; fi
E=$W/emptied; mkdir -p "$E"; conf "$E"
cp "$D/kbd.db" "$E/kbd.db"; cp "$D/anchor.json" "$E/anchor.json"
sqlite3 "$E/kbd.db" "DELETE FROM audit_log; DELETE FROM audit_anchors;"
if expect_rc 1 "$E/out" kb "$E" audit verify && grep -q "FAILED" "$E/out"; then
  ok "emptied log with an anchor on file fails without --anchor"
else bad "emptied log passed"; cat "$E/out"; fi
M=$W/missing; mkdir -p "$M"; conf "$M"
cp "$D/kbd.db" "$M/kbd.db" # no anchor file copied
if expect_rc 1 "$M/out" kb "$M" audit verify && grep -q "anchor_file is missing" "$M/out"; then
  ok "configured anchor file missing: fails"
else bad "missing anchor file"; cat "$M/out"; fi
N=$W/noanchor; mkdir -p "$N"; conf "$N" no-anchor
cp "$D/kbd.db" "$N/kbd.db"
if kb "$N" audit verify >"$N/out" 2>&1 && grep -q "warning: no anchor outside the database" "$N/out"; then
  ok "no anchor_file configured: says so"
else bad "no anchor_file message"; cat "$N/out"; fi
sqlite3 "$N/kbd.db" "DELETE FROM audit_log; DELETE FROM audit_anchors;"
if expect_rc 1 "$N/out" kb "$N" audit verify && grep -q "empty log" "$N/out"; then
  ok "emptied log without anchor_file fails (no rows)"
else bad "emptied log without anchor_file"; cat "$N/out"; fi

echo "admin lockout: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
