//! The virtio-mmio transport, version 2 (virtio 1.x, "modern" only): the register block a
//! guest driver finds at a `0x1000`-byte MMIO window (from the ACPI DSDT's `LNRO0005`
//! devices or a `virtio_mmio.device=` argument) and through which it negotiates features,
//! sets up the queues and starts the device. The device behind it implements
//! [`VirtioDevice`]; [`MmioTransport`] is the [`BusDevice`] on the VM's MMIO bus.
//!
//! ```text
//!  vCPU MMIO exit ─► MmioBus ─► MmioTransport ──activate(mem, queues, signals)──► VirtioDevice
//!                                 │  registers, queue configs, status           (its own event
//!                                 └─ QueueNotify ─► queue eventfd ─────────────► loop: queues,
//!                                                  (or a KVM ioeventfd)          backend)
//!  guest ◄─ irqfd ◄─ DeviceSignals (InterruptStatus bits, config generation, needs-reset) ◄─┘
//! ```
//!
//! The guest is untrusted and this transport holds it to the spec:
//! - the device status moves only forward through ACKNOWLEDGE → DRIVER → FEATURES_OK →
//!   DRIVER_OK (several steps in one write are fine), FAILED may be set at any time, and 0
//!   resets the device; any other write is ignored and the status reads back unchanged;
//! - driver features are taken only between DRIVER and FEATURES_OK; FEATURES_OK is refused
//!   (it stays clear) for features the device never offered or without VIRTIO_F_VERSION_1;
//! - queue registers are taken only between FEATURES_OK and DRIVER_OK. A queue size that is
//!   not a power of two in `1..=QueueNumMax`, or any queue register written after DRIVER_OK
//!   (CVE-2026-5747: the device keeps using the layout frozen at DRIVER_OK, the guest must not
//!   believe otherwise), breaks the device;
//! - at DRIVER_OK every ready queue's rings are checked (alignment, inside guest memory) and
//!   the device is activated with copies of them; a bad ring or a device that refuses breaks
//!   it.
//!
//! A *broken* device sets DEVICE_NEEDS_RESET in its status (with a configuration-change
//! interrupt once the driver is up), stops, and ignores everything but a reset (status 0) and
//! FAILED. The first cause is kept ([`MmioTransport::broken`]). Nothing the guest writes
//! panics or touches anything outside this device: odd widths, unaligned or unknown registers
//! are ignored on write and read as zero.

pub mod vsock;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::BusDevice;

/// The size of one device's MMIO window.
pub const MMIO_WINDOW_LEN: u64 = 0x1000;
/// "virt" in little-endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The transport version this implements (virtio 1.x, no legacy).
pub const MMIO_VERSION: u32 = 2;
/// The vendor id reported to the driver: "lab" (informational only).
pub const VENDOR_ID: u32 = 0x0062_616c;
/// The largest queue size a split virtqueue may have.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Register offsets in the MMIO window (all 32 bits wide, 32-bit aligned).
pub mod reg {
    /// R: [`super::MAGIC_VALUE`].
    pub const MAGIC_VALUE: u64 = 0x000;
    /// R: [`super::MMIO_VERSION`].
    pub const VERSION: u64 = 0x004;
    /// R: the virtio device id.
    pub const DEVICE_ID: u64 = 0x008;
    /// R: [`super::VENDOR_ID`].
    pub const VENDOR_ID: u64 = 0x00c;
    /// R: 32 bits of the device's features, chosen by `DEVICE_FEATURES_SEL`.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// W: which 32 bits `DEVICE_FEATURES` shows.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// W: 32 bits of the driver's features, chosen by `DRIVER_FEATURES_SEL`.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// W: which 32 bits `DRIVER_FEATURES` sets.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// W: the queue the `QUEUE_*` registers refer to.
    pub const QUEUE_SEL: u64 = 0x030;
    /// R: the selected queue's largest size (0: no such queue).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// W: the selected queue's size.
    pub const QUEUE_NUM: u64 = 0x038;
    /// RW: the selected queue is ready.
    pub const QUEUE_READY: u64 = 0x044;
    /// W: the driver kicks the queue with this index.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// R: why the interrupt was raised (used buffers, configuration change).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// W: the interrupt bits the driver handled.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// RW: the device status.
    pub const STATUS: u64 = 0x070;
    /// W: descriptor table address, low 32 bits.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// W: descriptor table address, high 32 bits.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// W: available ring address, low 32 bits.
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// W: available ring address, high 32 bits.
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// W: used ring address, low 32 bits.
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// W: used ring address, high 32 bits.
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// W: shared memory region selector.
    pub const SHM_SEL: u64 = 0x0ac;
    /// R: shared memory region length, low 32 bits (all ones: no such region).
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// R: shared memory region length, high 32 bits.
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// R: shared memory region base, low 32 bits.
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// R: shared memory region base, high 32 bits.
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// R: changes whenever the device configuration changes.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// RW: the device-specific configuration space starts here.
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits.
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is set up; the device is live.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device broke and must be reset (set by the device only).
    pub const NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// `InterruptStatus`: buffers were used in a queue.
pub const INT_USED_RING: u32 = 1;
/// `InterruptStatus`: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// An error a device reports to its transport.
pub type DeviceError = Box<dyn std::error::Error + Send + Sync>;

/// A virtio device behind a transport. The transport owns the register state and the queue
/// configuration; the device sees checked queues only, at activation.
pub trait VirtioDevice: Send {
    /// The virtio device id (e.g. 19 for vsock).
    fn device_type(&self) -> u32;

    /// The features the device offers.
    fn avail_features(&self) -> u64;

    /// The driver accepted `features` (a subset of [`VirtioDevice::avail_features`] with
    /// VIRTIO_F_VERSION_1, checked by the transport), at FEATURES_OK.
    fn set_acked_features(&mut self, features: u64) -> Result<(), DeviceError>;

    /// One entry per queue: its largest size (a power of two, at most [`MAX_QUEUE_SIZE`]).
    fn queue_max_sizes(&self) -> &[u16];

    /// Reads `data.len()` bytes of the configuration space at `offset`; bytes past its end
    /// read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// The driver writes the configuration space; a read-only one ignores it.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// DRIVER_OK: the device goes live with `queues` (one per entry of
    /// [`VirtioDevice::queue_max_sizes`], in order; each ready one checked to lie in `mem`,
    /// the others not ready), raising interrupts and reporting breakage through `signals`.
    /// Kicks arrive on the transport's queue eventfds ([`MmioTransport::queue_events`]);
    /// a device should look at its queues once at activation too.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        signals: Arc<DeviceSignals>,
    ) -> Result<(), DeviceError>;

    /// The driver reset the device (or the transport broke it): drop the queues and the
    /// negotiated features, touch guest memory no more.
    fn reset(&mut self);
}

/// What a device tells its driver: the interrupt (an eventfd the VMM registers as an irqfd),
/// the `InterruptStatus` bits, the configuration generation, and that it broke.
#[derive(Debug)]
pub struct DeviceSignals {
    irq: EventFd,
    interrupt_status: AtomicU32,
    config_generation: AtomicU32,
    needs_reset: AtomicBool,
}

impl DeviceSignals {
    /// Signals for a device whose interrupt is `irq`.
    pub fn new(irq: EventFd) -> Self {
        Self {
            irq,
            interrupt_status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
        }
    }

    /// The interrupt's eventfd, to register as an irqfd.
    pub fn irq(&self) -> &EventFd {
        &self.irq
    }

    /// The device put buffers in a used ring the driver wants to hear about.
    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.interrupt_status
            .fetch_or(INT_USED_RING, Ordering::SeqCst);
        self.irq.write(1)
    }

    /// The device's configuration changed.
    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.interrupt_status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        self.irq.write(1)
    }

    /// The device broke (a bad descriptor chain, say): the driver sees DEVICE_NEEDS_RESET and
    /// a configuration-change interrupt.
    pub fn signal_needs_reset(&self) -> std::io::Result<()> {
        if self.needs_reset.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.signal_config_change()
    }

    /// The `InterruptStatus` register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status.load(Ordering::SeqCst)
    }

    /// Whether the device said it broke.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    fn ack(&self, bits: u32) {
        self.interrupt_status.fetch_and(!bits, Ordering::SeqCst);
    }

    fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.interrupt_status.store(0, Ordering::SeqCst);
        self.needs_reset.store(false, Ordering::SeqCst);
    }
}

/// Why a virtio-mmio device broke or could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// The device declares a queue size that is not a power of two in `1..=32768`.
    #[error("device declares queue {queue} with invalid max size {max}")]
    InvalidMaxSize {
        /// The queue's index.
        queue: usize,
        /// The size it declares.
        max: u16,
    },
    /// Creating a queue eventfd failed.
    #[error("failed to create a queue eventfd")]
    QueueEvent(#[source] std::io::Error),
    /// The driver set a queue size that is not a power of two in `1..=max`.
    #[error("queue {queue} size {size} is not a power of two of at most {max}")]
    QueueSize {
        /// The queue's index.
        queue: u32,
        /// The size written.
        size: u32,
        /// The queue's largest size.
        max: u16,
    },
    /// The driver wrote a queue register after DRIVER_OK.
    #[error("queue {queue} register {register:#x} written after driver_ok")]
    QueueChangedAfterDriverOk {
        /// The selected queue.
        queue: u32,
        /// The register's offset.
        register: u64,
    },
    /// A ready queue's rings are misaligned or lie outside guest memory.
    #[error("queue {queue} rings are misaligned or outside guest memory")]
    QueueRings {
        /// The queue's index.
        queue: usize,
    },
    /// The device refused to go live.
    #[error("failed to activate the device")]
    Activate(#[source] DeviceError),
    /// The device refused the features the driver accepted.
    #[error("device refused the negotiated features")]
    Features(#[source] DeviceError),
    /// The device reported that it broke.
    #[error("device reported an error")]
    Device,
}

/// A queue's configuration as the driver writes it; turned into a [`Queue`] at DRIVER_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
        }
    }

    /// The queue the device gets: checked alignment and size, and, when ready, rings inside
    /// `mem`.
    fn to_queue(self, mem: &GuestMemoryMmap) -> Option<Queue> {
        let mut queue = Queue::new(self.max_size).ok()?;
        if !self.ready {
            return Some(queue);
        }
        queue.try_set_size(self.size).ok()?;
        queue
            .try_set_desc_table_address(GuestAddress(self.desc_table))
            .ok()?;
        queue
            .try_set_avail_ring_address(GuestAddress(self.avail_ring))
            .ok()?;
        queue
            .try_set_used_ring_address(GuestAddress(self.used_ring))
            .ok()?;
        queue.set_ready(true);
        queue.is_valid(mem).then_some(queue)
    }
}

/// Sets the low or high half of `field`.
fn set_half(field: &mut u64, high: bool, value: u32) {
    *field = if high {
        (*field & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (*field & !0xffff_ffff) | u64::from(value)
    };
}

/// The valid device states, in order: each is the one before plus one bit.
const STATUS_STEPS: [u8; 5] = [
    0,
    status::ACKNOWLEDGE,
    status::ACKNOWLEDGE | status::DRIVER,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
];

/// The virtio-mmio register block of one device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    signals: Arc<DeviceSignals>,
    queue_events: Vec<EventFd>,
    queues: Vec<QueueConfig>,
    device_type: u32,
    avail_features: u64,
    status: u8,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    shm_sel: u32,
    activated: bool,
    broken: Option<MmioError>,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device_type)
            .field("status", &self.status)
            .field("acked_features", &self.acked_features)
            .field("queues", &self.queues)
            .field("activated", &self.activated)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// A transport for `device` in the VM whose memory is `mem`, interrupting through `irq`.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
        irq: EventFd,
    ) -> Result<Self, MmioError> {
        let (device_type, avail_features, max_sizes) = {
            let dev = device.lock().unwrap_or_else(PoisonError::into_inner);
            (
                dev.device_type(),
                dev.avail_features(),
                dev.queue_max_sizes().to_vec(),
            )
        };
        let mut queues = Vec::with_capacity(max_sizes.len());
        let mut queue_events = Vec::with_capacity(max_sizes.len());
        for (queue, &max) in max_sizes.iter().enumerate() {
            if max == 0 || max > MAX_QUEUE_SIZE || !max.is_power_of_two() {
                return Err(MmioError::InvalidMaxSize { queue, max });
            }
            queues.push(QueueConfig::new(max));
            queue_events.push(EventFd::new(EFD_NONBLOCK).map_err(MmioError::QueueEvent)?);
        }
        Ok(Self {
            device,
            mem,
            signals: Arc::new(DeviceSignals::new(irq)),
            queue_events,
            queues,
            device_type,
            avail_features,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            shm_sel: 0,
            activated: false,
            broken: None,
        })
    }

    /// The device.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// One eventfd per queue, signalled when the driver kicks it: the device's event loop
    /// waits on them, and the VMM may register them as KVM ioeventfds (at the window's base
    /// plus [`reg::QUEUE_NOTIFY`], matching the queue index) so that kicks skip the exit.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The device's signals (its interrupt eventfd, to register as an irqfd).
    pub fn signals(&self) -> &Arc<DeviceSignals> {
        &self.signals
    }

    /// The device status as the driver reads it.
    pub fn status(&self) -> u8 {
        let mut status = self.status;
        if self.broken.is_some() || self.signals.needs_reset() {
            status |= status::NEEDS_RESET;
        }
        status
    }

    /// Whether the device is live (DRIVER_OK accepted, not reset since).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Why the device broke, if it did (by the transport's rules or its own report).
    pub fn broken(&self) -> Option<&MmioError> {
        self.broken.as_ref()
    }

    /// The `virtio_mmio.device=` kernel argument for a window at `base` with `irq`.
    pub fn cmdline_arg(base: u64, irq: u32) -> String {
        format!("virtio_mmio.device=4K@{base:#x}:{irq}")
    }

    fn lock_device(&self) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Breaks the device: records the first cause, stops it, and tells the driver.
    fn fail(&mut self, err: MmioError) {
        if self.broken.is_some() {
            return;
        }
        self.broken = Some(err);
        if self.activated {
            self.lock_device().reset();
            self.activated = false;
        }
        if self.status & status::DRIVER_OK != 0 {
            // Best effort: the status says it whether or not the interrupt gets through.
            let _ = self.signals.signal_config_change();
        }
    }

    /// Whether the device takes driver writes other than a reset or FAILED.
    fn writable(&self) -> bool {
        self.broken.is_none() && !self.signals.needs_reset() && self.status & status::FAILED == 0
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        let index = usize::try_from(self.queue_sel).ok()?;
        self.queues.get_mut(index)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get(i));
        match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device_type,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.avail_features as u32,
                1 => (self.avail_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.signals.interrupt_status(),
            reg::STATUS => u32::from(self.status()),
            // No shared memory regions: their length and base read as all ones.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => self.signals.config_generation(),
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => self.write_driver_features(value),
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue(offset, value),
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.signals.ack(value),
            reg::STATUS => self.write_status(value),
            reg::SHM_SEL => self.shm_sel = value,
            // Read-only and unknown registers.
            _ => {}
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let negotiating = self.status & (status::DRIVER | status::FEATURES_OK) == status::DRIVER;
        if !self.writable() || !negotiating {
            return;
        }
        match self.driver_features_sel {
            0 => set_half(&mut self.acked_features, false, value),
            1 => set_half(&mut self.acked_features, true, value),
            // Beyond bit 63 there are no features; the driver must write zero.
            _ => {}
        }
    }

    fn write_queue(&mut self, register: u64, value: u32) {
        if !self.writable() {
            return;
        }
        if self.status & status::DRIVER_OK != 0 {
            let queue = self.queue_sel;
            self.fail(MmioError::QueueChangedAfterDriverOk { queue, register });
            return;
        }
        if self.status & status::FEATURES_OK == 0 {
            // Too early: the driver has not finished negotiating. Ignored, as harmless.
            return;
        }
        let queue_sel = self.queue_sel;
        let Some(queue) = self.selected_queue() else {
            // No such queue (its QueueNumMax reads 0): nothing to configure.
            return;
        };
        match register {
            reg::QUEUE_NUM => {
                let max = queue.max_size;
                match u16::try_from(value) {
                    Ok(size) if size != 0 && size <= max && size.is_power_of_two() => {
                        queue.size = size;
                    }
                    _ => self.fail(MmioError::QueueSize {
                        queue: queue_sel,
                        size: value,
                        max,
                    }),
                }
            }
            reg::QUEUE_READY => queue.ready = value != 0,
            reg::QUEUE_DESC_LOW => set_half(&mut queue.desc_table, false, value),
            reg::QUEUE_DESC_HIGH => set_half(&mut queue.desc_table, true, value),
            reg::QUEUE_DRIVER_LOW => set_half(&mut queue.avail_ring, false, value),
            reg::QUEUE_DRIVER_HIGH => set_half(&mut queue.avail_ring, true, value),
            reg::QUEUE_DEVICE_LOW => set_half(&mut queue.used_ring, false, value),
            reg::QUEUE_DEVICE_HIGH => set_half(&mut queue.used_ring, true, value),
            _ => {}
        }
    }

    fn notify(&mut self, value: u32) {
        if !self.activated || !self.writable() {
            return;
        }
        let event = usize::try_from(value)
            .ok()
            .and_then(|i| self.queue_events.get(i));
        if let Some(event) = event {
            // A full eventfd counter already means "kicked"; nothing is lost.
            let _ = event.write(1);
        }
    }

    fn write_status(&mut self, value: u32) {
        let Ok(value) = u8::try_from(value) else {
            return;
        };
        if value == 0 {
            self.reset();
            return;
        }
        // NEEDS_RESET is the device's to set; the driver writing it back means nothing.
        let value = value & !status::NEEDS_RESET;
        if value & status::FAILED != 0 {
            self.status |= status::FAILED;
            if self.activated {
                self.lock_device().reset();
                self.activated = false;
            }
            return;
        }
        if !self.writable() {
            return;
        }
        let current = self.status;
        let (Some(from), Some(to)) = (
            STATUS_STEPS.iter().position(|&s| s == current),
            STATUS_STEPS.iter().position(|&s| s == value),
        ) else {
            return;
        };
        if to <= from {
            // Bits only go away through a reset; rewriting the same status is a no-op.
            return;
        }
        for &step in &STATUS_STEPS[from + 1..=to] {
            let added = step & !self.status;
            let ok = match added {
                status::FEATURES_OK => self.features_ok(),
                status::DRIVER_OK => self.driver_ok(),
                _ => true,
            };
            if !ok {
                return;
            }
            self.status = step;
        }
    }

    /// Whether the driver's features can be accepted; tells the device if so.
    fn features_ok(&mut self) -> bool {
        let features = self.acked_features;
        if features & !self.avail_features != 0 || features & (1 << VIRTIO_F_VERSION_1) == 0 {
            // FEATURES_OK stays clear: the driver sees the device did not accept them.
            return false;
        }
        let result = self.lock_device().set_acked_features(features);
        match result {
            Ok(()) => true,
            Err(err) => {
                self.fail(MmioError::Features(err));
                false
            }
        }
    }

    /// Checks the queues and activates the device.
    fn driver_ok(&mut self) -> bool {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (index, config) in self.queues.iter().enumerate() {
            match config.to_queue(&self.mem) {
                Some(queue) => queues.push(queue),
                None => {
                    self.fail(MmioError::QueueRings { queue: index });
                    return false;
                }
            }
        }
        let signals = Arc::clone(&self.signals);
        let result = self
            .lock_device()
            .activate(self.mem.clone(), queues, signals);
        match result {
            Ok(()) => {
                self.activated = true;
                true
            }
            Err(err) => {
                self.fail(MmioError::Activate(err));
                false
            }
        }
    }

    /// Status 0: back to the state at power-on (the configuration generation excepted).
    fn reset(&mut self) {
        if self.activated || self.status != 0 || self.broken.is_some() {
            self.lock_device().reset();
        }
        self.activated = false;
        self.broken = None;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.shm_sel = 0;
        for queue in &mut self.queues {
            *queue = QueueConfig::new(queue.max_size);
        }
        self.signals.reset();
    }

    /// Notes a break the device reported through its signals.
    fn check_device_health(&mut self) {
        if self.broken.is_none() && self.signals.needs_reset() {
            self.broken = Some(MmioError::Device);
            if self.activated {
                self.lock_device().reset();
                self.activated = false;
            }
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.check_device_health();
        data.fill(0);
        if offset >= reg::CONFIG {
            if self.status & status::FAILED == 0 {
                self.lock_device().read_config(offset - reg::CONFIG, data);
            }
            return;
        }
        if data.len() == 4 && offset.is_multiple_of(4) {
            data.copy_from_slice(&self.read_register(offset).to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.check_device_health();
        if offset >= reg::CONFIG {
            if self.writable() && self.status & status::DRIVER != 0 {
                self.lock_device().write_config(offset - reg::CONFIG, data);
            }
            return;
        }
        if let (Ok(bytes), true) = (<[u8; 4]>::try_from(data), offset.is_multiple_of(4)) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
    /// A feature the fake offers besides VERSION_1.
    const EXTRA: u64 = 1 << 3;
    const MEM_SIZE: usize = 0x10_0000;

    /// What the fake device saw of a queue: ready, size, descriptors, avail ring, used ring.
    type QueueSeen = (bool, u16, u64, u64, u64);

    /// What the fake device saw.
    #[derive(Debug, Default)]
    struct FakeState {
        acked: Option<u64>,
        activations: Vec<Vec<QueueSeen>>,
        resets: usize,
        config: [u8; 8],
        refuse_activation: bool,
    }

    struct FakeDevice(Arc<Mutex<FakeState>>);

    impl VirtioDevice for FakeDevice {
        fn device_type(&self) -> u32 {
            42
        }
        fn avail_features(&self) -> u64 {
            VERSION_1 | EXTRA
        }
        fn set_acked_features(&mut self, features: u64) -> Result<(), DeviceError> {
            self.0.lock().expect("state").acked = Some(features);
            Ok(())
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[256, 16]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            let state = self.0.lock().expect("state");
            for (i, b) in data.iter_mut().enumerate() {
                *b = usize::try_from(offset)
                    .ok()
                    .and_then(|o| state.config.get(o + i).copied())
                    .unwrap_or(0);
            }
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            let mut state = self.0.lock().expect("state");
            for (i, &b) in data.iter().enumerate() {
                if let Some(slot) = state.config.get_mut(offset as usize + i) {
                    *slot = b;
                }
            }
        }
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            queues: Vec<Queue>,
            _signals: Arc<DeviceSignals>,
        ) -> Result<(), DeviceError> {
            let mut state = self.0.lock().expect("state");
            if state.refuse_activation {
                return Err("no thanks".into());
            }
            let seen = queues
                .iter()
                .map(|q| {
                    (
                        q.ready(),
                        q.size(),
                        q.desc_table(),
                        q.avail_ring(),
                        q.used_ring(),
                    )
                })
                .collect();
            state.activations.push(seen);
            Ok(())
        }
        fn reset(&mut self) {
            self.0.lock().expect("state").resets += 1;
        }
    }

    struct Rig {
        transport: MmioTransport,
        state: Arc<Mutex<FakeState>>,
    }

    impl Rig {
        fn new() -> Self {
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("mem");
            let state = Arc::new(Mutex::new(FakeState::default()));
            let device: Arc<Mutex<dyn VirtioDevice>> =
                Arc::new(Mutex::new(FakeDevice(state.clone())));
            let irq = EventFd::new(EFD_NONBLOCK).expect("irq");
            let transport = MmioTransport::new(mem, device, irq).expect("transport");
            Self { transport, state }
        }

        fn read(&mut self, offset: u64) -> u32 {
            let mut data = [0u8; 4];
            self.transport.read(offset, &mut data);
            u32::from_le_bytes(data)
        }

        fn write(&mut self, offset: u64, value: u32) {
            self.transport.write(offset, &value.to_le_bytes());
        }

        fn status(&mut self) -> u8 {
            self.read(reg::STATUS) as u8
        }

        fn add_status(&mut self, bit: u8) {
            let s = self.status();
            self.write(reg::STATUS, u32::from(s | bit));
        }

        /// ACKNOWLEDGE, DRIVER, the features, FEATURES_OK.
        fn negotiate(&mut self, features: u64) {
            self.add_status(status::ACKNOWLEDGE);
            self.add_status(status::DRIVER);
            self.write(reg::DRIVER_FEATURES_SEL, 0);
            self.write(reg::DRIVER_FEATURES, features as u32);
            self.write(reg::DRIVER_FEATURES_SEL, 1);
            self.write(reg::DRIVER_FEATURES, (features >> 32) as u32);
            self.add_status(status::FEATURES_OK);
        }

        /// Sets up queue `index` with `size` entries at `base` (descriptors, then the
        /// available ring, then the used ring, each 4 KiB apart).
        fn setup_queue(&mut self, index: u32, size: u32, base: u64) {
            self.write(reg::QUEUE_SEL, index);
            self.write(reg::QUEUE_NUM, size);
            for (low, high, addr) in [
                (reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, base),
                (reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH, base + 0x1000),
                (reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH, base + 0x2000),
            ] {
                self.write(low, addr as u32);
                self.write(high, (addr >> 32) as u32);
            }
            self.write(reg::QUEUE_READY, 1);
        }

        /// A device up and running with both queues.
        fn live() -> Self {
            let mut rig = Self::new();
            rig.negotiate(VERSION_1);
            rig.setup_queue(0, 256, 0x1_0000);
            rig.setup_queue(1, 16, 0x2_0000);
            rig.add_status(status::DRIVER_OK);
            assert!(rig.transport.is_activated());
            rig
        }

        fn needs_reset(&mut self) -> bool {
            self.status() & status::NEEDS_RESET != 0
        }
    }

    #[test]
    fn read_only_registers() {
        let mut rig = Rig::new();
        // (register, value)
        let table: &[(u64, u32)] = &[
            (reg::MAGIC_VALUE, 0x7472_6976),
            (reg::VERSION, 2),
            (reg::DEVICE_ID, 42),
            (reg::VENDOR_ID, VENDOR_ID),
            (reg::DEVICE_FEATURES, EXTRA as u32),
            (reg::QUEUE_NUM_MAX, 256),
            (reg::QUEUE_READY, 0),
            (reg::INTERRUPT_STATUS, 0),
            (reg::STATUS, 0),
            (reg::SHM_LEN_LOW, u32::MAX),
            (reg::SHM_LEN_HIGH, u32::MAX),
            (reg::SHM_BASE_LOW, u32::MAX),
            (reg::SHM_BASE_HIGH, u32::MAX),
            (reg::CONFIG_GENERATION, 0),
            // Write-only and unknown registers read as zero.
            (reg::DEVICE_FEATURES_SEL, 0),
            (reg::DRIVER_FEATURES, 0),
            (reg::QUEUE_SEL, 0),
            (reg::QUEUE_NUM, 0),
            (reg::QUEUE_NOTIFY, 0),
            (reg::INTERRUPT_ACK, 0),
            (reg::QUEUE_DESC_LOW, 0),
            (reg::QUEUE_DEVICE_HIGH, 0),
            (0x0c0, 0),
            (0x0f8, 0),
        ];
        for &(offset, want) in table {
            assert_eq!(rig.read(offset), want, "register {offset:#x}");
            // Writing a read-only register changes nothing.
            if ![reg::STATUS, reg::QUEUE_READY].contains(&offset) {
                rig.write(offset, 0xdead_beef);
            }
        }
        for &(offset, want) in &table[..4] {
            assert_eq!(rig.read(offset), want, "register {offset:#x} after writes");
        }
    }

    #[test]
    fn device_features_by_selector() {
        let mut rig = Rig::new();
        // (selector, value)
        for (sel, want) in [
            (0, EXTRA as u32),
            (1, (VERSION_1 >> 32) as u32),
            (2, 0),
            (u32::MAX, 0),
        ] {
            rig.write(reg::DEVICE_FEATURES_SEL, sel);
            assert_eq!(rig.read(reg::DEVICE_FEATURES), want, "selector {sel}");
        }
    }

    #[test]
    fn queue_registers_by_selector() {
        let mut rig = Rig::new();
        rig.negotiate(VERSION_1);
        // (selector, QueueNumMax)
        for (sel, max) in [(0, 256), (1, 16), (2, 0), (u32::MAX, 0)] {
            rig.write(reg::QUEUE_SEL, sel);
            assert_eq!(rig.read(reg::QUEUE_NUM_MAX), max, "queue {sel}");
            rig.write(reg::QUEUE_READY, 1);
            assert_eq!(
                rig.read(reg::QUEUE_READY),
                u32::from(max != 0),
                "queue {sel}"
            );
            rig.write(reg::QUEUE_READY, 0);
        }
        assert!(!rig.needs_reset(), "a missing queue is not an error");
    }

    #[test]
    fn features_are_negotiated_and_checked() {
        // (features the driver accepts, FEATURES_OK accepted)
        let table: &[(u64, bool)] = &[
            (VERSION_1, true),
            (VERSION_1 | EXTRA, true),
            (EXTRA, false),                 // legacy driver
            (VERSION_1 | (1 << 20), false), // never offered
            (VERSION_1 | (1 << 63), false), // never offered, high half
        ];
        for &(features, ok) in table {
            let mut rig = Rig::new();
            rig.negotiate(features);
            let accepted = rig.status() & status::FEATURES_OK != 0;
            assert_eq!(accepted, ok, "features {features:#x}");
            assert_eq!(rig.transport.acked_features(), features);
            let told = rig.state.lock().expect("state").acked;
            assert_eq!(told, ok.then_some(features));
            assert!(!rig.needs_reset());
        }
    }

    #[test]
    fn driver_features_only_while_negotiating() {
        let mut rig = Rig::new();
        rig.write(reg::DRIVER_FEATURES, EXTRA as u32); // before DRIVER
        assert_eq!(rig.transport.acked_features(), 0);
        rig.negotiate(VERSION_1);
        rig.write(reg::DRIVER_FEATURES_SEL, 0);
        rig.write(reg::DRIVER_FEATURES, EXTRA as u32); // after FEATURES_OK
        rig.write(reg::DRIVER_FEATURES_SEL, 5);
        rig.write(reg::DRIVER_FEATURES, u32::MAX); // no such bits
        assert_eq!(rig.transport.acked_features(), VERSION_1);
    }

    #[test]
    fn status_transitions() {
        use status::*;
        const A: u8 = ACKNOWLEDGE;
        const AD: u8 = ACKNOWLEDGE | DRIVER;
        const ADF: u8 = AD | FEATURES_OK;
        const ADFO: u8 = ADF | DRIVER_OK;
        // (status before, value written, status after); the features are negotiated before
        // FEATURES_OK and the queues set up before DRIVER_OK where the table gets there.
        let table: &[(u8, u8, u8)] = &[
            (0, A, A),
            (0, AD, AD),     // two steps at once
            (0, ADFO, ADFO), // all of them
            (0, DRIVER, 0),  // skips ACKNOWLEDGE
            (0, FEATURES_OK, 0),
            (0, DRIVER_OK, 0),
            (A, A | DRIVER_OK, A),
            (A, A | 0x10, A), // a reserved bit
            (AD, ADF, ADF),
            (AD, A, AD), // bits never go away but through a reset
            (ADF, AD, ADF),
            (ADF, ADFO, ADFO),
            (ADFO, ADF, ADFO),
            (ADFO, ADFO, ADFO),
            (ADF, ADF | FAILED, ADF | FAILED),
            (0, FAILED, FAILED),
            (ADFO, 0, 0), // reset
            (A, NEEDS_RESET | A, A),
        ];
        for &(before, value, after) in table {
            let mut rig = Rig::new();
            // Reach `before` the proper way.
            if before & ACKNOWLEDGE != 0 {
                rig.add_status(ACKNOWLEDGE);
            }
            if before & DRIVER != 0 {
                rig.add_status(DRIVER);
            }
            rig.write(reg::DRIVER_FEATURES, VERSION_1 as u32);
            rig.write(reg::DRIVER_FEATURES_SEL, 1);
            rig.write(reg::DRIVER_FEATURES, (VERSION_1 >> 32) as u32);
            if before & FEATURES_OK != 0 {
                rig.add_status(FEATURES_OK);
                rig.setup_queue(0, 64, 0x1_0000);
            }
            if before & DRIVER_OK != 0 {
                rig.add_status(DRIVER_OK);
            }
            assert_eq!(rig.status(), before, "reaching {before:#x}");
            if value & AD == AD && before & DRIVER == 0 {
                // Multi-step writes need the features in place before DRIVER: none here.
                rig.transport.acked_features = VERSION_1;
            }
            rig.write(reg::STATUS, u32::from(value));
            assert_eq!(rig.status(), after, "{before:#x} <- {value:#x}");
            let state = rig.state.lock().expect("state");
            assert_eq!(
                rig.transport.is_activated(),
                after & (DRIVER_OK | FAILED) == DRIVER_OK,
                "{before:#x} <- {value:#x}"
            );
            assert_eq!(
                state.activations.len(),
                usize::from(after & DRIVER_OK != 0 || (before & DRIVER_OK != 0)),
            );
        }
    }

    #[test]
    fn activation_hands_over_the_configured_queues() {
        let rig = Rig::live();
        let state = rig.state.lock().expect("state");
        assert_eq!(
            state.activations,
            vec![vec![
                (true, 256, 0x1_0000, 0x1_1000, 0x1_2000),
                (true, 16, 0x2_0000, 0x2_1000, 0x2_2000),
            ]]
        );
        assert_eq!(state.acked, Some(VERSION_1));
    }

    #[test]
    fn queues_the_driver_leaves_alone_are_handed_over_not_ready() {
        let mut rig = Rig::new();
        rig.negotiate(VERSION_1);
        rig.setup_queue(1, 8, 0x3_0000);
        rig.add_status(status::DRIVER_OK);
        let state = rig.state.lock().expect("state");
        let queues = &state.activations[0];
        assert!(!queues[0].0);
        assert_eq!(queues[1], (true, 8, 0x3_0000, 0x3_1000, 0x3_2000));
    }

    #[test]
    fn bad_queue_sizes_break_the_device() {
        // (queue, size, accepted)
        let table: &[(u32, u32, bool)] = &[
            (0, 256, true),
            (0, 1, true),
            (0, 128, true),
            (1, 16, true),
            (0, 0, false),
            (0, 100, false), // not a power of two
            (0, 512, false), // over the max
            (1, 32, false),
            (0, 0x1_0000 + 64, false), // a power of two in the low 16 bits only
            (0, u32::MAX, false),
        ];
        for &(queue, size, accepted) in table {
            let mut rig = Rig::new();
            rig.negotiate(VERSION_1);
            rig.write(reg::QUEUE_SEL, queue);
            rig.write(reg::QUEUE_NUM, size);
            assert_eq!(!rig.needs_reset(), accepted, "queue {queue} size {size}");
            if !accepted {
                assert!(matches!(
                    rig.transport.broken(),
                    Some(MmioError::QueueSize { .. })
                ));
                // Broken: DRIVER_OK is refused and nothing is activated.
                rig.add_status(status::DRIVER_OK);
                assert_eq!(rig.status() & status::DRIVER_OK, 0);
                assert!(rig.state.lock().expect("state").activations.is_empty());
            }
        }
    }

    #[test]
    fn queue_changes_after_driver_ok_are_refused() {
        for register in [
            reg::QUEUE_NUM,
            reg::QUEUE_READY,
            reg::QUEUE_DESC_LOW,
            reg::QUEUE_DESC_HIGH,
            reg::QUEUE_DRIVER_LOW,
            reg::QUEUE_DRIVER_HIGH,
            reg::QUEUE_DEVICE_LOW,
            reg::QUEUE_DEVICE_HIGH,
        ] {
            let mut rig = Rig::live();
            rig.write(reg::QUEUE_SEL, 0);
            let irq_before = rig.transport.signals().irq().read().ok();
            rig.write(register, 8);
            assert!(rig.needs_reset(), "register {register:#x}");
            assert!(matches!(
                rig.transport.broken(),
                Some(MmioError::QueueChangedAfterDriverOk { queue: 0, register: r }) if *r == register
            ));
            // The write did not land, the device was stopped, the driver was told.
            assert_eq!(rig.transport.queues[0].size, 256);
            assert_eq!(rig.transport.queues[0].desc_table, 0x1_0000);
            assert!(rig.transport.queues[0].ready);
            assert!(!rig.transport.is_activated());
            assert_eq!(rig.state.lock().expect("state").resets, 1);
            assert_eq!(irq_before, None, "no interrupt before the write");
            assert_eq!(rig.transport.signals().irq().read().ok(), Some(1));
            assert_eq!(
                rig.read(reg::INTERRUPT_STATUS) & INT_CONFIG,
                INT_CONFIG,
                "register {register:#x}"
            );
            assert_eq!(rig.read(reg::CONFIG_GENERATION), 1);
            // Only a reset brings it back.
            rig.write(reg::STATUS, 0);
            assert_eq!(rig.status(), 0);
            assert!(rig.transport.broken().is_none());
            assert_eq!(rig.read(reg::QUEUE_READY), 0);
        }
    }

    #[test]
    fn queue_writes_before_features_ok_are_ignored() {
        let mut rig = Rig::new();
        rig.add_status(status::ACKNOWLEDGE);
        rig.add_status(status::DRIVER);
        rig.write(reg::QUEUE_NUM, 3);
        rig.write(reg::QUEUE_READY, 1);
        assert_eq!(rig.read(reg::QUEUE_READY), 0);
        assert!(!rig.needs_reset());
    }

    #[test]
    fn rings_outside_memory_or_misaligned_break_the_device() {
        let end = MEM_SIZE as u64;
        // (descriptor table, available ring, used ring)
        let table: &[(u64, u64, u64)] = &[
            (end, 0x1000, 0x2000),               // descriptors past the end
            (end - 0x80, 0x1000, 0x2000),        // descriptors run past the end
            (0x1000, end - 2, 0x3000),           // available ring runs past the end
            (0x1000, 0x2000, end + 0x1000_0000), // used ring far away
            (0x1000, 0x2000, u64::MAX - 3),      // wraps
            (0x1008, 0x2000, 0x3000),            // descriptors not 16-aligned
            (0x1000, 0x2001, 0x3000),            // available ring not 2-aligned
            (0x1000, 0x2000, 0x3002),            // used ring not 4-aligned
        ];
        for &(desc, avail, used) in table {
            let mut rig = Rig::new();
            rig.negotiate(VERSION_1);
            rig.write(reg::QUEUE_SEL, 0);
            rig.write(reg::QUEUE_NUM, 16);
            for (low, high, addr) in [
                (reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, desc),
                (reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH, avail),
                (reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH, used),
            ] {
                rig.write(low, addr as u32);
                rig.write(high, (addr >> 32) as u32);
            }
            rig.write(reg::QUEUE_READY, 1);
            rig.add_status(status::DRIVER_OK);
            let case = format!("{desc:#x} {avail:#x} {used:#x}");
            assert!(rig.needs_reset(), "{case}");
            assert_eq!(rig.status() & status::DRIVER_OK, 0, "{case}");
            assert!(
                matches!(
                    rig.transport.broken(),
                    Some(MmioError::QueueRings { queue: 0 })
                ),
                "{case}"
            );
            assert!(rig.state.lock().expect("state").activations.is_empty());
        }
    }

    #[test]
    fn a_device_that_refuses_activation_is_broken() {
        let mut rig = Rig::new();
        rig.state.lock().expect("state").refuse_activation = true;
        rig.negotiate(VERSION_1);
        rig.setup_queue(0, 16, 0x1_0000);
        rig.add_status(status::DRIVER_OK);
        assert!(rig.needs_reset());
        let err = rig.transport.broken().expect("broken");
        assert_eq!(err.to_string(), "failed to activate the device");
        assert_eq!(
            std::error::Error::source(err).map(ToString::to_string),
            Some("no thanks".to_string())
        );
    }

    #[test]
    fn a_device_can_report_that_it_broke() {
        let mut rig = Rig::live();
        rig.transport
            .signals()
            .signal_needs_reset()
            .expect("signal");
        assert!(rig.needs_reset());
        assert!(matches!(rig.transport.broken(), Some(MmioError::Device)));
        assert!(!rig.transport.is_activated());
        assert_eq!(rig.read(reg::INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
    }

    #[test]
    fn notify_signals_the_queue_event() {
        let mut rig = Rig::new();
        rig.write(reg::QUEUE_NOTIFY, 0); // not live yet: ignored
        assert!(rig.transport.queue_events()[0].read().is_err());
        let mut rig = Rig::live();
        rig.write(reg::QUEUE_NOTIFY, 1);
        rig.write(reg::QUEUE_NOTIFY, 1);
        rig.write(reg::QUEUE_NOTIFY, 7); // no such queue
        rig.write(reg::QUEUE_NOTIFY, u32::MAX);
        assert!(rig.transport.queue_events()[0].read().is_err());
        assert_eq!(rig.transport.queue_events()[1].read().expect("kick"), 2);
    }

    #[test]
    fn interrupt_status_and_ack() {
        let mut rig = Rig::live();
        let signals = rig.transport.signals().clone();
        signals.signal_used_queue().expect("used");
        assert_eq!(rig.read(reg::INTERRUPT_STATUS), INT_USED_RING);
        signals.signal_config_change().expect("config");
        assert_eq!(rig.read(reg::INTERRUPT_STATUS), INT_USED_RING | INT_CONFIG);
        assert_eq!(rig.read(reg::CONFIG_GENERATION), 1);
        assert_eq!(signals.irq().read().expect("irq"), 2);
        rig.write(reg::INTERRUPT_ACK, INT_USED_RING);
        assert_eq!(rig.read(reg::INTERRUPT_STATUS), INT_CONFIG);
        rig.write(reg::INTERRUPT_ACK, u32::MAX);
        assert_eq!(rig.read(reg::INTERRUPT_STATUS), 0);
        // A reset clears the status but not the generation.
        signals.signal_used_queue().expect("used");
        rig.write(reg::STATUS, 0);
        assert_eq!(rig.read(reg::INTERRUPT_STATUS), 0);
        assert_eq!(rig.read(reg::CONFIG_GENERATION), 1);
    }

    #[test]
    fn reset_returns_to_power_on() {
        let mut rig = Rig::live();
        rig.write(reg::QUEUE_SEL, 1);
        rig.write(reg::DEVICE_FEATURES_SEL, 1);
        rig.write(reg::STATUS, 0);
        assert_eq!(rig.state.lock().expect("state").resets, 1);
        assert!(!rig.transport.is_activated());
        assert_eq!(rig.transport.acked_features(), 0);
        assert_eq!(rig.read(reg::DEVICE_FEATURES), EXTRA as u32);
        assert_eq!(rig.read(reg::QUEUE_NUM_MAX), 256);
        assert_eq!(rig.transport.queues[0], QueueConfig::new(256));
        // And it comes up again.
        rig.negotiate(VERSION_1);
        rig.setup_queue(0, 32, 0x4_0000);
        rig.add_status(status::DRIVER_OK);
        assert!(rig.transport.is_activated());
        assert_eq!(rig.state.lock().expect("state").activations.len(), 2);
    }

    #[test]
    fn failed_stops_the_device() {
        let mut rig = Rig::live();
        let s = rig.status();
        rig.write(reg::STATUS, u32::from(s | status::FAILED));
        assert!(!rig.transport.is_activated());
        assert_eq!(rig.state.lock().expect("state").resets, 1);
        rig.write(reg::QUEUE_NOTIFY, 0);
        assert!(rig.transport.queue_events()[0].read().is_err());
    }

    #[test]
    fn config_space_goes_to_the_device() {
        let mut rig = Rig::new();
        rig.state.lock().expect("state").config = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut b = [0u8; 2];
        rig.transport.read(reg::CONFIG + 3, &mut b);
        assert_eq!(b, [4, 5]);
        let mut wide = [0u8; 8];
        rig.transport.read(reg::CONFIG, &mut wide);
        assert_eq!(wide, [1, 2, 3, 4, 5, 6, 7, 8]);
        rig.transport.read(reg::CONFIG + 6, &mut b[..1]);
        assert_eq!(b[0], 7);
        // Writes need a driver.
        rig.transport.write(reg::CONFIG, &[9]);
        assert_eq!(rig.state.lock().expect("state").config[0], 1);
        rig.add_status(status::ACKNOWLEDGE);
        rig.add_status(status::DRIVER);
        rig.transport.write(reg::CONFIG, &[9]);
        assert_eq!(rig.state.lock().expect("state").config[0], 9);
        // Past the window's end reads as zero.
        rig.transport.read(u64::MAX - 1, &mut b);
        assert_eq!(b, [0, 0]);
    }

    #[test]
    fn odd_register_accesses_are_ignored() {
        let mut rig = Rig::new();
        let mut one = [0xffu8];
        rig.transport.read(reg::MAGIC_VALUE, &mut one);
        assert_eq!(one, [0], "byte read of a register");
        let mut two = [0xffu8; 2];
        rig.transport.read(reg::MAGIC_VALUE + 2, &mut two);
        assert_eq!(two, [0, 0]);
        let mut four = [0xffu8; 4];
        rig.transport.read(reg::MAGIC_VALUE + 1, &mut four);
        assert_eq!(four, [0; 4], "unaligned");
        rig.transport.write(reg::STATUS, &[status::ACKNOWLEDGE]);
        rig.transport.write(reg::STATUS + 1, &1u32.to_le_bytes());
        rig.transport.write(reg::STATUS, &1u64.to_le_bytes());
        assert_eq!(rig.status(), 0);
        rig.write(reg::STATUS, 0x101); // more than a byte
        assert_eq!(rig.status(), 0);
        assert!(!rig.needs_reset());
    }

    #[test]
    fn invalid_device_max_sizes_are_refused() {
        struct Odd;
        impl VirtioDevice for Odd {
            fn device_type(&self) -> u32 {
                1
            }
            fn avail_features(&self) -> u64 {
                0
            }
            fn set_acked_features(&mut self, _: u64) -> Result<(), DeviceError> {
                Ok(())
            }
            fn queue_max_sizes(&self) -> &[u16] {
                &[256, 100]
            }
            fn read_config(&self, _: u64, _: &mut [u8]) {}
            fn write_config(&mut self, _: u64, _: &[u8]) {}
            fn activate(
                &mut self,
                _: GuestMemoryMmap,
                _: Vec<Queue>,
                _: Arc<DeviceSignals>,
            ) -> Result<(), DeviceError> {
                Ok(())
            }
            fn reset(&mut self) {}
        }
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).expect("mem");
        let err = MmioTransport::new(
            mem,
            Arc::new(Mutex::new(Odd)),
            EventFd::new(EFD_NONBLOCK).expect("irq"),
        )
        .expect_err("100 is no power of two");
        assert!(matches!(
            err,
            MmioError::InvalidMaxSize { queue: 1, max: 100 }
        ));
    }

    #[test]
    fn cmdline_arg_names_the_window() {
        assert_eq!(
            MmioTransport::cmdline_arg(0xd000_0000, 5),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
    }
}
