//! The `kvm` backend: the lab's own microVM (lab-vmm on KVM), one VMM process per VM. The
//! process is lab itself run with a hidden subcommand (`VmmProgram` names it); the guest
//! console is its stdout, its own diagnostics and the VM's exit reason its stderr, and the
//! guest agent reaches lab over the VMM's in-process virtio-vsock device through the same
//! hybrid Unix socket the QEMU backend's vsock helper serves.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use crate::process;
use crate::qemu::{AGENT_PORT, GUEST_CID};
use crate::vm::{Backend, BackendError, Machine, SpawnHook, VmEvent, VmSpec};

/// How to start the VMM for a VM: a program that gets `--kernel K --initrd I --cmdline C
/// --memory-mib M --cpus N --vsock-uds U --cid C` appended, runs the VM, and exits when it
/// ends, saying why on stderr.
#[derive(Debug, Clone)]
pub struct VmmProgram {
    /// The program.
    pub program: PathBuf,
    /// Its leading arguments.
    pub args: Vec<OsString>,
}

/// The `kvm` backend.
#[derive(Debug, Clone)]
pub struct KvmBackend {
    vmm: VmmProgram,
    spawn_hook: Option<SpawnHook>,
}

impl KvmBackend {
    /// A backend running `vmm` per VM.
    pub fn new(vmm: VmmProgram) -> Self {
        Self {
            vmm,
            spawn_hook: None,
        }
    }

    /// Applies `hook` to each VMM process before it is spawned (the CLI's parent-death signal,
    /// so that the VMM dies with lab).
    pub fn with_spawn_hook(mut self, hook: SpawnHook) -> Self {
        self.spawn_hook = Some(hook);
        self
    }

    /// The VMM's command line for `spec`.
    pub fn args(&self, spec: &VmSpec) -> Vec<OsString> {
        let mut a: Vec<OsString> = self.vmm.args.clone();
        let uds = spec.workdir.join("vsock.sock");
        for (flag, value) in [
            ("--kernel", spec.kernel.clone().into_os_string()),
            ("--initrd", spec.initrd.clone().into_os_string()),
            (
                "--cmdline",
                format!("{} lab.channel=vsock:{AGENT_PORT}", spec.cmdline).into(),
            ),
            ("--memory-mib", spec.memory_mib.to_string().into()),
            ("--cpus", spec.cpus.to_string().into()),
            ("--vsock-uds", uds.into_os_string()),
            ("--cid", GUEST_CID.to_string().into()),
        ] {
            a.push(flag.into());
            a.push(value);
        }
        if spec.nested {
            a.push("--nested".into());
        }
        a
    }
}

impl Backend for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn launch(
        &self,
        spec: &VmSpec,
        events: Sender<VmEvent>,
    ) -> Result<Box<dyn Machine>, BackendError> {
        if let Some(root) = &spec.root {
            return Err(BackendError::Unsupported(format!(
                "the lab VMM has no shared filesystem device yet: a guest root from the host \
                 ({}) needs --backend qemu",
                root.display()
            )));
        }
        let console_log =
            File::create(spec.workdir.join("console.log")).map_err(BackendError::Spawn)?;
        // The agent connects to host port AGENT_PORT: the hybrid socket's `<uds>_<port>`.
        let agent_socket = spec.workdir.join(format!("vsock.sock_{AGENT_PORT}"));
        let listener = UnixListener::bind(&agent_socket).map_err(BackendError::Spawn)?;
        let mut command = Command::new(&self.vmm.program);
        if let Some(hook) = self.spawn_hook {
            hook(&mut command);
        }
        // Its own process group: a terminal's Ctrl-C reaches lab, which tears the VM down in
        // order; the parent-death signal still ends it if lab dies.
        command
            .args(self.args(spec))
            .current_dir(&spec.workdir)
            .process_group(0);
        process::spawn(
            process::VmProcess {
                tag: spec.name.clone(),
                command,
                console_log,
                listener,
                agent_socket,
                helpers: Vec::new(),
                stderr: Arc::new(Mutex::new(String::new())),
                threads: Vec::new(),
            },
            events,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Accel;

    #[test]
    fn the_vmm_gets_the_whole_spec_and_the_hybrid_socket() {
        let backend = KvmBackend::new(VmmProgram {
            program: "/usr/bin/lab".into(),
            args: vec!["__vmm".into()],
        });
        let spec = VmSpec {
            name: "debian-6.1".into(),
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd".into(),
            cmdline: "console=ttyS0 quiet".into(),
            cpus: 2,
            memory_mib: 512,
            accel: Accel::Kvm,
            nested: false,
            workdir: "/tmp/vm".into(),
            root: None,
        };
        let args: Vec<String> = backend
            .args(&spec)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "__vmm",
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
                "3"
            ]
        );
        let nested = VmSpec {
            nested: true,
            ..spec
        };
        let args = backend.args(&nested);
        assert_eq!(
            args.last()
                .map(|a| a.to_string_lossy().into_owned())
                .as_deref(),
            Some("--nested")
        );
    }
}
