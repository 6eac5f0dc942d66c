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
    /// Seconds the KVM probe gives each kernel to boot (nested hosts boot slowly).
    #[arg(long, env = "LAB_PROBE_TIMEOUT", default_value_t = lab_engine::accel::DEFAULT_PROBE_DEADLINE.as_secs())]
    probe_timeout: u64,
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
    row("lab VMM", &vmm_state());
    for line in nesting(&access, backend.is_ok()) {
        row("nested", &line);
    }
    for (tool, package, why) in [
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
    if !running_as_root() {
        row("user", "not root: fine, lab never needs root on the host");
    }
    let vmm_boots = access == KvmAccess::Usable && !accel::kvm_is_pvm();
    let backend: Box<dyn lab_engine::vm::Backend> = match backend {
        Ok(b) => Box::new(b),
        Err(e) if vmm_boots => {
            println!("\nwithout QEMU, kernels run only in the lab's own VMM (--backend kvm)");
            Box::new(lab_engine::vm::MissingBackend::new(
                "qemu",
                e.to_string(),
                "qemu-system-x86",
            ))
        }
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
    let mut lab = lab_engine::lab::Lab::new(cache, backend, crate::GUEST_INIT);
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
        let policy = lab_engine::accel::ProbePolicy {
            deadline: std::time::Duration::from_secs(args.probe_timeout.max(1)),
            ..Default::default()
        };
        let choice = lab.choose_accel(&prepared, AccelArg::Auto.request(), policy, &progress)?;
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

/// Whether lab runs as root (only mentioned, never required): the effective uid from
/// /proc/self/status, not `$USER`, which `sudo` and `su` leave as they found it.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(effective_uid)
        == Some(0)
}

/// The effective uid in the text of /proc/self/status (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Where guests can get hardware virtualization (`--nested`, `required_kvm`), per backend.
fn nesting(access: &KvmAccess, have_qemu: bool) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(if have_qemu {
        "qemu/tcg: yes (QEMU's max CPU emulates AMD SVM with nested paging; slow)".to_string()
    } else {
        "qemu/tcg: no QEMU".to_string()
    });
    if *access != KvmAccess::Usable {
        lines.push("qemu/kvm and the lab VMM: no usable /dev/kvm".to_string());
        return lines;
    }
    if accel::kvm_is_pvm() {
        lines.push(
            "qemu/kvm and the lab VMM: no (kvm_pvm offers no VMX/SVM, and runs no stock kernel)"
                .to_string(),
        );
        return lines;
    }
    lines.push(match accel::host_nested() {
        Ok(why) => format!("qemu/kvm: yes ({why})"),
        Err(why) => format!("qemu/kvm: no: {why}"),
    });
    lines.push(
        match lab_vmm::vstate::kvm::Kvm::new().map(|k| k.nested_virtualization()) {
            Ok(Ok(Some(what))) => format!("lab VMM: yes (KVM offers {what} to its guests)"),
            Ok(Ok(None)) => {
                "lab VMM: no: KVM offers no VMX/SVM to its guests (nested=0)".to_string()
            }
            Ok(Err(e)) | Err(e) => format!("lab VMM: unknown: {e}"),
        },
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_effective_uid() {
        let status = "Name:\tlab\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("nothing"), None);
    }
}
