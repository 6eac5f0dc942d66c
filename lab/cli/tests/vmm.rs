//! End-to-end tests of the lab's own VMM (`--backend kvm`): real kernels booted by lab-vmm on
//! KVM. They run wherever KVM can run stock Linux guests; on a host whose KVM is PVM (guest
//! kernel code in KVM's instruction emulator, which stock kernels cannot survive) they say so
//! and skip — visibly, also under LAB_E2E=1, since no setting of this host can change it. The
//! VMM itself is proven on such hosts by lab-vmm's probe-guest tests.

mod common;

use common::*;

/// Why the lab's own VMM cannot boot stock kernels here, if it cannot.
fn cannot_run_stock_linux() -> Option<&'static str> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Some("no /dev/kvm on this host");
    }
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        return Some("KVM on this host cannot run stock Linux guests (PVM)");
    }
    None
}

fn vmm_ready(kernel: &str) -> bool {
    if let Some(why) = cannot_run_stock_linux() {
        eprintln!("SKIPPED: {why}");
        return false;
    }
    can_boot() && installed(kernel)
}

fn uname_in_the_lab_vmm(kernel: &str) {
    if !vmm_ready(kernel) {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "--backend",
        "kvm",
        "-k",
        kernel,
        "--",
        "uname",
        "-r",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), release_of(kernel));
}

#[test]
fn the_lab_vmm_boots_debian_6_1() {
    uname_in_the_lab_vmm("debian-6.1");
}

#[test]
fn the_lab_vmm_boots_debian_6_12() {
    uname_in_the_lab_vmm("debian-6.12");
}

#[test]
fn the_lab_vmm_boots_the_lab_config_kernel() {
    uname_in_the_lab_vmm("lab-6.1");
}

#[test]
fn lab_test_runs_unchanged_on_the_lab_vmm() {
    if !vmm_ready("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("kyua");
    let out = s.run(&[
        "test",
        "--backend",
        "kvm",
        &tree.display().to_string(),
        "-j",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_verdicts(&verdicts(&stdout(&out)), &expected(&tree), &["debian-6.1"]);
}

#[test]
fn forcing_the_lab_vmm_where_it_cannot_boot_is_a_named_vm_failure() {
    // Where stock kernels cannot run, a forced --backend kvm must fail clearly (not hang).
    if cannot_run_stock_linux() != Some("KVM on this host cannot run stock Linux guests (PVM)")
        || !can_boot()
        || !installed("lab-6.1")
    {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "--backend",
        "kvm",
        "--boot-timeout",
        "15",
        "--boot-attempts",
        "1",
        "-k",
        "lab-6.1",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("vm lab-6.1"), "{err}");
}
