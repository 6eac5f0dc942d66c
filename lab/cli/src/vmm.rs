//! The hidden `lab __vmm` command: one microVM in this process (lab-vmm's `builder::run`), the
//! way the engine's kvm backend starts one per VM.
//!
//! The guest's console is stdout. Stderr carries the VMM's own words, and always ends with ONE
//! line: `lab-vmm: exit: <reason>` once the guest has run (the engine scans it: "KVM internal
//! error" and "KVM: entry failed" mark a fault of the VM), or `lab-vmm: error: <what>` when the
//! VM could not be built or the VMM failed.
//!
//! Exit status: 0 when the guest powered off or reset, [`GUEST_FAILED`] when it ended any other
//! way (triple fault, KVM internal error, ...), 1 on a VMM error, and 159 when the seccomp
//! filter stopped the VMM (a bug in the filter or the VMM).

use std::path::PathBuf;

use lab_vmm::builder::{self, ExitReason, VmConfig, VsockConfig};

/// The exit status of a VM whose guest ended other than by powering off or resetting.
pub const GUEST_FAILED: u8 = 3;

/// `lab __vmm`'s arguments: exactly what the engine's kvm backend passes, plus a debug switch.
#[derive(Debug, Clone, clap::Args)]
pub struct VmmArgs {
    /// The kernel: a bzImage or an ELF vmlinux.
    #[arg(long)]
    kernel: PathBuf,
    /// An initramfs.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// The kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 512)]
    memory_mib: u64,
    /// vCPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    cpus: u8,
    /// The hybrid-vsock Unix socket (the vsock device's host side); no vsock device without it.
    #[arg(long, requires = "cid")]
    vsock_uds: Option<PathBuf>,
    /// The guest's vsock context id.
    #[arg(long)]
    cid: Option<u64>,
    /// Run without the seccomp filter (to debug the VMM).
    #[arg(long)]
    no_seccomp: bool,
    /// Give the guest hardware virtualization (VMX/SVM) as this host's KVM supports it.
    #[arg(long)]
    nested: bool,
}

impl VmmArgs {
    fn config(self) -> VmConfig {
        VmConfig {
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline: self.cmdline,
            memory_mib: self.memory_mib,
            vcpus: self.cpus,
            vsock: self
                .vsock_uds
                .zip(self.cid)
                .map(|(uds, cid)| VsockConfig { cid, uds }),
            console: Box::new(std::io::stdout()),
            diagnostics: Box::new(std::io::stderr()),
            seccomp: !self.no_seccomp,
            nested: self.nested,
        }
    }
}

/// The exit status for a VM that ended with `reason`.
pub fn exit_status(reason: &ExitReason) -> u8 {
    if reason.is_clean() {
        0
    } else {
        GUEST_FAILED
    }
}

/// Runs the VM; prints the closing line itself, so the result is always a status.
pub fn run(args: VmmArgs) -> anyhow::Result<u8> {
    match builder::run(args.config()) {
        Ok(reason) => {
            eprintln!("lab-vmm: exit: {reason}");
            Ok(exit_status(&reason))
        }
        Err(err) => {
            eprintln!("lab-vmm: error: {}", error_chain(&err));
            Ok(1)
        }
    }
}

/// An error and its causes, as one line.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: VmmArgs,
    }

    fn parse(args: &[&str]) -> Result<VmmArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("__vmm").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn takes_what_the_kvm_backend_passes() {
        let args = parse(&[
            "--kernel",
            "/k/vmlinuz",
            "--initrd",
            "/k/initrd",
            "--cmdline",
            "console=ttyS0 quiet lab.channel=vsock:1024",
            "--memory-mib",
            "512",
            "--cpus",
            "2",
            "--vsock-uds",
            "/tmp/vm/vsock.sock",
            "--cid",
            "3",
        ])
        .expect("parses");
        let config = args.config();
        assert_eq!(config.kernel, PathBuf::from("/k/vmlinuz"));
        assert_eq!(config.initrd, Some(PathBuf::from("/k/initrd")));
        assert_eq!(config.cmdline, "console=ttyS0 quiet lab.channel=vsock:1024");
        assert_eq!((config.memory_mib, config.vcpus), (512, 2));
        assert_eq!(
            config.vsock,
            Some(VsockConfig {
                cid: 3,
                uds: "/tmp/vm/vsock.sock".into()
            })
        );
        assert!(config.seccomp);
    }

    #[test]
    fn odd_arguments_are_refused() {
        // (arguments, accepted)
        let table: &[(&[&str], bool)] = &[
            (&["--kernel", "k"], true),
            (&["--kernel", "k", "--no-seccomp"], true),
            (&[], false),
            (&["--kernel", "k", "--cpus", "0"], false),
            (&["--kernel", "k", "--cpus", "255"], false),
            (&["--kernel", "k", "--vsock-uds", "u"], false),
            (&["--kernel", "k", "--memory-mib", "-1"], false),
        ];
        for (args, accepted) in table {
            assert_eq!(parse(args).is_ok(), *accepted, "{args:?}");
        }
        let config = parse(&["--kernel", "k", "--no-seccomp"])
            .expect("parses")
            .config();
        assert!(!config.seccomp && config.vsock.is_none());
    }

    #[test]
    fn only_power_off_and_reset_are_success() {
        // (reason, status)
        let table = [
            (ExitReason::Shutdown, 0),
            (ExitReason::Reset, 0),
            (ExitReason::Panic, GUEST_FAILED),
            (ExitReason::TripleFault, GUEST_FAILED),
            (ExitReason::InternalError { suberror: 1 }, GUEST_FAILED),
            (ExitReason::FailEntry { reason: 1 }, GUEST_FAILED),
        ];
        for (reason, status) in table {
            assert_eq!(exit_status(&reason), status, "{reason}");
        }
    }
}
