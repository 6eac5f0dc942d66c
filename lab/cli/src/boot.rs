//! `lab boot` (one kernel, one command, its output and exit status) and `lab run-in-vm` (several
//! commands in one booted VM): files go in with `--put` and come back with `--get`, over the
//! agent channel.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lab_engine::cancel::Cancel;
use lab_engine::guest::ExtraFile;
use lab_engine::lab::{Lab, Prepared};
use lab_engine::session::{BootOptions, ExecReport, SessionEvent, Vm};
use lab_proto::message::MAX_HOSTNAME;
use lab_proto::{Isolation, Job, Stream};

use crate::ui::{BadInput, Ui};
use crate::VmArgs;

/// What `lab boot` and `lab run-in-vm` share.
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// The kernel: a catalog name (debian-6.1, debian-6.12, lab-6.1, lab-6.12), an installed
    /// kernel's id, or a bzImage/vmlinux path.
    #[arg(short, long, default_value = lab_kernel::catalog::DEFAULT_KERNEL)]
    kernel: String,
    /// A host file baked into the initramfs: HOST (lands in /extra/NAME) or HOST:GUEST_PATH.
    /// Cached with the image; best for large, unchanging files.
    #[arg(long = "initrd-extra", value_name = "FILE")]
    initrd_extra: Vec<String>,
    /// A host file sent to the guest before the command runs: HOST (lands in /extra/NAME) or
    /// HOST:GUEST_PATH. Checked by SHA-256 in the guest.
    #[arg(long = "put", value_name = "FILE")]
    put: Vec<String>,
    /// A guest file fetched after the commands ran: GUEST_PATH (saved under its file name in
    /// the current directory) or GUEST_PATH:HOST.
    #[arg(long = "get", value_name = "FILE")]
    get: Vec<String>,
    /// Seconds each command may run (0: no limit); past it, its process group is killed.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Environment for the commands, KEY=VALUE.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory of the commands in the guest.
    #[arg(long, default_value = "/")]
    cwd: String,
    /// Run the commands as this user instead of root: UID or UID:GID (GID defaults to UID).
    #[arg(long, value_name = "UID[:GID]", value_parser = parse_user)]
    user: Option<(u32, u32)>,
    /// Run each command in a jail of its own named NAME (its hostname): fresh mount, pid, UTS
    /// and IPC namespaces, so it is PID 1 and sees only its own processes.
    #[arg(long, value_name = "NAME", hide_short_help = true, value_parser = parse_jail)]
    jail: Option<String>,
    /// With --jail: a network namespace of its own too, with only lo, up.
    #[arg(long, requires = "jail", hide_short_help = true)]
    vnet: bool,
    /// Create --cwd fresh (mode 0700, owned by --user) before each command and remove it
    /// afterwards.
    #[arg(long, hide_short_help = true)]
    workdir: bool,
    #[command(flatten)]
    vm: VmArgs,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// The command to run in the guest.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunInVmArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// A shell command to run (with /bin/sh -c), in order; repeat for more.
    #[arg(short = 'c', long = "command", value_name = "SHELL", required = true)]
    commands: Vec<String>,
    /// Run every command even after one fails.
    #[arg(long)]
    keep_going: bool,
}

/// Resolves, prepares and picks the accelerator: the steps every booting command shares.
pub fn prepare(
    ui: &Ui,
    lab: &mut Lab,
    kernel: &str,
    extras: &[ExtraFile],
    vm: &VmArgs,
) -> anyhow::Result<(Prepared, lab_engine::vm::Accel)> {
    let progress = |line: &str| ui.progress(line);
    let prepared = lab.prepare(kernel, extras, &progress)?;
    let choice = lab.choose_accel(&prepared, vm.accel_request(), vm.probe_policy(), &progress)?;
    let backend = vm.backend_kind(choice.accel);
    ui.progress(&format!(
        "booting {} ({}) on {}/{}: {}",
        prepared.kernel.info.name,
        prepared.kernel.info.release,
        backend.name(),
        choice.accel.name(),
        choice.reason
    ));
    Ok((prepared, choice.accel))
}

/// An observer printing job output live (stdout indented by four spaces per line when
/// `indent`, for TAP 14 subtests) and lab's own notes as progress.
pub struct Printer<'a> {
    ui: &'a Ui,
    indent: bool,
    at_line_start: bool,
}

impl<'a> Printer<'a> {
    /// A printer; `indent` for TAP subtests.
    pub fn new(ui: &'a Ui, indent: bool) -> Self {
        Self {
            ui,
            indent,
            at_line_start: true,
        }
    }

    /// Handles one event.
    pub fn event(&mut self, event: SessionEvent<'_>) {
        match event {
            SessionEvent::Output(Stream::Stdout, data) => {
                let mut out = std::io::stdout().lock();
                if self.indent {
                    let mut buf = Vec::with_capacity(data.len() + 8);
                    for &b in data {
                        if self.at_line_start {
                            buf.extend_from_slice(b"    ");
                        }
                        buf.push(b);
                        self.at_line_start = b == b'\n';
                    }
                    let _ = out.write_all(&buf);
                } else {
                    let _ = out.write_all(data);
                }
                let _ = out.flush();
            }
            SessionEvent::Output(Stream::Stderr, data) => {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(data);
                let _ = err.flush();
            }
            SessionEvent::Ready {
                kernel,
                agent,
                after,
            } => self.ui.progress(&format!(
                "guest-init {agent} ready on {kernel} after {:.2}s",
                after.as_secs_f64()
            )),
            SessionEvent::Log(line) => {
                if self.ui.verbose() {
                    eprintln!("lab: guest: {line}");
                }
            }
            SessionEvent::Retrying { reason } => {
                self.ui.progress(&format!("retrying boot: {reason}"))
            }
            SessionEvent::Launched { attempt, pid } => {
                if self.ui.verbose() {
                    eprintln!("lab: vm process {pid} started (attempt {attempt})");
                }
            }
        }
    }
}

/// A `--get` argument: the guest path and where it goes on the host.
fn parse_get(arg: &str) -> Result<(String, PathBuf), BadInput> {
    let (guest, host) = match arg.split_once(':') {
        Some((g, h)) => (g.to_string(), PathBuf::from(h)),
        None => {
            let name = std::path::Path::new(arg)
                .file_name()
                .ok_or_else(|| BadInput(format!("bad --get '{arg}': no file name")))?;
            (arg.to_string(), PathBuf::from(name))
        }
    };
    if !guest.starts_with('/') {
        return Err(BadInput(format!(
            "bad --get '{arg}': the guest path must be absolute"
        )));
    }
    Ok((guest, host))
}

/// Host files named by `--put`/`--initrd-extra`, checked before anything boots.
fn check_readable(flag: &str, files: &[ExtraFile]) -> Result<(), BadInput> {
    for f in files {
        if let Err(e) = std::fs::File::open(&f.host) {
            return Err(BadInput(format!("{flag} {}: {e}", f.host.display())));
        }
    }
    Ok(())
}

/// Boots per `args`, sends the puts, runs `jobs` (stopping at the first failure unless
/// `keep_going`), fetches the gets, and powers off. Returns each job's report.
fn session(
    ui: &Ui,
    cancel: &Cancel,
    args: &GuestArgs,
    jobs: &[Job],
    keep_going: bool,
) -> anyhow::Result<Vec<ExecReport>> {
    let extras = args
        .initrd_extra
        .iter()
        .map(|e| ExtraFile::parse(e))
        .collect::<Result<Vec<_>, _>>()?;
    let puts = args
        .put
        .iter()
        .map(|e| ExtraFile::parse(e))
        .collect::<Result<Vec<_>, _>>()?;
    let gets = args
        .get
        .iter()
        .map(|g| parse_get(g))
        .collect::<Result<Vec<_>, _>>()?;
    if args.workdir && (!args.cwd.starts_with('/') || args.cwd.trim_end_matches('/').is_empty()) {
        return Err(
            BadInput("--workdir needs --cwd DIR, an absolute path other than /".into()).into(),
        );
    }
    check_readable("--initrd-extra", &extras)?;
    check_readable("--put", &puts)?;
    let mut puts_data = Vec::new();
    for put in &puts {
        let data = std::fs::read(&put.host)
            .with_context(|| format!("cannot read {}", put.host.display()))?;
        let mode = std::fs::metadata(&put.host)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)?;
        puts_data.push((put, data, mode));
    }
    let mut lab = crate::open_lab(&args.vm)?;
    crate::setup_carry(ui, &mut lab, &args.vm, std::slice::from_ref(&args.kernel))?;
    let (prepared, accel) = prepare(ui, &mut lab, &args.kernel, &extras, &args.vm)?;
    let timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let opts: BootOptions = args.vm.boot_options(accel, timeout);
    let mut printer = Printer::new(ui, false);
    let mut vm: Vm = lab.boot(&prepared, &opts, cancel, &mut |e| printer.event(e))?;
    if let Some(dir) = vm.kept_workdir() {
        ui.progress(&format!("vm work directory kept at {}", dir.display()));
    }
    for (put, data, mode) in &puts_data {
        ui.progress(&format!(
            "put {} -> {} ({} bytes)",
            put.host.display(),
            put.guest,
            data.len()
        ));
        vm.put(&put.guest, *mode, data)?;
    }
    let mut reports = Vec::new();
    for job in jobs {
        let report = vm
            .exec(job, timeout, &mut |e| printer.event(e))
            .with_context(|| format!("failed to run `{}`", job.argv.join(" ")))?;
        ui.progress(&format!(
            "`{}` ended with {}",
            job.argv.join(" "),
            report.status
        ));
        let failed = report.status != lab_proto::ExitStatus::Code(0);
        reports.push(report);
        if failed && !keep_going {
            break;
        }
    }
    for (guest, host) in &gets {
        let (data, _mode) = vm.get(guest)?;
        std::fs::write(host, &data).with_context(|| format!("cannot write {}", host.display()))?;
        ui.progress(&format!(
            "get {guest} -> {} ({} bytes)",
            host.display(),
            data.len()
        ));
    }
    let total = vm.shutdown();
    ui.progress(&format!("vm ran {:.2}s", total.as_secs_f64()));
    Ok(reports)
}

fn job(args: &GuestArgs, argv: Vec<String>) -> Job {
    Job {
        argv,
        env: args.env.clone(),
        cwd: args.cwd.clone(),
        timeout_ms: 0,
        user: args.user,
        isolation: args
            .jail
            .as_ref()
            .map(|name| Isolation::jail(name.clone(), args.vnet)),
        workdir: args.workdir,
    }
}

/// A jail's name: its hostname, so at most 64 bytes, no NUL.
fn parse_jail(arg: &str) -> Result<String, String> {
    if arg.is_empty() || arg.len() > MAX_HOSTNAME || arg.contains('\0') {
        return Err(format!(
            "a jail name is 1 to {MAX_HOSTNAME} bytes without NUL (it is the jail's hostname)"
        ));
    }
    Ok(arg.to_string())
}

/// `UID` or `UID:GID`.
fn parse_user(arg: &str) -> Result<(u32, u32), String> {
    let number = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("'{s}' is not a numeric id"))
    };
    match arg.split_once(':') {
        Some((u, g)) => Ok((number(u)?, number(g)?)),
        None => number(arg).map(|u| (u, u)),
    }
}

fn exit_code(status: lab_proto::ExitStatus) -> u8 {
    u8::try_from(status.shell_code().clamp(0, 255)).unwrap_or(255)
}

pub fn run(ui: &Ui, cancel: &Cancel, args: BootArgs) -> anyhow::Result<u8> {
    let jobs = [job(&args.guest, args.command.clone())];
    let reports = session(ui, cancel, &args.guest, &jobs, false)?;
    Ok(reports.last().map(|r| exit_code(r.status)).unwrap_or(0))
}

pub fn run_in_vm(ui: &Ui, cancel: &Cancel, args: RunInVmArgs) -> anyhow::Result<u8> {
    let jobs: Vec<Job> = args
        .commands
        .iter()
        .map(|c| job(&args.guest, vec!["/bin/sh".into(), "-c".into(), c.clone()]))
        .collect();
    let reports = session(ui, cancel, &args.guest, &jobs, args.keep_going)?;
    let first_failure = reports
        .iter()
        .find(|r| r.status != lab_proto::ExitStatus::Code(0));
    Ok(first_failure.map(|r| exit_code(r.status)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_as_numbers() {
        assert_eq!(parse_user("65534"), Ok((65534, 65534)));
        assert_eq!(parse_user("1000:100"), Ok((1000, 100)));
        assert!(parse_user("nobody").is_err());
        assert!(parse_user("1:x").is_err());
    }

    #[test]
    fn jail_names_are_hostnames() {
        assert_eq!(parse_jail("j1"), Ok("j1".to_string()));
        assert!(parse_jail("").is_err());
        assert!(parse_jail(&"x".repeat(65)).is_err());
        assert!(parse_jail(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn gets_parse_with_and_without_a_host_path() {
        assert_eq!(
            parse_get("/tmp/out.txt").unwrap(),
            ("/tmp/out.txt".into(), "out.txt".into())
        );
        assert_eq!(
            parse_get("/a/b:here/c").unwrap(),
            ("/a/b".into(), "here/c".into())
        );
        assert!(parse_get("rel/x").is_err());
        assert!(parse_get("/").is_err());
    }
}
