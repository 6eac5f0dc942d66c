#!/usr/bin/atf-sh
# Requirements in the heads: each property once met (the case passes and checks it really is)
# and once unmet (the runner skips the case; the body fails if it runs anyway).

unmet() {
    atf_fail "the body ran although its requirement is unmet"
}

atf_test_case progs_present
progs_present_head() {
    atf_set require.progs "sh cat /bin/sh"
}
progs_present_body() {
    atf_check -o inline:"ok\n" sh -c 'echo ok | cat'
}

atf_test_case progs_missing
progs_missing_head() {
    atf_set require.progs "lab-no-such-program"
}
progs_missing_body() { unmet; }

atf_test_case files_present
files_present_head() {
    atf_set require.files "/etc/passwd"
}
files_present_body() {
    atf_check -o ignore grep '^root:' /etc/passwd
}

atf_test_case files_missing
files_missing_head() {
    atf_set require.files "/nonexistent/lab-no-such-file"
}
files_missing_body() { unmet; }

atf_test_case user_root
user_root_head() {
    atf_set require.user root
}
user_root_body() {
    atf_check -o inline:"0\n" id -u
}

atf_test_case user_unprivileged
user_unprivileged_head() {
    atf_set require.user unprivileged
}
user_unprivileged_body() {
    [ "$(id -u)" != 0 ] || atf_fail "running as root"
    touch mine || atf_fail "the work directory is not writable by $(id -u)"
    owner=$(ls -ln mine | awk '{ print $3 }')
    [ "$owner" = "$(id -u)" ] || atf_fail "a new file belongs to $owner, not $(id -u)"
}

atf_test_case config_missing
config_missing_head() {
    atf_set require.config "lab_never_set"
}
config_missing_body() { unmet; }

atf_test_case memory_small
memory_small_head() {
    atf_set require.memory 1m
}
memory_small_body() {
    :
}

atf_test_case memory_huge
memory_huge_head() {
    atf_set require.memory 64t
}
memory_huge_body() {
    total=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo 2>/dev/null)
    atf_skip "64 TiB of memory are not here (MemTotal ${total:-unknown} kB): the runner did not check"
}

atf_test_case arch_any
arch_any_head() {
    atf_set require.arch "x86_64 amd64 aarch64 arm64 riscv64 i386"
}
arch_any_body() {
    :
}

atf_test_case arch_other
arch_other_head() {
    atf_set require.arch "vax"
}
arch_other_body() { unmet; }

atf_test_case machine_other
machine_other_head() {
    atf_set require.machine "vax"
}
machine_other_body() { unmet; }

atf_init_test_cases() {
    atf_add_test_case progs_present
    atf_add_test_case progs_missing
    atf_add_test_case files_present
    atf_add_test_case files_missing
    atf_add_test_case user_root
    atf_add_test_case user_unprivileged
    atf_add_test_case config_missing
    atf_add_test_case memory_small
    atf_add_test_case memory_huge
    atf_add_test_case arch_any
    atf_add_test_case arch_other
    atf_add_test_case machine_other
}
