#!/usr/bin/env bash
# Former name of .ci/debian13-root.sh (the cached Debian 13 root now holds Krita 5.2 as well as
# GIMP 3); kept so older callers keep working.
exec "$(dirname "$0")/debian13-root.sh" "$@"
