//! Descriptor chains walked and checked by the device itself.
//!
//! `virtio-queue`'s chain iterator stops silently at a loop or a bad index and checks no buffer
//! address, so the device walks chains itself ([`walk_chain`]): every descriptor index is
//! checked against its table's size, a chain longer than its table is a loop, an indirect
//! table must be negotiated, end the chain, not nest, and lie in guest memory, and every
//! buffer must lie wholly in guest memory and point the right way. The result, a [`Chain`] of
//! checked buffers, is what `packet` copies from and to.

use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::packet::PacketError;

/// The size of one split-ring descriptor.
const DESC_SIZE: u64 = 16;

/// Which way the device uses a chain's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A transmit chain: the device only reads.
    DeviceReads,
    /// A receive chain: the device only writes.
    DeviceWrites,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Self::DeviceReads => "device-readable",
            Self::DeviceWrites => "device-writable",
        }
    }
}

/// One checked buffer: wholly inside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Guest-physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A walked and checked descriptor chain. Reused between packets to avoid allocating.
#[derive(Debug, Default, Clone)]
pub struct Chain {
    /// The head's index (what goes into the used ring).
    pub head: u16,
    /// The buffers, in chain order (zero-length ones left out).
    pub buffers: Vec<Buffer>,
    /// Their total length.
    pub len: u64,
}

/// How a chain may be built: the queue's descriptor table and whether indirect descriptors
/// were negotiated.
#[derive(Debug, Clone, Copy)]
pub struct ChainRules {
    /// The descriptor table's guest address.
    pub desc_table: GuestAddress,
    /// The queue size (entries in the table, and the longest chain allowed).
    pub size: u16,
    /// Whether `VIRTIO_RING_F_INDIRECT_DESC` was negotiated.
    pub indirect: bool,
}

/// One raw descriptor.
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u32,
    next: u16,
}

fn read_desc<M: GuestMemory + ?Sized>(
    mem: &M,
    table: GuestAddress,
    index: u16,
) -> Result<RawDesc, PacketError> {
    let mut raw = [0u8; DESC_SIZE as usize];
    let at = table
        .checked_add(u64::from(index) * DESC_SIZE)
        .ok_or(PacketError::DescriptorTable { index })?;
    mem.read_slice(&mut raw, at)
        .map_err(|_| PacketError::DescriptorTable { index })?;
    Ok(RawDesc {
        addr: u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes")),
        len: u32::from_le_bytes(raw[8..12].try_into().expect("4 bytes")),
        flags: u32::from(u16::from_le_bytes(raw[12..14].try_into().expect("2 bytes"))),
        next: u16::from_le_bytes(raw[14..16].try_into().expect("2 bytes")),
    })
}

/// Whether `len` bytes at `addr` lie wholly in guest memory.
fn in_memory<M: GuestMemory + ?Sized>(mem: &M, addr: u64, len: u32, p: Permissions) -> bool {
    GuestAddress(addr).checked_add(u64::from(len)).is_some()
        && mem.check_range(GuestAddress(addr), len as usize, p)
}

/// Walks the chain at `head` into `chain`, checking every descriptor (see the module docs).
/// An indirect descriptor (when negotiated) must end the chain in the queue's table, carry no
/// NEXT flag, and point at a whole number of descriptors, no more than the queue size, in
/// guest memory; its table is walked with the same checks, and may not nest.
pub fn walk_chain<M: GuestMemory + ?Sized>(
    mem: &M,
    rules: ChainRules,
    head: u16,
    dir: Direction,
    chain: &mut Chain,
) -> Result<(), PacketError> {
    chain.head = head;
    chain.buffers.clear();
    chain.len = 0;
    let (mut table, mut table_len, mut index) = (rules.desc_table, rules.size, head);
    let mut indirect = false;
    // A chain without a loop visits each descriptor of its table at most once.
    let mut steps_left = rules.size;
    loop {
        if index >= table_len {
            return Err(PacketError::DescriptorIndex {
                index,
                size: table_len,
            });
        }
        if steps_left == 0 {
            return Err(PacketError::DescriptorLoop {
                head,
                size: table_len,
            });
        }
        steps_left -= 1;
        let d = read_desc(mem, table, index)?;

        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            if !rules.indirect {
                return Err(PacketError::IndirectDescriptor);
            }
            if indirect {
                return Err(PacketError::NestedIndirect);
            }
            if d.flags & VRING_DESC_F_NEXT != 0 {
                return Err(PacketError::IndirectWithNext);
            }
            let entries = u64::from(d.len) / DESC_SIZE;
            let whole = u64::from(d.len) % DESC_SIZE == 0 && entries > 0;
            if !whole
                || entries > u64::from(rules.size)
                || !in_memory(mem, d.addr, d.len, Permissions::Read)
            {
                return Err(PacketError::IndirectTable {
                    addr: d.addr,
                    len: d.len,
                });
            }
            indirect = true;
            table = GuestAddress(d.addr);
            table_len = u16::try_from(entries).expect("at most the queue size");
            steps_left = table_len;
            index = 0;
            continue;
        }

        let writable = d.flags & VRING_DESC_F_WRITE != 0;
        if writable != (dir == Direction::DeviceWrites) {
            return Err(PacketError::WrongDirection {
                expected: dir.name(),
                found: if writable {
                    Direction::DeviceWrites.name()
                } else {
                    Direction::DeviceReads.name()
                },
            });
        }
        if d.len > 0 {
            let permissions = match dir {
                Direction::DeviceReads => Permissions::Read,
                Direction::DeviceWrites => Permissions::Write,
            };
            if !in_memory(mem, d.addr, d.len, permissions) {
                return Err(PacketError::BufferOutOfRange {
                    addr: d.addr,
                    len: d.len,
                });
            }
            chain.buffers.push(Buffer {
                addr: GuestAddress(d.addr),
                len: d.len,
            });
            chain.len += u64::from(d.len);
        }
        if d.flags & VRING_DESC_F_NEXT == 0 {
            return Ok(());
        }
        index = d.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::packet::read_tx;
    use crate::devices::virtio::vsock::test_utils::{
        desc, guest_memory, sample_header, walk, walk_with, DescriptorTableWriter, RULES, SIZE,
        TABLE,
    };

    #[test]
    fn a_descriptor_loop_is_refused() {
        let mem = guest_memory();
        let t = DescriptorTableWriter::new(&mem, TABLE);
        t.put(0, desc(0x4000, 44, VRING_DESC_F_NEXT, 1));
        t.put(1, desc(0x5000, 10, VRING_DESC_F_NEXT, 0));
        let err = walk(&mem, 0, Direction::DeviceReads).expect_err("a loop");
        assert!(
            matches!(err, PacketError::DescriptorLoop { head: 0, .. }),
            "{err}"
        );
        // A descriptor pointing at itself, too.
        t.put(5, desc(0x4000, 44, VRING_DESC_F_NEXT, 5));
        let err = walk(&mem, 5, Direction::DeviceReads).expect_err("a loop");
        assert!(matches!(err, PacketError::DescriptorLoop { .. }), "{err}");
    }

    #[test]
    fn out_of_range_indices_are_refused() {
        let mem = guest_memory();
        let t = DescriptorTableWriter::new(&mem, TABLE);
        let err = walk(&mem, SIZE, Direction::DeviceReads).expect_err("bad head");
        assert!(matches!(
            err,
            PacketError::DescriptorIndex {
                index: 16,
                size: 16
            }
        ));
        t.put(0, desc(0x4000, 44, VRING_DESC_F_NEXT, 999));
        let err = walk(&mem, 0, Direction::DeviceReads).expect_err("bad next");
        assert!(matches!(
            err,
            PacketError::DescriptorIndex { index: 999, .. }
        ));
    }

    #[test]
    fn buffers_outside_guest_memory_are_refused() {
        let mem = guest_memory();
        let t = DescriptorTableWriter::new(&mem, TABLE);
        let end = crate::devices::virtio::vsock::test_utils::MEM_SIZE;
        // Wholly outside, straddling the end, and wrapping the address space.
        for (addr, len) in [(end + 0x1000, 44), (end - 20, 44), (u64::MAX - 10, 44)] {
            t.put(0, desc(addr, len, 0, 0));
            let err = walk(&mem, 0, Direction::DeviceReads).expect_err("outside");
            assert!(
                matches!(err, PacketError::BufferOutOfRange { .. }),
                "{addr:#x}: {err}"
            );
        }
    }

    #[test]
    fn wrong_directions_and_indirect_descriptors_are_refused() {
        let mem = guest_memory();
        let t = DescriptorTableWriter::new(&mem, TABLE);
        t.put(0, desc(0x4000, 44, VRING_DESC_F_WRITE, 0));
        assert!(matches!(
            walk(&mem, 0, Direction::DeviceReads),
            Err(PacketError::WrongDirection { .. })
        ));
        t.put(0, desc(0x4000, 44, 0, 0));
        assert!(matches!(
            walk(&mem, 0, Direction::DeviceWrites),
            Err(PacketError::WrongDirection { .. })
        ));
        t.put(0, desc(0x8000, 32, VRING_DESC_F_INDIRECT, 0));
        let no_indirect = ChainRules {
            indirect: false,
            ..RULES
        };
        assert!(matches!(
            walk_with(&mem, no_indirect, 0, Direction::DeviceReads),
            Err(PacketError::IndirectDescriptor)
        ));
    }

    #[test]
    fn indirect_tables_are_walked_and_checked() {
        let mem = guest_memory();
        let t = DescriptorTableWriter::new(&mem, TABLE);
        let it = DescriptorTableWriter::new(&mem, GuestAddress(0x8000));
        let h = sample_header();
        mem.write_slice(&h.to_bytes(), GuestAddress(0x4000))
            .expect("in range");
        mem.write_slice(b"0123456789", GuestAddress(0x5000))
            .expect("in range");
        it.put(0, desc(0x4000, 44, VRING_DESC_F_NEXT, 1));
        it.put(1, desc(0x5000, 10, 0, 0));
        t.put(2, desc(0x8000, 32, VRING_DESC_F_INDIRECT, 0));
        let chain = walk(&mem, 2, Direction::DeviceReads).expect("valid");
        let mut data = Vec::new();
        assert_eq!(read_tx(&mem, &chain, &mut data).expect("valid"), h);
        assert_eq!(data, b"0123456789");

        // A loop inside the table.
        it.put(1, desc(0x5000, 10, VRING_DESC_F_NEXT, 0));
        let err = walk(&mem, 2, Direction::DeviceReads).expect_err("loop");
        assert!(
            matches!(err, PacketError::DescriptorLoop { size: 2, .. }),
            "{err}"
        );
        // An index past the table.
        it.put(1, desc(0x5000, 10, VRING_DESC_F_NEXT, 2));
        let err = walk(&mem, 2, Direction::DeviceReads).expect_err("index");
        assert!(matches!(
            err,
            PacketError::DescriptorIndex { index: 2, size: 2 }
        ));
        // Nesting, NEXT beside INDIRECT, odd sizes, oversized and out-of-memory tables.
        it.put(0, desc(0x8000, 32, VRING_DESC_F_INDIRECT, 0));
        assert!(matches!(
            walk(&mem, 2, Direction::DeviceReads),
            Err(PacketError::NestedIndirect)
        ));
        t.put(
            2,
            desc(0x8000, 32, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 3),
        );
        assert!(matches!(
            walk(&mem, 2, Direction::DeviceReads),
            Err(PacketError::IndirectWithNext)
        ));
        let end = crate::devices::virtio::vsock::test_utils::MEM_SIZE;
        for (addr, len) in [(0x8000, 33), (0x8000, 0), (0x8000, 16 * 17), (end - 16, 32)] {
            t.put(2, desc(addr, len, VRING_DESC_F_INDIRECT, 0));
            let err = walk(&mem, 2, Direction::DeviceReads).expect_err("bad table");
            assert!(
                matches!(err, PacketError::IndirectTable { .. }),
                "{len}: {err}"
            );
        }
    }
}
