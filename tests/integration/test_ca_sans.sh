#!/usr/bin/env bash
# DNS and IP SANs on server SVIDs (issue --dns/--ip, register --dns/--ip), allowed per SPIFFE ID
# prefix by the policy's server_names. A Go crypto/tls client that checks the host name like
# keysync does accepts an SVID with them and refuses a URI-only one ("certificate is not valid
# for any names"); the SVID keeps exactly one URI SAN; a name the policy does not allow is
# refused naming the rule, bad syntax names the broken rule; renewals re-check the policy.
set -euo pipefail
B="${KB_BUILD_DIR:?}/keybridge-ca"
W="$(mktemp -d /tmp/kbca-sans.XXXXXX)"
SRV=""
cleanup() {
  if [ -n "$SRV" ]; then kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; fi
  rm -rf -- "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -m 700 "$W/keys" "$W/svids"
policy() { # dns-list ip-list
  cat >"$W/policy.json" <<JSON
{"rules": [{"path_prefix": "/keybridged", "target": "dir", "dir_root": "$W/svids"},
           {"path_prefix": "/ns/", "target": "dir", "dir_root": "$W/svids"}],
 "server_names": [{"path_prefix": "/keybridged", "dns": [$1], "ip": [$2]}]}
JSON
}
policy '"localhost", "*.svc.example.org"' '"127.0.0.1", "::1", "10.0.0.0/8"'
cat >"$W/ca.ini" <<CONF
[ca]
db = $W/ca.db
key = file
key_dir = $W/keys
[policy]
file = $W/policy.json
CONF
ca() { "$B" -c "$W/ca.ini" "$@"; }
ca init --trust-domain example.org >/dev/null 2>&1 || fail init
KBD=spiffe://example.org/keybridged

ca issue --spiffe-id "$KBD" --dns localhost --ip 127.0.0.1 --dns api.svc.example.org --ip ::1 \
  --ip 10.2.3.4 --out "$W/named" >/dev/null 2>&1 || fail "issue with --dns/--ip"
ca issue --spiffe-id "$KBD" --out "$W/uri-only" >/dev/null 2>&1 || fail "issue without names"
python3 - "$W/named/svid.pem" <<'PY' || fail "SAN contents"
import sys, ipaddress
from cryptography import x509
leaf = x509.load_pem_x509_certificates(open(sys.argv[1], "rb").read())[0]
san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://example.org/keybridged"]
assert san.get_values_for_type(x509.DNSName) == ["localhost", "api.svc.example.org"]
assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.2.3.4")]
assert len(list(san)) == 6
leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
PY
for p in sslserver sslclient; do
  openssl verify -purpose $p -CAfile "$W/named/bundle.pem" "$W/named/svid.pem" >/dev/null || fail "openssl verify $p"
done

# A Go client (crypto/tls, as keysync): host name checked against the DNS/IP SANs
export GOCACHE="${KB_BUILD_DIR}/go-cache" GOPATH="$W/gopath" GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=0
go build -o "$W/tls_hostname" "${KB_SOURCE_DIR}/tests/integration/tls_hostname/main.go" || fail "go build"
serve() { # dir
  if [ -n "$SRV" ]; then kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; fi
  PORT="$(freeport)"
  openssl s_server -accept "127.0.0.1:$PORT" -cert "$1/svid.pem" -key "$1/svid.key" -www -quiet \
    >/dev/null 2>&1 &
  SRV=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  fail "s_server did not start"
}
serve "$W/named"
for host in localhost 127.0.0.1; do
  out="$("$W/tls_hostname" "$W/named/bundle.pem" "$host" "$PORT" 2>&1)" || fail "Go client to $host: $out"
  [ "$out" = ok ] || fail "Go client to $host: $out"
done
serve "$W/uri-only"
if out="$("$W/tls_hostname" "$W/uri-only/bundle.pem" localhost "$PORT" 2>&1)"; then
  fail "Go client accepted a URI-only SVID for localhost"
fi
grep -q "certificate is not valid for any names" <<<"$out" || fail "Go client said: $out"

# refusals: policy (exit 4, naming the server_names rule), syntax (exit 2, naming the rule)
refused() { # exit msg args...
  local want="$1" msg="$2" err rc=0; shift 2
  err="$(ca "$@" 2>&1 >/dev/null)" || rc=$?
  [ "$rc" = "$want" ] || fail "exit $rc (want $want) for $*: $err"
  grep -qi -- "$msg" <<<"$err" || fail "message for $* was: $err (want: $msg)"
}
refused 4 "not in the dns list of server_names entry 1 (path_prefix /keybridged)" \
  issue --spiffe-id "$KBD" --dns evil.org --out "$W/x"
refused 4 "not in the dns list" issue --spiffe-id "$KBD" --dns a.b.svc.example.org --out "$W/x"
refused 4 "IP address 11.0.0.1 refused" issue --spiffe-id "$KBD" --ip 11.0.0.1 --out "$W/x"
refused 4 "no server_names entry of the policy matches" \
  issue --spiffe-id spiffe://example.org/ns/a --dns localhost --out "$W/x"
refused 4 "not in the dns list" register --spiffe-id "$KBD" --target "dir:$W/svids/kbd" --dns evil.org
refused 2 "lowercase" issue --spiffe-id "$KBD" --dns LOCALHOST --out "$W/x"
refused 2 "wildcard" issue --spiffe-id "$KBD" --dns '*.svc.example.org' --out "$W/x"
refused 2 "trailing dot" issue --spiffe-id "$KBD" --dns localhost. --out "$W/x"
refused 2 "63" issue --spiffe-id "$KBD" --dns "$(printf 'a%.0s' $(seq 64)).org" --out "$W/x"
refused 2 "goes in --ip" issue --spiffe-id "$KBD" --dns 127.0.0.1 --out "$W/x"
refused 2 "IPv4 dotted quad" issue --spiffe-id "$KBD" --ip 127.1 --out "$W/x"
refused 2 "IPv4 dotted quad" issue --spiffe-id "$KBD" --ip fe80::1%eth0 --out "$W/x"
refused 2 "IPv4 dotted quad" issue --spiffe-id "$KBD" --ip 10.0.0.0/8 --out "$W/x"
refused 2 "twice" issue --spiffe-id "$KBD" --dns localhost --dns localhost --out "$W/x"
refused 2 "at most 16" issue --spiffe-id "$KBD" $(for i in $(seq 1 17); do printf -- '--ip 10.0.0.%d ' "$i"; done) --out "$W/x"
[ ! -e "$W/x" ] || fail "a refused issue wrote output"
# no [policy] file: names are refused, saying why
printf '[ca]\ndb = %s\nkey = file\nkey_dir = %s\n' "$W/ca.db" "$W/keys" >"$W/nopol.ini"
if err="$("$B" -c "$W/nopol.ini" issue --spiffe-id "$KBD" --dns localhost --out "$W/x" 2>&1)"; then
  fail "names issued without a policy"
fi
grep -q "\[policy\] file is required" <<<"$err" || fail "no-policy message: $err"
# a malformed server_names entry is a policy error naming the entry
cp "$W/policy.json" "$W/policy.good"
echo '{"rules": [], "server_names": [{"path_prefix": "/a", "dns": ["ok.org"]}, {"path_prefix": "/b", "ip": ["10.0.0.1/8"]}]}' >"$W/policy.json"
refused 3 "server_names entry 2: an ip pattern's address has host bits set" issue --spiffe-id "$KBD" --dns localhost --out "$W/x"
cp "$W/policy.good" "$W/policy.json"

# registrations keep their names across renewals; the policy is re-checked every time
ca register --spiffe-id "$KBD" --target "dir:$W/svids/kbd" --dns localhost --ip 127.0.0.1 >/dev/null 2>&1 \
  || fail "register with names"
ca list 2>/dev/null | grep "sans=dns:localhost,ip:127.0.0.1" >/dev/null || fail "list: $(ca list 2>&1)"
ca renew-once >/dev/null 2>&1 || fail "renew-once"
openssl x509 -in "$W/svids/kbd/svid.pem" -noout -ext subjectAltName | grep "DNS:localhost, IP Address:127.0.0.1" >/dev/null \
  || fail "stored SVID lacks its names"
serve "$W/svids/kbd"
out="$("$W/tls_hostname" "$W/svids/kbd/bundle.pem" localhost "$PORT" 2>&1)" || fail "Go client to the registered SVID: $out"
n0="$(ca audit 2>/dev/null | wc -l)"
policy '"other.example.org"' '"127.0.0.1"'
if ca renew-once --force >/dev/null 2>&1; then fail "renewal with a name the policy no longer allows"; fi
[ "$(ca audit 2>/dev/null | wc -l)" = "$n0" ] || fail "a refused renewal issued a certificate"
echo ok
