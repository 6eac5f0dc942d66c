//! Scheduler tests against fake VMs whose "programs" are decided by name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lab_model::{Interface, Metadata, ResultType, TestProgram};

use super::*;

/// What the fake guest does for one exec.
enum Act {
    Exit(i32, &'static str),
    Hang,
    Die,
}

/// A fake VM: files written by puts and by the fake programs' result files.
struct FakeGuest {
    kernel: String,
    files: HashMap<String, Vec<u8>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl FakeGuest {
    fn act(&mut self, job: &Job) -> Act {
        let argv = &job.argv;
        if argv[0] == "/bin/sh" {
            return Act::Exit(0, "");
        }
        let prog = argv[0].rsplit('/').next().unwrap_or("").to_string();
        if argv.get(1).map(String::as_str) == Some("-l") {
            return match prog.as_str() {
                "unlistable" => Act::Exit(1, ""),
                _ => Act::Exit(
                    0,
                    "Content-Type: application/X-atf-tp; version=\"1\"\n\nident: pass\n\nident: fail\n\nident: excl\nis.exclusive: true\n\nident: hang\ntimeout: 1\n\nident: die\n",
                ),
            };
        }
        if prog.starts_with("atf") {
            let resfile = argv
                .iter()
                .position(|a| a == "-r")
                .and_then(|i| argv.get(i + 1))
                .cloned()
                .unwrap_or_default();
            let case = argv.last().cloned().unwrap_or_default();
            self.log
                .lock()
                .expect("log")
                .push(format!("{} {}:{}", self.kernel, prog, case));
            return match case.as_str() {
                "pass" | "excl" => {
                    self.files.insert(resfile, b"passed\n".to_vec());
                    Act::Exit(0, "")
                }
                "fail" => {
                    self.files.insert(resfile, b"failed: boom\n".to_vec());
                    Act::Exit(1, "")
                }
                "hang" => Act::Hang,
                _ => Act::Die,
            };
        }
        match prog.as_str() {
            "plain_ok" => Act::Exit(0, "hello\n"),
            "plain_bad" => Act::Exit(3, ""),
            "tap" => Act::Exit(0, "1..3\nok 1 - a\nnot ok 2 - b\nok 3 - c # SKIP no\n"),
            _ => Act::Exit(127, ""),
        }
    }
}

impl Guest for FakeGuest {
    fn release(&self) -> String {
        format!("{}-fake", self.kernel)
    }

    fn boot_time(&self) -> Duration {
        Duration::from_millis(5)
    }

    fn put(&mut self, path: &str, _mode: u32, data: &[u8]) -> Result<(), VmError> {
        self.files.insert(path.to_string(), data.to_vec());
        Ok(())
    }

    fn exec(
        &mut self,
        job: &Job,
        timeout: Duration,
        output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<ExecOutcome, VmError> {
        match self.act(job) {
            Act::Exit(code, out) => {
                output(Stream::Stdout, out.as_bytes());
                Ok(ExecOutcome {
                    status: ExitStatus::Code(code),
                    timed_out: false,
                    wall: Duration::from_millis(1),
                })
            }
            Act::Hang => Ok(ExecOutcome {
                status: ExitStatus::Signal(9),
                timed_out: true,
                wall: timeout,
            }),
            Act::Die => Err(VmError::Failed {
                reason: "kernel panic: sysrq".into(),
                cause: Cause::VmDied,
                console_tail: vec!["Kernel panic - not syncing: sysrq triggered crash".into()],
            }),
        }
    }

    fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, VmError> {
        Ok(self.files.get(path).cloned())
    }

    fn shutdown(self: Box<Self>) {}
}

#[derive(Default)]
struct FakeLauncher {
    boots: AtomicUsize,
    broken_kernel: Option<&'static str>,
    /// A slot whose boots fail, once another slot's VM is up.
    broken_slot: Option<usize>,
    booted: AtomicUsize,
    log: Arc<Mutex<Vec<String>>>,
}

impl Launcher for FakeLauncher {
    fn launch(&self, kernel: &str, slot: usize) -> Result<Box<dyn Guest>, VmError> {
        self.boots.fetch_add(1, Ordering::SeqCst);
        if Some(slot) == self.broken_slot {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.booted.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            return Err(VmError::Failed {
                reason: "agent did not come up".into(),
                cause: Cause::VmBoot,
                console_tail: vec![],
            });
        }
        if self.broken_slot.is_some() {
            // The other slots boot once the broken one is booting too, so that it fails
            // while their VM is up.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.boots.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        if Some(kernel) == self.broken_kernel {
            return Err(VmError::Failed {
                reason: "kernel panic at boot".into(),
                cause: Cause::VmBoot,
                console_tail: vec!["VFS: Unable to mount root fs".into()],
            });
        }
        self.booted.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FakeGuest {
            kernel: kernel.to_string(),
            files: HashMap::new(),
            log: self.log.clone(),
        }))
    }
}

fn suite(dir: &Path, names: &[(&str, Interface)]) -> Vec<TestProgram> {
    names
        .iter()
        .map(|(name, interface)| {
            std::fs::write(dir.join(name), "#!/bin/sh\n").expect("write program");
            TestProgram::new(*interface, dir, name, "lab", Metadata::default())
        })
        .collect()
}

fn opts(jobs: usize) -> Options {
    Options {
        jobs,
        config: crate::config::UserConfig::default(),
        live_output: false,
        vm_memory: 512 << 20,
        shared_root: None,
    }
}

fn run_plan(plan: &Plan, jobs: usize, launcher: &FakeLauncher) -> (Counts, Vec<RunEvent>) {
    let mut events = Vec::new();
    let counts = run(plan, &opts(jobs), launcher, &Cancel::new(), &mut |e| {
        events.push(e.clone())
    });
    (counts, events)
}

fn results(events: &[RunEvent]) -> BTreeMap<String, (ResultType, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            RunEvent::CaseFinished { id, result, .. } => Some((
                format!("{} {}", id.kernel, id.kyua_name()),
                (result.kind, result.reason.clone()),
            )),
            _ => None,
        })
        .collect()
}

/// The ordering contract of `lab_model::event`, checked on a whole run.
fn check_order(events: &[RunEvent], programs: usize, kernels: usize) {
    assert!(matches!(events.first(), Some(RunEvent::RunStarted { .. })));
    assert!(matches!(events.last(), Some(RunEvent::RunFinished { .. })));
    let mut started = std::collections::HashSet::new();
    let mut finished_cases = std::collections::HashSet::new();
    let mut finished_programs = std::collections::HashSet::new();
    for e in events {
        match e {
            RunEvent::CaseStarted { id, .. } => {
                assert!(!finished_programs.contains(&(id.kernel.clone(), id.program.clone())));
                assert!(started.insert(id.clone()), "{id} started twice");
            }
            RunEvent::CaseFinished { id, .. } => {
                assert!(
                    !finished_programs.contains(&(id.kernel.clone(), id.program.clone())),
                    "{id} finished after its program"
                );
                assert!(finished_cases.insert(id.clone()), "{id} finished twice");
            }
            RunEvent::ProgramFinished { kernel, program } => {
                assert!(
                    finished_programs.insert((kernel.clone(), program.clone())),
                    "{kernel} {program} finished twice"
                );
            }
            _ => {}
        }
    }
    for id in &started {
        assert!(finished_cases.contains(id), "{id} never finished");
    }
    assert_eq!(finished_programs.len(), programs * kernels);
}

#[test]
fn runs_every_interface_on_two_kernels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let programs = suite(
        dir.path(),
        &[
            ("atf_a", Interface::Atf),
            ("plain_ok", Interface::Plain),
            ("plain_bad", Interface::Plain),
            ("tap", Interface::Tap),
        ],
    );
    let plan = Plan {
        kernels: vec!["k1".into(), "k2".into()],
        programs,
        filters: vec![],
        unbuilt: vec![],
    };
    let launcher = FakeLauncher::default();
    let (counts, events) = run_plan(&plan, 2, &launcher);
    check_order(&events, 4, 2);
    let r = results(&events);
    for k in ["k1", "k2"] {
        assert_eq!(r[&format!("{k} atf_a:pass")].0, ResultType::Passed);
        assert_eq!(
            r[&format!("{k} atf_a:fail")],
            (ResultType::Failed, Some("boom".into()))
        );
        assert_eq!(r[&format!("{k} atf_a:hang")].0, ResultType::Broken);
        assert_eq!(r[&format!("{k} atf_a:die")].0, ResultType::Broken);
        assert_eq!(r[&format!("{k} plain_ok:main")].0, ResultType::Passed);
        assert_eq!(r[&format!("{k} plain_bad:main")].0, ResultType::Failed);
        assert_eq!(r[&format!("{k} tap:main")].0, ResultType::Failed);
    }
    // The tap case carries its points.
    let points = events.iter().find_map(|e| match e {
        RunEvent::CaseFinished { id, subresults, .. } if id.program == "tap" => {
            Some(subresults.clone())
        }
        _ => None,
    });
    let points = points.expect("tap case finished");
    assert_eq!(points.len(), 3);
    assert_eq!(points[2].result.kind, ResultType::Skipped);
    assert_eq!(counts.total(), 16);
    assert_eq!(counts.passed, 6);
    // A VM died under `die` on each kernel: each needed a new one afterwards, or the slot
    // ended; at least one boot per kernel and never one per case.
    let boots = launcher.boots.load(Ordering::SeqCst);
    assert!((2..=8).contains(&boots), "{boots} boots");
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::VmFailed { reason, .. } if reason.contains("panic"))));
}

#[test]
fn exclusive_cases_run_after_the_parallel_phase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let programs = suite(
        dir.path(),
        &[("atf_a", Interface::Atf), ("atf_b", Interface::Atf)],
    );
    let plan = Plan {
        kernels: vec!["k1".into()],
        programs,
        filters: vec!["atf_a".into(), "atf_b:pass".into(), "atf_b:excl".into()],
        unbuilt: vec![],
    };
    let launcher = FakeLauncher::default();
    let (_, events) = run_plan(&plan, 3, &launcher);
    check_order(&events, 2, 1);
    let log = launcher.log.lock().expect("log").clone();
    let first_excl = log
        .iter()
        .position(|l| l.ends_with(":excl"))
        .expect("excl ran");
    assert!(
        log[first_excl..].iter().all(|l| l.ends_with(":excl")),
        "{log:?}"
    );
    assert_eq!(log.iter().filter(|l| l.ends_with(":excl")).count(), 2);
    // The filter kept atf_b to two cases.
    assert_eq!(log.iter().filter(|l| l.contains("atf_b")).count(), 2);
}

#[test]
fn an_unbootable_kernel_breaks_its_cases_and_the_others_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let programs = suite(
        dir.path(),
        &[("plain_ok", Interface::Plain), ("atf_a", Interface::Atf)],
    );
    let plan = Plan {
        kernels: vec!["good".into(), "bad".into()],
        programs,
        filters: vec![],
        unbuilt: vec![],
    };
    let launcher = FakeLauncher {
        broken_kernel: Some("bad"),
        ..Default::default()
    };
    let (_, events) = run_plan(&plan, 2, &launcher);
    check_order(&events, 2, 2);
    let r = results(&events);
    assert_eq!(r["good plain_ok:main"].0, ResultType::Passed);
    let bad = &r["bad plain_ok:main"];
    assert_eq!(bad.0, ResultType::Broken);
    assert!(
        bad.1.as_deref().unwrap_or("").contains("VM boot failed"),
        "{bad:?}"
    );
    assert_eq!(r["bad atf_a:__test_cases_list__"].0, ResultType::Broken);
}

#[test]
fn a_boot_that_fails_beside_a_running_vm_of_its_kernel_loses_no_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names: Vec<(String, Interface)> = (0..8)
        .map(|i| (format!("plain_{i}"), Interface::Plain))
        .collect();
    let refs: Vec<(&str, Interface)> = names.iter().map(|(n, i)| (n.as_str(), *i)).collect();
    let plan = Plan {
        kernels: vec!["k".into()],
        programs: suite(dir.path(), &refs),
        filters: vec![],
        unbuilt: vec![],
    };
    let launcher = FakeLauncher {
        broken_slot: Some(1),
        ..Default::default()
    };
    let (_, events) = run_plan(&plan, 2, &launcher);
    check_order(&events, 8, 1);
    let r = results(&events);
    // Slot 1's boot failed while slot 0's VM of the kernel was up: the kernel is fine, its
    // unit went back to slot 0, and every case ran there (none is broken).
    assert_eq!(r.len(), 8, "{r:?}");
    assert!(
        r.values().all(|(kind, _)| *kind != ResultType::Broken),
        "{r:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::VmFailed { slot: 1, .. })));
}

#[test]
fn missing_and_unlistable_programs_are_broken_and_the_rest_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut programs = suite(
        dir.path(),
        &[
            ("unlistable", Interface::Atf),
            ("plain_ok", Interface::Plain),
        ],
    );
    programs.push(TestProgram::new(
        Interface::Atf,
        dir.path(),
        "gone",
        "lab",
        Metadata::default(),
    ));
    let plan = Plan {
        kernels: vec!["k".into()],
        programs,
        filters: vec![],
        unbuilt: vec![],
    };
    let launcher = FakeLauncher::default();
    let (counts, events) = run_plan(&plan, 1, &launcher);
    check_order(&events, 3, 1);
    let r = results(&events);
    assert_eq!(r["k unlistable:__test_cases_list__"].0, ResultType::Broken);
    let gone = &r["k gone:__test_cases_list__"];
    assert!(gone.1.as_deref().unwrap_or("").contains("does not exist"));
    assert_eq!(r["k plain_ok:main"].0, ResultType::Passed);
    assert_eq!(counts.broken, 2);
}

#[test]
fn host_requirements_skip_without_a_vm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut programs = suite(dir.path(), &[("plain_ok", Interface::Plain)]);
    for c in &mut programs[0].cases {
        c.metadata.set("required_configs", "needed").expect("valid");
    }
    let plan = Plan {
        kernels: vec!["k".into()],
        programs,
        filters: vec![],
        unbuilt: vec![],
    };
    let launcher = FakeLauncher::default();
    let (counts, events) = run_plan(&plan, 1, &launcher);
    assert_eq!(counts.skipped, 1);
    assert_eq!(launcher.boots.load(Ordering::SeqCst), 0);
    let r = results(&events);
    assert_eq!(
        r["k plain_ok:main"].1.as_deref(),
        Some("Required configuration property 'needed' not defined")
    );
}

#[test]
fn a_cancelled_run_reports_interrupted_and_finishes_every_program() {
    let dir = tempfile::tempdir().expect("tempdir");
    let programs = suite(dir.path(), &[("plain_ok", Interface::Plain)]);
    let plan = Plan {
        kernels: vec!["k".into()],
        programs,
        filters: vec![],
        unbuilt: vec![],
    };
    let cancel = Cancel::new();
    cancel.cancel();
    let mut events = Vec::new();
    let counts = run(
        &plan,
        &opts(2),
        &FakeLauncher::default(),
        &cancel,
        &mut |e| events.push(e.clone()),
    );
    assert_eq!(counts.total(), 0);
    assert!(events
        .iter()
        .any(|e| matches!(e, RunEvent::Interrupted { .. })));
    check_order(&events, 1, 1);
    assert!(matches!(
        events.last(),
        Some(RunEvent::RunFinished {
            interrupted: true,
            ..
        })
    ));
}

#[test]
fn a_program_that_did_not_build_is_broken_without_a_vm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let programs = suite(dir.path(), &[("x_test.c", Interface::Bpf)]);
    let plan = Plan {
        kernels: vec!["k".into()],
        programs,
        filters: vec![],
        unbuilt: vec![(
            0,
            "clang could not compile x_test.c:\nIn file included from x_test.c:1:\n\
             x_test.c:3:1: error: unknown type name 'nope'\n1 error generated.\n"
                .into(),
        )],
    };
    let launcher = FakeLauncher::default();
    let (counts, events) = run_plan(&plan, 1, &launcher);
    check_order(&events, 1, 1);
    assert_eq!(counts.broken, 1);
    assert_eq!(launcher.boots.load(Ordering::SeqCst), 0);
    let r = results(&events);
    let (kind, reason) = &r["k x_test.c:__build__"];
    assert_eq!(*kind, ResultType::Broken);
    // One line, the compiler's first error; all it said in stderr.
    assert_eq!(
        reason.as_deref(),
        Some("x_test.c:3:1: error: unknown type name 'nope'")
    );
    let stderr = events.iter().find_map(|e| match e {
        RunEvent::CaseFinished { stderr, .. } => Some(stderr.clone()),
        _ => None,
    });
    assert!(stderr.is_some_and(|s| s.contains("1 error generated")));
}

#[test]
fn filters_that_name_no_program_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let programs = suite(
        dir.path(),
        &[("atf_a", Interface::Atf), ("plain_ok", Interface::Plain)],
    );
    let filters: Vec<String> = ["atf_a:pass", "plain*", "plian_ok", "nope:case"]
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(
        unmatched_filters(&programs, &filters),
        ["plian_ok", "nope:case"]
    );
}
