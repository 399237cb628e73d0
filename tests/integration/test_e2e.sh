#!/usr/bin/env bash
# The whole system end to end (issue 6, point 9): the README's main command, scripts/demo.sh, run
# against the programs of this build in its test mode (KB_E2E=1), where every assertion is fatal:
#
#  - keybridge-cache, keybridge-ca (CA key in SoftHSM2) and keybridged (SQLite + SoftHSM2) on
#    loopback; keybridged's, the CA's own and the admin's SVIDs written by the CA's dir:
#    registrations, the application's SVID by a Secrets Manager registration into the cache
#    (SPIRE SVIDStore JSON, checked);
#  - the admin flow in-process (--local) and over mTLS (remote CLI, server ID pinned);
#  - keybridge-sync with only the name of its stored SVID: first run creates exactly the opted-in,
#    granted secrets (SecretString / SecretBinary, the not-opted-in and the ungranted ones absent),
#    the second is a no-op (one keybridged list, one ListSecrets, no fetch, no write), a new
#    version updates exactly one secret, a removed grant is refused by the mass-delete guard
#    (cache unchanged) and then deleted with --allow-mass-delete (recovery window), and with
#    keybridged stopped the run fails and the cache is byte-for-byte what it was (list + values);
#  - 60-second SVIDs: the run waits past the expiry of the first and of the second generation;
#    the re-issued SVIDs must be on disk and in the cache, both servers must present the
#    certificate now on disk (hot reload, logged), and the syncs and the admin CLI after each
#    expiry only work because every party picked up its new SVID;
#  - the AWS CLI reads a synced secret from keybridge-cache.
# About two minutes; the programs' logs are printed on failure.
set -euo pipefail
SRC="${KB_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
BUILD="${KB_BUILD_DIR:-$SRC/build}"
for p in keybridged keybridge keybridge-ca keybridge-cache keybridge-sync; do
  if [ ! -x "$BUILD/$p" ]; then
    echo "SKIP: $BUILD/$p not built"
    exit 0
  fi
done
for t in aws jq openssl softhsm2-util pkcs11-tool python3; do
  command -v "$t" >/dev/null || { echo "FAIL: $t missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
KB_E2E=1 KB_BUILD_DIR="$BUILD" bash "$SRC/scripts/demo.sh"
echo "PASS"
