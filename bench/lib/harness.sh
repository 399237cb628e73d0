# bench/lib/harness.sh - what every benchmark that measures a keybridge server against a
# reference server (nginx, cfssl) shares: a private work dir cleaned up on exit, loopback ports,
# process bookkeeping, server CPU from /proc, one nginx configuration, and one ab runner/parser.
# Source it from bash (set -euo pipefail is the caller's):
#
#   SRC="$(cd "$(dirname "$0")/../.." && pwd)"; . "$SRC/bench/lib/harness.sh"
#   hb_init kbcachebench                 # $HB_DIR, cleanup on exit (KEEP=1 keeps $HB_DIR)
#   hb_need ab nginx curl                # exits 2 naming the Debian package when one is missing
#   POP="$(hb_bench_bin "$BUILD" cache populate)"   # build/bench/cache/populate (a CMake target)
#   ... start the server under test with `&`, then: hb_track $!; hb_wait_port "$PORT"
#   hb_nginx_start <<<'location / { }'  # static files from $HB_NGINX_ROOT (not in a pipe: it
#                                        # sets variables)
#   hb_ab "$SERVER_PID" -k -n 10000 -c 32 "http://127.0.0.1:$PORT/"   # rps cpu_us p50 p99 bad
#   hb_ab "${HB_NGINX_PIDS[*]}" -k -n 10000 -c 32 "http://127.0.0.1:$HB_NGINX_PORT/get"
#
# Everything listens on 127.0.0.1 only, on ports the kernel hands out. Server CPU is utime+stime
# of every thread of the given processes (nginx: master and workers), read from /proc/PID/stat
# before and after the run: on a shared machine that is the stable figure; request rates move
# with the other load (the load generator shares the same CPUs, for both servers alike).
# Tested by tests/integration/test_bench.sh.

HB_HZ="$(getconf CLK_TCK)"
HB_PIDS=()

# hb_init NAME: a fresh 0700 work dir $HB_DIR (in /dev/shm when there is one), and a trap that
# stops every tracked process (TERM, then wait) and removes $HB_DIR on exit, INT or TERM.
hb_init() {
  local base=/tmp
  [ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
  HB_DIR="$(mktemp -d "$base/${1:-kbbench}.XXXXXX")"
  trap hb_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

hb_cleanup() {
  local p
  for p in "${HB_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${HB_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  HB_PIDS=()
  if [ -n "${HB_DIR:-}" ] && [ -z "${KEEP:-}" ]; then rm -rf -- "$HB_DIR"; fi
}

# hb_track PID...: stop these processes on exit
hb_track() { HB_PIDS+=("$@"); }

hb_say() { echo "== $*" >&2; }

# hb_need TOOL...: every tool on PATH, or exit 2 naming the Debian package
hb_need() {
  local t pkg
  for t in "$@"; do
    command -v "$t" >/dev/null && continue
    case "$t" in
    ab) pkg=apache2-utils ;; softhsm2-util) pkg=softhsm2 ;; *) pkg="$t" ;;
    esac
    echo "$(basename "$0"): $t is required (apt-get install $pkg, or scripts/deps.sh)" >&2
    exit 2
  done
}

# hb_bench_bin BUILD FOLDER NAME: the path of bench/FOLDER/NAME.c built by CMake (target
# bench_FOLDER_NAME), or exit 2 saying how to build it
hb_bench_bin() {
  local b="$1/bench/$2/$3"
  if [ ! -x "$b" ]; then
    echo "$(basename "$0"): $b is not built (cmake -S . -B $1 -DKB_BENCH=ON &&" \
      "cmake --build $1 --target bench_$2_$3)" >&2
    exit 2
  fi
  echo "$b"
}

# hb_free_port: a TCP port free on 127.0.0.1 right now
hb_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# hb_wait_port PORT [SECONDS]: wait until something accepts on 127.0.0.1:PORT (default 20 s)
hb_wait_port() {
  local i n=$((${2:-20} * 20))
  for ((i = 0; i < n; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1 after ${2:-20} s" >&2
  return 1
}

# hb_ticks PID...: utime+stime (clock ticks, every thread) the processes have used so far
hb_ticks() {
  local t=0 p v
  for p in "$@"; do
    # fields 14 and 15, counted after the ")" that ends the command name (it may hold spaces)
    v="$(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')"
    t=$((t + v))
  done
  echo "$t"
}

# hb_cpu_seconds TICKS_BEFORE TICKS_AFTER: the difference in seconds (2 decimals)
hb_cpu_seconds() { awk -v a="$1" -v b="$2" -v hz="$HB_HZ" 'BEGIN {printf "%.2f", (b - a) / hz}'; }

hb_hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
hb_rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# hb_nginx_start [--ssl]: nginx on 127.0.0.1:$HB_NGINX_PORT (a free port), prefix
# $HB_DIR/nginx, HB_NGINX_WORKERS (default: one per CPU) workers, keep-alive without a request
# limit, no access log, root $HB_NGINX_ROOT (fill it before the first request; it is made
# world-readable because the workers run unprivileged). The server block's other directives
# (ssl_certificate, location ...) come on stdin. Sets HB_NGINX_PID (the master) and
# HB_NGINX_PIDS (master and workers, for hb_ab); the process is tracked.
hb_nginx_start() {
  local ssl="" d="$HB_DIR/nginx" workers="${HB_NGINX_WORKERS:-$(nproc)}" body i
  [ "${1:-}" = --ssl ] && ssl=" ssl"
  body="$(cat)"
  HB_NGINX_ROOT="$d/www"
  HB_NGINX_PORT="$(hb_free_port)"
  mkdir -p "$d/logs" "$HB_NGINX_ROOT"
  cat >"$d/nginx.conf" <<EOF
worker_processes $workers;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  keepalive_requests 10000000;
  server {
    listen 127.0.0.1:$HB_NGINX_PORT$ssl;
    root $HB_NGINX_ROOT;
$body
  }
}
EOF
  # the workers drop to an unprivileged user: they may traverse $HB_DIR and read only www/
  chmod 711 "$HB_DIR" "$d"
  nginx -p "$d" -c "$d/nginx.conf" 2>"$d/stderr" &
  HB_NGINX_PID=$!
  hb_track "$HB_NGINX_PID"
  hb_wait_port "$HB_NGINX_PORT" || {
    cat "$d/stderr" "$d/logs/error.log" >&2 2>/dev/null
    return 1
  }
  for ((i = 0; i < 100; i++)); do # the workers are forked after the listener opens
    mapfile -t HB_NGINX_PIDS < <(ps --ppid "$HB_NGINX_PID" -o pid= | tr -d ' ')
    [ "${#HB_NGINX_PIDS[@]}" -ge "$workers" ] && break
    sleep 0.05
  done
  HB_NGINX_PIDS=("$HB_NGINX_PID" "${HB_NGINX_PIDS[@]}")
}

# hb_nginx_www: make what the caller put under $HB_NGINX_ROOT readable by the workers
hb_nginx_www() { chmod -R a+rX "$HB_NGINX_ROOT"; }

hb_nginx_stop() {
  kill -TERM "$HB_NGINX_PID" 2>/dev/null || true
  wait "$HB_NGINX_PID" 2>/dev/null || true
}

# hb_ab "PID..." AB_ARGS...: one ab run (ab -q AB_ARGS) while measuring the CPU of the listed
# server processes; prints "rps cpu_us_per_request p50_ms p99_ms bad" (bad = failed + non-2xx;
# CPU divided by the completed requests). ab's full output is kept in $HB_DIR/ab.last. Fails
# (with ab's output on stderr) when ab does.
hb_ab() {
  local pids t0 t1 out
  read -r -a pids <<<"$1"
  shift
  t0="$(hb_ticks "${pids[@]}")"
  out="$(ab -q "$@" 2>&1)" || {
    echo "$out" >&2
    return 1
  }
  t1="$(hb_ticks "${pids[@]}")"
  printf '%s\n' "$out" >"$HB_DIR/ab.last"
  hb_ab_parse "$((t1 - t0))" <<<"$out"
}

# hb_ab_parse TICKS < ab-output: the line hb_ab prints
hb_ab_parse() {
  awk -v dt="$1" -v hz="$HB_HZ" '
    /^Requests per second/ {rps = $4}
    /^Complete requests/ {done = $3}
    /^Failed requests/ {failed = $3}
    /^Non-2xx responses/ {non2xx = $3}
    /^  50%/ {p50 = $2}
    /^  99%/ {p99 = $2}
    END {
      if (done == "") exit 1
      printf "%.0f %.1f %s %s %d\n", rps, dt * 1e6 / hz / (done > 0 ? done : 1), p50, p99,
        failed + non2xx
    }'
}

# hb_median: the median of the numbers on stdin (one a line; the lower middle one when even)
hb_median() { sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}'; }

# hb_ratio A B: A / B, 2 decimals
hb_ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "-"; else printf "%.2f", a / b}'; }

# hb_machine: one line saying when and on what the figures were taken
hb_machine() {
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load1 $(cut -d' ' -f1 /proc/loadavg)"
}
