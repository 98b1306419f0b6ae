#!/usr/bin/env bash
# Build, or bring up to date, the cached Debian 13 root folder that holds the hosts Debian 12
# does not package: GIMP 3 (Debian 12 has 2.10) and Krita 5.2 (Debian 12 has 5.1), with the
# system Python's pyzmq and msgpack their plugins use. Prints the root's path on stdout.
#
#   GLCIC_DEBIAN13_ROOT  where the root lives (GLCIC_GIMP_ROOT, its older name, also works);
#                        default /var/cache/glcic/gimp3-root (named when it held GIMP only;
#                        tests/test_gimp_plugin.py looks there by default).
#
# The root is about 1.5 GB. A first build (debootstrap, a few minutes) happens in a temporary
# folder renamed into place only once complete. When the package list grows, only the new
# packages are installed into the existing root, in a private mount namespace so /proc and /dev
# are unmounted whatever happens. The stamp file (.glcic-ready, the package list) is removed
# before the root changes and written last, so an interrupted run is redone, never trusted.
set -euo pipefail

packages="gimp python3-gi gir1.2-gimp-3.0 krita python3-pyqt5 python3-zmq python3-msgpack"

root="${GLCIC_DEBIAN13_ROOT:-${GLCIC_GIMP_ROOT:-/var/cache/glcic/gimp3-root}}"
stamp="$root/.glcic-ready"
export PATH="$PATH:/usr/sbin:/sbin"  # chroot, debootstrap

if [[ -f $stamp && "$(cat "$stamp")" == "$packages" ]]; then
    echo "$root"
    exit 0
fi

# apt-get inside the root, with /proc and /dev mounted in a mount namespace of its own: the
# mounts are never seen outside it and vanish with it, even if this script is killed.
apt_in_root() {
    unshare --mount --propagation private bash -euo pipefail -c '
        root=$1
        shift
        trap "umount -R \"$root/dev\" 2>/dev/null || true; umount \"$root/proc\" 2>/dev/null || true" EXIT
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        chroot "$root" env DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
    ' apt_in_root "$1" "${@:2}"
}

install_packages() {
    local target=$1
    # A run interrupted inside dpkg leaves half-configured packages: finish them first.
    apt_in_root "$target" dpkg --configure -a >&2
    apt_in_root "$target" apt-get update >&2
    # shellcheck disable=SC2086 # the package list is meant to split into words
    apt_in_root "$target" apt-get install -y --no-install-recommends $packages >&2
    apt_in_root "$target" apt-get clean >&2
}

if [[ -x "$root/usr/bin/apt-get" ]]; then
    echo "adding packages to the Debian 13 root $root: $packages" >&2
    rm -f "$stamp"
    install_packages "$root"
else
    command -v debootstrap >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2
    }
    building="$root.building"
    rm -rf "$building" "$root"
    mkdir -p "$(dirname "$root")"
    echo "building the Debian 13 root in $building (a few minutes)" >&2
    debootstrap --variant=minbase trixie "$building" http://deb.debian.org/debian >&2
    install_packages "$building"
    mv "$building" "$root"
fi
echo "$packages" > "$stamp.tmp"
mv "$stamp.tmp" "$stamp"
echo "$root"
