#!/usr/bin/atf-sh
# Cleanup routines. Each cleanup checks what only the body could have left and exits non-zero
# (the case then turns broken) when it is not there: a runner that runs the cleanup before the
# body, in another directory or as another user breaks these cases. That the cleanup runs at
# all is proven in selftest/atf/cleanup.sh, whose cleanup fails on purpose.

# Checks the body's marker, then leaves the cleanup's own.
cleanup_checks() {
    [ -f body-done ] || { echo "cleanup: no body-done in $(pwd)" >&2; exit 1; }
    [ ! -f cleanup-done ] || { echo "cleanup: ran twice" >&2; exit 1; }
    [ "$(cat body-done)" = "$1" ] || { echo "cleanup: body-done says $(cat body-done)" >&2; exit 1; }
    echo "$1" > cleanup-done
}

atf_test_case same_workdir cleanup
same_workdir_head() {
    atf_set descr "the cleanup runs after the body, in the body's work directory"
}
same_workdir_body() {
    [ ! -e cleanup-done ] || atf_fail "the cleanup ran before the body"
    pwd -P > body-pwd
    echo same_workdir > body-done
}
same_workdir_cleanup() {
    cleanup_checks same_workdir
    [ "$(pwd -P)" = "$(cat body-pwd)" ] || { echo "cleanup: in $(pwd -P)" >&2; exit 1; }
}

atf_test_case after_expected_failure cleanup
after_expected_failure_head() {
    atf_set descr "the cleanup runs after a body that failed as expected"
}
after_expected_failure_body() {
    echo after_expected_failure > body-done
    atf_expect_fail "fails on purpose"
    atf_fail "the expected failure"
}
after_expected_failure_cleanup() {
    cleanup_checks after_expected_failure
}

atf_test_case after_skip cleanup
after_skip_head() {
    atf_set descr "the cleanup runs after a body that skipped"
}
after_skip_body() {
    echo after_skip > body-done
    atf_skip "skips after leaving its marker"
}
after_skip_cleanup() {
    cleanup_checks after_skip
}

atf_test_case unprivileged_cleanup cleanup
unprivileged_cleanup_head() {
    atf_set descr "the cleanup runs as the body's unprivileged user"
    atf_set require.user unprivileged
}
unprivileged_cleanup_body() {
    id -u > body-uid
    [ "$(cat body-uid)" != 0 ] || atf_fail "the body runs as root"
    echo unprivileged_cleanup > body-done
}
unprivileged_cleanup_cleanup() {
    cleanup_checks unprivileged_cleanup
    [ "$(id -u)" = "$(cat body-uid)" ] || { echo "cleanup: uid $(id -u)" >&2; exit 1; }
}

atf_init_test_cases() {
    atf_add_test_case same_workdir
    atf_add_test_case after_expected_failure
    atf_add_test_case after_skip
    atf_add_test_case unprivileged_cleanup
}
