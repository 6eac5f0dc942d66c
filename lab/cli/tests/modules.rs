//! End-to-end tests of kernel modules in guests: `--module` at boot, the guest's own modprobe
//! (the one the kernel's request_module runs) fetching modules from lab on demand, `.ko.xz`
//! trees (Debian 6.12), nested virtualization with the guest's kvm modules, and the kernel
//! command line never turning into a job. Real kernels in real VMs (QEMU/TCG here).

mod common;

use common::*;

fn ready(kernel: &str) -> bool {
    can_boot() && installed(kernel)
}

#[test]
fn a_module_named_with_module_is_loaded_at_boot() {
    if !ready("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "-k",
        "debian-6.1",
        "--module",
        "veth",
        "--",
        "sh",
        "-c",
        "grep -q '^veth ' /proc/modules && ip link add v0 type veth peer name v1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The done-when command, exactly.
    let out = s.run(&[
        "boot",
        "-k",
        "debian-6.1",
        "--module",
        "veth",
        "--",
        "ip",
        "link",
        "add",
        "v0",
        "type",
        "veth",
        "peer",
        "name",
        "v1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn the_kernels_request_module_gets_modules_from_lab_on_demand() {
    // Debian 6.12's modules are .ko.xz: lab decompresses them for the guest.
    if !ready("debian-6.12") {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "-k",
        "debian-6.12",
        "--",
        "sh",
        "-c",
        "test ! -e /lib/modules/$(uname -r)/kernel/drivers/net/veth.ko || exit 10; \
         grep -q '^veth ' /proc/modules && exit 11; \
         ip link add v0 type veth peer name v1 || exit 12; \
         grep -q '^veth ' /proc/modules || exit 13; \
         test -f /lib/modules/$(uname -r)/kernel/drivers/net/veth.ko || exit 14",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn modprobe_in_the_guest_is_labs_and_speaks_like_kmods() {
    if !ready("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "-k",
        "debian-6.1",
        "--",
        "sh",
        "-c",
        "type modprobe; modprobe -v sch_ingress; echo loaded=$?; \
         modprobe no_such_module; echo missing=$?; modprobe -q no_such_module; echo quiet=$?; \
         modprobe -r sch_ingress; echo removed=$?; grep -c '^sch_ingress ' /proc/modules",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "modprobe is /usr/sbin/modprobe",
        "/kernel/net/sched/sch_ingress.ko",
        "loaded=0",
        "missing=1",
        "quiet=1",
        "removed=0",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert_eq!(text.lines().last(), Some("0"), "{text}");
    let err = stderr(&out);
    assert!(
        err.contains("modprobe: FATAL: Module no_such_module not found in directory /lib/modules/"),
        "{err}"
    );
}

#[test]
fn a_nested_guest_has_dev_kvm_and_others_do_not() {
    if !ready("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "--nested",
        "-k",
        "debian-6.1",
        "--module",
        "kvm_amd",
        "--",
        "test",
        "-c",
        "/dev/kvm",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = s.run(&["boot", "-k", "debian-6.1", "--", "test", "-e", "/dev/kvm"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn a_module_the_kernel_lacks_is_bad_input_before_anything_boots() {
    if !ready("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "-k",
        "debian-6.1",
        "--module",
        "no_such_module",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("kernel debian-6.1") && err.contains("no module 'no_such_module'"),
        "{err}"
    );
}

#[test]
fn a_built_in_module_needs_no_file() {
    // lab-6.1 has veth built in.
    if !ready("lab-6.1") {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot", "-k", "lab-6.1", "--module", "veth", "--", "ip", "link", "add", "v0", "type",
        "veth", "peer", "name", "v1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn bare_words_on_the_kernel_command_line_are_not_a_job() {
    if !ready("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "-k",
        "debian-6.1",
        "--append",
        "noxsave quiet_word",
        "--",
        "uname",
        "-r",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), release_of("debian-6.1"));
}

#[test]
fn kyuafile_kmods_and_kvm_give_the_expected_verdicts() {
    if !ready("debian-6.1") || !installed("debian-6.12") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("modules");
    let out = s.run(&[
        "test",
        &tree.display().to_string(),
        "-k",
        "debian-6.1,debian-6.12",
        "-j",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = verdicts(&stdout(&out));
    assert_verdicts(&got, &expected(&tree), &["debian-6.1", "debian-6.12"]);
    let absent = &got[&("debian-6.1".to_string(), "absent.sh:main".to_string())];
    assert_eq!(
        absent.1,
        "Required kmods are not loaded: lab_no_such_module."
    );
}
