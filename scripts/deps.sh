#!/usr/bin/env bash
# Installs what Concord needs from Debian's archive, only when missing:
# libhiredis-dev, libevent-dev (build) and redis-server (run and test).
set -euo pipefail
need=()
for pkg in libhiredis-dev libevent-dev redis-server pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${need[@]}"
fi
if ! command -v swift >/dev/null 2>&1; then
  for d in /opt/swift/usr/bin /usr/share/swift/usr/bin; do [ -x "$d/swift" ] && export PATH="$d:$PATH"; done
  command -v swift >/dev/null 2>&1 || { echo "swift toolchain not found (install Swift 6 from swift.org)" >&2; exit 1; }
fi
