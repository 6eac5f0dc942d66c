#!/usr/bin/env bash
# lab-vmm's vsock device against a real Linux guest: QEMU microvm (TCG or KVM) with
# `-device vhost-user-vsock-device`, served by examples/vsock_backend.rs, driven from the host by
# examples/vsock_probe.rs and from the guest by tests/guest/vsock_guest.c.
#
# Checks: host -> guest CONNECT + echo, connect latency, 64-byte round trips, 16 MiB echoed
# byte-identical, 16 MiB one way each (host -> guest sink, guest source -> host), a guest -> host connection to <uds>_5000 with 16 MiB each way, and that
# killing the VM mid-transfer ends the backend cleanly (exit 0, no panic, sockets removed).
#
# Usage: lab/vmm/tests/qemu_vsock.sh   (from anywhere; exits 0 with "SKIP: ..." when a
# prerequisite is missing). Env: LAB_KERNEL_DIR (default: newest ~/.cache/lab/kernels/debian-6.1-*),
# LAB_BUSYBOX, LAB_QEMU, LAB_ACCEL (tcg|kvm, default tcg), KEEP=1 keeps the work directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)

skip() { echo "SKIP: $*"; exit 0; }
fail() { echo "FAIL: $*"; [ -f "${work:-/nonexistent}/console.log" ] && tail -n 30 "$work/console.log"; exit 1; }

qemu=${LAB_QEMU:-qemu-system-x86_64}
command -v "$qemu" >/dev/null || skip "$qemu not found (Debian: apt-get install qemu-system-x86)"
command -v gcc >/dev/null || skip "gcc not found (needed to build the static guest program)"
command -v cpio >/dev/null || skip "cpio not found"
"$qemu" -device help 2>/dev/null | grep -q vhost-user-vsock-device ||
	skip "$qemu has no vhost-user-vsock-device"
kdir=${LAB_KERNEL_DIR:-$(ls -d "$HOME"/.cache/lab/kernels/debian-6.1-* 2>/dev/null | sort | tail -n 1)}
[ -n "$kdir" ] && [ -f "$kdir/vmlinuz" ] ||
	skip "no Debian 6.1 kernel in ~/.cache/lab/kernels (fetch one with: lab kernel fetch debian-6.1)"
busybox=${LAB_BUSYBOX:-$(ls "$HOME"/.cache/lab/pkgs/busybox-static-*/bin/busybox 2>/dev/null | tail -n 1)}
[ -n "$busybox" ] && [ -x "$busybox" ] || skip "no static busybox in ~/.cache/lab/pkgs"
modules="virtio_ring virtio virtio_mmio vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport"
for m in $modules; do [ -f "$kdir/modules/$m.ko" ] || skip "$kdir/modules/$m.ko missing"; done

work=$(mktemp -d /tmp/lab-vmm-vsock.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== building (release examples, static guest program)"
(cd "$repo" && cargo build --quiet --release -p lab-vmm --examples)
target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
backend_bin=$target/release/examples/vsock_backend
probe_bin=$target/release/examples/vsock_probe
gcc -static -O2 -Wall -o "$work/vsock_guest" "$here/guest/vsock_guest.c"

echo "== initramfs"
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
cp "$busybox" "$root/bin/busybox"
cp "$work/vsock_guest" "$root/bin/vsock_guest"
for m in $modules; do cp "$kdir/modules/$m.ko" "$root/lib/modules/"; done
cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $modules; do insmod /lib/modules/\$m.ko || echo "@@vsock insmod \$m failed"; done
/bin/vsock_guest echo 1234 &
/bin/vsock_guest sink 1235 &
/bin/vsock_guest source 1236 16777216 &
/bin/vsock_guest client 2 5000 16777216
echo "@@vsock client-exit rc=\$?"
while true; do sleep 3600; done
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) >"$work/initramfs.cpio"

khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
accel=${LAB_ACCEL:-tcg}
case $accel in
tcg) cpu=max; append_tsc="tsc_early_khz=$khz tsc=reliable" ;;
kvm) cpu=host,-arch-capabilities; append_tsc="" ;;
*) fail "LAB_ACCEL must be tcg or kvm" ;;
esac

boot() { # boot NAME: starts the backend and QEMU; sets backend_pid, qemu_pid
	local name=$1
	rm -f "$work/vhost.sock" "$work/v.sock"
	"$backend_bin" "$work/vhost.sock" "$work/v.sock" 3 2>"$work/$name-backend.err" &
	backend_pid=$!
	pids+=("$backend_pid")
	for _ in $(seq 100); do [ -S "$work/vhost.sock" ] && break; sleep 0.05; done
	[ -S "$work/vhost.sock" ] || fail "backend did not listen: $(cat "$work/$name-backend.err")"
	"$qemu" -M microvm,acpi=on,rtc=on,memory-backend=mem -accel "$accel" -cpu "$cpu" -smp 1 -m 512M \
		-object memory-backend-memfd,id=mem,size=512M,share=on \
		-nodefaults -no-user-config -nographic -no-reboot \
		-global virtio-mmio.force-legacy=false \
		-chardev socket,id=vsock,path="$work/vhost.sock" \
		-device vhost-user-vsock-device,chardev=vsock \
		-serial file:"$work/console.log" \
		-kernel "$kdir/vmlinuz" -initrd "$work/initramfs.cpio" \
		-append "console=ttyS0 panic=-1 loglevel=4 $append_tsc rdinit=/init" \
		2>"$work/$name-qemu.err" &
	qemu_pid=$!
	pids+=("$qemu_pid")
}

echo "== boot 1: echo, latency, round trips, 16 MiB both ways"
boot check
launch=$(date +%s.%N)
if ! timeout 400 "$probe_bin" check "$work/v.sock" | tee "$work/probe.log"; then
	cat "$work/check-backend.err"
	fail "probe failed"
fi
for _ in $(seq 100); do grep -q "@@vsock client-exit" "$work/console.log" && break; sleep 0.1; done
grep "@@vsock client" "$work/console.log" || true
grep -q "@@vsock client ok" "$work/console.log" || fail "guest side of the 5000 transfer failed"
read -r -a stat <"/proc/$backend_pid/stat"
tck=$(getconf CLK_TCK)
echo "backend cpu time so far: user $(awk "BEGIN { print ${stat[13]} / $tck }") s, system $(awk "BEGIN { print ${stat[14]} / $tck }") s"

echo "== kill the VM mid-transfer"
timeout 120 "$probe_bin" kill "$work/v.sock" >"$work/kill.log" &
probe_pid=$!
for _ in $(seq 600); do grep -q transfer-started "$work/kill.log" && break; sleep 0.1; done
grep -q transfer-started "$work/kill.log" || fail "the transfer did not start"
kill -9 "$qemu_pid"
wait "$qemu_pid" 2>/dev/null || true
rc=0
timeout 20 tail --pid="$backend_pid" -f /dev/null || fail "backend still running 20 s after the VM died"
wait "$backend_pid" || rc=$?
wait "$probe_pid" || fail "probe did not see the end of its connection: $(cat "$work/kill.log")"
cat "$work/kill.log"
echo "backend exit status $rc; stderr: $(cat "$work/check-backend.err")"
[ "$rc" = 0 ] || fail "backend exited with $rc"
grep -qi panic "$work/check-backend.err" && fail "backend panicked"
[ ! -e "$work/v.sock" ] && [ ! -e "$work/vhost.sock" ] || fail "backend left socket files behind"
echo "PASS ($(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $launch }") s)"
