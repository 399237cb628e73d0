#!/bin/bash
# test_httpd_tls.sh - the mTLS server layer seen by independent clients (openssl s_client, curl):
# protocol floor, client certificate required, session resumption keeping the peer ID, and a
# clean stop on SIGTERM. The server is test_httpd in serve mode (KB_HTTPD_SERVE=mtls), which
# writes its own test PKI into a temporary directory and listens on 127.0.0.1:<ephemeral>.
set -u
BUILD=${KB_BUILD_DIR:?KB_BUILD_DIR not set}
BIN="$BUILD/test_httpd"
[ -x "$BIN" ] || { echo "missing $BIN"; exit 1; }
command -v openssl >/dev/null || { echo "openssl CLI missing"; exit 1; }

DIR=$(mktemp -d /tmp/kb-httpd-it.XXXXXX)
SRV_PID=""
cleanup() {
    if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
        kill "$SRV_PID" 2>/dev/null
        wait "$SRV_PID" 2>/dev/null
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT

pass=0
fail=0
check() { # name, then a command that must succeed
    local name=$1
    shift
    if "$@"; then
        pass=$((pass + 1))
        echo "ok   $name"
    else
        fail=$((fail + 1))
        echo "FAIL $name"
    fi
}

KB_HTTPD_SERVE=mtls KB_HTTPD_DIR="$DIR" KB_HTTPD_THREADS=2 "$BIN" >"$DIR/out" 2>"$DIR/log" &
SRV_PID=$!
for _ in $(seq 1 100); do
    grep -q '^port ' "$DIR/out" 2>/dev/null && break
    sleep 0.1
done
PORT=$(awk '/^port /{print $2}' "$DIR/out")
[ -n "$PORT" ] || { echo "server did not start"; cat "$DIR/log"; exit 1; }
ID="spiffe://example.org/ns/test/sa/client"
REQ=$'GET /who HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'

sclient() { # extra s_client args...; prints the session transcript
    printf '%s' "$REQ" | timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$DIR/ca.pem" \
        -verify_return_error -ign_eof "$@" 2>&1
}

# Client side made permissive (SECLEVEL=0) so that only the server's policy can refuse.
t_tls11_refused() { ! sclient -tls1_1 -cipher 'DEFAULT@SECLEVEL=0' -cert "$DIR/client.pem" -key "$DIR/client.key" | grep -q "$ID"; }
t_tls12_ok() { sclient -no_tls1_3 -cert "$DIR/client.pem" -key "$DIR/client.key" | grep -q "\"id\":\"$ID\""; }
t_tls13_ok() { sclient -tls1_3 -cert "$DIR/client.pem" -key "$DIR/client.key" | grep -q "\"id\":\"$ID\""; }
t_no_cert_refused() { ! sclient -no_tls1_3 | grep -q 'HTTP/1.1 200'; }
t_no_cert13_refused() { ! sclient -tls1_3 | grep -q 'HTTP/1.1 200'; }
t_foreign_cert_refused() { ! sclient -tls1_3 -cert "$DIR/other.pem" -key "$DIR/other.key" | grep -q 'HTTP/1.1 200'; }
t_cbc_refused() { ! sclient -no_tls1_3 -cipher 'AES128-SHA:ECDHE-ECDSA-AES128-SHA' -cert "$DIR/client.pem" -key "$DIR/client.key" | grep -q 'HTTP/1.1 200'; }
t_resume12() {
    sclient -no_tls1_3 -sess_out "$DIR/s12" -cert "$DIR/client.pem" -key "$DIR/client.key" >"$DIR/r1" || true
    grep -q '^New, ' "$DIR/r1" || return 1
    sclient -no_tls1_3 -sess_in "$DIR/s12" -cert "$DIR/client.pem" -key "$DIR/client.key" >"$DIR/r2" || true
    grep -q '^Reused, ' "$DIR/r2" && grep -q "\"id\":\"$ID\"" "$DIR/r2"
}
t_resume13() {
    sclient -tls1_3 -sess_out "$DIR/s13" -cert "$DIR/client.pem" -key "$DIR/client.key" >"$DIR/r3" || true
    [ -s "$DIR/s13" ] || return 1
    sclient -tls1_3 -sess_in "$DIR/s13" -cert "$DIR/client.pem" -key "$DIR/client.key" >"$DIR/r4" || true
    grep -q '^Reused, ' "$DIR/r4" && grep -q "\"id\":\"$ID\"" "$DIR/r4"
}
t_no_early_data() { ! grep -q 'Max Early Data: [1-9]' "$DIR/r3"; }
t_ticket_lifetime() {
    local l
    l=$(sed -n 's/.*lifetime hint: \([0-9]*\).*/\1/p' "$DIR/r3" | head -n 1)
    [ -n "$l" ] && [ "$l" -gt 0 ] && [ "$l" -le 300 ]
}
t_curl() {
    local out
    out=$(curl -sS --max-time 20 --cacert "$DIR/ca.pem" --cert "$DIR/client.pem" --key "$DIR/client.key" \
        -D - "https://127.0.0.1:$PORT/who?x=1") || return 1
    grep -qi '^cache-control: no-store' <<<"$out" && grep -q "\"id\":\"$ID\"" <<<"$out"
}
t_curl_404_json_limits() {
    local code
    code=$(head -c 2000000 /dev/zero | curl -s -o "$DIR/big" -w '%{http_code}' --max-time 20 \
        --cacert "$DIR/ca.pem" --cert "$DIR/client.pem" --key "$DIR/client.key" \
        -X PUT --data-binary @- "https://127.0.0.1:$PORT/echo")
    [ "$code" = 413 ] && grep -q '"error":"payload_too_large"' "$DIR/big"
}
t_no_secrets_logged() { ! grep -qi 'client.key\|BEGIN' "$DIR/log"; }
t_refusal_logged() { grep -q '"event":"tls_peer_refused"' "$DIR/log"; }

check "TLS 1.1 refused" t_tls11_refused
check "TLS 1.2 + client SVID accepted, ID seen" t_tls12_ok
check "TLS 1.3 + client SVID accepted, ID seen" t_tls13_ok
check "TLS 1.2 without client cert refused" t_no_cert_refused
check "TLS 1.3 without client cert refused" t_no_cert13_refused
check "client cert from another CA refused" t_foreign_cert_refused
check "TLS 1.2 CBC-only client refused" t_cbc_refused
check "TLS 1.2 resumption keeps the peer ID" t_resume12
check "TLS 1.3 resumption keeps the peer ID" t_resume13
check "no 0-RTT offered" t_no_early_data
check "ticket lifetime <= 300 s" t_ticket_lifetime
check "curl mTLS round trip, Cache-Control no-store" t_curl
check "413 over TLS is JSON" t_curl_404_json_limits
check "verifier refusal logged" t_refusal_logged
check "no key material in logs" t_no_secrets_logged

kill -TERM "$SRV_PID"
if wait "$SRV_PID"; then rc=0; else rc=$?; fi
SRV_PID=""
check "SIGTERM stops the server cleanly" test "$rc" = 0

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
