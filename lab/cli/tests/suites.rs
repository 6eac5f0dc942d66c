//! End-to-end tests of `lab test`, `lab list` and `lab debug` on the bundled Kyua suites:
//! every case's verdict is held to the suite's `expected` file, on two kernels in one run, and
//! to Debian's kyua running the same programs on this host.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

#[test]
fn the_kyua_suites_pass_on_two_kernels_as_expected() {
    if !can_boot() || !installed("debian-6.1") || !installed("lab-6.1") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("kyua");
    let reports = tempfile::tempdir().unwrap();
    let junit = reports.path().join("junit.xml");
    let config = suites().join("kyua.conf");
    let out = s.run(&[
        "test",
        "--config",
        &config.display().to_string(),
        &tree.display().to_string(),
        "-k",
        "debian-6.1,lab-6.1",
        "-j",
        "2",
        "--format",
        "json",
        "--junit",
        &junit.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = verdicts(&stdout(&out));
    let want = expected(&tree);
    assert_verdicts(&got, &want, &["debian-6.1", "lab-6.1"]);

    // The JUnit report has one suite per kernel and every case.
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testsuite ").count(), 2, "{xml}");
    assert!(xml.matches("<testcase ").count() >= 2 * want.len(), "{xml}");
}

#[test]
fn the_selftest_suite_gives_each_documented_failure_and_the_rest_runs() {
    if !can_boot() || !installed("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("kyua/selftest");
    let out = s.run(&[
        "test",
        &tree.display().to_string(),
        "-j",
        "2",
        "--format",
        "json",
    ]);
    // Failed and broken cases: exit 1, not a lab failure.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let got = verdicts(&stdout(&out));
    assert_verdicts(&got, &expected(&tree), &["debian-6.1"]);
    let reason = |case: &str| got[&("debian-6.1".to_string(), case.to_string())].1.clone();
    assert!(reason("atf/missing.sh:__test_cases_list__").contains("does not exist"));
    assert!(reason("atf/unlistable.sh:__test_cases_list__").contains("list"));
    assert_eq!(reason("atf/fails.sh:hangs"), "Test case body timed out");
    // The case that powers its VM off breaks only itself; the VM's end is named.
    assert!(reason("plain/poweroff.sh:main").contains("vm debian-6.1"));
}

#[test]
fn verdicts_equal_debian_kyua_on_the_host_case_by_case() {
    if !can_boot() || !installed("debian-6.1") {
        return;
    }
    let root = suites().join("..");
    let reference = root.join("scripts/kyua-reference");
    let has_kyua = Command::new("kyua")
        .arg("about")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_kyua {
        assert!(!required(), "LAB_E2E=1 but kyua is not installed");
        eprintln!("SKIPPED: Debian's kyua is not installed (apt-get install kyua atf-sh)");
        return;
    }
    for tree in ["kyua", "kyua/selftest"] {
        let tree = suites().join(tree);
        // Debian's kyua on this host, atf-sh under bash as in lab's guests.
        let kyua = Command::new(&reference)
            .arg(&tree)
            .env("ATF_SHELL", "/bin/bash")
            .output()
            .unwrap();
        assert!(
            kyua.status.success(),
            "kyua-reference: {}",
            String::from_utf8_lossy(&kyua.stderr)
        );
        let kyua: BTreeMap<String, String> = String::from_utf8_lossy(&kyua.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(c, r)| (c.to_string(), r.trim().to_string()))
            .collect();
        assert!(kyua.len() >= 10, "kyua ran too little: {kyua:?}");

        let s = Scratch::new();
        // The configuration kyua-reference gives kyua.
        let config = suites().join("kyua.conf");
        let out = s.run(&[
            "test",
            "--config",
            &config.display().to_string(),
            &tree.display().to_string(),
            "--format",
            "json",
        ]);
        let lab = verdicts(&stdout(&out));
        let mut differ = Vec::new();
        for (case, result) in &kyua {
            match lab.get(&("debian-6.1".to_string(), case.clone())) {
                Some((r, _)) if r == result => {}
                other => differ.push(format!("{case}: kyua {result}, lab {other:?}")),
            }
        }
        assert!(
            differ.is_empty(),
            "lab and kyua differ:\n{}",
            differ.join("\n")
        );
    }
}

#[test]
fn a_malformed_kyuafile_is_named_with_its_line_and_nothing_boots() {
    let s = Scratch::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Kyuafile"),
        "syntax(2)\ntest_suite('x')\n\natf_test_program{name='a', timeout='soon'}\n",
    )
    .unwrap();
    let start = Instant::now();
    let out = s.run(&["test", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let kyuafile = dir.path().join("Kyuafile").display().to_string();
    assert!(
        err.contains(&format!("Load of '{kyuafile}' failed")),
        "{err}"
    );
    assert!(err.contains(&format!("{kyuafile}:4:")), "{err}");
    assert!(stdout(&out).is_empty());
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn list_shows_cases_and_metadata_like_kyua() {
    if !can_boot() || !installed("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("kyua");
    let out = s.run(&[
        "list",
        "--metadata",
        &tree.display().to_string(),
        "atf/basics.sh",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("atf/basics.sh:check_output\n"), "{text}");
    assert!(text.contains("    test_suite = lab\n"), "{text}");
    assert!(text.contains("    timeout = "), "{text}");
    assert!(
        !text.contains("plain/"),
        "the filter keeps one program: {text}"
    );
}

#[test]
fn debug_runs_one_case_live_and_keeps_its_vm_for_inspection() {
    if !can_boot() || !installed("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("kyua/selftest");
    let mut child = s
        .lab()
        .args([
            "debug",
            "--kyuafile",
            &tree.display().to_string(),
            "--inspect",
            "atf/fails.sh:explicit_fail",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo inspecting $(uname -r)\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("atf/fails.sh:explicit_fail: failed: failing on purpose"),
        "{text}"
    );
    assert!(text.contains("inspecting "), "{text}");
    s.assert_clean();
}

#[test]
fn an_interrupted_test_run_reports_what_it_has_and_leaves_nothing() {
    if !can_boot() || !installed("debian-6.1") {
        return;
    }
    let s = Scratch::new();
    let tree = suites().join("kyua");
    let child = s
        .lab()
        .args(["test", &tree.display().to_string(), "-j", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it get going (VMs up, cases running), then Ctrl-C.
    std::thread::sleep(Duration::from_secs(12));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30), "slow teardown");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("TAP version 14\n"), "{text}");
    assert!(text.trim_end().ends_with("Bail out! interrupted"), "{text}");
    s.assert_clean();
}

#[test]
fn an_argument_that_names_nothing_is_bad_input_not_an_empty_green_run() {
    let s = Scratch::new();
    let out = s.run(&["test", "suites/kyau"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no test program matches 'suites/kyau'"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}
