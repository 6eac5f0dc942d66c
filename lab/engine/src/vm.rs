//! The seam between the engine and whatever runs VMs: a [`Backend`] launches a VM described by
//! a [`VmSpec`] and reports what happens in it as [`VmEvent`]s; the engine never needs to know
//! whether QEMU or the lab's own VMM is underneath.

use std::path::PathBuf;
use std::sync::mpsc::Sender;

use lab_proto::{GuestMessage, HostMessage};

use crate::console::ConsoleEvent;

/// How guest code is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's software emulation (works everywhere, slower).
    Tcg,
}

impl Accel {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// Which VMM runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// QEMU's microvm, with KVM or TCG.
    #[default]
    Qemu,
    /// The lab's own microVM on KVM (lab-vmm), one process per VM.
    Vmm,
}

impl BackendKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Vmm => "kvm",
        }
    }
}

/// Everything a backend needs to start one VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// A name for messages ("debian-6.1").
    pub name: String,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The whole kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// How to execute the guest.
    pub accel: Accel,
    /// Give the guest hardware virtualization (nested KVM) where the backend can.
    pub nested: bool,
    /// A private directory for this VM's sockets and logs; it outlives the VM.
    pub workdir: PathBuf,
    /// A host directory the guest sees, read-only, as the root of its test programs (a shared
    /// filesystem; guest-init mounts it with a tmpfs overlay and runs jobs in it).
    pub root: Option<PathBuf>,
}

/// What happens in a running VM, in the order the backend observed it. Console events and agent
/// events come from different streams, so their relative order is only as good as the host's
/// scheduling; the engine relies on neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// A notable console line.
    Console(ConsoleEvent),
    /// The console stream ended: the VM process is going away.
    ConsoleClosed,
    /// The guest agent's channel is connected (not yet that the agent is up).
    AgentConnected,
    /// A message from the guest agent.
    Agent(GuestMessage),
    /// The agent channel carried something that is not a valid message; the VM is broken.
    AgentError(String),
    /// The agent channel closed.
    AgentClosed,
    /// The VM process reported a fatal fault of its own (e.g. QEMU's "KVM internal error"):
    /// the guest is stopped and will not go on.
    Fault(String),
    /// The run was cancelled from outside (Ctrl-C).
    Cancelled,
}

/// Why a backend could not start a VM.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend's program is not installed.
    #[error("{program} not found; install it (Debian: apt-get install {package})")]
    NotInstalled {
        /// The program.
        program: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// Spawning or wiring up the VM process failed.
    #[error("failed to start the vm process")]
    Spawn(#[source] std::io::Error),
    /// The backend cannot give the VM what its spec asks for.
    #[error("{0}")]
    Unsupported(String),
    /// A helper the VM needs (the shared root's file server) did not start.
    #[error("{0}")]
    Helper(String),
}

/// A step applied to every VM process (and helper) a backend spawns, before it is spawned: the
/// CLI passes one that gives the child lab's parent-death signal (`lab_vmm::process`), so that
/// no VM outlives lab. The engine itself holds no `unsafe`.
pub type SpawnHook = fn(&mut std::process::Command);

/// A backend whose program is not installed here: every launch fails saying what to install.
/// Lets lab run with the backends it has (the lab VMM without QEMU) and name the missing one
/// only when a VM needs it.
#[derive(Debug, Clone)]
pub struct MissingBackend {
    name: &'static str,
    program: String,
    package: String,
}

impl MissingBackend {
    /// Backend `name`, whose `program` (from Debian's `package`) is missing.
    pub fn new(name: &'static str, program: impl Into<String>, package: impl Into<String>) -> Self {
        Self {
            name,
            program: program.into(),
            package: package.into(),
        }
    }
}

impl Backend for MissingBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn launch(
        &self,
        _spec: &VmSpec,
        _events: Sender<VmEvent>,
    ) -> Result<Box<dyn Machine>, BackendError> {
        Err(BackendError::NotInstalled {
            program: self.program.clone(),
            package: self.package.clone(),
        })
    }
}

/// Starts VMs.
pub trait Backend: Send + Sync {
    /// The backend's name ("qemu").
    fn name(&self) -> &'static str;

    /// Starts the VM. Events go to `events` until the VM is gone; the last console event is
    /// [`VmEvent::ConsoleClosed`].
    fn launch(
        &self,
        spec: &VmSpec,
        events: Sender<VmEvent>,
    ) -> Result<Box<dyn Machine>, BackendError>;
}

/// A launched VM.
pub trait Machine: Send {
    /// The last console lines.
    fn console_tail(&self) -> Vec<String>;

    /// What the VM process itself said (e.g. QEMU's stderr), trimmed.
    fn diagnostics(&self) -> String;

    /// The VM process's id.
    fn pid(&self) -> u32;

    /// Sends one message to the guest agent. Fails when the agent channel is not (yet, or no
    /// longer) connected.
    fn send(&mut self, msg: &HostMessage) -> std::io::Result<()>;

    /// Kills the VM process at once (idempotent).
    fn kill(&mut self);

    /// Waits for the VM process to end and returns its exit code (None: killed by a signal).
    fn wait(&mut self) -> Option<i32>;
}
