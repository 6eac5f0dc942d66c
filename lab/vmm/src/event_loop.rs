//! The running VM's event loop, on the VMM's main thread: one epoll over every fd that needs
//! the VMM while the guest runs, and the [`ExitReason`] the VM ends with.
//!
//! ```text
//!  vsock queue eventfds (KVM ioeventfds) ─► MmioVsock::handle_queue_event(i)
//!  vsock muxer's epoll fd ────────────────► MmioVsock::handle_backend_event(evset)
//!  i8042 reset eventfd ───────────────────► ExitReason::Reset
//!  ACPI sleep (S5) eventfd ───────────────► ExitReason::Shutdown
//!  vCPU exit eventfd + channel ───────────► the exit a vCPU thread ended with
//! ```
//!
//! The first event that ends the VM decides its reason; then every vCPU is stopped (kicked out
//! of KVM_RUN) and joined. A vsock device the guest breaks stops only that device: its error
//! is written to the diagnostics once, its fds leave the epoll, and the VM runs on.

use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::mmio::vsock::MmioVsock;
use crate::devices::virtio::vsock::VsockMuxer;
use crate::vstate::{SystemEvent, VcpuExit, VcpuHandle};

/// Why the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off: it entered ACPI S5 (Linux's `reboot(RB_POWER_OFF)`), KVM reported
    /// a shutdown system event, or a vCPU halted with no irqchip to wake it.
    Shutdown,
    /// The guest reset the machine: the i8042 reset line (`reboot=k`, the ACPI reset register,
    /// Linux's `panic=-1` reboot) or a KVM reset system event.
    Reset,
    /// KVM reported a guest crash system event. (No pvpanic device exists; a "Kernel panic"
    /// line on the console is for the caller to notice.)
    Panic,
    /// A vCPU triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// KVM could not go on with the guest (KVM_EXIT_INTERNAL_ERROR; suberror 1 is an
    /// emulation failure).
    InternalError {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
    },
    /// The hardware refused to enter the guest (KVM_EXIT_FAIL_ENTRY).
    FailEntry {
        /// The hardware entry failure reason.
        reason: u64,
    },
    /// A KVM exit the VMM does not handle (`KVM_EXIT_*` number, or a system event type).
    Unhandled {
        /// What KVM said.
        what: String,
    },
}

impl ExitReason {
    /// The reason a vCPU's exit gives the VM, or `None` for exits that end nothing (bus
    /// accesses, interruptions, a requested stop).
    pub fn of_vcpu_exit(exit: &VcpuExit) -> Option<Self> {
        Some(match exit {
            VcpuExit::Hlt | VcpuExit::SystemEvent(SystemEvent::Shutdown) => Self::Shutdown,
            VcpuExit::SystemEvent(SystemEvent::Reset) => Self::Reset,
            VcpuExit::SystemEvent(SystemEvent::Crash) => Self::Panic,
            VcpuExit::SystemEvent(SystemEvent::Other(kind)) => Self::Unhandled {
                what: format!("system event {kind}"),
            },
            VcpuExit::Shutdown => Self::TripleFault,
            VcpuExit::InternalError { suberror, .. } => Self::InternalError {
                suberror: *suberror,
            },
            VcpuExit::FailEntry { reason, .. } => Self::FailEntry { reason: *reason },
            VcpuExit::Unhandled { reason } => Self::Unhandled {
                what: format!("exit reason {reason}"),
            },
            VcpuExit::IoIn { .. }
            | VcpuExit::IoOut { .. }
            | VcpuExit::MmioRead { .. }
            | VcpuExit::MmioWrite { .. }
            | VcpuExit::Interrupted
            | VcpuExit::MsrRefused { .. }
            | VcpuExit::Stopped => return None,
        })
    }

    /// Whether the guest ended the VM itself, on purpose (power-off or reset).
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::Shutdown | Self::Reset)
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shutdown => write!(f, "shutdown (the guest powered off)"),
            Self::Reset => write!(f, "reset (the guest rebooted)"),
            Self::Panic => write!(f, "panic (the guest reported a crash)"),
            Self::TripleFault => write!(f, "triple fault"),
            Self::InternalError { suberror: 1 } => {
                write!(f, "KVM internal error (suberror 1: emulation failure)")
            }
            Self::InternalError { suberror } => {
                write!(f, "KVM internal error (suberror {suberror})")
            }
            Self::FailEntry { reason } => {
                write!(f, "KVM: entry failed (hardware reason {reason:#x})")
            }
            Self::Unhandled { what } => write!(f, "unhandled KVM exit ({what})"),
        }
    }
}

/// Why the event loop could not run.
#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    /// Creating the epoll or registering an fd failed.
    #[error("failed to set up the event loop")]
    Setup(#[source] io::Error),
    /// Waiting for events failed.
    #[error("failed to wait for events")]
    Wait(#[source] io::Error),
    /// A vCPU's run loop failed (an ioctl error, not a guest exit).
    #[error("vcpu {index} failed: {why}")]
    Vcpu {
        /// The vCPU.
        index: u8,
        /// Its error, as text (the error itself stays with its thread's result).
        why: String,
    },
}

/// What a vCPU thread reports when its loop ends: its index and the exit, or its error.
pub type VcpuReport = (u8, Result<VcpuExit, String>);

/// The vsock device's event sources.
pub struct VsockEvents {
    /// The device, shared with its transport on the MMIO bus.
    pub device: Arc<Mutex<MmioVsock<VsockMuxer>>>,
    /// One eventfd per queue, in queue order (the transport's, or clones of them).
    pub queue_events: Vec<EventFd>,
}

/// Where the loop's events come from.
pub struct EventSources {
    /// The i8042's reset line.
    pub reset: EventFd,
    /// The ACPI sleep registers' power-off.
    pub power_off: EventFd,
    /// Written by a vCPU thread after it sent its [`VcpuReport`].
    pub vcpu_exited: EventFd,
    /// The reports.
    pub vcpu_reports: Receiver<VcpuReport>,
    /// The vsock device, when the VM has one.
    pub vsock: Option<VsockEvents>,
}

impl std::fmt::Debug for VsockEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockEvents")
            .field("queue_events", &self.queue_events)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EventSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSources")
            .field("reset", &self.reset)
            .field("power_off", &self.power_off)
            .field("vcpu_exited", &self.vcpu_exited)
            .field("vsock", &self.vsock)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

const RESET: u64 = 0;
const POWER_OFF: u64 = 1;
const VCPU_EXITED: u64 = 2;
const VSOCK_BACKEND: u64 = 3;
/// Queue `i`'s token is `VSOCK_QUEUE + i`.
const VSOCK_QUEUE: u64 = 16;

/// The loop, set up and not yet running.
pub struct EventLoop {
    epoll: Epoll,
    sources: EventSources,
    diagnostics: Box<dyn Write + Send>,
}

impl EventLoop {
    /// Registers every source with a new epoll. `diagnostics` hears about device failures.
    pub fn new(
        sources: EventSources,
        diagnostics: Box<dyn Write + Send>,
    ) -> Result<Self, EventLoopError> {
        let epoll = Epoll::new().map_err(EventLoopError::Setup)?;
        let add = |fd: i32, token: u64| {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(EventLoopError::Setup)
        };
        add(sources.reset.as_raw_fd(), RESET)?;
        add(sources.power_off.as_raw_fd(), POWER_OFF)?;
        add(sources.vcpu_exited.as_raw_fd(), VCPU_EXITED)?;
        if let Some(vsock) = &sources.vsock {
            for (i, evt) in vsock.queue_events.iter().enumerate() {
                add(evt.as_raw_fd(), VSOCK_QUEUE + i as u64)?;
            }
            let backend = lock(&vsock.device).device().backend().as_raw_fd();
            add(backend, VSOCK_BACKEND)?;
        }
        Ok(Self {
            epoll,
            sources,
            diagnostics,
        })
    }

    /// Serves events until the VM ends, then stops and joins every vCPU.
    pub fn run(mut self, vcpus: Vec<VcpuHandle>) -> Result<ExitReason, EventLoopError> {
        let result = self.serve();
        for vcpu in &vcpus {
            vcpu.stop();
        }
        for vcpu in vcpus {
            // The thread's result already reached the loop through its report, or is the
            // `Stopped` just asked for.
            let _ = vcpu.join();
        }
        result
    }

    fn serve(&mut self) -> Result<ExitReason, EventLoopError> {
        let mut events = vec![EpollEvent::default(); 16];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(EventLoopError::Wait(e)),
            };
            let mut reason = None;
            for event in &events[..n] {
                let found = match event.data() {
                    RESET => {
                        let _ = self.sources.reset.read();
                        Some(ExitReason::Reset)
                    }
                    POWER_OFF => {
                        let _ = self.sources.power_off.read();
                        Some(ExitReason::Shutdown)
                    }
                    VCPU_EXITED => self.vcpu_exited()?,
                    VSOCK_BACKEND => {
                        self.vsock_event(None, event.event_set());
                        None
                    }
                    token => {
                        let queue = usize::try_from(token - VSOCK_QUEUE).unwrap_or(usize::MAX);
                        self.vsock_event(Some(queue), event.event_set());
                        None
                    }
                };
                if reason.is_none() {
                    reason = found;
                }
            }
            if let Some(reason) = reason {
                return Ok(reason);
            }
        }
    }

    /// The first vCPU report that ends the VM.
    fn vcpu_exited(&mut self) -> Result<Option<ExitReason>, EventLoopError> {
        let _ = self.sources.vcpu_exited.read();
        let mut reason = None;
        while let Ok((index, exit)) = self.sources.vcpu_reports.try_recv() {
            match exit {
                Ok(exit) => {
                    if reason.is_none() {
                        reason = ExitReason::of_vcpu_exit(&exit);
                    }
                }
                Err(why) => return Err(EventLoopError::Vcpu { index, why }),
            }
        }
        Ok(reason)
    }

    /// A vsock queue kick (`Some(queue)`) or backend readiness (`None`).
    fn vsock_event(&mut self, queue: Option<usize>, evset: EventSet) {
        let Some(vsock) = &self.sources.vsock else {
            return;
        };
        let result = {
            let mut device = lock(&vsock.device);
            match queue {
                Some(index) => {
                    if let Some(evt) = vsock.queue_events.get(index) {
                        let _ = evt.read();
                    }
                    device.handle_queue_event(index)
                }
                None => device.handle_backend_event(evset),
            }
        };
        if let Err(err) = result {
            // The device is broken for good (the transport shows NEEDS_RESET): stop listening
            // to it, so that a ready fd it no longer drains cannot spin the loop.
            let mut message = format!("lab-vmm: vsock device stopped: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            let _ = writeln!(self.diagnostics, "{message}");
            let _ = self.diagnostics.flush();
            if let Some(vsock) = self.sources.vsock.take() {
                let backend = lock(&vsock.device).device().backend().as_raw_fd();
                let fds = vsock.queue_events.iter().map(AsRawFd::as_raw_fd);
                for fd in fds.chain([backend]) {
                    let _ = self
                        .epoll
                        .ctl(ControlOperation::Delete, fd, EpollEvent::default());
                }
            }
        }
    }
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_exits_map_to_reasons() {
        // (vCPU exit, the VM's reason)
        let table: Vec<(VcpuExit, Option<ExitReason>)> = vec![
            (VcpuExit::Hlt, Some(ExitReason::Shutdown)),
            (
                VcpuExit::SystemEvent(SystemEvent::Shutdown),
                Some(ExitReason::Shutdown),
            ),
            (
                VcpuExit::SystemEvent(SystemEvent::Reset),
                Some(ExitReason::Reset),
            ),
            (
                VcpuExit::SystemEvent(SystemEvent::Crash),
                Some(ExitReason::Panic),
            ),
            (VcpuExit::Shutdown, Some(ExitReason::TripleFault)),
            (
                VcpuExit::InternalError {
                    suberror: 1,
                    data: vec![1, 2],
                },
                Some(ExitReason::InternalError { suberror: 1 }),
            ),
            (
                VcpuExit::FailEntry {
                    reason: 0x21,
                    cpu: 3,
                },
                Some(ExitReason::FailEntry { reason: 0x21 }),
            ),
            (
                VcpuExit::Unhandled { reason: 99 },
                Some(ExitReason::Unhandled {
                    what: "exit reason 99".into(),
                }),
            ),
            (VcpuExit::IoOut { port: 1, size: 1 }, None),
            (VcpuExit::Interrupted, None),
            (VcpuExit::Stopped, None),
        ];
        for (exit, want) in table {
            assert_eq!(ExitReason::of_vcpu_exit(&exit), want, "{exit:?}");
        }
    }

    #[test]
    fn reasons_read_as_the_engine_expects() {
        // The engine treats these words on the VMM's stderr as a fault of the VM.
        assert!(ExitReason::InternalError { suberror: 1 }
            .to_string()
            .contains("KVM internal error"));
        assert!(ExitReason::FailEntry { reason: 7 }
            .to_string()
            .contains("KVM: entry failed"));
        assert!(ExitReason::Shutdown.is_clean() && ExitReason::Reset.is_clean());
        for unclean in [
            ExitReason::Panic,
            ExitReason::TripleFault,
            ExitReason::InternalError { suberror: 3 },
        ] {
            assert!(!unclean.is_clean(), "{unclean}");
        }
    }
}
