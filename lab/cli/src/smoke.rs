//! `lab test`: the main job. Until Kyuafile suites land, it runs the bundled smoke suite
//! (`suites/smoke/*.sh`, TAP producers) in a fresh VM each, on each kernel asked for, and
//! prints their TAP and a summary.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use lab_engine::cancel::Cancel;
use lab_engine::guest::ExtraFile;
use lab_proto::{ExitStatus, Job};

use crate::ui::Ui;
use crate::VmArgs;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Kernels to run on, comma-separated.
    #[arg(short, long, value_delimiter = ',', default_value = lab_kernel::catalog::DEFAULT_KERNEL)]
    kernel: Vec<String>,
    /// Seconds each test program may run.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    #[command(flatten)]
    vm: VmArgs,
    /// Suite directories or test programs (default: the bundled smoke suite).
    suites: Vec<PathBuf>,
}

/// The test programs under `paths`: executable-or-`.sh` files, sorted.
fn programs(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_file() {
            out.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path)
            .with_context(|| format!("cannot read suite {}", path.display()))?;
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "sh"))
            .collect();
        found.sort();
        if found.is_empty() {
            bail!("suite {} has no test programs (*.sh)", path.display());
        }
        out.extend(found);
    }
    Ok(out)
}

pub fn run(ui: &Ui, cancel: &Cancel, args: TestArgs) -> anyhow::Result<u8> {
    let suites = if args.suites.is_empty() {
        vec![crate::suites_dir().join("smoke")]
    } else {
        args.suites.clone()
    };
    let programs = programs(&suites)?;
    let mut lab = crate::open_lab(&args.vm)?;
    let (mut passed, mut failed) = (0u32, 0u32);
    println!("TAP version 14");
    println!("1..{}", programs.len() * args.kernel.len());
    let mut n = 0;
    for kernel in &args.kernel {
        let extras: Vec<ExtraFile> = programs
            .iter()
            .map(|p| ExtraFile {
                host: p.clone(),
                guest: format!(
                    "/suite/{}",
                    p.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
            })
            .collect();
        let prepared = crate::boot::prepare(ui, &mut lab, kernel, &extras, args.vm.accel);
        for (program, extra) in programs.iter().zip(&extras) {
            n += 1;
            let name = format!("{kernel}: {}", program.display());
            let (prepared, accel) = match &prepared {
                Ok(p) => p,
                Err(e) => {
                    failed += 1;
                    println!("not ok {n} - {name} # lab could not prepare the kernel: {e:#}");
                    continue;
                }
            };
            if cancel.is_cancelled() {
                failed += 1;
                println!("not ok {n} - {name} # cancelled");
                continue;
            }
            let opts = args
                .vm
                .boot_options(*accel, Some(Duration::from_secs(args.timeout)));
            let job = Job::new(["/bin/sh", extra.guest.as_str()]);
            println!("# Subtest: {name}");
            let mut printer = crate::boot::Printer::new(ui, true);
            let result = lab.run(prepared, &job, &opts, cancel, &mut |e| printer.event(e));
            printer.finish();
            match result.map_err(anyhow::Error::from) {
                Ok(report) if report.status == ExitStatus::Code(0) => {
                    passed += 1;
                    println!("ok {n} - {name}");
                }
                Ok(report) => {
                    failed += 1;
                    println!("not ok {n} - {name} # {}", report.status);
                }
                Err(e) => {
                    failed += 1;
                    println!("not ok {n} - {name} # broken: {e:#}");
                    ui.error(&e);
                }
            }
        }
    }
    println!("# {passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}
