//! The boot GDT and IDT: flat segments for both boot protocols, written into guest memory, and
//! the `kvm_segment` values the vCPU's segment registers are loaded with.
//!
//! | index | selector | descriptor              | used by                                  |
//! |-------|----------|-------------------------|------------------------------------------|
//! | 0     | 0x00     | null                    |                                          |
//! | 1     | 0x08     | 32-bit code, 4 GiB flat | PVH entry (32-bit protected mode)        |
//! | 2     | 0x10     | 64-bit code             | Linux 64-bit entry (`__BOOT_CS` = 0x10)  |
//! | 3     | 0x18     | data, 4 GiB flat        | both (`__BOOT_DS` = 0x18)                |
//! | 4     | 0x20     | TSS                     | TR (KVM wants a usable TR)               |
//!
//! The IDT is a single zero gate: the kernel installs its own before enabling interrupts.

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{BOOT_GDT_START, BOOT_IDT_START};

/// Errors writing the descriptor tables.
#[derive(Debug, thiserror::Error)]
pub enum GdtError {
    /// Guest memory does not hold the table's address.
    #[error("failed to write the {0} into guest memory")]
    Write(&'static str, #[source] vm_memory::GuestMemoryError),
}

/// Index of the 32-bit code descriptor.
pub const CODE32_INDEX: usize = 1;
/// Index of the 64-bit code descriptor.
pub const CODE64_INDEX: usize = 2;
/// Index of the flat data descriptor.
pub const DATA_INDEX: usize = 3;
/// Index of the TSS descriptor.
pub const TSS_INDEX: usize = 4;

/// The boot GDT, in order.
pub const BOOT_GDT: [u64; 5] = [
    descriptor(0, 0, 0),
    descriptor(0xc09b, 0, 0xfffff),
    descriptor(0xa09b, 0, 0xfffff),
    descriptor(0xc093, 0, 0xfffff),
    descriptor(0x808b, 0, 0xfffff),
];

/// Encodes a segment descriptor. `flags` holds the access byte in bits 0-7 and the G/DB/L/AVL
/// nibble in bits 12-15, as in the kernel's `GDT_ENTRY` macro.
pub const fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The `kvm_segment` for the GDT descriptor at `index`, as the CPU would load it.
pub fn segment(index: usize) -> kvm_segment {
    segment_from(BOOT_GDT[index], index)
}

fn segment_from(entry: u64, index: usize) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = (entry & 0xffff) | ((entry >> 32) & 0x000f_0000);
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit: limit as u32,
        selector: (index * 8) as u16,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The GDTR limit of the boot GDT.
pub const fn gdt_limit() -> u16 {
    (BOOT_GDT.len() * 8 - 1) as u16
}

/// The IDTR limit of the boot IDT (one 8-byte zero entry).
pub const IDT_LIMIT: u16 = 7;

/// Writes the boot GDT at [`BOOT_GDT_START`] and the empty IDT at [`BOOT_IDT_START`].
pub fn write_tables(mem: &GuestMemoryMmap) -> Result<(), GdtError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + (i * 8) as u64))
            .map_err(|e| GdtError::Write("gdt", e))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|e| GdtError::Write("idt", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_encode_like_the_kernel() {
        // Values from arch/x86/include/asm/segment.h (GDT_ENTRY_INIT) as the kernel builds them.
        assert_eq!(BOOT_GDT[CODE32_INDEX], 0x00cf_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[CODE64_INDEX], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[DATA_INDEX], 0x00cf_9300_0000_ffff);
        assert_eq!(descriptor(0x808b, 0x1234_5678, 0x67), 0x1280_8b34_5678_0067);
    }

    #[test]
    fn segments_decode_the_descriptors() {
        let code64 = segment(CODE64_INDEX);
        assert_eq!(
            (
                code64.selector,
                code64.l,
                code64.db,
                code64.type_,
                code64.s,
                code64.present
            ),
            (0x10, 1, 0, 0xb, 1, 1)
        );
        assert_eq!((code64.base, code64.limit, code64.g), (0, 0xffff_ffff, 1));
        let code32 = segment(CODE32_INDEX);
        assert_eq!((code32.selector, code32.l, code32.db), (0x08, 0, 1));
        let data = segment(DATA_INDEX);
        assert_eq!(
            (data.selector, data.type_, data.db, data.unusable),
            (0x18, 3, 1, 0)
        );
        let tss = segment(TSS_INDEX);
        assert_eq!((tss.selector, tss.type_, tss.s), (0x20, 0xb, 0));
        assert_eq!(segment(0).unusable, 1);
        let odd = segment_from(descriptor(0x0093, 0xab12_3456, 0x1_2345), 3);
        assert_eq!((odd.base, odd.limit, odd.g), (0xab12_3456, 0x1_2345, 0));
    }

    #[test]
    fn tables_are_written_where_the_registers_point() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).expect("memory");
        write_tables(&mem).expect("write");
        for (i, entry) in BOOT_GDT.iter().enumerate() {
            let got: u64 = mem
                .read_obj(GuestAddress(BOOT_GDT_START + 8 * i as u64))
                .expect("read");
            assert_eq!(got, *entry);
        }
        let idt: u64 = mem.read_obj(GuestAddress(BOOT_IDT_START)).expect("read");
        assert_eq!(idt, 0);
        assert_eq!(gdt_limit(), 39);
        assert!(BOOT_GDT_START + u64::from(gdt_limit()) < BOOT_IDT_START);
    }
}
