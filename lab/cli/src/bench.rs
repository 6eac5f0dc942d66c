//! `lab bench`: measurements written as Markdown, for BENCHMARKS.md.

use std::time::Duration;

use clap::Subcommand;
use lab_engine::cancel::Cancel;
use lab_engine::lab::Lab;
use lab_engine::vm::{Accel, BackendKind};
use lab_proto::{ExitStatus, Job};

use crate::ui::Ui;
use crate::VmArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Launch → guest agent ready and launch → VM gone, for each kernel and accelerator.
    Boot {
        /// Kernels, comma-separated.
        #[arg(short, long, value_delimiter = ',', default_value = lab_kernel::catalog::DEFAULT_KERNEL)]
        kernel: Vec<String>,
        /// Boots per kernel and accelerator (at least 10 for the published figures).
        #[arg(short = 'n', long, default_value_t = 10)]
        runs: usize,
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Agent round trips in one warm VM: `true` executed N times, and a put then a get of a
    /// file of the given size.
    Agent {
        /// The kernel.
        #[arg(short, long, default_value = lab_kernel::catalog::DEFAULT_KERNEL)]
        kernel: String,
        /// Exec round trips to time.
        #[arg(short = 'n', long, default_value_t = 1000)]
        execs: usize,
        /// Size of the put/get, in KiB.
        #[arg(long, default_value_t = 1024)]
        kib: usize,
        #[command(flatten)]
        vm: VmArgs,
    },
}

/// min / median / max of `xs` in seconds.
fn stats(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (xs[0], median, xs[n - 1])
}

pub fn run(ui: &Ui, cancel: &Cancel, cmd: BenchCommand) -> anyhow::Result<u8> {
    match cmd {
        BenchCommand::Boot { kernel, runs, vm } => boot(ui, cancel, &kernel, runs, &vm),
        BenchCommand::Agent {
            kernel,
            execs,
            kib,
            vm,
        } => agent(ui, cancel, &kernel, execs, kib, &vm),
    }
}

fn agent(
    ui: &Ui,
    cancel: &Cancel,
    kernel: &str,
    execs: usize,
    kib: usize,
    vm: &VmArgs,
) -> anyhow::Result<u8> {
    let mut lab: Lab = crate::open_lab(vm)?;
    let (prepared, accel) = crate::boot::prepare(ui, &mut lab, kernel, &[], vm)?;
    let opts = vm.boot_options(accel, Some(Duration::from_secs(60)));
    let mut machine = lab.boot(&prepared, &opts, cancel, &mut |_| {})?;
    let job = Job::new(["/bin/true"]);
    let mut rtt = Vec::with_capacity(execs);
    for i in 0..execs.max(1) {
        let started = std::time::Instant::now();
        let report = machine.exec(&job, Some(Duration::from_secs(60)), &mut |_| {})?;
        rtt.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            report.status == ExitStatus::Code(0),
            "exec {i}: {}",
            report.status
        );
    }
    let data: Vec<u8> = (0..kib * 1024)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    let started = std::time::Instant::now();
    machine.put("/tmp/bench.bin", 0o644, &data)?;
    let put_s = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let (back, _) = machine.get("/tmp/bench.bin")?;
    let get_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(back == data, "get returned other bytes than put");
    machine.shutdown();
    let (r0, r1, r2) = stats(&mut rtt);
    let mib = data.len() as f64 / (1024.0 * 1024.0);
    let target = Target {
        backend: opts.backend,
        accel,
    };
    println!("| kernel | vmm/accel | transport | exec `true` round trip, {} runs (min / median / max) | put {kib} KiB | get {kib} KiB |", rtt.len());
    println!("|---|---|---|---|---|---|");
    println!(
        "| {kernel} | {} | {} | {r0:.2} / {r1:.2} / {r2:.2} ms | {:.2} MiB/s | {:.2} MiB/s |",
        target.label(),
        match vm.channel {
            crate::ChannelArg::Vsock => "vsock (lab-vmm)",
            crate::ChannelArg::Serial => "serial (ttyS1)",
        },
        mib / put_s,
        mib / get_s
    );
    Ok(0)
}

/// What one bench row runs on: a VMM and how it executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    backend: BackendKind,
    accel: Accel,
}

impl Target {
    /// The row's label: `lab-vmm/kvm`, `qemu/kvm` or `qemu/tcg`.
    fn label(self) -> String {
        let vmm = match self.backend {
            BackendKind::Vmm => "lab-vmm",
            BackendKind::Qemu => "qemu",
        };
        format!("{vmm}/{}", self.accel.name())
    }
}

/// The targets `lab bench boot` measures for a kernel whose choice under `vm` was `chosen`:
/// `--backend kvm` the lab VMM alone; `--backend qemu` QEMU on the chosen accelerator (and TCG
/// beside KVM); `auto` the chosen one and, beside a KVM one, QEMU on TCG for comparison.
fn targets(vm: &VmArgs, chosen: Accel) -> Vec<Target> {
    let first = Target {
        backend: vm.backend_kind(chosen),
        accel: chosen,
    };
    let tcg = Target {
        backend: BackendKind::Qemu,
        accel: Accel::Tcg,
    };
    match vm.backend {
        crate::BackendArg::Kvm => vec![first],
        _ if first == tcg || vm.accel != crate::AccelArg::Auto => vec![first],
        _ => vec![first, tcg],
    }
}

/// Peak resident set of process `pid` in KiB (`VmHWM`), if it can be read.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One boot of a bench row: launch → ready, the median of a few exec round trips, the VM
/// process's peak RSS, launch → VM gone.
struct Sample {
    ready: f64,
    exec_ms: f64,
    rss_kib: Option<u64>,
    total: f64,
    attempts: u32,
}

/// Exec round trips per boot, for the row's exec column.
const EXECS_PER_BOOT: usize = 5;

fn sample(
    lab: &Lab,
    prepared: &lab_engine::lab::Prepared,
    opts: &lab_engine::session::BootOptions,
    cancel: &Cancel,
) -> anyhow::Result<Sample> {
    let job = Job::new(["/bin/true"]);
    let mut vm = lab.boot(prepared, opts, cancel, &mut |_| {})?;
    let ready = vm.boot_time().as_secs_f64();
    let mut rtt = Vec::with_capacity(EXECS_PER_BOOT);
    for _ in 0..EXECS_PER_BOOT {
        let started = std::time::Instant::now();
        let report = vm.exec(&job, Some(Duration::from_secs(60)), &mut |_| {})?;
        anyhow::ensure!(
            report.status == ExitStatus::Code(0),
            "/bin/true ended with {}",
            report.status
        );
        rtt.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let rss_kib = peak_rss_kib(vm.pid());
    let attempts = vm.attempts();
    let total = vm.shutdown().as_secs_f64();
    Ok(Sample {
        ready,
        exec_ms: stats(&mut rtt).1,
        rss_kib,
        total,
        attempts,
    })
}

fn boot(
    ui: &Ui,
    cancel: &Cancel,
    kernel: &[String],
    runs: usize,
    vm: &VmArgs,
) -> anyhow::Result<u8> {
    let runs = runs.max(1);
    let mut lab: Lab = crate::open_lab(vm)?;
    println!("| kernel | release | vmm/accel | runs | launch → agent ready (min / median / max) | launch → exit (min / median / max) | exec `true` round trip (median) | VMM peak RSS (median) | retries |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for name in kernel {
        let (prepared, chosen) = crate::boot::prepare(ui, &mut lab, name, &[], vm)?;
        for target in targets(vm, chosen) {
            let mut opts = vm.boot_options(target.accel, Some(Duration::from_secs(60)));
            opts.backend = target.backend;
            let (mut ready, mut total, mut exec, mut rss, mut retries) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0);
            for i in 0..runs {
                if cancel.is_cancelled() {
                    anyhow::bail!("cancelled");
                }
                let s = sample(&lab, &prepared, &opts, cancel)
                    .map_err(|e| e.context(format!("{name} on {}: run {i}", target.label())))?;
                retries += s.attempts - 1;
                ready.push(s.ready);
                total.push(s.total);
                exec.push(s.exec_ms);
                if let Some(kib) = s.rss_kib {
                    rss.push(kib as f64 / 1024.0);
                }
                ui.progress(&format!(
                    "{name} on {}: run {}/{runs}: ready {:.2}s, exit {:.2}s",
                    target.label(),
                    i + 1,
                    s.ready,
                    s.total
                ));
            }
            let (r0, r1, r2) = stats(&mut ready);
            let (t0, t1, t2) = stats(&mut total);
            let (_, e1, _) = stats(&mut exec);
            let rss = if rss.is_empty() {
                "n/a".to_string()
            } else {
                format!("{:.1} MiB", stats(&mut rss).1)
            };
            println!(
                "| {name} | {} | {} | {runs} | {r0:.2} / {r1:.2} / {r2:.2} s | {t0:.2} / {t1:.2} / {t2:.2} s | {e1:.1} ms | {rss} | {retries} |",
                prepared.kernel.info.release,
                target.label(),
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_args(extra: &[&str]) -> VmArgs {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            vm: VmArgs,
        }
        <Cli as clap::Parser>::try_parse_from(std::iter::once("bench").chain(extra.iter().copied()))
            .expect("parses")
            .vm
    }

    #[test]
    fn rows_are_labelled_by_the_vmm_that_ran_them() {
        let labels = |args: &[&str], chosen| -> Vec<String> {
            targets(&vm_args(args), chosen)
                .into_iter()
                .map(Target::label)
                .collect()
        };
        assert_eq!(labels(&["--backend", "kvm"], Accel::Kvm), ["lab-vmm/kvm"]);
        assert_eq!(
            labels(&["--backend", "qemu"], Accel::Kvm),
            ["qemu/kvm", "qemu/tcg"]
        );
        assert_eq!(
            labels(&["--backend", "qemu", "--accel", "kvm"], Accel::Kvm),
            ["qemu/kvm"]
        );
        assert_eq!(labels(&[], Accel::Kvm), ["lab-vmm/kvm", "qemu/tcg"]);
        assert_eq!(labels(&[], Accel::Tcg), ["qemu/tcg"]);
    }

    #[test]
    fn stats_take_the_middle() {
        assert_eq!(stats(&mut [3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(stats(&mut [4.0, 1.0, 2.0, 3.0]), (1.0, 2.5, 4.0));
        assert_eq!(stats(&mut [5.0]), (5.0, 5.0, 5.0));
    }
}
