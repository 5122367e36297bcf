#!/usr/bin/env bash
# Install the Debian packages listed in the given files (one per line, '#' comments) that are
# not installed yet. Never removes a package: postfix and another MTA can live side by side
# only if apt is not allowed to swap them.
set -euo pipefail
want=()
for list in "$@"; do
  while read -r pkg _; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || want+=("$pkg")
  done < "$list"
done
[[ ${#want[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "missing Debian packages: ${want[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "installing Debian packages: ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
# Services that Debian starts on install would take standard ports; tests start their own.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# One apt at a time, also when several make runs share the machine.
exec 9>/tmp/mailwarden-apt.lock
flock 9
apt-get update -qq
apt-get install -y -qq --no-install-recommends --no-remove "${want[@]}" >/dev/null
