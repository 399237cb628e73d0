#!/usr/bin/env bash
# keybridge-ca Secrets Manager targets, against keybridge-cache: (1) a refused target (a foreign
# secret) is checked before signing, so retries issue and audit nothing; (2) migration from
# SPIRE: a secret SPIRE's SVIDStore plugin wrote (tag spire-svid=true) is refused by default and
# adopted with register --adopt-spire-svid (keybridge's tags added, SVIDStore JSON written), but
# never one carrying another registration's keybridge tag or another KMS key.
set -euo pipefail
CA="${KB_BUILD_DIR:?}/keybridge-ca"
CACHE="${KB_BUILD_DIR:?}/keybridge-cache"
W="$(mktemp -d /tmp/kbca-adopt.XXXXXX)"
CPID=""
cleanup() {
  if [ -n "$CPID" ]; then kill "$CPID" 2>/dev/null || true; wait "$CPID" 2>/dev/null || true; fi
  rm -rf -- "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$W"/*.log; do echo "== $f" >&2; tail -5 "$f" >&2; done; exit 1; }

. "${KB_SOURCE_DIR:?}/tests/lib/cache.sh"
kb_cache_start "$W" 111122223333 || fail "cache did not start"
CPID=$KB_CACHE_PID
PORT=$KB_CACHE_PORT
mkdir -m 700 "$W/keys"
echo '{"rules": [{"path_prefix": "/lambda/acct/{account}/", "target": "secretsmanager", "account": "{account}"},
                 {"path_prefix": "/ns/", "target": "dir", "dir_root": "/tmp"}]}' >"$W/policy.json"
cat >"$W/ca.ini" <<CONF
[ca]
db = $W/ca.db
key = file
key_dir = $W/keys
[policy]
file = $W/policy.json
[aws]
region = us-east-1
endpoint = http://127.0.0.1:$PORT
credentials_file = $W/ca.creds
CONF
ca() { "$CA" -c "$W/ca.ini" "$@"; }
ca init --trust-domain example.org >/dev/null 2>&1 || fail init
export AWS_ACCESS_KEY_ID=AKIDCATEST0000000001 AWS_SECRET_ACCESS_KEY=ca-secret-key-1 AWS_DEFAULT_REGION=us-east-1
export KB_EP="http://127.0.0.1:$PORT"
cat >"$W/sm.py" <<'PY'
import json, os, sys
import boto3
sm = boto3.client("secretsmanager", endpoint_url=os.environ["KB_EP"])
cmd, name = sys.argv[1], sys.argv[2]
if cmd == "create":  # name value tags-json [kms]
    kw = dict(Name=name, SecretString=sys.argv[3],
              Tags=[{"Key": k, "Value": v} for k, v in json.loads(sys.argv[4]).items()])
    if len(sys.argv) > 5: kw["KmsKeyId"] = sys.argv[5]
    sm.create_secret(**kw)
elif cmd == "value":
    v = sm.get_secret_value(SecretId=name)
    print(v.get("SecretString") or json.loads(v["SecretBinary"])["spiffeID"])
elif cmd == "tags":
    print(json.dumps({t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=name)["Tags"]}, sort_keys=True))
PY
smpy() { python3 "$W/sm.py" "$@"; }
audits() { ca audit 2>/dev/null | grep -c -- "$1" || true; }
ACCT=111122223333
id() { echo "spiffe://example.org/lambda/acct/$ACCT/fn/$1"; }

# (1) a foreign secret: refused before signing, on every retry
smpy create foreign "not ours" '{}'
ca register --spiffe-id "$(id foreign)" --target "secretsmanager:$ACCT:foreign" >/dev/null 2>&1 || fail "register foreign"
for i in 1 2 3; do
  if ca renew-once --force >/dev/null 2>>"$W/r1.log"; then fail "foreign secret written (try $i)"; fi
done
[ "$(audits "$(id foreign)")" = 0 ] || fail "a refused target issued certificates: $(ca audit 2>/dev/null)"
grep -q '"svid_target_refused"' "$W/r1.log" || fail "no svid_target_refused logged"
grep -q "lacks keybridge's ownership tags" "$W/r1.log" || fail "refusal reason not logged"
[ "$(smpy value foreign)" = "not ours" ] || fail "foreign secret changed"
RID="$(ca list | awk -v id="$(id foreign)" '$2 == id {print $1}')"
ca remove --id "$RID" >/dev/null 2>&1 || true  # its secret is not ours: not deleted
[ "$(smpy value foreign)" = "not ours" ] || fail "remove touched the foreign secret"

# (2) SPIRE's secret: refused by default, adopted with --adopt-spire-svid
SPIRE_DOC='{"spiffeID":"spiffe://example.org/lambda/acct/111122223333/fn/report","x509SVID":"old","x509SVIDKey":"old","bundle":"old"}'
smpy create spire/report "$SPIRE_DOC" '{"spire-svid": "true"}'
ca register --spiffe-id "$(id report)" --target "secretsmanager:$ACCT:spire/report" >/dev/null 2>&1 || fail "register report"
if ca renew-once --force >/dev/null 2>"$W/r2.log"; then fail "SPIRE secret taken over without --adopt-spire-svid"; fi
[ "$(audits "$(id report)")" = 0 ] || fail "refused SPIRE secret: certificate issued"
[ "$(smpy value spire/report)" = "$SPIRE_DOC" ] || fail "SPIRE secret changed without adoption"
RID="$(ca list | awk -v id="$(id report)" '$2 == id {print $1}')"
ca remove --id "$RID" >/dev/null 2>&1 || true
[ "$(smpy value spire/report)" = "$SPIRE_DOC" ] || fail "remove deleted SPIRE's secret"
ca register --spiffe-id "$(id report)" --target "secretsmanager:$ACCT:spire/report" --adopt-spire-svid >/dev/null 2>&1 \
  || fail "register --adopt-spire-svid"
ca list | grep "adopt_spire=yes" >/dev/null || fail "list does not show the adoption flag"
ca renew-once --force >/dev/null 2>"$W/r3.log" || fail "adoption renewal"
grep -q '"sm_secret_adopted"' "$W/r3.log" || fail "adoption not logged"
[ "$(smpy value spire/report)" = "$(id report)" ] || fail "adopted secret lacks our SVIDStore JSON"
[ "$(smpy tags spire/report)" = "{\"keybridge:registration\": \"$(id report)\", \"keybridge:trust-domain\": \"example.org\", \"spire-svid\": \"true\"}" ] \
  || fail "adopted tags: $(smpy tags spire/report)"
[ "$(audits "$(id report)")" = 1 ] || fail "adoption: want 1 audit row"

# never adopted: a SPIRE secret claimed by another registration, or under another KMS key
smpy create spire/claimed "x" "{\"spire-svid\": \"true\", \"keybridge:registration\": \"$(id other)\"}"
smpy create spire/kms "y" '{"spire-svid": "true"}' alias/other
ca register --spiffe-id "$(id claimed)" --target "secretsmanager:$ACCT:spire/claimed" --adopt-spire-svid >/dev/null 2>&1 || fail "register claimed"
ca register --spiffe-id "$(id kms)" --target "secretsmanager:$ACCT:spire/kms" --adopt-spire-svid >/dev/null 2>&1 || fail "register kms"
if ca renew-once --force >/dev/null 2>"$W/r4.log"; then fail "claimed/kms SPIRE secrets adopted"; fi
[ "$(smpy value spire/claimed)" = x ] || fail "claimed secret changed"
[ "$(smpy value spire/kms)" = y ] || fail "kms secret changed"
grep -q "another key" "$W/r4.log" || fail "kms refusal not logged"
[ "$(audits "$(id claimed)")" = 0 ] && [ "$(audits "$(id kms)")" = 0 ] || fail "refused adoptions issued certificates"
[ "$(smpy tags spire/kms)" = '{"spire-svid": "true"}' ] || fail "kms secret was tagged: $(smpy tags spire/kms)"

# --adopt-spire-svid is for Secrets Manager targets only
if err="$(ca register --spiffe-id spiffe://example.org/ns/a --target dir:/tmp/kbca-x --adopt-spire-svid 2>&1)"; then
  fail "--adopt-spire-svid accepted for a dir: target"
fi
grep -q "for secretsmanager" <<<"$err" || fail "dir adopt message: $err"
echo ok
