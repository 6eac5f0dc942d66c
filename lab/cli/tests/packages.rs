//! End-to-end tests of `--guest-package`: Debian packages (with their dependencies) fetched
//! rootless, layered over the initramfs, and run in a real guest: an ATF shell test program
//! under `atf-sh`, with `atf-check` (and bash, which Debian's atf-sh runs programs with: the
//! test command's `DEFAULT_TEST_PACKAGES`).
//!
//! They need QEMU and apt's package lists. Without them they skip and say so; with
//! `LAB_E2E=1` (CI) a missing prerequisite is a failure instead.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::process::{Command, Output, Stdio};
use std::time::Instant;

mod common;

use common::{required, LAB};

/// Returns false (and says why) when these tests cannot run here.
fn can_run() -> bool {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    let lists = std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false);
    for (ok, what) in [
        (
            on_path("qemu-system-x86_64"),
            "qemu-system-x86_64 is not installed",
        ),
        (
            on_path("apt-cache") && on_path("dpkg-deb"),
            "apt or dpkg is missing",
        ),
        (lists, "apt has no package lists (apt-get update)"),
    ] {
        if !ok {
            assert!(!required(), "LAB_E2E=1 but {what}");
            eprintln!("SKIPPED: {what}");
            return false;
        }
    }
    true
}

/// Runs lab with `args` (and `env`), printing what it said.
fn lab(args: &[&str], env: &[(&str, &str)]) -> Output {
    let started = Instant::now();
    let out = Command::new(LAB)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "lab {} -> {:?} in {:.1}s\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An ATF shell test program with one passing and one failing case.
const PROGRAM: &str = r#"#! /usr/bin/env atf-sh

atf_test_case passing
passing_head() {
    atf_set "descr" "echo prints what it is given"
}
passing_body() {
    atf_check -s exit:0 -o inline:"hello\n" echo hello
}

atf_test_case failing
failing_head() {
    atf_set "descr" "expects the wrong output"
}
failing_body() {
    atf_check -s exit:0 -o inline:"hello\n" echo goodbye
}

atf_init_test_cases() {
    atf_add_test_case passing
    atf_add_test_case failing
}
"#;

#[test]
fn an_atf_sh_program_runs_in_a_guest_with_the_atf_sh_package() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("prog");
    std::fs::write(&prog, PROGRAM).unwrap();
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // The first boot fetches what the cache lacks.
    let warm = lab(
        &[
            "boot",
            "-k",
            "debian-6.1",
            "--guest-package",
            "atf-sh",
            "--guest-package",
            "bash",
            "--",
            "/usr/libexec/atf-check",
            "-s",
            "exit:0",
            "true",
        ],
        &[],
    );
    assert_eq!(warm.status.code(), Some(0));

    // From the cache the layer needs no network: point apt at a closed port.
    let offline = [
        ("http_proxy", "http://127.0.0.1:9"),
        ("https_proxy", "http://127.0.0.1:9"),
    ];
    let put = format!("{}:/suite/prog", prog.display());
    let passed = dir.path().join("passed");
    let failed = dir.path().join("failed");
    let get_passed = format!("/tmp/res-passing:{}", passed.display());
    let get_failed = format!("/tmp/res-failing:{}", failed.display());
    let out = lab(
        &[
            "run-in-vm",
            "-k",
            "debian-6.1",
            "--guest-package",
            "atf-sh",
            "--guest-package",
            "bash",
            "--put",
            &put,
            "--get",
            &get_passed,
            "--get",
            &get_failed,
            "-c",
            "/suite/prog -l",
            "-c",
            "/suite/prog -r /tmp/res-passing -s /suite passing; echo passing=$?",
            "-c",
            "/suite/prog -r /tmp/res-failing -s /suite failing; echo failing=$?",
        ],
        &offline,
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Content-Type: application/X-atf-tp; version=\"1\"",
        "ident: passing",
        "descr: echo prints what it is given",
        "ident: failing",
        "passing=0",
        "failing=1",
    ] {
        assert!(stdout.contains(line), "no {line:?} in {stdout}");
    }
    assert_eq!(std::fs::read_to_string(&passed).unwrap(), "passed\n");
    let failed = std::fs::read_to_string(&failed).unwrap();
    assert!(failed.starts_with("failed: "), "{failed}");
}

#[test]
fn an_unknown_guest_package_is_named() {
    if !can_run() {
        return;
    }
    let out = lab(
        &[
            "boot",
            "-k",
            "debian-6.1",
            "--guest-package",
            "no-such-package-for-lab",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown package is bad input"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-package-for-lab"), "{stderr}");
}
