#!/usr/bin/env bash
# bench/keybridged/run.sh - keybridged's list endpoint against nginx, plus latency, memory at
# scale and slow-loris (issue 3, "Benchmark"). Not part of ctest.
#
#   bench/keybridged/run.sh [BUILD_DIR]        (default: ./build, a Release build)
#
# Environment: N_NEW (requests per new-connection run, default 4000), N_KA (keep-alive run,
# default 40000), C_NEW (new-connection concurrency, default 32), ROUNDS (default 3; the median
# is reported), BIG_SECRETS (100000), BIG_CLIENTS (10000), BIG_GROUPS (500), SLOW (500).
# BIG=0 skips the big store (3) and SLOW=0 the slow-loris part (4), for quick A/B runs.
# PERF=DIR also profiles keybridged (perf record -g) over one more keep-alive run and writes
# perf reports by library and by symbol into DIR.
#
# One run: (1) keybridged with a client holding 20 secrets and nginx (ssl_verify_client on, same
# CA, same server key and certificate, the same JSON body as a static file) are measured
# alternately with `ab -E` (a new TLS connection per request, then keep-alive -c 32); server CPU
# per request from /proc/PID/stat utime+stime. (2) p50/p99 list latency. (3) keybridged on a
# store with BIG_SECRETS secrets and BIG_CLIENTS clients: p50/p99 and max RSS (VmHWM). (4) p99
# of list requests while SLOW slow-loris connections are open. Everything on loopback; the
# store lives on /dev/shm so populating 100k secrets is not bound by fsync. The work dir, nginx,
# ab and the CPU accounting come from bench/lib/harness.sh; populate is the CMake target
# bench_keybridged_populate (build/bench/keybridged/populate).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$(cd "$HERE/../.." && pwd)"
BUILD="$(cd "${1:-$SRC/build}" && pwd)"
# shellcheck source=bench/lib/harness.sh
. "$SRC/bench/lib/harness.sh"
N_NEW="${N_NEW:-4000}"
N_KA="${N_KA:-40000}"
C_NEW="${C_NEW:-32}"
ROUNDS="${ROUNDS:-3}"
BIG_SECRETS="${BIG_SECRETS:-100000}"
BIG_CLIENTS="${BIG_CLIENTS:-10000}"
BIG_GROUPS="${BIG_GROUPS:-500}"
SLOW="${SLOW:-500}"
BIG="${BIG:-1}"
THREADS="$(nproc)"
TD=example.org
ADMIN="spiffe://$TD/ns/ops/sa/admin"
SERVER_ID="spiffe://$TD/keybridged"
BENCH_ID="spiffe://$TD/ns/bench/sa/syncer"

hb_need ab nginx curl openssl python3 softhsm2-util
[ -x "$BUILD/keybridged" ] || {
  echo "run.sh: $BUILD/keybridged not built" >&2
  exit 2
}
POPULATE="$(hb_bench_bin "$BUILD" keybridged populate)"
hb_init kbbench
D="$HB_DIR"
say() { hb_say "$@"; }

# ---- PKI (openssl CLI), same shapes as the integration tests
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/ca.key" \
  -out "$D/ca.pem" -days 2 -subj "/O=kbbench root" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectAltName=URI:spiffe://$TD" \
  2>/dev/null
leaf() { # leaf NAME SPIFFE_ID
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/$1.key" \
    -out "$D/$1.csr" -subj "/CN=$1" 2>/dev/null
  chmod 600 "$D/$1.key"
  printf '[v3]\nsubjectAltName=URI:%s\nbasicConstraints=critical,CA:FALSE\n%s\n%s\n' "$2" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" >"$D/$1.ext"
  openssl x509 -req -in "$D/$1.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -CAcreateserial -days 1 \
    -sha256 -extfile "$D/$1.ext" -extensions v3 -out "$D/$1.pem" 2>/dev/null
}
leaf server "$SERVER_ID"
leaf admin "$ADMIN"
leaf bench "$BENCH_ID"
cat "$D/bench.pem" "$D/bench.key" >"$D/bench-ab.pem" # ab -E: certificate and key in one file

. "$SRC/tests/lib/softhsm.sh"
kb_softhsm_make kbbench "$D/hsm" >/dev/null

# kbd_setup NAME: config + bootstrap of a keybridged instance in $D/NAME
kbd_setup() {
  local n="$1"
  mkdir -p "$D/$n"
  cat >"$D/$n/conf" <<EOF
[server]
listen = 127.0.0.1:$(hb_free_port)
threads = $THREADS
cert_file = $D/server.pem
key_file = $D/server.key
bundle_file = $D/ca.pem
trust_domain = $TD
metrics_listen = 127.0.0.1:$(hb_free_port)
max_connections = 4096
[store]
url = sqlite:$D/$n/kb.db
[hsm]
keystore = pkcs11
module = $KB_HSM_MODULE
token_label = kbbench
key_label = $n
pin_file = $KB_HSM_PIN_FILE
[log]
level = warn
EOF
  "$BUILD/keybridged" --config "$D/$n/conf" bootstrap --admin-id "$ADMIN" >/dev/null
}
# kbd_start NAME: start it; sets KPORT and KPID
kbd_start() {
  KPORT="$(sed -n 's/^listen = 127.0.0.1://p' "$D/$1/conf")"
  "$BUILD/keybridged" --config "$D/$1/conf" serve 2>"$D/$1/log" &
  KPID=$!
  hb_track "$KPID"
  hb_wait_port "$KPORT" || {
    echo "keybridged $1 did not start" >&2
    cat "$D/$1/log" >&2
    exit 1
  }
}
kbd_stop() {
  kill -TERM "$KPID"
  wait "$KPID" || true
}

# ---- (1) keybridged vs nginx, 20 secrets
say "small store: 20 secrets for the bench client"
kbd_setup small
"$POPULATE" "$D/small/conf" 20 0 1 "$BENCH_ID"
kbd_start small
SMALL_PID="$KPID"
SMALL_PORT="$KPORT"
URL_K="https://127.0.0.1:$SMALL_PORT/v1/secrets"
# nginx: mTLS with the same CA, server key and certificate, the same body as a static file
hb_nginx_start --ssl <<EOF
    ssl_certificate $D/server.pem;
    ssl_certificate_key $D/server.key;
    ssl_client_certificate $D/ca.pem;
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /v1/secrets {
      default_type application/json;
      add_header Cache-Control no-store;
    }
EOF
mkdir -p "$HB_NGINX_ROOT/v1"
curl -sS --fail -k --cert "$D/bench.pem" --key "$D/bench.key" "$URL_K" \
  -o "$HB_NGINX_ROOT/v1/secrets"
hb_nginx_www
NSECRETS="$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["secrets"]))' \
  "$HB_NGINX_ROOT/v1/secrets")"
[ "$NSECRETS" = 20 ] || {
  echo "expected 20 secrets in the list, got $NSECRETS" >&2
  exit 1
}
BODY_BYTES="$(stat -c %s "$HB_NGINX_ROOT/v1/secrets")"

URL_N="https://127.0.0.1:$HB_NGINX_PORT/v1/secrets"
cmp -s <(curl -sS -k --cert "$D/bench.pem" --key "$D/bench.key" "$URL_N") "$HB_NGINX_ROOT/v1/secrets" || {
  echo "nginx does not serve the same body" >&2
  exit 1
}

# ab_run NAME URL N C [-k]: prints "rps cpu_us_per_req p50_ms p99_ms bad" (hb_ab)
ab_run() {
  local name="$1" url="$2" n="$3" c="$4" pids
  case "$name" in
  keybridged) pids="$SMALL_PID" ;;
  keybridged-big) pids="$BIG_PID" ;;
  *) pids="${HB_NGINX_PIDS[*]}" ;;
  esac
  # shellcheck disable=SC2086 # $5 is -k or nothing
  hb_ab "$pids" ${5:-} -n "$n" -c "$c" -E "$D/bench-ab.pem" "$url"
}

say "warm-up"
ab_run keybridged "$URL_K" 500 8 >/dev/null
ab_run nginx "$URL_N" 500 8 >/dev/null
declare -A R
for mode in new ka; do
  for r in $(seq "$ROUNDS"); do
    for name in keybridged nginx; do
      url="$URL_K"
      [ "$name" = nginx ] && url="$URL_N"
      if [ "$mode" = new ]; then
        line="$(ab_run "$name" "$url" "$N_NEW" "$C_NEW")"
      else
        line="$(ab_run "$name" "$url" "$N_KA" 32 -k)"
      fi
      say "$mode $name round $r: rps cpu_us/req p50 p99 failed non2xx = $line"
      R[$mode.$name.$r]="$line"
    done
  done
done
col() { # col MODE NAME FIELD -> median over rounds
  local r
  for r in $(seq "$ROUNDS"); do
    echo "${R[$1.$2.$r]}" | awk -v f="$3" '{print $f}'
  done | hb_median
}
fails=0
for k in "${!R[@]}"; do
  set -- ${R[$k]}
  fails=$((fails + $5))
done
SMALL_HWM="$(hb_hwm_kb "$SMALL_PID")"

if [ -n "${PERF:-}" ]; then
  say "perf profile of keybridged over one keep-alive run -> $PERF"
  mkdir -p "$PERF"
  perf record -q -F 1999 -g -p "$SMALL_PID" -o "$D/perf.data" 2>/dev/null &
  PERF_PID=$!
  sleep 0.5
  ab_run keybridged "$URL_K" "$N_KA" 32 -k >/dev/null
  kill -INT "$PERF_PID"
  wait "$PERF_PID" || true
  perf report -i "$D/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -20 >"$PERF/by-library.txt" || true
  perf report -i "$D/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -60 >"$PERF/by-symbol.txt" || true
  perf report -i "$D/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -80 >"$PERF/inclusive.txt" || true
fi

# ---- (2) list latency (one kept-alive connection, sequential)
say "list latency, 20 secrets"
LAT_SMALL="$(python3 "$HERE/clients.py" latency "$SMALL_PORT" "$D/ca.pem" "$D/bench.pem" \
  "$D/bench.key" 5000)"

# ---- (4) slow-loris against the small instance
SL_READY=skipped SL_DONE=skipped OPEN_DURING=- LAT_SLOW=skipped
if [ "$SLOW" -gt 0 ]; then
  say "slow-loris: $SLOW connections"
  python3 "$HERE/clients.py" slowloris "$SMALL_PORT" "$D/ca.pem" "$D/bench.pem" "$D/bench.key" \
    "$SLOW" 25 >"$D/slowloris.out" &
  SL_PID=$!
  hb_track "$SL_PID"
  for _ in $(seq 600); do
    grep -q ready "$D/slowloris.out" 2>/dev/null && break
    sleep 0.1
  done
  SL_READY="$(head -1 "$D/slowloris.out")"
  LAT_SLOW="$(python3 "$HERE/clients.py" latency "$SMALL_PORT" "$D/ca.pem" "$D/bench.pem" \
    "$D/bench.key" 3000)"
  OPEN_DURING="$(ls /proc/"$SMALL_PID"/fd | wc -l)"
  wait "$SL_PID" || true
  SL_DONE="$(tail -1 "$D/slowloris.out")"
fi
kbd_stop
hb_nginx_stop

# ---- (3) memory and latency at scale
POP_SECS=- DB_MB=- LAT_BIG=skipped BIG_KA=skipped ADMIN_LIST_BYTES=- ADMIN_LIST_MS=-
BIG_START_RSS=0 BIG_HWM_CLIENT=0 BIG_HWM=0
if [ "$BIG" != 0 ]; then
  say "big store: $BIG_SECRETS secrets, $BIG_CLIENTS clients, $BIG_GROUPS groups (populating)"
  kbd_setup big
  t0="$(date +%s)"
  "$POPULATE" "$D/big/conf" "$BIG_SECRETS" "$BIG_CLIENTS" "$BIG_GROUPS" "$BENCH_ID"
  POP_SECS=$(($(date +%s) - t0))
  DB_MB="$(du -m "$D/big/kb.db" | cut -f1)"
  kbd_start big
  BIG_PID="$KPID"
  BIG_START_RSS="$(hb_rss_kb "$BIG_PID")"
  LAT_BIG="$(python3 "$HERE/clients.py" latency "$KPORT" "$D/ca.pem" "$D/bench.pem" \
    "$D/bench.key" 3000)"
  BIG_KA="$(ab_run keybridged-big "https://127.0.0.1:$KPORT/v1/secrets" 20000 32 -k 2>/dev/null ||
    true)"
  BIG_HWM_CLIENT="$(hb_hwm_kb "$BIG_PID")" # before the admin list below
  # The admin's full list (100k secrets) is the largest single response the server builds.
  t0="$(date +%s%N)"
  ADMIN_LIST_BYTES="$(curl -sS -k --cert "$D/admin.pem" --key "$D/admin.key" \
    "https://127.0.0.1:$KPORT/v1/admin/secrets" | wc -c)"
  ADMIN_LIST_MS=$((($(date +%s%N) - t0) / 1000000))
  BIG_HWM="$(hb_hwm_kb "$BIG_PID")"
  kbd_stop
fi

# ---- report
ratio() { hb_ratio "$@"; }
KN="$(col new keybridged 1)" NN="$(col new nginx 1)"
KK="$(col ka keybridged 1)" NK="$(col ka nginx 1)"
cat <<EOF

keybridged benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $THREADS event loops / nginx workers)
$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
list body: $NSECRETS secrets, $BODY_BYTES bytes; medians of $ROUNDS rounds; ab runs on the same machine

| case | keybridged req/s | nginx req/s | ratio | target | keybridged CPU/req | nginx CPU/req |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| new TLS connection per request (-c $C_NEW, n=$N_NEW) | $KN | $NN | $(ratio "$KN" "$NN") | >= 0.9 | $(col new keybridged 2) us | $(col new nginx 2) us |
| keep-alive (-k -c 32, n=$N_KA) | $KK | $NK | $(ratio "$KK" "$NK") | >= 0.6 | $(col ka keybridged 2) us | $(col ka nginx 2) us |

ab p50/p99 (ms): new keybridged $(col new keybridged 3)/$(col new keybridged 4), nginx $(col new nginx 3)/$(col new nginx 4); keep-alive keybridged $(col ka keybridged 3)/$(col ka keybridged 4), nginx $(col ka nginx 3)/$(col ka nginx 4)
failed or non-2xx responses over all ab runs: $fails

list latency, one kept-alive connection, sequential (20 secrets): $LAT_SMALL
keybridged VmHWM after the ab runs (20-secret store): $((SMALL_HWM / 1024)) MB

slow-loris: $SL_READY -> $SL_DONE; keybridged fds during: $OPEN_DURING
list latency with $SLOW slow-loris connections open: $LAT_SLOW   (target p99 < 50 ms)

big store: $BIG_SECRETS secrets, $BIG_CLIENTS clients, $BIG_GROUPS groups; populated in ${POP_SECS}s; db ${DB_MB} MB
list latency (20 secrets) on the big store: $LAT_BIG
keep-alive -c 32 on the big store: rps cpu_us/req p50 p99 bad = $BIG_KA
admin list of all secrets: $ADMIN_LIST_BYTES bytes in ${ADMIN_LIST_MS} ms
keybridged RSS at start $((BIG_START_RSS / 1024)) MB; max RSS (VmHWM) serving clients $((BIG_HWM_CLIENT / 1024)) MB, after the admin full list $((BIG_HWM / 1024)) MB  (target <= 256 MB)
EOF
