//! One microVM from start to end: [`run`] is the boot sequence as one function, from opening
//! `/dev/kvm` to the [`ExitReason`] the guest ends with.
//!
//! The machine it builds (x86_64):
//!
//! ```text
//!  port 0x3f8..0x3ff  COM1 8250 UART → the console Write        IRQ 4 (irqfd)
//!  port 0x60..0x64    i8042: its reset line ends the VM (Reset)
//!  port 0x600, 0x601  ACPI sleep control/status: S5 ends the VM (Shutdown)
//!  0xc000_0000        virtio-mmio window (4 KiB) of the vsock device  IRQ 5 (irqfd),
//!                     queue notifies as KVM ioeventfds; named in the DSDT (LNRO0005) and
//!                     on the command line (virtio_mmio.device=4K@0xc0000000:5)
//!  0xe_0000           ACPI: RSDP, DSDT, FADT (HW-reduced), MADT, XSDT
//!  0x10_0000          the kernel (bzImage or ELF vmlinux, PVH entry when it has one)
//! ```
//!
//! The in-kernel irqchip (PIC, IOAPIC, local APICs) and PIT serve every vCPU. Once everything
//! is in place and before any vCPU runs, the seccomp filter ([`crate::seccomp`]) goes on
//! every thread (unless [`VmConfig::seccomp`] is off); then the vCPUs start and the main
//! thread runs the [`EventLoop`] until the guest powers off, resets or fails.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use kvm_ioctls::IoEventAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::acpi::{setup_acpi, AcpiConfig, AcpiError, SerialInfo, VirtioMmioInfo};
use crate::arch::x86_64::cpuid::{self, CpuidConfig};
use crate::arch::x86_64::layout::MMIO32_START;
use crate::boot::{self, BootError, BootSpec};
use crate::devices::bus::{BusError, DeviceBuses, MmioBus, PioBus};
use crate::devices::legacy::acpi_sleep::{SLEEP_CONTROL_PORT, SLEEP_PORT_LEN};
use crate::devices::legacy::i8042::{I8042_PORT, I8042_PORT_LEN};
use crate::devices::legacy::serial::{COM1_IRQ, COM1_PORT, SERIAL_PORT_LEN};
use crate::devices::legacy::{AcpiSleepDevice, I8042Device, SerialDevice};
use crate::devices::virtio::mmio::vsock::MmioVsock;
use crate::devices::virtio::mmio::{reg, MmioError, MmioTransport, MMIO_WINDOW_LEN};
use crate::devices::virtio::vsock::{MuxerError, VsockDevice, VsockError, VsockMuxer};
pub use crate::event_loop::ExitReason;
use crate::event_loop::{EventLoop, EventLoopError, EventSources, VcpuReport, VsockEvents};
use crate::seccomp::{self, SeccompError};
use crate::vstate::memory::{create_guest_memory, MemoryConfig, MemoryError};
use crate::vstate::{Bus, Kvm, KvmError, Vcpu, VcpuError, VcpuExit, Vm, VmError};

/// Where the vsock device's virtio-mmio window starts: the first page of the MMIO gap.
pub const VSOCK_MMIO_BASE: u64 = MMIO32_START;
/// The vsock device's interrupt (GSI; an ISA line no legacy device here uses).
pub const VSOCK_IRQ: u32 = 5;

/// Why the VM could not be built, or the VMM failed while it ran (the guest's own ending is
/// an [`ExitReason`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// KVM is absent or lacks something.
    #[error("failed to open kvm")]
    Kvm(#[source] KvmError),
    /// The memory size is zero or does not fit.
    #[error("invalid guest memory size {0} MiB")]
    MemorySize(u64),
    /// Guest memory could not be mapped.
    #[error("failed to create guest memory")]
    Memory(#[source] MemoryError),
    /// The VM could not be created or set up.
    #[error("failed to set up the vm")]
    Vm(#[source] VmError),
    /// An eventfd could not be created.
    #[error("failed to create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// A device's irqfd or ioeventfd could not be registered.
    #[error("failed to register the {0} with kvm")]
    Register(&'static str, #[source] kvm_ioctls::Error),
    /// A device did not fit on its bus.
    #[error("failed to place a device on its bus")]
    Bus(#[source] BusError),
    /// The vsock host socket could not be set up.
    #[error("failed to set up the vsock host side")]
    Muxer(#[source] MuxerError),
    /// The vsock device refused its configuration.
    #[error("failed to create the vsock device")]
    Vsock(#[source] VsockError),
    /// The virtio-mmio transport refused the device.
    #[error("failed to create the virtio-mmio transport")]
    Mmio(#[source] MmioError),
    /// The ACPI tables could not be written.
    #[error("failed to write the acpi tables")]
    Acpi(#[source] AcpiError),
    /// The kernel or initrd could not be loaded.
    #[error("failed to load the kernel")]
    Boot(#[source] BootError),
    /// A vCPU could not be created, configured or started.
    #[error("failed to set up a vcpu")]
    Vcpu(#[source] VcpuError),
    /// The seccomp filter could not be installed.
    #[error("failed to install the seccomp filter")]
    Seccomp(#[source] SeccompError),
    /// The event loop failed.
    #[error("the vmm's event loop failed")]
    EventLoop(#[source] EventLoopError),
}

/// The vsock device's host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context id.
    pub cid: u64,
    /// The hybrid-vsock Unix socket (it must not exist; it is removed when the VM ends).
    pub uds: PathBuf,
}

/// What to run.
pub struct VmConfig {
    /// A bzImage or ELF vmlinux.
    pub kernel: PathBuf,
    /// An initramfs.
    pub initrd: Option<PathBuf>,
    /// The kernel command line (the virtio-mmio device is appended to it).
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs (1 to 254).
    pub vcpus: u8,
    /// The vsock device, if the VM has one.
    pub vsock: Option<VsockConfig>,
    /// Where the guest's serial console goes.
    pub console: Box<dyn Write + Send>,
    /// Where the VMM says what went wrong while the VM runs (a vsock device the guest broke).
    pub diagnostics: Box<dyn Write + Send>,
    /// Install the seccomp filter before the guest runs. Off only to debug the VMM, and in
    /// tests that run in a process which must go on afterwards (the filter is permanent).
    pub seccomp: bool,
    /// Give the guest hardware virtualization (VMX/SVM) as KVM supports it, so that it can
    /// run KVM itself (see [`crate::arch::x86_64::cpuid`]).
    pub nested: bool,
}

impl std::fmt::Debug for VmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmConfig")
            .field("kernel", &self.kernel)
            .field("initrd", &self.initrd)
            .field("cmdline", &self.cmdline)
            .field("memory_mib", &self.memory_mib)
            .field("vcpus", &self.vcpus)
            .field("vsock", &self.vsock)
            .field("seccomp", &self.seccomp)
            .field("nested", &self.nested)
            .finish_non_exhaustive()
    }
}

/// The command line the kernel gets: `cmdline` and, for a VM with the vsock device, its
/// `virtio_mmio.device=` argument (kernels with `VIRTIO_MMIO_CMDLINE_DEVICES` find it there;
/// the others in the DSDT).
/// The argument goes before a `--`, after which the words are init's.
pub fn kernel_cmdline(cmdline: &str, vsock: bool) -> String {
    let mut words: Vec<String> = cmdline.split_whitespace().map(str::to_string).collect();
    if vsock {
        let at = words.iter().position(|w| w == "--").unwrap_or(words.len());
        words.insert(at, MmioTransport::cmdline_arg(VSOCK_MMIO_BASE, VSOCK_IRQ));
    }
    words.join(" ")
}

/// Builds the VM of `config`, runs it until it ends, and says why it ended.
pub fn run(config: VmConfig) -> Result<ExitReason, BuildError> {
    let VmConfig {
        kernel,
        initrd,
        cmdline,
        memory_mib,
        vcpus,
        vsock,
        console,
        diagnostics,
        seccomp,
        nested,
    } = config;
    let mem_size = memory_mib
        .checked_mul(1 << 20)
        .filter(|&size| size > 0)
        .ok_or(BuildError::MemorySize(memory_mib))?;

    // 1. KVM, guest memory, the VM with its in-kernel irqchip and PIT.
    let kvm = Kvm::new().map_err(BuildError::Kvm)?;
    let mem = create_guest_memory(&MemoryConfig {
        size: mem_size,
        hugepages: false,
    })
    .map_err(BuildError::Memory)?;
    let mut vm = Vm::new(&kvm).map_err(BuildError::Vm)?;
    vm.register_memory(&mem).map_err(BuildError::Vm)?;
    vm.setup_irqchip().map_err(BuildError::Vm)?;

    // 2. Devices on the buses, their interrupts as irqfds.
    let mut pio = PioBus::new();
    let mut mmio = MmioBus::new();
    let serial_irq = eventfd()?;
    vm.register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(BuildError::Vm)?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, console)));
    pio.insert(serial.clone(), COM1_PORT, SERIAL_PORT_LEN)
        .map_err(BuildError::Bus)?;
    let reset = eventfd()?;
    let i8042 = I8042Device::new(clone_eventfd(&reset)?);
    pio.insert(Arc::new(Mutex::new(i8042)), I8042_PORT, I8042_PORT_LEN)
        .map_err(BuildError::Bus)?;
    let power_off = eventfd()?;
    let sleep = AcpiSleepDevice::new(clone_eventfd(&power_off)?);
    pio.insert(
        Arc::new(Mutex::new(sleep)),
        SLEEP_CONTROL_PORT,
        SLEEP_PORT_LEN,
    )
    .map_err(BuildError::Bus)?;
    let mut virtio_mmio = Vec::new();
    let vsock_events = match &vsock {
        None => None,
        Some(config) => {
            let muxer = VsockMuxer::new(config.cid, &config.uds).map_err(BuildError::Muxer)?;
            let device = VsockDevice::new(config.cid, muxer).map_err(BuildError::Vsock)?;
            let device = Arc::new(Mutex::new(MmioVsock::new(device)));
            let irq = eventfd()?;
            vm.register_irqfd(&irq, VSOCK_IRQ).map_err(BuildError::Vm)?;
            let transport =
                MmioTransport::new(mem.clone(), device.clone(), irq).map_err(BuildError::Mmio)?;
            let notify = IoEventAddress::Mmio(VSOCK_MMIO_BASE + reg::QUEUE_NOTIFY);
            let mut queue_events = Vec::new();
            for (index, evt) in transport.queue_events().iter().enumerate() {
                let index = u32::try_from(index).expect("three queues");
                vm.fd()
                    .register_ioevent(evt, &notify, index)
                    .map_err(|e| BuildError::Register("vsock queue ioeventfd", e))?;
                queue_events.push(clone_eventfd(evt)?);
            }
            mmio.insert(
                Arc::new(Mutex::new(transport)),
                VSOCK_MMIO_BASE,
                MMIO_WINDOW_LEN,
            )
            .map_err(BuildError::Bus)?;
            virtio_mmio.push(VirtioMmioInfo {
                base: VSOCK_MMIO_BASE,
                len: MMIO_WINDOW_LEN,
                irq: VSOCK_IRQ,
            });
            Some(VsockEvents {
                device,
                queue_events,
            })
        }
    };

    // 3. ACPI tables (Debian kernels find the virtio-mmio device in the DSDT), then the kernel
    // with the device on its command line (lab.config kernels find it there).
    setup_acpi(
        &mem,
        &AcpiConfig {
            vcpus: usize::from(vcpus),
            virtio_mmio,
            serial: Some(SerialInfo {
                port: COM1_PORT,
                irq: COM1_IRQ,
            }),
        },
    )
    .map_err(BuildError::Acpi)?;
    let boot = boot::load(
        &BootSpec {
            kernel,
            initrd,
            cmdline: kernel_cmdline(&cmdline, vsock.is_some()),
            mem: mem_size,
            vcpus,
        },
        &mem,
    )
    .map_err(BuildError::Boot)?;

    // 4. vCPUs: CPUID shaped (hiding what an emulating host cannot run, and hardware
    // virtualization unless nested), an AMD guest's PMU refused, boot registers.
    let supported = kvm.supported_cpuid().map_err(BuildError::Kvm)?;
    let cpuid = CpuidConfig {
        vcpu_count: vcpus,
        emulator_safe: Kvm::runs_kernel_in_emulator(),
        nested,
    };
    if cpuid::vendor(supported.as_slice()) == cpuid::Vendor::Amd {
        vm.refuse_amd_pmu_msrs(&kvm).map_err(BuildError::Vm)?;
    }
    let mut ready = Vec::with_capacity(usize::from(vcpus));
    for index in 0..vcpus {
        let vcpu = Vcpu::new(&vm, index).map_err(BuildError::Vcpu)?;
        vcpu.configure(&supported, cpuid, &boot.entry)
            .map_err(BuildError::Vcpu)?;
        ready.push(vcpu);
    }

    // 5. The event loop, the seccomp filter, then the guest runs.
    let vcpu_exited = eventfd()?;
    let (report, vcpu_reports) = mpsc::channel::<VcpuReport>();
    let event_loop = EventLoop::new(
        EventSources {
            reset,
            power_off,
            vcpu_exited: clone_eventfd(&vcpu_exited)?,
            vcpu_reports,
            vsock: vsock_events,
        },
        diagnostics,
    )
    .map_err(BuildError::EventLoop)?;
    let mut exit_hooks = Vec::with_capacity(ready.len());
    for vcpu in &ready {
        let index = vcpu.index();
        let (report, exited) = (report.clone(), clone_eventfd(&vcpu_exited)?);
        exit_hooks.push(move |exit: &Result<VcpuExit, VcpuError>| {
            let exit = match exit {
                Ok(exit) => Ok(exit.clone()),
                Err(err) => Err(error_text(err)),
            };
            // The loop may be gone already (it stopped this vCPU); nothing to tell then.
            let _ = report.send((index, exit));
            let _ = exited.write(1);
        });
    }
    if seccomp {
        seccomp::install().map_err(BuildError::Seccomp)?;
    }
    let buses: Arc<dyn Bus> = Arc::new(DeviceBuses::new(pio, mmio));
    let mut running = Vec::with_capacity(ready.len());
    for (vcpu, on_exit) in ready.into_iter().zip(exit_hooks) {
        match vcpu.start_with_exit_hook(buses.clone(), on_exit) {
            Ok(handle) => running.push(handle),
            Err(err) => {
                for handle in &running {
                    handle.stop();
                }
                return Err(BuildError::Vcpu(err));
            }
        }
    }
    let reason = event_loop.run(running).map_err(BuildError::EventLoop);
    // The console may buffer; what the guest wrote last often says why it ended.
    let _ = serial
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .output_mut()
        .flush();
    reason
}

fn eventfd() -> Result<EventFd, BuildError> {
    EventFd::new(EFD_NONBLOCK).map_err(BuildError::EventFd)
}

fn clone_eventfd(evt: &EventFd) -> Result<EventFd, BuildError> {
    evt.try_clone().map_err(BuildError::EventFd)
}

/// An error and its causes, as one line.
fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
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
    use super::*;

    #[test]
    fn the_vsock_device_joins_the_command_line() {
        // (given, with vsock, the kernel's)
        let table = [
            (
                "console=ttyS0 reboot=k",
                true,
                "console=ttyS0 reboot=k virtio_mmio.device=4K@0xc0000000:5",
            ),
            ("", true, "virtio_mmio.device=4K@0xc0000000:5"),
            ("console=ttyS0 ", false, "console=ttyS0"),
            (
                "quiet -- init-arg",
                true,
                "quiet virtio_mmio.device=4K@0xc0000000:5 -- init-arg",
            ),
        ];
        for (given, vsock, want) in table {
            assert_eq!(kernel_cmdline(given, vsock), want, "{given:?}");
        }
    }

    #[test]
    fn a_zero_or_huge_memory_size_is_refused_before_kvm() {
        for mib in [0, u64::MAX] {
            let err = run(VmConfig {
                kernel: "/nonexistent".into(),
                initrd: None,
                cmdline: String::new(),
                memory_mib: mib,
                vcpus: 1,
                vsock: None,
                console: Box::new(std::io::sink()),
                diagnostics: Box::new(std::io::sink()),
                seccomp: false,
                nested: false,
            })
            .expect_err("refused");
            assert!(
                matches!(err, BuildError::MemorySize(m) if m == mib),
                "{err}"
            );
        }
    }
}
