#!/usr/bin/env bash
# test_keybridged_cli.sh - the `keybridge` admin CLI in remote mode (HTTPS + mTLS, server_id pin)
# against a real keybridged with a SoftHSM2 token and openssl-made SVIDs (issue 3, item 3).
#
# Drives the admin flow through the CLI only (groups, clients, memberships, grants, the secret
# lifecycle, `clients --stale`, `audit verify`), parses `-o json` with python3, and shows that
# the CLI refuses (exit != 0, a clear message, no request sent) a server whose SVID names another
# SPIFFE ID than server_id — a second, fully working keybridged on the same store with a valid
# SVID from the same CA — and refuses to run at all without server_id.
set -euo pipefail

SRC="${KB_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
BUILD="${KB_BUILD_DIR:-$SRC/build}"
KEYBRIDGED="$BUILD/keybridged"
KB="$BUILD/keybridge"
if [ ! -x "$KEYBRIDGED" ] || [ ! -x "$KB" ]; then
  echo "SKIP: keybridged or keybridge not built" >&2
  exit 0
fi

TD=example.org
ADMIN="spiffe://$TD/ns/ops/sa/admin"
SERVER_ID="spiffe://$TD/keybridged"
IMPOSTOR_ID="spiffe://$TD/ns/x/sa/impostor"
APP_ID="spiffe://$TD/ns/pay/sa/api"
IDLE_ID="spiffe://$TD/ns/pay/sa/idle"

D="$(mktemp -d /tmp/kbcli.XXXXXX)"
PIDS=()
FAILS=0
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$FAILS" -eq 0 ]; then
    rm -rf -- "$D"
  else
    echo "logs kept in $D" >&2
  fi
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  FAILS=$((FAILS + 1))
}
ok() { echo "ok: $*"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---- PKI: a root for example.org, leaves with exactly one URI SAN (openssl CLI only)
mkdir -p "$D/pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/pki/ca.key" \
  -out "$D/pki/ca.pem" -days 2 -subj "/O=kbtest root" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectAltName=URI:spiffe://$TD" 2>/dev/null
leaf() { # leaf NAME SPIFFE_ID -> $D/pki/NAME.pem, NAME.key (0600)
  local n="$1" id="$2"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/pki/$n.key" \
    -out "$D/pki/$n.csr" -subj "/O=kbtest/CN=$n" 2>/dev/null
  chmod 600 "$D/pki/$n.key"
  printf '[v3]\nsubjectAltName=URI:%s\nbasicConstraints=critical,CA:FALSE\n%s\n%s\n' "$id" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" \
    >"$D/pki/$n.ext"
  openssl x509 -req -in "$D/pki/$n.csr" -CA "$D/pki/ca.pem" -CAkey "$D/pki/ca.key" \
    -CAcreateserial -days 1 -sha256 -extfile "$D/pki/$n.ext" -extensions v3 \
    -out "$D/pki/$n.pem" 2>/dev/null
}
leaf server "$SERVER_ID"
leaf impostor "$IMPOSTOR_ID"
leaf admin "$ADMIN"
leaf app "$APP_ID"

# ---- keybridged with a SoftHSM2 token
. "$SRC/tests/lib/softhsm.sh"
kb_softhsm_make kbcli "$D/hsm" >/dev/null
PORT="$(free_port)"
MPORT="$(free_port)"
server_conf() { # server_conf FILE PORT METRICS_PORT CERT_NAME
  cat >"$1" <<EOF
[server]
listen = 127.0.0.1:$2
threads = 2
cert_file = $D/pki/$4.pem
key_file = $D/pki/$4.key
bundle_file = $D/pki/ca.pem
trust_domain = $TD
metrics_listen = 127.0.0.1:$3
[store]
url = sqlite:$D/kb.db
[hsm]
keystore = pkcs11
module = $KB_HSM_MODULE
token_label = kbcli
pin_file = $KB_HSM_PIN_FILE
[clients]
cloud_prefixes = /lambda/
EOF
}
server_conf "$D/keybridged.conf" "$PORT" "$MPORT" server
"$KEYBRIDGED" --config "$D/keybridged.conf" bootstrap --admin-id "$ADMIN" >"$D/bootstrap.log" 2>&1

start_server() { # start_server CONF LOG PORT
  "$KEYBRIDGED" --config "$1" serve >"$2" 2>&1 &
  PIDS+=("$!")
  local pid=$! i
  for i in $(seq 200); do
    if (echo >"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || {
      echo "keybridged exited; see $2" >&2
      cat "$2" >&2
      exit 1
    }
    sleep 0.05
  done
  echo "keybridged did not start" >&2
  exit 1
}
start_server "$D/keybridged.conf" "$D/keybridged.log" "$PORT"

cli_conf() { # cli_conf FILE CERT_NAME PORT SERVER_ID
  {
    echo "[client]"
    echo "server_url = https://127.0.0.1:$3"
    [ -n "$4" ] && echo "server_id = $4"
    echo "cert_file = $D/pki/$2.pem"
    echo "key_file = $D/pki/$2.key"
    echo "bundle_file = $D/pki/ca.pem"
    echo "timeout = 10s"
  } >"$1"
}
cli_conf "$D/admin.conf" admin "$PORT" "$SERVER_ID"
cli_conf "$D/app.conf" app "$PORT" "$SERVER_ID"

# kb ARGS...: the CLI as the admin; output in $OUT, stderr in $ERR, exit code in $RC.
OUT=""
ERR=""
RC=0
kbrun() {
  local conf="$1"
  shift
  set +e
  OUT="$("$KB" --config "$conf" "$@" 2>"$D/stderr")"
  RC=$?
  set -e
  ERR="$(cat "$D/stderr")"
}
kb() { kbrun "$D/admin.conf" "$@"; }
expect_ok() { # expect_ok WHAT (after a kb call)
  if [ "$RC" -eq 0 ]; then ok "$1"; else fail "$1: exit $RC: $ERR"; fi
}
expect_rc() { # expect_rc CODE WHAT
  if [ "$RC" -eq "$1" ]; then ok "$2"; else fail "$2: exit $RC, want $1: $ERR"; fi
}
# jq-like: jget EXPR reads JSON from $OUT and prints python3's eval of EXPR on it (j = the doc).
jget() {
  python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print(eval(sys.argv[1]))' "$1" \
    <<<"$OUT"
}
expect_eq() { # expect_eq GOT WANT WHAT
  if [ "$1" = "$2" ]; then ok "$3"; else fail "$3: got '$1', want '$2'"; fi
}

# ---- groups, clients, memberships
kb group create payments --description "payment services"
expect_ok "group create"
kb -o json group list
expect_ok "group list"
expect_eq "$(jget '[g["name"] for g in j["groups"] if g["name"] != "admins"]')" "['payments']" "group list -o json"
kb group create payments
expect_rc 2 "duplicate group is a usage error (409)"

kb client create "$APP_ID" --app payments-api
expect_ok "client create (app)"
kb client create "$IDLE_ID" --app idle
expect_ok "client create (idle)"
kb client create "not a spiffe id"
expect_rc 2 "client create with a malformed SPIFFE ID"
kb member add "$APP_ID" payments
expect_ok "member add"
kb member add "$APP_ID" no-such-group
[ "$RC" -ne 0 ] && ok "member add to a missing group fails ($RC)" || fail "member add missing group"

# ---- secret lifecycle
printf 'v1-content' >"$D/c1"
printf 'v2-content' >"$D/c2"
kb secret create db-password --content-file "$D/c1" --metadata mode=0400 --description "db"
expect_ok "secret create"
expect_eq "$OUT" "created db-password version 1" "secret create prints the version"
kb secret create db-password --content-file "$D/c1"
expect_rc 2 "secret create twice (409)"
kb secret create "../etc/passwd" --content-file "$D/c1"
expect_rc 2 "secret create with a path-trick name (400)"
kb secret create other --content-file "$D/c1"
expect_ok "second secret create"
kb -o json secret put db-password --content-file "$D/c2"
expect_ok "secret put"
expect_eq "$(jget 'j["version"]')" "2" "secret put -o json: version 2"
kb secret get db-password
expect_eq "$OUT" "v2-content" "secret get returns the latest content"
kb secret get db-password --version 1
expect_eq "$OUT" "v1-content" "secret get --version 1"
kb secret get no-such-secret
expect_rc 5 "secret get of a missing secret (404)"
kb -o json secret list
expect_ok "secret list"
expect_eq "$(jget 'sorted(s["name"] for s in j["secrets"])')" "['db-password', 'other']" \
  "secret list -o json"
kb secret list
case "$OUT" in
*NAME*db-password*) ok "secret list table" ;;
*) fail "secret list table: $OUT" ;;
esac
case "$OUT" in
*v1-content* | *v2-content*) fail "secret list shows content" ;;
*) ok "secret list shows no content" ;;
esac
kb -o json secret versions db-password
VERS="$(jget 'sorted(v["version"] for v in j["versions"])')"
expect_eq "$VERS" "[1, 2]" "versions 1 and 2 exist"

kb grant add payments db-password
expect_ok "grant add"
kb grant add payments no-such-secret
[ "$RC" -ne 0 ] && ok "grant of a missing secret fails ($RC)" || fail "grant missing secret"

# The application reads through the client API with its own SVID (same CLI, its config).
kbrun "$D/app.conf" -o json list
expect_ok "client list (app)"
expect_eq "$(jget '[s["name"] for s in j["secrets"]]')" "['db-password']" "app sees only its grant"
kbrun "$D/app.conf" read db-password
expect_eq "$OUT" "v2-content" "app reads the secret"
kbrun "$D/app.conf" read other
expect_rc 5 "app cannot read an ungranted secret (404)"
kbrun "$D/app.conf" group list
expect_rc 4 "a non-admin gets denied on the admin API (403)"

kb -o json secret status db-password
expect_ok "secret status"
expect_eq "$(jget '[(c["client"], c["version"], c["current"]) for c in j["clients"]]')" \
  "[('$APP_ID', 2, True)]" "secret status: the app fetched version 2"

kb -o json secret rollback db-password 1
expect_ok "secret rollback"
expect_eq "$(jget '(j["version"], j["from_version"])')" "(3, 1)" "rollback writes version 3 from 1"
kb secret get db-password
expect_eq "$OUT" "v1-content" "after rollback the content is version 1's"
kb secret rollback db-password 99
[ "$RC" -ne 0 ] && ok "rollback to a missing version fails ($RC)" || fail "rollback to v99"
kb secret rollback db-password zero
expect_rc 2 "rollback with a non-number version"
kb -o json secret status db-password
expect_eq "$(jget '[(c["version"], c["current"]) for c in j["clients"]]')" "[(2, False)]" \
  "secret status: the app now holds an old version"

kb secret delete db-password
expect_ok "secret delete"
kbrun "$D/app.conf" read db-password
expect_rc 5 "a deleted secret is not readable"
kb -o json secret list
expect_eq "$(jget '[s["name"] for s in j["secrets"]]')" "['other']" "deleted secret not listed"
kb -o json secret list --deleted
expect_eq "$(jget '"db-password" in [s["name"] for s in j["secrets"]]')" "True" \
  "secret list --deleted shows it"
kb secret restore db-password
expect_ok "secret restore"
kbrun "$D/app.conf" read db-password
expect_eq "$OUT" "v1-content" "restored secret readable again"

# ---- clients --stale 45m: the app listed just now, the idle client never did
kb -o json clients --stale 45m
expect_ok "clients --stale 45m"
STALE="$(jget 'sorted(c["spiffe_id"] for c in j["clients"])')"
case "$STALE" in
*"$IDLE_ID"*) ok "idle client is stale" ;;
*) fail "idle client not stale: $STALE" ;;
esac
case "$STALE" in
*"$APP_ID"*) fail "app (listed just now) reported stale: $STALE" ;;
*) ok "recently listed client is not stale" ;;
esac
kb clients --stale 45m
case "$OUT" in
*SPIFFE_ID*"$IDLE_ID"*) ok "clients --stale table" ;;
*) fail "clients --stale table: $OUT" ;;
esac
kb clients --stale soon
expect_rc 2 "clients --stale with a bad duration"
kb -o json client list
APP_NUM="$(jget '[c["id"] for c in j["clients"] if c["spiffe_id"] == "'"$APP_ID"'"][0]')"
kb client disable "$APP_NUM"
expect_ok "client disable"
kbrun "$D/app.conf" read db-password
expect_rc 4 "a disabled client is denied (403)"
kb client enable "$APP_NUM"
expect_ok "client enable"

# ---- audit
kb audit list --object db-password --limit 5
expect_ok "audit list"
kb -o json audit verify
expect_ok "audit verify"
expect_eq "$(jget 'j["ok"]')" "True" "audit verify: chain ok"
expect_eq "$(jget 'j["rows"] > 10')" "True" "audit verify counted the rows"

# ---- server identity pinning
# 1. server_id names another ID than the server's SVID: refused before any request.
cli_conf "$D/wrongid.conf" admin "$PORT" "spiffe://$TD/ns/x/sa/not-keybridged"
AUDIT_BEFORE="$(kb -o json audit verify >/dev/null; jget 'j["rows"]')"
kbrun "$D/wrongid.conf" group create should-not-exist
expect_rc 4 "wrong server_id: refused (exit 4)"
case "$ERR" in
*"server identity mismatch"*"expected spiffe://$TD/ns/x/sa/not-keybridged"*"got $SERVER_ID"*)
  ok "wrong server_id: clear error" ;;
*) fail "wrong server_id message: $ERR" ;;
esac
kb -o json group list
expect_eq "$(jget '[g["name"] for g in j["groups"] if g["name"] != "admins"]')" "['payments']" \
  "nothing was created through the refused server"

# 2. A second, working keybridged on the same store with a valid SVID of another identity.
IPORT="$(free_port)"
server_conf "$D/impostor.conf" "$IPORT" "$(free_port)" impostor
start_server "$D/impostor.conf" "$D/impostor.log" "$IPORT"
cli_conf "$D/toimpostor.conf" admin "$IPORT" "$SERVER_ID"
# (sanity: the impostor does serve: curl with the admin SVID gets an answer)
# (-k: curl cannot check a SPIFFE ID; the point is only that the impostor answers)
CODE="$(curl -sS -k -o /dev/null -w '%{http_code}' --max-time 10 --cert "$D/pki/admin.pem" \
  --key "$D/pki/admin.key" "https://127.0.0.1:$IPORT/v1/admin/groups" || true)"
expect_eq "$CODE" "200" "the impostor is a working keybridged"
kbrun "$D/toimpostor.conf" group create via-impostor
expect_rc 4 "impostor server refused (exit 4)"
case "$ERR" in
*"server identity mismatch"*"expected $SERVER_ID"*"got $IMPOSTOR_ID"*"refusing"*)
  ok "impostor: clear error" ;;
*) fail "impostor message: $ERR" ;;
esac
kbrun "$D/toimpostor.conf" -o json secret get db-password
[ "$RC" -ne 0 ] && [ -z "$OUT" ] && ok "impostor: no content printed" || fail "impostor get: $OUT"
kb -o json group list
expect_eq "$(jget '[g["name"] for g in j["groups"] if g["name"] != "admins"]')" "['payments']" \
  "the impostor never received the request"
AUDIT_AFTER="$(kb -o json audit verify >/dev/null; jget 'j["rows"]')"
# Only our own two `group list` + `audit verify` calls may have been audited in between.
[ "$AUDIT_AFTER" -le $((AUDIT_BEFORE + 4)) ] && ok "no audited action from refused calls" ||
  fail "audit grew from $AUDIT_BEFORE to $AUDIT_AFTER"

# 3. No server_id at all: refused before connecting (configuration error, exit 3).
cli_conf "$D/noid.conf" admin "$PORT" ""
kbrun "$D/noid.conf" group list
expect_rc 3 "no server_id: configuration error"
case "$ERR" in
*server_id*) ok "no server_id: message names the setting" ;;
*) fail "no server_id message: $ERR" ;;
esac
# 4. server_id that is not a SPIFFE ID, and a server_url that is not https.
cli_conf "$D/badid.conf" admin "$PORT" "keybridged.example.org"
kbrun "$D/badid.conf" group list
expect_rc 3 "server_id not a SPIFFE ID"
cli_conf "$D/http.conf" admin "$PORT" "$SERVER_ID"
sed -i 's#https://#http://#' "$D/http.conf"
kbrun "$D/http.conf" group list
expect_rc 3 "http:// server_url refused"
# 5. A server certificate from another CA (a bundle that does not contain it).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/pki/o.key" \
  -out "$D/pki/other-ca.pem" -days 2 -subj "/O=other root" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null
cli_conf "$D/otherca.conf" admin "$PORT" "$SERVER_ID"
sed -i "s#bundle_file = .*#bundle_file = $D/pki/other-ca.pem#" "$D/otherca.conf"
kbrun "$D/otherca.conf" group list
[ "$RC" -ne 0 ] && ok "server not chaining to the bundle refused ($RC)" || fail "other CA accepted"
case "$ERR" in
*"server certificate refused"*) ok "other CA: clear error" ;;
*) fail "other CA message: $ERR" ;;
esac
# 6. Nothing listening.
cli_conf "$D/down.conf" admin "$(free_port)" "$SERVER_ID"
kbrun "$D/down.conf" group list
[ "$RC" -ne 0 ] && ok "no server: exit $RC" || fail "no server: exit 0"

# ---- no secret content in the server logs
if grep -q -e v1-content -e v2-content "$D/keybridged.log" "$D/impostor.log"; then
  fail "secret content in a server log"
else
  ok "no secret content in the logs"
fi

echo "$FAILS failure(s)"
[ "$FAILS" -eq 0 ]
