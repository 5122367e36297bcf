#!/usr/bin/env bash
# Unpack Debian's sendmail-bin for the tests that run the real sendmail daemon. The package is
# only downloaded and extracted, never installed: it conflicts with postfix, which the tests
# need too. Idempotent; prints the path of the sendmail binary.
#   scripts/fetch-sendmail.sh [CACHE_DIR]      (default: var/cache/sendmail in the project)
set -euo pipefail
cache=${1:-$(cd "$(dirname "$0")/.." && pwd)/var/cache/sendmail}
binary="$cache/root/usr/libexec/sendmail/sendmail"
if [[ ! -x "$binary" ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "sendmail-bin is not unpacked in $cache yet: run this script as root" >&2
    exit 1
  fi
  mkdir -p "$cache"
  # One apt at a time, also beside scripts/install-debian-packages.sh.
  exec 9>/tmp/mailwarden-apt.lock
  flock 9
fi
if [[ ! -x "$binary" ]]; then  # (again: another run may have unpacked it while we waited)
  rm -f "$cache"/sendmail-bin_*.deb
  download() { (cd "$cache" && apt-get download -qq -o APT::Sandbox::User=root sendmail-bin); }
  download 2>/dev/null || { apt-get update -qq && download; }
  unpack=$(mktemp -d "$cache/unpack.XXXXXX")
  chmod 755 "$unpack"
  dpkg-deb -x "$cache"/sendmail-bin_*.deb "$unpack"
  rm -rf "$cache/root"
  mv "$unpack" "$cache/root"
fi
echo "$binary"
