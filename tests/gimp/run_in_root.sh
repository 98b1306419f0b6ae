#!/usr/bin/env bash
# Run a command in the GIMP 3 root folder (.ci/gimp3-root.sh) for tests/test_gimp_plugin.py.
#
#   unshare --mount --propagation private [--user --map-root-user] \
#       run_in_root.sh ROOT WORK INSIDE COMMAND...
#
# Meant to run in a private mount namespace of its own (unshare), so that nothing mounted here is
# ever seen outside it and all of it goes when the namespace's last process ends, even if this
# script is killed; on a normal exit it also unmounts everything itself. Mounted into ROOT: /dev
# and /proc (GIMP needs both, and /dev/shm for its plug-ins' pixel transfers), an empty /tmp, and
# the folder WORK at INSIDE (a path under /tmp), so the cached root folder itself is never written.
set -euo pipefail
root=$1 work=$2 inside=$3
shift 3
if [[ $inside != /tmp/?* ]]; then
    echo "run_in_root.sh: INSIDE must lie under /tmp (the root's private tmpfs): $inside" >&2
    exit 2
fi
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -R "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
mount --rbind /dev "$root/dev" && mounted+=("$root/dev")
mount --rbind /proc "$root/proc" && mounted+=("$root/proc")
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp" && mounted+=("$root/tmp")
mkdir -p "$root$inside"
mount --bind "$work" "$root$inside" && mounted+=("$root$inside")
status=0
chroot "$root" "$@" || status=$?
exit "$status"
