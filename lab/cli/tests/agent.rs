//! End-to-end tests of the agent conversation through the library: one real VM serving many
//! requests must not leak host resources.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::time::Duration;

use lab_engine::cancel::Cancel;
use lab_engine::lab::Lab;
use lab_engine::session::BootOptions;
use lab_engine::vm::Accel;
use lab_proto::{ExitStatus, Job};

mod common;

use common::vsock_lab;

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Both tests count this process's fds and threads, which the other one's VM changes: under
/// plain `cargo test` (one process, tests on threads) they take turns; nextest runs each in a
/// process of its own anyway.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn a_hundred_exec_round_trips_leave_fds_and_threads_where_they_were() {
    let _alone = alone();
    let Some(mut lab) = vsock_lab() else {
        return;
    };
    let prepared = lab.prepare("debian-6.1", &[], &|_| {}).unwrap();
    let opts = BootOptions {
        accel: Accel::Tcg,
        ..BootOptions::default()
    };
    let mut vm = lab
        .boot(&prepared, &opts, &Cancel::new(), &mut |_| {})
        .unwrap();
    // One warm-up round, so lazily created host resources exist before counting.
    vm.exec(&Job::new(["/bin/true"]), None, &mut |_| {})
        .unwrap();
    let (fds, threads) = (count("/proc/self/fd"), count("/proc/self/task"));
    for i in 0..100 {
        let job = Job::new([
            "/bin/sh",
            "-c",
            &format!("echo {i}; echo {i} >&2; exit {}", i % 3),
        ]);
        let mut out = Vec::new();
        let report = vm
            .exec(&job, Some(Duration::from_secs(60)), &mut |e| {
                if let lab_engine::session::SessionEvent::Output(_, d) = e {
                    out.extend_from_slice(d);
                }
            })
            .unwrap();
        assert_eq!(report.status, ExitStatus::Code(i % 3));
        assert_eq!(out, format!("{i}\n{i}\n").into_bytes());
    }
    assert_eq!(count("/proc/self/fd"), fds, "host fds leaked");
    assert_eq!(count("/proc/self/task"), threads, "host threads leaked");
    // Namespaces this agent does not know are refused, not ignored.
    let mut job = Job::new(["/bin/true"]);
    job.isolation = Some(lab_proto::Isolation {
        namespaces: 1 << 31,
        hostname: String::new(),
    });
    let err = vm.exec(&job, None, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string()
            .contains("namespaces this agent does not know (bits 0x80000000)"),
        "{err}"
    );
    vm.shutdown();
}

#[test]
fn booting_and_shutting_down_vms_leaves_fds_and_threads_where_they_were() {
    let _alone = alone();
    let Some(mut lab) = vsock_lab() else {
        return;
    };
    let prepared = lab
        .prepare("lab-6.1", &[], &|_| {})
        .or_else(|_| lab.prepare("debian-6.1", &[], &|_| {}))
        .unwrap();
    let opts = BootOptions {
        accel: Accel::Tcg,
        ..BootOptions::default()
    };
    let cycle = |lab: &Lab| {
        let mut vm = lab
            .boot(&prepared, &opts, &Cancel::new(), &mut |_| {})
            .unwrap();
        vm.exec(&Job::new(["/bin/true"]), None, &mut |_| {})
            .unwrap();
        vm.shutdown();
    };
    cycle(&lab);
    let (fds, threads) = (count("/proc/self/fd"), count("/proc/self/task"));
    for _ in 0..3 {
        cycle(&lab);
    }
    assert_eq!(count("/proc/self/fd"), fds, "host fds leaked across VMs");
    assert_eq!(
        count("/proc/self/task"),
        threads,
        "host threads leaked across VMs"
    );
}
