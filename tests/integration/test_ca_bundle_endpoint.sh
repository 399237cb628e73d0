#!/usr/bin/env bash
# keybridge-ca's SPIFFE federation bundle endpoint ([server] bundle_listen): SPIFFE_Federation.md
# 5.2.2.3 says servers MUST NOT require client authentication there. A client with no certificate
# (curl, and a Python https_spiffe consumer that pins the endpoint's SPIFFE ID) fetches the JWKS
# (spiffe_sequence, spiffe_refresh_hint); the server sends no CertificateRequest; only
# GET /v1/bundle is reachable on it; every path of the API listener still requires mTLS.
set -euo pipefail
B="${KB_BUILD_DIR:?}/keybridge-ca"
W="$(mktemp -d /tmp/kbca-bundle.XXXXXX)"
SERVE_PID=""
cleanup() {
  if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
  rm -rf -- "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$W/serve.log" ] && tail -20 "$W/serve.log" >&2; exit 1; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -m 700 "$W/keys" "$W/svids"
PORT="$(freeport)"; BPORT="$(freeport)"
echo '{"rules": [{"path_prefix": "/ns/", "target": "dir", "dir_root": "'"$W/svids"'"}],
       "server_names": [{"path_prefix": "/keybridge-ca", "dns": ["localhost"], "ip": ["127.0.0.1"]}]}' >"$W/policy.json"
cat >"$W/ca.ini" <<CONF
[ca]
db = $W/ca.db
key = file
key_dir = $W/keys
[policy]
file = $W/policy.json
[server]
listen = 127.0.0.1:$PORT
bundle_listen = 127.0.0.1:$BPORT
svid_dir = $W/server
svid_dns = localhost
svid_ip = 127.0.0.1
CONF
"$B" -c "$W/ca.ini" init --trust-domain example.org >/dev/null 2>&1 || fail init
"$B" -c "$W/ca.ini" issue --spiffe-id spiffe://example.org/ns/client --out "$W/client" >/dev/null 2>&1 || fail issue
"$B" -c "$W/ca.ini" serve >"$W/serve.out" 2>"$W/serve.log" &
SERVE_PID=$!
for _ in $(seq 1 200); do
  grep -q bundle_endpoint_listening "$W/serve.log" 2>/dev/null && [ -e "$W/server/bundle.pem" ] && break
  sleep 0.05
done
grep -q '"profile":"https_spiffe"' "$W/serve.log" || fail "no bundle endpoint log line"

# 1. curl, no client certificate: 200, application/json, the SPIFFE bundle
code="$(curl -sS -k -o "$W/curl.json" -w '%{http_code} %{content_type}' "https://127.0.0.1:$BPORT/v1/bundle")" \
  || fail "curl without a client certificate failed"
[ "$code" = "200 application/json" ] || fail "curl: $code"
"$B" -c "$W/ca.ini" bundle --format jwks >"$W/cli.json" 2>/dev/null
python3 - "$W/curl.json" "$W/cli.json" <<'PY' || fail "bundle JWKS"
import json, sys
d = json.load(open(sys.argv[1]))
assert d == json.load(open(sys.argv[2])), "served bundle differs from keybridge-ca bundle"
assert isinstance(d["spiffe_sequence"], int) and d["spiffe_sequence"] >= 1, d
assert d["spiffe_refresh_hint"] == 300, d
assert d["keys"] and all(k["use"] == "x509-svid" and k["x5c"] for k in d["keys"]), d
PY

# ... and with [server] svid_dns/svid_ip, a client that checks the host name (no -k) too
for h in localhost 127.0.0.1; do
  code="$(curl -sS --cacert "$W/server/bundle.pem" -o /dev/null -w '%{http_code}' "https://$h:$BPORT/v1/bundle")" \
    || fail "curl --cacert to $h"
  [ "$code" = 200 ] || fail "curl --cacert to $h: $code"
done

# 2. an https_spiffe consumer (5.2.2.4): server certificate is an X509-SVID for the endpoint's
# SPIFFE ID, chaining to the bundle; no client certificate configured
python3 - "$BPORT" "$W/server/bundle.pem" <<'PY' || fail "https_spiffe consumer"
import ssl, sys, http.client, json
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False          # https_spiffe authenticates the SPIFFE ID, not a host name
ctx.load_verify_locations(sys.argv[2])
c = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=10)
c.request("GET", "/v1/bundle")
uris = [v for k, v in c.sock.getpeercert().get("subjectAltName", ()) if k == "URI"]
assert uris == ["spiffe://example.org/keybridge-ca"], uris
r = c.getresponse()
assert r.status == 200, r.status
assert "keys" in json.loads(r.read())
PY

# 3. the server asks for no client certificate (no CertificateRequest in the handshake), over
# TLS 1.3 and 1.2
for v in -tls1_3 -tls1_2; do
  openssl s_client -connect "127.0.0.1:$BPORT" "$v" -msg </dev/null >"$W/hs$v.txt" 2>&1 || true
  grep -q "ServerHello" "$W/hs$v.txt" || fail "no handshake ($v)"
  if grep -q "CertificateRequest" "$W/hs$v.txt"; then fail "bundle endpoint requested a client certificate ($v)"; fi
done

# 4. nothing else on the bundle listener
for p in /metrics /v1/svid/renew / /v1/bundle/x; do
  code="$(curl -sS -k -o /dev/null -w '%{http_code}' "https://127.0.0.1:$BPORT$p")"
  [ "$code" = 404 ] || fail "bundle listener answered $code for GET $p"
done
code="$(curl -sS -k -o /dev/null -w '%{http_code}' -X POST -d x "https://127.0.0.1:$BPORT/v1/svid/renew")"
[ "$code" = 404 ] || fail "bundle listener answered $code for POST /v1/svid/renew"
code="$(curl -sS -k -o /dev/null -w '%{http_code}' -X POST -d x "https://127.0.0.1:$BPORT/v1/bundle")"
[ "$code" = 405 ] || fail "bundle listener answered $code for POST /v1/bundle"

# 5. every path of the API listener still requires mTLS: without a certificate no HTTP answer at
# all; with the client SVID the bundle is served
for p in /v1/bundle /metrics /v1/svid/renew /nope; do
  code="$(curl -sS -k -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT$p" 2>/dev/null || true)"
  [ "$code" = 000 ] || fail "API listener answered $code for $p without a client certificate"
done
code="$(curl -sS -k -o /dev/null -w '%{http_code}' --cert "$W/client/svid.pem" --key "$W/client/svid.key" \
  "https://127.0.0.1:$PORT/v1/bundle")"
[ "$code" = 200 ] || fail "API listener with the client SVID: $code"

# 6. a bad bundle_listen is a startup error naming the key
sed "s/^bundle_listen = .*/bundle_listen = 127.0.0.1:99999/; s/^listen = .*/listen = 127.0.0.1:$(freeport)/" \
  "$W/ca.ini" >"$W/clash.ini"
if err="$(timeout 10 "$B" -c "$W/clash.ini" serve 2>&1 >/dev/null)"; then fail "serve started with bundle_listen port 99999"; fi
grep -q "bundle_listen 127.0.0.1:99999" <<<"$err" || fail "bad bundle_listen message: $err"
# server SVID names: bad syntax is a config error; a name the policy does not allow is refused
sed "s/^svid_dns = .*/svid_dns = localhost, Bad_Name/; s/^bundle_listen = .*//; s/^listen = .*/listen = 127.0.0.1:$(freeport)/" \
  "$W/ca.ini" >"$W/badname.ini"
if err="$(timeout 10 "$B" -c "$W/badname.ini" serve 2>&1 >/dev/null)"; then fail "serve accepted svid_dns Bad_Name"; fi
grep -q "svid_dns: 'Bad_Name'" <<<"$err" || fail "svid_dns message: $err"
sed "s/^svid_dns = .*/svid_dns = evil.org/; s/^bundle_listen = .*//; s/^listen = .*/listen = 127.0.0.1:$(freeport)/" \
  "$W/ca.ini" >"$W/polname.ini"
if err="$(timeout 10 "$B" -c "$W/polname.ini" serve 2>&1 >/dev/null)"; then fail "serve accepted svid_dns evil.org"; fi
grep -q "DNS name evil.org refused" <<<"$err" || fail "svid_dns policy message: $err"
echo ok
