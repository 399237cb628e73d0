# cache.sh - sourced helper: a throwaway keybridge-cache (Secrets Manager stand-in) on loopback.
#
#   . "$KB_SOURCE_DIR/tests/lib/cache.sh"
#   kb_cache_start "$W" 111122223333   # sets KB_CACHE_PID, KB_CACHE_PORT; writes $W/ca.creds
#                                      # (0600, the matching client credential line)
#   ... kill "$KB_CACHE_PID" in the test's cleanup
#
# One credential, AKIDCATEST0000000001 / ca-secret-key-1, in the given account; state and logs
# in the directory ($W/cache.db, $W/cache.log).

kb_cache_start() {
  local w="${1:?dir}" acct="${2:?account}" cache="${KB_BUILD_DIR:?}/keybridge-cache"
  "$cache" init-key --out "$w/cache.key" >/dev/null
  printf 'AKIDCATEST0000000001 ca-secret-key-1 %s\n' "$acct" >"$w/cache.creds"
  chmod 600 "$w/cache.creds"
  printf '[server]\nlisten = 127.0.0.1:0\nthreads = 2\n[store]\npath = %s/cache.db\nkey_file = %s/cache.key\n[auth]\ncredentials_file = %s/cache.creds\n' \
    "$w" "$w" "$w" >"$w/cache.ini"
  "$cache" --config "$w/cache.ini" serve 2>"$w/cache.log" &
  KB_CACHE_PID=$!
  KB_CACHE_PORT=""
  for _ in $(seq 1 100); do
    KB_CACHE_PORT=$(grep -o '"port":"[0-9]*"' "$w/cache.log" | grep -o '[0-9]*' | head -1 || true)
    [ -n "$KB_CACHE_PORT" ] && break
    sleep 0.1
  done
  [ -n "$KB_CACHE_PORT" ] || { echo "kb_cache_start: keybridge-cache did not start" >&2; return 1; }
  printf 'AKIDCATEST0000000001 ca-secret-key-1\n' >"$w/ca.creds"
  chmod 600 "$w/ca.creds"
}
