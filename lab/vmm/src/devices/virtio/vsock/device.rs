//! The vsock device proper: its features, its config space (the guest CID), its health, and
//! the queue lifecycle. The queues themselves belong to whoever transports them (the
//! vhost-user library's vrings today, the lab's own virtio-mmio transport later); the device
//! is handed them on every event and checks them before use.
//!
//! A queue is *started* at DRIVER_OK (in process: [`VsockDevice::driver_ok`]) or on its first
//! event (vhost-user, where the frontend starts rings one by one); from then on its size and
//! ring addresses are frozen, and a change breaks the device. A *broken* device has recorded
//! its first error, closed its host connections, and answers every later call with
//! [`VsockError::Broken`]; only a new device (a new VM) serves again.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use super::chain::Chain;
use super::{
    VsockBackend, VsockError, HOST_CID, MAX_PKT_DATA, MAX_QUEUE_SIZE, NUM_QUEUES, QUEUE_NAMES,
    VIRTIO_ID_VSOCK,
};

/// A queue's size and ring addresses, frozen when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    /// Queue size.
    pub size: u16,
    /// Descriptor table address.
    pub desc_table: u64,
    /// Available ring address.
    pub avail_ring: u64,
    /// Used ring address.
    pub used_ring: u64,
}

impl QueueLayout {
    /// The layout `queue` has now.
    pub fn of(queue: &Queue) -> Self {
        Self {
            size: queue.size(),
            desc_table: queue.desc_table(),
            avail_ring: queue.avail_ring(),
            used_ring: queue.used_ring(),
        }
    }
}

/// A driver's write to a queue's configuration (the virtio-mmio `Queue*` registers), for the
/// in-process transport. Allowed before DRIVER_OK only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueWrite {
    /// `QueueNum`.
    Size(u16),
    /// `QueueDescLow`/`QueueDescHigh`.
    DescTable {
        /// Low 32 bits, if written.
        low: Option<u32>,
        /// High 32 bits, if written.
        high: Option<u32>,
    },
    /// `QueueDriverLow`/`QueueDriverHigh` (the available ring).
    AvailRing {
        /// Low 32 bits, if written.
        low: Option<u32>,
        /// High 32 bits, if written.
        high: Option<u32>,
    },
    /// `QueueDeviceLow`/`QueueDeviceHigh` (the used ring).
    UsedRing {
        /// Low 32 bits, if written.
        low: Option<u32>,
        /// High 32 bits, if written.
        high: Option<u32>,
    },
    /// `QueueReady`.
    Ready(bool),
}

/// The virtio-vsock device with its backend.
#[derive(Debug)]
pub struct VsockDevice<B> {
    guest_cid: u64,
    acked_features: u64,
    pub(super) backend: B,
    broken: Option<String>,
    started: [Option<QueueLayout>; NUM_QUEUES],
    /// Scratch space reused for every packet.
    pub(super) chain: Chain,
    pub(super) tx_data: Vec<u8>,
    pub(super) rx_data: Vec<u8>,
}

impl<B: VsockBackend> VsockDevice<B> {
    /// A device for a guest with `guest_cid`, bridged to `backend`.
    pub fn new(guest_cid: u64, backend: B) -> Result<Self, VsockError> {
        if guest_cid <= HOST_CID || guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        Ok(Self {
            guest_cid,
            acked_features: 0,
            backend,
            broken: None,
            started: [None; NUM_QUEUES],
            chain: Chain::default(),
            tx_data: Vec::with_capacity(MAX_PKT_DATA as usize),
            rx_data: vec![0; MAX_PKT_DATA as usize],
        })
    }

    /// The virtio device id (19).
    pub fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The features the device offers: virtio 1.x, indirect descriptors and event-index
    /// notification suppression; no SEQPACKET. (QEMU's vhost-user-vsock offers the guest
    /// indirect descriptors and event index whatever the backend says, so both must work.)
    pub fn avail_features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
    }

    /// The features the driver acknowledged.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// The driver acknowledges `features`; acknowledging one never offered breaks the device.
    pub fn ack_features(&mut self, features: u64) -> Result<(), VsockError> {
        let unknown = features & !self.avail_features();
        if unknown != 0 {
            return Err(self.fail(VsockError::UnknownFeatures(unknown)));
        }
        self.acked_features = features;
        Ok(())
    }

    /// Whether indirect descriptors were negotiated.
    pub fn indirect_desc(&self) -> bool {
        self.acked_features & (1 << VIRTIO_RING_F_INDIRECT_DESC) != 0
    }

    /// Whether event-index notification suppression is in use.
    pub fn event_idx(&self) -> bool {
        self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0
    }

    /// The config space: `struct virtio_vsock_config { le64 guest_cid; }`.
    pub fn config_space(&self) -> [u8; 8] {
        self.guest_cid.to_le_bytes()
    }

    /// Reads `data.len()` config bytes at `offset`; bytes past the end read as zero.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_space();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|at| config.get(at).copied())
                .unwrap_or(0);
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// Why the device broke, if it did.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Records the device's first error, closes its host connections, and returns the error
    /// (for `?`).
    pub fn fail(&mut self, err: VsockError) -> VsockError {
        if self.broken.is_none() {
            self.broken = Some(error_chain(&err));
            self.backend.close_all();
        }
        err
    }

    /// `Err(Broken)` once the device has failed.
    pub(super) fn check_healthy(&self) -> Result<(), VsockError> {
        match &self.broken {
            Some(reason) => Err(VsockError::Broken {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Starts queue `index`: it must be ready, no larger than the device allows, and its
    /// rings must lie in guest memory. Its layout is frozen from now on.
    pub fn start_queue<M: GuestMemory>(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<(), VsockError> {
        self.check_healthy()?;
        let name = QUEUE_NAMES[index];
        if !queue.ready() || queue.size() > MAX_QUEUE_SIZE || !queue.is_valid(mem) {
            return Err(self.fail(VsockError::QueueInvalid { queue: name }));
        }
        queue.set_event_idx(self.event_idx());
        self.started[index] = Some(QueueLayout::of(queue));
        Ok(())
    }

    /// Stops queue `index` (the frontend takes the ring back; it may configure it anew).
    pub fn stop_queue(&mut self, index: usize) {
        if let Some(slot) = self.started.get_mut(index) {
            *slot = None;
        }
    }

    /// Whether queue `index` has started.
    pub fn queue_started(&self, index: usize) -> bool {
        self.started.get(index).is_some_and(Option::is_some)
    }

    /// Before using queue `index`: starts it if it has not started, or checks that its layout
    /// is the one frozen at start.
    pub(super) fn check_queue<M: GuestMemory>(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<(), VsockError> {
        self.check_healthy()?;
        match self.started[index] {
            None => self.start_queue(index, queue, mem),
            Some(layout) if layout == QueueLayout::of(queue) && queue.ready() => Ok(()),
            Some(_) => Err(self.fail(VsockError::QueueReconfigured {
                queue: QUEUE_NAMES[index],
            })),
        }
    }

    /// DRIVER_OK (in-process transport): starts every queue.
    pub fn driver_ok<M: GuestMemory>(
        &mut self,
        mem: &M,
        queues: [&mut Queue; NUM_QUEUES],
    ) -> Result<(), VsockError> {
        for (index, queue) in queues.into_iter().enumerate() {
            self.start_queue(index, queue, mem)?;
        }
        Ok(())
    }

    /// A driver write to queue `index`'s configuration (in-process transport). Before the
    /// queue starts it is applied; after, the device breaks.
    pub fn write_queue_config(
        &mut self,
        index: usize,
        queue: &mut Queue,
        write: QueueWrite,
    ) -> Result<(), VsockError> {
        self.check_healthy()?;
        if self.started[index].is_some() {
            return Err(self.fail(VsockError::QueueReconfigured {
                queue: QUEUE_NAMES[index],
            }));
        }
        match write {
            QueueWrite::Size(size) => queue.set_size(size),
            QueueWrite::DescTable { low, high } => queue.set_desc_table_address(low, high),
            QueueWrite::AvailRing { low, high } => queue.set_avail_ring_address(low, high),
            QueueWrite::UsedRing { low, high } => queue.set_used_ring_address(low, high),
            QueueWrite::Ready(ready) => queue.set_ready(ready),
        }
        Ok(())
    }

    /// Device reset by the driver: queues stop and features are forgotten. A broken device
    /// stays broken.
    pub fn reset(&mut self) {
        self.started = [None; NUM_QUEUES];
        self.acked_features = 0;
    }

    /// Takes the next available chain's head from queue `index`, after checking that the
    /// driver has not published more entries than the queue holds.
    pub(super) fn pop_head<M: GuestMemory>(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<Option<u16>, VsockError> {
        let name = QUEUE_NAMES[index];
        let avail = match queue.avail_idx(mem, Ordering::Acquire) {
            Ok(idx) => idx,
            Err(source) => {
                return Err(self.fail(VsockError::Queue {
                    queue: name,
                    source,
                }))
            }
        };
        let ahead = (avail - Wrapping(queue.next_avail())).0;
        if ahead > queue.size() {
            return Err(self.fail(VsockError::AvailIndexAhead {
                queue: name,
                ahead,
                size: queue.size(),
            }));
        }
        if ahead == 0 {
            return Ok(None);
        }
        let head = match queue.iter(mem) {
            Ok(mut iter) => iter.next().map(|chain| chain.head_index()),
            Err(source) => {
                return Err(self.fail(VsockError::Queue {
                    queue: name,
                    source,
                }))
            }
        };
        Ok(head)
    }
}

/// An error and its sources as one line ("a: b: c").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::test_utils::{guest_memory, TestBackend};

    #[test]
    fn reserved_cids_are_refused() {
        for cid in [0, 1, 2, u64::from(u32::MAX), u64::MAX] {
            assert!(matches!(
                VsockDevice::new(cid, TestBackend::default()),
                Err(VsockError::InvalidCid(_))
            ));
        }
        assert!(VsockDevice::new(3, TestBackend::default()).is_ok());
    }

    #[test]
    fn config_space_holds_the_guest_cid() {
        let dev = VsockDevice::new(0x1234_5678, TestBackend::default()).expect("device");
        assert_eq!(dev.device_type(), 19);
        let mut all = [0xffu8; 10];
        dev.read_config(0, &mut all);
        assert_eq!(&all[..8], &0x1234_5678u64.to_le_bytes());
        assert_eq!(&all[8..], &[0, 0]);
        let mut hi = [0u8; 4];
        dev.read_config(4, &mut hi);
        assert_eq!(hi, [0; 4]);
        dev.read_config(u64::MAX, &mut hi);
        assert_eq!(hi, [0; 4]);
    }

    #[test]
    fn unknown_features_break_the_device() {
        let mut dev = VsockDevice::new(3, TestBackend::default()).expect("device");
        dev.ack_features(dev.avail_features()).expect("offered");
        assert!(dev.event_idx());
        let err = dev.ack_features(1 << 27).expect_err("not offered");
        assert!(matches!(err, VsockError::UnknownFeatures(_)));
        assert!(dev.broken().is_some());
        assert!(dev.backend().closed);
    }

    #[test]
    fn a_queue_outside_guest_memory_does_not_start() {
        let mem = guest_memory();
        let mut dev = VsockDevice::new(3, TestBackend::default()).expect("device");
        let mut q = Queue::new(16).expect("queue");
        q.set_size(16);
        q.set_desc_table_address(Some(0xffff_0000), Some(0x10));
        q.set_avail_ring_address(Some(0x2000), None);
        q.set_used_ring_address(Some(0x3000), None);
        q.set_ready(true);
        let err = dev.start_queue(0, &mut q, &mem).expect_err("outside");
        assert!(matches!(err, VsockError::QueueInvalid { queue: "rx" }));
        assert!(dev.broken().is_some());
    }
}
