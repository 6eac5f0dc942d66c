#!/usr/bin/atf-sh
# Passing atf-sh cases: atf_check on output and status, data files next to the program, the
# environment Kyua gives a test case, a per-case timeout, X- properties and config defaults.

atf_test_case check_output
check_output_head() {
    atf_set descr "atf_check compares status, stdout and stderr"
}
check_output_body() {
    atf_check -o inline:"hello\n" echo hello
    atf_check -s exit:3 -o empty -e empty sh -c 'exit 3'
    atf_check -s not-exit:0 false
    atf_check -o match:'^b' -e inline:"to stderr\n" sh -c 'echo bee; echo "to stderr" >&2'
    atf_check -o save:out echo saved
    atf_check -o inline:"saved\n" cat out
}

atf_test_case srcdir_data
srcdir_data_head() {
    atf_set descr "data files are read beside the program via atf_get_srcdir"
}
srcdir_data_body() {
    srcdir=$(atf_get_srcdir)
    case $srcdir in
    /*) ;;
    *) atf_fail "srcdir '$srcdir' is not absolute" ;;
    esac
    atf_check -o file:"$srcdir/data/sorted.txt" sort "$srcdir/data/words.txt"
    atf_check -o inline:"3\n" sh -c "wc -l < '$srcdir/data/words.txt' | tr -d ' '"
}

atf_test_case environment
environment_head() {
    atf_set descr "Kyua's conventions: a fresh work directory that is also HOME and TMPDIR, TZ=UTC"
}
environment_body() {
    here=$(pwd -P)
    [ -z "$(ls -A)" ] || atf_fail "work directory is not empty: $(ls -A | tr '\n' ' ')"
    [ "$(cd "$HOME" && pwd -P)" = "$here" ] || atf_fail "HOME is '$HOME', not the work directory $here"
    [ "$(cd "$TMPDIR" && pwd -P)" = "$here" ] || atf_fail "TMPDIR is '$TMPDIR', not the work directory $here"
    [ "$TZ" = UTC ] || atf_fail "TZ is '${TZ-unset}', not UTC"
    touch scratch || atf_fail "work directory is not writable"
}

atf_test_case quick_with_timeout
quick_with_timeout_head() {
    atf_set descr "a per-case timeout that the body stays well within"
    atf_set timeout 30
}
quick_with_timeout_body() {
    sleep 1
}

atf_test_case custom_property
custom_property_head() {
    atf_set descr "X- properties are free-form metadata, readable from the body"
    atf_set X-lab.owner "lab suites"
    atf_set X-lab.ticket 42
}
custom_property_body() {
    atf_check_equal "lab suites" "$(atf_get X-lab.owner)"
    atf_check_equal 42 "$(atf_get X-lab.ticket)"
}

atf_test_case config_default
config_default_head() {
    atf_set descr "atf_config_get falls back to its default for a variable nobody set"
}
config_default_body() {
    atf_check_equal fallback "$(atf_config_get lab_never_set fallback)"
    if atf_config_has lab_never_set; then
        atf_fail "lab_never_set is set"
    fi
}

atf_test_case config_set
config_set_head() {
    atf_set descr "a variable of the test suite (test_suites.lab.lab_greeting) reaches the case"
    atf_set require.config lab_greeting
}
config_set_body() {
    atf_check_equal hello "$(atf_config_get lab_greeting)"
    # Kyua passes only the program's own suite's variables, and the user as atf spells it (0.14.1
    # adds unprivileged_user; lab passes both).
    atf_check_equal nobody "$(atf_config_get unprivileged-user)"
}

atf_init_test_cases() {
    atf_add_test_case check_output
    atf_add_test_case srcdir_data
    atf_add_test_case environment
    atf_add_test_case quick_with_timeout
    atf_add_test_case custom_property
    atf_add_test_case config_default
    atf_add_test_case config_set
}
