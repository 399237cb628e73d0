#!/usr/bin/env bash
# A program that holds secrets refuses to start when it cannot lock memory, and says why
# (RLIMIT_MEMLOCK). Run as an unprivileged user without CAP_IPC_LOCK and with a zero limit.
set -euo pipefail
B=${KB_BUILD_DIR:?}
if [ "$(id -u)" -ne 0 ]; then
  echo "memlock: needs root to drop to an unprivileged user; 0 passed, 0 failed, 1 skipped"
  exit 0
fi
if ldd "$B/keybridged" | grep -q libasan; then
  # ASan intercepts mlock() and makes it a no-op that succeeds, so the refusal cannot happen in
  # a sanitizer build; the plain build runs this test.
  echo "memlock: ASan build fakes mlock; 0 passed, 0 failed, 1 skipped"
  exit 0
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
chmod 755 "$B" "$B/keybridged" 2>/dev/null || true
set +e
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
  prlimit --memlock=0:0 "$B/keybridged" --check-config >"$out" 2>&1
rc=$?
set -e
if [ $rc -ne 3 ] || ! grep -q RLIMIT_MEMLOCK "$out"; then
  echo "FAIL: expected exit 3 naming RLIMIT_MEMLOCK, got $rc:"; cat "$out"; exit 1
fi
# and with a normal limit the same check succeeds
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
  prlimit --memlock=65536:65536 "$B/keybridged" --check-config >/dev/null 2>&1 ||
  { echo "FAIL: --check-config failed with a 64 KiB memlock limit"; exit 1; }
echo "memlock: 2 passed, 0 failed"
