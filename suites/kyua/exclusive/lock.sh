#!/usr/bin/atf-sh
# Exclusive cases (by the Kyuafile), and the shared ones of shared.sh, meet in
# /tmp/lab-exclusive: each leaves KIND.PID there while it runs.
# An exclusive case fails if any other live process left a mark; a shared case fails if
# a live exclusive one did. Marks of dead processes (an interrupted run) are ignored. Where
# every case gets a machine of its own the directory is never shared and all pass trivially.

# hold KIND OTHERS SECONDS: see marks.subr, beside this program.
hold() {
    . "$(atf_get_srcdir)/marks.subr"
    marks_hold "$@"
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
