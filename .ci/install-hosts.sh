#!/usr/bin/env bash
# Install the real host applications the plugin tests run in, on Debian 12:
# - Krita 5.1 from Debian 12's own packages, with Xvfb for its window (and for Krita 5.2's) and
#   the system Python's PyQt5, pyzmq and msgpack that Krita's embedded Python uses, and openbox
#   to manage that screen as a desktop would (Krita activates layers only in an active window);
# - the cached Debian 13 root holding GIMP 3 and Krita 5.2 (.ci/debian13-root.sh), entered with
#   unshare and chroot (util-linux, coreutils).
# Prints the variables locating that root, "NAME=<path>" lines, last, for the caller to export.
set -euo pipefail

packages="krita python3-pyqt5 python3-zmq python3-msgpack xvfb openbox util-linux"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    sudo="sudo"
fi

install() {
    # shellcheck disable=SC2086 # the package list is meant to split into words
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages
}
installed() {
    local package
    for package in $packages; do
        [[ $(dpkg-query -W -f='${Status}' "$package" 2>/dev/null) == "install ok installed" ]] ||
            return 1
    done
}
if ! installed; then
    install >&2 || { $sudo apt-get update >&2 && install >&2; }
fi

root=$($sudo "$(dirname "$0")/debian13-root.sh")
echo "GLCIC_DEBIAN13_ROOT=$root"
echo "GLCIC_GIMP_ROOT=$root"
