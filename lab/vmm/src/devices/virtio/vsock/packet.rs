//! Vsock packets in guest memory: the 44-byte `virtio_vsock_hdr`, and the copies in and out of
//! a descriptor chain that [`super::chain::walk_chain`] has checked. Bytes are copied once:
//! [`read_tx`] copies the header and the payload out of a transmit chain (so the guest cannot
//! change them after the checks; the header's `len` is checked against 64 KiB and against the
//! chain) and [`write_rx`] copies a header and payload into a receive chain. All the ways a
//! chain or packet can be wrong are one error type, [`PacketError`].

use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use super::chain::Chain;
use super::MAX_PKT_DATA;

/// The size of `virtio_vsock_hdr` in guest memory.
pub const HDR_SIZE: usize = 44;

/// Why a descriptor chain or a packet is invalid. Each of these is a guest driver breaking the
/// virtio or vsock rules.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// A descriptor index (a head from the avail ring, or a `next`) is not below the queue size.
    #[error("descriptor index {index} is out of range for queue size {size}")]
    DescriptorIndex {
        /// The index.
        index: u16,
        /// The queue size.
        size: u16,
    },
    /// The chain has more descriptors than the queue: it loops.
    #[error("descriptor chain from head {head} loops (more than {size} descriptors)")]
    DescriptorLoop {
        /// The chain's head.
        head: u16,
        /// The queue size.
        size: u16,
    },
    /// An indirect descriptor, although the feature was not negotiated.
    #[error("indirect descriptor in a chain, but indirect descriptors were not negotiated")]
    IndirectDescriptor,
    /// An indirect descriptor inside an indirect table.
    #[error("indirect descriptor inside an indirect table")]
    NestedIndirect,
    /// An indirect descriptor that also has NEXT set.
    #[error("indirect descriptor with the next flag set")]
    IndirectWithNext,
    /// An indirect table of a bad size, or outside guest memory.
    #[error("indirect table of {len} bytes at {addr:#x} is not a whole number of descriptors within the queue size and guest memory")]
    IndirectTable {
        /// The table's guest-physical address.
        addr: u64,
        /// Its length in bytes.
        len: u32,
    },
    /// A descriptor table entry could not be read.
    #[error("descriptor table entry {index} lies outside guest memory")]
    DescriptorTable {
        /// The entry's index.
        index: u16,
    },
    /// A buffer lies (partly) outside guest memory.
    #[error("buffer of {len} bytes at {addr:#x} lies outside guest memory")]
    BufferOutOfRange {
        /// The buffer's guest-physical address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// A device-writable buffer in a transmit chain, or a device-readable one in a receive chain.
    #[error("{found} buffer in a chain that must hold only {expected} buffers")]
    WrongDirection {
        /// What the chain must hold ("device-readable" or "device-writable").
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// The chain is too short to hold a header.
    #[error("chain holds {len} bytes, fewer than the {HDR_SIZE}-byte header")]
    HeaderTooShort {
        /// The chain's total length.
        len: u64,
    },
    /// The header's `len` is over the 64 KiB packet limit.
    #[error("header len {len} exceeds the {MAX_PKT_DATA}-byte packet limit")]
    PayloadTooLarge {
        /// The header's `len`.
        len: u32,
    },
    /// The header's `len` is more than the chain holds after the header.
    #[error("header len {len} exceeds the {avail} bytes the chain holds after the header")]
    PayloadBeyondChain {
        /// The header's `len`.
        len: u32,
        /// What the chain holds after the header.
        avail: u64,
    },
    /// A packet for the guest does not fit the receive chain (a device bug, never the guest's).
    #[error("packet of {len} bytes does not fit a {cap}-byte receive chain")]
    RxOverflow {
        /// The packet's size, header included.
        len: usize,
        /// The chain's capacity.
        cap: u64,
    },
    /// Copying from or to guest memory failed after the checks passed.
    #[error("failed to copy between guest memory and the device")]
    Memory(#[source] GuestMemoryError),
}

/// The `virtio_vsock_hdr`, in host byte order. Its wire form is 44 little-endian bytes,
/// packed: `src_cid` u64, `dst_cid` u64, `src_port` u32, `dst_port` u32, `len` u32, `type` u16,
/// `op` u16, `flags` u32, `buf_alloc` u32, `fwd_cnt` u32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VsockHeader {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type (1: stream).
    pub type_: u16,
    /// Operation (see [`super::op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN's RCV/SEND).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// How many bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

impl VsockHeader {
    /// Decodes the wire form.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Self {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes"));
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes the wire form.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Walks the spans of the chain's buffers that hold bytes `offset .. offset + len` of the
/// chain, in order, calling `each(guest address, range in the caller's slice)`. Returns how many
/// bytes the chain had room for (less than `len` when it is too short).
fn for_each_span<E>(
    chain: &Chain,
    mut offset: u64,
    len: usize,
    mut each: impl FnMut(GuestAddress, std::ops::Range<usize>) -> Result<(), E>,
) -> Result<usize, E> {
    let mut done = 0usize;
    for buf in &chain.buffers {
        if done == len {
            break;
        }
        let buf_len = u64::from(buf.len);
        if offset >= buf_len {
            offset -= buf_len;
            continue;
        }
        let n = usize::try_from(buf_len - offset)
            .unwrap_or(usize::MAX)
            .min(len - done);
        each(buf.addr.unchecked_add(offset), done..done + n)?;
        done += n;
        offset = 0;
    }
    Ok(done)
}

/// Copies `out.len()` bytes starting `offset` bytes into the chain's buffers.
fn gather<M: GuestMemory + ?Sized>(
    mem: &M,
    chain: &Chain,
    offset: u64,
    out: &mut [u8],
) -> Result<(), PacketError> {
    let len = out.len();
    let done = for_each_span(chain, offset, len, |at, range| {
        mem.read_slice(&mut out[range], at)
            .map_err(PacketError::Memory)
    })?;
    if done < len {
        return Err(PacketError::PayloadBeyondChain {
            len: u32::try_from(len).unwrap_or(u32::MAX),
            avail: chain.len,
        });
    }
    Ok(())
}

/// Copies `data` into the chain's buffers, starting `offset` bytes in.
fn scatter<M: GuestMemory + ?Sized>(
    mem: &M,
    chain: &Chain,
    offset: u64,
    data: &[u8],
) -> Result<(), PacketError> {
    let done = for_each_span(chain, offset, data.len(), |at, range| {
        mem.write_slice(&data[range], at)
            .map_err(PacketError::Memory)
    })?;
    if done < data.len() {
        return Err(PacketError::RxOverflow {
            len: data.len(),
            cap: chain.len,
        });
    }
    Ok(())
}

/// Reads a transmit packet from a walked chain: the header, checked, and its payload, copied
/// into `data` (resized to `hdr.len`).
pub fn read_tx<M: GuestMemory + ?Sized>(
    mem: &M,
    chain: &Chain,
    data: &mut Vec<u8>,
) -> Result<VsockHeader, PacketError> {
    if chain.len < HDR_SIZE as u64 {
        return Err(PacketError::HeaderTooShort { len: chain.len });
    }
    let mut raw = [0u8; HDR_SIZE];
    gather(mem, chain, 0, &mut raw)?;
    let hdr = VsockHeader::from_bytes(&raw);
    if hdr.len > MAX_PKT_DATA {
        return Err(PacketError::PayloadTooLarge { len: hdr.len });
    }
    let avail = chain.len - HDR_SIZE as u64;
    if u64::from(hdr.len) > avail {
        return Err(PacketError::PayloadBeyondChain {
            len: hdr.len,
            avail,
        });
    }
    data.clear();
    data.resize(hdr.len as usize, 0);
    gather(mem, chain, HDR_SIZE as u64, data)?;
    Ok(hdr)
}

/// How many payload bytes a walked receive chain can take (at most [`MAX_PKT_DATA`]).
pub fn rx_capacity(chain: &Chain) -> Result<usize, PacketError> {
    if chain.len < HDR_SIZE as u64 {
        return Err(PacketError::HeaderTooShort { len: chain.len });
    }
    let cap = (chain.len - HDR_SIZE as u64).min(u64::from(MAX_PKT_DATA));
    Ok(usize::try_from(cap).expect("at most 64 KiB"))
}

/// Writes a packet for the guest into a walked receive chain and returns the number of bytes
/// written (what goes into the used ring). `data` must be `hdr.len` bytes.
pub fn write_rx<M: GuestMemory + ?Sized>(
    mem: &M,
    chain: &Chain,
    hdr: &VsockHeader,
    data: &[u8],
) -> Result<u32, PacketError> {
    let total = HDR_SIZE + data.len();
    if (total as u64) > chain.len {
        return Err(PacketError::RxOverflow {
            len: total,
            cap: chain.len,
        });
    }
    scatter(mem, chain, 0, &hdr.to_bytes())?;
    scatter(mem, chain, HDR_SIZE as u64, data)?;
    Ok(u32::try_from(total).expect("a checked chain is shorter than 4 GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::chain::{walk_chain, ChainRules, Direction};
    use crate::devices::virtio::vsock::test_utils::{
        desc, guest_memory, sample_header, walk, DescriptorTableWriter, RULES, SIZE, TABLE,
    };
    use proptest::prelude::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use vm_memory::Permissions;

    #[test]
    fn header_round_trips_and_has_the_wire_layout() {
        let h = sample_header();
        let b = h.to_bytes();
        assert_eq!(VsockHeader::from_bytes(&b), h);
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[24..28], &10u32.to_le_bytes());
        assert_eq!(&b[30..32], &5u16.to_le_bytes());
        assert_eq!(&b[40..44], &77u32.to_le_bytes());
    }

    #[test]
    fn header_layout_matches_rust_vmm_virtio_vsock() {
        // The rust-vmm crate's packet type reads the same bytes the same way.
        let h = sample_header();
        let mut raw = h.to_bytes();
        let mut data = [0u8; 10];
        // SAFETY: `raw` and `data` outlive the packet, and nothing else accesses them meanwhile.
        let pkt = unsafe { virtio_vsock::packet::VsockPacket::new(&mut raw, Some(&mut data)) }
            .expect("a 44-byte header");
        // `new` leaves the cached header zeroed; load it from the bytes.
        let mut pkt = pkt;
        pkt.set_header_from_raw(&h.to_bytes())
            .expect("a 44-byte header");
        assert_eq!(virtio_vsock::packet::PKT_HEADER_SIZE, HDR_SIZE);
        assert_eq!(pkt.src_cid(), h.src_cid);
        assert_eq!(pkt.dst_cid(), h.dst_cid);
        assert_eq!(pkt.src_port(), h.src_port);
        assert_eq!(pkt.dst_port(), h.dst_port);
        assert_eq!(pkt.len(), h.len);
        assert_eq!(pkt.type_(), h.type_);
        assert_eq!(pkt.op(), h.op);
        assert_eq!(pkt.buf_alloc(), h.buf_alloc);
        assert_eq!(pkt.fwd_cnt(), h.fwd_cnt);
    }

    #[test]
    fn reads_a_two_descriptor_tx_packet() {
        let mem = guest_memory();
        let t = DescriptorTableWriter::new(&mem, TABLE);
        let h = sample_header();
        mem.write_slice(&h.to_bytes(), GuestAddress(0x4000))
            .expect("in range");
        mem.write_slice(b"0123456789", GuestAddress(0x5000))
            .expect("in range");
        t.put(0, desc(0x4000, 44, VRING_DESC_F_NEXT, 1));
        t.put(1, desc(0x5000, 10, 0, 0));
        let chain = walk(&mem, 0, Direction::DeviceReads).expect("valid");
        let mut data = Vec::new();
        assert_eq!(read_tx(&mem, &chain, &mut data).expect("valid"), h);
        assert_eq!(data, b"0123456789");
    }

    #[test]
    fn reads_a_header_split_over_descriptors() {
        let mem = guest_memory();
        let t = DescriptorTableWriter::new(&mem, TABLE);
        let mut h = sample_header();
        h.len = 3;
        let mut bytes = h.to_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        mem.write_slice(&bytes[..20], GuestAddress(0x4000))
            .expect("in range");
        mem.write_slice(&bytes[20..], GuestAddress(0x6000))
            .expect("in range");
        t.put(3, desc(0x4000, 20, VRING_DESC_F_NEXT, 7));
        t.put(7, desc(0x6000, 27, 0, 0));
        let chain = walk(&mem, 3, Direction::DeviceReads).expect("valid");
        let mut data = Vec::new();
        assert_eq!(read_tx(&mem, &chain, &mut data).expect("valid"), h);
        assert_eq!(data, b"abc");
    }

    #[test]
    fn header_len_over_the_chain_or_64k_is_refused() {
        let mem = guest_memory();
        let t = DescriptorTableWriter::new(&mem, TABLE);
        let mut h = sample_header();
        h.len = 11; // one more than the data buffer
        mem.write_slice(&h.to_bytes(), GuestAddress(0x4000))
            .expect("in range");
        t.put(0, desc(0x4000, 44, VRING_DESC_F_NEXT, 1));
        t.put(1, desc(0x5000, 10, 0, 0));
        let chain = walk(&mem, 0, Direction::DeviceReads).expect("valid chain");
        let err = read_tx(&mem, &chain, &mut Vec::new()).expect_err("len > chain");
        assert!(matches!(
            err,
            PacketError::PayloadBeyondChain { len: 11, avail: 10 }
        ));

        h.len = MAX_PKT_DATA + 1;
        mem.write_slice(&h.to_bytes(), GuestAddress(0x4000))
            .expect("in range");
        t.put(1, desc(0x5000, MAX_PKT_DATA + 100, 0, 0));
        let chain = walk(&mem, 0, Direction::DeviceReads).expect("valid chain");
        let err = read_tx(&mem, &chain, &mut Vec::new()).expect_err("len > 64 KiB");
        assert!(matches!(err, PacketError::PayloadTooLarge { .. }));

        t.put(0, desc(0x4000, 43, 0, 0));
        let chain = walk(&mem, 0, Direction::DeviceReads).expect("valid chain");
        let err = read_tx(&mem, &chain, &mut Vec::new()).expect_err("short header");
        assert!(matches!(err, PacketError::HeaderTooShort { len: 43 }));
    }

    #[test]
    fn writes_an_rx_packet_across_buffers() {
        let mem = guest_memory();
        let t = DescriptorTableWriter::new(&mem, TABLE);
        t.put(
            0,
            desc(0x4000, 30, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
        );
        t.put(1, desc(0x5000, 4096, VRING_DESC_F_WRITE, 0));
        let chain = walk(&mem, 0, Direction::DeviceWrites).expect("valid");
        assert_eq!(rx_capacity(&chain).expect("valid"), 30 + 4096 - HDR_SIZE);
        let mut h = sample_header();
        h.len = 5;
        assert_eq!(write_rx(&mem, &chain, &h, b"hello").expect("fits"), 49);
        let mut raw = [0u8; HDR_SIZE];
        mem.read_slice(&mut raw[..30], GuestAddress(0x4000))
            .expect("in range");
        mem.read_slice(&mut raw[30..], GuestAddress(0x5000))
            .expect("in range");
        assert_eq!(VsockHeader::from_bytes(&raw), h);
        let mut data = [0u8; 5];
        mem.read_slice(&mut data, GuestAddress(0x5000 + 14))
            .expect("in range");
        assert_eq!(&data, b"hello");
        let too_big = vec![0u8; 5000];
        assert!(matches!(
            write_rx(&mem, &chain, &h, &too_big),
            Err(PacketError::RxOverflow { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any header survives the wire form.
        #[test]
        fn header_round_trips(raw in proptest::array::uniform32(any::<u8>()), tail in proptest::array::uniform12(any::<u8>())) {
            let mut b = [0u8; HDR_SIZE];
            b[..32].copy_from_slice(&raw);
            b[32..].copy_from_slice(&tail);
            let h = VsockHeader::from_bytes(&b);
            prop_assert_eq!(h.to_bytes(), b);
        }

        /// Whatever the guest writes into the descriptor table and buffers, walking and parsing
        /// returns (never panics), and what it accepts stays inside guest memory and the limits.
        #[test]
        fn arbitrary_descriptor_tables_never_panic(
            descs in proptest::collection::vec((any::<u64>(), any::<u32>(), any::<u16>(), any::<u16>()), 1..16),
            near in proptest::collection::vec((0u64..0x20000, 0u32..0x20000, 0u16..8, 0u16..20), 1..16),
            header in proptest::collection::vec(any::<u8>(), HDR_SIZE),
            head in 0u16..20,
            writes in any::<bool>(),
        ) {
            let mem = guest_memory();
            let t = DescriptorTableWriter::new(&mem, TABLE);
            // Half wild values, half plausible ones, so both reach deep into the checks.
            for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
                t.put(i as u16, desc(*addr, *len, u32::from(*flags), *next));
            }
            for (i, (addr, len, flags, next)) in near.iter().enumerate() {
                let index = (i as u16) * 2 % SIZE;
                t.put(index, desc(0x4000 + addr, *len, u32::from(*flags), *next));
            }
            mem.write_slice(&header, GuestAddress(0x4000)).expect("in range");
            let dir = if writes { Direction::DeviceWrites } else { Direction::DeviceReads };
            let mut chain = Chain::default();
            let rules = ChainRules { indirect: head % 2 == 0, ..RULES };
            if walk_chain(&mem, rules, head, dir, &mut chain).is_ok() {
                prop_assert!(chain.buffers.len() <= SIZE as usize);
                for b in &chain.buffers {
                    prop_assert!(mem.check_range(b.addr, b.len as usize, Permissions::Read));
                }
                let mut data = Vec::new();
                if let Ok(h) = read_tx(&mem, &chain, &mut data) {
                    prop_assert!(h.len <= MAX_PKT_DATA);
                    prop_assert_eq!(data.len(), h.len as usize);
                    prop_assert!(HDR_SIZE as u64 + u64::from(h.len) <= chain.len);
                }
            }
        }
    }
}
