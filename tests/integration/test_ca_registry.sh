#!/usr/bin/env bash
# keybridge-ca registrations with dir: targets: the policy file (refusals), the three files
# written atomically with 0600, remove deletes them, and the generation check: a registration
# removed while a renewal is under way never brings the SVID back (a test hook pauses the
# renewal between issuing and the check). Then serve: the mTLS API (bundle JWKS/PEM, renew with
# a CSR, refusals), and rotation (prepare: both CAs in the bundle; activate: new leaves chain to
# the new CA, old SVIDs still verify; no SVID outlives its CA).
set -euo pipefail
B="${KB_BUILD_DIR:?}/keybridge-ca"
W="$(mktemp -d /tmp/kbca-reg.XXXXXX)"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf -- "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$W/serve.log" ] && tail -20 "$W/serve.log" >&2; exit 1; }

mkdir -m 700 "$W/keys" "$W/svids" "$W/elsewhere" "$W/hold"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$W/policy.json" <<JSON
{"rules": [
  {"path_prefix": "/ns/", "target": "dir", "dir_root": "$W/svids", "renewable": true},
  {"path_prefix": "/lambda/acct/{account}/", "target": "secretsmanager", "account": "{account}",
   "max_ttl": 86400}
],
 "server_names": [{"path_prefix": "/ns/short", "dns": ["short.svc.example.org"], "ip": ["127.0.0.1"]}]}
JSON
cat >"$W/ca.ini" <<CONF
[ca]
db = $W/ca.db
key = file
key_dir = $W/keys
[policy]
file = $W/policy.json
[server]
listen = 127.0.0.1:$PORT
svid_dir = $W/server
[renew]
api_min_interval = 0s
CONF
ca() { "$B" -c "$W/ca.ini" "$@"; }
ca init --trust-domain example.org >/dev/null 2>&1 || fail init

# --- policy refusals (exit 4, message names why) ---
refused() { # msg args...
  local msg="$1" err; shift
  if err="$(ca register "$@" 2>&1 >/dev/null)"; then fail "accepted: $*"; fi
  grep -qi -- "$msg" <<<"$err" || fail "message for $* was: $err (want $msg)"
}
refused "outside the policy's dir_root" --spiffe-id spiffe://example.org/ns/a --target "dir:$W/elsewhere/a"
refused "no policy rule" --spiffe-id spiffe://example.org/other/a --target "dir:$W/svids/a"
refused "account" --spiffe-id spiffe://example.org/lambda/acct/111111111111/fn --target secretsmanager:222222222222:x
refused "kind of target" --spiffe-id spiffe://example.org/ns/a --target secretsmanager:222222222222:x
refused "max_ttl" --spiffe-id spiffe://example.org/lambda/acct/111111111111/fn --target secretsmanager:111111111111:x --ttl 2d
refused "canonical" --spiffe-id spiffe://example.org/ns/a --target "dir:$W/svids/../elsewhere"
refused "never renewed over the API" --spiffe-id spiffe://example.org/lambda/acct/111111111111/fn --target secretsmanager:111111111111:x --renewable
refused "trailing" --spiffe-id spiffe://example.org/ns/a/ --target "dir:$W/svids/a"
refused "not in this CA's trust domain" --spiffe-id spiffe://other.org/ns/a --target "dir:$W/svids/a"
refused "availability" --spiffe-id spiffe://example.org/ns/a --target "dir:$W/svids/a" --ttl 1h --availability 2h
# a broken policy file refuses everything, naming the rule
cp "$W/policy.json" "$W/good.json"
echo '{"rules": [{"path_prefix": "/ns/", "target": "dir", "dir_root": "/x", "extra": 1}]}' >"$W/policy.json"
refused "rule 1: unknown key" --spiffe-id spiffe://example.org/ns/a --target "dir:$W/svids/a"
echo '{"rules": [], "rules": []}' >"$W/policy.json"
refused "policy" --spiffe-id spiffe://example.org/ns/a --target "dir:$W/svids/a"
cp "$W/good.json" "$W/policy.json"

# --- register, renew, files ---
R1="$(ca register --spiffe-id spiffe://example.org/ns/a --target "dir:$W/svids/a" --ttl 10m --renewable 2>/dev/null)"
R2="$(ca register --spiffe-id spiffe://example.org/ns/b --target "dir:$W/svids/b" --ttl 10m 2>/dev/null)"
if ca register --spiffe-id spiffe://example.org/ns/a --target "dir:$W/svids/a" >/dev/null 2>&1; then fail "duplicate registration"; fi
ca renew-once 2>/dev/null | grep "renewed 2 failed 0" >/dev/null || fail "renew-once"
for r in a b; do
  for f in svid.pem svid.key bundle.pem; do
    [ "$(stat -L -c %a "$W/svids/$r/$f")" = 600 ] || fail "$r/$f not 0600"
  done
  openssl verify -purpose sslclient -CAfile "$W/svids/$r/bundle.pem" "$W/svids/$r/svid.pem" >/dev/null || fail verify
done
ca list | grep "spiffe://example.org/ns/a" >/dev/null || fail list
# nothing due: a second pass renews nothing
ca renew-once 2>/dev/null | grep "renewed 0 failed 0" >/dev/null || fail "second pass renewed"
# dir: layout (docs/keybridge-ca.md): stable names are links into `current`, which names one
# complete generation; --force renews every registration; the previous generation is kept, older
# ones removed
for f in svid.pem svid.key bundle.pem; do
  [ "$(readlink "$W/svids/a/$f")" = "current/$f" ] || fail "$f is not a link into current/"
done
[ "$(readlink "$W/svids/a/current")" = .gen-1 ] || fail "current -> $(readlink "$W/svids/a/current")"
[ "$(stat -c %a "$W/svids/a/.gen-1")" = 700 ] || fail ".gen-1 not 0700"
exec 7<"$W/svids/a/svid.key" # an open fd of generation 1 stays valid across renewals
if ca renew-once --bogus >/dev/null 2>&1; then fail "renew-once accepted --bogus"; fi
ca renew-once --force 2>/dev/null | grep "renewed 2 failed 0" >/dev/null || fail "renew-once --force"
[ "$(readlink "$W/svids/a/current")" = .gen-2 ] || fail "forced renewal did not switch to .gen-2"
[ -d "$W/svids/a/.gen-1" ] || fail "previous generation removed too early"
ca renew-once --force 2>/dev/null | grep "renewed 2 failed 0" >/dev/null || fail "renew-once --force (2)"
[ "$(cd "$W/svids/a" && ls -d .gen-*)" = "$(printf '.gen-2\n.gen-3')" ] || fail "generations: $(ls -A "$W/svids/a")"
grep -q "PRIVATE KEY" <&7 || fail "open fd of a removed generation lost its content"
exec 7<&-
cmp -s "$W/svids/a/svid.pem" "$W/svids/a/.gen-3/svid.pem" || fail "svid.pem is not the current generation's"
openssl verify -purpose sslserver -CAfile "$W/svids/a/bundle.pem" "$W/svids/a/svid.pem" >/dev/null || fail "verify after --force"
ca remove --id "$R2" >/dev/null 2>&1 || fail remove
[ ! -e "$W/svids/b/svid.pem" ] && [ ! -e "$W/svids/b/svid.key" ] || fail "remove left files"
# nothing at all is left: no links (dangling or not), no generation directory, no lock
[ -z "$(ls -A "$W/svids/b")" ] || fail "remove left: $(ls -A "$W/svids/b")"
ca audit | grep "spiffe://example.org/ns/b" >/dev/null || fail "audit"

# --- generation check: remove during a renewal ---
R3="$(ca register --spiffe-id spiffe://example.org/ns/c --target "dir:$W/svids/c" --ttl 10m 2>/dev/null)"
touch "$W/hold/hold"
KB_CA_TEST_HOLD_DIR="$W/hold" "$B" -c "$W/ca.ini" renew-once >"$W/race.out" 2>"$W/race.log" &
RP=$!
for _ in $(seq 1 500); do [ -e "$W/hold/paused.$R3" ] && break; sleep 0.02; done
[ -e "$W/hold/paused.$R3" ] || fail "renewal never paused"
ca remove --id "$R3" >/dev/null 2>&1 || fail "remove during renewal"
rm -f "$W/hold/hold"
wait "$RP" || true
[ ! -e "$W/svids/c/svid.pem" ] && [ ! -e "$W/svids/c/svid.key" ] || fail "removed registration came back"
[ -z "$(ls -A "$W/svids/c" 2>/dev/null)" ] || fail "removed registration left: $(ls -A "$W/svids/c")"
grep -q "renewal_dropped" "$W/race.log" || fail "no renewal_dropped log"
# re-registering the same ID and target is a new generation; the old renewal could not pass
R4="$(ca register --spiffe-id spiffe://example.org/ns/c --target "dir:$W/svids/c" --ttl 10m 2>/dev/null)"
[ "$R4" != "$R3" ] || fail "registration id reused"

# --- serve: API ---
# An SPIFFE-aware HTTPS client: chain to the bundle, no host name (SVIDs carry none), and the
# server's SPIFFE ID pinned (DESIGN.md: clients pin the server's ID).
cat >"$W/req.py" <<'PY'
import ssl, sys, http.client
method, port, path, cert, key, out = sys.argv[1:7]
body = open(sys.argv[7], "rb").read() if len(sys.argv) > 7 else None
if body is not None and len(sys.argv) > 8: body = sys.argv[8].encode()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.load_verify_locations(sys.argv[0].rsplit("/", 1)[0] + "/server/bundle.pem")
if cert != "-": ctx.load_cert_chain(cert, key)
try:
    c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=10)
    c.request(method, path, body=body)
    peer = c.sock.getpeercert()
    uris = [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
    assert uris == ["spiffe://example.org/keybridge-ca"], uris
    r = c.getresponse()
    open(out, "wb").write(r.read())
    print(r.status)
except (ssl.SSLError, ConnectionError, OSError) as e:
    # "000" alone said nothing when it flaked under load ("garbage CSR got 000"): say why
    sys.stderr.write(f"req.py {method} {path}: {type(e).__name__}: {e}\n")
    print("000")
PY
rq() { python3 "$W/req.py" "$@"; }
# [server] svid_ttl: the CA's own SVID lifetime; out of range (30s..30d) is a config error
sed 's/^\[server\]$/[server]\nsvid_ttl = 10s/' "$W/ca.ini" >"$W/badttl.ini"
if err="$("$B" -c "$W/badttl.ini" serve 2>&1 >/dev/null)"; then fail "serve accepted svid_ttl = 10s"; fi
grep -q "svid_ttl" <<<"$err" || fail "svid_ttl refusal did not name the key: $err"
sed -i 's/^\[server\]$/[server]\nsvid_ttl = 60s/' "$W/ca.ini"
grep -q "^svid_ttl = 60s" "$W/ca.ini" || fail "could not set svid_ttl"
"$B" -c "$W/ca.ini" serve >"$W/serve.out" 2>"$W/serve.log" &  # not through ca(): $! must be the server itself
PID=$!
A=("$W/svids/a/svid.pem" "$W/svids/a/svid.key")
for _ in $(seq 1 200); do [ -e "$W/server/bundle.pem" ] && [ "$(rq GET "$PORT" /v1/bundle "${A[@]}" "$W/jwks.json")" = 200 ] && break; sleep 0.05; done
# the served certificate lives svid_ttl (60 s) + the 10 s notBefore backdating, not the 1 h default
openssl s_client -connect "127.0.0.1:$PORT" -cert "${A[0]}" -key "${A[1]}" </dev/null 2>/dev/null | openssl x509 -noout -dates >"$W/served.dates" || fail "no served certificate"
NB="$(date -d "$(sed -n 's/^notBefore=//p' "$W/served.dates")" +%s)"
NA="$(date -d "$(sed -n 's/^notAfter=//p' "$W/served.dates")" +%s)"
[ $((NA - NB)) -eq 70 ] || fail "served certificate lifetime $((NA - NB)) s, want 70 (svid_ttl 60s + 10s)"
[ "$(rq GET "$PORT" /v1/bundle "${A[@]}" "$W/jwks.json")" = 200 ] || fail "GET bundle"
python3 - "$W/jwks.json" <<'PY' || fail "jwks"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["spiffe_sequence"] >= 1 and d["spiffe_refresh_hint"] > 0, d
assert len(d["keys"]) == 1 and d["keys"][0]["use"] == "x509-svid"
PY
rq GET "$PORT" "/v1/bundle?format=pem" "${A[@]}" "$W/b.pem" >/dev/null
grep -q "BEGIN CERTIFICATE" "$W/b.pem" || fail "PEM bundle"
# no client certificate: refused at the handshake
[ "$(rq GET "$PORT" /v1/bundle - - "$W/x")" = 000 ] || fail "no client cert accepted"
# a certificate from another CA: refused
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/rogue.key" -subj "/CN=x" \
  -addext "subjectAltName=URI:spiffe://example.org/ns/a" -days 1 -out "$W/rogue.pem" 2>/dev/null
[ "$(rq GET "$PORT" /v1/bundle "$W/rogue.pem" "$W/rogue.key" "$W/x")" = 000 ] || fail "rogue cert accepted"
# renew: too early (a third of the lifetime has not passed)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/new.key" -subj "/CN=x" -out "$W/new.csr" 2>/dev/null
code="$(rq POST "$PORT" /v1/svid/renew "${A[@]}" "$W/r.json" "$W/new.csr")"
[ "$code" = 429 ] || fail "early renewal got $code"
# an SVID past a third of its life: issue one with notBefore far enough back is not possible, so
# use a short-TTL registration: ttl 1m, wait 21 s
# (with DNS/IP SANs: an API renewal keeps the registration's names; the CSR brings only its key)
ca register --spiffe-id spiffe://example.org/ns/short --target "dir:$W/svids/short" --ttl 1m --availability 10s --renewable \
  --dns short.svc.example.org --ip 127.0.0.1 >/dev/null 2>&1
for _ in $(seq 1 300); do [ -e "$W/svids/short/svid.pem" ] && break; sleep 0.1; done
[ -e "$W/svids/short/svid.pem" ] || fail "serve did not write the new registration"
cp "$W/svids/short/svid.pem" "$W/short.pem"; cp "$W/svids/short/svid.key" "$W/short.key"
sleep 21
S=("$W/short.pem" "$W/short.key")
code="$(rq POST "$PORT" /v1/svid/renew "${S[@]}" "$W/r.json" "$W/new.csr")"
[ "$code" = 200 ] || { cat "$W/r.json"; fail "renewal got $code"; }
python3 - "$W/r.json" "$W/new.key" <<'PY' || fail "renewed svid"
import json, sys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
d = json.load(open(sys.argv[1]))
leaf = x509.load_pem_x509_certificates(d["svid"].encode())[0]
k = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
assert leaf.public_key().public_numbers() == k.public_key().public_numbers()
uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
assert uris == ["spiffe://example.org/ns/short"], uris
san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
assert san.get_values_for_type(x509.DNSName) == ["short.svc.example.org"], list(san)
assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"], list(san)
PY
# a CSR for another ID
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/o.key" -subj "/CN=x" \
  -addext "subjectAltName=URI:spiffe://example.org/ns/a" -out "$W/other.csr" 2>/dev/null
code="$(rq POST "$PORT" /v1/svid/renew "${S[@]}" "$W/r.json" "$W/other.csr")"
[ "$code" = 403 ] || fail "CSR for another ID got $code"
grep -q "another SPIFFE ID" "$W/r.json" || fail "message: $(cat "$W/r.json")"
code="$(rq POST "$PORT" /v1/svid/renew "${S[@]}" "$W/r.json" "$W/new.csr" garbage)"
[ "$code" = 400 ] || fail "garbage CSR got $code"
# a non-renewable registration (b was removed; d is not renewable)
ca register --spiffe-id spiffe://example.org/ns/d --target "dir:$W/svids/d" --ttl 1m --availability 10s >/dev/null 2>&1
for _ in $(seq 1 300); do [ -e "$W/svids/d/svid.pem" ] && break; sleep 0.1; done
sleep 1
code="$(rq POST "$PORT" /v1/svid/renew "$W/svids/d/svid.pem" "$W/svids/d/svid.key" "$W/r.json" "$W/new.csr")"
[ "$code" = 403 ] || fail "non-renewable got $code"
rq GET "$PORT" /metrics "${A[@]}" "$W/m.txt" >/dev/null
grep -q "keybridge_ca_svid_min_remaining_seconds" "$W/m.txt" || fail metrics

# --- rotation ---
cp "$W/svids/a/svid.pem" "$W/old.pem"
G="$(ca rotate prepare 2>/dev/null | awk '{print $2}')"
ca bundle | grep -c "BEGIN CERTIFICATE" | grep 2 >/dev/null || fail "prepared CA not in the bundle"
ca rotate activate --generation "$G" >/dev/null 2>&1 || fail activate
# The daemon notices and rewrites every stored SVID (bundle changed). Wait for the condition
# itself - the stored leaf signed by the new CA, with both CAs in its bundle - not for the file to
# change: `prepare` already rewrote it once (still signed by the old CA, bundle of 2), and under
# sanitizers the re-issue for `activate` (reason "bundle") can land a few seconds later.
old_issuer="$(openssl x509 -in "$W/old.pem" -noout -issuer)"
new_issuer=""
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
  new_issuer="$(openssl x509 -in "$W/svids/a/svid.pem" -noout -issuer 2>/dev/null || true)"
  if [ -n "$new_issuer" ] && [ "$new_issuer" != "$old_issuer" ] &&
    [ "$(grep -c 'BEGIN CERTIFICATE' "$W/svids/a/bundle.pem")" = 2 ]; then break; fi
  sleep 0.1
done
[ -n "$new_issuer" ] && [ "$new_issuer" != "$old_issuer" ] || fail "still signed by the old CA (30 s after activate)"
[ "$(grep -c 'BEGIN CERTIFICATE' "$W/svids/a/bundle.pem")" = 2 ] || fail "bundle not republished"
openssl verify -purpose sslclient -CAfile "$W/svids/a/bundle.pem" "$W/svids/a/svid.pem" >/dev/null || fail "new leaf"
openssl verify -purpose sslclient -CAfile "$W/svids/a/bundle.pem" "$W/old.pem" >/dev/null || fail "old leaf after rotation"
# and the leaf chains to the new (active) CA: its issuer is the CA generation just activated
[ "$(openssl x509 -in "$W/svids/a/svid.pem" -noout -issuer)" = "$new_issuer" ] || fail "leaf changed under us"
grep -q "keybridge CA $G" <<<"$new_issuer" || fail "new leaf not signed by generation $G: $new_issuer"
kill "$PID"; wait "$PID" || true; PID=""
echo ok
