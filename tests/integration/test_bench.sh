#!/usr/bin/env bash
# test_bench.sh - the benchmarks and the internals index cannot rot between runs (issue 11.5):
#  1. every bench/<folder>/<name>.c is a CMake target built into build/bench/<folder>/<name>;
#  2. no bench script compiles C itself (cc/gcc/clang): the programs come from the build;
#  3. bench/lib/harness.sh does what the benchmarks rely on: nginx on a free loopback port from a
#     private prefix, ab figures parsed (non-2xx and failures counted as bad), server CPU read
#     from /proc (a name with ") " in it included), everything stopped and removed on exit;
#  4. bench/README.md links every benchmark folder (docs/internals/README.md has its own test,
#     test_internals_index.sh);
#  5. bench/herd/plot.py draws the committed herd series (data-key cache off and on; needs
#     python3-matplotlib, in scripts/deps.sh).
set -euo pipefail
B="$(cd "${KB_BUILD_DIR:?}" && pwd)"
S="$(cd "${KB_SOURCE_DIR:?}" && pwd)"
pass=0
fail=0
ok() {
  echo "ok: $*"
  pass=$((pass + 1))
}
bad() {
  echo "FAIL: $*"
  fail=$((fail + 1))
}
T="$(mktemp -d)"
trap 'rm -rf -- "$T"' EXIT

# ---- 1. bench programs are CMake targets, and built
mapfile -t progs < <(cd "$S/bench" && find . -mindepth 2 -maxdepth 2 -name '*.c' ! -path './lib/*' |
  sed 's|^\./||; s|\.c$||' | sort)
[ "${#progs[@]}" -ge 7 ] && ok "${#progs[@]} bench programs found" || bad "bench programs: ${progs[*]}"
if grep -q '^KB_BENCH:BOOL=OFF' "$B/CMakeCache.txt" 2>/dev/null; then
  echo "skip: KB_BENCH=OFF in $B: bench programs not built"
else
  for p in "${progs[@]}"; do
    [ -x "$B/bench/$p" ] && ok "built: bench/$p" ||
      bad "bench/$p.c has no program in $B/bench/$p (bench/CMakeLists.txt)"
  done
fi

# ---- 2. no script compiles C itself
hits="$(cd "$S" && grep -nE '(^|[[:space:];&|(])(cc|gcc|clang)[[:space:]]+-|["'"'"'](cc|gcc|clang)["'"'"'][[:space:]]*,' \
  -r bench --include='*.sh' --include='*.py' || true)"
[ -z "$hits" ] && ok "no bench script compiles C itself" || bad "bench scripts compile C: $hits"

# ---- 3. the shared harness
(
  # shellcheck source=bench/lib/harness.sh
  . "$S/bench/lib/harness.sh"
  hb_init kbbenchtest
  echo "$HB_DIR" >"$T/dir"
  hb_nginx_start <<'EOF'
    location / { default_type text/plain; }
EOF
  printf 'hello harness\n' >"$HB_NGINX_ROOT/hello"
  hb_nginx_www
  echo "${HB_NGINX_PIDS[*]}" >"$T/pids"
  echo "$HB_NGINX_PORT" >"$T/port"
  [ "$(curl -sS "http://127.0.0.1:$HB_NGINX_PORT/hello")" = "hello harness" ] &&
    grep -q "listen 127.0.0.1:$HB_NGINX_PORT;" "$HB_DIR/nginx/nginx.conf" && echo served >"$T/served"
  [ "$(stat -c %a "$HB_DIR")" = 711 ] && echo private >"$T/private"
  hb_ab "${HB_NGINX_PIDS[*]}" -k -n 400 -c 4 "http://127.0.0.1:$HB_NGINX_PORT/hello" >"$T/ab.ok"
  hb_ab "${HB_NGINX_PIDS[*]}" -k -n 50 -c 2 "http://127.0.0.1:$HB_NGINX_PORT/missing" >"$T/ab.404"
  if hb_ab "$$" -n 10 -c 1 "http://127.0.0.1:$(hb_free_port)/" >"$T/ab.refused" 2>/dev/null; then
    echo yes >"$T/ab.refused.ok"
  fi
  if echo "not ab output" | hb_ab_parse 0 >/dev/null; then echo yes >"$T/parse.garbage"; fi
  printf '%s\n' 5 1 4 2 3 | hb_median >"$T/median"
  hb_ratio 3 4 >"$T/ratio"
  # CPU from /proc/PID/stat of a process whose name holds ") " (the field split must not shift):
  # it burns 0.3 s of CPU, then waits; python3's start-up adds a little
  python3 -c 'import ctypes, time
ctypes.CDLL(None).prctl(15, b"x) 1 2 3", 0, 0, 0)  # PR_SET_NAME
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
print("burnt", flush=True)
time.sleep(60)' >"$T/burn.out" &
  hb_track $!
  for _ in $(seq 600); do grep -q burnt "$T/burn.out" && break; sleep 0.05; done
  hb_ticks $! >"$T/ticks"
  echo $! >"$T/burn.pid"
  cut -d' ' -f2-3 "/proc/$!/stat" >"$T/burn.comm"
) || bad "harness subshell failed"
[ -f "$T/served" ] && ok "hb_nginx_start serves \$HB_NGINX_ROOT on 127.0.0.1:$(cat "$T/port")" ||
  bad "nginx did not serve the file"
[ -f "$T/private" ] && ok "work dir 0711 (workers may traverse, not list)" || bad "work dir mode"
read -r rps cpu p50 p99 nbad <"$T/ab.ok" || true
if [ "${rps:-0}" -gt 0 ] && [ "${nbad:-x}" = 0 ] && [[ "${cpu:-}" =~ ^[0-9]+\.[0-9]$ ]] &&
  [[ "${p50:-}${p99:-}" =~ ^[0-9]+$ ]]; then
  ok "hb_ab: $rps req/s, $cpu us CPU/request, p50 $p50 ms, p99 $p99 ms, 0 bad"
else
  bad "hb_ab line: $(cat "$T/ab.ok")"
fi
[ "$(awk '{print $5}' "$T/ab.404")" = 50 ] && ok "hb_ab counts 50 404s as bad" ||
  bad "404s not counted: $(cat "$T/ab.404")"
[ ! -e "$T/ab.refused.ok" ] && ok "hb_ab fails when ab cannot connect" || bad "hb_ab refused: $(cat "$T/ab.refused")"
[ ! -e "$T/parse.garbage" ] && ok "hb_ab_parse refuses what is not ab output" || bad "hb_ab_parse accepted garbage"
[ "$(cat "$T/median")" = 3 ] && [ "$(cat "$T/ratio")" = 0.75 ] && ok "hb_median, hb_ratio" ||
  bad "median $(cat "$T/median") ratio $(cat "$T/ratio")"
ticks="$(cat "$T/ticks")"
hz="$(getconf CLK_TCK)"
if [ "$ticks" -ge $((hz * 25 / 100)) ] && [ "$ticks" -le $((hz * 10)) ]; then
  ok "hb_ticks: $ticks ticks for 0.3 s of CPU (process name $(cat "$T/burn.comm"))"
else
  bad "hb_ticks: $ticks ticks for 0.3 s of CPU at $hz Hz"
fi
left=""
for p in $(cat "$T/pids") $(cat "$T/burn.pid"); do kill -0 "$p" 2>/dev/null && left="$left $p"; done
[ -z "$left" ] && ok "every tracked process stopped on exit" || bad "still running:$left"
[ ! -e "$(cat "$T/dir")" ] && ok "work dir removed on exit" || bad "$(cat "$T/dir") left behind"
rc=0
(
  . "$S/bench/lib/harness.sh"
  hb_bench_bin "$B" nosuch program
) >/dev/null 2>"$T/bin.err" || rc=$?
[ "$rc" = 2 ] && grep -q "bench_nosuch_program" "$T/bin.err" && ok "hb_bench_bin: missing program -> exit 2 naming the target" ||
  bad "hb_bench_bin missing: rc $rc $(cat "$T/bin.err")"

# ---- 4. bench/README.md
for d in "$S"/bench/*/; do
  n="$(basename "$d")"
  case "$n" in lib | results) continue ;; esac
  grep -qF "($n/" "$S/bench/README.md" && ok "bench/README.md links $n/" ||
    bad "bench/README.md does not link $n/"
done

# ---- 5. the herd plot from the committed series, both configurations
PLOT_PY=python3
python3 -c 'import matplotlib' 2>/dev/null || PLOT_PY=/usr/bin/python3
csvs=("$S/bench/results/herd-cache-off.csv" "$S/bench/results/herd-cache-on.csv")
for f in "${csvs[@]}"; do
  if [ "$(head -1 "$f" 2>/dev/null)" = "run,cache_ttl,t_s,unwraps_per_s,refused_names_per_s,http429_per_s,syncers_running" ] &&
    [ "$(wc -l <"$f")" -gt 10 ]; then
    ok "$(basename "$f"): $(($(wc -l <"$f") - 1)) rows"
  else
    bad "$f: missing or not herd.py's CSV"
  fi
done
if "$PLOT_PY" "$S/bench/herd/plot.py" "$T/herd.png" "${csvs[@]}" 2>"$T/plot.err" &&
  [ "$(head -c 8 "$T/herd.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] &&
  [ "$(stat -c %s "$T/herd.png")" -gt 20000 ]; then
  ok "plot.py draws the committed series ($(stat -c %s "$T/herd.png") bytes of PNG)"
else
  bad "plot.py: $(tail -3 "$T/plot.err")"
fi
printf 'run,cache_ttl\n' >"$T/empty.csv"
if "$PLOT_PY" "$S/bench/herd/plot.py" "$T/bad.png" "$T/empty.csv" 2>/dev/null; then
  bad "plot.py accepted a CSV without rows"
else
  ok "plot.py refuses a CSV without rows"
fi

echo "bench: $pass passed, $fail failed"
[ "$fail" = 0 ]
