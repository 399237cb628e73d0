#!/usr/bin/env bash
# test_cli_content.sh - `keybridge secret create|put --content-file -` reads the whole of stdin,
# and a read error on stdin fails the command instead of storing what came before it (a
# truncated, here empty, secret). Local mode on a throwaway SoftHSM2 token.
set -euo pipefail
B=${KB_BUILD_DIR:?}
S=${KB_SOURCE_DIR:?}
if [ ! -x "$B/keybridged" ] || [ ! -x "$B/keybridge" ]; then
  echo "SKIP: keybridged or keybridge not built" >&2
  exit 0
fi
WORK=$(mktemp -d /tmp/kbclicontent.XXXXXX)
. "$S/tests/lib/softhsm.sh"
trap 'kb_softhsm_cleanup; rm -rf "$WORK"' EXIT
kb_softhsm_make cli-content
ADMIN=spiffe://example.org/admin
cat >"$WORK/kbd.conf" <<CONF
[store]
url = sqlite:$WORK/kbd.db
[hsm]
module = $KB_HSM_MODULE
token_label = cli-content
pin_file = $KB_HSM_PIN_FILE
CONF
KB=("$B/keybridge" --local "$WORK/kbd.conf" --as "$ADMIN")
FAILS=0
fail() {
  echo "FAIL: $*" >&2
  FAILS=$((FAILS + 1))
}

"$B/keybridged" --config "$WORK/kbd.conf" bootstrap --admin-id "$ADMIN" >"$WORK/log" 2>&1

# More than one read(2) worth, through a pipe: all of it is stored.
head -c 10000 /dev/urandom >"$WORK/content"
cat "$WORK/content" | "${KB[@]}" secret create piped --content-file - 2>>"$WORK/log" >/dev/null ||
  fail "create from a pipe"
"${KB[@]}" secret get piped --out "$WORK/readback" 2>>"$WORK/log" || fail "get piped"
cmp -s "$WORK/content" "$WORK/readback" || fail "piped content read back differs"

# stdin that cannot be read (a directory: read(2) fails with EISDIR) must not create a secret.
if "${KB[@]}" secret create unreadable --content-file - <"$WORK" 2>>"$WORK/log" >/dev/null; then
  fail "create with an unreadable stdin succeeded"
fi
if "${KB[@]}" secret get unreadable >/dev/null 2>&1; then
  fail "a secret was stored from an unreadable stdin"
fi
# ... nor a new version of an existing one.
if "${KB[@]}" secret put piped --content-file - <"$WORK" 2>>"$WORK/log" >/dev/null; then
  fail "put with an unreadable stdin succeeded"
fi
rm -f "$WORK/readback"
"${KB[@]}" secret get piped --out "$WORK/readback" 2>>"$WORK/log" || fail "get piped again"
cmp -s "$WORK/content" "$WORK/readback" || fail "the stored content changed after a failed put"

if [ "$FAILS" -ne 0 ]; then
  cat "$WORK/log" >&2
  exit 1
fi
echo "ok: stdin content read whole; unreadable stdin refused"
