#!/usr/bin/env bash
# bench/cache/run.sh - keybridge-cache throughput, CPU per request and memory at scale, side by
# side with nginx in the same run (issue 4, "Benchmark"). Not part of ctest.
#
#   bench/cache/run.sh [BUILD_DIR]        (default: ./build; RelWithDebInfo or Release)
#
# Environment: N_GET (GetSecretValue requests per ab run, default 100000), N_LIST (ListSecrets,
# default 10000), DURATION (seconds per wrk run, default 8), CONC (connections, default 32),
# ROUNDS (default 3; medians reported), BIG (secrets in the memory run, default 100000),
# N_BIG_LIST (ListSecrets requests on the big store, default 2000), FULL_LIST (1: page through
# the whole big store with boto3, unfiltered and filtered on a tag key; 0: skip),
# TOOLS ("ab wrk" by default; wrk needs the Debian package wrk).
#
# One run: (1) a store with 100 secrets; keybridge-cache (one event loop per CPU) and nginx (one
# worker per CPU, the same response bodies as static files, keep-alive, plain HTTP on loopback)
# are measured alternately with the same tool, concurrency and request (the signed POST replayed:
# SigV4 allows it for 15 minutes). Cases: GetSecretValue of one secret, and ListSecrets
# MaxResults=100 (a full page of 100 entries with tags). Server CPU per request is utime+stime
# from /proc/PID/stat before and after. (2) A store with BIG secrets: populate time, RSS at start,
# GetSecretValue under load, the first ListSecrets page, and VmHWM. The load generator runs on the
# same 2 CPUs as the server, for both servers alike; the ratios are what to compare.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$(cd "$HERE/../.." && pwd)"
BUILD="$(cd "${1:-$SRC/build}" && pwd)"
N_GET="${N_GET:-100000}"
N_LIST="${N_LIST:-10000}"
DURATION="${DURATION:-8}"
CONC="${CONC:-32}"
ROUNDS="${ROUNDS:-3}"
BIG="${BIG:-100000}"
N_BIG_LIST="${N_BIG_LIST:-2000}"
TOOLS="${TOOLS:-ab wrk}"
THREADS="$(nproc)"
REGION=us-east-1
AKID=AKIABENCH00000000001
ACCOUNT=123456789012
SMALL="${SMALL:-1000}"

for t in ab nginx curl python3; do
  command -v "$t" >/dev/null || {
    echo "run.sh: $t is required (apache2-utils for ab)" >&2
    exit 1
  }
done
case " $TOOLS " in *" wrk "*) command -v wrk >/dev/null || {
  echo "run.sh: wrk not installed (apt-get install wrk), using ab only" >&2
  TOOLS=ab
} ;; esac
[ -x "$BUILD/keybridge-cache" ] || {
  echo "run.sh: $BUILD/keybridge-cache not built" >&2
  exit 1
}

D="$(mktemp -d /dev/shm/kbcachebench.XXXXXX)"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf -- "$D"
}
trap cleanup EXIT
say() { echo "== $*" >&2; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
load1() { cut -d' ' -f1 /proc/loadavg; }
ticks() { # total utime+stime (clock ticks) of the given pids, all threads
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
HZ="$(getconf CLK_TCK)"

# ---- the loader: a program of the build (bench/CMakeLists.txt), bench/cache/populate.c
# shellcheck source=bench/lib/harness.sh
. "$SRC/bench/lib/harness.sh"
POPULATE="$(hb_bench_bin "$BUILD" cache populate)"

# ---- credentials, key, configuration
head -c 30 /dev/urandom | base64 | tr -d '/+=' >"$D/sk"
chmod 600 "$D/sk"
install -m 600 /dev/null "$D/creds"
echo "$AKID $(cat "$D/sk") $ACCOUNT" >"$D/creds"

# cache_setup NAME COUNT: key, config and COUNT secrets in $D/NAME
cache_setup() {
  local n="$1"
  mkdir -p "$D/$n"
  "$BUILD/keybridge-cache" init-key --out "$D/$n/key" >/dev/null
  cat >"$D/$n/conf" <<EOF
[server]
listen = 127.0.0.1:$(free_port)
threads = $THREADS
[store]
path = $D/$n/cache.db
key_file = $D/$n/key
[auth]
credentials_file = $D/creds
[aws]
region = $REGION
[log]
level = warn
EOF
  "$POPULATE" "$D/$n/cache.db" "$D/$n/key" "$ACCOUNT" "$REGION" "$2"
}
# cache_start NAME: sets CPORT and CPID
cache_start() {
  CPORT="$(sed -n 's/^listen = 127.0.0.1://p' "$D/$1/conf")"
  "$BUILD/keybridge-cache" --config "$D/$1/conf" serve 2>"$D/$1/log" &
  CPID=$!
  PIDS+=("$CPID")
  for _ in $(seq 400); do
    (echo >"/dev/tcp/127.0.0.1/$CPORT") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "keybridge-cache $1 did not start" >&2
  cat "$D/$1/log" >&2
  exit 1
}
cache_stop() {
  kill -TERM "$CPID"
  wait "$CPID" || true
}

# sign NAME TARGET BODY: writes $D/NAME.body and $D/NAME.hdr (X-Amz-Date, Authorization)
sign() {
  printf '%s' "$3" >"$D/$1.body"
  python3 "$HERE/sign.py" "http://127.0.0.1:$CPORT/" "$REGION" "$AKID" "$D/sk" \
    "secretsmanager.$2" "$D/$1.body" >"$D/$1.hdr"
  echo "secretsmanager.$2" >"$D/$1.target"
}
hdr_date() { sed -n 1p "$D/$1.hdr"; }
hdr_auth() { sed -n 2p "$D/$1.hdr"; }
# curl_signed NAME PORT [PATH]: the response body of the signed request
curl_signed() {
  curl -sS --fail -X POST --data-binary @"$D/$1.body" -H 'Content-Type: application/x-amz-json-1.1' \
    -H "X-Amz-Target: $(cat "$D/$1.target")" -H "X-Amz-Date: $(hdr_date "$1")" \
    -H "Authorization: $(hdr_auth "$1")" "http://127.0.0.1:$2/${3:-}"
}

# ---- (1) 100 secrets: keybridge-cache vs nginx
say "small store: $SMALL secrets"
cache_setup small "$SMALL" >/dev/null
cache_start small
SMALL_PID="$CPID"
SMALL_PORT="$CPORT"
sign get GetSecretValue '{"SecretId":"bench/000042"}'
sign list ListSecrets '{"MaxResults":100}'
mkdir -p "$D/www"
chmod 711 "$D" # nginx workers (unprivileged) traverse $D and read only www/
curl_signed get "$SMALL_PORT" >"$D/www/get"
curl_signed list "$SMALL_PORT" >"$D/www/list"
chmod -R a+rX "$D/www"
python3 - "$D/www/get" "$D/www/list" "$SMALL" <<'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
assert g["Name"] == "bench/000042" and g["SecretString"].startswith("value-000042-"), g
l = json.load(open(sys.argv[2]))
assert len(l["SecretList"]) == 100, len(l["SecretList"])
assert ("NextToken" in l) == (int(sys.argv[3]) > 100), "NextToken"
assert all(len(e["Tags"]) == 2 for e in l["SecretList"])
EOF
GET_BYTES="$(stat -c %s "$D/www/get")"
LIST_BYTES="$(stat -c %s "$D/www/list")"

NPORT="$(free_port)"
mkdir -p "$D/nginx/logs"
cat >"$D/nginx/nginx.conf" <<EOF
worker_processes $THREADS;
pid $D/nginx/nginx.pid;
error_log $D/nginx/logs/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $D/nginx/body;
  proxy_temp_path $D/nginx/proxy;
  fastcgi_temp_path $D/nginx/fastcgi;
  uwsgi_temp_path $D/nginx/uwsgi;
  scgi_temp_path $D/nginx/scgi;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$NPORT;
    root $D/www;
    default_type application/x-amz-json-1.1;
    # The static module answers POST with 405; serving the file instead makes nginx answer the
    # same POST request (body read and discarded) with the same bytes keybridge-cache sends.
    location / {
      error_page 405 =200 \$uri;
      add_header Cache-Control no-store;
    }
  }
}
EOF
nginx -p "$D/nginx" -c "$D/nginx/nginx.conf" 2>"$D/nginx/stderr" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null && break
  sleep 0.05
done
sleep 0.3
# shellcheck disable=SC2207 # one pid per line
NGINX_PIDS=("$NGINX_PID" $(ps --ppid "$NGINX_PID" -o pid= || true))
for c in get list; do
  cmp -s <(curl_signed "$c" "$NPORT" "$c") "$D/www/$c" || {
    echo "nginx does not serve the same $c body to the same POST" >&2
    exit 1
  }
done

# wrk scripts: the same signed POST on every request
for c in get list; do
  python3 - "$D/$c" >"$D/$c.lua" <<'EOF'
import json, sys
p = sys.argv[1]
body = open(p + ".body").read()
date, auth = open(p + ".hdr").read().split("\n")[:2]
target = open(p + ".target").read().strip()
q = json.dumps  # JSON strings are valid Lua string literals for this ASCII content
print("wrk.method = 'POST'")
print("wrk.body = %s" % q(body))
print("wrk.headers['Content-Type'] = 'application/x-amz-json-1.1'")
print("wrk.headers['X-Amz-Target'] = %s" % q(target))
print("wrk.headers['X-Amz-Date'] = %s" % q(date))
print("wrk.headers['Authorization'] = %s" % q(auth))
print("""done = function(summary, latency, requests)
  io.write(string.format("WRKSUM %d %d %d %d %d\\n", summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end""")
EOF
done

# load TOOL SERVER CASE: prints "rps cpu_us_per_req p50_ms p99_ms bad"
load() {
  local tool="$1" name="$2" c="$3" port pids n t0 t1 out
  if [ "$name" = cache ]; then
    port="$SMALL_PORT" pids=("$SMALL_PID")
  else
    port="$NPORT" pids=("${NGINX_PIDS[@]}")
  fi
  n="$N_GET"
  [ "$c" = list ] && n="$N_LIST"
  t0="$(ticks "${pids[@]}")"
  if [ "$tool" = ab ]; then
    local url="http://127.0.0.1:$port/"
    [ "$name" = nginx ] && url="http://127.0.0.1:$port/$c"
    out="$(ab -k -q -n "$n" -c "$CONC" -p "$D/$c.body" -T application/x-amz-json-1.1 \
      -H "X-Amz-Target: $(cat "$D/$c.target")" -H "X-Amz-Date: $(hdr_date "$c")" \
      -H "Authorization: $(hdr_auth "$c")" "$url" 2>&1)" || {
      echo "$out" >&2
      return 1
    }
    t1="$(ticks "${pids[@]}")"
    awk -v n="$n" -v dt="$((t1 - t0))" -v hz="$HZ" '
      /^Requests per second/ {rps = $4}
      /^Complete requests/ {done = $3}
      /^Failed requests/ {failed = $3}
      /^Non-2xx responses/ {non2xx = $3}
      /^  50%/ {p50 = $2}
      /^  99%/ {p99 = $2}
      END {printf "%.0f %.1f %s %s %d\n", rps, dt * 1e6 / hz / done, p50, p99, failed + non2xx}' \
      <<<"$out"
  else
    local path=/
    [ "$name" = nginx ] && path="/$c"
    out="$(wrk -t "$THREADS" -c "$CONC" -d "${DURATION}s" -s "$D/$c.lua" \
      "http://127.0.0.1:$port$path" 2>&1)" || {
      echo "$out" >&2
      return 1
    }
    t1="$(ticks "${pids[@]}")"
    awk -v dt="$((t1 - t0))" -v hz="$HZ" -v secs="$DURATION" '
      /^Requests\/sec:/ {rps = $2}
      /^WRKSUM/ {done = $2; bad = $3 + $4; p50 = $5 / 1000; p99 = $6 / 1000}
      END {printf "%.0f %.1f %.2f %.2f %d\n", rps, dt * 1e6 / hz / done, p50, p99, bad}' <<<"$out"
  fi
}
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

say "warm-up"
for c in get list; do
  N_GET=2000 N_LIST=500 load ab cache "$c" >/dev/null
  N_GET=2000 N_LIST=500 load ab nginx "$c" >/dev/null
done
declare -A R LOAD
for tool in $TOOLS; do
  for c in get list; do
    LOAD[$tool.$c]="$(load1)"
    for r in $(seq "$ROUNDS"); do
      for name in cache nginx; do
        line="$(load "$tool" "$name" "$c")"
        say "$tool $c $name round $r (load $(load1)): rps cpu_us/req p50 p99 bad = $line"
        R[$tool.$c.$name.$r]="$line"
      done
    done
  done
done
col() { # col TOOL CASE NAME FIELD -> median over rounds
  local r
  for r in $(seq "$ROUNDS"); do echo "${R[$1.$2.$3.$r]}" | awk -v f="$4" '{print $f}'; done | median
}
bad=0
for k in "${!R[@]}"; do
  set -- ${R[$k]}
  bad=$((bad + $5))
done
SMALL_HWM="$(hwm_kb "$SMALL_PID")"
cache_stop
kill -TERM "$NGINX_PID"
wait "$NGINX_PID" || true

# ---- (2) BIG secrets: memory and throughput at scale (BIG=0 skips it)
if [ "$BIG" -gt 0 ]; then
say "big store: $BIG secrets (populating)"
BIG_LOAD_BEFORE="$(load1)"
POP_SECS="$(cache_setup big "$BIG")"
DB_MB="$(du -m "$D/big/cache.db" | cut -f1)"
cache_start big
BIG_PID="$CPID"
sleep 0.3
BIG_START_RSS="$(rss_kb "$BIG_PID")"
SMALL_PORT="$CPORT" SMALL_PID="$BIG_PID"
sign get GetSecretValue "{\"SecretId\":\"bench/$(printf %06d $((BIG / 2)))\"}"
sign list ListSecrets '{"MaxResults":100}'
curl_signed get "$CPORT" >/dev/null
t0="$(date +%s%N)"
BIG_LIST_COUNT="$(curl_signed list "$CPORT" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["SecretList"]), "NextToken" in d)')"
BIG_LIST_MS=$((($(date +%s%N) - t0) / 1000000))
BIG_GET_LOAD="$(load1)"
BIG_GET="$(load ab cache get)"
BIG_LIST="$(N_LIST="$N_BIG_LIST" load ab cache list)"
# A full listing, 100 a page, as keybridge-sync reads a cache's state: unfiltered, and filtered
# on a tag key (every row's tags are read to match). Server CPU from /proc as above.
full_list() { # full_list [TAG_KEY] -> "secrets pages seconds cpu_seconds"
  local t0 t1 out
  t0="$(ticks "$BIG_PID")"
  out="$(python3 "$HERE/listall.py" "http://127.0.0.1:$CPORT" "$REGION" "$AKID" "$D/sk" "$@")"
  t1="$(ticks "$BIG_PID")"
  echo "$out $(awk -v dt="$((t1 - t0))" -v hz="$HZ" 'BEGIN {printf "%.1f", dt / hz}')"
}
if [ "${FULL_LIST:-1}" = 1 ]; then
  FULL_LOAD="$(load1)"
  FULL_PLAIN="$(full_list)"
  FULL_TAG="$(full_list managed-by)"
fi
BIG_HWM="$(hwm_kb "$BIG_PID")"
cache_stop
fi

# ---- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
cat <<EOF

keybridge-cache benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $THREADS event loops / nginx workers, plain HTTP on 127.0.0.1, keep-alive, $CONC connections)
$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
bodies: GetSecretValue $GET_BYTES bytes, ListSecrets (100 entries with 2 tags each) $LIST_BYTES bytes; medians of $ROUNDS rounds
load generator on the same CPUs; ab: n=$N_GET (get) / $N_LIST (list); wrk: $THREADS threads, ${DURATION}s

| tool | case | load1 before | keybridge-cache req/s | nginx req/s | ratio | cache CPU/req | nginx CPU/req | CPU ratio | cache p50/p99 ms | nginx p50/p99 ms |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
for tool in $TOOLS; do
  for c in get list; do
    op=GetSecretValue
    [ "$c" = list ] && op="ListSecrets (100)"
    kr="$(col "$tool" "$c" cache 1)" nr="$(col "$tool" "$c" nginx 1)"
    kc="$(col "$tool" "$c" cache 2)" nc="$(col "$tool" "$c" nginx 2)"
    echo "| $tool | $op | ${LOAD[$tool.$c]} | $kr | $nr | $(ratio "$kr" "$nr") | $kc us | $nc us | $(ratio "$kc" "$nc") | $(col "$tool" "$c" cache 3)/$(col "$tool" "$c" cache 4) | $(col "$tool" "$c" nginx 3)/$(col "$tool" "$c" nginx 4) |"
  done
done
cat <<EOF

failed, non-2xx or socket errors over all runs above: $bad
keybridge-cache VmHWM after the runs ($SMALL-secret store): $((SMALL_HWM / 1024)) MB

EOF
[ "$BIG" -gt 0 ] || exit 0
cat <<EOF
big store: $BIG secrets (2 tags each), populated in ${POP_SECS} s through cache_api_dispatch (load1 before: $BIG_LOAD_BEFORE); db $DB_MB MB
RSS at start $((BIG_START_RSS / 1024)) MB; first ListSecrets page (count, NextToken present): $BIG_LIST_COUNT in $BIG_LIST_MS ms
ab GetSecretValue on the big store (load1 before: $BIG_GET_LOAD): rps cpu_us/req p50 p99 bad = $BIG_GET
ab ListSecrets first page on the big store, n=$N_BIG_LIST: rps cpu_us/req p50 p99 bad = $BIG_LIST
full listing with boto3's paginator (load1 before: ${FULL_LOAD:-}): secrets pages seconds server_cpu_seconds = unfiltered ${FULL_PLAIN:-skipped}; tag-key filter ${FULL_TAG:-skipped}
max RSS (VmHWM) with $BIG secrets after these runs: $((BIG_HWM / 1024)) MB
EOF
