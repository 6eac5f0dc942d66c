#!/bin/sh
# Exclusive by its Kyuafile: leaves exclusive.PID in /tmp/lab-exclusive for two seconds and
# fails if any other live process left a mark there meanwhile (see lock.sh).
dir=/tmp/lab-exclusive
others() {
    for mark in "$dir"/*.*; do
        [ -e "$mark" ] || continue
        pid=${mark##*.}
        [ "$pid" = $$ ] && continue
        kill -0 "$pid" 2>/dev/null && echo "${mark##*/}"
    done
}
mkdir -p "$dir" && echo alone.sh > "$dir/exclusive.$$" || exit 1
seen=$(others)
sleep 2
seen="$seen$(others)"
rm -f "$dir/exclusive.$$"
[ -z "$seen" ] || { echo "alone.sh: running beside $seen" >&2; exit 1; }
exit 0
