//! `lab doctor`: what this host offers and what lab will do with it, with reasons.

use clap::Args;
use lab_engine::accel::{self, KvmAccess};
use lab_engine::qemu::{self, QemuBackend};
use lab_kernel::cache::Cache;
use lab_kernel::catalog;

use crate::ui::Ui;
use crate::AccelArg;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Kernels to check (default: every installed kernel). Fetched or built if needed.
    #[arg(short, long, value_delimiter = ',')]
    kernel: Vec<String>,
    /// Probe KVM again instead of trusting the cached verdicts.
    #[arg(long)]
    reprobe: bool,
}

fn row(key: &str, value: &str) {
    println!("{key:<14} {value}");
}

pub fn run(ui: &Ui, args: DoctorArgs) -> anyhow::Result<u8> {
    let mut problems = 0;
    row("host kernel", &accel::host_release());
    let access = KvmAccess::probe();
    row("/dev/kvm", &access.describe());
    if access != KvmAccess::Missing {
        row("kvm module", &accel::kvm_flavour());
    }
    let backend = QemuBackend::find();
    match &backend {
        Ok(b) => {
            row(
                "qemu",
                &format!(
                    "{} ({})",
                    b.binary().display(),
                    b.version().unwrap_or_else(|| "version unknown".into())
                ),
            );
            // The default agent channel needs QEMU's vhost-user-vsock device (QEMU 7.0+).
            if b.has_device("vhost-user-vsock-device") {
                row(
                    "vsock",
                    "vhost-user-vsock-device present: agents use lab's own virtio-vsock",
                );
            } else {
                problems += 1;
                row("vsock", "MISSING vhost-user-vsock-device in this QEMU: use --channel serial, or QEMU >= 7.0");
            }
        }
        Err(e) => {
            problems += 1;
            row("qemu", &format!("MISSING: {e}"));
        }
    }
    for (tool, package, why) in [
        (
            "setpriv",
            "util-linux",
            "VMs die with lab even if lab is killed",
        ),
        ("apt-get", "apt", "fetching Debian kernels and packages"),
        ("apt-cache", "apt", "resolving Debian packages"),
        ("dpkg-deb", "dpkg", "unpacking Debian packages"),
        ("make", "make", "building kernels"),
        ("gcc", "gcc", "building kernels"),
        ("flex", "flex", "building kernels"),
        ("bison", "bison", "building kernels"),
        ("bc", "bc", "building kernels"),
        ("pahole", "dwarves", "BTF in built kernels (optional)"),
    ] {
        match qemu::which(tool) {
            Some(p) => row(tool, &format!("{} ({why})", p.display())),
            None => row(tool, &format!("missing: apt-get install {package} ({why})")),
        }
    }
    let cache = Cache::from_env()?;
    let installed = catalog::installed(&cache)?;
    row(
        "cache",
        &format!(
            "{} ({} kernels installed)",
            cache.root().display(),
            installed.len()
        ),
    );
    if !root_free() {
        row("user", "not root: fine, lab never needs root on the host");
    }
    let backend = match backend {
        Ok(b) => b,
        Err(_) => {
            println!("\nlab cannot boot VMs until QEMU is installed.");
            return Ok(1);
        }
    };
    let names: Vec<String> = if args.kernel.is_empty() {
        installed.iter().map(|k| k.info.id.clone()).collect()
    } else {
        args.kernel.clone()
    };
    if names.is_empty() {
        println!("\nno kernels installed yet: `lab kernel fetch {}` (or any command with -k) fetches one.", catalog::DEFAULT_KERNEL);
        return Ok(if problems > 0 { 1 } else { 0 });
    }
    row("lab VMM", &vmm_state());
    let mut lab = lab_engine::lab::Lab::new(cache, Box::new(backend), crate::GUEST_INIT);
    lab.set_vmm(Box::new(crate::vmm_backend()?));
    println!();
    for name in names {
        let progress = |line: &str| ui.progress(line);
        let prepared = match lab.prepare(&name, &[], &progress) {
            Ok(p) => p,
            Err(e) => {
                problems += 1;
                println!("kernel {name}: cannot prepare: {e}");
                continue;
            }
        };
        if args.reprobe {
            lab.forget_verdicts(Some(&prepared.kernel.info.id))?;
        }
        let choice = lab.choose_accel(
            &prepared,
            AccelArg::Auto.request(),
            lab_engine::accel::ProbePolicy::default(),
            &progress,
        )?;
        // `auto` runs a kernel in the lab's own VMM exactly when its KVM probe (made in that
        // VMM) booted it.
        let backend = match choice.accel {
            lab_engine::vm::Accel::Kvm => "kvm (the lab's own VMM)",
            lab_engine::vm::Accel::Tcg => "qemu",
        };
        println!(
            "kernel {} ({}): backend {backend}, accel {} — {}",
            prepared.kernel.info.name,
            prepared.kernel.info.release,
            choice.accel.name(),
            choice.reason
        );
    }
    Ok(if problems > 0 { 1 } else { 0 })
}

/// What the lab's own VMM finds on this host: KVM's API and capabilities, and whether guest
/// kernels would run in KVM's instruction emulator (PVM), where stock Linux cannot boot.
fn vmm_state() -> String {
    match lab_vmm::vstate::kvm::Kvm::new() {
        Err(e) => format!("unusable: {e}"),
        Ok(_) if lab_vmm::vstate::kvm::Kvm::runs_kernel_in_emulator() => {
            "KVM API and capabilities ok; this KVM is PVM (guest kernel code runs in its \
             instruction emulator): stock Linux guests cannot boot, probe guests can"
                .to_string()
        }
        Ok(_) => "KVM API and capabilities ok".to_string(),
    }
}

/// Whether we run as root (only mentioned, never required).
fn root_free() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
}
