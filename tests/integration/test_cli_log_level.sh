#!/usr/bin/env bash
# test_cli_log_level.sh - the `keybridge` CLI applies its [log] level (issue 11: it declared the
# key and kept WARN whatever the file said). Local mode on a development key file keystore,
# which logs a `keystore_file` warning when opened: shown at the default level (warn), hidden at
# `level = error`, and an unknown level is a configuration error (exit 3) that runs nothing.
set -euo pipefail
B=${KB_BUILD_DIR:?}
if [ ! -x "$B/keybridged" ] || [ ! -x "$B/keybridge" ]; then
  echo "SKIP: keybridged or keybridge not built" >&2
  exit 0
fi
WORK=$(mktemp -d /tmp/kbclilog.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ADMIN=spiffe://example.org/admin
cat >"$WORK/kbd.conf" <<CONF
[store]
url = sqlite:$WORK/kbd.db
[hsm]
keystore = file
key_file = $WORK/master.key
CONF
FAILS=0
fail() {
  echo "FAIL: $*" >&2
  FAILS=$((FAILS + 1))
}
"$B/keybridged" --config "$WORK/kbd.conf" bootstrap --admin-id "$ADMIN" >"$WORK/log" 2>&1 ||
  { cat "$WORK/log" >&2; exit 1; }
kb() { # kb CLI_CONF ARGS...: stdout in $WORK/out, stderr in $WORK/err, exit code in RC
  local conf="$1"
  shift
  set +e
  "$B/keybridge" --config "$conf" --local "$WORK/kbd.conf" --as "$ADMIN" "$@" \
    >"$WORK/out" 2>"$WORK/err"
  RC=$?
  set -e
}
: >"$WORK/default.conf"
kb "$WORK/default.conf" group list
[ "$RC" -eq 0 ] || fail "default level: exit $RC: $(cat "$WORK/err")"
grep -q keystore_file "$WORK/err" || fail "default level (warn): no keystore_file warning"
grep -q admins "$WORK/out" || fail "default level: group list did not list admins"

printf '[log]\nlevel = error\n' >"$WORK/quiet.conf"
kb "$WORK/quiet.conf" group list
[ "$RC" -eq 0 ] || fail "level = error: exit $RC: $(cat "$WORK/err")"
if grep -q keystore_file "$WORK/err"; then
  fail "[log] level = error not applied: $(cat "$WORK/err")"
fi
grep -q admins "$WORK/out" || fail "level = error: group list did not list admins"

KEYBRIDGE_LOG_LEVEL=error kb "$WORK/default.conf" group list
if grep -q keystore_file "$WORK/err"; then
  fail "KEYBRIDGE_LOG_LEVEL=error not applied"
fi

printf '[log]\nlevel = loud\n' >"$WORK/loud.conf"
kb "$WORK/loud.conf" group create should-not-exist
[ "$RC" -eq 3 ] || fail "level = loud: exit $RC, want 3 (configuration error)"
grep -q "level" "$WORK/err" || fail "level = loud: the message does not name the key"
kb "$WORK/default.conf" group list
if grep -q should-not-exist "$WORK/out"; then
  fail "a command ran despite the configuration error"
fi

if [ "$FAILS" -ne 0 ]; then
  exit 1
fi
echo "ok: [log] level applied (warn shown by default, hidden at error); unknown level refused"
