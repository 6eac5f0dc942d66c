//! guest-init: the lab's PID 1 inside every guest. It mounts the usual file systems, loads the
//! modules the initramfs carries, announces itself on the console, and then either runs the job
//! it was booted with or serves lab's requests (exec, put, get, kill) over the agent channel,
//! with output streamed as it happens, until lab asks it to power the VM off.
//!
//! A failure of guest-init itself is reported as such (a `failed` marker and a `Failure`
//! message), never as the job's exit status, so that lab can tell a broken VM from a failing
//! test.

mod agent;
mod bpf;
mod channel;
mod exec;
mod fetch;
mod jail;
mod modprobe;
mod modules;
mod mounts;
mod reaper;
mod root;
mod sys;

use std::io::Write;

use lab_proto::{GuestMessage, Job, Marker, PROTO_VERSION};

use channel::Sender;

/// A failed step of guest-init.
struct Failure {
    stage: &'static str,
    message: String,
}

fn fail(stage: &'static str, message: impl std::fmt::Display) -> Failure {
    Failure {
        stage,
        message: message.to_string(),
    }
}

/// Prints a line on the console (PID 1's standard output).
fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Multi-call: run as `/sbin/modprobe` (by the kernel's request_module, or by a user), the
    // guest's modprobe.
    let called = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "modprobe");
    if called {
        let rest: Vec<String> = args[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        std::process::exit(modprobe::main(&rest));
    }
    // Multi-call: `/init bpf ...` run as an ordinary process is the eBPF test runner.
    if std::process::id() != 1 && args.get(1).is_some_and(|a| a == "bpf") {
        std::process::exit(bpf::main(&args[2..]));
    }
    if std::process::id() != 1 {
        eprintln!(
            "guest-init: this is the lab's PID 1 for guests; it refuses to run as PID {}",
            std::process::id()
        );
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        console(
            &Marker::Failed {
                stage: "panic".into(),
                message: info.to_string().replace('\n', " "),
            }
            .render(),
        );
        power_off();
    }));
    let mut channel = None;
    if let Err(f) = run(&mut channel) {
        console(
            &Marker::Failed {
                stage: f.stage.into(),
                message: f.message.clone(),
            }
            .render(),
        );
        if let Some(out) = channel.as_ref() {
            let _ = out.send(&GuestMessage::Failure {
                stage: f.stage.into(),
                message: f.message,
            });
        }
    }
    if let Some(out) = &channel {
        out.drain();
    }
    power_off();
}

/// The hostname from /etc/hostname (the image's says `lab`), as an init system sets it: tests
/// that print `uname -n` see a name, not the kernel's `(none)`. A failure leaves the kernel's.
fn set_hostname() {
    let name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name = name.trim();
    let name = if name.is_empty() || name.len() > 64 {
        "lab"
    } else {
        name
    };
    let _ = sys::set_hostname(name);
}

fn run(channel: &mut Option<Sender>) -> Result<(), Failure> {
    let mount_notes = mounts::mount_all().map_err(|e| fail("mount", e))?;
    if !sys::fd_is_open(1) || !sys::fd_is_open(2) {
        sys::reopen_console().map_err(|e| fail("console", e))?;
    }
    set_hostname();
    let _ = sys::unlimit_core();
    let release = sys::kernel_release();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut module_notes = modules::load_all(&release);
    if param(&cmdline, "lab.nested").as_deref() == Some("1") {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        module_notes.extend(modules::load_nested(&release, &cpuinfo));
    }
    if let Some(spec) = param(&cmdline, "lab.root") {
        let tag = root::tag_of(&spec).map_err(|e| fail("root", e))?;
        root::enter(tag, &release).map_err(|e| fail("root", e))?;
        module_notes.push(format!("jobs run in the shared root (virtio-fs tag {tag})"));
    }
    let reaper = reaper::Reaper::start().map_err(|e| fail("reaper", e))?;
    let spec = param(&cmdline, "lab.channel").unwrap_or(lab_proto::DEFAULT_CHANNEL.to_string());
    let endpoint = channel::Endpoint::parse(&spec).map_err(|e| fail("channel", e))?;
    let (input, out) = channel::open(&endpoint).map_err(|e| {
        // No vsock in the kernel, and none of its modules in the image: say what helps.
        let hint = if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            " (the kernel has no vsock built in and lab had none of its modules: give lab \
             the kernel's module tree with --modules DIR, or use --channel serial)"
        } else {
            ""
        };
        fail("channel", format!("cannot open {spec}: {e}{hint}"))
    })?;
    let out = channel.insert(out);
    let agent_version = env!("CARGO_PKG_VERSION").to_string();
    out.send(&GuestMessage::Hello {
        proto: PROTO_VERSION,
        agent_version: agent_version.clone(),
        kernel_release: release.clone(),
        features: vec![
            "exec".into(),
            "put".into(),
            "get".into(),
            "kill".into(),
            "heartbeat".into(),
            "jail".into(),
            "workdir".into(),
            "modules".into(),
        ],
    })
    .map_err(|e| fail("channel", e))?;
    for note in mount_notes.iter().chain(&module_notes) {
        out.send(&GuestMessage::Log { line: note.clone() })
            .map_err(|e| fail("channel", e))?;
    }
    console(
        &Marker::Ready {
            agent: agent_version,
            kernel: release,
        }
        .render(),
    );

    // A job given at boot (lab's file in the initramfs) runs once as exec 0 and the VM ends;
    // otherwise the agent serves lab's requests.
    if let Some(job) = boot_job()? {
        let status = exec::run(0, &job, out, &reaper, &exec::Running::default())
            .map_err(|e| fail("job", e))?;
        console(&Marker::Exit(status).render());
        return Ok(());
    }
    // Modules the image lacks are fetched from lab for the guest's modprobe; without the
    // service, modprobe still loads what the image carries.
    let dir = format!("/lib/modules/{}", sys::kernel_release());
    let fetches = match fetch::Fetches::start(out, dir) {
        Ok(f) => Some(f),
        Err(e) => {
            let _ = out.send(&GuestMessage::Log {
                line: format!("modules on demand unavailable: {e}"),
            });
            None
        }
    };
    match agent::serve(input, out, &reaper, fetches.as_ref()) {
        agent::End::Shutdown => Ok(()),
        agent::End::ChannelClosed(why) => Err(fail("channel", format!("lab went away: {why}"))),
    }
}

/// The job given at boot: lab's own file in the initramfs ([`lab_proto::JOB_PATH`]); none means
/// serve requests. Arguments the kernel hands to init (command-line words it does not know,
/// such as `noxsave` from `--append`) are never a job: they are not lab's to interpret.
fn boot_job() -> Result<Option<Job>, Failure> {
    match std::fs::read(lab_proto::JOB_PATH) {
        Ok(bytes) => Job::decode(&bytes)
            .map(Some)
            .map_err(|e| fail("job", format!("{}: {e}", lab_proto::JOB_PATH))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(
            "job",
            format!("cannot read {}: {e}", lab_proto::JOB_PATH),
        )),
    }
}

/// The value of `key=value` on the kernel command line.
fn param(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

/// Syncs and powers off; falls back to a reset (QEMU runs with -no-reboot, so a reset ends it
/// too), and as a last resort idles so the host's timeout ends the VM.
fn power_off() -> ! {
    sys::sync();
    let err = sys::reboot(libc::RB_POWER_OFF);
    console(&format!("guest-init: power off failed ({err}); resetting"));
    let _ = sys::reboot(libc::RB_AUTOBOOT);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_stop_at_the_double_dash() {
        let cmdline = "console=ttyS0 lab.channel=/dev/ttyS2 quiet -- echo lab.channel=x\n";
        assert_eq!(param(cmdline, "lab.channel").as_deref(), Some("/dev/ttyS2"));
        assert_eq!(param(cmdline, "console").as_deref(), Some("ttyS0"));
        assert_eq!(param(cmdline, "lab.chan"), None);
        assert_eq!(param("-- lab.channel=x", "lab.channel"), None);
    }
}
