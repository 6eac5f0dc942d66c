//! Test helpers: guest memory, raw descriptors, a recording [`TestBackend`], and a [`Harness`]
//! that plays the guest driver over three mock queues.
//!
//! The queues are laid out here rather than by `virtio-queue`'s `MockSplitQueue`: in 0.18 its
//! `SplitQueueRing::end` counts ring entries as bytes, so the used ring it places overlaps the
//! avail ring of any queue with more than a few entries.

use std::collections::VecDeque;
use std::os::unix::io::{AsRawFd, RawFd};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::chain::{walk_chain, Chain, ChainRules, Direction};
use super::event_handler::Notify;
use super::packet::HDR_SIZE;
use super::{
    PacketError, VsockBackend, VsockDevice, VsockError, VsockHeader, HOST_CID, NUM_QUEUES,
    TYPE_STREAM,
};

/// Where the chain tests place their descriptor table.
pub const TABLE: GuestAddress = GuestAddress(0x1000);
/// The chain tests' queue size.
pub const SIZE: u16 = 16;
/// The chain tests' walking rules: that table and size, indirect descriptors allowed.
pub const RULES: ChainRules = ChainRules {
    desc_table: TABLE,
    size: SIZE,
    indirect: true,
};

/// Walks the chain at `head` with [`RULES`].
pub fn walk(mem: &GuestMemoryMmap, head: u16, dir: Direction) -> Result<Chain, PacketError> {
    walk_with(mem, RULES, head, dir)
}

/// Walks the chain at `head` with `rules`.
pub fn walk_with(
    mem: &GuestMemoryMmap,
    rules: ChainRules,
    head: u16,
    dir: Direction,
) -> Result<Chain, PacketError> {
    let mut chain = Chain::default();
    walk_chain(mem, rules, head, dir, &mut chain).map(|()| chain)
}

/// A stream header from the guest (CID [`CID`]) to the host, with a 64 KiB receive buffer.
pub fn guest_header(op: u16, src_port: u32, dst_port: u32, len: u32) -> VsockHeader {
    VsockHeader {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

/// A header as a guest would send it on the tx queue.
pub fn sample_header() -> VsockHeader {
    VsockHeader {
        src_cid: 3,
        dst_cid: 2,
        src_port: 1234,
        dst_port: 5000,
        len: 10,
        type_: 1,
        op: 5,
        flags: 0,
        buf_alloc: 65536,
        fwd_cnt: 77,
    }
}

/// The size of test guest memory (starting at 0).
pub const MEM_SIZE: u64 = 0x10_0000;
/// The guest CID in tests.
pub const CID: u64 = 3;
/// The queue size in tests.
pub const QSIZE: u16 = 16;
/// Where the harness places packet buffers.
const BUFFERS: u64 = 0x8_0000;

/// 1 MiB of guest memory at address 0.
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
        .expect("test guest memory")
}

/// A raw split-ring descriptor.
pub fn desc(addr: u64, len: u32, flags: u32, next: u16) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&u16::try_from(flags).expect("16-bit flags").to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

/// Writes raw descriptors into a descriptor table.
#[derive(Debug)]
pub struct DescriptorTableWriter<'a> {
    mem: &'a GuestMemoryMmap,
    table: GuestAddress,
}

impl<'a> DescriptorTableWriter<'a> {
    /// A writer for the table at `table`.
    pub fn new(mem: &'a GuestMemoryMmap, table: GuestAddress) -> Self {
        Self { mem, table }
    }

    /// Stores `d` at `index`.
    pub fn put(&self, index: u16, d: [u8; 16]) {
        let at = GuestAddress(self.table.0 + 16 * u64::from(index));
        self.mem.write_slice(&d, at).expect("table in test memory");
    }
}

/// A guest transmit packet: header (with `len` set) and payload.
pub fn tx_packet(op: u16, data: &[u8]) -> (VsockHeader, Vec<u8>) {
    let hdr = VsockHeader {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: 1000,
        dst_port: 2000,
        len: u32::try_from(data.len()).expect("small"),
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 65536,
        fwd_cnt: 0,
    };
    (hdr, data.to_vec())
}

/// A header for a packet to the guest.
pub fn rx_header(op: u16, len: u32) -> VsockHeader {
    VsockHeader {
        src_cid: HOST_CID,
        dst_cid: CID,
        src_port: 2000,
        dst_port: 1000,
        len,
        type_: TYPE_STREAM,
        op,
        ..VsockHeader::default()
    }
}

/// Whether `fd` becomes readable within `ms` milliseconds.
pub fn poll_readable(fd: RawFd, ms: i32) -> bool {
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent};
    let epoll = Epoll::new().expect("epoll");
    epoll
        .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
        .expect("epoll add");
    let mut ev = [EpollEvent::default(); 1];
    epoll.wait(ms, &mut ev).expect("epoll wait") > 0
}

/// A backend that records what the guest sends and replays what a test queues for it.
#[derive(Debug)]
pub struct TestBackend {
    /// Packets from the guest.
    pub sent: Vec<(VsockHeader, Vec<u8>)>,
    /// Packets for the guest (payloads longer than the guest's buffer are cut).
    pub to_guest: VecDeque<(VsockHeader, Vec<u8>)>,
    /// Whether `close_all` was called.
    pub closed: bool,
    evfd: EventFd,
}

impl Default for TestBackend {
    fn default() -> Self {
        Self {
            sent: Vec::new(),
            to_guest: VecDeque::new(),
            closed: false,
            evfd: EventFd::new(0).expect("eventfd"),
        }
    }
}

impl AsRawFd for TestBackend {
    fn as_raw_fd(&self) -> RawFd {
        self.evfd.as_raw_fd()
    }
}

impl VsockBackend for TestBackend {
    fn send_pkt(&mut self, hdr: &VsockHeader, data: &[u8]) {
        self.sent.push((*hdr, data.to_vec()));
    }

    fn recv_pkt(&mut self, data: &mut [u8]) -> Option<VsockHeader> {
        let (mut hdr, payload) = self.to_guest.pop_front()?;
        let n = payload.len().min(data.len());
        data[..n].copy_from_slice(&payload[..n]);
        hdr.len = u32::try_from(n).expect("at most 64 KiB");
        Some(hdr)
    }

    fn has_pending_rx(&self) -> bool {
        !self.to_guest.is_empty()
    }

    fn notify(&mut self, _evset: EventSet) {}

    fn close_all(&mut self) {
        self.closed = true;
        self.sent.clear();
        self.to_guest.clear();
    }
}

/// Where a mock queue's parts lie.
#[derive(Debug, Clone, Copy)]
struct RingAddrs {
    desc: u64,
    avail: u64,
    used: u64,
}

impl RingAddrs {
    fn at(base: u64) -> Self {
        Self {
            desc: base,
            avail: base + 0x100,
            used: base + 0x200,
        }
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).expect("queue");
        let lo = |a: u64| Some(u32::try_from(a).expect("low memory"));
        q.set_size(QSIZE);
        q.set_desc_table_address(lo(self.desc), Some(0));
        q.set_avail_ring_address(lo(self.avail), Some(0));
        q.set_used_ring_address(lo(self.used), Some(0));
        q.set_ready(true);
        q
    }
}

/// The guest driver's side of the three queues, plus the device under test.
pub struct Harness<'a> {
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// The device.
    pub dev: VsockDevice<TestBackend>,
    /// Device-side queues.
    pub rxq: Queue,
    /// Device-side transmit queue.
    pub txq: Queue,
    /// Device-side event queue.
    pub evq: Queue,
    layouts: [RingAddrs; NUM_QUEUES],
    next_desc: [u16; NUM_QUEUES],
    avail: [u16; NUM_QUEUES],
    next_buf: u64,
}

impl std::fmt::Debug for Harness<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").field("dev", &self.dev).finish()
    }
}

impl<'a> Harness<'a> {
    /// A device with event-index off and three 16-entry queues at 0x1000, 0x2000, 0x3000.
    pub fn new(mem: &'a GuestMemoryMmap) -> Self {
        let layouts = [0x1000u64, 0x2000, 0x3000].map(RingAddrs::at);
        let (rxq, txq, evq) = (layouts[0].queue(), layouts[1].queue(), layouts[2].queue());
        let dev = VsockDevice::new(CID, TestBackend::default()).expect("device");
        Self {
            mem,
            dev,
            rxq,
            txq,
            evq,
            layouts,
            next_desc: [0; NUM_QUEUES],
            avail: [0; NUM_QUEUES],
            next_buf: BUFFERS,
        }
    }

    fn alloc(&mut self, len: usize) -> u64 {
        let at = self.next_buf;
        self.next_buf += (len as u64).max(1).next_multiple_of(64);
        assert!(self.next_buf < MEM_SIZE, "test buffers exhausted");
        at
    }

    fn desc_table(&self, q: usize) -> DescriptorTableWriter<'a> {
        DescriptorTableWriter::new(self.mem, GuestAddress(self.layouts[q].desc))
    }

    fn push_head(&mut self, q: usize, head: u16) {
        let ring = self.layouts[q].avail;
        let slot = ring + 4 + 2 * u64::from(self.avail[q] % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(slot))
            .expect("ring in memory");
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail[q], GuestAddress(ring + 2))
            .expect("ring in memory");
    }

    /// Adds a chain of raw descriptors (their `next` fields are used as given, indices from the
    /// queue's next free slot) to queue `q` and publishes its head.
    fn add_chain(&mut self, q: usize, descs: &[[u8; 16]]) {
        let head = self.next_desc[q];
        let t = self.desc_table(q);
        for (i, d) in descs.iter().enumerate() {
            let index = (head + u16::try_from(i).expect("short")) % QSIZE;
            t.put(index, *d);
        }
        self.next_desc[q] = (head + u16::try_from(descs.len()).expect("short")) % QSIZE;
        self.push_head(q, head);
    }

    /// Queues a well-formed transmit packet (header and payload in two descriptors).
    pub fn add_tx(&mut self, pkt: &(VsockHeader, Vec<u8>)) {
        let hdr_at = self.alloc(HDR_SIZE);
        self.mem
            .write_slice(&pkt.0.to_bytes(), GuestAddress(hdr_at))
            .expect("in memory");
        if pkt.1.is_empty() {
            self.add_chain(1, &[desc(hdr_at, 44, 0, 0)]);
            return;
        }
        let data_at = self.alloc(pkt.1.len());
        self.mem
            .write_slice(&pkt.1, GuestAddress(data_at))
            .expect("in memory");
        let next = (self.next_desc[1] + 1) % QSIZE;
        let len = u32::try_from(pkt.1.len()).expect("small");
        self.add_chain(
            1,
            &[
                desc(hdr_at, 44, VRING_DESC_F_NEXT, next),
                desc(data_at, len, 0, 0),
            ],
        );
    }

    /// Queues raw descriptors on the transmit queue.
    pub fn add_tx_chain(&mut self, descs: &[[u8; 16]]) {
        self.add_chain(1, descs);
    }

    /// Queues raw descriptors on the receive queue.
    pub fn add_rx_chain(&mut self, descs: &[[u8; 16]]) {
        self.add_chain(0, descs);
    }

    /// Gives the device one receive buffer of `len` bytes (header included).
    pub fn add_rx(&mut self, len: u32) {
        let at = self.alloc(len as usize);
        self.add_chain(0, &[desc(at, len, VRING_DESC_F_WRITE, 0)]);
    }

    /// Writes a transmit descriptor table entry directly.
    pub fn put_tx_desc(&mut self, index: u16, d: [u8; 16]) {
        self.desc_table(1).put(index, d);
    }

    /// Writes a receive descriptor table entry directly.
    pub fn put_rx_desc(&mut self, index: u16, d: [u8; 16]) {
        self.desc_table(0).put(index, d);
    }

    /// Publishes `head` on the transmit queue.
    pub fn push_tx_head(&mut self, head: u16) {
        self.push_head(1, head);
    }

    /// Publishes `head` on the receive queue.
    pub fn push_rx_head(&mut self, head: u16) {
        self.push_head(0, head);
    }

    /// Sets the transmit queue's avail index as a hostile driver might.
    pub fn set_tx_avail_idx(&mut self, idx: u16) {
        self.avail[1] = idx;
        let ring = self.layouts[1].avail;
        self.mem
            .write_obj(idx, GuestAddress(ring + 2))
            .expect("ring in memory");
    }

    fn used_idx(&self, q: usize) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.layouts[q].used + 2))
            .expect("ring in memory")
    }

    /// How many entries the driver has published on the transmit queue (its avail index).
    pub fn tx_avail(&self) -> u16 {
        self.avail[1]
    }

    /// The transmit queue's used index.
    pub fn tx_used(&self) -> u16 {
        self.used_idx(1)
    }

    /// The receive queue's used index.
    pub fn rx_used(&self) -> u16 {
        self.used_idx(0)
    }

    /// The `n`th used receive buffer: (used length, header, payload).
    pub fn rx_used_packet(&self, n: u16) -> (u32, VsockHeader, Vec<u8>) {
        let ring = self.layouts[0].used + 4 + 8 * u64::from(n % QSIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(ring)).expect("ring");
        let len: u32 = self.mem.read_obj(GuestAddress(ring + 4)).expect("ring");
        let t = self.layouts[0].desc + 16 * u64::from(id);
        let addr: u64 = self.mem.read_obj(GuestAddress(t)).expect("table");
        let mut raw = [0u8; HDR_SIZE];
        self.mem
            .read_slice(&mut raw, GuestAddress(addr))
            .expect("buffer");
        let hdr = VsockHeader::from_bytes(&raw);
        let mut data = vec![0u8; len as usize - HDR_SIZE];
        self.mem
            .read_slice(&mut data, GuestAddress(addr + HDR_SIZE as u64))
            .expect("buffer");
        (len, hdr, data)
    }

    /// DRIVER_OK with the three queues.
    pub fn driver_ok(&mut self) -> Result<(), VsockError> {
        self.dev
            .driver_ok(self.mem, [&mut self.rxq, &mut self.txq, &mut self.evq])
    }

    /// The driver kicks the transmit queue.
    pub fn kick_tx(&mut self) -> Result<Notify, VsockError> {
        self.dev
            .handle_txq_event(self.mem, &mut self.txq, Some(&mut self.rxq))
    }

    /// The driver kicks the receive queue.
    pub fn kick_rx(&mut self) -> Result<Notify, VsockError> {
        self.dev.handle_rxq_event(self.mem, &mut self.rxq)
    }

    /// The driver kicks the event queue.
    pub fn kick_evq(&mut self) -> Result<Notify, VsockError> {
        self.dev.handle_evq_event(self.mem, &mut self.evq)
    }

    /// The backend's fd became ready.
    pub fn backend_event(&mut self) -> Result<Notify, VsockError> {
        self.dev
            .handle_backend_event(self.mem, EventSet::IN, Some(&mut self.rxq))
    }
}
