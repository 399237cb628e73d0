#!/usr/bin/env bash
# keybridge-ca with Secrets Manager targets, against keybridge-cache: SPIRE SVIDStore JSON in
# SecretBinary with ownership tags; refusal of a foreign secret (no tags), of another encryption
# key; restore of a secret pending deletion; remove = DeleteSecret with a 7-day window; the
# account in the ARN must be the registration's. Then the daemon: N registrations with a 60 s TTL
# kept fresh (every stored SVID checked for remaining life), and an outage: stop the CA, every
# stored SVID is still valid for at least its availability target from the moment of the stop.
# Default: 20 registrations for ~40 s. KB_LONG_TESTS=1: 200 registrations for 5 minutes.
set -euo pipefail
CA="${KB_BUILD_DIR:?}/keybridge-ca"
CACHE="${KB_BUILD_DIR:?}/keybridge-cache"
W="$(mktemp -d /tmp/kbca-sm.XXXXXX)"
CPID="" SPID=""
cleanup() {
  for p in $SPID $CPID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf -- "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$W"/*.log; do echo "== $f" >&2; tail -5 "$f" >&2; done; exit 1; }
[ -x "$CACHE" ] || { echo "keybridge-cache not built; skipping"; exit 0; }
if [ "${KB_LONG_TESTS:-0}" = 1 ]; then N=200; SOAK=300; else N=20; SOAK=40; fi

. "${KB_SOURCE_DIR:?}/tests/lib/cache.sh"
kb_cache_start "$W" 111122223333 || fail "cache did not start"
CPID=$KB_CACHE_PID
PORT=$KB_CACHE_PORT
mkdir -m 700 "$W/keys"
cat >"$W/policy.json" <<JSON
{"rules": [{"path_prefix": "/lambda/acct/{account}/", "target": "secretsmanager",
            "account": "{account}"},
           {"path_prefix": "/lambda/acct/999999999999/", "target": "secretsmanager",
            "account": "111122223333"}]}
JSON
cat >"$W/ca.ini" <<CONF
[ca]
db = $W/ca.db
key = file
key_dir = $W/keys
[policy]
file = $W/policy.json
[server]
listen = 127.0.0.1:0
svid_dir = $W/server
[aws]
region = us-east-1
endpoint = http://127.0.0.1:$PORT
credentials_file = $W/ca.creds
CONF
ca() { "$CA" -c "$W/ca.ini" "$@"; }
ca init --trust-domain example.org >/dev/null 2>&1 || fail init
export AWS_ACCESS_KEY_ID=AKIDCATEST0000000001 AWS_SECRET_ACCESS_KEY=ca-secret-key-1 AWS_DEFAULT_REGION=us-east-1
export KB_EP="http://127.0.0.1:$PORT"

py() { python3 - "$@"; }
cat >"$W/sm.py" <<'PY'
import base64, json, os, sys, time, datetime, subprocess
import boto3
from cryptography import x509
from cryptography.hazmat.primitives import serialization
sm = boto3.client("secretsmanager", endpoint_url=os.environ["KB_EP"])
def svid(name):
    v = sm.get_secret_value(SecretId=name)
    d = json.loads(v["SecretBinary"])
    assert set(d) == {"spiffeID", "x509SVID", "x509SVIDKey", "bundle"}, d.keys()  # no empty federatedBundles (SPIRE omits it)
    leaf = x509.load_pem_x509_certificates(d["x509SVID"].encode())[0]
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [d["spiffeID"]], (uris, d["spiffeID"])
    k = serialization.load_pem_private_key(d["x509SVIDKey"].encode(), None)
    assert k.public_key().public_numbers() == leaf.public_key().public_numbers()
    return d, leaf
cmd = sys.argv[1]
if cmd == "check":
    name, want = sys.argv[2], sys.argv[3]
    d, leaf = svid(name)
    assert d["spiffeID"] == want
    open(sys.argv[4] + "/svid.pem", "w").write(d["x509SVID"])
    open(sys.argv[4] + "/bundle.pem", "w").write(d["bundle"])
    tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=name)["Tags"]}
    assert tags == {"keybridge:trust-domain": "example.org", "keybridge:registration": want}, tags
elif cmd == "create-foreign":
    sm.create_secret(Name=sys.argv[2], SecretString="not ours")
elif cmd == "create-kms":
    sm.create_secret(Name=sys.argv[2], SecretString="x", KmsKeyId="alias/other",
        Tags=[{"Key": "keybridge:trust-domain", "Value": "example.org"},
              {"Key": "keybridge:registration", "Value": sys.argv[3]}])
elif cmd == "value":
    print(sm.get_secret_value(SecretId=sys.argv[2]).get("SecretString", "binary"))
elif cmd == "delete":
    sm.delete_secret(SecretId=sys.argv[2], RecoveryWindowInDays=7)
elif cmd == "deleted":
    print("yes" if "DeletedDate" in sm.describe_secret(SecretId=sys.argv[2]) else "no")
elif cmd == "remaining":  # min remaining life at time argv[2] over names; fails if any is missing
    now = float(sys.argv[2]); m = None
    for name in sys.argv[3:]:
        d, leaf = svid(name)
        r = leaf.not_valid_after_utc.timestamp() - now
        m = r if m is None else min(m, r)
    print(int(m))
PY
smpy() { python3 "$W/sm.py" "$@"; }

# --- one registration, all the checks ---
ID=spiffe://example.org/lambda/acct/111122223333/fn/report
R="$(ca register --spiffe-id "$ID" --target secretsmanager:111122223333:spiffe/report --ttl 10m 2>/dev/null)"
ca renew-once >/dev/null 2>"$W/r1.log" || fail "renew-once"
mkdir "$W/got"
smpy check spiffe/report "$ID" "$W/got" || fail "stored SVID"
openssl verify -purpose sslclient -CAfile "$W/got/bundle.pem" "$W/got/svid.pem" >/dev/null || fail verify
# the account in the ARN must be the registration's: the policy lets /999999999999/ IDs into
# account 111122223333 only if the target says so; a target naming 999999999999 cannot be written
# with credentials of account 111122223333
ca register --spiffe-id spiffe://example.org/lambda/acct/999999999999/fn/x --target secretsmanager:999999999999:spiffe/x >/dev/null 2>&1 || fail "register 999"
# foreign secret (no tags) and another KMS key: refused, value untouched
smpy create-foreign spiffe/foreign
ca register --spiffe-id spiffe://example.org/lambda/acct/111122223333/fn/foreign --target secretsmanager:111122223333:spiffe/foreign >/dev/null 2>&1
smpy create-kms spiffe/kms spiffe://example.org/lambda/acct/111122223333/fn/kms
ca register --spiffe-id spiffe://example.org/lambda/acct/111122223333/fn/kms --target secretsmanager:111122223333:spiffe/kms >/dev/null 2>&1
if ca renew-once >/dev/null 2>"$W/r2.log"; then fail "foreign/kms/wrong-account secrets were written"; fi
[ "$(smpy value spiffe/foreign)" = "not ours" ] || fail "foreign secret overwritten"
[ "$(smpy value spiffe/kms)" = "x" ] || fail "kms secret overwritten"
grep -q "lacks keybridge's ownership tags" "$W/r2.log" || fail "no ownership refusal logged"
grep -q "another key" "$W/r2.log" || fail "no kms refusal logged"
grep -q "another AWS account" "$W/r2.log" || fail "no account refusal logged"
if smpy value spiffe/x >/dev/null 2>&1; then fail "key material sent to a secret in the wrong account"; fi
# pending deletion: restored by the next renewal
smpy delete spiffe/report
[ "$(smpy deleted spiffe/report)" = yes ] || fail "delete"
sqlite3 "$W/ca.db" "UPDATE reg SET next_renew = 0 WHERE rid = $R" 2>/dev/null || \
  python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('UPDATE reg SET next_renew=0 WHERE rid=?', (int(sys.argv[2]),)); c.commit()" "$W/ca.db" "$R"
ca renew-once >/dev/null 2>&1 || true
[ "$(smpy deleted spiffe/report)" = no ] || fail "not restored"
smpy check spiffe/report "$ID" "$W/got" || fail "stored SVID after restore"
# remove: DeleteSecret with a recovery window (still describable, DeletedDate set)
ca remove --id "$R" >/dev/null 2>&1 || fail remove
[ "$(smpy deleted spiffe/report)" = yes ] || fail "remove did not delete"
for id in $(ca list | awk '{print $1}'); do ca remove --id "$id" >/dev/null 2>&1 || true; done

# --- soak + outage ---
NAMES=()
for i in $(seq 1 "$N"); do
  ca register --spiffe-id "spiffe://example.org/lambda/acct/111122223333/fn/f$i" \
    --target "secretsmanager:111122223333:soak/f$i" --ttl 1m --availability 20s >/dev/null 2>&1 || fail "register $i"
  NAMES+=("soak/f$i")
done
"$CA" -c "$W/ca.ini" serve >/dev/null 2>"$W/serve.log" &  # not through ca(): $! must be the server itself
SPID=$!
for _ in $(seq 1 300); do smpy remaining "$(date +%s.%N)" "${NAMES[@]}" >/dev/null 2>&1 && break; sleep 0.2; done
end=$((SECONDS + SOAK))
while [ $SECONDS -lt $end ]; do
  m="$(smpy remaining "$(date +%s.%N)" "${NAMES[@]}")" || fail "a stored SVID is missing"
  [ "$m" -ge 20 ] || fail "stored SVID with only $m s left (availability target 20 s)"
  sleep 5
done
# remaining life is measured from the moment of the stop, not from whenever python has started
# and fetched every secret (seconds on a loaded machine)
stop_at="$(date +%s.%N)"
kill "$SPID"; wait "$SPID" || true; SPID=""
m="$(smpy remaining "$stop_at" "${NAMES[@]}")"
[ "$m" -ge 20 ] || fail "after the CA stopped, an SVID has only $m s left (< availability 20 s)"
echo "ok (N=$N soak=${SOAK}s, min remaining at stop ${m}s)"
