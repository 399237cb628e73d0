#!/usr/bin/env bash
# bench/ca/run.sh BUILD_DIR [N] - in-process issuance of N SVIDs (default 10000) on 2 threads,
# with the CA key in SoftHSM2 and in a dev file. Prints one JSON line per key kind.
# (The network half of the issue's benchmark - renew endpoint vs cfssl - is not scripted yet.)
set -euo pipefail
BD="$(cd "${1:?build dir}" && pwd)"; N="${2:-10000}"
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
W="$(mktemp -d /tmp/kbca-bench.XXXXXX)"; trap 'rm -rf -- "$W"' EXIT
. "$SRC/tests/lib/softhsm.sh"
cc -O2 -std=gnu11 -I"$SRC/src" -o "$W/bench" "$SRC/bench/ca/bench_issue.c" \
  "$BD/libkbca.a" "$BD/libkb.a" $(pkg-config --libs sqlite3 jansson inih libcurl libevent libevent_openssl libevent_pthreads) -lssl -lcrypto -ldl -lpthread
kb_softhsm_make kbca-bench "$W/hsm" >/dev/null
mkdir -m 700 "$W/keys"
printf '[ca]\ndb=%s/hsm.db\nkey=pkcs11\n[pkcs11]\nmodule=%s\ntoken=%s\npin_file=%s\n' "$W" "$KB_HSM_MODULE" "$KB_HSM_LABEL" "$KB_HSM_PIN_FILE" >"$W/hsm.ini"
printf '[ca]\ndb=%s/file.db\nkey=file\nkey_dir=%s/keys\n' "$W" "$W" >"$W/file.ini"
"$BD/keybridge-ca" -c "$W/hsm.ini" init --trust-domain example.org >/dev/null 2>&1
"$BD/keybridge-ca" -c "$W/file.ini" init --trust-domain example.org >/dev/null 2>&1
echo -n "softhsm2: "; "$W/bench" "$W/hsm.db" "$N" 2 "$KB_HSM_MODULE" "$KB_HSM_LABEL" "$(cat "$KB_HSM_PIN_FILE")"
echo -n "file:     "; "$W/bench" "$W/file.db" "$N" 2
