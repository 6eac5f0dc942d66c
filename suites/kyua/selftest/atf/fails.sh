#!/usr/bin/atf-sh
# atf cases that fail or break on purpose; each description says which result it must get.

atf_test_case mismatch
mismatch_head() {
    atf_set descr "failed: atf_check sees other output than it expects"
}
mismatch_body() {
    atf_check -o inline:"expected\n" echo actual
}

atf_test_case explicit_fail
explicit_fail_head() {
    atf_set descr "failed: atf_fail"
}
explicit_fail_body() {
    atf_fail "failing on purpose"
}

atf_test_case expect_fail_but_passed
expect_fail_but_passed_head() {
    atf_set descr "failed: announces a failure that never comes"
}
expect_fail_but_passed_body() {
    atf_expect_fail "a failure that never comes"
    atf_expect_pass
}

atf_test_case expect_exit_wrong_code
expect_exit_wrong_code_head() {
    atf_set descr "failed: exits with another code than it announced"
}
expect_exit_wrong_code_body() {
    atf_expect_exit 3 "announces 3"
    exit 4
}

atf_test_case killed
killed_head() {
    atf_set descr "broken: dies by a signal it did not announce, leaving no result"
}
killed_body() {
    kill -9 $$
    sleep 5
}

atf_test_case hangs
hangs_head() {
    atf_set descr "broken: runs past its two-second timeout"
    atf_set timeout 2
}
hangs_body() {
    sleep 600
}

atf_test_case cleanup_fails cleanup
cleanup_fails_head() {
    atf_set descr "broken: the body passes, the cleanup exits 1 (proving that it ran)"
}
cleanup_fails_body() {
    echo cleanup_fails > body-done
}
cleanup_fails_cleanup() {
    [ -f body-done ] && echo "cleanup ran after the body; failing on purpose" >&2
    exit 1
}

atf_init_test_cases() {
    atf_add_test_case mismatch
    atf_add_test_case explicit_fail
    atf_add_test_case expect_fail_but_passed
    atf_add_test_case expect_exit_wrong_code
    atf_add_test_case killed
    atf_add_test_case hangs
    atf_add_test_case cleanup_fails
}
