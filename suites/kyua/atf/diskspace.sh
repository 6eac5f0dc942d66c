#!/usr/bin/atf-sh
# require.diskspace in a head. Debian's kyua rejects this program (its atf lister predates the
# property), so the host reference skips it; lab and later Kyua map it to required_disk_space.

atf_test_case diskspace_small
diskspace_small_head() {
    atf_set require.diskspace 1k
}
diskspace_small_body() {
    echo 1234567890 > file || atf_fail "cannot write ten bytes"
}

atf_test_case diskspace_huge
diskspace_huge_head() {
    atf_set require.diskspace 64t
}
diskspace_huge_body() {
    atf_skip "64 TiB of disk are not free here: the runner did not check"
}

atf_init_test_cases() {
    atf_add_test_case diskspace_small
    atf_add_test_case diskspace_huge
}
