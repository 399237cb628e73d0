#!/usr/bin/env bash
# Install everything keybridge needs to build, test and demo on Debian 12 (idempotent).
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev clang-tools-14 gcovr
  libssl-dev libevent-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev sqlite3 libpq-dev
  postgresql libp11-kit-dev softhsm2 opensc libinih-dev libcmocka-dev
  openssl curl python3 python3-cryptography python3-botocore python3-boto3 awscli golang-go
  nginx apache2-utils prometheus jq util-linux procps
  # keybridged's OpenPGP key generation (gpgme; gpg and gpg-agent run it) and its tests
  libgpgme-dev gpg gpg-agent
  # the console's browser test (tests/browser: playwright-core drives it)
  chromium
  # bench/herd/plot.py (and test_bench, which draws the committed series)
  python3-matplotlib
  # the Lambda artifact (scripts/package-lambda.sh): zip, the arm64 cross build and its test
  zip binutils qemu-user-static gcc-aarch64-linux-gnu libc6-dev:arm64 libssl-dev:arm64
  libjansson-dev:arm64 libinih-dev:arm64
  # the Debian packages (scripts/package-deb.sh) and their test: dpkg-shlibdeps, file (CPack),
  # man and groff (pages), systemd-analyze, deb-systemd-helper, adduser (maintainer scripts)
  dpkg-dev file man-db groff-base systemd init-system-helpers adduser debconf
)
# The console's browser test runs playwright-core (npm) under Node: Debian's nodejs and npm,
# unless a Node with npm is installed already (a NodeSource nodejs bundles npm and conflicts
# with Debian's npm package).
command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
# libevent-dev is not Multi-Arch: same, so libevent-dev:arm64 cannot be installed beside the
# amd64 one: its static archives (all the arm64 build needs; the headers are identical) are
# extracted from the package into LEV_ARM64 instead.
LEV_ARM64=/usr/local/lib/aarch64-linux-gnu
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
have_arm64=0
dpkg --print-foreign-architectures | grep -qx arm64 && have_arm64=1
have_lev=0
[ -e "$LEV_ARM64/libevent_core.a" ] && [ -e "$LEV_ARM64/libevent_openssl.a" ] && have_lev=1
if [ ${#missing[@]} -eq 0 ] && [ $have_arm64 -eq 1 ] && [ $have_lev -eq 1 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
[ $have_arm64 -eq 1 ] || $SUDO dpkg --add-architecture arm64
$SUDO apt-get update
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
if [ $have_lev -eq 0 ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  chmod 0755 "$tmp"
  (cd "$tmp" && apt-get download libevent-dev:arm64)
  deb=$(ls "$tmp"/libevent-dev_*_arm64.deb)
  $SUDO mkdir -p "$LEV_ARM64"
  dpkg-deb --fsys-tarfile "$deb" |
    $SUDO tar -x -C "$LEV_ARM64" --strip-components=4 --wildcards './usr/lib/aarch64-linux-gnu/*.a'
  dpkg-deb -f "$deb" Version | $SUDO tee "$LEV_ARM64/libevent-dev.version" >/dev/null
fi
