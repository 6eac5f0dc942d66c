//! `lab bench`: measurements written as Markdown, for BENCHMARKS.md.

use std::time::Duration;

use clap::Subcommand;
use lab_engine::cancel::Cancel;
use lab_engine::lab::Lab;
use lab_engine::vm::Accel;
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
    println!("| kernel | backend/accel | transport | exec `true` round trip, {} runs (min / median / max) | put {kib} KiB | get {kib} KiB |", rtt.len());
    println!("|---|---|---|---|---|---|");
    println!(
        "| {kernel} | {}/{} | {} | {r0:.2} / {r1:.2} / {r2:.2} ms | {:.2} MiB/s | {:.2} MiB/s |",
        lab.backend().name(),
        accel.name(),
        match vm.channel {
            crate::ChannelArg::Vsock => "vsock (lab-vmm)",
            crate::ChannelArg::Serial => "serial (ttyS1)",
        },
        mib / put_s,
        mib / get_s
    );
    Ok(0)
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
    println!("| kernel | release | backend/accel | runs | launch → agent ready (min / median / max) | launch → exit (min / median / max) | retries |");
    println!("|---|---|---|---|---|---|---|");
    for name in kernel {
        let (prepared, auto) = crate::boot::prepare(ui, &mut lab, name, &[], vm)?;
        // TCG always; KVM too when it boots this kernel.
        let mut accels = vec![Accel::Tcg];
        if auto == Accel::Kvm {
            accels.insert(0, Accel::Kvm);
        }
        for accel in accels {
            let opts = vm.boot_options(accel, Some(Duration::from_secs(60)));
            let job = Job::new(["/bin/true"]);
            let (mut ready, mut total, mut retries) = (Vec::new(), Vec::new(), 0);
            for i in 0..runs {
                if cancel.is_cancelled() {
                    anyhow::bail!("cancelled");
                }
                let report = lab.run(&prepared, &job, &opts, cancel, &mut |_| {})?;
                anyhow::ensure!(
                    report.status == ExitStatus::Code(0),
                    "run {i}: /bin/true ended with {}",
                    report.status
                );
                retries += report.attempts - 1;
                ready.push(report.boot_time.as_secs_f64());
                total.push(report.total_time.as_secs_f64());
                ui.progress(&format!(
                    "{name}/{}: run {}/{runs}: ready {:.2}s, exit {:.2}s",
                    accel.name(),
                    i + 1,
                    report.boot_time.as_secs_f64(),
                    report.total_time.as_secs_f64()
                ));
            }
            let (r0, r1, r2) = stats(&mut ready);
            let (t0, t1, t2) = stats(&mut total);
            println!(
                "| {name} | {} | {}/{} | {runs} | {r0:.2} / {r1:.2} / {r2:.2} s | {t0:.2} / {t1:.2} / {t2:.2} s | {retries} |",
                prepared.kernel.info.release,
                lab.backend().name(),
                accel.name()
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_middle() {
        assert_eq!(stats(&mut [3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(stats(&mut [4.0, 1.0, 2.0, 3.0]), (1.0, 2.5, 4.0));
        assert_eq!(stats(&mut [5.0]), (5.0, 5.0, 5.0));
    }
}
