//! The vsock device behind the in-process virtio-mmio transport: [`MmioVsock`] adapts a
//! [`VsockDevice`] (which owns no queues, so that the vhost-user backend can keep handing it
//! the frontend's) to [`VirtioDevice`]. It keeps the queues and guest memory it gets at
//! activation, and its `handle_*` methods are what the VM's device event loop calls when a
//! queue eventfd or the backend's fd is ready; interrupts go out through the transport's
//! [`DeviceSignals`].
//!
//! The vsock device's own checks all apply (the layout frozen at DRIVER_OK, every chain
//! checked); when it breaks, the adapter drops its queues and tells the transport, whose
//! status then reads DEVICE_NEEDS_RESET.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use super::{DeviceError, DeviceSignals, VirtioDevice};
use crate::devices::virtio::vsock::{
    Notify, VsockBackend, VsockDevice, VsockError, EVQ, MAX_QUEUE_SIZE, NUM_QUEUES, RXQ, TXQ,
};

/// The largest size of each of the three queues.
const MAX_SIZES: [u16; NUM_QUEUES] = [MAX_QUEUE_SIZE; NUM_QUEUES];

/// Why handling a vsock event failed.
#[derive(Debug, thiserror::Error)]
pub enum MmioVsockError {
    /// The device broke (or had broken before).
    #[error("vsock device failed")]
    Device(#[source] VsockError),
    /// A queue index that is not rx, tx or event.
    #[error("no vsock queue {0}")]
    NoSuchQueue(usize),
    /// Raising the interrupt failed.
    #[error("failed to raise the vsock interrupt")]
    Interrupt(#[source] std::io::Error),
}

/// What the adapter holds between DRIVER_OK and a reset.
struct Live {
    mem: GuestMemoryMmap,
    queues: [Queue; NUM_QUEUES],
    signals: Arc<DeviceSignals>,
}

/// A [`VsockDevice`] as a [`VirtioDevice`].
pub struct MmioVsock<B> {
    device: VsockDevice<B>,
    live: Option<Live>,
}

impl<B: VsockBackend> std::fmt::Debug for MmioVsock<B>
where
    VsockDevice<B>: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioVsock")
            .field("device", &self.device)
            .field("live", &self.live.is_some())
            .finish()
    }
}

impl<B: VsockBackend> MmioVsock<B> {
    /// Wraps `device`.
    pub fn new(device: VsockDevice<B>) -> Self {
        Self { device, live: None }
    }

    /// The device.
    pub fn device(&self) -> &VsockDevice<B> {
        &self.device
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut VsockDevice<B> {
        &mut self.device
    }

    /// Whether the driver has started the device (DRIVER_OK, no reset since).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// The driver kicked queue `index` (the caller has read its eventfd).
    pub fn handle_queue_event(&mut self, index: usize) -> Result<(), MmioVsockError> {
        let Some(live) = self.live.as_mut() else {
            // Not started (or reset since): the kick is stale.
            return Ok(());
        };
        let [rxq, txq, evq] = &mut live.queues;
        let result = match index {
            RXQ => self.device.handle_rxq_event(&live.mem, rxq),
            TXQ => self.device.handle_txq_event(&live.mem, txq, Some(rxq)),
            EVQ => self.device.handle_evq_event(&live.mem, evq),
            _ => return Err(MmioVsockError::NoSuchQueue(index)),
        };
        self.finish(result)
    }

    /// The backend's fd is ready with `evset`.
    pub fn handle_backend_event(&mut self, evset: EventSet) -> Result<(), MmioVsockError> {
        let result = match self.live.as_mut() {
            Some(live) => {
                let [rxq, _, _] = &mut live.queues;
                self.device
                    .handle_backend_event(&live.mem, evset, Some(rxq))
            }
            None => self
                .device
                .handle_backend_event_unmapped(evset)
                .map(|()| Notify::default()),
        };
        self.finish(result)
    }

    /// Raises the interrupt the device asked for, or, when it broke, stops and tells the
    /// transport.
    fn finish(&mut self, result: Result<Notify, VsockError>) -> Result<(), MmioVsockError> {
        match result {
            Ok(notify) => {
                if notify.rx || notify.tx {
                    if let Some(live) = &self.live {
                        live.signals
                            .signal_used_queue()
                            .map_err(MmioVsockError::Interrupt)?;
                    }
                }
                Ok(())
            }
            Err(err) => {
                if let Some(live) = self.live.take() {
                    // Best effort: the device stays broken whether or not the driver hears.
                    let _ = live.signals.signal_needs_reset();
                }
                Err(MmioVsockError::Device(err))
            }
        }
    }
}

impl<B: VsockBackend> VirtioDevice for MmioVsock<B> {
    fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    fn avail_features(&self) -> u64 {
        self.device.avail_features()
    }

    fn set_acked_features(&mut self, features: u64) -> Result<(), DeviceError> {
        Ok(self.device.ack_features(features)?)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &MAX_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.device.read_config(offset, data);
    }

    /// The vsock config space (the guest CID) is read-only.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        signals: Arc<DeviceSignals>,
    ) -> Result<(), DeviceError> {
        let count = queues.len();
        let mut queues: [Queue; NUM_QUEUES] = queues
            .try_into()
            .map_err(|_| format!("vsock needs {NUM_QUEUES} queues, got {count}"))?;
        let [rxq, txq, evq] = &mut queues;
        self.device.driver_ok(&mem, [rxq, txq, evq])?;
        self.live = Some(Live {
            mem,
            queues,
            signals,
        });
        // Whatever the host side has waiting goes out at once, as if the backend woke.
        self.handle_backend_event(EventSet::empty())?;
        Ok(())
    }

    fn reset(&mut self) {
        self.live = None;
        self.device.reset();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::devices::bus::BusDevice;
    use crate::devices::virtio::mmio::{reg, status, MmioTransport, INT_USED_RING};
    use crate::devices::virtio::vsock::op;
    use crate::devices::virtio::vsock::test_utils::{
        desc, guest_memory, tx_packet, TestBackend, CID,
    };
    use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_NEXT;

    const QSIZE: u32 = 16;
    /// Queue `q`'s rings: descriptors, available ring, used ring.
    fn rings(q: u64) -> (u64, u64, u64) {
        let base = 0x1_0000 + q * 0x1000;
        (base, base + 0x400, base + 0x800)
    }

    struct Rig {
        mem: GuestMemoryMmap,
        transport: MmioTransport,
        vsock: Arc<Mutex<MmioVsock<TestBackend>>>,
    }

    impl Rig {
        fn new() -> Self {
            let mem = guest_memory();
            let device = VsockDevice::new(CID, TestBackend::default()).expect("device");
            let vsock = Arc::new(Mutex::new(MmioVsock::new(device)));
            let dyn_device: Arc<Mutex<dyn VirtioDevice>> = vsock.clone();
            let irq = EventFd::new(EFD_NONBLOCK).expect("irq");
            let transport = MmioTransport::new(mem.clone(), dyn_device, irq).expect("transport");
            Self {
                mem,
                transport,
                vsock,
            }
        }

        fn write(&mut self, offset: u64, value: u32) {
            self.transport.write(offset, &value.to_le_bytes());
        }

        fn read(&mut self, offset: u64) -> u32 {
            let mut data = [0u8; 4];
            self.transport.read(offset, &mut data);
            u32::from_le_bytes(data)
        }

        fn add_status(&mut self, bit: u8) {
            let s = self.read(reg::STATUS);
            self.write(reg::STATUS, s | u32::from(bit));
        }

        /// What Linux's virtio_mmio and vsock drivers do, up to DRIVER_OK.
        fn bring_up(&mut self) {
            assert_eq!(self.read(reg::MAGIC_VALUE), 0x7472_6976);
            assert_eq!(self.read(reg::VERSION), 2);
            assert_eq!(self.read(reg::DEVICE_ID), 19);
            self.write(reg::STATUS, 0);
            self.add_status(status::ACKNOWLEDGE);
            self.add_status(status::DRIVER);
            self.write(reg::DEVICE_FEATURES_SEL, 1);
            let high = self.read(reg::DEVICE_FEATURES);
            assert_eq!(high & 1, 1, "VERSION_1 offered");
            self.write(reg::DRIVER_FEATURES_SEL, 1);
            self.write(
                reg::DRIVER_FEATURES,
                (1u64 << VIRTIO_F_VERSION_1 >> 32) as u32,
            );
            self.write(reg::DRIVER_FEATURES_SEL, 0);
            self.write(reg::DRIVER_FEATURES, 0);
            self.add_status(status::FEATURES_OK);
            assert_ne!(self.read(reg::STATUS) as u8 & status::FEATURES_OK, 0);
            let mut cid = [0u8; 8];
            self.transport.read(reg::CONFIG, &mut cid);
            assert_eq!(u64::from_le_bytes(cid), CID);
            for q in 0..3u32 {
                self.write(reg::QUEUE_SEL, q);
                assert_eq!(self.read(reg::QUEUE_READY), 0);
                assert_eq!(self.read(reg::QUEUE_NUM_MAX), 1024);
                self.write(reg::QUEUE_NUM, QSIZE);
                let (d, a, u) = rings(u64::from(q));
                self.write(reg::QUEUE_DESC_LOW, d as u32);
                self.write(reg::QUEUE_DESC_HIGH, 0);
                self.write(reg::QUEUE_DRIVER_LOW, a as u32);
                self.write(reg::QUEUE_DRIVER_HIGH, 0);
                self.write(reg::QUEUE_DEVICE_LOW, u as u32);
                self.write(reg::QUEUE_DEVICE_HIGH, 0);
                self.write(reg::QUEUE_READY, 1);
            }
            self.add_status(status::DRIVER_OK);
            assert!(
                self.transport.is_activated(),
                "{:?}",
                self.transport.broken()
            );
        }

        /// Puts a one-descriptor-per-part packet on the tx queue and publishes it.
        fn queue_tx(&self, op: u16, data: &[u8]) {
            let (hdr, payload) = tx_packet(op, data);
            let (table, avail, _) = rings(1);
            let (hdr_at, data_at) = (0x8_0000u64, 0x8_1000u64);
            self.mem
                .write_slice(&hdr.to_bytes(), GuestAddress(hdr_at))
                .expect("header");
            self.mem
                .write_slice(&payload, GuestAddress(data_at))
                .expect("payload");
            let len = u32::try_from(payload.len()).expect("small");
            self.mem
                .write_slice(&desc(hdr_at, 44, VRING_DESC_F_NEXT, 1), GuestAddress(table))
                .expect("desc");
            self.mem
                .write_slice(&desc(data_at, len, 0, 0), GuestAddress(table + 16))
                .expect("desc");
            self.mem
                .write_obj(0u16, GuestAddress(avail + 4))
                .expect("ring");
            self.mem
                .write_obj(1u16, GuestAddress(avail + 2))
                .expect("avail idx");
        }
    }

    #[test]
    fn a_guest_packet_travels_through_the_transport() {
        let mut rig = Rig::new();
        rig.bring_up();
        rig.queue_tx(op::RW, b"hello");
        // The driver kicks tx; the event loop sees the eventfd and runs the device.
        rig.write(reg::QUEUE_NOTIFY, 1);
        assert_eq!(rig.transport.queue_events()[1].read().expect("kick"), 1);
        rig.vsock
            .lock()
            .expect("vsock")
            .handle_queue_event(TXQ)
            .expect("tx");
        {
            let vsock = rig.vsock.lock().expect("vsock");
            let sent = &vsock.device().backend().sent;
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0].1, b"hello");
        }
        // The used ring has it and the driver got its interrupt.
        let (_, _, used) = rings(1);
        let used_idx: u16 = rig.mem.read_obj(GuestAddress(used + 2)).expect("used idx");
        assert_eq!(used_idx, 1);
        assert_eq!(rig.transport.signals().irq().read().expect("irq"), 1);
        assert_eq!(rig.read(reg::INTERRUPT_STATUS), INT_USED_RING);
    }

    #[test]
    fn a_broken_vsock_device_needs_a_reset() {
        let mut rig = Rig::new();
        rig.bring_up();
        // A descriptor that points outside guest memory.
        let (table, avail, _) = rings(1);
        rig.mem
            .write_slice(&desc(0xffff_0000_0000, 44, 0, 0), GuestAddress(table))
            .expect("desc");
        rig.mem
            .write_obj(0u16, GuestAddress(avail + 4))
            .expect("ring");
        rig.mem
            .write_obj(1u16, GuestAddress(avail + 2))
            .expect("idx");
        let err = rig
            .vsock
            .lock()
            .expect("vsock")
            .handle_queue_event(TXQ)
            .expect_err("bad chain");
        assert!(matches!(
            err,
            MmioVsockError::Device(VsockError::Packet { .. })
        ));
        assert!(!rig.vsock.lock().expect("vsock").is_live());
        assert_ne!(rig.read(reg::STATUS) as u8 & status::NEEDS_RESET, 0);
        assert!(rig.transport.broken().is_some());
        // Later kicks are stale, not errors.
        rig.vsock
            .lock()
            .expect("vsock")
            .handle_queue_event(TXQ)
            .expect("stale kick");
    }

    #[test]
    fn a_reset_stops_the_device() {
        let mut rig = Rig::new();
        rig.bring_up();
        rig.write(reg::STATUS, 0);
        let vsock = rig.vsock.lock().expect("vsock");
        assert!(!vsock.is_live());
        assert_eq!(vsock.device().acked_features(), 0);
        assert!(!vsock.device().queue_started(TXQ));
    }

    #[test]
    fn kicks_before_driver_ok_are_stale() {
        let rig = Rig::new();
        let mut vsock = rig.vsock.lock().expect("vsock");
        vsock.handle_queue_event(TXQ).expect("nothing to do");
        vsock.handle_backend_event(EventSet::IN).expect("unmapped");
        assert!(matches!(
            vsock.handle_queue_event(3),
            Ok(()) // not live: nothing is looked at
        ));
    }
}
