#!/usr/bin/env bash
# keybridge-ca import of an upstream-signed intermediate: a good one activates and its SVIDs
# verify; intermediates that openssl signs with name constraints excluding the trust domain, or
# permitting only another, with a non-critical key usage or basicConstraints, or under an
# upstream intermediate with pathlen 0 are refused - before activation, naming the rule - and
# the generation stays pending (a later good chain still imports).
set -euo pipefail
B="${KB_BUILD_DIR:?}/keybridge-ca"
W="$(mktemp -d /tmp/kbca-import.XXXXXX)"
trap 'rm -rf -- "$W"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -m 700 "$W/keys"
printf '[ca]\ndb = %s\nkey = file\nkey_dir = %s\n' "$W/ca.db" "$W/keys" >"$W/ca.ini"
ca() { "$B" -c "$W/ca.ini" "$@"; }
ca init --trust-domain example.org --intermediate --csr-out "$W/int.csr" >/dev/null 2>&1 || fail "init --intermediate"

# the upstream root, and an upstream intermediate with pathlen 0
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/root.key" \
  -subj "/O=Upstream/CN=Upstream Root" -days 30 -out "$W/root.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/up.key" \
  -subj "/O=Upstream/CN=Upstream Int" -out "$W/up.csr" 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$W/up.ext"
openssl x509 -req -in "$W/up.csr" -CA "$W/root.pem" -CAkey "$W/root.key" -CAcreateserial \
  -days 20 -extfile "$W/up.ext" -out "$W/up.pem" 2>/dev/null

sign() { # name extensions... -> $W/NAME.pem signed by the root
  local n="$1"; shift
  printf '%s\n' "$@" >"$W/$n.ext"
  openssl x509 -req -in "$W/int.csr" -CA "$W/root.pem" -CAkey "$W/root.key" -CAcreateserial \
    -days 10 -extfile "$W/$n.ext" -out "$W/$n.pem" 2>/dev/null || fail "openssl sign $n"
}
BC="basicConstraints=critical,CA:TRUE"
KU="keyUsage=critical,keyCertSign,cRLSign"
SAN="subjectAltName=URI:spiffe://example.org"
sign excluded "$BC" "$KU" "$SAN" "nameConstraints=critical,excluded;URI:example.org"
sign other "$BC" "$KU" "$SAN" "nameConstraints=critical,permitted;URI:other.org"
sign kunc "$BC" "keyUsage=keyCertSign,cRLSign" "$SAN" "nameConstraints=critical,permitted;URI:example.org"
sign bcnc "basicConstraints=CA:TRUE" "$KU" "$SAN"
sign good "$BC" "$KU" "$SAN" "nameConstraints=critical,permitted;URI:example.org"
# below the pathlen-0 upstream intermediate
openssl x509 -req -in "$W/int.csr" -CA "$W/up.pem" -CAkey "$W/up.key" -CAcreateserial -days 10 \
  -extfile "$W/good.ext" -out "$W/deep.pem" 2>/dev/null
cat "$W/deep.pem" "$W/up.pem" >"$W/deep-chain.pem"
cp "$W/excluded.pem" "$W/excluded-chain.pem"

# The bad ones verify as certificates (openssl verify), which is why the old check passed them.
openssl verify -CAfile "$W/root.pem" "$W/excluded.pem" >/dev/null || fail "excluded.pem does not verify on its own"

refused() { # msg chain
  local msg="$1" chain="$2" err
  if err="$(ca import --generation 1 --chain "$chain" --roots "$W/root.pem" 2>&1 >/dev/null)"; then
    fail "imported $chain"
  fi
  grep -qi -- "$msg" <<<"$err" || fail "message for $chain was: $err (want: $msg)"
  # still pending: nothing signs
  if ca issue --spiffe-id spiffe://example.org/a --out "$W/none" >/dev/null 2>&1; then
    fail "a CA is active after the refused import of $chain"
  fi
}
refused "excluded subtree violation" "$W/excluded.pem"
refused "permitted subtree violation" "$W/other.pem"
refused "key usage is not critical" "$W/kunc.pem"
refused "basicConstraints is not critical" "$W/bcnc.pem"
refused "path length" "$W/deep-chain.pem"
# the refused attempts signed only audited test SVIDs for the import check
ca audit 2>/dev/null | grep -c "import-check" >"$W/n" || true
[ "$(cat "$W/n")" -ge 3 ] || fail "import-check test SVIDs not audited"

ca import --generation 1 --chain "$W/good.pem" --roots "$W/root.pem" >/dev/null 2>&1 || fail "good import"
ca issue --spiffe-id spiffe://example.org/ns/a --out "$W/svid" >/dev/null 2>&1 || fail "issue after import"
cat "$W/svid/svid.pem" >"$W/full.pem"
openssl verify -CAfile "$W/root.pem" -untrusted "$W/svid/svid.pem" "$W/svid/svid.pem" >/dev/null \
  || fail "SVID under the imported intermediate does not verify"
echo ok
