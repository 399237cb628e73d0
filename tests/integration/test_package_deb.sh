#!/usr/bin/env bash
# The Debian packages (scripts/package-deb.sh): built twice (the tree's version and a lower one),
# checked statically (owners, modes, paths, conffiles, maintainer scripts, dependencies, man
# pages rendered by man(1) with warnings on), then installed with dpkg in a chroot: a
# copy-on-write overlay of this machine's own root (overlayfs, lowerdir=/, in a private mount
# namespace), so dpkg and the maintainer scripts run for real while the machine's / is never
# written, and the overlay's upper layer is the exact list of what the packages changed.
# In the chroot: system users and state directories, `systemd-analyze verify` and the offline
# `systemd-analyze security` exposure of every unit, keybridged bootstrapped and served from the
# installed files as its service user with the unit's memlock limit, an upgrade from the lower
# version that keeps the data and a changed conffile, `dpkg -r` that leaves only conffiles and
# state, and `dpkg --purge` that leaves no keybridge file at all.
set -euo pipefail
SRC=${KB_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${KB_BUILD_DIR:-$SRC/build}
SELF="$(realpath "$0")"
PKGS=(keybridged keybridge-ca keybridge-cache keybridge-sync keybridge)
DAEMONS=(keybridged keybridge-ca keybridge-cache keybridge-sync)
MAX_EXPOSURE=2.0 # systemd-analyze security: 0 = fully sandboxed .. 10 = not at all
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); }
bad() { echo "FAIL: $*" >&2; FAIL=$((FAIL + 1)); }

if [ "${1:-}" != --inside ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "package_deb: needs root (dpkg in a chroot); 0 passed, 0 failed, 1 skipped"
    exit 0
  fi
  if ldd "$B/keybridged" | grep -E 'libasan|libubsan' >/dev/null; then
    # A package of sanitizer binaries is not what ships; the plain build runs this test.
    echo "package_deb: sanitizer build; 0 passed, 0 failed, 1 skipped"
    exit 0
  fi
  if [ -n "$(find "$B" -maxdepth 6 -name '*.gcno' -print -quit)" ]; then
    # Nor a package of gcov binaries: run in the chroot they write .gcda files under the build
    # path, which the dpkg -r check rightly reports as files left behind.
    echo "package_deb: coverage build; 0 passed, 0 failed, 1 skipped"
    exit 0
  fi
  D="$(mktemp -d /tmp/kbdeb.XXXXXX)"
  chmod 0755 "$D"
  trap 'rm -rf "$D"' EXIT
  VERSION="$("$B/keybridged" --version | awk '{print $2}')"
  OLD="${VERSION}~old1"
  scripts="$SRC/scripts/package-deb.sh"
  if [ -n "${KB_DEB_DIR:-}" ]; then # test packages built before (scripts/package-deb.sh)
    mkdir -p "$D/new"
    cp "$KB_DEB_DIR"/*.deb "$D/new/"
  else
    "$scripts" "$B" "$D/new" >"$D/build-new.log" 2>&1 || { cat "$D/build-new.log"; exit 1; }
  fi
  # The previous package: the same packages with a lower version (repacked with dpkg-deb rather
  # than built again: the same bytes but for Version, and half a minute less of CPU on CI).
  mkdir -p "$D/old"
  for deb in "$D"/new/*.deb; do
    rm -rf "$D/repack"
    dpkg-deb -R "$deb" "$D/repack"
    sed -i "s/^Version: .*/Version: $OLD-1/" "$D/repack/DEBIAN/control"
    dpkg-deb --root-owner-group -Zgzip -b "$D/repack" "$D/old/" >/dev/null
  done
  rm -rf "$D/repack"
  echo "package_deb: packages built and repacked as $OLD in $SECONDS s"
  dpkg --compare-versions "$OLD" lt "$VERSION" || { echo "FAIL: $OLD is not lower than $VERSION"; exit 1; }

  # ---- static checks of each package (a lintian-lite: what lintian would flag for these)
  for p in "${PKGS[@]}"; do
    deb=$(ls "$D/new/${p}_${VERSION}-1_amd64.deb" 2>/dev/null) || { bad "$p: no package"; continue; }
    listing="$(dpkg-deb -c "$deb")"
    # every entry root/root, nothing group/world-writable, no setuid/setgid, known places only
    awk '{print $1, $2, $6}' <<<"$listing" | while read -r mode owner path; do
      [ "$owner" = root/root ] || echo "$path owned by $owner"
      case "$mode" in ?????w*|????????w*|???s*|??????s*) echo "$path has mode $mode" ;; esac
      case "$path" in
        ./ | ./etc/ | ./etc/keybridge/ | ./etc/keybridge/"$p".conf | ./lib/ | ./lib/systemd/ | \
          ./lib/systemd/system/ | ./lib/systemd/system/"$p".service | ./usr/ | ./usr/bin/ | \
          ./usr/sbin/ | ./usr/bin/"$p" | ./usr/sbin/"$p" | ./usr/share/ | ./usr/share/doc/ | \
          ./usr/share/doc/"$p"/ | ./usr/share/doc/"$p"/* | ./usr/share/man/ | ./usr/share/man/man[158]/ | \
          ./usr/share/man/man[158]/"$p".[18].gz | ./usr/share/man/man5/"$p".conf.5.gz) ;;
        *) echo "unexpected path $path" ;;
      esac
    done >"$D/static.$p"
    [ -s "$D/static.$p" ] && bad "$p: $(cat "$D/static.$p")" || ok
    # programs 0755, configuration, units and pages 0644
    grep -E '\./usr/s?bin/'"$p"'$' <<<"$listing" | grep '^-rwxr-xr-x' >/dev/null || bad "$p: program not 0755"
    if grep -E '\.(conf|service|gz)$' <<<"$listing" | grep -v '^-rw-r--r--' | grep . >/dev/null; then
      bad "$p: a configuration file, unit or page is not 0644"
    fi
    # conffiles: exactly the configuration, which the package ships
    mkdir -p "$D/ctl/$p"
    dpkg-deb -e "$deb" "$D/ctl/$p"
    [ "$(cat "$D/ctl/$p/conffiles")" = "/etc/keybridge/$p.conf" ] || bad "$p: conffiles"
    grep -q "\./etc/keybridge/$p.conf$" <<<"$listing" || bad "$p: its conffile is not in the package"
    # man pages: present, rendered by man(1) with every warning on, saying what they document
    sec=8
    [ "$p" = keybridge ] || [ "$p" = keybridge-sync ] && sec=1
    for page in "man$sec/$p.$sec.gz" "man5/$p.conf.5.gz"; do
      grep -q "\./usr/share/man/$page$" <<<"$listing" || { bad "$p: no $page"; continue; }
      mkdir -p "$D/data/$p"
      [ -d "$D/data/$p/usr" ] || dpkg-deb -x "$deb" "$D/data/$p"
      out="$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings=all -l "$D/data/$p/usr/share/man/$page" 2>"$D/man.err")"
      if [ -s "$D/man.err" ]; then bad "$p: man $page: $(head -3 "$D/man.err")"; fi
      grep -q '^NAME' <<<"$out" && grep -q "$p" <<<"$out" || bad "$p: man $page renders no NAME"
      ok
    done
    # the command table and the configuration schema made it into the pages
    out="$(MANWIDTH=200 man -l "$D/data/$p/usr/share/man/man$sec/$p.$sec.gz" 2>/dev/null)"
    "$B/$p" --help 2>&1 | awk '/^commands:/{c=1;next} c&&/^  [a-z]/{print $1}' | while read -r cmd; do
      grep -qE "^ +$cmd( |$)" <<<"$out" || echo "$cmd"
    done >"$D/missing.$p"
    [ -s "$D/missing.$p" ] && bad "$p: commands missing from the page: $(tr '\n' ' ' <"$D/missing.$p")" || ok
    out="$(MANWIDTH=200 man -l "$D/data/$p/usr/share/man/man5/$p.conf.5.gz" 2>/dev/null)"
    "$B/$p" --config-reference | grep -oE '`[A-Z][A-Z0-9_]+`' | tr -d '`' | while read -r env; do
      grep -q "$env" <<<"$out" || echo "$env"
    done >"$D/missing.$p"
    [ -s "$D/missing.$p" ] && bad "$p: keys missing from the .conf page: $(head -3 "$D/missing.$p")" || ok
    # dependencies: shared libraries found by dpkg-shlibdeps; adduser for the maintainer scripts
    dep="$(dpkg-deb -f "$deb" Depends)"
    grep -q 'libc6' <<<"$dep" && grep -q 'libssl3' <<<"$dep" || bad "$p: Depends lacks libc6/libssl3: $dep"
    if [ "$p" != keybridge ]; then
      grep -q 'adduser' <<<"$dep" || bad "$p: Depends lacks adduser"
      for s in postinst prerm postrm; do
        [ "$(stat -c %a "$D/ctl/$p/$s")" = 755 ] || bad "$p: $s not 0755"
        sh -n "$D/ctl/$p/$s" || bad "$p: $s does not parse"
        if grep -q '@KB_' "$D/ctl/$p/$s"; then bad "$p: $s has an unreplaced template variable"; fi
      done
    fi
    ok
  done

  echo "package_deb: static checks done at $SECONDS s"
  # ---- dpkg in the chroot (a private mount namespace: every mount goes when it ends)
  export D VERSION OLD
  unshare --mount --propagation private bash "$SELF" --inside || FAIL=$((FAIL + 1))
  PASS=$((PASS + $(cat "$D/inside.pass" 2>/dev/null || echo 0)))
  FAIL=$((FAIL + $(cat "$D/inside.fail" 2>/dev/null || echo 0)))
  echo "package_deb: $PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
  exit
fi

# ======== inside the private mount namespace
trap 'echo "$PASS" >"$D/inside.pass"; echo "$FAIL" >"$D/inside.fail"' EXIT
U="$D/ov/upper"
R="$D/ov/root"
mkdir -p "$U" "$D/ov/work" "$R"
mount -t overlay overlay -o "lowerdir=/,upperdir=$U,workdir=$D/ov/work" "$R"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=0755 tmpfs "$R/run" # no /run/systemd/system: no systemd runs here
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
in_root() { chroot "$R" "$@"; }
# The unit's LimitMEMLOCK=64M, or this machine's hard limit if lower (raising it needs
# CAP_SYS_RESOURCE, which a container may not have).
hard=$(ulimit -Hl)
ML=67108864
[ "$hard" = unlimited ] || [ $((hard * 1024)) -ge $ML ] || ML=$((hard * 1024))
user_argv() { # user_argv USER: UARGV = the prefix that runs a command as USER, with the unit's
  # memlock limit and no caps (chroot, prlimit and setpriv each exec the next)
  UARGV=(chroot "$R" prlimit "--memlock=$ML:$ML" --core=0:0
    setpriv --reuid="$1" --regid="$1" --init-groups --inh-caps=-all --bounding-set=-all)
}
as_user() { # as_user USER CMD...
  local u="$1"
  shift
  user_argv "$u"
  "${UARGV[@]}" "$@"
}
mkdir -p "$R/tmp/debs"
cp "$D"/old/*.deb "$D"/new/*.deb "$R/tmp/debs/"
export DEBIAN_FRONTEND=noninteractive
# man-db's trigger re-indexes every page on the machine after each dpkg run: minutes on a busy
# 2-core machine, and not what is tested here (man finds the pages without the index).
echo "man-db man-db/auto-update boolean false" | in_root debconf-set-selections
in_root rm -f /var/lib/man-db/auto-update

# ---- install the lower version
old_debs=()
for p in "${PKGS[@]}"; do old_debs+=("/tmp/debs/${p}_${OLD}-1_amd64.deb"); done
in_root dpkg -i "${old_debs[@]}" >"$D/dpkg-old.log" 2>&1 || { cat "$D/dpkg-old.log"; bad "dpkg -i $OLD"; exit 1; }
for p in "${PKGS[@]}"; do
  [ "$(in_root dpkg-query -W -f='${Status} ${Version}' "$p")" = "install ok installed $OLD-1" ] ||
    bad "$p $OLD not installed"
done
for u in "${DAEMONS[@]}"; do
  user=$u
  [ "$u" = keybridged ] && user=keybridge
  state=/var/lib/$user
  line="$(in_root getent passwd "$user")" || { bad "no system user $user"; continue; }
  uid=$(cut -d: -f3 <<<"$line")
  [ "$uid" -lt 1000 ] && [ "$(cut -d: -f7 <<<"$line")" = /usr/sbin/nologin ] || bad "$user: not a system user: $line"
  [ "$(in_root stat -c '%a %U' "$state")" = "700 $user" ] || bad "$state: $(in_root stat -c '%a %U' "$state")"
  [ "$(stat -c '%a %U' "$R/etc/keybridge/$u.conf")" = "644 root" ] || bad "$u.conf mode/owner"
  # the installed config is valid for the installed program, read as the service user
  as_user "$user" "/usr/$([ "$u" = keybridge-sync ] && echo bin || echo sbin)/$u" \
    --config "/etc/keybridge/$u.conf" --check-config >/dev/null 2>"$D/check.err" ||
    bad "$u --check-config: $(cat "$D/check.err")"
  ok
done
in_root id -nG keybridge | grep -w softhsm >/dev/null || bad "keybridge is not in group softhsm (SoftHSM2 tokens)"
in_root id -nG keybridge-ca | grep -w softhsm >/dev/null || bad "keybridge-ca is not in group softhsm"
in_root /usr/bin/keybridge --config /etc/keybridge/keybridge.conf --check-config >/dev/null 2>&1 ||
  bad "keybridge --check-config"
# man finds the installed pages by name
for page in "8 keybridged" "5 keybridged.conf" "1 keybridge" "5 keybridge-sync.conf" "8 keybridge-ca"; do
  in_root man -w $page >/dev/null 2>&1 || bad "man -w $page"
done
ok

echo "package_deb: installed at $SECONDS s"
# ---- the units: systemd-analyze verify (syntax, directives, ExecStart exists) and exposure
for u in "${DAEMONS[@]}"; do
  if ! in_root systemd-analyze verify "/lib/systemd/system/$u.service" >"$D/verify.log" 2>&1; then
    bad "systemd-analyze verify $u.service: $(cat "$D/verify.log")"
  elif [ -s "$D/verify.log" ]; then
    bad "systemd-analyze verify $u.service warns: $(cat "$D/verify.log")"
  fi
  exp="$(in_root systemd-analyze security --offline=true --no-pager "/lib/systemd/system/$u.service" 2>&1 |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
  echo "package_deb: $u.service exposure $exp (systemd-analyze security; at most $MAX_EXPOSURE)"
  awk -v e="$exp" -v m="$MAX_EXPOSURE" 'BEGIN{exit !(e != "" && e <= m)}' || bad "$u.service exposure '$exp'"
  for k in NoNewPrivileges=yes ProtectSystem=strict PrivateTmp=yes LimitMEMLOCK= StateDirectory= User=; do
    grep -q "^$k" "$R/lib/systemd/system/$u.service" || bad "$u.service lacks $k"
  done
  ok
done

# ---- keybridged from the installed files, as its service user: bootstrap, a secret, serve
TD=pkg.test
ADMIN="spiffe://$TD/admin"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(port)
MPORT=$(port)
T="$R/etc/keybridge/tls"
mkdir -p "$T"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ca.key" \
  -out "$T/bundle.pem" -days 1 -subj "/O=kbpkg root" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectAltName=URI:spiffe://$TD" 2>/dev/null
leaf() { # leaf NAME SPIFFE_ID: $T/NAME.pem, $T/NAME.key
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/$1.key" \
    -out "$T/$1.csr" -subj "/O=kbpkg/CN=$1" 2>/dev/null
  printf '[v3]\nsubjectAltName=URI:%s\nbasicConstraints=critical,CA:FALSE\n%s\n%s\n' "$2" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" >"$T/$1.ext"
  openssl x509 -req -in "$T/$1.csr" -CA "$T/bundle.pem" -CAkey "$T/ca.key" -CAcreateserial \
    -days 1 -sha256 -extfile "$T/$1.ext" -extensions v3 -out "$T/$1.pem" 2>/dev/null
  chmod 0600 "$T/$1.key"
}
leaf server "spiffe://$TD/keybridged"
leaf admin "$ADMIN"
in_root chown keybridge:keybridge /etc/keybridge/tls/server.key
chmod 0600 "$T/server.key"
# The administrator's changes to the conffile (kept by the upgrade below)
conf="$R/etc/keybridge/keybridged.conf"
python3 - "$conf" "$PORT" "$MPORT" "$TD" <<'PY'
import sys
path, port, mport, td = sys.argv[1:]
s = open(path, encoding="utf-8").read()
s = s.replace("listen = 127.0.0.1:8443", f"listen = 127.0.0.1:{port}")
s = s.replace("metrics_listen = 127.0.0.1:9464", f"metrics_listen = 127.0.0.1:{mport}")
s = s.replace("#cert_file = /etc/keybridge/tls/keybridged.pem", "cert_file = /etc/keybridge/tls/server.pem")
s = s.replace("#key_file = /etc/keybridge/tls/keybridged.key", "key_file = /etc/keybridge/tls/server.key")
s = s.replace("#bundle_file = /etc/keybridge/tls/bundle.pem", "bundle_file = /etc/keybridge/tls/bundle.pem")
s = s.replace("#trust_domain = example.org", f"trust_domain = {td}")
# development keystore (a 0600 key file in the state directory): no token needed in the test
s = s.replace("keystore = pkcs11", "keystore = file\nkey_file = /var/lib/keybridge/master.key")
s += "# changed by the administrator (package test)\n"
open(path, "w", encoding="utf-8").write(s)
PY
as_user keybridge /usr/sbin/keybridged bootstrap --admin-id "$ADMIN" >"$D/bootstrap.log" 2>&1 ||
  { bad "keybridged bootstrap as keybridge: $(cat "$D/bootstrap.log")"; exit 1; }
[ "$(in_root stat -c '%a %U' /var/lib/keybridge/keybridged.db)" = "600 keybridge" ] || bad "db mode/owner"
printf 'pkg-test-content-%s' "$PORT" >"$R/tmp/content"
chmod 0644 "$R/tmp/content"
klocal() { as_user keybridge /usr/bin/keybridge --local /etc/keybridge/keybridged.conf --as "$ADMIN" "$@"; }
klocal secret create pkgtest --content-file /tmp/content >/dev/null 2>"$D/create.err" ||
  bad "secret create via --local: $(cat "$D/create.err")"
# a simple command, not the as_user function: bash runs a function in the background in a forked
# shell, so $! was that shell; killing it left keybridged running after the test
user_argv keybridge
"${UARGV[@]}" /usr/sbin/keybridged serve >"$D/serve.log" 2>&1 &
spid=$!
up=0
for _ in $(seq 200); do
  if curl -fsS "http://127.0.0.1:$MPORT/metrics" >/dev/null 2>&1; then up=1; break; fi
  kill -0 "$spid" 2>/dev/null || break
  sleep 0.1
done
[ $up -eq 1 ] && ok || bad "keybridged serve from the installed files did not come up: $(tail -5 "$D/serve.log")"
# the packaged CLI reads the secret from the packaged server over mTLS, as the admin
printf '[client]\nserver_url = https://127.0.0.1:%s\nserver_id = spiffe://%s/keybridged\n%s\n%s\n%s\n' \
  "$PORT" "$TD" "cert_file = /etc/keybridge/tls/admin.pem" "key_file = /etc/keybridge/tls/admin.key" \
  "bundle_file = /etc/keybridge/tls/bundle.pem" >"$R/etc/keybridge/tls/admin.conf"
got="$(in_root /usr/bin/keybridge --config /etc/keybridge/tls/admin.conf secret get pkgtest 2>&1)" ||
  bad "keybridge secret get over mTLS from the installed server: $got"
grep -q "pkg-test-content-$PORT" <<<"$got" && ok || bad "secret content over mTLS: $got"
[[ "$(readlink "/proc/$spid/exe" 2>/dev/null)" == */keybridged ]] && ok ||
  bad "the server's pid is $(readlink "/proc/$spid/exe" 2>/dev/null), not keybridged: it would outlive the test"
kill "$spid" 2>/dev/null || true
wait "$spid" 2>/dev/null || true
( cd "$R/var/lib/keybridge" && sha256sum keybridged.db master.key ) >"$D/state.sum"

echo "package_deb: keybridged ran from the package at $SECONDS s"
# ---- upgrade to the tree's version: data and the changed conffile kept, nothing left aside
new_debs=()
for p in "${PKGS[@]}"; do new_debs+=("/tmp/debs/${p}_${VERSION}-1_amd64.deb"); done
in_root dpkg -i "${new_debs[@]}" >"$D/dpkg-new.log" 2>&1 || { cat "$D/dpkg-new.log"; bad "upgrade"; exit 1; }
for p in "${PKGS[@]}"; do
  [ "$(in_root dpkg-query -W -f='${Status} ${Version}' "$p")" = "install ok installed $VERSION-1" ] ||
    bad "$p not upgraded to $VERSION"
done
(cd "$R/var/lib/keybridge" && sha256sum -c --quiet "$D/state.sum") || bad "the upgrade changed /var/lib/keybridge"
grep -q 'changed by the administrator' "$conf" || bad "the upgrade overwrote the changed conffile"
if find "$R/etc/keybridge" -name '*.dpkg-*' | grep . >/dev/null; then
  bad "conffile copies left: $(find "$R/etc/keybridge" -name '*.dpkg-*')"
fi
got="$(klocal secret get pkgtest 2>&1)" || bad "secret get after the upgrade: $got"
grep -q "pkg-test-content-$PORT" <<<"$got" || bad "secret content after the upgrade: $got"
ok

# ---- remove: programs, units and pages go; conffiles and state stay
rm -rf "$R/etc/keybridge/tls"
in_root dpkg -r "${PKGS[@]}" >"$D/dpkg-r.log" 2>&1 || { cat "$D/dpkg-r.log"; bad "dpkg -r"; exit 1; }
# What the packages left on the system, from the overlay's upper layer: every path naming
# keybridge, but the contents of the state directories (state is kept until purge), dpkg's own
# records and logs, and man-db's page cache (systemd-analyze verify formats the pages its units
# name in Documentation=; man-db owns and expires /var/cache/man).
leftovers() {
  (cd "$U" && find . -path ./var/lib/dpkg -prune -o -path ./var/log -prune -o -path ./var/cache/man -prune \
    -o -path './var/lib/keybridge*/*' -prune -o -print | grep keybridge | sort)
}
left="$(leftovers)"
want="$(printf '%s\n' ./etc/keybridge ./etc/keybridge/keybridge-ca.conf ./etc/keybridge/keybridge-cache.conf \
  ./etc/keybridge/keybridge-sync.conf ./etc/keybridge/keybridge.conf ./etc/keybridge/keybridged.conf \
  ./var/lib/keybridge ./var/lib/keybridge-ca ./var/lib/keybridge-cache ./var/lib/keybridge-sync |
  sort)"
# deb-systemd-helper's records of the units (so that a purge can undo an administrator's enable)
dsh=./var/lib/systemd/deb-systemd-helper-enabled
want="$( (echo "$want"; grep "^$dsh/" <<<"$left") | sort)"
[ "$left" = "$want" ] && ok || bad "after dpkg -r, expected only conffiles and state; diff:
$(diff <(echo "$want") <(echo "$left"))"
grep -q "^$dsh/" <<<"$left" || bad "no deb-systemd-helper record after dpkg -r: $left"
[ -s "$R/var/lib/keybridge/keybridged.db" ] || bad "dpkg -r removed the database"
for p in "${PKGS[@]}"; do
  [ "$(in_root dpkg-query -W -f='${Status}' "$p")" = "deinstall ok config-files" ] || bad "$p status after remove"
done

# ---- purge: nothing of keybridge left (the system users stay, as Debian policy asks)
in_root dpkg --purge "${PKGS[@]}" >"$D/dpkg-p.log" 2>&1 || { cat "$D/dpkg-p.log"; bad "dpkg --purge"; exit 1; }
left="$(cd "$U" && find . -path ./var/cache/man -prune -o -print | grep keybridge || true)"
[ -z "$left" ] && ok || bad "after purge: $left"
in_root getent passwd keybridge >/dev/null || bad "the purge removed the system user"
