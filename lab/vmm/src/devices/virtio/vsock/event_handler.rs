//! The vsock device's event handling: one `handle_*` per event source (a kick on the rx, tx or
//! event queue; readiness of the backend's fd). Each checks the device's health and the queues
//! it touches, does the work, and says which queues need an interrupt ([`Notify`]); the
//! transport delivers it (a vhost-user call eventfd, or an irqfd in process).

use vm_memory::{GuestAddress, GuestMemory};
use vmm_sys_util::epoll::EventSet;

use virtio_queue::{Queue, QueueT};

use super::chain::{walk_chain, ChainRules, Direction};
use super::device::VsockDevice;
use super::packet::{read_tx, rx_capacity, write_rx, PacketError};
use super::{VsockBackend, VsockError, EVQ, QUEUE_NAMES, RXQ, TXQ};

/// Which queues' used rings changed in a way the driver asked to hear about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    /// Interrupt for the rx queue.
    pub rx: bool,
    /// Interrupt for the tx queue.
    pub tx: bool,
}

impl<B: VsockBackend> VsockDevice<B> {
    /// The driver added receive buffers: deliver what the backend has for the guest.
    pub fn handle_rxq_event<M: GuestMemory>(
        &mut self,
        mem: &M,
        rxq: &mut Queue,
    ) -> Result<Notify, VsockError> {
        self.check_queue(RXQ, rxq, mem)?;
        Ok(Notify {
            rx: self.process_rx(mem, rxq)?,
            tx: false,
        })
    }

    /// The driver queued packets: take them all, then deliver the replies they caused (when
    /// the rx queue has started).
    pub fn handle_txq_event<M: GuestMemory>(
        &mut self,
        mem: &M,
        txq: &mut Queue,
        rxq: Option<&mut Queue>,
    ) -> Result<Notify, VsockError> {
        self.check_queue(TXQ, txq, mem)?;
        let tx = self.process_tx(mem, txq)?;
        let rx = match rxq {
            Some(rxq) if self.queue_started(RXQ) => {
                self.check_queue(RXQ, rxq, mem)?;
                self.process_rx(mem, rxq)?
            }
            _ => false,
        };
        Ok(Notify { rx, tx })
    }

    /// The driver added event-queue buffers. The device keeps them: it never sends transport
    /// events (those follow a migration, which the lab does not do).
    pub fn handle_evq_event<M: GuestMemory>(
        &mut self,
        mem: &M,
        evq: &mut Queue,
    ) -> Result<Notify, VsockError> {
        self.check_queue(EVQ, evq, mem)?;
        Ok(Notify::default())
    }

    /// The backend's fd is ready: let the backend act, then deliver what it has (when the rx
    /// queue has started; until then it waits).
    pub fn handle_backend_event<M: GuestMemory>(
        &mut self,
        mem: &M,
        evset: EventSet,
        rxq: Option<&mut Queue>,
    ) -> Result<Notify, VsockError> {
        self.check_healthy()?;
        self.backend.notify(evset);
        let rx = match rxq {
            Some(rxq) if self.queue_started(RXQ) => {
                self.check_queue(RXQ, rxq, mem)?;
                self.process_rx(mem, rxq)?
            }
            _ => false,
        };
        Ok(Notify { rx, tx: false })
    }

    /// The backend's fd is ready before the transport has handed over guest memory (the guest
    /// driver is not up yet): the backend takes its events, and what it has for the guest
    /// waits. Not taking them would leave a level-triggered fd ready forever.
    pub fn handle_backend_event_unmapped(&mut self, evset: EventSet) -> Result<(), VsockError> {
        self.check_healthy()?;
        self.backend.notify(evset);
        Ok(())
    }

    fn queue_err(&mut self, index: usize, source: virtio_queue::Error) -> VsockError {
        self.fail(VsockError::Queue {
            queue: QUEUE_NAMES[index],
            source,
        })
    }

    fn packet_err(&mut self, index: usize, source: PacketError) -> VsockError {
        self.fail(VsockError::Packet {
            queue: QUEUE_NAMES[index],
            source,
        })
    }

    fn chain_rules(&self, queue: &Queue) -> ChainRules {
        ChainRules {
            desc_table: GuestAddress(queue.desc_table()),
            size: queue.size(),
            indirect: self.indirect_desc(),
        }
    }

    /// Whether the driver wants an interrupt for what was just added to the used ring.
    fn needs_interrupt<M: GuestMemory>(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &M,
        used: bool,
    ) -> Result<bool, VsockError> {
        if !used {
            return Ok(false);
        }
        queue
            .needs_notification(mem)
            .map_err(|e| self.queue_err(index, e))
    }

    /// Takes every packet from the transmit queue to the backend.
    fn process_tx<M: GuestMemory>(&mut self, mem: &M, txq: &mut Queue) -> Result<bool, VsockError> {
        let mut used = false;
        loop {
            txq.disable_notification(mem)
                .map_err(|e| self.queue_err(TXQ, e))?;
            while let Some(head) = self.pop_head(TXQ, txq, mem)? {
                let rules = self.chain_rules(txq);
                let walked = walk_chain(mem, rules, head, Direction::DeviceReads, &mut self.chain);
                let hdr = walked.and_then(|()| read_tx(mem, &self.chain, &mut self.tx_data));
                let hdr = hdr.map_err(|e| self.packet_err(TXQ, e))?;
                self.backend.send_pkt(&hdr, &self.tx_data);
                txq.add_used(mem, head, 0)
                    .map_err(|e| self.queue_err(TXQ, e))?;
                used = true;
            }
            let more = txq
                .enable_notification(mem)
                .map_err(|e| self.queue_err(TXQ, e))?;
            if !more {
                break;
            }
        }
        self.needs_interrupt(TXQ, txq, mem, used)
    }

    /// Fills receive buffers with what the backend has for the guest.
    fn process_rx<M: GuestMemory>(&mut self, mem: &M, rxq: &mut Queue) -> Result<bool, VsockError> {
        let mut used = false;
        loop {
            rxq.disable_notification(mem)
                .map_err(|e| self.queue_err(RXQ, e))?;
            while self.backend.has_pending_rx() {
                let Some(head) = self.pop_head(RXQ, rxq, mem)? else {
                    break;
                };
                let rules = self.chain_rules(rxq);
                let cap = walk_chain(mem, rules, head, Direction::DeviceWrites, &mut self.chain)
                    .and_then(|()| rx_capacity(&self.chain))
                    .map_err(|e| self.packet_err(RXQ, e))?;
                let Some(hdr) = self.backend.recv_pkt(&mut self.rx_data[..cap]) else {
                    // Nothing after all: hand the buffer back.
                    rxq.set_next_avail(rxq.next_avail().wrapping_sub(1));
                    break;
                };
                let data = self.rx_data.get(..hdr.len as usize).unwrap_or_default();
                let written =
                    write_rx(mem, &self.chain, &hdr, data).map_err(|e| self.packet_err(RXQ, e))?;
                rxq.add_used(mem, head, written)
                    .map_err(|e| self.queue_err(RXQ, e))?;
                used = true;
            }
            // Ask to be kicked when buffers come; if some came meanwhile, go on.
            let more = rxq
                .enable_notification(mem)
                .map_err(|e| self.queue_err(RXQ, e))?;
            if !more || !self.backend.has_pending_rx() {
                break;
            }
        }
        self.needs_interrupt(RXQ, rxq, mem, used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::packet::HDR_SIZE;
    use crate::devices::virtio::vsock::test_utils::{
        desc, guest_memory, rx_header, tx_packet, Harness, TestBackend,
    };
    use crate::devices::virtio::vsock::{op, QueueWrite, VsockHeader, MAX_PKT_DATA};
    use proptest::prelude::*;
    use virtio_bindings::bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use vm_memory::Bytes;

    fn assert_broken(h: &Harness<'_>, res: Result<Notify, VsockError>, what: &str) {
        let err = res.expect_err(what);
        assert!(h.dev.broken().is_some(), "{what}: device not broken");
        assert!(
            h.dev.backend().closed,
            "{what}: host connections not closed"
        );
        // Every later event is refused with the first error.
        let again = h.dev.broken().unwrap_or_default().to_string();
        assert!(again.contains(&err.to_string()), "{what}: {again} vs {err}");
    }

    #[test]
    fn tx_packets_reach_the_backend_and_are_returned() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        h.add_tx(&tx_packet(op::RW, b"ping"));
        h.add_tx(&tx_packet(op::REQUEST, b""));
        let n = h.kick_tx().expect("valid");
        assert!(n.tx);
        let got = &h.dev.backend().sent;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.op, op::RW);
        assert_eq!(got[0].1, b"ping");
        assert_eq!(h.tx_used(), 2);
    }

    #[test]
    fn backend_packets_fill_rx_buffers() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        h.dev
            .backend_mut()
            .to_guest
            .push_back((rx_header(op::RW, 5), b"hello".to_vec()));
        h.add_rx(4096);
        let n = h.kick_rx().expect("valid");
        assert!(n.rx);
        let (len, hdr, data) = h.rx_used_packet(0);
        assert_eq!(len as usize, HDR_SIZE + 5);
        assert_eq!(hdr.op, op::RW);
        assert_eq!(data, b"hello");
    }

    #[test]
    fn rx_waits_for_buffers_and_returns_unused_ones() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        h.add_rx(4096);
        // Nothing pending: the buffer stays with the device, unused.
        assert!(!h.kick_rx().expect("valid").rx);
        assert_eq!(h.rx_used(), 0);
        h.dev
            .backend_mut()
            .to_guest
            .push_back((rx_header(op::RST, 0), Vec::new()));
        let n = h.backend_event().expect("valid");
        assert!(n.rx);
        assert_eq!(h.rx_used(), 1);
    }

    #[test]
    fn descriptor_loop_breaks_the_device() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        h.add_tx_chain(&[
            desc(0x10000, 44, VRING_DESC_F_NEXT, 1),
            desc(0x11000, 8, VRING_DESC_F_NEXT, 0),
        ]);
        let res = h.kick_tx();
        assert_broken(&h, res, "loop");
        assert!(h.dev.broken().unwrap_or_default().contains("loops"));
        // A later kick gets Broken, and nothing more reaches the backend.
        h.add_tx(&tx_packet(op::RW, b"x"));
        assert!(matches!(h.kick_tx(), Err(VsockError::Broken { .. })));
        assert!(h.dev.backend().sent.is_empty());
    }

    #[test]
    fn buffer_outside_guest_ram_breaks_the_device() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        h.add_tx_chain(&[desc(0x7fff_ff00, 44, 0, 0)]);
        let res = h.kick_tx();
        assert_broken(&h, res, "outside ram");
        assert!(h
            .dev
            .broken()
            .unwrap_or_default()
            .contains("outside guest memory"));

        let mut h = Harness::new(&mem);
        h.add_rx_chain(&[desc(u64::MAX - 100, 4096, VRING_DESC_F_WRITE, 0)]);
        h.dev
            .backend_mut()
            .to_guest
            .push_back((rx_header(op::RST, 0), Vec::new()));
        let res = h.kick_rx();
        assert_broken(&h, res, "rx outside ram");
    }

    #[test]
    fn header_len_over_chain_or_64k_breaks_the_device() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        let mut hdr = tx_packet(op::RW, b"abcd");
        hdr.0.len = 100; // the chain holds 4
        h.add_tx(&hdr);
        let res = h.kick_tx();
        assert_broken(&h, res, "len over chain");
        assert!(h.dev.broken().unwrap_or_default().contains("exceeds"));

        let mut h = Harness::new(&mem);
        let big = vec![0u8; MAX_PKT_DATA as usize + 1];
        h.add_tx(&tx_packet(op::RW, &big));
        let res = h.kick_tx();
        assert_broken(&h, res, "len over 64k");
        assert!(h.dev.broken().unwrap_or_default().contains("packet limit"));
    }

    #[test]
    fn avail_index_past_queue_size_breaks_the_device() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        h.add_tx(&tx_packet(op::RW, b"x"));
        // The driver claims 17 new entries in a 16-entry queue.
        h.set_tx_avail_idx(17);
        let res = h.kick_tx();
        assert_broken(&h, res, "avail ahead");
        assert!(h
            .dev
            .broken()
            .unwrap_or_default()
            .contains("more than the queue size"));
        assert!(h.dev.backend().sent.is_empty());
    }

    #[test]
    fn queue_reconfigured_after_driver_ok_breaks_the_device() {
        let mem = guest_memory();
        // In process: a register write after DRIVER_OK.
        let mut h = Harness::new(&mem);
        h.driver_ok().expect("valid queues");
        let res = h
            .dev
            .write_queue_config(TXQ, &mut h.txq, QueueWrite::Size(8))
            .map(|()| Notify::default());
        assert_broken(&h, res, "size after driver_ok");
        assert!(h.dev.broken().unwrap_or_default().contains("reconfigured"));

        // Out of process: the ring moved under a started queue.
        let mut h = Harness::new(&mem);
        h.add_tx(&tx_packet(op::RW, b"x"));
        h.kick_tx().expect("valid");
        h.txq.set_desc_table_address(Some(0x9000), None);
        h.add_tx(&tx_packet(op::RW, b"y"));
        let res = h.kick_tx();
        assert_broken(&h, res, "ring moved");

        // Before DRIVER_OK the same write is fine.
        let mut h = Harness::new(&mem);
        h.dev
            .write_queue_config(TXQ, &mut h.txq, QueueWrite::Size(8))
            .expect("before driver_ok");
    }

    #[test]
    fn wrong_direction_and_indirect_descriptors_break_the_device() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        h.add_tx_chain(&[desc(0x10000, 44, VRING_DESC_F_WRITE, 0)]);
        let res = h.kick_tx();
        assert_broken(&h, res, "writable tx buffer");

        let mut h = Harness::new(&mem);
        h.add_tx_chain(&[desc(0x10000, 64, VRING_DESC_F_INDIRECT, 0)]);
        let res = h.kick_tx();
        assert_broken(&h, res, "indirect");
    }

    #[test]
    fn indirect_chains_work_once_negotiated() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        let features = h.dev.avail_features();
        h.dev.ack_features(features).expect("offered");
        let (hdr, data) = tx_packet(op::RW, b"via indirect");
        mem.write_slice(&hdr.to_bytes(), GuestAddress(0x20000))
            .expect("in range");
        mem.write_slice(&data, GuestAddress(0x21000))
            .expect("in range");
        mem.write_slice(
            &desc(0x20000, 44, VRING_DESC_F_NEXT, 1),
            GuestAddress(0x30000),
        )
        .expect("in range");
        mem.write_slice(&desc(0x21000, 12, 0, 0), GuestAddress(0x30010))
            .expect("in range");
        h.add_tx_chain(&[desc(0x30000, 32, VRING_DESC_F_INDIRECT, 0)]);
        h.kick_tx().expect("valid");
        assert_eq!(h.dev.backend().sent[0].1, b"via indirect");

        // A loop inside an indirect table still breaks the device.
        mem.write_slice(
            &desc(0x21000, 12, VRING_DESC_F_NEXT, 0),
            GuestAddress(0x30010),
        )
        .expect("in range");
        h.add_tx_chain(&[desc(0x30000, 32, VRING_DESC_F_INDIRECT, 0)]);
        let res = h.kick_tx();
        assert_broken(&h, res, "indirect loop");
    }

    #[test]
    fn one_broken_device_leaves_another_working() {
        let mem_a = guest_memory();
        let mem_b = guest_memory();
        let mut a = Harness::new(&mem_a);
        let mut b = Harness::new(&mem_b);
        a.add_tx_chain(&[desc(0x10000, 44, VRING_DESC_F_NEXT, 0)]);
        assert!(a.kick_tx().is_err());
        b.add_tx(&tx_packet(op::RW, b"fine"));
        b.kick_tx().expect("the other device works");
        assert!(!b.dev.backend().closed);
        assert_eq!(b.dev.backend().sent.len(), 1);
    }

    #[test]
    fn event_queue_buffers_are_kept() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        let n = h.kick_evq().expect("valid");
        assert_eq!(n, Notify::default());
    }

    #[test]
    fn backend_rx_header_is_written_as_given() {
        let mem = guest_memory();
        let mut h = Harness::new(&mem);
        let hdr = VsockHeader {
            src_cid: 2,
            dst_cid: 3,
            src_port: 9,
            dst_port: 10,
            op: op::RESPONSE,
            type_: 1,
            buf_alloc: 1,
            fwd_cnt: 2,
            ..VsockHeader::default()
        };
        h.dev.backend_mut().to_guest.push_back((hdr, Vec::new()));
        h.add_rx(64);
        h.kick_rx().expect("valid");
        let (_, got, _) = h.rx_used_packet(0);
        assert_eq!(got, hdr);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the guest puts on the transmit queue — descriptors, headers, avail index —
        /// the device never panics, and it either accepts every chain or breaks, leaving its
        /// used ring within the queue.
        #[test]
        fn arbitrary_tx_queues_never_panic(
            descs in proptest::collection::vec(
                (0u64..0x30000, 0u32..0x12000, 0u16..8, 0u16..20), 1..16),
            heads in proptest::collection::vec(0u16..20, 0..20),
            header in proptest::collection::vec(any::<u8>(), HDR_SIZE),
            avail_skew in 0u16..40,
            negotiate in any::<bool>(),
        ) {
            let mem = guest_memory();
            let mut h = Harness::new(&mem);
            if negotiate {
                let features = h.dev.avail_features();
                h.dev.ack_features(features).expect("offered");
            }
            mem.write_slice(&header, GuestAddress(0x10000)).expect("in range");
            for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
                h.put_tx_desc(i as u16, desc(0x10000 + addr, *len, u32::from(*flags), *next));
            }
            for head in &heads {
                h.push_tx_head(*head);
            }
            if avail_skew > 30 {
                h.set_tx_avail_idx(avail_skew);
            }
            let res = h.kick_tx();
            match res {
                Ok(_) => prop_assert!(h.dev.broken().is_none()),
                Err(_) => prop_assert!(h.dev.broken().is_some()),
            }
            prop_assert!(h.tx_used() <= h.tx_avail());
            for (hdr, data) in &h.dev.backend().sent {
                prop_assert!(hdr.len <= MAX_PKT_DATA);
                prop_assert_eq!(data.len(), hdr.len as usize);
            }
        }

        /// The same for receive buffers while the backend has packets to deliver.
        #[test]
        fn arbitrary_rx_queues_never_panic(
            descs in proptest::collection::vec(
                (0u64..0x30000, 0u32..0x12000, 0u16..8, 0u16..20), 1..16),
            heads in proptest::collection::vec(0u16..20, 0..20),
            lens in proptest::collection::vec(0usize..5000, 1..8),
        ) {
            let mem = guest_memory();
            let mut h = Harness::new(&mem);
            for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
                h.put_rx_desc(i as u16, desc(0x10000 + addr, *len, u32::from(*flags), *next));
            }
            for head in &heads {
                h.push_rx_head(*head);
            }
            for len in &lens {
                let mut hdr = rx_header(op::RW, 0);
                hdr.len = *len as u32;
                h.dev.backend_mut().to_guest.push_back((hdr, vec![7u8; *len]));
            }
            let res = h.kick_rx();
            match res {
                Ok(_) => prop_assert!(h.dev.broken().is_none()),
                Err(_) => prop_assert!(h.dev.broken().is_some()),
            }
            prop_assert!(h.rx_used() <= heads.len() as u16);
        }
    }

    #[test]
    fn test_backend_is_usable() {
        // The harness's default backend records and replays.
        let b = TestBackend::default();
        assert!(!b.has_pending_rx());
    }
}
