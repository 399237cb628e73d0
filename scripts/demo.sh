#!/usr/bin/env bash
# The main job, end to end, on the embedded defaults (SQLite + SoftHSM2):
#   bootstrap a store and a master key in a fresh SoftHSM2 token, create a group, a client and
#   a grant, store a secret, read it back as the admin and as the client, show that the client
#   cannot read what it is not granted, show the master key is non-extractable, verify the audit
#   chain. Everything lives in a temporary directory that is removed at the end
#   (KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target keybridged keybridge >/dev/null

WORK=$(mktemp -d /tmp/keybridge-demo.XXXXXX)
cleanup() { [ "${KEEP:-0}" = 1 ] && echo "kept $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
. tests/lib/softhsm.sh
kb_softhsm_make keybridge "$WORK/hsm"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
KB=(build/keybridge)
ADMIN=spiffe://example.org/admin
APP=spiffe://example.org/ns/payments/sa/api
cat >"$WORK/keybridged.conf" <<CONF
[store]
url = sqlite:$WORK/keybridged.db
[hsm]
keystore = pkcs11
module = $KB_HSM_MODULE
token_label = keybridge
key_label = keybridge-master
pin_file = $KB_HSM_PIN_FILE
[audit]
anchor_file = $WORK/audit-anchor.json
CONF
LOCAL=(--local "$WORK/keybridged.conf")

step "bootstrap: database, master key in the SoftHSM2 token, first admin"
build/keybridged --config "$WORK/keybridged.conf" bootstrap --admin-id "$ADMIN" 2>>"$WORK/log.jsonl"

step "the master key is sensitive and never extractable (pkcs11-tool)"
pkcs11-tool --module "$KB_HSM_MODULE" --token-label keybridge --login \
  --pin "$(cat "$KB_HSM_PIN_FILE")" --list-objects --type secrkey 2>/dev/null |
  grep -E "Secret Key|label|Access" | sed 's/^/  /'

step "admin: group, client, grant; two secrets"
"${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" group create payments --description "payments team"
"${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" client create "$APP" --app payments-api
"${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" member add "$APP" payments
printf 'correct horse battery staple' | "${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" \
  secret create db-password --content-file - --description "payments DB" \
  --metadata mode=0400 --cloud-sync
printf 'not for payments' | "${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" \
  secret create hr-token --content-file -
"${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" grant add payments db-password
printf 'correct horse battery staple v2' | "${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" \
  secret put db-password --content-file -
"${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" secret list

step "client $APP lists and reads what it was granted"
"${KB[@]}" "${LOCAL[@]}" --as "$APP" list
got=$("${KB[@]}" "${LOCAL[@]}" --as "$APP" read db-password)
echo "  read back: '$got'"
[ "$got" = "correct horse battery staple v2" ] || { echo "FAIL: wrong content"; exit 1; }
old=$("${KB[@]}" "${LOCAL[@]}" --as "$APP" read db-password --version 1)
[ "$old" = "correct horse battery staple" ] || { echo "FAIL: wrong v1 content"; exit 1; }

step "the client cannot read another group's secret (same answer as a missing one)"
set +e
"${KB[@]}" "${LOCAL[@]}" --as "$APP" read hr-token; a=$?
"${KB[@]}" "${LOCAL[@]}" --as "$APP" read no-such-secret; b=$?
set -e
[ $a -eq 5 ] && [ $b -eq 5 ] || { echo "FAIL: expected not found (5), got $a/$b"; exit 1; }

step "the database holds no plaintext"
if grep -a -q "correct horse" "$WORK/keybridged.db"* 2>/dev/null; then
  echo "FAIL: plaintext in the database"; exit 1
fi
echo "  ok: no plaintext in $(ls "$WORK"/keybridged.db* | wc -l) database files"

step "audit: who fetched which version, and the chain verifies"
"${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" secret status db-password
"${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" audit verify

step "done: the main job works end to end"
