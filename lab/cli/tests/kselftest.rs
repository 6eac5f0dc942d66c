//! End-to-end tests of installed kselftest trees as suites: the bundled kselftest-style tree
//! gets, program by program, the verdict Linux's own runner gives (suites/kselftest/expected,
//! checked against run_kselftest.sh by scripts/kselftest-reference), with KTAP sub-results and
//! settings timeouts; and real kselftests built from linux-source-6.1 get, on debian-6.1, the
//! verdicts the kernel's run_kselftest.sh gives in the same kernel.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )
)]

use std::collections::BTreeMap;

mod common;

use common::*;

/// `program → (result, reason, cause, subresults)` from `lab test --format json`.
fn results(json: &str) -> BTreeMap<String, (String, String, String, usize)> {
    json.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "case_finished")
        .map(|e| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            (
                text(&e["id"]["program"]),
                (
                    text(&e["result"]),
                    text(&e["reason"]),
                    text(&e["cause"]),
                    e["subresults"].as_array().map_or(0, Vec::len),
                ),
            )
        })
        .collect()
}

/// The kernel runner's verdict as lab's result.
fn as_lab(verdict: &str) -> &'static str {
    match verdict {
        "pass" => "passed",
        "skip" => "skipped",
        "fail" | "timeout" => "failed",
        other => panic!("unknown verdict {other}"),
    }
}

#[test]
fn the_bundled_kselftest_tree_gets_the_kernel_runners_verdicts() {
    if !can_boot() || !installed("debian-6.1") {
        return;
    }
    let tree = suites().join("kselftest");
    let s = Scratch::new();
    let out = s.run(&[
        "test",
        &tree.display().to_string(),
        "-j",
        "2",
        "--format",
        "json",
    ]);
    // A failing and a hung program: exit 1, not a lab failure.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let got = results(&stdout(&out));
    let expected = std::fs::read_to_string(tree.join("expected")).unwrap();
    let mut want = 0;
    for line in expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (entry, verdict) = line.split_once(' ').unwrap();
        let program = entry.replacen(':', "/", 1);
        let (result, reason, cause, _) = &got[&program];
        assert_eq!(result, as_lab(verdict.trim()), "{program}: {reason}");
        if verdict.trim() == "timeout" {
            assert_eq!(cause, "timeout", "{program}");
        }
        want += 1;
    }
    assert_eq!(got.len(), want, "{got:?}");
    // KTAP points are sub-results, nested ones included; exit 1 names the status.
    assert!(got["basic/pass_points.sh"].3 >= 4, "{got:?}");
    assert!(got["nested/ktap_subtests.sh"].3 >= 2, "{got:?}");
    assert_eq!(got["basic/fail_point.sh"].1, "exit=1");
}

/// Real kselftests (kcmp, size, timens, and a few of proc) built from linux-source-6.1 by
/// scripts/build-kselftests: lab's verdict for each program equals what the kernel's own
/// run_kselftest.sh prints for it, run in a guest of the same kernel that sees the host's
/// root (where the tree, bash and coreutils' timeout are).
#[test]
fn real_kselftests_get_the_verdicts_of_the_kernels_own_runner() {
    if !can_boot() || !installed("debian-6.1") {
        return;
    }
    let build = suites().join("../scripts/build-kselftests");
    // The default collections (kcmp size proc timens seccomp), a build the cache keeps.
    let built = std::process::Command::new(&build).output().unwrap();
    if !built.status.success() {
        let err = String::from_utf8_lossy(&built.stderr);
        assert!(!required(), "build-kselftests: {err}");
        eprintln!("SKIPPED: kselftests do not build here: {err}");
        return;
    }
    let tree = String::from_utf8_lossy(&built.stdout).trim().to_string();

    // The kernel's runner, in the guest.
    let s = Scratch::new();
    let script = format!(
        "cd {tree} && ./run_kselftest.sh -c kcmp -c size -c timens -t proc:self \
         -t proc:thread-self -t proc:proc-uptime-001 -t proc:fd-001-lookup 2>&1 | \
         grep -E '^(not )?ok [0-9]+ selftests: '"
    );
    let out = s.run(&[
        "boot",
        "-k",
        "debian-6.1",
        "--root",
        "host",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // "ok 3 selftests: timens: timer # SKIP" → ("timens/timer", "skip")
    let mut runner = BTreeMap::new();
    for line in stdout(&out).lines() {
        let (head, rest) = line.split_once(" selftests: ").unwrap();
        let (name, directive) = rest.split_once(" # ").unwrap_or((rest, ""));
        let (collection, program) = name.split_once(": ").unwrap();
        let verdict = match (head.starts_with("ok"), directive) {
            (true, d) if d.starts_with("SKIP") => "skip",
            (true, _) => "pass",
            (false, d) if d.starts_with("TIMEOUT") => "timeout",
            (false, _) => "fail",
        };
        runner.insert(format!("{collection}/{}", program.trim()), verdict);
    }
    assert!(runner.len() >= 12, "the runner ran too little: {runner:?}");

    // lab, on the same programs.
    let filters: Vec<String> = runner.keys().cloned().collect();
    let mut args = vec![
        "test",
        &tree,
        "-k",
        "debian-6.1",
        "-j",
        "2",
        "--format",
        "json",
    ];
    args.extend(filters.iter().map(String::as_str));
    let out = s.run(&args);
    let got = results(&stdout(&out));
    let mut differ = Vec::new();
    for (program, verdict) in &runner {
        match got.get(program) {
            Some((result, _, _, _)) if result == as_lab(verdict) => {}
            other => differ.push(format!("{program}: runner {verdict}, lab {other:?}")),
        }
    }
    assert!(
        differ.is_empty(),
        "lab differs from run_kselftest.sh:\n{}",
        differ.join("\n")
    );
}
