#!/bin/sh
# required_user = unprivileged: runs as a user other than root, in a work directory it owns.
[ "$(id -u)" != 0 ] || { echo "unprivileged.sh: running as root" >&2; exit 1; }
touch mine || { echo "unprivileged.sh: cannot write in $(pwd)" >&2; exit 1; }
owner=$(ls -ln mine | awk '{ print $3 }')
[ "$owner" = "$(id -u)" ] || { echo "unprivileged.sh: a new file belongs to $owner" >&2; exit 1; }
exit 0
