#!/usr/bin/env bash
# keybridge-ca init: trust domains up to SPIFFE's 255 bytes (longer than an X.509 OU's 64), and
# failures that name their cause (trust-domain rule, SOFTHSM2_CONF, token, another trust domain,
# no CA yet) instead of a bare error code or "no active CA".
set -euo pipefail
B="${KB_BUILD_DIR:?}/keybridge-ca"
. "${KB_SOURCE_DIR:?}/tests/lib/softhsm.sh"
W="$(mktemp -d /tmp/kbca-init.XXXXXX)"
cleanup() { kb_softhsm_cleanup; rm -rf -- "$W"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

file_ini() { # name
  mkdir -m 700 -p "$W/keys-$1"
  printf '[ca]\ndb = %s\nkey = file\nkey_dir = %s\n' "$W/$1.db" "$W/keys-$1" >"$W/$1.ini"
}
expect_fail() { # msg ini cmd...
  local msg="$1" ini="$2" err; shift 2
  if err="$("$B" -c "$ini" "$@" 2>&1 >/dev/null)"; then fail "accepted: $*"; fi
  grep -qi -- "$msg" <<<"$err" || fail "message for $* was: $err (want: $msg)"
}

# A 253-byte trust domain (labels of 63): init, issue, and the SVID verifies.
L63="$(printf 'a%.0s' $(seq 63))"
TD="$L63.$L63.$L63.$(printf 'b%.0s' $(seq 61))"
[ "${#TD}" = 253 ] || fail "test TD is ${#TD} bytes"
file_ini long
"$B" -c "$W/long.ini" init --trust-domain "$TD" >/dev/null || fail "init with a 253-byte trust domain"
"$B" -c "$W/long.ini" issue --spiffe-id "spiffe://$TD/ns/a" --out "$W/long-out" >/dev/null \
  || fail "issue under a 253-byte trust domain"
openssl verify -purpose sslclient -CAfile "$W/long-out/bundle.pem" "$W/long-out/svid.pem" >/dev/null \
  || fail "long-TD SVID does not verify"
openssl x509 -in "$W/long-out/bundle.pem" -noout -ext subjectAltName | grep "URI:spiffe://$TD" >/dev/null \
  || fail "long-TD root lacks its URI SAN"
# a trust domain of at most 64 bytes still has its OU
file_ini ou
"$B" -c "$W/ou.ini" init --trust-domain "$L63" >/dev/null || fail "init 63-byte TD"
"$B" -c "$W/ou.ini" bundle | openssl x509 -noout -subject | grep "OU = $L63" >/dev/null || fail "OU missing"

# trust-domain rules are named; nothing is created
file_ini bad
expect_fail "255" "$W/bad.ini" init --trust-domain "$L63.$L63.$L63.$L63.x"
expect_fail "upper" "$W/bad.ini" init --trust-domain Example.org
expect_fail "scheme\|character" "$W/bad.ini" init --trust-domain "spiffe://example.org"
[ -z "$(ls -A "$W/keys-bad")" ] || fail "a key was created for a refused trust domain"
# issue before init: no active CA
expect_fail "no active CA: run keybridge-ca init" "$W/bad.ini" issue --spiffe-id spiffe://example.org/a --out "$W/x"
# ... and the log line at the failing point names what was not found
expect_fail '"event":"ca_trust_domain_missing"' "$W/bad.ini" issue --spiffe-id spiffe://example.org/a --out "$W/x"
# init into another trust domain's database
expect_fail "already belongs to trust domain $L63" "$W/ou.ini" init --trust-domain example.org

# PKCS#11: a missing SOFTHSM2_CONF, an unknown token, a wrong module are named
kb_softhsm_make kbca-init
cat >"$W/hsm.ini" <<CONF
[ca]
db = $W/hsm.db
key = pkcs11
[pkcs11]
module = $KB_HSM_MODULE
token = $KB_HSM_LABEL
pin_file = $KB_HSM_PIN_FILE
CONF
sed "s/^token = .*/token = no-such-token/" "$W/hsm.ini" | sed "s#$W/hsm.db#$W/hsm2.db#" >"$W/notoken.ini"
sed "s#^module = .*#module = $W/nope.so#" "$W/hsm.ini" | sed "s#$W/hsm.db#$W/hsm3.db#" >"$W/nomod.ini"
expect_fail "no initialised token labelled 'no-such-token'" "$W/notoken.ini" init --trust-domain example.org
expect_fail "module $W/nope.so cannot be read" "$W/nomod.ini" init --trust-domain example.org
SOFTHSM2_CONF="$W/missing.conf" expect_fail "SOFTHSM2_CONF names $W/missing.conf" "$W/hsm.ini" \
  init --trust-domain example.org
"$B" -c "$W/hsm.ini" init --trust-domain example.org >/dev/null || fail "hsm init"
# after init, a missing SOFTHSM2_CONF/token is named, not "no active CA"
for msg_env in "SOFTHSM2_CONF names:SOFTHSM2_CONF=$W/missing.conf" \
               "no initialised token labelled:SOFTHSM2_CONF=$W/empty.conf"; do
  msg="${msg_env%%:*}"; envv="${msg_env#*:}"
  mkdir -p "$W/empty-tokens"; printf 'directories.tokendir = %s\n' "$W/empty-tokens" >"$W/empty.conf"
  if err="$(env "$envv" "$B" -c "$W/hsm.ini" issue --spiffe-id spiffe://example.org/a --out "$W/y" 2>&1)"; then
    fail "issue worked with $envv"
  fi
  grep -q "$msg" <<<"$err" || fail "issue with $envv said: $err"
  if grep -q "no active CA" <<<"$err"; then fail "said no active CA: $err"; fi
done
if err="$(env -u SOFTHSM2_CONF "$B" -c "$W/hsm.ini" issue --spiffe-id spiffe://example.org/a --out "$W/y" 2>&1)"; then
  fail "issue worked without SOFTHSM2_CONF"
fi
grep -q "SOFTHSM2_CONF" <<<"$err" || fail "no SOFTHSM2_CONF in: $err"
"$B" -c "$W/hsm.ini" issue --spiffe-id spiffe://example.org/a --out "$W/ok" >/dev/null || fail "hsm issue"
echo ok
