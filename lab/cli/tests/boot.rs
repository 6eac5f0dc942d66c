//! End-to-end tests of `lab boot`: real kernels (Debian's cloud kernels and one built from
//! `kernels/lab.config`) booted in real VMs, with the guest agent running real commands.
//!
//! They need QEMU. Without it they skip and say so; with `LAB_E2E=1` (CI) a missing
//! prerequisite is a failure instead, so CI never passes by skipping.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

fn uname_on(kernel: &str) {
    let s = Scratch::new();
    let out = s.run(&["boot", "-k", kernel, "--", "uname", "-r"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).trim(), release_of(kernel));
}

#[test]
fn debian_6_1_runs_a_command_and_prints_its_release() {
    if can_boot() {
        uname_on("debian-6.1");
    }
}

#[test]
fn debian_6_12_runs_a_command_and_prints_its_release() {
    if can_boot() {
        uname_on("debian-6.12");
    }
}

#[test]
fn the_lab_config_kernel_runs_a_command_and_prints_its_release() {
    if can_boot() && installed("lab-6.1") {
        uname_on("lab-6.1");
    }
}

fn exit_codes_signals_streams_and_users_on(kernel: &str) {
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "-k",
        kernel,
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "to-out\n");
    assert!(stderr(&out).contains("to-err\n"), "{}", stderr(&out));
    let out = s.run(&["boot", "-k", kernel, "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));
    let out = s.run(&["boot", "-k", kernel, "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(128 + 15));
    let out = s.run(&["boot", "-k", kernel, "--", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("cannot run no-such-program"),
        "{}",
        stderr(&out)
    );
    // A script whose interpreter the guest lacks: named, not "No such file or directory".
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("py.sh");
    std::fs::write(&script, "#!/usr/bin/python9 -u\nprint(1)\n").unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    let put = format!("{}:/tmp/py.sh", script.display());
    let out = s.run(&["boot", "-k", kernel, "--put", &put, "--", "/tmp/py.sh"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("its interpreter /usr/bin/python9 (its #! line) is not in the guest"),
        "{}",
        stderr(&out)
    );
    let out = s.run(&[
        "boot",
        "-k",
        kernel,
        "--user",
        "65534",
        "--",
        "sh",
        "-c",
        "id -u; id -g; id -G",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "65534\n65534\n65534\n",
        "user, group, and no supplementary groups"
    );
}

#[test]
fn exit_codes_signals_streams_and_users_on_debian() {
    if can_boot() {
        exit_codes_signals_streams_and_users_on("debian-6.1");
    }
}

#[test]
fn exit_codes_signals_streams_and_users_on_the_lab_config_kernel() {
    if can_boot() && installed("lab-6.1") {
        exit_codes_signals_streams_and_users_on("lab-6.1");
    }
}

#[test]
fn extra_files_reach_the_guest_byte_for_byte() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let host = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host.path(), &data).unwrap();
    let spec = format!("{}:/data/blob", host.path().display());
    let out = s.run(&[
        "boot",
        "--initrd-extra",
        &spec,
        "--",
        "sha256sum",
        "/data/blob",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let want = Command::new("sha256sum").arg(host.path()).output().unwrap();
    let want = stdout(&want).split_whitespace().next().unwrap().to_string();
    assert!(
        stdout(&out).starts_with(&want),
        "{} vs {want}",
        stdout(&out)
    );
}

#[test]
fn a_guest_kernel_panic_is_a_vm_failure_with_the_console_tail() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&["boot", "--", "sh", "-c", "echo c > /proc/sysrq-trigger"]);
    assert_eq!(out.status.code(), Some(69));
    let err = stderr(&out);
    assert!(err.contains("kernel panic: sysrq triggered crash"), "{err}");
    assert!(err.contains("console tail:"), "{err}");
}

#[test]
fn a_hanging_command_hits_the_run_timeout() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let started = Instant::now();
    let out = s.run(&["boot", "--timeout", "5", "--", "sleep", "1000"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(
        stderr(&out).contains("job timed out after 5s"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn a_guest_that_never_gets_ready_hits_the_boot_timeout() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    // Boot busybox's shell instead of guest-init: it waits on the console forever.
    let out = s.run(&[
        "boot",
        "--boot-timeout",
        "8",
        "--boot-attempts",
        "1",
        "--append",
        "rdinit=/bin/sh",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(69));
    assert!(stderr(&out).contains("boot timed out"), "{}", stderr(&out));
}

#[test]
fn missing_garbage_and_unknown_kernels_are_named() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let garbage = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(garbage.path(), b"this is not a kernel\n".repeat(100)).unwrap();
    let garbage = garbage.path().display().to_string();
    for (kernel, want) in [
        (
            "/nonexistent/bzImage",
            "kernel file /nonexistent/bzImage not found".to_string(),
        ),
        (
            garbage.as_str(),
            format!("{garbage} is not a bootable kernel"),
        ),
        ("debian-2.4", "unknown kernel 'debian-2.4'".to_string()),
    ] {
        let out = s.run(&["boot", "-k", kernel, "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{kernel}");
        let err = stderr(&out);
        assert!(err.contains(&want), "{want:?} not in {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn an_interrupted_run_tears_its_vm_down() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let mut child = s.sleeping_vm();
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    s.assert_clean();
}

#[test]
fn a_killed_lab_takes_its_vm_along_and_the_next_run_sweeps_its_files() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let mut child = s.sleeping_vm();
    let needle = s.dir.path().to_string_lossy().into_owned();
    child.kill().unwrap(); // SIGKILL: lab runs no cleanup at all
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the vm outlived lab: {:?}",
            processes_mentioning(&needle)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = std::fs::read_dir(s.dir.path()).unwrap().count();
    assert!(left > 0, "SIGKILL leaves the scratch directories behind");
    // Any later run sweeps them (here one that fails fast on a missing kernel).
    s.run(&["boot", "-k", "/nonexistent/bzImage", "--", "true"]);
}

#[test]
fn the_smoke_suite_passes_on_the_default_kernel() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites/smoke");
    let out = s.run(&["test", &suite.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.starts_with("TAP version 14\n"), "{text}");
    assert!(
        text.contains("        ok 1 - PID 1 is guest-init"),
        "{text}"
    );
    assert!(!text.contains("not ok"), "{text}");
}

#[test]
fn doctor_explains_the_backend_choice() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&["doctor", "-k", "debian-6.1"]);
    let text = stdout(&out);
    assert!(text.contains("/dev/kvm"), "{text}");
    assert!(text.contains("vhost-user-vsock-device present"), "{text}");
    assert!(text.contains("backend qemu, accel "), "{text}");
}

fn put_get_round_trip_on(kernel: &str) {
    let s = Scratch::new();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("blob");
    std::fs::write(&src, &data).unwrap();
    let back = dir.path().join("back");
    let put = format!("{}:/root/in/blob", src.display());
    let get = format!("/root/out/blob:{}", back.display());
    let out = s.run(&[
        "run-in-vm",
        "-k",
        kernel,
        "--put",
        &put,
        "--get",
        &get,
        "-c",
        "mkdir -p /root/out && cp /root/in/blob /root/out/blob && sha256sum /root/in/blob",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read(&back).unwrap(),
        data,
        "byte-identical after put and get"
    );
    let want = Command::new("sha256sum").arg(&src).output().unwrap();
    let want = stdout(&want).split_whitespace().next().unwrap().to_string();
    assert!(
        stdout(&out).starts_with(&want),
        "the guest saw the same bytes"
    );
}

#[test]
fn files_put_into_the_debian_guest_come_back_byte_identical() {
    if can_boot() {
        put_get_round_trip_on("debian-6.1");
    }
}

#[test]
fn files_put_into_the_lab_config_guest_come_back_byte_identical() {
    if can_boot() && installed("lab-6.1") {
        put_get_round_trip_on("lab-6.1");
    }
}

#[test]
fn output_streams_live_and_in_order_on_debian() {
    if can_boot() {
        output_streams_live_on("debian-6.1");
    }
}

#[test]
fn output_streams_live_and_in_order_on_the_lab_config_kernel() {
    if can_boot() && installed("lab-6.1") {
        output_streams_live_on("lab-6.1");
    }
}

fn output_streams_live_on(kernel: &str) {
    use std::io::{BufRead, BufReader};
    let s = Scratch::new();
    let mut child = s
        .lab()
        .args([
            "boot",
            "-k",
            kernel,
            "--",
            "sh",
            "-c",
            "echo first; echo err-first >&2; sleep 4; echo second; echo err-second >&2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .map(|l| (Instant::now(), l))
            .collect::<Vec<_>>()
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let first_at = Instant::now();
    assert_eq!(first, "first");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first line arrived while the command still ran"
    );
    let second = lines.next().unwrap().unwrap();
    let gap = first_at.elapsed();
    assert_eq!(second, "second");
    assert!(
        gap >= Duration::from_secs(3),
        "lines arrived as printed, {gap:?} apart, not at the end"
    );
    assert!(child.wait().unwrap().success());
    let errs = errs.join().unwrap();
    let e1 = errs
        .iter()
        .find(|(_, l)| l == "err-first")
        .expect("err-first");
    let e2 = errs
        .iter()
        .find(|(_, l)| l == "err-second")
        .expect("err-second");
    assert!(
        e2.0.duration_since(e1.0) >= Duration::from_secs(3),
        "stderr streams live too"
    );
    s.assert_clean();
}

#[test]
fn one_booted_vm_runs_many_commands_in_order() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&[
        "run-in-vm",
        "-c",
        "echo one > /tmp/state",
        "-c",
        "cat /tmp/state; echo two",
        "-c",
        "exit 5",
        "-c",
        "echo never",
    ]);
    assert_eq!(out.status.code(), Some(5), "the first failing status");
    assert_eq!(
        stdout(&out),
        "one\ntwo\n",
        "state carries over; nothing runs after a failure"
    );
    let out = s.run(&[
        "run-in-vm",
        "--keep-going",
        "-c",
        "exit 4",
        "-c",
        "echo after",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(stdout(&out), "after\n");
}

#[test]
fn a_refused_put_or_get_is_bad_input_not_a_vm_failure() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let out = s.run(&["run-in-vm", "--get", "/no/such/file:/tmp/x", "-c", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("get /no/such/file failed in the guest"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn many_quick_commands_in_one_vm_all_report_their_status() {
    if !can_boot() {
        return;
    }
    // Processes that end at once race guest-init's reaper; every one must still be reported.
    let s = Scratch::new();
    let mut args: Vec<String> = vec!["run-in-vm".into(), "-k".into(), "debian-6.12".into()];
    for i in 0..40 {
        args.push("-c".into());
        args.push(if i % 2 == 0 {
            "true".into()
        } else {
            format!("echo {i}")
        });
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = s.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want: String = (0..40)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("{i}\n"))
        .collect();
    assert_eq!(stdout(&out), want);
}

#[test]
fn both_agent_channels_carry_commands_and_files() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in");
    std::fs::write(&src, b"over the channel\n").unwrap();
    for channel in ["vsock", "serial"] {
        let put = format!("{}:/tmp/in", src.display());
        let out = s.run(&[
            "boot",
            "--channel",
            channel,
            "--put",
            &put,
            "--",
            "sh",
            "-c",
            "cat /tmp/in; cat /proc/cmdline",
        ]);
        assert_eq!(out.status.code(), Some(0), "{channel}");
        let text = stdout(&out);
        assert!(text.starts_with("over the channel\n"), "{channel}: {text}");
        let want = if channel == "vsock" {
            "lab.channel=vsock:1024"
        } else {
            "lab.channel=/dev/ttyS1"
        };
        assert!(text.contains(want), "{channel}: {text}");
    }
}

#[test]
fn bad_file_arguments_are_usage_errors_before_anything_boots() {
    if !can_boot() {
        return;
    }
    let s = Scratch::new();
    for (args, want) in [
        (
            vec!["boot", "--put", "/nonexistent/file", "--", "true"],
            "--put /nonexistent/file: No such file",
        ),
        (
            vec!["boot", "--initrd-extra", "/nonexistent/x", "--", "true"],
            "--initrd-extra /nonexistent/x: No such file",
        ),
        (
            vec!["boot", "--get", "relative/path", "--", "true"],
            "the guest path must be absolute",
        ),
        (
            vec!["boot", "--initrd-extra", "x:rel", "--", "true"],
            "bad extra file 'x:rel'",
        ),
        (
            vec!["boot", "--user", "nobody", "--", "true"],
            "'nobody' is not a numeric id",
        ),
    ] {
        let out = s.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains(want),
            "{want:?} not in {}",
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("console tail"),
            "nothing booted: {}",
            stderr(&out)
        );
    }
}

/// A kernel given by path gets its modules from the tree `--modules` names (a
/// `lib/modules/RELEASE` directory): its vsock modules at boot, others on demand; without one,
/// the failure to open the agent channel says what to do.
#[test]
fn a_kernel_file_finds_its_modules_or_says_what_to_give() {
    if !can_boot() || !installed("debian-6.1") {
        return;
    }
    let out = std::process::Command::new(LAB)
        .args(["kernel", "list", "--json"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(r#""name":"debian-6.1""#))
        .unwrap()
        .to_string();
    let id = serde_json::from_str::<serde_json::Value>(&line).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let entry = lab_kernel::cache::Cache::from_env()
        .unwrap()
        .dir("kernels")
        .unwrap()
        .join(id);
    let image = entry.join("vmlinuz").display().to_string();
    let tree = entry.join("modules/tree").display().to_string();
    let s = Scratch::new();
    let out = s.run(&[
        "boot",
        "-k",
        &image,
        "--modules",
        &tree,
        "--",
        "sh",
        "-c",
        "modprobe overlay && grep -c '^overlay ' /proc/modules",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1");

    // Without --modules (and without the release's /lib/modules on this host).
    if Path::new("/lib/modules")
        .join(release_of("debian-6.1"))
        .exists()
    {
        return;
    }
    let out = s.run(&["boot", "--boot-attempts", "1", "-k", &image, "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("--modules DIR") && err.contains("--channel serial"),
        "{err}"
    );
}
