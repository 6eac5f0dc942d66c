//! vCPUs: creation and boot configuration, the KVM_RUN exit loop on a thread of its own, and a
//! clean kick/stop from any other thread.
//!
//! Port and MMIO accesses go to a [`Bus`] the devices implement; every other exit ends the loop
//! and is handed back typed ([`VcpuExit`]).
//!
//! # Kicking a vCPU out of KVM_RUN
//!
//! As Firecracker does: each vCPU thread records its `kvm_run` page in a thread-local, and a
//! process-wide handler for the real-time signal [`kick_signal`] sets `immediate_exit` in it.
//! [`VcpuHandle::stop`] sets the stop flag, then signals the thread. Whatever the thread is doing
//! then, it stops: in the guest, KVM_RUN returns EINTR; about to enter, `immediate_exit` makes
//! KVM_RUN return EINTR at once; in the VMM, the flag is seen before the next KVM_RUN.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_run, CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::VcpuFd;
use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::vm::Vm;
use crate::arch::x86_64::cpuid::{self, CpuidConfig, CpuidError};
use crate::arch::x86_64::msr::{self, MsrError};
use crate::arch::x86_64::regs::{self, BootEntry, RegsError};

/// Errors creating, configuring or running a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("failed to create vcpu {0}")]
    Create(u8, #[source] kvm_ioctls::Error),
    /// CPUID could not be shaped.
    #[error("failed to shape cpuid")]
    Cpuid(#[source] CpuidError),
    /// KVM_SET_CPUID2 failed.
    #[error("failed to set cpuid")]
    SetCpuid(#[source] kvm_ioctls::Error),
    /// The boot MSRs could not be written.
    #[error("failed to set boot msrs")]
    Msrs(#[source] MsrError),
    /// The boot registers could not be loaded.
    #[error("failed to set boot registers")]
    Registers(#[source] RegsError),
    /// KVM_RUN failed (other than being interrupted).
    #[error("failed to run vcpu")]
    Run(#[source] kvm_ioctls::Error),
    /// The kick signal handler could not be installed.
    #[error("failed to install the vcpu kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    /// The vCPU thread could not be started.
    #[error("failed to spawn vcpu thread")]
    Spawn(#[source] std::io::Error),
    /// The vCPU thread panicked.
    #[error("vcpu thread panicked")]
    Panicked,
}

/// Where a vCPU's port and MMIO accesses go. Reads fill `data` (its length is the access
/// size); an access nobody claims should read as all ones and ignore writes. Implementations
/// are shared by every vCPU thread.
///
/// To end the VM from a device (an i8042 reset, say), have the device tell the VMM, which then
/// calls [`VcpuHandle::stop`] on every vCPU.
pub trait Bus: Send + Sync {
    /// An `in` from `port`.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// An `out` to `port`.
    fn pio_write(&self, port: u16, data: &[u8]);
    /// A load from guest-physical `addr` outside RAM.
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    /// A store to guest-physical `addr` outside RAM.
    fn mmio_write(&self, addr: u64, data: &[u8]);
}

/// KVM_SYSTEM_EVENT types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemEvent {
    /// The guest powered off.
    Shutdown,
    /// The guest asked for a reset.
    Reset,
    /// The guest reported a crash (pvpanic-style).
    Crash,
    /// Another event type.
    Other(u32),
}

/// Why KVM_RUN returned, after any bus access was carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuExit {
    /// An `in`, answered by [`Bus::pio_read`]. `size` is the bytes moved (for string I/O, all
    /// of them: the bus sees them as one access).
    IoIn {
        /// The port.
        port: u16,
        /// Bytes read.
        size: usize,
    },
    /// An `out`, delivered to [`Bus::pio_write`].
    IoOut {
        /// The port.
        port: u16,
        /// Bytes written.
        size: usize,
    },
    /// An MMIO load, answered by [`Bus::mmio_read`].
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Bytes read.
        size: usize,
    },
    /// An MMIO store, delivered to [`Bus::mmio_write`].
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// Bytes written.
        size: usize,
    },
    /// `hlt` (only seen without the in-kernel irqchip, which otherwise waits in the kernel).
    Hlt,
    /// KVM_EXIT_SHUTDOWN: a triple fault.
    Shutdown,
    /// KVM_EXIT_INTERNAL_ERROR with its suberror (1 = emulation failure, 3 = delivery event
    /// during an event delivery) and the data words KVM attached.
    InternalError {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
        /// `kvm_run.internal.data[..ndata]`.
        data: Vec<u64>,
    },
    /// KVM_EXIT_FAIL_ENTRY: the hardware refused the vCPU state.
    FailEntry {
        /// Hardware entry failure reason.
        reason: u64,
        /// The physical CPU it happened on.
        cpu: u32,
    },
    /// KVM_EXIT_SYSTEM_EVENT.
    SystemEvent(SystemEvent),
    /// KVM_RUN was interrupted by a signal or a kick; nothing happened in the guest.
    Interrupted,
    /// The guest accessed an MSR the VM's filter denies (see `Vm::refuse_amd_pmu_msrs`); the
    /// access was refused with #GP, as on hardware without that MSR, and the vCPU goes on.
    MsrRefused {
        /// The MSR.
        index: u32,
        /// Whether it was a write.
        write: bool,
    },
    /// The loop saw its stop flag (only from [`VcpuHandle::join`]).
    Stopped,
    /// Any other exit reason (`KVM_EXIT_*` number), which the VMM does not handle.
    Unhandled {
        /// `kvm_run.exit_reason`.
        reason: u32,
    },
}

impl VcpuExit {
    /// Whether this exit was a port or MMIO access the loop carries on after.
    pub fn is_bus_access(&self) -> bool {
        matches!(
            self,
            VcpuExit::IoIn { .. }
                | VcpuExit::IoOut { .. }
                | VcpuExit::MmioRead { .. }
                | VcpuExit::MmioWrite { .. }
        )
    }

    /// Whether the run loop carries on after this exit: a bus access, a refused MSR, or an
    /// interruption.
    pub fn continues(&self) -> bool {
        self.is_bus_access() || matches!(self, VcpuExit::Interrupted | VcpuExit::MsrRefused { .. })
    }
}

/// One vCPU, not yet running on its own thread.
#[derive(Debug)]
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    irqchip: bool,
}

impl Vcpu {
    /// Creates vCPU `index` (its APIC id) in `vm`. With an in-kernel irqchip, vCPU 0 is the
    /// bootstrap processor and the others wait for INIT/SIPI.
    pub fn new(vm: &Vm, index: u8) -> Result<Self, VcpuError> {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(|e| VcpuError::Create(index, e))?;
        Ok(Vcpu {
            index,
            fd,
            irqchip: vm.has_irqchip(),
        })
    }

    /// The vCPU's index (= APIC id).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The raw vCPU fd, for ioctls this type does not wrap.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Configures the vCPU for boot: CPUID shaped from `supported` (see
    /// [`crate::arch::x86_64::cpuid`]), the boot MSRs, registers for `entry`, and with an
    /// in-kernel irqchip the LINT pins.
    pub fn configure(
        &self,
        supported: &CpuId,
        cpuid: CpuidConfig,
        entry: &BootEntry,
    ) -> Result<(), VcpuError> {
        let shaped = cpuid::shape(supported, self.index, cpuid).map_err(VcpuError::Cpuid)?;
        self.fd.set_cpuid2(&shaped).map_err(VcpuError::SetCpuid)?;
        msr::write_boot_msrs(&self.fd).map_err(VcpuError::Msrs)?;
        regs::setup_registers(&self.fd, entry).map_err(VcpuError::Registers)?;
        if self.irqchip {
            regs::setup_lint(&self.fd).map_err(VcpuError::Registers)?;
        }
        Ok(())
    }

    /// Runs the vCPU until its next exit, carrying out a port or MMIO access on `bus`.
    pub fn run_once(&mut self, bus: &dyn Bus) -> Result<VcpuExit, VcpuError> {
        enum After {
            Done(VcpuExit),
            InternalError,
            Unhandled,
            Interrupted,
        }
        let after = match self.fd.run() {
            Ok(exit) => match exit {
                kvm_ioctls::VcpuExit::IoIn(port, data) => {
                    bus.pio_read(port, data);
                    After::Done(VcpuExit::IoIn {
                        port,
                        size: data.len(),
                    })
                }
                kvm_ioctls::VcpuExit::IoOut(port, data) => {
                    bus.pio_write(port, data);
                    After::Done(VcpuExit::IoOut {
                        port,
                        size: data.len(),
                    })
                }
                kvm_ioctls::VcpuExit::MmioRead(addr, data) => {
                    bus.mmio_read(addr, data);
                    After::Done(VcpuExit::MmioRead {
                        addr,
                        size: data.len(),
                    })
                }
                kvm_ioctls::VcpuExit::MmioWrite(addr, data) => {
                    bus.mmio_write(addr, data);
                    After::Done(VcpuExit::MmioWrite {
                        addr,
                        size: data.len(),
                    })
                }
                kvm_ioctls::VcpuExit::Hlt => After::Done(VcpuExit::Hlt),
                kvm_ioctls::VcpuExit::Shutdown => After::Done(VcpuExit::Shutdown),
                kvm_ioctls::VcpuExit::FailEntry(reason, cpu) => {
                    After::Done(VcpuExit::FailEntry { reason, cpu })
                }
                kvm_ioctls::VcpuExit::SystemEvent(kind, _) => {
                    After::Done(VcpuExit::SystemEvent(system_event(kind)))
                }
                kvm_ioctls::VcpuExit::X86Rdmsr(exit) => {
                    // Only filtered MSRs exit here: refuse them as absent hardware would.
                    *exit.error = 1;
                    After::Done(VcpuExit::MsrRefused {
                        index: exit.index,
                        write: false,
                    })
                }
                kvm_ioctls::VcpuExit::X86Wrmsr(exit) => {
                    *exit.error = 1;
                    After::Done(VcpuExit::MsrRefused {
                        index: exit.index,
                        write: true,
                    })
                }
                kvm_ioctls::VcpuExit::InternalError => After::InternalError,
                kvm_ioctls::VcpuExit::Intr => After::Interrupted,
                _ => After::Unhandled,
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => After::Interrupted,
            Err(e) => return Err(VcpuError::Run(e)),
        };
        Ok(match after {
            After::Done(exit) => exit,
            After::Interrupted => {
                self.fd.set_kvm_immediate_exit(0);
                VcpuExit::Interrupted
            }
            After::Unhandled => VcpuExit::Unhandled {
                reason: self.fd.get_kvm_run().exit_reason,
            },
            After::InternalError => {
                // SAFETY: KVM set exit_reason to KVM_EXIT_INTERNAL_ERROR, which makes
                // `internal` the union member it filled in.
                let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
                let ndata = (internal.ndata as usize).min(internal.data.len());
                VcpuExit::InternalError {
                    suberror: internal.suberror,
                    data: internal.data[..ndata].to_vec(),
                }
            }
        })
    }

    /// Starts the vCPU's run loop on a thread named `vcpu<index>`. The loop carries out bus
    /// accesses and interruptions, and ends at the first other exit, or when stopped.
    pub fn start(self, bus: Arc<dyn Bus>) -> Result<VcpuHandle, VcpuError> {
        self.start_with_exit_hook(bus, |_| {})
    }

    /// [`Vcpu::start`], and when the loop ends the thread calls `on_exit` with its result
    /// (what [`VcpuHandle::join`] will return): how an event loop learns, without polling,
    /// that a vCPU stopped and why.
    pub fn start_with_exit_hook(
        self,
        bus: Arc<dyn Bus>,
        on_exit: impl FnOnce(&Result<VcpuExit, VcpuError>) + Send + 'static,
    ) -> Result<VcpuHandle, VcpuError> {
        install_kick_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let index = self.index;
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                let exit = self.run_loop(bus.as_ref(), &thread_stop);
                on_exit(&exit);
                exit
            })
            .map_err(VcpuError::Spawn)?;
        Ok(VcpuHandle {
            index,
            stop,
            thread: Some(thread),
        })
    }

    fn run_loop(mut self, bus: &dyn Bus, stop: &AtomicBool) -> Result<VcpuExit, VcpuError> {
        let _registered = KickTarget::register(self.fd.get_kvm_run());
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(VcpuExit::Stopped);
            }
            let exit = self.run_once(bus)?;
            if !exit.continues() {
                return Ok(exit);
            }
        }
    }
}

fn system_event(kind: u32) -> SystemEvent {
    match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => SystemEvent::Shutdown,
        KVM_SYSTEM_EVENT_RESET => SystemEvent::Reset,
        KVM_SYSTEM_EVENT_CRASH => SystemEvent::Crash,
        other => SystemEvent::Other(other),
    }
}

/// A vCPU running its loop on its own thread. Dropping the handle stops and joins the thread.
#[derive(Debug)]
pub struct VcpuHandle {
    index: u8,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<VcpuExit, VcpuError>>>,
}

impl VcpuHandle {
    /// The vCPU's index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Asks the loop to stop, and kicks the vCPU out of KVM_RUN. Returns at once; the loop
    /// ends with [`VcpuExit::Stopped`] unless it had already ended otherwise.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = &self.thread {
            // An error means the thread has already exited, which is what was asked.
            let _ = thread.kill(kick_signal());
        }
    }

    /// Whether the loop has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the loop to end and returns the exit that ended it.
    pub fn join(mut self) -> Result<VcpuExit, VcpuError> {
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| VcpuError::Panicked)?,
            None => Ok(VcpuExit::Stopped),
        }
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The real-time signal that kicks vCPU threads (SIGRTMIN).
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

thread_local! {
    /// This thread's vCPU `kvm_run` page, for the kick handler; null when it runs no vCPU.
    static KICK_TARGET: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// Publishes a vCPU's `kvm_run` to the kick handler for as long as it lives.
struct KickTarget;

impl KickTarget {
    fn register(run: &mut kvm_run) -> KickTarget {
        KICK_TARGET.with(|target| target.set(run));
        KickTarget
    }
}

impl Drop for KickTarget {
    fn drop(&mut self) {
        KICK_TARGET.with(|target| target.set(std::ptr::null_mut()));
    }
}

extern "C" fn kick_handler(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
    let run = KICK_TARGET.with(Cell::get);
    if !run.is_null() {
        // SAFETY: `run` is this thread's vCPU `kvm_run` mapping, published by `KickTarget` for
        // exactly as long as the `VcpuFd` that owns the mapping is alive on this thread (the
        // guard is dropped before the vCPU). A volatile byte store is async-signal-safe, and
        // `immediate_exit` is a field KVM expects userspace to write at any time.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
    fence(Ordering::Release);
}

fn install_kick_handler() -> Result<(), VcpuError> {
    static INSTALLED: OnceLock<Result<(), vmm_sys_util::errno::Error>> = OnceLock::new();
    (*INSTALLED.get_or_init(|| register_signal_handler(kick_signal(), kick_handler)))
        .map_err(VcpuError::Signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_events_are_typed() {
        assert_eq!(system_event(KVM_SYSTEM_EVENT_RESET), SystemEvent::Reset);
        assert_eq!(
            system_event(KVM_SYSTEM_EVENT_SHUTDOWN),
            SystemEvent::Shutdown
        );
        assert_eq!(system_event(KVM_SYSTEM_EVENT_CRASH), SystemEvent::Crash);
        assert_eq!(system_event(99), SystemEvent::Other(99));
    }

    #[test]
    fn bus_accesses_are_the_only_loop_exits() {
        assert!(VcpuExit::IoOut { port: 1, size: 1 }.is_bus_access());
        assert!(VcpuExit::MmioRead { addr: 1, size: 4 }.is_bus_access());
        assert!(!VcpuExit::Hlt.is_bus_access());
        assert!(!VcpuExit::Interrupted.is_bus_access());
    }
}
