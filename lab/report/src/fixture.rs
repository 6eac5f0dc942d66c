//! A fixed run's events for the reporters' snapshot tests: two kernels, atf, plain and tap
//! programs, every result type, a tap case with subresults, a failed VM, interleaved programs.

use std::time::Duration;

use lab_model::{
    CaseId, Cause, Counts, Interface, OutputStream, ResultType, RunEvent, SubResult, TestResult,
};

pub(crate) const K1: &str = "debian-6.1";
pub(crate) const K2: &str = "debian-6.12";
pub(crate) const ATF: &str = "t/atf_test";
pub(crate) const PLAIN: &str = "t/plain_test";
pub(crate) const TAP: &str = "t/tap_test";

pub(crate) fn id(kernel: &str, program: &str, case: &str) -> CaseId {
    CaseId {
        kernel: kernel.into(),
        program: program.into(),
        case: case.into(),
    }
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn started(kernel: &str, program: &str, case: &str, slot: usize) -> RunEvent {
    RunEvent::CaseStarted {
        id: id(kernel, program, case),
        slot,
    }
}

pub(crate) fn finished(
    kernel: &str,
    program: &str,
    case: &str,
    result: TestResult,
    millis: u64,
) -> RunEvent {
    let interface = match program {
        ATF => Interface::Atf,
        TAP => Interface::Tap,
        _ => Interface::Plain,
    };
    RunEvent::CaseFinished {
        id: id(kernel, program, case),
        interface,
        result,
        subresults: vec![],
        duration: ms(millis),
        stdout: String::new(),
        stderr: String::new(),
    }
}

fn with_output(mut e: RunEvent, out: &str, err: &str) -> RunEvent {
    if let RunEvent::CaseFinished { stdout, stderr, .. } = &mut e {
        *stdout = out.into();
        *stderr = err.into();
    }
    e
}

fn with_subresults(mut e: RunEvent, subs: Vec<SubResult>) -> RunEvent {
    if let RunEvent::CaseFinished { subresults, .. } = &mut e {
        *subresults = subs;
    }
    e
}

fn sub(name: &str, result: TestResult, diagnostics: &str) -> SubResult {
    SubResult {
        name: name.into(),
        result,
        diagnostics: diagnostics.into(),
    }
}

pub(crate) fn listed(kernel: &str, program: &str, cases: usize) -> RunEvent {
    RunEvent::CasesListed {
        kernel: kernel.into(),
        program: program.into(),
        cases,
    }
}

pub(crate) fn program_finished(kernel: &str, program: &str) -> RunEvent {
    RunEvent::ProgramFinished {
        kernel: kernel.into(),
        program: program.into(),
    }
}

/// The counts of `events`' finished cases.
pub(crate) fn counts(events: &[RunEvent]) -> Counts {
    let mut c = Counts::default();
    for e in events {
        if let RunEvent::CaseFinished { result, .. } = e {
            c.add(result.kind);
        }
    }
    c
}

/// The full run.
pub(crate) fn run() -> Vec<RunEvent> {
    let mut ev = vec![
        RunEvent::RunStarted {
            kernels: vec![K1.into(), K2.into()],
            programs: 3,
            jobs: 2,
            root: "initramfs".into(),
        },
        RunEvent::VmBooting {
            slot: 0,
            kernel: K1.into(),
        },
        RunEvent::VmBooting {
            slot: 1,
            kernel: K2.into(),
        },
        RunEvent::VmReady {
            slot: 0,
            kernel: K1.into(),
            release: "6.1.0-18-cloud-amd64".into(),
            boot_time: ms(2100),
        },
        listed(K1, ATF, 5),
        listed(K1, PLAIN, 1),
        listed(K1, TAP, 1),
        started(K1, ATF, "pass", 0),
        RunEvent::VmReady {
            slot: 1,
            kernel: K2.into(),
            release: "6.12.9-cloud-amd64".into(),
            boot_time: ms(3140),
        },
        listed(K2, ATF, 2),
        listed(K2, PLAIN, 1),
        listed(K2, TAP, 1),
        started(K2, PLAIN, "main", 1),
        RunEvent::CaseOutput {
            id: id(K2, PLAIN, "main"),
            stream: OutputStream::Stdout,
            data: b"starting\n".to_vec(),
        },
        finished(K1, ATF, "pass", TestResult::passed(), 120),
        finished(
            K1,
            ATF,
            "skip",
            TestResult::skipped("requires root").with_cause(Cause::Requirement),
            0,
        ),
        started(K1, ATF, "xfail", 0),
        RunEvent::VmFailed {
            slot: 1,
            kernel: K2.into(),
            reason: "guest kernel panicked".into(),
            console_tail: vec![
                "Kernel panic - not syncing: Attempted to kill init!".into(),
                "---[ end Kernel panic ]---".into(),
            ],
        },
        with_output(
            finished(
                K2,
                PLAIN,
                "main",
                TestResult::broken("the VM died").with_cause(Cause::VmDied),
                900,
            ),
            "starting\n",
            "",
        ),
        program_finished(K2, PLAIN),
        finished(
            K1,
            ATF,
            "xfail",
            TestResult::expected_failure("bug #42: off by one"),
            300,
        ),
        started(K1, ATF, "fail", 0),
        with_output(
            finished(
                K1,
                ATF,
                "fail",
                TestResult::failed("assertion failed: x == 1\nat t/atf_test.c:12"),
                1250,
            ),
            "checking x\n",
            "x is 2\nexpected 1\n",
        ),
        RunEvent::VmBooting {
            slot: 1,
            kernel: K2.into(),
        },
        started(K1, ATF, "hang", 0),
        RunEvent::VmReady {
            slot: 1,
            kernel: K2.into(),
            release: "6.12.9-cloud-amd64".into(),
            boot_time: ms(3000),
        },
        started(K2, TAP, "main", 1),
        with_output(
            finished(
                K1,
                ATF,
                "hang",
                TestResult::broken("timed out after 300s").with_cause(Cause::Timeout),
                300_000,
            ),
            "",
            "waiting\n",
        ),
        program_finished(K1, ATF),
        with_subresults(
            finished(K2, TAP, "main", TestResult::passed(), 450),
            vec![
                sub("1 - loads", TestResult::passed(), ""),
                sub("2 - runs", TestResult::passed(), ""),
            ],
        ),
        program_finished(K2, TAP),
        started(K1, PLAIN, "main", 0),
        started(K2, ATF, "pass", 1),
        finished(K1, PLAIN, "main", TestResult::passed(), 50),
        program_finished(K1, PLAIN),
        started(K1, TAP, "main", 0),
        finished(K2, ATF, "pass", TestResult::passed(), 110),
        finished(
            K2,
            ATF,
            "skip",
            TestResult::skipped("requires root").with_cause(Cause::Requirement),
            0,
        ),
        program_finished(K2, ATF),
        with_subresults(
            with_output(
                finished(
                    K1,
                    TAP,
                    "main",
                    TestResult::failed("1 of 4 test points failed"),
                    700,
                ),
                "ok 1 - parses\nnot ok 2 - writes # to disk\nok 3 # SKIP no disk\nnot ok 4 # TODO later\n",
                "write: EIO\n",
            ),
            vec![
                sub("1 - parses", TestResult::passed(), ""),
                sub(
                    "2 - writes # to disk",
                    TestResult::failed("not ok"),
                    "got: EIO\nwant: 0",
                ),
                sub("3", TestResult::skipped("no disk"), ""),
                sub("4", TestResult::expected_failure("later"), ""),
            ],
        ),
        program_finished(K1, TAP),
    ];
    let counts = counts(&ev);
    ev.push(RunEvent::RunFinished {
        counts,
        duration: ms(12_345),
        interrupted: false,
    });
    ev
}

/// A run interrupted after its first program: the rest never ran.
pub(crate) fn interrupted() -> Vec<RunEvent> {
    let mut ev = vec![
        RunEvent::RunStarted {
            kernels: vec![K1.into()],
            programs: 2,
            jobs: 1,
            root: "initramfs".into(),
        },
        listed(K1, PLAIN, 1),
        started(K1, PLAIN, "main", 0),
        finished(K1, PLAIN, "main", TestResult::passed(), 40),
        program_finished(K1, PLAIN),
        RunEvent::Interrupted { forced: false },
        finished(
            K1,
            TAP,
            "main",
            TestResult::new(ResultType::Skipped, Some("interrupted".into()))
                .with_cause(Cause::Interrupted),
            0,
        ),
        program_finished(K1, TAP),
    ];
    let counts = counts(&ev);
    ev.push(RunEvent::RunFinished {
        counts,
        duration: ms(1500),
        interrupted: true,
    });
    ev
}
