#!/usr/bin/atf-sh
# One case per atf result that is not a failure: skipped and each kind of expected failure.

atf_test_case skip
skip_head() {
    atf_set descr "atf_skip gives skipped"
}
skip_body() {
    atf_skip "skipped on purpose"
    atf_fail "atf_skip returned"
}

atf_test_case expect_fail
expect_fail_head() {
    atf_set descr "an atf_check mismatch after atf_expect_fail gives expected_failure"
}
expect_fail_body() {
    atf_expect_fail "known bug: echo says yes"
    atf_check -o inline:"no\n" echo yes
}

atf_test_case expect_exit
expect_exit_head() {
    atf_set descr "exiting with the announced code gives expected_failure"
}
expect_exit_body() {
    atf_expect_exit 3 "exits with 3"
    exit 3
}

atf_test_case expect_exit_any
expect_exit_any_head() {
    atf_set descr "atf_expect_exit -1 accepts any exit code"
}
expect_exit_any_body() {
    atf_expect_exit -1 "exits with some code"
    exit 7
}

atf_test_case expect_signal
expect_signal_head() {
    atf_set descr "dying by the announced signal gives expected_failure"
}
expect_signal_body() {
    atf_expect_signal 9 "kills itself"
    kill -9 $$
    sleep 5
}

atf_test_case expect_death
expect_death_head() {
    atf_set descr "atf_expect_death accepts an exit or a signal"
}
expect_death_body() {
    atf_expect_death "dies"
    exit 1
}

atf_test_case expect_timeout
expect_timeout_head() {
    atf_set descr "running past the timeout after atf_expect_timeout gives expected_failure"
    # Long enough for atf-sh to reach atf_expect_timeout in an emulated guest on a busy host
    # (2 s was not, once); the body sleeps far past it.
    atf_set timeout 8
}
expect_timeout_body() {
    atf_expect_timeout "sleeps past its timeout"
    sleep 60
}

atf_init_test_cases() {
    atf_add_test_case skip
    atf_add_test_case expect_fail
    atf_add_test_case expect_exit
    atf_add_test_case expect_exit_any
    atf_add_test_case expect_signal
    atf_add_test_case expect_death
    atf_add_test_case expect_timeout
}
