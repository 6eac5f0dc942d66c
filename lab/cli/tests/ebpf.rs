//! End-to-end tests of the bpf interface: the bundled eBPF unit-test suites (compiled by lab
//! with clang, run through BPF_PROG_TEST_RUN by the guest runner) on several kernels in one
//! run, each test's verdict held to the suite's `expected` file, decoded logs in the reports.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )
)]

mod common;

use common::*;

/// Whether clang is here (or, under LAB_E2E=1, a failure that it is not).
fn has_clang() -> bool {
    let ok = std::process::Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!required(), "LAB_E2E=1 but clang is not installed");
        eprintln!("SKIPPED: clang not installed (apt-get install clang libbpf-dev)");
    }
    ok
}

#[test]
fn the_ebpf_suites_pass_on_three_kernels_in_one_run() {
    if !can_boot()
        || !has_clang()
        || !installed("debian-6.1")
        || !installed("debian-6.12")
        || !installed("lab-6.1")
    {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("ebpf");
    let reports = tempfile::tempdir().unwrap();
    let junit = reports.path().join("junit.xml");
    let kernels = ["debian-6.1", "debian-6.12", "lab-6.1"];
    let out = s.run(&[
        "test",
        &tree.display().to_string(),
        "-k",
        &kernels.join(","),
        "-j",
        "2",
        "--format",
        "json",
        "--junit",
        &junit.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = verdicts(&stdout(&out));
    assert_verdicts(&got, &expected(&tree), &kernels);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    // A skipped test says why, in JUnit too.
    assert!(xml.contains("cannot test-run"), "{xml}");
}

#[test]
fn failing_skipped_and_broken_bpf_tests_say_why_and_the_rest_runs() {
    if !can_boot() || !has_clang() || !installed("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("ebpf/selftest");
    let out = s.run(&["test", &tree.display().to_string(), "-j", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let tap = stdout(&out);
    // Decoded logs in the TAP diagnostics: the failing assertion with its file and line.
    assert!(tap.contains("assert failed: got == 0"), "{tap}");
    // The verifier's own words for a rejected program.
    assert!(tap.contains("verifier rejected check"), "{tap}");
    assert!(tap.contains("outside of the packet"), "{tap}");

    let json = s.run(&[
        "test",
        &tree.display().to_string(),
        "-j",
        "2",
        "--format",
        "json",
    ]);
    let got = verdicts(&stdout(&json));
    assert_verdicts(&got, &expected(&tree), &["debian-6.1"]);
    let reason = |case: &str| got[&("debian-6.1".to_string(), case.to_string())].1.clone();
    assert!(reason("tests/no_result_test.c:no_result").contains("wrote nothing"));
    assert!(reason("tests/no_map_test.c:no_map").contains("no suite_result_map"));
    assert!(reason("tests/garbage_result_test.c:truncated").contains("truncated"));
}

#[test]
fn a_bpf_source_that_does_not_compile_is_broken_with_clangs_words() {
    if !can_boot() || !has_clang() || !installed("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Kyuafile"),
        "syntax(2)\ntest_suite('x')\nbpf_test_program{name='bad_test.c'}\nplain_test_program{name='ok.sh'}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad_test.c"),
        "int main(void) { return nope; }\n",
    )
    .unwrap();
    let ok = dir.path().join("ok.sh");
    std::fs::write(&ok, "#!/bin/sh\nexit 0\n").unwrap();
    std::process::Command::new("chmod")
        .args(["+x", &ok.display().to_string()])
        .status()
        .unwrap();
    let out = s.run(&[
        "test",
        &dir.path().display().to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let got = verdicts(&stdout(&out));
    let bad = &got[&(
        "debian-6.1".to_string(),
        "bad_test.c:__test_cases_list__".to_string(),
    )];
    assert_eq!(bad.0, "broken");
    assert!(bad.1.contains("bad_test.c:1:"), "{bad:?}");
    assert_eq!(
        got[&("debian-6.1".to_string(), "ok.sh:main".to_string())].0,
        "passed"
    );
}

#[test]
fn a_bare_object_runs_as_a_program_of_its_own() {
    if !can_boot() || !has_clang() || !installed("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("ebpf");
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("xdp_lb_test.o");
    let multiarch = "/usr/include/x86_64-linux-gnu";
    let built = std::process::Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-I",
            multiarch,
        ])
        .arg("-I")
        .arg(tree.join("tests/include"))
        .arg("-I")
        .arg(tree.join("include"))
        .arg("-c")
        .arg(tree.join("tests/xdp_lb_test.c"))
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap();
    assert!(built.success());
    let out = s.run(&["test", &object.display().to_string(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = verdicts(&stdout(&out));
    assert_eq!(
        got[&(
            "debian-6.1".to_string(),
            "xdp_lb_test.o:lb_vip_redirect".to_string()
        )]
            .0,
        "passed"
    );
    assert_eq!(got.len(), 3, "{got:?}");
}
