#!/usr/bin/env bash
# test_pkcs11_tool.sh - the keys keybridge creates in a PKCS#11 token, as OpenSC's pkcs11-tool
# sees them: exactly the AES-256 master key and its HMAC twin, both private, sensitive, never
# extractable, their values unreadable; init is idempotent (same key id on a second run); and a
# weak (extractable) key planted under a label is refused rather than used.
#
# The token is made by tests/lib/softhsm.sh; keybridge's keystore code runs through the unit test
# binary's KB_KEEP_TOKEN_DIR mode (tests/unit/test_keystore.c), which initialises keys in that
# token and leaves them for inspection.
set -euo pipefail

: "${KB_SOURCE_DIR:?}" "${KB_BUILD_DIR:?}"
. "$KB_SOURCE_DIR/tests/lib/softhsm.sh"
trap kb_softhsm_cleanup EXIT

BIN="$KB_BUILD_DIR/test_keystore"
[ -x "$BIN" ] || { echo "missing $BIN (build the test_keystore target)"; exit 1; }
command -v pkcs11-tool >/dev/null || { echo "pkcs11-tool not installed (package opensc)"; exit 1; }

pass=0
fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
bad() { echo "not ok - $*"; fail=$((fail + 1)); }

kb_softhsm_make kb-it
WORK="$KB_HSM_DIR"
# pkcs11-tool reads the PIN from this variable (--pin env:NAME), never from argv.
KB_IT_PIN="$(cat "$KB_HSM_PIN_FILE")"
export KB_IT_PIN
p11() { pkcs11-tool --module "$KB_HSM_MODULE" --token-label "$KB_HSM_LABEL" "$@"; }

# 0. The helper's files are private.
[ "$(stat -c %a "$KB_HSM_PIN_FILE")" = 600 ] && ok "PIN file is 0600" || bad "PIN file mode"
[ "$(stat -c %a "$SOFTHSM2_CONF")" = 600 ] && ok "softhsm2.conf is 0600" || bad "conf mode"

keep() {
  KB_KEEP_TOKEN_DIR="$WORK" KB_KEEP_TOKEN_LABEL="$KB_HSM_LABEL" "$BIN"
}

# 1. Init through keybridge, twice: the same keys (same key id), no duplicates.
keep >"$WORK/run1.out" 2>&1 || { cat "$WORK/run1.out"; bad "first init"; }
keep >"$WORK/run2.out" 2>&1 || { cat "$WORK/run2.out"; bad "second init"; }
id1="$(sed -n 's/^key_id=//p' "$WORK/run1.out")"
id2="$(sed -n 's/^key_id=//p' "$WORK/run2.out")"
if [[ "$id1" =~ ^pkcs11:kb-it:master:[0-9a-f]{32}$ ]] && [ "$id1" = "$id2" ]; then
  ok "init is idempotent, key id $id1"
else
  bad "key ids differ or malformed: '$id1' vs '$id2'"
fi

# 2. What the token holds, seen by an independent PKCS#11 client.
p11 --login --pin env:KB_IT_PIN -O >"$WORK/objects.txt" 2>"$WORK/objects.err"
nkeys="$(grep -c '^Secret Key Object' "$WORK/objects.txt" || true)"
[ "$nkeys" = 2 ] && ok "exactly two secret keys" || { cat "$WORK/objects.txt"; bad "found $nkeys keys"; }

# Print the block of the object with the given label.
block() {
  awk -v l="$1" '/^[A-Z][a-z]+ Key Object/ { b = $0 "\n"; next } { b = b $0 "\n" }
       $1 == "label:" && $2 == l { found = 1 } found && /Access:/ { printf "%s", b; exit }' \
    "$WORK/objects.txt"
}
check_key() {
  local label="$1" kind="$2" b
  b="$(block "$label")"
  if [ -z "$b" ]; then
    bad "$label: not listed"
    return
  fi
  grep -q "Secret Key Object; $kind length 32" <<<"$b" && ok "$label: $kind, 32 bytes" ||
    bad "$label: type/length: $b"
  local access
  access="$(grep 'Access:' <<<"$b")"
  for want in "sensitive" "always sensitive" "never extractable"; do
    grep -q "$want" <<<"$access" && ok "$label: $want" || bad "$label: not '$want': $access"
  done
  if grep -qE '(^|[ ,])extractable' <<<"${access//never extractable/}"; then
    bad "$label: extractable"
  else
    ok "$label: not extractable"
  fi
  grep -q 'VALUE:' <<<"$b" && bad "$label: value shown" || ok "$label: value not shown"
}
check_key master AES
check_key master-mac "Generic secret"
grep -q 'CKR_ATTRIBUTE_SENSITIVE' "$WORK/objects.err" && ok "token refuses CKA_VALUE (sensitive)" ||
  bad "no CKR_ATTRIBUTE_SENSITIVE from the listing"

# 3. Reading a key's value fails even when logged in.
if p11 --login --pin env:KB_IT_PIN --read-object --type secrkey --label master \
  -o "$WORK/leak.bin" >/dev/null 2>&1; then
  bad "master key value could be read"
else
  ok "master key value cannot be read"
fi
[ ! -s "$WORK/leak.bin" ] && ok "nothing written by the read attempt" || bad "key bytes written"

# 4. Keys are private objects: invisible without login.
p11 -O >"$WORK/public.txt" 2>&1 || true
grep -q 'label: *master' "$WORK/public.txt" && bad "keys visible without login" ||
  ok "keys invisible without login"

# 5. A weak key planted under a label is refused, not used (and not replaced).
p11 --login --pin env:KB_IT_PIN --keygen --key-type AES:32 --label weak --extractable \
  >/dev/null 2>&1
if KB_TEST_LOG=1 KB_KEEP_KEY_LABEL=weak keep >"$WORK/weak.out" 2>&1; then
  bad "extractable key accepted"
else
  grep -q '"event":"pkcs11_key_refused"' "$WORK/weak.out" && ok "extractable key refused" ||
    { cat "$WORK/weak.out"; bad "weak key failed for another reason"; }
fi

# 6. Wrong PIN file content: refused by C_Login (unit tests check the error code).
printf 'wrong-pin' >"$WORK/pin"
if keep >"$WORK/wrongpin.out" 2>&1; then bad "wrong PIN accepted"; else ok "wrong PIN refused"; fi
grep -q "$KB_IT_PIN" "$WORK/wrongpin.out" "$WORK/weak.out" "$WORK/run1.out" &&
  bad "PIN appears in output" || ok "PIN never printed"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
