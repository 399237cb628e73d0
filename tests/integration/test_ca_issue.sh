#!/usr/bin/env bash
# keybridge-ca init + issue, with the CA key in SoftHSM2 and in a dev file: every SVID passes
# `openssl verify -purpose sslclient/sslserver` against the bundle, Python's cryptography reads
# its one URI SAN and the SPIFFE leaf rules, and bad input is refused with a precise message.
set -euo pipefail
B="${KB_BUILD_DIR:?}/keybridge-ca"
. "${KB_SOURCE_DIR:?}/tests/lib/softhsm.sh"
W="$(mktemp -d /tmp/kbca-issue.XXXXXX)"
cleanup() { kb_softhsm_cleanup; rm -rf -- "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

kb_softhsm_make kbca-test
mkdir -m 700 "$W/keys"
cat >"$W/hsm.ini" <<CONF
[ca]
db = $W/hsm.db
key = pkcs11
[pkcs11]
module = $KB_HSM_MODULE
token = $KB_HSM_LABEL
pin_file = $KB_HSM_PIN_FILE
CONF
cat >"$W/file.ini" <<CONF
[ca]
db = $W/file.db
key = file
key_dir = $W/keys
CONF

check_svid() { # dir id
  local d="$1" id="$2"
  [ "$(stat -c %a "$d/svid.key")" = 600 ] || fail "svid.key not 0600"
  head -1 "$d/svid.key" | grep -- "-----BEGIN PRIVATE KEY-----" >/dev/null || fail "svid.key not PKCS#8"
  openssl verify -purpose sslclient -CAfile "$d/bundle.pem" "$d/svid.pem" >/dev/null \
    || fail "sslclient verify"
  openssl verify -purpose sslserver -CAfile "$d/bundle.pem" "$d/svid.pem" >/dev/null \
    || fail "sslserver verify"
  python3 - "$d" "$id" <<'PY'
import sys, datetime
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.hazmat.primitives import serialization
d, want = sys.argv[1], sys.argv[2]
pem = open(d + "/svid.pem", "rb").read()
leaf = x509.load_pem_x509_certificates(pem)[0]
ca = x509.load_pem_x509_certificates(open(d + "/bundle.pem", "rb").read())[0]
san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
assert uris == [want], uris
assert len(list(san.value)) == 1, "exactly one SAN"
bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
assert bc.critical and not bc.value.ca
ku = leaf.extensions.get_extension_for_class(x509.KeyUsage)
assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign and not ku.value.crl_sign
eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
assert leaf.serial_number.bit_length() >= 64
now = datetime.datetime.now(datetime.timezone.utc)
nb = leaf.not_valid_before_utc
assert 5 <= (now - nb).total_seconds() <= 60, (now, nb)
assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
cbc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
assert cbc.critical and cbc.value.ca
cku = ca.extensions.get_extension_for_class(x509.KeyUsage)
assert cku.critical and cku.value.key_cert_sign and cku.value.crl_sign
assert ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
    x509.UniformResourceIdentifier) == ["spiffe://example.org"]
key = serialization.load_pem_private_key(open(d + "/svid.key", "rb").read(), None)
assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
PY
}

for kind in hsm file; do
  "$B" -c "$W/$kind.ini" init --trust-domain example.org >/dev/null 2>&1 || fail "$kind init"
  "$B" -c "$W/$kind.ini" issue --spiffe-id spiffe://example.org/ns/a/sa/b --out "$W/$kind-1" \
    2>/dev/null >/dev/null || fail "$kind issue"
  check_svid "$W/$kind-1" spiffe://example.org/ns/a/sa/b
  "$B" -c "$W/$kind.ini" issue --spiffe-id spiffe://example.org/lambda/acct/123/fn/x --ttl 5m \
    --out "$W/$kind-2" 2>/dev/null >/dev/null || fail "$kind issue ttl"
  check_svid "$W/$kind-2" spiffe://example.org/lambda/acct/123/fn/x
  # a second init must not replace the CA silently: it adds nothing and the bundle is unchanged
done

# The CA key never left the token: sensitive, not extractable.
if command -v pkcs11-tool >/dev/null; then
  out="$(pkcs11-tool --module "$KB_HSM_MODULE" --token-label "$KB_HSM_LABEL" --login \
    --pin "$(cat "$KB_HSM_PIN_FILE")" --list-objects --type privkey 2>/dev/null)"
  grep -q "never extractable" <<<"$out" || fail "CA key not never-extractable: $out"
  grep -qi "sensitive" <<<"$out" || fail "CA key not sensitive"
fi
# no private key material in the database
if strings "$W/file.db" "$W/hsm.db" | grep "PRIVATE KEY" >/dev/null; then fail "private key in DB"; fi

# SPIFFE ID syntax errors name the fault; exit code 2, nothing written
expect_refusal() { # msg args...
  local msg="$1"; shift
  local err
  if err="$("$B" -c "$W/file.ini" issue "$@" --out "$W/bad" 2>&1 >/dev/null)"; then
    fail "accepted: $*"
  fi
  grep -qi -- "$msg" <<<"$err" || fail "message for $* was: $err (want $msg)"
  [ ! -e "$W/bad/svid.pem" ] || fail "wrote output for $*"
}
expect_refusal "upper" --spiffe-id spiffe://Example.org/a
expect_refusal "scheme" --spiffe-id https://example.org/a
expect_refusal "trailing" --spiffe-id spiffe://example.org/a/
expect_refusal "segment" --spiffe-id spiffe://example.org/a/../b
expect_refusal "percent" --spiffe-id spiffe://example.org/a%20b
expect_refusal "path" --spiffe-id spiffe://example.org
expect_refusal "trust domain" --spiffe-id spiffe://other.org/a
expect_refusal "ttl" --spiffe-id spiffe://example.org/a --ttl 0s
expect_refusal "ttl" --spiffe-id spiffe://example.org/a --ttl 1y
expect_refusal "required" --ttl 1h

# CSR path: the CSR contributes only its key; wrong ID, weak key, bad signature refused
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/csr.key" \
  -subj "/CN=spiffe://evil.org/x/O=Root CA" -addext "basicConstraints=critical,CA:TRUE" \
  -out "$W/ok.csr" 2>/dev/null
"$B" -c "$W/file.ini" issue --spiffe-id spiffe://example.org/csr/a --csr "$W/ok.csr" \
  --out "$W/csr" >/dev/null 2>&1 || fail "CSR issue"
[ ! -e "$W/csr/svid.key" ] || fail "svid.key written for a CSR"
openssl verify -purpose sslclient -CAfile "$W/csr/bundle.pem" "$W/csr/svid.pem" >/dev/null || fail "csr verify"
openssl x509 -in "$W/csr/svid.pem" -noout -subject | grep "O = keybridge" >/dev/null || fail "subject from CSR"
openssl x509 -in "$W/csr/svid.pem" -noout -text | grep "CA:FALSE" >/dev/null || fail "CA flag from CSR"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/o.key" \
  -subj "/CN=x" -addext "subjectAltName=URI:spiffe://example.org/other" -out "$W/other.csr" 2>/dev/null
expect_refusal "another SPIFFE ID" --spiffe-id spiffe://example.org/csr/a --csr "$W/other.csr"
openssl req -new -newkey rsa:1024 -nodes -keyout "$W/r.key" -subj "/CN=x" -out "$W/rsa.csr" 2>/dev/null
expect_refusal "2048" --spiffe-id spiffe://example.org/csr/a --csr "$W/rsa.csr"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:secp521r1 -nodes -keyout "$W/p.key" \
  -subj "/CN=x" -out "$W/p521.csr" 2>/dev/null
expect_refusal "P-256 or P-384" --spiffe-id spiffe://example.org/csr/a --csr "$W/p521.csr"
printf -- "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n" >"$W/junk.csr"
expect_refusal "malformed" --spiffe-id spiffe://example.org/csr/a --csr "$W/junk.csr"
# a valid CSR whose signature was tampered with
openssl req -in "$W/ok.csr" -outform DER -out "$W/ok.der"
python3 -c "
import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[-3]^=1; open(sys.argv[2],'wb').write(b)" "$W/ok.der" "$W/bad.der"
expect_refusal "signature" --spiffe-id spiffe://example.org/csr/a --csr "$W/bad.der"
echo "ok"
