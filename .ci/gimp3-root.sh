#!/usr/bin/env bash
# Build (once) a Debian 13 root folder holding GIMP 3 for the GIMP plug-in tests.
#
# Debian 12, which CI and our machines run, only packages GIMP 2.10; Debian 13 packages GIMP 3.
# The root is about 1 GB and takes a few minutes, so it is cached: built into a temporary folder
# and renamed into place only once complete, so an interrupted build never leaves a half root.
# Prints the root's path on stdout.
set -euo pipefail

root="${GLCIC_GIMP_ROOT:-/var/cache/glcic/gimp3-root}"
packages="gimp python3-gi gir1.2-gimp-3.0 python3-zmq python3-msgpack"
stamp="$root/.glcic-ready"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$packages" ]]; then
    echo "$root"
    exit 0
fi

command -v debootstrap >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2
}
building="$root.building"
rm -rf "$building" "$root"
mkdir -p "$(dirname "$root")"
echo "building the GIMP 3 root in $building (a few minutes)" >&2
debootstrap --variant=minbase trixie "$building" http://deb.debian.org/debian >&2
# Only apt runs inside; /proc is enough for it, and is unmounted whatever happens.
mount -t proc proc "$building/proc"
trap 'umount "$building/proc" 2>/dev/null || true' EXIT
chroot "$building" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    $packages >&2
chroot "$building" apt-get clean >&2
umount "$building/proc"
trap - EXIT
echo "$packages" > "$building/.glcic-ready"
mv "$building" "$root"
echo "$root"
