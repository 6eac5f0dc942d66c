//! End-to-end tests of the lab's own VMM (`--backend kvm`): real kernels booted by lab-vmm on
//! KVM. They run wherever KVM can run stock Linux guests, QEMU installed or not; on a host whose
//! KVM is PVM (guest kernel code in KVM's instruction emulator, which stock kernels cannot
//! survive) they say so and skip — visibly, also under LAB_E2E=1, since no setting of this host
//! can change it. On such hosts (this project's CI) `scripts/vmm-nested` runs this very test
//! binary inside a nested guest, where the guest's own KVM boots them, without QEMU.

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
        // scripts/vmm-nested runs these tests where they must run.
        assert!(
            std::env::var("LAB_VMM_REQUIRED").as_deref() != Ok("1"),
            "LAB_VMM_REQUIRED=1 but {why}"
        );
        eprintln!("SKIPPED: {why}");
        return false;
    }
    // The lab VMM needs no QEMU: only the kernel.
    installed(kernel)
}

/// `lab` as a host without QEMU runs it: QEMU named by LAB_QEMU is nowhere, and PATH holds no
/// qemu-system-x86_64.
fn without_qemu(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env("LAB_QEMU", "/nonexistent/qemu-system-x86_64")
        .env("PATH", "/usr/bin:/bin")
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
fn the_lab_vmm_runs_where_qemu_is_not_installed() {
    if !vmm_ready("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let out = without_qemu(&mut s.lab())
        .args([
            "boot",
            "--backend",
            "kvm",
            "-k",
            "debian-6.1",
            "--",
            "uname",
            "-r",
        ])
        .output()
        .expect("lab runs");
    s.assert_clean();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), release_of("debian-6.1"));
}

#[test]
fn lab_test_runs_unchanged_on_the_lab_vmm() {
    if !vmm_ready("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("kyua");
    let config = suites().join("kyua.conf");
    let out = s.run(&[
        "test",
        "--config",
        &config.display().to_string(),
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
        || !installed("lab-6.1")
    {
        return;
    }
    let s = Scratch::new();
    // No QEMU either: the lab VMM is all `--backend kvm` needs, so its own failure is what
    // the user sees, not a missing QEMU.
    let out = without_qemu(&mut s.lab())
        .args([
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
        ])
        .output()
        .expect("lab runs");
    s.assert_clean();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("vm lab-6.1"), "{err}");
    assert!(!err.contains("qemu"), "{err}");
}
