#!/usr/bin/atf-sh
# Exclusive cases (by the Kyuafile), and the shared ones of shared.sh, meet in
# /tmp/lab-exclusive: each leaves KIND.PID there while it runs.
# An exclusive case fails if any other live process left a mark; a shared case fails if
# a live exclusive one did. Marks of dead processes (an interrupted run) are ignored. Where
# every case gets a machine of its own the directory is never shared and all pass trivially.

dir=/tmp/lab-exclusive

# Prints the live marks of KIND (exclusive, shared or '*') other than ours.
live_marks() {
    for mark in "$dir"/$1.*; do
        [ -e "$mark" ] || continue
        pid=${mark##*.}
        [ "$pid" = $$ ] && continue
        kill -0 "$pid" 2>/dev/null && echo "${mark##*/}"
    done
}

# hold KIND OTHERS SECONDS: marks this case as KIND for SECONDS, failing whenever a live mark
# of OTHERS is there.
hold() {
    mkdir -p "$dir"
    atf_get ident > "$dir/$1.$$"
    others=$(live_marks "$2")
    [ -z "$others" ] || atf_fail "running beside $others"
    sleep "$3"
    others=$(live_marks "$2")
    rm -f "$dir/$1.$$"
    [ -z "$others" ] || atf_fail "running beside $others"
}

atf_test_case exclusive_a
exclusive_a_body() {
    hold exclusive '*' 2
}

atf_test_case exclusive_b
exclusive_b_body() {
    hold exclusive '*' 2
}

atf_init_test_cases() {
    atf_add_test_case exclusive_a
    atf_add_test_case exclusive_b
}
