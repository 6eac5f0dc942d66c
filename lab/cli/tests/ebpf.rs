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
    assert!(
        tap.contains("verifier rejected unchecked_packet_read_check"),
        "{tap}"
    );
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
    assert_eq!(
        reason("tests/return_code_test.c:returns_fail"),
        "check returned FAIL (2)"
    );
    assert!(reason("tests/no_map_test.c:no_map").contains("no suite_result_map"));
    assert!(reason("tests/garbage_result_test.c:truncated").contains("truncated"));
    assert!(
        reason("tests/unknown_type_test.c:typo_in_progtype").starts_with(
            "unsupported: section xpd/test/typo_in_progtype/check names no program type"
        ),
        "{got:?}"
    );
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
    let bad = &got[&("debian-6.1".to_string(), "bad_test.c:__build__".to_string())];
    assert_eq!(bad.0, "broken");
    assert!(bad.1.starts_with("bad_test.c:1:"), "{bad:?}");
    assert!(!bad.1.contains('\n'), "one line: {bad:?}");
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

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_harness_properties_decide_what_upstream_style_tests_see() {
    if !can_boot() || !has_clang() || !installed("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&suites().join("ebpf/compat"), dir.path());
    // The compat fixtures without the properties they are written for: a reply test with a
    // fresh load per test, Kmesh's objects without the harness's globals and tail call, and a
    // global the object does not have.
    std::fs::write(
        dir.path().join("Kyuafile"),
        r#"syntax(2)
test_suite('props')
local flags = {'-O2', '-g', '--target=bpf', '-mcpu=v3', '-nostdinc', '-Werror'}
bpf_test_program{name='cilium/reply_state_test.c', cflags=flags, include={'include'},
    state='test'}
bpf_test_program{name='kmesh/workload_test.c', cflags=flags, include={'include'}}
bpf_test_program{name='cilium/untestable_test.c', cflags=flags, include={'include'},
    globals={no_such_global=1}}
"#,
    )
    .unwrap();
    let root = dir.path().display().to_string();
    let out = s.run(&["test", &root, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let got = verdicts(&stdout(&out));
    let case = |c: &str| got[&("debian-6.1".to_string(), c.to_string())].clone();
    assert_eq!(
        case("cilium/reply_state_test.c:t1_request_creates_entry").0,
        "passed"
    );
    let reply = case("cilium/reply_state_test.c:t2_reply_finds_entry");
    assert_eq!(reply.0, "failed", "{reply:?}");
    assert_eq!(reply.1, "entry from the request failed");
    assert_eq!(
        case("cilium/reply_state_test.c:t3_mock_meta_is_cleared").0,
        "passed"
    );
    // Without the harness's globals the check returns FAIL; without the registered tail
    // call the jump's tail call falls through.
    let level = case("kmesh/workload_test.c:log_level_from_the_harness");
    assert_eq!(level, ("failed".into(), "check returned FAIL (2)".into()));
    let authz = case("kmesh/workload_test.c:authz_offload_off_passes");
    assert_eq!(authz.0, "failed", "{authz:?}");
    assert_eq!(authz.1, "policy ran failed");
    assert_eq!(
        case("kmesh/workload_test.c:counter_starts_at_zero_b").0,
        "passed"
    );
    let global = case("cilium/untestable_test.c:redirect_policy");
    assert_eq!(global.0, "broken", "{global:?}");
    assert!(
        global.1.contains("no global variable no_such_global"),
        "{global:?}"
    );

    // `lab list -v` shows each program's bpf options, defaults marked.
    let listed = s.run(&["list", "-v", &root]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let text = stdout(&listed);
    assert!(text.contains("    bpf.state = test\n"), "{text}");
    assert!(
        text.contains("    bpf.state = test (default: the object's stages are Kmesh's jump)\n"),
        "{text}"
    );
    assert!(
        text.contains("    bpf.globals = {no_such_global=1}\n"),
        "{text}"
    );
    assert!(
        text.contains("    bpf.cflags = -O2 -g --target=bpf -mcpu=v3 -nostdinc -Werror\n"),
        "{text}"
    );
    assert!(text.contains("    bpf.include = {include}\n"), "{text}");
}
