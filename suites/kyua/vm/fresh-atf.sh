#! /usr/bin/env atf-sh
# Two atf cases with execenv = 'vm': each sees a VM that ran nothing before it.

fresh_body() {
    # The body's own work directory is the only one; its result file is not written yet.
    atf_check -o inline:"1\n" sh -c 'ls /tmp/lab-work | wc -l'
    atf_check -o inline:"0\n" sh -c 'ls /tmp/lab-results | wc -l'
}

atf_test_case first
first_head() {
    atf_set descr "runs in a VM of its own"
}
first_body() {
    fresh_body
}

atf_test_case second
second_head() {
    atf_set descr "runs in another VM of its own"
}
second_body() {
    fresh_body
}

atf_init_test_cases() {
    atf_add_test_case first
    atf_add_test_case second
}
