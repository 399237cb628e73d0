#!/usr/bin/env bash
# Install everything keybridge needs to build, test and demo on Debian 12 (idempotent).
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
  libssl-dev libevent-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev sqlite3 libpq-dev
  postgresql libp11-kit-dev softhsm2 opensc libinih-dev libcmocka-dev
  openssl curl python3 python3-cryptography python3-botocore python3-boto3 awscli golang-go
  nginx apache2-utils prometheus jq util-linux procps
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
