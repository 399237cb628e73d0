#!/usr/bin/env bash
# bench/ca/run.sh BUILD_DIR [N] - keybridge-ca benchmarks (issue 5), N = 10000 by default:
#  (0) the signing ceiling: N ECDSA signatures alone through the CA signer (SoftHSM2, file);
#  (a) in-process issuance of N SVIDs on 2 threads (leaf key + certificate + PEM, in memory),
#      CA key in SoftHSM2 and in a dev file;
#  (b) the same N pre-made P-256 CSRs signed over each CA's network API, keep-alive HTTPS,
#      C clients (libcurl) on CONNS connections: `cfssl serve` /api/v1/cfssl/sign (TLS, EC P-256
#      CA key file), then keybridge-ca's POST /v1/svid/renew (mTLS, [renew] api_min_interval =
#      0s) with the CA key in SoftHSM2 and in a file. cfssl (golang-cfssl) is installed with
#      apt-get when missing.
# Settings: CONNS (16) client connections, SERVER_THREADS (16) keybridge-ca event loops,
# PART=all|inprocess|network, PERF=FILE (perf record of the SoftHSM2 server's network run).
# Prints one JSON line per measurement (with CPU per operation), then the ratio. Everything
# listens on 127.0.0.1 only and is stopped on exit. Results: bench/ca/README.md. The programs are
# CMake targets (build/bench/ca/{bench_issue,bench_sign,bench_http}); the work dir, ports and
# server CPU come from bench/lib/harness.sh.
set -euo pipefail
BD="$(cd "${1:?build dir}" && pwd)"; N="${2:-10000}"
CONNS="${CONNS:-16}"; SERVER_THREADS="${SERVER_THREADS:-16}"; PART="${PART:-all}"
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=bench/lib/harness.sh
. "$SRC/bench/lib/harness.sh"
BISSUE="$(hb_bench_bin "$BD" ca bench_issue)"
BSIGN="$(hb_bench_bin "$BD" ca bench_sign)"
BHTTP="$(hb_bench_bin "$BD" ca bench_http)"
hb_init kbca-bench
W="$HB_DIR"
PIDS=()
. "$SRC/tests/lib/softhsm.sh"
free_port() { hb_free_port; }
wait_port() { hb_wait_port "$1" 10; }
# CPU ticks (user + system) a process has used so far: servers' cost per request, which the
# other load on a shared 2-core machine does not distort the way it distorts wall-clock rates.
with_cpu() { # JSON-LINE PID TICKS_BEFORE -> the line with server_cpu_seconds and server_cpu_us_each
  python3 - "$1" "$(hb_cpu_seconds "$3" "$(hb_ticks "$2")")" <<'PY'
import json, sys
d = json.loads(sys.argv[1]); c = float(sys.argv[2])
d["server_cpu_seconds"] = round(c, 2); d["server_cpu_us_each"] = round(c * 1e6 / max(d["ok"], 1))
print(json.dumps(d, separators=(",", ":")))
PY
}

kb_softhsm_make kbca-bench "$W/hsm" >/dev/null
mkdir -m 700 "$W/keys" "$W/svids"
cat >"$W/policy.json" <<JSON
{"rules": [{"path_prefix": "/ns/", "target": "dir", "dir_root": "$W/svids", "renewable": true}]}
JSON
PORT="$(free_port)"
printf '[ca]\ndb=%s/hsm.db\nkey=pkcs11\n[pkcs11]\nmodule=%s\ntoken=%s\npin_file=%s\n[policy]\nfile=%s/policy.json\n[server]\nlisten=127.0.0.1:%s\nsvid_dir=%s/server\nthreads=%s\n[renew]\napi_min_interval=0s\n[log]\nlevel=warn\n' \
  "$W" "$KB_HSM_MODULE" "$KB_HSM_LABEL" "$KB_HSM_PIN_FILE" "$W" "$PORT" "$W" "$SERVER_THREADS" >"$W/hsm.ini"
FPORT="$(free_port)"
printf '[ca]\ndb=%s/file.db\nkey=file\nkey_dir=%s/keys\n[policy]\nfile=%s/policy.json\n[server]\nlisten=127.0.0.1:%s\nsvid_dir=%s/server-file\nthreads=%s\n[renew]\napi_min_interval=0s\n[log]\nlevel=warn\n' \
  "$W" "$W" "$W" "$FPORT" "$W" "$SERVER_THREADS" >"$W/file.ini"
"$BD/keybridge-ca" -c "$W/hsm.ini" init --trust-domain example.org >/dev/null 2>&1
"$BD/keybridge-ca" -c "$W/file.ini" init --trust-domain example.org >/dev/null 2>&1
HSM_KEY="$(sqlite3 "$W/hsm.db" "select key_ref from gen where state='active'")"
FILE_KEY="$(sqlite3 "$W/file.db" "select key_ref from gen where state='active'")"

# (0) signing ceiling, (a) in-process issuance
if [ "$PART" != network ]; then
echo -n '{"part":"sign","key":"softhsm2",'; "$BSIGN" - "$N" 2 "$KB_HSM_MODULE" "$KB_HSM_LABEL" "$HSM_KEY" <"$KB_HSM_PIN_FILE" | cut -c2-
echo -n '{"part":"sign","key":"file",'; "$BSIGN" "$FILE_KEY" "$N" 2 | cut -c2-
echo -n '{"part":"issue","key":"softhsm2",'; "$BISSUE" "$W/hsm.db" "$N" 2 "$KB_HSM_MODULE" "$KB_HSM_LABEL" "$(cat "$KB_HSM_PIN_FILE")" | cut -c2-
echo -n '{"part":"issue","key":"file",'; "$BISSUE" "$W/file.db" "$N" 2 | cut -c2-
fi
[ "$PART" != inprocess ] || exit 0

# (b) network: the same N CSRs for both
python3 "$SRC/bench/ca/make_csrs.py" "$W/csrs.pem" "$N" spiffe://example.org/ns/bench
# keybridge-ca: a renewable registration for the client's ID, and the client's current SVID
# (1 min: the renew endpoint answers only after a third of the current lifetime has passed, so
# it is made first and used ~15 s later, after the cfssl run).
for k in hsm file; do
  "$BD/keybridge-ca" -c "$W/$k.ini" register --spiffe-id spiffe://example.org/ns/bench \
    --target "dir:$W/svids/bench-$k" --ttl 1h --renewable >/dev/null 2>&1
  "$BD/keybridge-ca" -c "$W/$k.ini" issue --spiffe-id spiffe://example.org/ns/bench --ttl 1m \
    --out "$W/client-$k" >/dev/null 2>&1
done
T_CLIENT=$SECONDS
"$BD/keybridge-ca" -c "$W/hsm.ini" serve >"$W/serve.out" 2>"$W/serve.log" &
PIDS+=($!)
hb_track $!
"$BD/keybridge-ca" -c "$W/file.ini" serve >"$W/serve-file.out" 2>"$W/serve-file.log" &
PIDS+=($!)
hb_track $!

# cfssl: an EC P-256 root made by cfssl itself, a 1 h profile with client+server auth, TLS.
if ! command -v cfssl >/dev/null; then
  apt-get install -y golang-cfssl >/dev/null 2>&1 || { echo "cannot install golang-cfssl" >&2; exit 1; }
fi
mkdir "$W/cfssl"
(cd "$W/cfssl" &&
  echo '{"CN":"cfssl bench CA","key":{"algo":"ecdsa","size":256}}' | cfssl gencert -initca - 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
open("ca.pem", "w").write(d["cert"]); open("ca-key.pem", "w").write(d["key"])' &&
  chmod 600 ca-key.pem &&
  echo '{"CN":"127.0.0.1","hosts":["127.0.0.1"],"key":{"algo":"ecdsa","size":256}}' |
  cfssl gencert -ca ca.pem -ca-key ca-key.pem - 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
open("tls.pem", "w").write(d["cert"]); open("tls-key.pem", "w").write(d["key"])')
cat >"$W/cfssl/config.json" <<'JSON'
{"signing": {"default": {"expiry": "1h", "usages": ["digital signature", "key encipherment",
 "server auth", "client auth"]}}}
JSON
CPORT="$(free_port)"
cfssl serve -address 127.0.0.1 -port "$CPORT" -ca "$W/cfssl/ca.pem" -ca-key "$W/cfssl/ca-key.pem" \
  -config "$W/cfssl/config.json" -tls-cert "$W/cfssl/tls.pem" -tls-key "$W/cfssl/tls-key.pem" \
  >"$W/cfssl.log" 2>&1 &
PIDS+=($!)
hb_track $!
wait_port "$CPORT" || { echo "cfssl did not start" >&2; tail "$W/cfssl.log" >&2; exit 1; }
CF_PID="${PIDS[2]}"; C0="$(hb_ticks "$CF_PID")"
CF="$("$BHTTP" cfssl "https://127.0.0.1:$CPORT/api/v1/cfssl/sign" "$W/csrs.pem" "$N" "$CONNS" - - "$W/cfssl/ca.pem")"
CF="$(with_cpu "$CF" "$CF_PID" "$C0")"
echo "{\"part\":\"network\",\"key\":\"file\",${CF#\{}"

# keybridge-ca, CA key in SoftHSM2 (production) and then in a dev file
kb_run() { # KIND PORT PID-INDEX SERVER-SVID-DIR CLIENT-SVID-DIR
  local pid="${PIDS[$3]}" c0 out perfpid=""
  wait_port "$2" || { echo "keybridge-ca ($1) did not start" >&2; exit 1; }
  c0="$(hb_ticks "$pid")"
  if [ -n "${PERF:-}" ] && [ "$1" = softhsm2 ]; then # PERF=FILE: perf record this server's run
    perf record -F 999 --call-graph dwarf,16384 -o "$PERF" -p "$pid" >/dev/null 2>&1 &
    perfpid=$!
    sleep 1
  fi
  out="$("$BHTTP" kb "https://127.0.0.1:$2/v1/svid/renew" "$W/csrs.pem" "$N" "$CONNS" \
    "$5/svid.pem" "$5/svid.key" "$4/bundle.pem")"
  if [ -n "$perfpid" ]; then kill -INT "$perfpid"; wait "$perfpid" || true; fi
  out="$(with_cpu "$out" "$pid" "$c0")"
  echo "{\"part\":\"network\",\"key\":\"$1\",${out#\{}"
}
while [ $((SECONDS - T_CLIENT)) -lt 15 ]; do sleep 0.5; done
KB="$(kb_run softhsm2 "$PORT" 0 "$W/server" "$W/client-hsm")"
echo "$KB"
kb_run file "$FPORT" 1 "$W/server-file" "$W/client-file"
rows="$(sqlite3 "$W/hsm.db" "select count(*) from audit where target='api'")"
echo "{\"part\":\"network\",\"keybridge_audit_rows\":$rows}"
python3 - "$CF" "$KB" <<'PY'
import json, sys
cf, kb = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"part": "network", "ratio_keybridge_to_cfssl": round(kb["per_second"] / cf["per_second"], 2),
                  "server_cpu_ratio_cfssl_to_keybridge": round(cf["server_cpu_us_each"] / kb["server_cpu_us_each"], 2)}))
PY
