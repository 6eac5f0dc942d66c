//! End-to-end tests of jails and work directories (Kyua's jail execenv and per-test work
//! directory) in real VMs: `lab run-in-vm --jail`, and jobs mixing jailed and plain execs in
//! one VM through the library.
//!
//! They need QEMU. Without it they skip and say so; with `LAB_E2E=1` (CI) a missing
//! prerequisite is a failure instead, so CI never passes by skipping.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lab_engine::cancel::Cancel;
use lab_engine::session::{BootOptions, SessionError, SessionEvent, Vm};
use lab_engine::vm::Accel;
use lab_proto::{ExitStatus, Isolation, Job};

mod common;

use common::{installed, vsock_lab as lab, LAB};

/// Runs the lab binary with a private TMPDIR and prints what it said.
fn lab_cli(args: &[&str]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(LAB)
        .args(args)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "lab {} -> {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The value of `key=...` lines in `text`, in order.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn the_jail_is_its_own_little_machine_on(kernel: &str) {
    // Each -c runs in a jail of its own; the second one as nobody.
    let probe = "echo pid=$$; echo host=$(hostname); echo uid=$(id -u); \
                 for p in /proc/[0-9]*; do echo proc=${p#/proc/}:$(cat $p/comm); done";
    let out = lab_cli(&[
        "run-in-vm",
        "-k",
        kernel,
        "--jail",
        "jail-one",
        "-c",
        probe,
        "--user",
        "65534",
        "-c",
        probe,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(values(&text, "pid"), ["1", "1"], "PID 1 of its namespace");
    assert_eq!(values(&text, "host"), ["jail-one", "jail-one"]);
    assert_eq!(values(&text, "uid"), ["65534", "65534"], "--user holds");
    let procs = values(&text, "proc");
    assert!(
        procs.contains(&"1:sh"),
        "the jail's shell is /proc/1: {procs:?}"
    );
    assert!(
        procs.len() < 10 && procs.iter().all(|p| !p.contains("kthreadd")),
        "/proc shows only the jail's processes: {procs:?}"
    );
    // With vnet: a network of only lo, up.
    let out = lab_cli(&[
        "boot",
        "-k",
        kernel,
        "--jail",
        "jail-two",
        "--vnet",
        "--",
        "sh",
        "-c",
        "ip -o link; ifconfig | grep -c '^[a-z]'",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let links: Vec<&str> = text.lines().filter(|l| l.contains(": <")).collect();
    assert!(
        links
            .first()
            .is_some_and(|l| l.contains(": lo: <LOOPBACK,UP")),
        "lo is up: {text}"
    );
    // Besides lo, only the fallback tunnel devices a kernel with built-in tunnels gives every
    // namespace (sit0@NONE and the like), all down.
    for link in &links[1..] {
        assert!(
            link.contains("@NONE: <NOARP>") && !link.contains(",UP"),
            "only lo is up, and no real device is here: {text}"
        );
    }
    assert_eq!(
        text.lines().last(),
        Some("1"),
        "ifconfig shows lo alone, up"
    );
}

#[test]
fn a_jail_is_pid_1_with_its_own_proc_hostname_and_network_on_debian() {
    if lab().is_some() {
        the_jail_is_its_own_little_machine_on("debian-6.1");
    }
}

#[test]
fn a_jail_is_pid_1_with_its_own_proc_hostname_and_network_on_the_lab_config_kernel() {
    if lab().is_some() && installed("lab-6.1") {
        the_jail_is_its_own_little_machine_on("lab-6.1");
    }
}

/// Runs `script` with `/bin/sh -c` as `job` says; its stdout, stderr and status.
fn sh(vm: &mut Vm, script: &str, job: Job) -> Result<(String, String, ExitStatus), SessionError> {
    let job = Job {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..job
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let report = vm.exec(&job, Some(Duration::from_secs(60)), &mut |e| {
        if let SessionEvent::Output(stream, d) = e {
            match stream {
                lab_proto::Stream::Stdout => out.extend_from_slice(d),
                lab_proto::Stream::Stderr => err.extend_from_slice(d),
            }
        }
    })?;
    let (out, err) = (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    );
    eprintln!("$ {script}\n{out}{err}-> {}", report.status);
    Ok((out, err, report.status))
}

fn jailed(name: &str, vnet: bool) -> Job {
    Job {
        isolation: Some(Isolation::jail(name, vnet)),
        ..Job::default()
    }
}

fn networks_work_directories_and_kills_on(kernel: &str) {
    let Some(mut lab) = lab() else {
        return;
    };
    let prepared = lab.prepare(kernel, &[], &|_| {}).unwrap();
    let opts = BootOptions {
        accel: Accel::Tcg,
        ..BootOptions::default()
    };
    let mut vm = lab
        .boot(&prepared, &opts, &Cancel::new(), &mut |_| {})
        .unwrap();
    let ok = ExitStatus::Code(0);
    let net_ns = "ls -l /proc/self/ns/net | sed 's/.*-> //'";

    // The VM's own network namespace holds TCP port 7777 (a listener left running).
    let (root_ns, _, status) = sh(
        &mut vm,
        &format!("nc -l -p 7777 </dev/null >/dev/null 2>&1 & sleep 1; {net_ns}"),
        Job::default(),
    )
    .unwrap();
    assert_eq!(status, ok);
    let (out, _, _) = sh(&mut vm, "netstat -ltn | grep -c ':7777 '", Job::default()).unwrap();
    assert_eq!(out.trim(), "1", "the root namespace listens on 7777");

    // A vnet jail binds the same port at the same time, in a namespace of its own; so does the
    // next one.
    for name in ["vnet-a", "vnet-b"] {
        let script = format!(
            "nc -l -p 7777 </dev/null >/dev/null 2>/tmp/nc.err & sleep 1; \
             netstat -ltn | grep -c ':7777 '; cat /tmp/nc.err; {net_ns}"
        );
        let (out, _, status) = sh(&mut vm, &script, jailed(name, true)).unwrap();
        assert_eq!(status, ok);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("1"), "{name} bound 7777 too: {out}");
        let ns = lines.next().unwrap_or_default();
        assert!(ns.starts_with("net:["), "{out}");
        assert_ne!(ns, root_ns.trim(), "{name} has its own network namespace");
    }

    // Without vnet the jail shares the VM's network: the port is taken.
    let (out, err, status) = sh(
        &mut vm,
        &format!("{net_ns}; nc -l -p 7777"),
        jailed("no-vnet", false),
    )
    .unwrap();
    assert_eq!(out.trim(), root_ns.trim(), "the same network namespace");
    assert_eq!(status, ExitStatus::Code(1));
    assert!(err.contains("Address already in use"), "{err}");

    // A work directory: created fresh for the exec, owned by its user, mode 0755 (Kyua's), gone after.
    let workdir = Job {
        cwd: "/tmp/jobs/work-1".into(),
        workdir: true,
        user: Some((65534, 65534)),
        ..jailed("wd", false)
    };
    let (out, _, status) = sh(
        &mut vm,
        "pwd; stat -c '%a %u %g' .; ls -A | wc -l; touch mine && echo wrote",
        workdir.clone(),
    )
    .unwrap();
    assert_eq!(status, ok);
    assert_eq!(out, "/tmp/jobs/work-1\n755 65534 65534\n0\nwrote\n");
    let (out, _, _) = sh(
        &mut vm,
        "test -e /tmp/jobs/work-1 && echo there || echo gone",
        Job::default(),
    )
    .unwrap();
    assert_eq!(
        out, "gone\n",
        "the work directory is removed after the exec"
    );
    // Unjailed too; and a job that fails to start leaves none behind either.
    let (out, _, _) = sh(
        &mut vm,
        "pwd",
        Job {
            isolation: None,
            ..workdir.clone()
        },
    )
    .unwrap();
    assert_eq!(out, "/tmp/jobs/work-1\n");
    let missing = Job {
        argv: vec!["/no/such/program".into()],
        ..workdir.clone()
    };
    let report = vm.exec(&missing, None, &mut |_| {}).unwrap();
    assert_eq!(report.status, ExitStatus::Code(127));
    let (out, _, _) = sh(&mut vm, "ls -A /tmp/jobs", Job::default()).unwrap();
    assert_eq!(out, "", "no work directory left behind");
    // One that exists already is not "fresh": refused, and left alone.
    sh(&mut vm, "mkdir -p /tmp/jobs/taken", Job::default()).unwrap();
    let taken = Job {
        cwd: "/tmp/jobs/taken".into(),
        ..workdir.clone()
    };
    let err = sh(&mut vm, "true", taken).unwrap_err();
    assert!(err.to_string().contains("File exists"), "{err}");
    let relative = Job {
        cwd: "work".into(),
        ..workdir
    };
    let err = sh(&mut vm, "true", relative).unwrap_err();
    assert!(err.to_string().contains("absolute cwd"), "{err}");
    let (out, _, _) = sh(
        &mut vm,
        "test -d /tmp/jobs/taken && echo kept",
        Job::default(),
    )
    .unwrap();
    assert_eq!(out, "kept\n");

    // A hostname needs a UTS namespace: refused rather than renaming the VM.
    let renamer = Job {
        isolation: Some(Isolation {
            namespaces: lab_proto::message::NS_NET,
            hostname: "renamed".into(),
        }),
        ..Job::default()
    };
    let err = sh(&mut vm, "hostname", renamer).unwrap_err();
    assert!(err.to_string().contains("without a UTS namespace"), "{err}");

    // A timeout kills everything in the jail, daemons included.
    let hung = vm.exec(
        &Job {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "setsid sleep 1001 & sleep 1001 & sleep 1000".into(),
            ],
            ..jailed("hung", true)
        },
        Some(Duration::from_secs(3)),
        &mut |_| {},
    );
    assert!(
        matches!(hung, Err(SessionError::RunTimeout { .. })),
        "{hung:?}"
    );
    let (out, _, _) = sh(&mut vm, "ps | grep -c '[s]leep 100'", Job::default()).unwrap();
    assert_eq!(out.trim(), "0", "nothing of the jail survives");
    vm.shutdown();
}

#[test]
fn jails_networks_work_directories_and_kills_in_one_debian_vm() {
    networks_work_directories_and_kills_on("debian-6.1");
}

#[test]
fn jails_networks_work_directories_and_kills_in_one_lab_config_vm() {
    if installed("lab-6.1") {
        networks_work_directories_and_kills_on("lab-6.1");
    }
}
