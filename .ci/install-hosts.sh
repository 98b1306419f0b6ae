#!/usr/bin/env bash
# Install the real host applications the plugin tests run in: Krita 5.1 from Debian 12's own
# packages (with Xvfb for its window, and the system Python's pyzmq and msgpack that Krita's
# embedded Python uses), and a cached Debian 13 root holding GIMP 3 (.ci/gimp3-root.sh).
# Prints "GLCIC_GIMP_ROOT=<path>" on its last line for the caller to export.
set -euo pipefail

packages="krita python3-pyqt5 python3-zmq python3-msgpack xvfb"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    sudo="sudo"
fi

install() {
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

root=$($sudo "$(dirname "$0")/gimp3-root.sh")
echo "GLCIC_GIMP_ROOT=$root"
