# softhsm.sh - sourced helper: a throwaway SoftHSM2 token for shell tests.
#
#   . "$KB_SOURCE_DIR/tests/lib/softhsm.sh"
#   kb_softhsm_make my-label          # sets KB_HSM_DIR, SOFTHSM2_CONF, KB_HSM_LABEL,
#                                     # KB_HSM_PIN_FILE (0600), KB_HSM_MODULE
#   ... keybridged --pkcs11-pin-file "$KB_HSM_PIN_FILE" ...
#   kb_softhsm_cleanup                # or: trap kb_softhsm_cleanup EXIT
#
# The conf lives in a fresh temp dir and SOFTHSM2_CONF is exported, so a test never touches
# /etc/softhsm or another test's tokens. PINs are random per token; they are passed to
# softhsm2-util on its command line (it has no PIN-file option), which is acceptable only for a
# throwaway test token. Pass a directory as $2 to put the token there (it is then kept).

KB_HSM_MODULE="${KB_HSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"

kb_softhsm_make() {
  local label="${1:?token label}" dir="${2:-}"
  if [ -n "$dir" ]; then
    mkdir -p "$dir"
    KB_HSM_KEEP=1
  else
    dir="$(mktemp -d /tmp/kbhsm.XXXXXX)"
    KB_HSM_KEEP=0
  fi
  chmod 700 "$dir"
  mkdir -m 700 -p "$dir/tokens"
  (umask 077 && cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
  )
  export SOFTHSM2_CONF="$dir/softhsm2.conf"
  KB_HSM_DIR="$dir"
  KB_HSM_LABEL="$label"
  KB_HSM_PIN_FILE="$dir/pin"
  local pin so_pin
  pin="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  so_pin="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  if ! softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$pin" \
    >/dev/null; then
    echo "kb_softhsm_make: softhsm2-util --init-token failed" >&2
    return 1
  fi
  (umask 077 && printf '%s' "$pin" >"$KB_HSM_PIN_FILE")
  chmod 600 "$KB_HSM_PIN_FILE"
  export KB_HSM_DIR KB_HSM_LABEL KB_HSM_PIN_FILE KB_HSM_MODULE
}

kb_softhsm_cleanup() {
  if [ -n "${KB_HSM_DIR:-}" ] && [ "${KB_HSM_KEEP:-0}" = 0 ] && [ -d "$KB_HSM_DIR" ]; then
    rm -rf -- "$KB_HSM_DIR"
  fi
  KB_HSM_DIR=""
}
