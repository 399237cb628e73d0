#!/usr/bin/env bash
# Build keybridge-sync as an AWS Lambda custom-runtime artifact (provided.al2023):
#
#   scripts/package-lambda.sh [--arch x86_64|arm64|all] OUTDIR
#
# writes, per architecture,
#   OUTDIR/keybridge-sync-lambda-ARCH.zip            bootstrap (0755) + manifest.json at the root
#   OUTDIR/keybridge-sync-lambda-ARCH.zip.sha256     `sha256sum` line of the zip
#   OUTDIR/keybridge-sync-lambda-ARCH.manifest.json  the manifest, also beside the zip
#
# `bootstrap` is keybridge-sync linked statically against OpenSSL, jansson, inih and libevent and
# dynamically against glibc only (a static glibc would dlopen NSS modules of the build's glibc
# for getaddrinfo). The build refuses any DT_NEEDED outside glibc and any glibc symbol version
# newer than GLIBC_2.34 (Amazon Linux 2023), so Debian 12's glibc 2.36 headers cannot leak into it.
#
# Reproducible: the same commit (or the same tree) gives the same zip, byte for byte, whatever
# the checkout or build directory: SOURCE_DATE_EPOCH = commit time; source and build paths mapped
# with -ffile-prefix-map; no debug info (-g0, stripped); objects and archives in C-locale order,
# archives with `ar D` (zero uid/gid/mtime); build-id is a hash of the contents, so it is stable
# too; zip entries in a fixed order with mtime = SOURCE_DATE_EPOCH, TZ=UTC, `zip -X -D` (no
# uid/gid extra fields, no directory entries), fixed modes. See docs/keybridge-sync.md.
#
# --arch all (default) builds x86_64 and, when the aarch64 cross toolchain and arm64 libraries
# from scripts/deps.sh are present, arm64 (otherwise it says why it skipped it).
set -euo pipefail

GLIBC_MAX="2.34" # Amazon Linux 2023 (provided.al2023)
# Libraries keybridge-sync uses (ldd build/keybridge-sync), linked from their .a archives.
STATIC_LIBS=(-lssl -lcrypto -ljansson -linih -levent_openssl -levent_pthreads -levent_core)
# The only shared objects bootstrap may need: glibc's.
ALLOWED_NEEDED='^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$'

usage() {
  echo "usage: $0 [--arch x86_64|arm64|all] OUTDIR" >&2
  exit 2
}

arch_req=all
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || usage; arch_req="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) [ -z "$out" ] || usage; out="$1"; shift ;;
  esac
done
[ -n "$out" ] || usage
case "$arch_req" in x86_64|arm64|all) ;; *) usage ;; esac

SRC=$(cd "$(dirname "$0")/.." && pwd -P)
mkdir -p "$out"
OUT=$(cd "$out" && pwd -P)
export LC_ALL=C TZ=UTC
umask 022

# Provenance: version from src/lib/version.h, commit, its time and whether the sources differ
# from it from git; KB_COMMIT (+ KB_DIRTY, SOURCE_DATE_EPOCH) set them for a tree without git.
VERSION=$(sed -n 's/^#define KB_VERSION "\(.*\)"$/\1/p' "$SRC/src/lib/version.h")
[ -n "$VERSION" ] || { echo "package-lambda: no KB_VERSION in src/lib/version.h" >&2; exit 1; }
COMMIT=${KB_COMMIT:-unknown}
DIRTY=${KB_DIRTY:-false}
if [ -z "${KB_COMMIT:-}" ] && git -C "$SRC" rev-parse --verify -q HEAD >/dev/null 2>&1; then
  COMMIT=$(git -C "$SRC" rev-parse HEAD)
  : "${SOURCE_DATE_EPOCH:=$(git -C "$SRC" log -1 --format=%ct HEAD)}"
  if [ -n "$(git -C "$SRC" status --porcelain -- src scripts/package-lambda.sh scripts/lambda)" ]; then
    DIRTY=true
  fi
fi
: "${SOURCE_DATE_EPOCH:=0}"
export SOURCE_DATE_EPOCH

# Same flags as CMakeLists.txt (warnings are errors), plus what the artifact needs.
WARN=(-Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla -Wstrict-prototypes -Wconversion
      -Wsign-conversion -Wmissing-prototypes)
CFLAGS_COMMON=(-std=gnu11 -D_GNU_SOURCE -O2 -g0 -fstack-protector-strong -D_FORTIFY_SOURCE=2
               -fPIE -ffunction-sections -fdata-sections -fno-ident)
LDFLAGS_COMMON=(-pie -Wl,--gc-sections -Wl,--as-needed -Wl,-z,relro,-z,now -Wl,--build-id=sha1
                -Wl,--hash-style=gnu -s)

jobs=$(nproc 2>/dev/null || echo 1)
[ "$jobs" -le 2 ] || jobs=2

sha256() { sha256sum "$1" | cut -d' ' -f1; }

WORKDIRS=()
cleanup() { [ ${#WORKDIRS[@]} -eq 0 ] || rm -rf "${WORKDIRS[@]}"; }
trap cleanup EXIT

# check_elf FILE: only glibc in DT_NEEDED, no GLIBC_x.y above GLIBC_MAX. Prints the highest.
check_elf() {
  local f="$1" bad needed max
  needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  bad=$(printf '%s\n' "$needed" | grep -Ev "$ALLOWED_NEEDED" | grep -v '^$' || true)
  if [ -n "$bad" ]; then
    echo "package-lambda: $f needs shared libraries outside glibc: $bad" >&2
    return 1
  fi
  max=$(readelf -V --wide "$f" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
  if [ -n "$max" ] && [ "$(printf '%s\n%s\n' "$max" "$GLIBC_MAX" | sort -V | tail -1)" != "$GLIBC_MAX" ]; then
    echo "package-lambda: $f needs GLIBC_$max (> GLIBC_$GLIBC_MAX):" >&2
    objdump -T "$f" | grep -E "GLIBC_2\.(3[5-9]|[4-9][0-9])" >&2 || true
    return 1
  fi
  echo "GLIBC_${max:-none}"
}

# build ARCH TRIPLET CC: compile, link, check, zip.
build() {
  local arch="$1" triplet="$2" cc="$3"
  local work name libdirs=() f o objs_lib=() objs_sync=()
  name="keybridge-sync-lambda-$arch"
  work=$(mktemp -d "${TMPDIR:-/tmp}/kb-lambda-$arch.XXXXXX")
  WORKDIRS+=("$work")
  local cflags=("${CFLAGS_COMMON[@]}" "${WARN[@]}" "-ffile-prefix-map=$SRC/=" "-ffile-prefix-map=$work/="
                -I"$SRC/src" -I"$SRC/src/lib" -I"$SRC/src/sync" -I/usr/include/p11-kit-1)
  # Static archives: the architecture's multiarch directory, then /usr/local for archives Debian
  # cannot co-install (libevent-dev:arm64, extracted there by scripts/deps.sh).
  for d in "/usr/local/lib/$triplet" "/usr/lib/$triplet"; do
    [ -d "$d" ] && libdirs+=("-L$d")
  done

  echo "package-lambda: building $name with $cc"
  mkdir -p "$work/lib" "$work/sync" "$work/pkg"
  # Compile in a fixed order, 2 at a time (the machine's cores are shared).
  (cd "$SRC" && ls src/lib/*.c src/sync/*.c) | sort |
    CC="$cc" WORK="$work" SRC="$SRC" xargs -P "$jobs" -I{} sh -c \
      'f="$1"; shift; o="$WORK/$(dirname "$f" | sed s,^src/,,)/$(basename "$f" .c).o"
       exec "$CC" "$@" -c "$SRC/$f" -o "$o"' \
      sh {} "${cflags[@]}"
  for f in $(cd "$SRC" && ls src/lib/*.c | sort); do objs_lib+=("$work/lib/$(basename "$f" .c).o"); done
  for f in $(cd "$SRC" && ls src/sync/*.c | sort); do
    o="$work/sync/$(basename "$f" .c).o"
    [ "$(basename "$f")" = main.c ] || objs_sync+=("$o")
  done
  # Definitions of glibc >2.34 functions that static archives call (see the file).
  "$cc" "${cflags[@]}" -c "$SRC/scripts/lambda/glibc_compat.c" -o "$work/glibc_compat.o"
  (cd "$work" && ar rcD libkb.a "${objs_lib[@]#"$work/"}" && ar rcD libkbsync.a "${objs_sync[@]#"$work/"}")
  "$cc" "${LDFLAGS_COMMON[@]}" -o "$work/pkg/bootstrap" "$work/sync/main.o" "$work/glibc_compat.o" \
    "$work/libkbsync.a" "$work/libkb.a" "${libdirs[@]}" \
    -Wl,-Bstatic "${STATIC_LIBS[@]}" -Wl,-Bdynamic -lpthread -ldl
  chmod 0755 "$work/pkg/bootstrap"
  local glibc_max
  glibc_max=$(check_elf "$work/pkg/bootstrap")

  local libs_json="" l ver
  for l in libssl-dev libjansson-dev libinih-dev libevent-dev; do
    ver=$(dpkg-query -W -f='${Version}' "$l:$([ "$arch" = x86_64 ] && echo amd64 || echo arm64)" 2>/dev/null ||
          cat "/usr/local/lib/$triplet/$l.version" 2>/dev/null || echo unknown)
    libs_json+="${libs_json:+, }\"$l\": \"$ver\""
  done
  python3 - "$work/pkg" "$arch" "$VERSION" "$COMMIT" "$DIRTY" "$SOURCE_DATE_EPOCH" "$glibc_max" \
    "$("$cc" --version | head -1)" "${cflags[*]//$SRC\//SRC/}" \
    "${LDFLAGS_COMMON[*]} -Wl,-Bstatic ${STATIC_LIBS[*]} -Wl,-Bdynamic -lpthread -ldl" \
    "{${libs_json}}" <<'EOF'
import hashlib, json, os, sys
pkg, arch, version, commit, dirty, sde, glibc, cc, cflags, ldflags, libs = sys.argv[1:]
cflags = " ".join(w for w in cflags.split() if not w.startswith("-ffile-prefix-map=/"))
files = {}
for n in sorted(os.listdir(pkg)):
    with open(os.path.join(pkg, n), "rb") as f:
        b = f.read()
    files[n] = {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
m = {"name": "keybridge-sync-lambda", "version": version, "commit": commit,
     "dirty": dirty == "true", "arch": arch, "runtime": "provided.al2023", "handler": "bootstrap",
     "source_date_epoch": int(sde), "glibc_max": glibc, "compiler": cc, "cflags": cflags,
     "ldflags": ldflags, "static_libraries": json.loads(libs), "files": files}
with open(os.path.join(pkg, "manifest.json"), "w") as f:
    json.dump(m, f, indent=2, sort_keys=True)
    f.write("\n")
EOF
  chmod 0644 "$work/pkg/manifest.json"
  touch -h -d "@$SOURCE_DATE_EPOCH" "$work/pkg/bootstrap" "$work/pkg/manifest.json"
  rm -f "$work/$name.zip"
  (cd "$work/pkg" && zip -q -X -D -9 "$work/$name.zip" bootstrap manifest.json)
  mv -f "$work/$name.zip" "$OUT/$name.zip"
  cp "$work/pkg/manifest.json" "$OUT/$name.manifest.json"
  (cd "$OUT" && sha256sum "$name.zip" >"$name.zip.sha256")
  echo "package-lambda: $OUT/$name.zip $(stat -c %s "$OUT/$name.zip") bytes," \
    "sha256 $(sha256 "$OUT/$name.zip"), needs $glibc_max"
}

arm64_missing() {
  command -v aarch64-linux-gnu-gcc >/dev/null || { echo "no aarch64-linux-gnu-gcc"; return; }
  local a
  for a in libssl.a libcrypto.a libjansson.a libinih.a libevent_core.a libevent_openssl.a; do
    [ -e "/usr/lib/aarch64-linux-gnu/$a" ] || [ -e "/usr/local/lib/aarch64-linux-gnu/$a" ] ||
      { echo "no arm64 $a (scripts/deps.sh installs it)"; return; }
  done
}

case "$arch_req" in
  x86_64|all) build x86_64 x86_64-linux-gnu "${CC:-gcc}" ;;
esac
case "$arch_req" in
  arm64|all)
    why=$(arm64_missing)
    if [ -z "$why" ]; then
      build arm64 aarch64-linux-gnu aarch64-linux-gnu-gcc
    elif [ "$arch_req" = arm64 ]; then
      echo "package-lambda: cannot build arm64: $why" >&2
      exit 1
    else
      echo "package-lambda: skipping arm64: $why"
    fi
    ;;
esac
