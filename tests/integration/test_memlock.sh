#!/usr/bin/env bash
# A program that holds secrets refuses to start when it cannot lock memory, and says why
# (RLIMIT_MEMLOCK). Run as an unprivileged user without CAP_IPC_LOCK and with a zero limit.
set -euo pipefail
B=${KB_BUILD_DIR:?}
if [ "$(id -u)" -ne 0 ]; then
  echo "memlock: needs root to drop to an unprivileged user; 0 passed, 0 failed, 1 skipped"
  exit 0
fi
if ldd "$B/keybridged" | grep libasan >/dev/null; then
  # ASan intercepts mlock() and makes it a no-op that succeeds, so the refusal cannot happen in
  # a sanitizer build; the plain build runs this test.
  echo "memlock: ASan build fakes mlock; 0 passed, 0 failed, 1 skipped"
  exit 0
fi
# The refusal can only be seen where the kernel enforces the limit. Some sandboxes (CI runs in
# one) let mlock() succeed with RLIMIT_MEMLOCK 0 and no CAP_IPC_LOCK; probe with the same
# credentials first and report which case ran.
probe() {
  setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
    prlimit --memlock=0:0 python3 -c '
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
m = mmap.mmap(-1, mmap.PAGESIZE)
buf = ctypes.c_char.from_buffer(m)
sys.exit(0 if libc.mlock(ctypes.addressof(buf), mmap.PAGESIZE) == 0 else 1)
'
}
out=$(mktemp)
tmpd=$(mktemp -d)
trap 'rm -rf "$out" "$tmpd"' EXIT
if probe; then
  # The kernel will not refuse, so make mlock() refuse the way it does elsewhere (EPERM) with a
  # preloaded shim: the program's own refusal (exit 3, naming the limit) is still what is tested.
  echo "memlock: kernel $(uname -r) lets an unprivileged mlock() succeed at RLIMIT_MEMLOCK=0;" \
    "injecting EPERM from mlock() instead"
  printf '#include <errno.h>\n#include <stddef.h>\nint mlock(const void *a, size_t n)\n'\
'{ (void)a; (void)n; errno = EPERM; return -1; }\n' >"$tmpd/shim.c"
  cc -shared -fPIC -o "$tmpd/shim.so" "$tmpd/shim.c"
  set +e
  LD_PRELOAD="$tmpd/shim.so" "$B/keybridged" --check-config >"$out" 2>&1
  rc=$?
  set -e
  if [ $rc -ne 3 ] || ! grep -q RLIMIT_MEMLOCK "$out"; then
    echo "FAIL: expected exit 3 naming RLIMIT_MEMLOCK when mlock fails, got $rc:"; cat "$out"
    exit 1
  fi
  "$B/keybridged" --check-config >/dev/null 2>&1 ||
    { echo "FAIL: --check-config failed without the shim"; exit 1; }
  echo "memlock: 2 passed, 0 failed (mlock failure injected)"
  exit 0
fi
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
