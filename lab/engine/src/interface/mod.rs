//! Test interfaces: how a test program is listed and run, and how its run becomes a result.
//!
//! Pure logic, after Kyua 0.13: the scheduler builds guest commands with these helpers, runs
//! them, and hands back what came of each run as a [`RunOutcome`]; each interface turns that
//! (and what the program wrote: an atf result file, a TAP stream) into a
//! [`lab_model::TestResult`]. Nothing here does I/O.

pub mod atf;
pub mod bpf;
pub mod plain;
pub mod tap;

use lab_proto::ExitStatus;

/// How one run of a test program (or one part of an atf test case) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    /// How the process ended. When `timed_out` is set this is whatever the kill left and is
    /// not looked at.
    pub status: ExitStatus,
    /// Whether it ran past its timeout and was killed.
    pub timed_out: bool,
}

impl RunOutcome {
    /// A run that ended by itself with `status`.
    pub fn exited(status: ExitStatus) -> Self {
        Self {
            status,
            timed_out: false,
        }
    }

    /// A run killed at its timeout.
    pub fn timeout() -> Self {
        Self {
            status: ExitStatus::Signal(9),
            timed_out: true,
        }
    }

    /// The status, or `None` when the run timed out (Kyua's `optional<status>`).
    pub fn finished(&self) -> Option<ExitStatus> {
        (!self.timed_out).then_some(self.status)
    }
}

/// Fake test programs of each interface run under Kyua, when it is installed, and directly
/// with this module's commands: each interface's `result()` must give Kyua's result type, and
/// its reason where Kyua's does not name a temporary file.
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use lab_model::{Metadata, TestResult};

    use super::*;

    const ATF_PROGRAM: &str = r#"#! /usr/bin/env atf-sh
atf_test_case pass
pass_head() { atf_set descr "a pass"; atf_set X-owner "me"; atf_set require.progs /bin/sh; }
pass_body() { true; }
atf_test_case fail
fail_body() { atf_fail "boom"; }
atf_test_case fail_cleanup cleanup
fail_cleanup_body() { atf_fail "boom again"; }
fail_cleanup_cleanup() { true; }
atf_test_case good_cleanup cleanup
good_cleanup_body() { true; }
good_cleanup_cleanup() { true; }
atf_test_case bad_cleanup cleanup
bad_cleanup_body() { true; }
bad_cleanup_cleanup() { exit 3; }
atf_test_case skip
skip_body() { atf_skip "nope"; }
atf_test_case xexit
xexit_body() { atf_expect_exit 3 "want 3"; exit 4; }
atf_test_case xexit_ok
xexit_ok_body() { atf_expect_exit 3 "want 3"; exit 3; }
atf_test_case xfail
xfail_body() { atf_expect_fail "known bug"; atf_fail "it broke"; }
atf_test_case xsignal
xsignal_body() { atf_expect_signal 9 "dies by 9"; kill -9 $$; }
atf_test_case xdeath
xdeath_body() { atf_expect_death "dies"; exit 1; }
atf_test_case early
early_body() { exit 0; }
atf_test_case killed
killed_body() { kill -9 $$; }
atf_test_case config
config_head() { atf_set require.config myvar; }
config_body() { test "$(atf_config_get myvar)" = hello || atf_fail "bad var"; }
atf_test_case timeout
timeout_head() { atf_set timeout 1; }
timeout_body() { sleep 5; }
atf_test_case xtimeout
xtimeout_head() { atf_set timeout 1; }
xtimeout_body() { atf_expect_timeout "slow"; sleep 5; }
atf_init_test_cases() {
    for t in pass fail fail_cleanup good_cleanup bad_cleanup skip xexit xexit_ok xfail \
             xsignal xdeath early killed config timeout xtimeout; do
        atf_add_test_case $t
    done
}
"#;

    const PLAIN_PROGRAMS: &[(&str, &str)] = &[
        ("plain_pass", "exit 0"),
        ("plain_fail", "exit 3"),
        ("plain_kill", "kill -9 $$"),
        ("plain_term", "kill -TERM $$"),
    ];

    const TAP_PROGRAMS: &[(&str, &str)] = &[
        (
            "tap_pass",
            "echo 'TAP version 14'; echo 1..2; echo 'ok 1 - a'; echo 'ok 2 - b'",
        ),
        (
            "tap_fail",
            "echo 1..3; echo ok 1; echo not ok 2; echo 'not ok 3 - x'; exit 1",
        ),
        (
            "tap_todo_skip",
            "echo 1..3; echo ok 1; echo 'not ok 2 # TODO x'; echo 'ok 3 # SKIP y'",
        ),
        ("tap_dubious", "echo 1..1; echo ok 1; exit 2"),
        ("tap_skip_all", "echo '1..0 # SKIP no net'"),
        (
            "tap_bail",
            "echo 1..2; echo ok 1; echo 'Bail out!'; echo not ok 2",
        ),
        ("tap_no_plan", "echo ok 1"),
        ("tap_mismatch", "echo 1..3; echo ok 1; echo ok 2"),
        ("tap_duplicate", "echo 1..1; echo ok 1; echo 1..1"),
        ("tap_reversed", "echo 3..1"),
        ("tap_bad_skip", "echo '1..2 # SKIP x'"),
        ("tap_late_plan", "echo ok 1; echo ok 2; echo 1..2"),
        ("tap_signal", "echo 1..1; echo ok 1; kill -9 $$"),
        (
            "tap_subtests",
            "echo 1..1; echo '# Subtest: s'; echo '    1..2'; echo '    ok 1'; \
             echo '    not ok 2'; echo 'not ok 1 - s # TODO later'",
        ),
        (
            "tap_yaml",
            "echo 1..2; echo 'not ok 1'; echo '  ---'; echo '  got: 1'; echo '  ...'; \
             echo 'ok 2'; exit 1",
        ),
    ];

    fn on_path(program: &str) -> bool {
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn write_program(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        fs::write(&path, text).expect("writes the program");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// Runs `argv` in `cwd`, killing it at `timeout`; returns how it ended and its stdout.
    fn run(argv: &[String], cwd: &Path, timeout: Duration, capture: bool) -> (RunOutcome, String) {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(if capture {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::null())
            .spawn()
            .expect("spawns");
        let reader = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            })
        });
        let deadline = Instant::now() + timeout;
        let outcome = loop {
            if let Some(st) = child.try_wait().expect("waits") {
                let status = match (st.code(), st.signal()) {
                    (Some(c), _) => ExitStatus::Code(c),
                    (None, Some(s)) => ExitStatus::Signal(s),
                    (None, None) => panic!("odd status {st:?}"),
                };
                break RunOutcome::exited(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break RunOutcome::timeout();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stdout = reader
            .map(|r| r.join().expect("reader"))
            .unwrap_or_default();
        (outcome, stdout)
    }

    /// Runs the suite under Kyua; `program:case` → (result type, reason).
    fn kyua_results(dir: &Path) -> BTreeMap<String, (String, Option<String>)> {
        let db = dir.join("results.db");
        let db_flag = format!("--results-file={}", db.display());
        let test = Command::new("kyua")
            .args([
                "--config=none",
                "-v",
                "test_suites.lab.myvar=hello",
                "test",
                &db_flag,
            ])
            .current_dir(dir)
            .output()
            .expect("kyua test runs");
        assert!(
            db.exists(),
            "kyua test: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let report = Command::new("kyua")
            .args([
                "--config=none",
                "report",
                &db_flag,
                "--verbose",
                "--results-filter=passed,skipped,xfail,broken,failed",
            ])
            .current_dir(dir)
            .output()
            .expect("kyua report runs");
        let text = String::from_utf8_lossy(&report.stdout);
        let mut out = BTreeMap::new();
        let mut current = None;
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("===> ") {
                current = name.contains(':').then(|| name.to_string());
            } else if let (Some(name), Some(result)) = (&current, line.strip_prefix("Result:")) {
                let result = result.trim();
                let (kind, reason) = match result.split_once(": ") {
                    Some((k, r)) => (k.to_string(), Some(r.to_string())),
                    None => (result.to_string(), None),
                };
                out.insert(name.clone(), (kind, reason));
            }
        }
        out
    }

    /// Kyua's reason less the temporary file it names for bad TAP output.
    fn normalise(reason: &str) -> String {
        const PREFIX: &str = "TAP test program yielded invalid data: Load of '";
        match reason
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once("' failed: "))
        {
            Some((_, rest)) => format!("TAP test program yielded invalid data: {rest}"),
            None => reason.to_string(),
        }
    }

    fn ours_atf(dir: &Path, vars: &[(String, String)]) -> BTreeMap<String, TestResult> {
        let program = dir.join("atf_prog").display().to_string();
        let srcdir = dir.display().to_string();
        let (listed, stdout) = run(
            &atf::list_argv(&program),
            dir,
            Duration::from_secs(30),
            true,
        );
        assert_eq!(listed, RunOutcome::exited(ExitStatus::Code(0)));
        let cases = atf::parse_list(&stdout, &Metadata::default()).expect("lists");
        let mut out = BTreeMap::new();
        for case in cases {
            let work = tempfile::tempdir().expect("work dir");
            let resfile = work.path().join("result.body").display().to_string();
            let timeout = case.metadata.timeout;
            let argv = atf::run_argv(&program, &srcdir, &case.name, &resfile, vars);
            let (body, _) = run(&argv, work.path(), timeout, false);
            let cleanup = case.metadata.has_cleanup.then(|| {
                let argv = atf::cleanup_argv(&program, &srcdir, &case.name, vars);
                run(&argv, work.path(), timeout, false).0
            });
            let raw = fs::read_to_string(&resfile)
                .ok()
                .map(|text| atf::parse_result_file(&text));
            let result = atf::result(raw, &body, cleanup.as_ref());
            out.insert(format!("atf_prog:{}", case.name), result);
        }
        out
    }

    #[test]
    fn results_match_kyuas() {
        if !on_path("kyua") {
            eprintln!("SKIPPED results_match_kyuas: kyua is not on PATH (apt install kyua)");
            return;
        }
        let with_atf = on_path("atf-sh");
        if !with_atf {
            eprintln!("results_match_kyuas: atf-sh is not on PATH; atf programs left out");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut kyuafile = String::from("syntax(2)\ntest_suite('lab')\n");
        if with_atf {
            write_program(dir.path(), "atf_prog", ATF_PROGRAM);
            kyuafile.push_str("atf_test_program{name='atf_prog'}\n");
        }
        for (name, body) in PLAIN_PROGRAMS {
            write_program(dir.path(), name, &format!("#!/bin/sh\n{body}\n"));
            kyuafile.push_str(&format!("plain_test_program{{name='{name}'}}\n"));
        }
        for (name, body) in TAP_PROGRAMS {
            write_program(dir.path(), name, &format!("#!/bin/sh\n{body}\n"));
            kyuafile.push_str(&format!("tap_test_program{{name='{name}'}}\n"));
        }
        fs::write(dir.path().join("Kyuafile"), kyuafile).expect("writes the Kyuafile");

        let kyua = kyua_results(dir.path());
        let mut ours: BTreeMap<String, TestResult> = BTreeMap::new();
        if with_atf {
            ours.extend(ours_atf(dir.path(), &[("myvar".into(), "hello".into())]));
        }
        let long = Duration::from_secs(30);
        for (name, _) in PLAIN_PROGRAMS {
            let program = dir.path().join(name).display().to_string();
            let (outcome, _) = run(&plain::run_argv(&program), dir.path(), long, false);
            ours.insert(format!("{name}:main"), plain::result(&outcome));
        }
        for (name, _) in TAP_PROGRAMS {
            let program = dir.path().join(name).display().to_string();
            let (outcome, stdout) = run(&[program], dir.path(), long, true);
            let (result, _) = tap::result(&tap::parse(&stdout), &outcome);
            ours.insert(format!("{name}:main"), result);
        }

        let mut mismatches = Vec::new();
        for (name, ours) in &ours {
            let Some((kind, reason)) = kyua.get(name) else {
                mismatches.push(format!("{name}: kyua has no result"));
                continue;
            };
            let kyua_reason = reason.as_deref().map(normalise);
            if ours.kind.name() != kind || ours.reason != kyua_reason {
                mismatches.push(format!(
                    "{name}: ours {ours}, kyua {kind}: {}",
                    kyua_reason.as_deref().unwrap_or("")
                ));
            }
        }
        assert_eq!(ours.len(), kyua.len(), "kyua ran {:?}", kyua.keys());
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }
}
