#!/usr/bin/atf-sh
# What a jail gives each case: its own PID 1, its jail name as hostname, mounts nobody else
# sees. Lab only (execenv = 'jail').

# kyua_jail_name PATH CASE: Kyua's jail name for CASE of the program at PATH: "kyua" +
# "<path>_<case>" with every character other than [A-Za-z0-9_] made '_'; a name too long for a
# hostname (64 bytes on Linux) keeps the "kyua" prefix and the right end, as Kyua does.
kyua_jail_name() {
    name=$(printf '%s_%s' "$1" "$2" | sed 's/[^A-Za-z0-9_]/_/g')
    keep=60
    if [ ${#name} -gt $keep ]; then
        name=$(printf '%s' "$name" | awk -v k=$keep '{ print substr($0, length($0) - k + 1) }')
    fi
    echo "kyua$name"
}

atf_test_case pid1
pid1_head() {
    atf_set descr "the case runs in its own PID namespace: PID 1 is the case itself"
}
pid1_body() {
    [ -r /proc/1/cmdline ] || atf_fail "no /proc/1/cmdline"
    init=$(tr '\0' ' ' < /proc/1/cmdline)
    if [ "$$" != 1 ]; then
        case $init in
        *isolation.sh*) ;;
        *) atf_fail "PID 1 is '$init', not this test (PID $$)" ;;
        esac
    fi
}

atf_test_case hostname
hostname_head() {
    atf_set descr "the hostname is the case's jail name"
}
hostname_body() {
    # Kyua names the program by its absolute path; a runner that places programs where it
    # likes names it by its path under the suite's root instead, whichever directory that is:
    # /a/b/jail/isolation.sh, /b/jail/isolation.sh, /jail/isolation.sh, /isolation.sh.
    got=$(cat /proc/sys/kernel/hostname)
    atf_check_equal "$got" "$(uname -n)"
    path="$(atf_get_srcdir)/isolation.sh"
    tried=
    while :; do
        want=$(kyua_jail_name "$path" hostname)
        [ "$got" = "$want" ] && return 0
        tried="$tried $want"
        [ "$path" = /isolation.sh ] && break
        path=/${path#/*/}
    done
    atf_fail "hostname '$got' is none of:$tried"
}

# private_tmp CASE: mounts a tmpfs on /tmp/lab-jail (not on /tmp itself, which may hold the
# work directory and the results file), leaves its name there and checks for two seconds that
# nobody else's is: a jail whose mounts leaked would leave its tmpfs, and its name, in the
# /tmp/lab-jail of every case after it or beside it.
private_tmp() {
    mnt=/tmp/lab-jail
    [ ! -e $mnt/owner ] || atf_fail "$mnt holds $(cat $mnt/owner)'s tmpfs"
    mkdir -p $mnt || atf_fail "cannot make $mnt"
    mount -t tmpfs lab-jail-tmp $mnt || atf_fail "cannot mount a tmpfs on $mnt"
    echo "$1" > $mnt/owner
    awk -v m=$mnt '$2 == m && $1 == "lab-jail-tmp" { found = 1 } END { exit !found }' \
        /proc/mounts || atf_fail "the tmpfs is not in /proc/mounts"
    sleep 2
    atf_check_equal "$1" "$(cat $mnt/owner)"
}

atf_test_case private_tmp_a
private_tmp_a_head() {
    atf_set descr "a tmpfs mounted under /tmp in this jail is seen by no other case"
    atf_set require.user root
}
private_tmp_a_body() {
    private_tmp private_tmp_a
}

atf_test_case private_tmp_b
private_tmp_b_head() {
    atf_set descr "a tmpfs mounted under /tmp in this jail is seen by no other case"
    atf_set require.user root
}
private_tmp_b_body() {
    private_tmp private_tmp_b
}

atf_init_test_cases() {
    atf_add_test_case pid1
    atf_add_test_case hostname
    atf_add_test_case private_tmp_a
    atf_add_test_case private_tmp_b
}
