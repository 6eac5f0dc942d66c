//! Shared by the probe-guest tests: a VM under real KVM with the pieces the builder will wire
//! (guest memory, the buses, one vCPU entering 32-bit protected mode by PVH), a debug port the
//! guest reports on, and the small assembler ([`asm`]) and virtio-mmio driver ([`driver`]) the
//! guest code is written with, plus the device event loop ([`event_loop`]).
//!
//! The guest talks to the test through ports:
//! - [`REPORT_PORT`]: `out dx, eax` records a [`Report::Word`], `out dx, al` a [`Report::Byte`];
//! - [`FAIL_PORT`]: the guest gave up (a poll ran out); it halts right after;
//! - [`CHECKPOINT_PORT`]: the test snapshots the watched transport at that very point of the
//!   guest program ([`Report::Checkpoint`]), on the vCPU thread while the guest waits;
//! - [`DEADLINE_PORT`]: `in` reads 1 once the probe's poll deadline has passed, so that the
//!   guest's polls give up after the same wall time whether the host emulates the guest (slow)
//!   or runs it natively (fast).

#![allow(dead_code)]

pub mod asm;
pub mod driver;
pub mod event_loop;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::CpuId;
use lab_vmm::arch::x86_64::cpuid::CpuidConfig;
use lab_vmm::arch::x86_64::gdt;
use lab_vmm::arch::x86_64::layout::{HIMEM_START, PVH_INFO_START};
use lab_vmm::arch::x86_64::regs::BootEntry;
use lab_vmm::devices::bus::{BusDevice, DeviceBuses, MmioBus, PioBus, SharedBusDevice};
use lab_vmm::devices::virtio::mmio::MmioTransport;
use lab_vmm::vstate::memory::{create_guest_memory, MemoryConfig};
use lab_vmm::vstate::{GuestMemoryMmap, Kvm, KvmError, Vcpu, VcpuExit, VcpuHandle, Vm};
use vm_memory::{Bytes, GuestAddress};

/// The guest's report port.
pub const REPORT_PORT: u16 = 0x10;
/// The guest's give-up port.
pub const FAIL_PORT: u16 = 0x14;
/// The guest's checkpoint port.
pub const CHECKPOINT_PORT: u16 = 0x18;
/// The guest's deadline port.
pub const DEADLINE_PORT: u16 = 0x1c;
/// The ports the debug device claims: a dword's worth each (the bus wants a whole access
/// inside the range).
const DEBUG_PORTS_LEN: u16 = 16;
/// Guest RAM: 16 MiB from 0.
pub const MEM_SIZE: u64 = 16 << 20;
/// Where the probe's code is loaded and entered.
pub const CODE_START: u32 = HIMEM_START as u32;
/// How long a probe may run before the test stops its vCPU.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the start the guest's polls give up, unless set otherwise
/// ([`ProbeVm::set_poll_deadline`]): well before [`RUN_TIMEOUT`].
pub const POLL_DEADLINE: Duration = Duration::from_secs(20);

/// Whether missing prerequisites are failures (CI sets `LAB_E2E=1`).
pub fn required() -> bool {
    std::env::var("LAB_E2E").is_ok_and(|v| v == "1")
}

/// KVM, or `None` after saying why the test skips: only when /dev/kvm cannot be opened, and
/// never under `LAB_E2E=1`. KVM that opens but is unusable is a failure.
pub fn kvm_or_skip(test: &str) -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(KvmError::Open(e)) => {
            assert!(!required(), "LAB_E2E=1 but /dev/kvm cannot be opened: {e}");
            eprintln!("SKIPPED {test}: /dev/kvm cannot be opened here ({e})");
            None
        }
        Err(e) => panic!("/dev/kvm opens but is unusable: {e}"),
    }
}

/// The transport's state as the test sees it at a checkpoint or at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportState {
    /// The status register as the driver reads it.
    pub status: u8,
    /// Whether DRIVER_OK took and no reset or break came since.
    pub activated: bool,
    /// The features the driver accepted.
    pub acked_features: u64,
    /// Why the device broke (its message), if it did.
    pub broken: Option<String>,
}

impl TransportState {
    /// Reads it off `transport`.
    pub fn of(transport: &Mutex<MmioTransport>) -> Self {
        let t = transport.lock().expect("transport lock");
        Self {
            status: t.status(),
            activated: t.is_activated(),
            acked_features: t.acked_features(),
            broken: t.broken().map(|e| e.to_string()),
        }
    }
}

/// What the guest said, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A dword on [`REPORT_PORT`].
    Word(u32),
    /// A byte on [`REPORT_PORT`].
    Byte(u8),
    /// The guest gave up at this step (a dword on [`FAIL_PORT`]).
    Fail(u32),
    /// The watched transport at a write to [`CHECKPOINT_PORT`].
    Checkpoint(TransportState),
}

/// The device on the probe ports.
struct DebugPort {
    reports: Vec<Report>,
    watched: Option<Arc<Mutex<MmioTransport>>>,
    /// How long after the start polls give up, and (once started) when that is.
    poll_deadline: Duration,
    deadline: Option<Instant>,
}

impl BusDevice for DebugPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let port = REPORT_PORT + u16::try_from(offset).expect("inside the debug ports");
        if port == DEADLINE_PORT && self.deadline.is_some_and(|at| Instant::now() >= at) {
            data[0] = 1;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let port = REPORT_PORT + u16::try_from(offset).expect("inside the debug ports");
        let report = match (port, data.len()) {
            (REPORT_PORT, 1) => Report::Byte(data[0]),
            (REPORT_PORT, 4) => Report::Word(u32::from_le_bytes(data.try_into().expect("4"))),
            (FAIL_PORT, 4) => Report::Fail(u32::from_le_bytes(data.try_into().expect("4"))),
            (CHECKPOINT_PORT, _) => match &self.watched {
                Some(transport) => Report::Checkpoint(TransportState::of(transport)),
                None => panic!("checkpoint with no transport watched"),
            },
            _ => panic!("unexpected {}-byte write to port {port:#x}", data.len()),
        };
        self.reports.push(report);
    }
}

/// A probe VM being put together: memory, the VM, and its buses.
pub struct ProbeVm {
    kvm: Kvm,
    vm: Vm,
    /// Guest RAM, shared with the devices.
    pub mem: GuestMemoryMmap,
    pio: PioBus,
    mmio: MmioBus,
    debug: Arc<Mutex<DebugPort>>,
}

impl ProbeVm {
    /// A VM with [`MEM_SIZE`] of RAM, the boot GDT, and the debug ports on the port bus.
    pub fn new(kvm: Kvm) -> Self {
        let mem = create_guest_memory(&MemoryConfig {
            size: MEM_SIZE,
            hugepages: false,
        })
        .expect("guest memory");
        let mut vm = Vm::new(&kvm).expect("vm");
        vm.register_memory(&mem).expect("memory slots");
        gdt::write_tables(&mem).expect("gdt");
        let debug = Arc::new(Mutex::new(DebugPort {
            reports: Vec::new(),
            watched: None,
            poll_deadline: POLL_DEADLINE,
            deadline: None,
        }));
        let mut pio = PioBus::new();
        pio.insert(debug.clone(), REPORT_PORT, DEBUG_PORTS_LEN)
            .expect("debug ports");
        Self {
            kvm,
            vm,
            mem,
            pio,
            mmio: MmioBus::new(),
            debug,
        }
    }

    /// Maps `device` at `base..base + len` on the MMIO bus.
    pub fn add_mmio(&mut self, device: SharedBusDevice, base: u64, len: u64) {
        self.mmio.insert(device, base, len).expect("mmio window");
    }

    /// Checkpoints snapshot `transport`.
    pub fn watch(&mut self, transport: Arc<Mutex<MmioTransport>>) {
        self.debug.lock().expect("debug lock").watched = Some(transport);
    }

    /// The guest's polls give up `after` the start instead of [`POLL_DEADLINE`].
    pub fn set_poll_deadline(&mut self, after: Duration) {
        self.debug.lock().expect("debug lock").poll_deadline = after;
    }

    /// Loads `code` at [`CODE_START`] and starts the vCPU there, in 32-bit protected mode.
    pub fn start(self, code: &[u8]) -> RunningProbe {
        self.mem
            .write_slice(code, GuestAddress(u64::from(CODE_START)))
            .expect("code");
        let supported: CpuId = self.kvm.supported_cpuid().expect("supported cpuid");
        let vcpu = Vcpu::new(&self.vm, 0).expect("vcpu");
        let entry = BootEntry::Pvh {
            entry: u64::from(CODE_START),
            start_info: PVH_INFO_START,
        };
        let cpuid = CpuidConfig {
            vcpu_count: 1,
            emulator_safe: Kvm::runs_kernel_in_emulator(),
            nested: false,
        };
        vcpu.configure(&supported, cpuid, &entry)
            .expect("configure");
        let buses = Arc::new(DeviceBuses::new(self.pio, self.mmio));
        {
            let mut debug = self.debug.lock().expect("debug lock");
            debug.deadline = Some(Instant::now() + debug.poll_deadline);
        }
        let handle = vcpu.start(buses.clone()).expect("start vcpu");
        RunningProbe {
            handle,
            buses,
            debug: self.debug,
            _vm: self.vm,
        }
    }
}

/// A probe whose vCPU runs on its own thread.
pub struct RunningProbe {
    handle: VcpuHandle,
    buses: Arc<DeviceBuses>,
    debug: Arc<Mutex<DebugPort>>,
    /// Kept until the vCPU has stopped: it owns the memory KVM runs the guest in.
    _vm: Vm,
}

/// How a probe ended.
#[derive(Debug)]
pub struct ProbeEnd {
    /// The exit that ended the vCPU's loop ([`VcpuExit::Hlt`] when the program ran out).
    pub exit: VcpuExit,
    /// What the guest reported.
    pub reports: Vec<Report>,
    /// Guest accesses no device claimed.
    pub unclaimed: u64,
}

impl RunningProbe {
    /// What the guest has reported so far.
    pub fn reports(&self) -> Vec<Report> {
        self.debug.lock().expect("debug lock").reports.clone()
    }

    /// Waits for the guest to stop by itself (at most [`RUN_TIMEOUT`], then stops it).
    pub fn finish(self) -> ProbeEnd {
        let deadline = Instant::now() + RUN_TIMEOUT;
        while !self.handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.handle.stop();
        let exit = self.handle.join().expect("vcpu thread");
        let reports = self.debug.lock().expect("debug lock").reports.clone();
        ProbeEnd {
            exit,
            reports,
            unclaimed: self.buses.unclaimed(),
        }
    }
}
