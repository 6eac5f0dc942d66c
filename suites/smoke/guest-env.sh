#!/bin/sh
# The lab's smoke suite: checks that a guest booted by lab is what suites expect — guest-init
# as PID 1, the file systems mounted, the kernel's modules loaded, a working user space, root,
# namespaces and BPF available. Emits TAP 14; exits non-zero if any check fails.

n=0
failed=0
check() {
    # check DESCRIPTION COMMAND...: one TAP test point.
    desc=$1
    shift
    n=$((n + 1))
    if out=$("$@" 2>&1); then
        echo "ok $n - $desc"
    else
        failed=$((failed + 1))
        echo "not ok $n - $desc"
        printf '%s\n' "$out" | sed 's/^/  # /'
    fi
}
skip() {
    n=$((n + 1))
    echo "ok $n - $1 # SKIP $2"
}
mounted() {
    # mounted FSTYPE MOUNTPOINT
    awk -v t="$1" -v m="$2" '$2 == m && $3 == t { found = 1 } END { exit !found }' /proc/mounts
}
supported() {
    grep -qw "$1" /proc/filesystems
}

echo "TAP version 14"
echo "# kernel $(uname -r) on $(uname -m)"
check "PID 1 is guest-init" sh -c '[ "$(cat /proc/1/comm)" = init ] && [ -x /init ]'
check "running as root" sh -c '[ "$(id -u)" = 0 ]'
check "the guest has a hostname (lab), not (none)" sh -c '[ "$(uname -n)" = lab ]'
check "the core size limit raised to the hard one, as kyua does" sh -c '[ "$(ulimit -c)" = "$(ulimit -H -c)" ]'
check "the work directory is 0755, as kyua's" sh -c '[ "$(stat -c %a .)" = 755 ]'
check "proc mounted" mounted proc /proc
check "sysfs mounted" mounted sysfs /sys
check "devtmpfs mounted" mounted devtmpfs /dev
check "tmpfs on /tmp" mounted tmpfs /tmp
for fs in cgroup2:/sys/fs/cgroup bpf:/sys/fs/bpf debugfs:/sys/kernel/debug; do
    t=${fs%%:*}
    m=${fs#*:}
    if supported "$t"; then
        check "$t mounted on $m" mounted "$t" "$m"
    else
        skip "$t mounted on $m" "kernel lacks $t"
    fi
done
check "/tmp is writable" sh -c 'echo lab > /tmp/smoke && [ "$(cat /tmp/smoke)" = lab ]'
check "/dev/null and /dev/console exist" sh -c '[ -c /dev/null ] && [ -c /dev/console ]'
check "environment is set (HOME a writable work directory, TZ=UTC, PATH)" sh -c '[ -d "$HOME" ] && [ -w "$HOME" ] && [ "$TZ" = UTC ] && case "$PATH" in */bin*) true;; *) false;; esac'
# The modules lab's boot list names (the agent channel's, --module's), each with what it needs,
# are loaded; without a boot list (an older image), every module of modules.dep.
moddir=/lib/modules/$(uname -r)
if [ -f /lab/modules.boot ]; then
    boot=$(cat /lab/modules.boot)
elif [ -f "$moddir/modules.dep" ]; then
    boot=$(sed 's/:.*//; s/\.ko$//; s/.*\///' "$moddir/modules.dep")
fi
if [ -n "${boot:-}" ]; then
    for m in $boot; do
        m=$(echo "$m" | tr - _)
        if grep -q "/$m.ko:" "$moddir/modules.dep" 2>/dev/null || grep -q "^$m.ko:" "$moddir/modules.dep" 2>/dev/null; then
            check "module $m loaded" sh -c "grep -q '^$m ' /proc/modules"
        else
            check "module $m built in" sh -c "grep -q '/$m.ko\$' $moddir/modules.builtin 2>/dev/null || [ -d /sys/module/$m ] || [ ! -f $moddir/modules.builtin ]"
        fi
    done
else
    skip "modules loaded" "this kernel carries no modules (built in)"
fi
check "modprobe is lab's" sh -c '[ "$(readlink /sbin/modprobe)" = /init ] && [ "$(command -v modprobe)" = /usr/sbin/modprobe ]'
check "vsock address family available" sh -c 'grep -qw vsock /proc/modules || grep -q "vsock" /proc/kallsyms 2>/dev/null || [ -d /sys/module/vsock ]'
check "loopback can be brought up" ip link set lo up
check "new pid, net, uts, ipc and mount namespaces" unshare -p -n -u -i -m -f sh -c '[ "$$" = 1 ] && hostname inner && [ "$(hostname)" = inner ]'
check "bpf(2) is available (BPF_SYSCALL)" sh -c '[ -e /proc/sys/kernel/unprivileged_bpf_disabled ]'
check "process groups and signals work" sh -c 'sleep 30 & p=$!; kill $p; wait $p; [ $? -gt 128 ]'
echo "1..$n"
[ "$failed" -eq 0 ]
