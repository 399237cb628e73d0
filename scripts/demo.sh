#!/usr/bin/env bash
# The main job, end to end, on the embedded defaults (SQLite + SoftHSM2), all on loopback:
#
#  1. keybridge-cache (Secrets Manager-compatible) and keybridge-ca (CA key in its own SoftHSM2
#     token) start; the CA's dir: registrations keep keybridged's and its own server SVIDs (and
#     the admin's) fresh on disk, and a Secrets Manager registration keeps the application's SVID
#     fresh in the cache as SPIRE SVIDStore JSON.
#  2. keybridged: store and master key bootstrapped in a fresh SoftHSM2 token; the in-process
#     (--local) admin flow: group, client, grant, a secret in two versions read back as the admin
#     and the client, another group's secret indistinguishable from a missing one, the master key
#     non-extractable, no plaintext in the database, the audit chain verified.
#  3. keybridged serves over mTLS with the CA-issued SVID; the admin CLI (remote mode, server
#     SPIFFE ID pinned) creates the cloud application: groups, a cloud client, secrets opted in to
#     cloud sync and one that is not.
#  4. keybridge-sync, holding only AWS credentials and the name of its SVID secret, syncs into the
#     cache: the first run creates, the second changes nothing, a changed secret updates, a removed
#     grant deletes (after the mass-delete guard refused it once), and with keybridged stopped the
#     sync fails and leaves the cache exactly as it was.
#  5. The AWS CLI reads a synced secret from keybridge-cache; the environment for local function
#     code is printed.
#
# Everything lives in a temporary directory removed at the end (KEEP=1 keeps it).
#
#   scripts/demo.sh            run it all (under a minute after the first build), then stop
#   scripts/demo.sh --serve    ... then keep the three servers running until Ctrl-C, to point
#                              local function code at keybridge-cache (the printed environment)
# Knobs (used by tests/integration/test_e2e.sh):
#   KB_BUILD_DIR=DIR   use the programs already built there (no deps.sh, no build)
#   KB_E2E=1           test mode: 60-second SVIDs, and the run spans their rotation: every identity
#                      (keybridged, keybridge-ca, admin, the application's stored SVID) is
#                      re-issued during the run and the servers must serve the new certificates
#                      they pick up from disk (asserted); takes about two minutes.
set -euo pipefail
SERVE=0
case "${1:-}" in
  --serve) SERVE=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  "") ;;
  *)
    echo "usage: scripts/demo.sh [--serve]" >&2
    exit 2
    ;;
esac
cd "$(dirname "$0")/.."
ROOT=$PWD
E2E="${KB_E2E:-0}"
if [ -n "${KB_BUILD_DIR:-}" ]; then
  BUILD="$KB_BUILD_DIR"
else
  scripts/deps.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j "$(nproc)" \
    --target keybridged keybridge keybridge-ca keybridge-cache keybridge-sync >/dev/null
  BUILD="$ROOT/build"
fi
for p in keybridged keybridge keybridge-ca keybridge-cache keybridge-sync; do
  [ -x "$BUILD/$p" ] || { echo "FAIL: $BUILD/$p is not built" >&2; exit 1; }
done
if [ "$E2E" = 1 ]; then
  TTL=60s AVAIL=15s TTL_S=60
else
  TTL=1h AVAIL=10m TTL_S=3600
fi

WORK=$(mktemp -d /tmp/keybridge-demo.XXXXXX)
chmod 700 "$WORK"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
CACHE_PID="" CA_PID="" KBD_PID=""
stop_pid() { # stop_pid PID: SIGTERM, wait (never a broad kill)
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop_checked() { # stop_checked NAME PID: SIGTERM; the server must exit 0 with no sanitizer report
  local rc=0
  kill -TERM "$2" 2>/dev/null || true
  wait "$2" || rc=$?
  [ "$rc" = 0 ] || fail "$1 exited with $rc on SIGTERM"
  if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$LOGS/$1.log"; then
    fail "$1: sanitizer report in its log"
  fi
}
cleanup() {
  local rc=$?
  stop_pid "$KBD_PID"
  stop_pid "$CA_PID"
  stop_pid "$CACHE_PID"
  if [ "$rc" -ne 0 ]; then
    echo "FAILED (exit $rc); the programs' logs:" >&2
    for f in "$LOGS"/*.log; do
      [ -s "$f" ] || continue
      echo "==== $f (last 40 lines)" >&2
      tail -n 40 "$f" >&2
    done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf -- "$WORK"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ok() { echo "  ok: $*"; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # wait_port PORT PID NAME
  local i
  for i in $(seq 1 200); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || fail "$3 exited at start"
    sleep 0.05
  done
  fail "$3 did not listen on 127.0.0.1:$1"
}

# ---- identities ------------------------------------------------------------------------------
TD=example.org
ADMIN=spiffe://$TD/ns/ops/sa/admin
APP=spiffe://$TD/ns/payments/sa/api           # a data-center client
SERVER_ID=spiffe://$TD/keybridged
CA_ID=spiffe://$TD/keybridge-ca
ACCOUNT=111122223333
SYNC_ID=spiffe://$TD/lambda/acct/$ACCOUNT/fn/payments-sync # cloud client: /lambda/ prefix
APPNAME=payments
SVID_SECRET=keybridge-svid/payments-sync
# keybridge-cache credentials, one per role, all in the application's account
CA_AKID=AKIDKEYBRIDGECA00001 CA_SKEY=ca-demo-secret-$RANDOM$RANDOM
SYNC_AKID=AKIDKEYBRIDGESYNC001 SYNC_SKEY=sync-demo-secret-$RANDOM$RANDOM
FN_AKID=AKIDKEYBRIDGEFN00001 FN_SKEY=fn-demo-secret-$RANDOM$RANDOM
CACHE_PORT=$(free_port) CA_PORT=$(free_port) KBD_PORT=$(free_port) KBD_MPORT=$(free_port)
EP=http://127.0.0.1:$CACHE_PORT
SV="$WORK/svids" # dir: registrations live under here (the policy's dir_root)
mkdir -m 700 "$SV"

step "two SoftHSM2 tokens: keybridged's master key, the CA's signing key (separate PINs)"
. tests/lib/softhsm.sh
kb_softhsm_make keybridge "$WORK/hsm"
KBD_PIN_FILE="$KB_HSM_PIN_FILE"
CA_PIN_FILE="$WORK/hsm/ca-pin"
(umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$CA_PIN_FILE")
softhsm2-util --init-token --free --label kbca \
  --so-pin "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" --pin "$(cat "$CA_PIN_FILE")" >/dev/null
softhsm2-util --show-slots 2>/dev/null | grep -E "Label:" | sed 's/^ */  /'

step "keybridge-cache: a Secrets Manager-compatible cache on $EP"
"$BUILD/keybridge-cache" init-key --out "$WORK/cache.key" >/dev/null
(umask 077 && printf '%s %s %s\n' "$CA_AKID" "$CA_SKEY" "$ACCOUNT" "$SYNC_AKID" "$SYNC_SKEY" \
  "$ACCOUNT" "$FN_AKID" "$FN_SKEY" "$ACCOUNT" >"$WORK/cache.creds")
cat >"$WORK/cache.ini" <<CONF
[server]
listen = 127.0.0.1:$CACHE_PORT
threads = 2
[store]
path = $WORK/cache.db
key_file = $WORK/cache.key
[auth]
credentials_file = $WORK/cache.creds
[aws]
region = us-east-1
CONF
"$BUILD/keybridge-cache" --config "$WORK/cache.ini" serve 2>"$LOGS/keybridge-cache.log" &
CACHE_PID=$!
wait_port "$CACHE_PORT" "$CACHE_PID" keybridge-cache
ok "listening"

step "keybridge-ca: trust domain $TD, CA key in the SoftHSM2 token, registration policy"
(umask 077 && printf '%s %s\n' "$CA_AKID" "$CA_SKEY" >"$WORK/ca.creds")
# Which SPIFFE IDs may be stored where (DESIGN.md, Identity): the servers' and DC workloads' SVIDs
# only into directories under $SV, an ID under /lambda/acct/<n>/ only into account <n>.
cat >"$WORK/ca-policy.json" <<JSON
{"rules": [
  {"path_prefix": "/keybridged", "target": "dir", "dir_root": "$SV"},
  {"path_prefix": "/keybridge-ca", "target": "dir", "dir_root": "$SV"},
  {"path_prefix": "/ns/", "target": "dir", "dir_root": "$SV"},
  {"path_prefix": "/lambda/acct/{account}/", "target": "secretsmanager", "account": "{account}",
   "max_ttl": 86400}
],
 "server_names": [
  {"path_prefix": "/keybridged", "dns": ["localhost"], "ip": ["127.0.0.1", "::1"]}
]}
JSON
cat >"$WORK/ca.ini" <<CONF
[ca]
db = $WORK/ca.db
key = pkcs11
default_ttl = $TTL
[pkcs11]
module = $KB_HSM_MODULE
token = kbca
pin_file = $CA_PIN_FILE
[policy]
file = $WORK/ca-policy.json
[server]
listen = 127.0.0.1:$CA_PORT
threads = 1
svid_dir = $SV/keybridge-ca
spiffe_id = $CA_ID
[aws]
region = us-east-1
endpoint = $EP
credentials_file = $WORK/ca.creds
CONF
ca() { "$BUILD/keybridge-ca" --config "$WORK/ca.ini" "$@"; }
ca init --trust-domain "$TD" >/dev/null 2>>"$LOGS/keybridge-ca-cli.log"
ca bundle | openssl x509 -noout -subject -enddate | sed 's/^/  root: /'

step "registrations ($TTL SVIDs): keybridged, keybridge-ca itself, the admin (dir:), the application (Secrets Manager)"
reg() { ca register --ttl "$TTL" --availability "$AVAIL" "$@" 2>>"$LOGS/keybridge-ca-cli.log" >/dev/null; }
# keybridged's SVID also names its host (DNS/IP SANs): keysync and other clients that check
# the server's host name connect to https://localhost:PORT or https://127.0.0.1:PORT.
reg --spiffe-id "$SERVER_ID" --target "dir:$SV/keybridged" --dns localhost --ip 127.0.0.1
# The CA's own server SVID goes to [server] svid_dir; registering it too makes it follow the
# registration's TTL and renewal schedule like every other server SVID.
reg --spiffe-id "$CA_ID" --target "dir:$SV/keybridge-ca"
reg --spiffe-id "$ADMIN" --target "dir:$SV/admin"
reg --spiffe-id "$SYNC_ID" --target "secretsmanager:$ACCOUNT:$SVID_SECRET"
ca list | sed 's/^/  /'
# one pass now, so keybridged has its SVID before it starts; the daemon keeps them fresh
ca renew-once 2>>"$LOGS/keybridge-ca-cli.log" | sed 's/^/  /'
T0=$(date +%s)
for d in keybridged keybridge-ca admin; do
  openssl verify -purpose sslserver -CAfile "$SV/$d/bundle.pem" "$SV/$d/svid.pem" >/dev/null ||
    fail "$d SVID does not verify"
done
openssl verify -purpose sslserver -verify_hostname localhost -CAfile "$SV/keybridged/bundle.pem" \
  "$SV/keybridged/svid.pem" >/dev/null && openssl verify -purpose sslserver -verify_ip 127.0.0.1 \
  -CAfile "$SV/keybridged/bundle.pem" "$SV/keybridged/svid.pem" >/dev/null ||
  fail "keybridged SVID does not name localhost and 127.0.0.1"
"$BUILD/keybridge-ca" --config "$WORK/ca.ini" serve 2>"$LOGS/keybridge-ca.log" &
CA_PID=$!
wait_port "$CA_PORT" "$CA_PID" keybridge-ca
ok "keybridge-ca serving on 127.0.0.1:$CA_PORT as $CA_ID"

# AWS CLI as the function would run it (its own credential, the cache as endpoint)
awsc() {
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID="$FN_AKID" \
    AWS_SECRET_ACCESS_KEY="$FN_SKEY" AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$EP" "$@"
}
fp_file() { openssl x509 -in "$1" -noout -fingerprint -sha256 | cut -d= -f2; }
fp_peer() { # the certificate a server presents (the admin SVID as client certificate)
  openssl s_client -connect "127.0.0.1:$1" -cert "$SV/admin/svid.pem" -key "$SV/admin/svid.key" \
    -CAfile "$SV/admin/bundle.pem" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 | cut -d= -f2
}
presents_current() { # presents_current PORT FILE NAME: the server serves the SVID now on disk
  # Servers poll their files every second; a renewal can land between two reads, so compare a
  # few times before calling the certificate stale.
  local i
  for i in $(seq 1 20); do
    [ "$(fp_peer "$1")" = "$(fp_file "$2")" ] && return 0
    sleep 0.5
  done
  fail "$3 still presents an old certificate, not the one in $2"
}
stored_svid() { # the application's SVID as the CA stored it in the cache (SPIRE SVIDStore JSON)
  awsc secretsmanager get-secret-value --secret-id "$SVID_SECRET" --query SecretBinary \
    --output text | base64 -d >"$WORK/stored.json"
  jq -e --arg id "$SYNC_ID" '.spiffeID == $id and (.x509SVID | test("BEGIN CERTIFICATE"))
    and (.x509SVIDKey | test("BEGIN PRIVATE KEY")) and (.bundle | test("BEGIN CERTIFICATE"))' \
    "$WORK/stored.json" >/dev/null || fail "stored SVID is not SVIDStore JSON for $SYNC_ID"
  jq -r .x509SVID "$WORK/stored.json" >"$WORK/stored.pem"
}
stored_svid
openssl x509 -in "$WORK/stored.pem" -noout -ext subjectAltName -enddate | sed 's/^/  /'
GEN1_KBD=$(fp_file "$SV/keybridged/svid.pem")
GEN1_ADMIN=$(fp_file "$SV/admin/svid.pem")
GEN1_APP=$(fp_file "$WORK/stored.pem")
ok "application SVID stored in $SVID_SECRET (SecretBinary)"

step "keybridged: bootstrap the store and the master key in the SoftHSM2 token, first admin"
cat >"$WORK/keybridged.conf" <<CONF
[server]
listen = 127.0.0.1:$KBD_PORT
threads = 2
cert_file = $SV/keybridged/svid.pem
key_file = $SV/keybridged/svid.key
bundle_file = $SV/keybridged/bundle.pem
trust_domain = $TD
metrics_listen = 127.0.0.1:$KBD_MPORT
[store]
url = sqlite:$WORK/keybridged.db
[hsm]
keystore = pkcs11
module = $KB_HSM_MODULE
token_label = keybridge
key_label = keybridge-master
pin_file = $KBD_PIN_FILE
[clients]
cloud_prefixes = /lambda/
[audit]
anchor_file = $WORK/audit-anchor.json
CONF
"$BUILD/keybridged" --config "$WORK/keybridged.conf" bootstrap --admin-id "$ADMIN" \
  2>>"$LOGS/keybridged-local.log"
KB=("$BUILD/keybridge")
LOCAL=(--local "$WORK/keybridged.conf")

step "the master key is sensitive and never extractable (pkcs11-tool)"
# the PIN goes through the environment (--pin env:NAME), never on a command line
KB_DEMO_PIN="$(cat "$KBD_PIN_FILE")" pkcs11-tool --module "$KB_HSM_MODULE" --token-label keybridge \
  --login --pin env:KB_DEMO_PIN --list-objects --type secrkey 2>/dev/null |
  grep -E "Secret Key|label|Access" | sed 's/^/  /'

step "admin (--local, on the server host): group, client, grant; two secrets"
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
[ "$got" = "correct horse battery staple v2" ] || fail "wrong content"
old=$("${KB[@]}" "${LOCAL[@]}" --as "$APP" read db-password --version 1)
[ "$old" = "correct horse battery staple" ] || fail "wrong v1 content"

step "the client cannot read another group's secret (same answer as a missing one)"
set +e
"${KB[@]}" "${LOCAL[@]}" --as "$APP" read hr-token
a=$?
"${KB[@]}" "${LOCAL[@]}" --as "$APP" read no-such-secret
b=$?
set -e
[ $a -eq 5 ] && [ $b -eq 5 ] || fail "expected not found (5), got $a/$b"

step "the database holds no plaintext"
if grep -a -q "correct horse" "$WORK/keybridged.db"* 2>/dev/null; then
  fail "plaintext in the database"
fi
echo "  ok: no plaintext in $(ls "$WORK"/keybridged.db* | wc -l) database files"

step "audit: who fetched which version, and the chain verifies"
"${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" secret status db-password
"${KB[@]}" "${LOCAL[@]}" --as "$ADMIN" audit verify

step "keybridged serves over mTLS on 127.0.0.1:$KBD_PORT with its CA-issued SVID"
start_keybridged() {
  "$BUILD/keybridged" --config "$WORK/keybridged.conf" serve 2>>"$LOGS/keybridged.log" &
  KBD_PID=$!
  wait_port "$KBD_PORT" "$KBD_PID" keybridged
}
start_keybridged
# the SVID now on disk, not GEN1_KBD: with 60-second SVIDs (KB_E2E) the CA may already have
# renewed keybridged's during the local steps above (it renews with availability + 2 ticks left),
# and keybridged starts with whatever is current; that was the "does not present its SVID" flake
presents_current "$KBD_PORT" "$SV/keybridged/svid.pem" keybridged
ok "presents $SERVER_ID"

# The admin CLI in remote mode: the admin's SVID (kept fresh by the CA), keybridged's ID pinned.
cat >"$WORK/admin.conf" <<CONF
[client]
server_url = https://127.0.0.1:$KBD_PORT
server_id = $SERVER_ID
cert_file = $SV/admin/svid.pem
key_file = $SV/admin/svid.key
bundle_file = $SV/admin/bundle.pem
timeout = 10s
CONF
kb() {
  # The CA replaces svid.key and svid.pem by two renames (src/ca/ca_target.c): a CLI started
  # between them finds a key that does not match the certificate and stops before sending
  # anything ("cannot load the CLI's SVID"), so that failure alone is safe to retry.
  local i rc
  for i in 1 2 3; do
    rc=0
    "${KB[@]}" --config "$WORK/admin.conf" "$@" 2>"$WORK/kb.err" || rc=$?
    if [ "$rc" != 0 ] && grep -q "cannot load the CLI's SVID" "$WORK/kb.err"; then
      sleep 0.5
      continue
    fi
    break
  done
  cat "$WORK/kb.err" >&2
  return "$rc"
}

step "admin (remote, mTLS): the cloud application '$APPNAME' — groups, a cloud client, secrets"
kb group create billing --description "billing team" >/dev/null
kb client create "$SYNC_ID" --app "$APPNAME" --description "payments syncer (Lambda)" >/dev/null
kb member add "$SYNC_ID" payments >/dev/null
kb member add "$SYNC_ID" billing >/dev/null
printf 'sk_live_demo_%s' "$RANDOM" >"$WORK/stripe"
kb secret create stripe-key --content-file "$WORK/stripe" --cloud-sync --description "card API"
head -c 48 /dev/urandom >"$WORK/signing.bin"
printf '\377\376' >>"$WORK/signing.bin" # certainly not UTF-8: goes to SecretBinary
kb secret create signing-key --content-file "$WORK/signing.bin" --cloud-sync
printf 'postgres://ledger.internal/ledger' >"$WORK/ledger"
kb secret create ledger-dsn --content-file "$WORK/ledger" --description "data center only"
kb grant add billing stripe-key >/dev/null
kb grant add payments signing-key >/dev/null
kb grant add payments ledger-dsn >/dev/null
kb secret list
echo "  opted in to cloud sync: db-password, stripe-key, signing-key; ledger-dsn stays in the DC"

# ---- keybridge-sync ----------------------------------------------------------------------------
# It holds only the cache credential and the name of its SVID secret: the SVID itself is read
# from the cache at the start of every run (as on Lambda).
cat >"$WORK/sync.ini" <<CONF
[source]
url = https://127.0.0.1:$KBD_PORT
server_id = $SERVER_ID
svid_secret_id = $SVID_SECRET
[sink]
target = secretsmanager
regions = us-east-1
endpoint = $EP
CONF
SRC_RC=0
sync_run() { # sync_run NAME [ARGS]: summary in $WORK/sync-NAME.json, exit code in SRC_RC
  local n="$1"
  shift
  set +e
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_LAMBDA_RUNTIME_API \
    AWS_ACCESS_KEY_ID="$SYNC_AKID" AWS_SECRET_ACCESS_KEY="$SYNC_SKEY" AWS_REGION=us-east-1 \
    "$BUILD/keybridge-sync" --config "$WORK/sync.ini" sync "$@" \
    >"$WORK/sync-$n.json" 2>>"$LOGS/keybridge-sync.log"
  SRC_RC=$?
  set -e
  echo "  $n (exit $SRC_RC): $(jq -c '{ok, created, updated, unchanged, deleted, restored,
    deferred, failed, calls, hsm_fetches} + (if .error then {error} else {} end)' \
    "$WORK/sync-$n.json" 2>/dev/null || cat "$WORK/sync-$n.json")"
}
expect_sync() { # expect_sync NAME RC JQ-CONDITION
  [ "$SRC_RC" = "$2" ] || fail "sync $1: exit $SRC_RC, want $2"
  jq -e "$3" "$WORK/sync-$1.json" >/dev/null || fail "sync $1: want $3"
  ok "sync $1: $3"
}
value() { awsc secretsmanager get-secret-value --secret-id "keybridge/$APPNAME/$1" \
  --query "${2:-SecretString}" --output text; }
managed() { # sorted names of the application's secrets in the cache (not pending deletion)
  awsc secretsmanager list-secrets --output json |
    jq -r --arg p "keybridge/$APPNAME/" '.SecretList[] | select(.Name | startswith($p))
      | select(.DeletedDate == null) | .Name' | sort | tr '\n' ' '
}
snapshot() { # everything the sync could have changed: names, tags, versions, contents
  local n
  awsc secretsmanager list-secrets --output json >"$WORK/list.json"
  jq -S --arg p "keybridge/$APPNAME/" '[.SecretList[] | select(.Name | startswith($p))
    | {Name, DeletedDate, Tags: ((.Tags // []) | sort_by(.Key)),
       Versions: .SecretVersionsToStages}] | sort_by(.Name)' "$WORK/list.json"
  for n in $(jq -r --arg p "keybridge/$APPNAME/" '.SecretList[] | select(.Name | startswith($p))
    | select(.DeletedDate == null) | .Name' "$WORK/list.json" | sort); do
    awsc secretsmanager get-secret-value --secret-id "$n" --output json |
      jq -S '{Name, VersionId, SecretString, SecretBinary, VersionStages}'
  done
}

step "sync 1: creates the three opted-in secrets the application may read"
sync_run first
expect_sync first 0 '.ok and .application == "payments" and .created == 3 and .updated == 0
  and .deleted == 0 and .failed == 0 and .calls["keybridged.list"] == 1'
[ "$(managed)" = "keybridge/payments/db-password keybridge/payments/signing-key keybridge/payments/stripe-key " ] ||
  fail "managed secrets: $(managed)"
[ "$(value db-password)" = "correct horse battery staple v2" ] || fail "db-password content"
[ "$(value stripe-key)" = "$(cat "$WORK/stripe")" ] || fail "stripe-key content"
value signing-key SecretBinary | base64 -d | cmp -s - "$WORK/signing.bin" ||
  fail "signing-key is not the binary content in SecretBinary"
if awsc secretsmanager describe-secret --secret-id keybridge/payments/ledger-dsn >/dev/null 2>&1; then
  fail "ledger-dsn (not opted in) reached the cache"
fi
if awsc secretsmanager describe-secret --secret-id keybridge/payments/hr-token >/dev/null 2>&1; then
  fail "hr-token (not granted) reached the cache"
fi
ok "UTF-8 in SecretString, binary in SecretBinary; ledger-dsn (not opted in) and hr-token (not granted) absent"

step "sync 2: nothing changed — one list call to keybridged, no content fetch, no write"
sync_run second
expect_sync second 0 '.ok and .unchanged == 3 and .created == 0 and .updated == 0
  and .deleted == 0 and .hsm_fetches == 0 and .calls["keybridged.list"] == 1
  and .calls["ListSecrets"] == 1 and ((.calls["keybridged.batchGet"] // 0) == 0)
  and ((.calls["PutSecretValue"] // 0) == 0) and ((.calls["CreateSecret"] // 0) == 0)'

step "a new version of db-password: sync 3 updates exactly that secret"
printf 'correct horse battery staple v3' >"$WORK/db3"
kb secret put db-password --content-file "$WORK/db3"
sync_run third
expect_sync third 0 '.ok and .updated == 1 and .unchanged == 2 and .created == 0 and .deleted == 0
  and .hsm_fetches == 1'
[ "$(value db-password)" = "correct horse battery staple v3" ] || fail "db-password not updated"
ok "the cache serves v3"

if [ "$E2E" = 1 ]; then
  # Every SVID issued at T0 expires at T0+60 s. Past that, only re-issued SVIDs can work: the
  # servers must have reloaded theirs from disk, the syncer must have re-read its stored SVID.
  step "rotation: waiting until every first-generation SVID has expired (T0+$((TTL_S + 5)) s)"
  while [ "$(date +%s)" -lt $((T0 + TTL_S + 5)) ]; do sleep 1; done
  now=$(date +%s)
  for f in "$SV/keybridged/svid.pem" "$SV/keybridge-ca/svid.pem" "$SV/admin/svid.pem"; do
    openssl x509 -in "$f" -noout -checkend 0 >/dev/null || fail "$f has expired: not renewed"
  done
  [ "$(fp_file "$SV/keybridged/svid.pem")" != "$GEN1_KBD" ] || fail "keybridged SVID not renewed"
  [ "$(fp_file "$SV/admin/svid.pem")" != "$GEN1_ADMIN" ] || fail "admin SVID not renewed"
  # what the servers present is the current file (polled and reloaded without a restart)
  presents_current "$KBD_PORT" "$SV/keybridged/svid.pem" keybridged
  presents_current "$CA_PORT" "$SV/keybridge-ca/svid.pem" keybridge-ca
  stored_svid
  for f in "$SV/keybridged/svid.pem" "$SV/keybridge-ca/svid.pem" "$SV/admin/svid.pem" \
    "$WORK/stored.pem"; do
    life=$(($(date -d "$(openssl x509 -in "$f" -noout -enddate | cut -d= -f2)" +%s) -
      $(date -d "$(openssl x509 -in "$f" -noout -startdate | cut -d= -f2)" +%s)))
    [ "$life" -le $((TTL_S + 120)) ] || fail "$f lives $life s, want the registration's $TTL"
  done
  grep -q '"tls_reloaded"' "$LOGS/keybridged.log" || fail "keybridged logged no TLS reload"
  grep -q '"tls_reloaded"' "$LOGS/keybridge-ca.log" || fail "keybridge-ca logged no TLS reload"
  [ "$(fp_file "$WORK/stored.pem")" != "$GEN1_APP" ] || fail "stored application SVID not renewed"
  openssl x509 -in "$WORK/stored.pem" -noout -checkend 0 >/dev/null ||
    fail "the stored application SVID has expired"
  ok "keybridged, keybridge-ca, admin and application SVIDs re-issued; servers serve the new ones"
fi

step "a removed grant: billing no longer holds stripe-key"
kb grant remove billing stripe-key >/dev/null
snapshot >"$WORK/before-guard.json"
sync_run guarded
# 1 of 3 managed secrets is over max_delete_fraction (10 %): nothing is deleted, the run fails
expect_sync guarded 1 '(.ok | not) and .deleted == 0'
snapshot >"$WORK/after-guard.json"
cmp -s "$WORK/before-guard.json" "$WORK/after-guard.json" || fail "the refused run changed the cache"
ok "the mass-delete guard refused; cache unchanged"
sync_run fourth --allow-mass-delete
expect_sync fourth 0 '.ok and .deleted == 1 and .unchanged == 2 and .created == 0'
[ "$(managed)" = "keybridge/payments/db-password keybridge/payments/signing-key " ] ||
  fail "managed secrets after the delete: $(managed)"
awsc secretsmanager describe-secret --secret-id keybridge/payments/stripe-key --output json |
  jq -e '.DeletedDate != null' >/dev/null || fail "stripe-key not pending deletion"
ok "stripe-key deleted with a recovery window (DeletedDate set)"

if [ "$E2E" = 1 ]; then
  # a second rotation of every identity: the second generation (issued ~T0+30 s) expires
  # around T0+90 s; the syncs and the admin CLI after that use the third.
  step "second rotation: waiting until T0+$((TTL_S * 3 / 2 + 10)) s"
  while [ "$(date +%s)" -lt $((T0 + TTL_S * 3 / 2 + 10)) ]; do sleep 1; done
  presents_current "$KBD_PORT" "$SV/keybridged/svid.pem" keybridged
  presents_current "$CA_PORT" "$SV/keybridge-ca/svid.pem" keybridge-ca
  kb secret list >/dev/null || fail "admin CLI after the second rotation"
  sync_run fifth
  expect_sync fifth 0 '.ok and .unchanged == 2 and .created == 0 and .updated == 0 and .deleted == 0'
fi

step "keybridged stopped: the sync fails and leaves the cache exactly as it was"
printf 'correct horse battery staple v4' >"$WORK/db4"
kb secret put db-password --content-file "$WORK/db4" # a pending change the cache must not see
kb grant remove payments signing-key >/dev/null                   # and a pending delete
snapshot >"$WORK/before-outage.json"
stop_checked keybridged "$KBD_PID"
KBD_PID=""
sync_run outage
[ "$SRC_RC" != 0 ] || fail "sync succeeded with keybridged stopped"
jq -e '(.ok | not) and .created == 0 and .updated == 0 and .deleted == 0' \
  "$WORK/sync-outage.json" >/dev/null || fail "outage summary: $(cat "$WORK/sync-outage.json")"
snapshot >"$WORK/after-outage.json"
cmp -s "$WORK/before-outage.json" "$WORK/after-outage.json" || {
  diff "$WORK/before-outage.json" "$WORK/after-outage.json" >&2 || true
  fail "the failed sync changed the cache"
}
[ "$(value db-password)" = "correct horse battery staple v3" ] || fail "db-password changed"
ok "exit $SRC_RC, error: $(jq -r .error "$WORK/sync-outage.json"); cache identical"

step "the AWS CLI reads a synced secret from keybridge-cache (functions keep working)"
got=$(AWS_ENDPOINT_URL_SECRETS_MANAGER="$EP" awsc secretsmanager get-secret-value \
  --secret-id keybridge/payments/db-password --query SecretString --output text)
echo "  aws secretsmanager get-secret-value --secret-id keybridge/payments/db-password -> '$got'"
[ "$got" = "correct horse battery staple v3" ] || fail "AWS CLI read '$got'"

step "point local function code at keybridge-cache"
cat <<ENV
  export AWS_ENDPOINT_URL_SECRETS_MANAGER=$EP
  export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=$FN_AKID
  export AWS_SECRET_ACCESS_KEY=$FN_SKEY   # a throwaway credential of this demo's cache
  # boto3 >= 1.28 and the AWS CLI >= 1.29 / 2.13 honour AWS_ENDPOINT_URL_SECRETS_MANAGER;
  # older ones: --endpoint-url $EP (or endpoint_url= in boto3.client)
  # secrets: keybridge/$APPNAME/<name>; this function's SVID: $SVID_SECRET (SPIRE SVIDStore JSON)
ENV

if [ "$SERVE" = 1 ]; then
  start_keybridged
  step "serving until Ctrl-C (SVIDs kept fresh by keybridge-ca)"
  echo "  keybridged       https://127.0.0.1:$KBD_PORT ($SERVER_ID)"
  echo "  keybridge-ca     https://127.0.0.1:$CA_PORT ($CA_ID)"
  echo "  keybridge-cache  $EP"
  echo "  sync again:      AWS_ACCESS_KEY_ID=$SYNC_AKID AWS_SECRET_ACCESS_KEY=$SYNC_SKEY \\"
  echo "                   $BUILD/keybridge-sync --config $WORK/sync.ini --allow-mass-delete"
  echo "                   (applies the pending v4 and removes signing-key, whose grant was removed)"
  echo "  admin CLI:       $BUILD/keybridge --config $WORK/admin.conf secret list"
  trap 'exit 0' INT TERM
  while kill -0 "$KBD_PID" 2>/dev/null && kill -0 "$CA_PID" 2>/dev/null &&
    kill -0 "$CACHE_PID" 2>/dev/null; do
    sleep 1
  done
  fail "a server stopped"
fi

if [ "$SERVE" = 0 ]; then
  step "the servers stop cleanly (SIGTERM, exit 0)"
  stop_checked keybridge-ca "$CA_PID"
  CA_PID=""
  stop_checked keybridge-cache "$CACHE_PID"
  CACHE_PID=""
  if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$LOGS"/*.log; then
    fail "a sanitizer report in the programs' logs"
  fi
  ok "keybridged, keybridge-ca, keybridge-cache"
fi

step "done: the main job works end to end"
