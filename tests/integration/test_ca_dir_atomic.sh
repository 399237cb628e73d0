#!/usr/bin/env bash
# A dir: target switches svid.pem, svid.key and bundle.pem as one set (docs/keybridge-ca.md,
# "dir: targets"): during 200 forced renewals (`renew-once --force`), reader processes open the
# files and check that the private key belongs to the leaf (python3 cryptography):
#  - through one resolution of DIR/current (a directory fd, then openat): never a mismatch, never
#    a missing file — the guarantee the generation layout gives;
#  - by the usual paths DIR/svid.pem and DIR/svid.key, both opened before either is read (what a
#    generic reader does when it loads a pair): counted; see the note at the end.
# Also: every file a reader reaches is 0600 and in a 0700 generation, and at most two generations
# exist afterwards.
set -euo pipefail
B="${KB_BUILD_DIR:?}/keybridge-ca"
N="${KB_CA_ATOMIC_RENEWALS:-200}"
W="$(mktemp -d /tmp/kbca-atomic.XXXXXX)"
RPIDS=()
cleanup() {
  touch "$W/stop" 2>/dev/null || true
  for p in "${RPIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf -- "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -m 700 "$W/keys" "$W/svids"
cat >"$W/policy.json" <<JSON
{"rules": [{"path_prefix": "/ns/", "target": "dir", "dir_root": "$W/svids"}]}
JSON
cat >"$W/ca.ini" <<CONF
[ca]
db = $W/ca.db
key = file
key_dir = $W/keys
[policy]
file = $W/policy.json
CONF
ca() { "$B" -c "$W/ca.ini" "$@"; }
ca init --trust-domain example.org >/dev/null 2>&1 || fail init
ca register --spiffe-id spiffe://example.org/ns/a --target "dir:$W/svids/a" --ttl 10m >/dev/null 2>&1 || fail register
ca renew-once 2>/dev/null | grep "renewed 1 failed 0" >/dev/null || fail "first write"

cat >"$W/reader.py" <<'PY'
import os, stat, sys
from cryptography import x509
from cryptography.hazmat.primitives import serialization

d, mode, out, stop = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
DER = serialization.Encoding.DER
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
checks = mismatches = errors = badmode = 0
seen = set()

def read_fd(fd):
    st = os.fstat(fd)
    if stat.S_IMODE(st.st_mode) != 0o600 or not stat.S_ISREG(st.st_mode):
        raise PermissionError("mode %o" % st.st_mode)
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)

while not os.path.exists(stop):
    fds = []
    try:
        if mode == "dirfd":
            g = os.open(os.path.join(d, "current"), os.O_RDONLY | os.O_DIRECTORY)
            fds.append(g)
            fds.append(os.open("svid.pem", os.O_RDONLY, dir_fd=g))
            fds.append(os.open("svid.key", os.O_RDONLY, dir_fd=g))
            pem, key = read_fd(fds[1]), read_fd(fds[2])
        else:
            fds.append(os.open(os.path.join(d, "svid.pem"), os.O_RDONLY))
            fds.append(os.open(os.path.join(d, "svid.key"), os.O_RDONLY))
            pem, key = read_fd(fds[0]), read_fd(fds[1])
    except PermissionError:
        badmode += 1
        continue
    except OSError:
        errors += 1
        continue
    finally:
        for f in fds:
            os.close(f)
    leaf = x509.load_pem_x509_certificate(pem)
    k = serialization.load_pem_private_key(key, password=None)
    checks += 1
    seen.add(leaf.serial_number)
    if leaf.public_key().public_bytes(DER, SPKI) != k.public_key().public_bytes(DER, SPKI):
        mismatches += 1
with open(out, "w") as f:
    f.write("%d %d %d %d %d\n" % (checks, mismatches, errors, badmode, len(seen)))
PY

python3 "$W/reader.py" "$W/svids/a" dirfd "$W/dirfd.out" "$W/stop" & RPIDS+=($!)
python3 "$W/reader.py" "$W/svids/a" path "$W/path.out" "$W/stop" & RPIDS+=($!)
for _ in $(seq 1 "$N"); do
  ca renew-once --force 2>/dev/null | grep "renewed 1 failed 0" >/dev/null || fail "forced renewal"
done
touch "$W/stop"
for p in "${RPIDS[@]}"; do wait "$p" || fail "a reader crashed"; done
RPIDS=()
read -r dc dm de db ds <"$W/dirfd.out"
read -r pc pm pe pb ps <"$W/path.out"
echo "dirfd reader: $dc checks, $dm mismatches, $de errors, $ds distinct leaves"
echo "path reader:  $pc checks, $pm mismatches, $pe errors, $ps distinct leaves"
[ "$dc" -gt 0 ] && [ "$pc" -gt 0 ] || fail "a reader never completed a check"
[ "$ds" -gt 1 ] || fail "the dirfd reader never saw a renewal (test is not testing anything)"
[ "$dm" = 0 ] || fail "dirfd reader saw $dm mismatched key/certificate pairs"
[ "$de" = 0 ] || fail "dirfd reader failed to open a file $de times"
[ "$db" = 0 ] && [ "$pb" = 0 ] || fail "a reader reached a file that is not a 0600 regular file"
[ "$pe" = 0 ] || fail "path reader failed to open a file $pe times"
[ "$(readlink "$W/svids/a/current")" = ".gen-$((N + 1))" ] || fail "current -> $(readlink "$W/svids/a/current")"
[ "$(cd "$W/svids/a" && ls -d .gen-* | wc -l)" = 2 ] || fail "generations left: $(ls -A "$W/svids/a")"
for g in "$W"/svids/a/.gen-*; do [ "$(stat -c %a "$g")" = 700 ] || fail "$g not 0700"; done
echo "ok"
