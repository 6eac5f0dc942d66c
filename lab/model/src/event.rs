//! The events a test run emits, in order, for reporters to consume: the scheduler never
//! prints, reporters (TAP, human, JUnit, JSON) never schedule.
//!
//! # Ordering contract
//! - [`RunEvent::RunStarted`] comes first and [`RunEvent::RunFinished`] last, exactly once each.
//! - For a test case: [`RunEvent::CaseStarted`], then any [`RunEvent::CaseOutput`], then
//!   exactly one [`RunEvent::CaseFinished`]. A case that never ran (a requirement not met, a
//!   listing that failed, an interrupted run) gets a `CaseFinished` with no `CaseStarted`.
//! - Cases of different VMs interleave freely.
//! - [`RunEvent::CasesListed`] for a (kernel, program) comes at most once, before any
//!   `CaseStarted` or `CaseFinished` of that program on that kernel.
//! - [`RunEvent::ProgramFinished`] for a (kernel, program) follows the last `CaseFinished` of
//!   that program on that kernel, exactly once for every program the run was asked to run,
//!   so a reporter may hold a program's results until then.
//! - VM events (`VmBooting`, `VmReady`, `VmFailed`) and `Interrupted` may come at any point
//!   between the first and the last.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::program::Interface;
use crate::result::{ResultType, TestResult};

/// Names a test case of a run: the kernel it runs on, the program's path, the case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CaseId {
    /// The kernel's name as the user gave it (`debian-6.1`).
    pub kernel: String,
    /// The program's path relative to the suite root.
    pub program: String,
    /// The case's name.
    pub case: String,
}

impl CaseId {
    /// Kyua's name for the case: `program:case`.
    pub fn kyua_name(&self) -> String {
        format!("{}:{}", self.program, self.case)
    }
}

impl std::fmt::Display for CaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}:{}", self.kernel, self.program, self.case)
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A result inside a test case: a TAP test point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubResult {
    /// Its name (`3 - parses the header`).
    pub name: String,
    /// Its verdict.
    #[serde(flatten)]
    pub result: TestResult,
    /// Diagnostics attached to it (TAP `#` lines, YAML block), as text.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub diagnostics: String,
}

/// How many results of each type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
    /// Expected failures.
    pub expected_failure: usize,
    /// Broken.
    pub broken: usize,
}

impl Counts {
    /// Counts one more `kind`.
    pub fn add(&mut self, kind: ResultType) {
        match kind {
            ResultType::Passed => self.passed += 1,
            ResultType::Failed => self.failed += 1,
            ResultType::Skipped => self.skipped += 1,
            ResultType::ExpectedFailure => self.expected_failure += 1,
            ResultType::Broken => self.broken += 1,
        }
    }

    /// All results counted.
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.skipped + self.expected_failure + self.broken
    }

    /// Whether no result was failed or broken (Kyua's exit 0).
    pub fn all_good(&self) -> bool {
        self.failed == 0 && self.broken == 0
    }
}

fn initramfs() -> String {
    "initramfs".into()
}

/// Something that happened in a run. See the module docs for the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run begins.
    RunStarted {
        /// The kernels, in the order given.
        kernels: Vec<String>,
        /// Test programs per kernel.
        programs: usize,
        /// VM slots.
        jobs: usize,
        /// The root the guests' jobs ran in: `initramfs` (lab's own userland), or the host
        /// directory their shared root showed (`/` for `--root host`).
        #[serde(default = "initramfs")]
        root: String,
    },
    /// A VM slot boots a VM.
    VmBooting {
        /// The slot (0-based).
        slot: usize,
        /// The kernel.
        kernel: String,
    },
    /// A VM is ready for test cases.
    VmReady {
        /// The slot.
        slot: usize,
        /// The kernel.
        kernel: String,
        /// The guest's `uname -r`.
        release: String,
        /// Launch → agent ready.
        #[serde(with = "millis")]
        boot_time: Duration,
    },
    /// A VM failed: it did not boot, or died or was lost while running a case.
    VmFailed {
        /// The slot.
        slot: usize,
        /// The kernel.
        kernel: String,
        /// What happened.
        reason: String,
        /// The last console lines.
        console_tail: Vec<String>,
    },
    /// The test cases of a program on a kernel are known: at once for plain and tap programs
    /// (one), after listing for atf and bpf ones. Lets a reporter size its progress; a program
    /// whose listing failed may get none.
    CasesListed {
        /// The kernel.
        kernel: String,
        /// The program's path.
        program: String,
        /// How many test cases it has.
        cases: usize,
    },
    /// A test case starts running in a VM.
    CaseStarted {
        /// The case.
        id: CaseId,
        /// The slot running it.
        slot: usize,
    },
    /// Output of a running test case (only when live output was asked for).
    CaseOutput {
        /// The case.
        id: CaseId,
        /// Which stream.
        stream: OutputStream,
        /// The bytes, as they came.
        data: Vec<u8>,
    },
    /// A test case has its result.
    CaseFinished {
        /// The case.
        id: CaseId,
        /// The program's interface.
        interface: Interface,
        /// The verdict.
        #[serde(flatten)]
        result: TestResult,
        /// Results within the case (TAP test points), in order.
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        subresults: Vec<SubResult>,
        /// Wall time in the guest (zero when it did not run).
        #[serde(with = "millis")]
        duration: Duration,
        /// What it wrote to stdout (bounded; the tail is kept when long).
        stdout: String,
        /// What it wrote to stderr (bounded likewise).
        stderr: String,
    },
    /// Every case of a program on a kernel has its result.
    ProgramFinished {
        /// The kernel.
        kernel: String,
        /// The program's path.
        program: String,
    },
    /// The user interrupted the run: scheduling stops and VMs are torn down (the second
    /// interrupt kills at once).
    Interrupted {
        /// Whether this is the second interrupt.
        forced: bool,
    },
    /// The run is over.
    RunFinished {
        /// Results of every case.
        counts: Counts,
        /// Wall time of the run.
        #[serde(with = "millis")]
        duration: Duration,
        /// Whether it was interrupted.
        interrupted: bool,
    },
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let mut c = Counts::default();
        for k in [
            ResultType::Passed,
            ResultType::Skipped,
            ResultType::ExpectedFailure,
        ] {
            c.add(k);
        }
        assert!(c.all_good());
        c.add(ResultType::Broken);
        assert!(!c.all_good());
        assert_eq!(c.total(), 4);
    }

    #[test]
    fn case_finished_json_is_flat() {
        let e = RunEvent::CaseFinished {
            id: CaseId {
                kernel: "debian-6.1".into(),
                program: "t/a".into(),
                case: "one".into(),
            },
            interface: Interface::Atf,
            result: TestResult::failed("bad"),
            subresults: vec![],
            duration: Duration::from_millis(1500),
            stdout: String::new(),
            stderr: "oops\n".into(),
        };
        let json = serde_json::to_value(&e).expect("serializes");
        assert_eq!(json["event"], "case_finished");
        assert_eq!(json["result"], "failed");
        assert_eq!(json["reason"], "bad");
        assert_eq!(json["duration"], 1500);
        assert_eq!(json["id"]["case"], "one");
        let back: RunEvent = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, e);
    }
}
