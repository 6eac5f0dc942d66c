//! JUnit XML (quick-junit): one testsuite per kernel, written to a file when the run finishes,
//! interrupted or not.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_model::{ResultType, RunEvent, SubResult, TestResult};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::reporter::{serde_name, FinishedCase, ReportError, Reporter};

/// Collects a run's results and writes them as JUnit XML at the end.
#[derive(Debug)]
pub struct JunitReporter {
    path: PathBuf,
    /// Kernels in the order the run named them.
    kernels: Vec<String>,
    /// Finished cases per kernel.
    cases: BTreeMap<String, Vec<FinishedCase>>,
    /// Each kernel's `uname -r`, once a VM of it was ready.
    releases: BTreeMap<String, String>,
    /// The root the guests' jobs ran in.
    root: Option<String>,
    /// What went wrong with each kernel's VMs.
    vm_failures: BTreeMap<String, String>,
    interrupted: bool,
}

impl JunitReporter {
    /// A reporter that writes the report to `path` when the run finishes.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            kernels: Vec::new(),
            cases: BTreeMap::new(),
            releases: BTreeMap::new(),
            root: None,
            vm_failures: BTreeMap::new(),
            interrupted: false,
        }
    }

    /// The file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn kernel_seen(&mut self, kernel: &str) {
        if !self.kernels.iter().any(|k| k == kernel) {
            self.kernels.push(kernel.to_string());
        }
    }

    /// The report of the events so far, for a run that took `duration`.
    pub fn report(&self, duration: Duration) -> Report {
        let mut report = Report::new("lab");
        report.set_time(duration);
        for kernel in &self.kernels {
            let mut suite = TestSuite::new(kernel.as_str());
            suite.add_property(Property::new("kernel", kernel.as_str()));
            if let Some(release) = self.releases.get(kernel) {
                suite.add_property(Property::new("release", release.as_str()));
            }
            if let Some(root) = &self.root {
                suite.add_property(Property::new("root", root.as_str()));
            }
            if self.interrupted {
                suite.add_property(Property::new("interrupted", "true"));
            }
            if let Some(failures) = self.vm_failures.get(kernel) {
                suite.set_system_err(failures.as_str());
            }
            let mut cases: Vec<&FinishedCase> =
                self.cases.get(kernel).into_iter().flatten().collect();
            // By name, so that reports of two runs compare line by line.
            cases.sort_by(|a, b| (&a.id.program, &a.id.case).cmp(&(&b.id.program, &b.id.case)));
            suite.set_time(cases.iter().map(|c| c.duration).sum());
            for c in cases {
                suite.add_test_case(test_case(c));
                for s in &c.subresults {
                    suite.add_test_case(subresult(c, s));
                }
            }
            report.add_test_suite(suite);
        }
        report
    }

    /// Writes the report: to a file beside `path` first, then renamed over it, so that a
    /// reader never sees half a report.
    fn write(&self, duration: Duration) -> Result<(), ReportError> {
        let xml = self
            .report(duration)
            .to_string()
            .map_err(ReportError::Junit)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file_error = |source| ReportError::File {
            path: self.path.clone(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(file_error)?;
        f.write_all(xml.as_bytes()).map_err(file_error)?;
        f.sync_all().map_err(file_error)?;
        std::fs::rename(&tmp, &self.path).map_err(file_error)
    }
}

impl Reporter for JunitReporter {
    fn event(&mut self, e: &RunEvent) -> Result<(), ReportError> {
        match e {
            RunEvent::RunStarted { kernels, root, .. } => {
                for k in kernels {
                    self.kernel_seen(k);
                }
                self.root = Some(root.clone());
            }
            RunEvent::VmReady {
                kernel, release, ..
            } => {
                self.releases
                    .entry(kernel.clone())
                    .or_insert_with(|| release.clone());
            }
            RunEvent::VmFailed {
                slot,
                kernel,
                reason,
                console_tail,
            } => {
                let text = self.vm_failures.entry(kernel.clone()).or_default();
                text.push_str(&format!("VM failed (slot {slot}): {reason}\n"));
                for l in console_tail {
                    text.push_str(&format!("  {l}\n"));
                }
            }
            RunEvent::CaseFinished { id, .. } => {
                self.kernel_seen(&id.kernel);
                let case = FinishedCase::from_event(e).expect("a CaseFinished event");
                self.cases.entry(id.kernel.clone()).or_default().push(case);
            }
            RunEvent::Interrupted { .. } => self.interrupted = true,
            RunEvent::RunFinished {
                duration,
                interrupted,
                ..
            } => {
                self.interrupted |= *interrupted;
                self.write(*duration)?;
            }
            RunEvent::VmBooting { .. }
            | RunEvent::CasesListed { .. }
            | RunEvent::CaseStarted { .. }
            | RunEvent::CaseOutput { .. }
            | RunEvent::ProgramFinished { .. } => {}
        }
        Ok(())
    }
}

/// The JUnit status of a result: failed is a failure, broken an error, skipped and expected
/// failures are skipped (the latter saying so). The message is the reason on one line (XML
/// readers turn line breaks in attributes into spaces); a longer reason goes in the text,
/// before `details`.
fn status(r: &TestResult, details: &str) -> TestCaseStatus {
    let mut s = match r.kind {
        ResultType::Passed => return TestCaseStatus::success(),
        ResultType::Failed => TestCaseStatus::non_success(NonSuccessKind::Failure),
        ResultType::Broken => TestCaseStatus::non_success(NonSuccessKind::Error),
        ResultType::Skipped | ResultType::ExpectedFailure => TestCaseStatus::skipped(),
    };
    let reason = r.reason.as_deref().unwrap_or("").trim_end();
    let mut message = reason.lines().collect::<Vec<_>>().join(" | ");
    if r.kind == ResultType::ExpectedFailure {
        message = if message.is_empty() {
            "expected failure".to_string()
        } else {
            format!("expected failure: {message}")
        };
    }
    if !message.is_empty() {
        s.set_message(message);
    }
    let ty = r
        .cause
        .as_ref()
        .map_or_else(|| r.kind.name().to_string(), serde_name);
    s.set_type(ty);
    let text = match (reason.contains('\n'), details.is_empty()) {
        (true, true) => reason.to_string(),
        (true, false) => format!("{reason}\n\n{details}"),
        (false, _) => details.to_string(),
    };
    if !text.is_empty() {
        s.set_description(text);
    }
    s
}

fn test_case(c: &FinishedCase) -> TestCase {
    let mut t = TestCase::new(c.id.kyua_name(), status(&c.result, ""));
    t.set_classname(c.id.program.as_str());
    t.set_time(c.duration);
    if !c.result.kind.is_good() {
        if !c.stdout.is_empty() {
            t.set_system_out(c.stdout.as_str());
        }
        if !c.stderr.is_empty() {
            t.set_system_err(c.stderr.as_str());
        }
    }
    t
}

fn subresult(c: &FinishedCase, s: &SubResult) -> TestCase {
    let mut t = TestCase::new(
        format!("{}/{}", c.id.kyua_name(), s.name),
        status(&s.result, &s.diagnostics),
    );
    t.set_classname(c.id.program.as_str());
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    const RUN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="lab" tests="17" skipped="5" failures="3" errors="2" time="12.345">
    <testsuite name="debian-6.1" tests="11" skipped="4" errors="1" failures="3" time="302.420">
        <properties>
            <property name="kernel" value="debian-6.1"/>
            <property name="release" value="6.1.0-18-cloud-amd64"/>
            <property name="root" value="initramfs"/>
        </properties>
        <testcase name="t/atf_test:fail" classname="t/atf_test" time="1.250">
            <failure message="assertion failed: x == 1 | at t/atf_test.c:12" type="failed">assertion failed: x == 1
at t/atf_test.c:12</failure>
            <system-out>checking x
</system-out>
            <system-err>x is 2
expected 1
</system-err>
        </testcase>
        <testcase name="t/atf_test:hang" classname="t/atf_test" time="300.000">
            <error message="timed out after 300s" type="timeout"/>
            <system-err>waiting
</system-err>
        </testcase>
        <testcase name="t/atf_test:pass" classname="t/atf_test" time="0.120"/>
        <testcase name="t/atf_test:skip" classname="t/atf_test" time="0.000">
            <skipped message="requires root" type="requirement"/>
        </testcase>
        <testcase name="t/atf_test:xfail" classname="t/atf_test" time="0.300">
            <skipped message="expected failure: bug #42: off by one" type="expected_failure"/>
        </testcase>
        <testcase name="t/plain_test:main" classname="t/plain_test" time="0.050"/>
        <testcase name="t/tap_test:main" classname="t/tap_test" time="0.700">
            <failure message="1 of 4 test points failed" type="failed"/>
            <system-out>ok 1 - parses
not ok 2 - writes # to disk
ok 3 # SKIP no disk
not ok 4 # TODO later
</system-out>
            <system-err>write: EIO
</system-err>
        </testcase>
        <testcase name="t/tap_test:main/1 - parses" classname="t/tap_test"/>
        <testcase name="t/tap_test:main/2 - writes # to disk" classname="t/tap_test">
            <failure message="not ok" type="failed">got: EIO
want: 0</failure>
        </testcase>
        <testcase name="t/tap_test:main/3" classname="t/tap_test">
            <skipped message="no disk" type="skipped"/>
        </testcase>
        <testcase name="t/tap_test:main/4" classname="t/tap_test">
            <skipped message="expected failure: later" type="expected_failure"/>
        </testcase>
    </testsuite>
    <testsuite name="debian-6.12" tests="6" skipped="1" errors="1" failures="0" time="1.460">
        <properties>
            <property name="kernel" value="debian-6.12"/>
            <property name="release" value="6.12.9-cloud-amd64"/>
            <property name="root" value="initramfs"/>
        </properties>
        <testcase name="t/atf_test:pass" classname="t/atf_test" time="0.110"/>
        <testcase name="t/atf_test:skip" classname="t/atf_test" time="0.000">
            <skipped message="requires root" type="requirement"/>
        </testcase>
        <testcase name="t/plain_test:main" classname="t/plain_test" time="0.900">
            <error message="the VM died" type="vm_died"/>
            <system-out>starting
</system-out>
        </testcase>
        <testcase name="t/tap_test:main" classname="t/tap_test" time="0.450"/>
        <testcase name="t/tap_test:main/1 - loads" classname="t/tap_test"/>
        <testcase name="t/tap_test:main/2 - runs" classname="t/tap_test"/>
        <system-err>VM failed (slot 1): guest kernel panicked
  Kernel panic - not syncing: Attempted to kill init!
  ---[ end Kernel panic ]---
</system-err>
    </testsuite>
</testsuites>
"#;

    fn run_into(events: &[RunEvent]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("junit.xml");
        let mut r = JunitReporter::new(&path);
        for e in events {
            assert!(!path.exists(), "written before the run finished");
            r.event(e).expect("reports");
        }
        let xml = std::fs::read_to_string(&path).expect("the report was written");
        assert!(!dir.path().join("junit.xml.tmp").exists());
        (dir, xml)
    }

    #[test]
    fn snapshot_run() {
        let (_dir, xml) = run_into(&fixture::run());
        assert_eq!(xml, RUN, "got:\n{xml}");
        let back = Report::deserialize_from_str(&xml).expect("reads back");
        assert_eq!(back.test_suites.len(), 2);
    }

    #[test]
    fn written_when_interrupted() {
        let (_dir, xml) = run_into(&fixture::interrupted());
        let back = Report::deserialize_from_str(&xml).expect("reads back");
        let suite = &back.test_suites[0];
        assert_eq!((suite.tests, suite.skipped), (2, 1));
        assert!(xml.contains(r#"<property name="interrupted" value="true"/>"#));
        assert!(xml.contains(r#"<skipped message="interrupted" type="interrupted"/>"#));
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let mut r = JunitReporter::new("/nonexistent/dir/junit.xml");
        let err = r
            .event(&RunEvent::RunFinished {
                counts: Default::default(),
                duration: fixture::ms(1),
                interrupted: false,
            })
            .expect_err("no such directory");
        assert!(matches!(err, ReportError::File { .. }));
    }
}
