//! `lab boot`: one kernel, one command, its output and its exit status.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lab_engine::cancel::Cancel;
use lab_engine::guest::ExtraFile;
use lab_engine::lab::{Lab, Prepared};
use lab_engine::session::{JobReport, SessionEvent};
use lab_proto::{Job, Stream};

use crate::ui::Ui;
use crate::{AccelArg, VmArgs};

#[derive(Debug, Args)]
pub struct BootArgs {
    /// The kernel: a catalog name (debian-6.1, debian-6.12, lab-6.1, lab-6.12), an installed
    /// kernel's id, or a bzImage/vmlinux path.
    #[arg(short, long, default_value = lab_kernel::catalog::DEFAULT_KERNEL)]
    kernel: String,
    /// A host file to carry into the guest: HOST (lands in /extra/NAME) or HOST:GUEST_PATH.
    #[arg(long = "initrd-extra", value_name = "FILE")]
    initrd_extra: Vec<String>,
    /// Seconds the command may run (0: no limit).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Environment for the command, KEY=VALUE.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory of the command in the guest.
    #[arg(long, default_value = "/")]
    cwd: String,
    #[command(flatten)]
    vm: VmArgs,
    /// The command to run in the guest.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Resolves, prepares and picks the accelerator: the steps every booting command shares.
pub fn prepare(
    ui: &Ui,
    lab: &mut Lab,
    kernel: &str,
    extras: &[ExtraFile],
    accel: AccelArg,
) -> anyhow::Result<(Prepared, lab_engine::vm::Accel)> {
    let progress = |line: &str| ui.progress(line);
    let prepared = lab.prepare(kernel, extras, &progress)?;
    let choice = lab.choose_accel(&prepared, accel.request(), &progress)?;
    ui.progress(&format!(
        "booting {} ({}) on {}/{}: {}",
        prepared.kernel.info.name,
        prepared.kernel.info.release,
        lab.backend().name(),
        choice.accel.name(),
        choice.reason
    ));
    Ok((prepared, choice.accel))
}

/// Runs `job` with output passed through to our stdout/stderr as it arrives. With `indent`,
/// stdout is indented by four spaces per line (a TAP 14 subtest).
pub fn run_streaming(
    ui: &Ui,
    lab: &Lab,
    prepared: &Prepared,
    job: &Job,
    opts: &lab_engine::session::BootOptions,
    cancel: &Cancel,
    indent: bool,
) -> anyhow::Result<JobReport> {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut at_line_start = true;
    let report = lab
        .run(prepared, job, opts, cancel, &mut |event| match event {
            SessionEvent::Output(Stream::Stdout, data) if indent => {
                let mut out = Vec::with_capacity(data.len() + 8);
                for &b in data {
                    if at_line_start {
                        out.extend_from_slice(b"    ");
                    }
                    out.push(b);
                    at_line_start = b == b'\n';
                }
                let _ = stdout.write_all(&out);
                let _ = stdout.flush();
            }
            SessionEvent::Output(Stream::Stdout, data) => {
                let _ = stdout.write_all(data);
                let _ = stdout.flush();
            }
            SessionEvent::Output(Stream::Stderr, data) => {
                let _ = stderr.write_all(data);
                let _ = stderr.flush();
            }
            SessionEvent::Ready {
                kernel,
                agent,
                after,
            } => {
                ui.progress(&format!(
                    "guest-init {agent} ready on {kernel} after {:.2}s",
                    after.as_secs_f64()
                ));
            }
            SessionEvent::Log(line) => {
                if ui.verbose() {
                    eprintln!("lab: guest: {line}");
                }
            }
            SessionEvent::Retrying { reason } => ui.progress(&format!("retrying boot: {reason}")),
            SessionEvent::Launched { attempt, pid } => {
                if ui.verbose() {
                    eprintln!("lab: vm process {pid} started (attempt {attempt})");
                }
            }
        })
        .with_context(|| format!("failed to run `{}`", job.argv.join(" ")))?;
    if indent && !at_line_start {
        println!();
    }
    Ok(report)
}

pub fn run(ui: &Ui, cancel: &Cancel, args: BootArgs) -> anyhow::Result<u8> {
    let extras = args
        .initrd_extra
        .iter()
        .map(|e| ExtraFile::parse(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut lab = crate::open_lab()?;
    let (prepared, accel) = prepare(ui, &mut lab, &args.kernel, &extras, args.vm.accel)?;
    let timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let opts = args.vm.boot_options(accel, timeout);
    let job = Job {
        argv: args.command.clone(),
        env: args.env.clone(),
        cwd: args.cwd.clone(),
        timeout_ms: 0,
    };
    let report = run_streaming(ui, &lab, &prepared, &job, &opts, cancel, false)?;
    ui.progress(&format!(
        "{} ended with {} (boot {:.2}s, total {:.2}s)",
        job.argv[0],
        report.status,
        report.boot_time.as_secs_f64(),
        report.total_time.as_secs_f64()
    ));
    Ok(u8::try_from(report.status.shell_code().clamp(0, 255)).unwrap_or(255))
}
