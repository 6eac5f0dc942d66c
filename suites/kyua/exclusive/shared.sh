#!/usr/bin/atf-sh
# Shared cases, and the exclusive ones of lock.sh, alone.sh and head.sh, meet in
# /tmp/lab-exclusive: each leaves KIND.PID there while it runs.
# An exclusive case fails if any other live process left a mark; a shared case fails if
# a live exclusive one did. Marks of dead processes (an interrupted run) are ignored. Where
# every case gets a machine of its own the directory is never shared and all pass trivially.

# hold KIND OTHERS SECONDS: see marks.subr, beside this program.
hold() {
    . "$(atf_get_srcdir)/marks.subr"
    marks_hold "$@"
}

atf_test_case shared_a
shared_a_body() {
    hold shared exclusive 1
}

atf_test_case shared_b
shared_b_body() {
    hold shared exclusive 1
}

atf_test_case shared_c
shared_c_body() {
    hold shared exclusive 1
}

atf_init_test_cases() {
    atf_add_test_case shared_a
    atf_add_test_case shared_b
    atf_add_test_case shared_c
}
