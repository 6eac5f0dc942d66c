//! Identity page tables for the 64-bit entry: the first 1 GiB of guest-physical memory mapped
//! 1:1 with 2 MiB pages (PML4[0] → PDPT[0] → 512 PD entries), which covers the kernel, the zero
//! page, the command line and the boot stack as the 64-bit boot protocol requires.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{PDE_START, PDPTE_START, PML4_START};

/// Errors writing the page tables.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    /// Guest memory does not hold the tables' pages.
    #[error("failed to write the identity page tables into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Present + writable.
const PRESENT_RW: u64 = 0x3;
/// Present + writable + page size (a 2 MiB page in a PD entry).
const PRESENT_RW_HUGE: u64 = 0x83;
/// Size of one large page.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
/// How much the identity map covers.
pub const IDENTITY_MAPPED: u64 = 512 * LARGE_PAGE_SIZE;

/// The three table pages as `(guest address, 512 entries)`, for writing or for inspection.
pub fn identity_tables() -> [(u64, Vec<u64>); 3] {
    let mut pml4 = vec![0u64; 512];
    pml4[0] = PDPTE_START | PRESENT_RW;
    let mut pdpt = vec![0u64; 512];
    pdpt[0] = PDE_START | PRESENT_RW;
    let pd = (0..512u64)
        .map(|i| (i * LARGE_PAGE_SIZE) | PRESENT_RW_HUGE)
        .collect();
    [(PML4_START, pml4), (PDPTE_START, pdpt), (PDE_START, pd)]
}

/// Writes the identity map; the value for CR3 is [`PML4_START`].
pub fn write_identity_tables(mem: &GuestMemoryMmap) -> Result<(), PagingError> {
    for (base, entries) in identity_tables() {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        mem.write_slice(&bytes, GuestAddress(base))
            .map_err(PagingError::Write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables in guest memory the way the MMU does for a 2 MiB page.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let read = |addr: u64| -> u64 { mem.read_obj(GuestAddress(addr)).expect("read") };
        let pml4e = read(cr3 + ((va >> 39) & 0x1ff) * 8);
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte = read((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8);
        if pdpte & 1 == 0 {
            return None;
        }
        let pde = read((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8);
        if pde & 1 == 0 || pde & 0x80 == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff) | (va & 0x1f_ffff))
    }

    #[test]
    fn first_gib_is_identity_mapped_with_large_pages() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory");
        write_identity_tables(&mem).expect("write");
        for va in [0, 0x7000, 0x10_0000, 0x1234_5678, IDENTITY_MAPPED - 1] {
            assert_eq!(translate(&mem, PML4_START, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&mem, PML4_START, IDENTITY_MAPPED), None);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).expect("read");
        assert_eq!(pml4, 0xa003);
        let pde1: u64 = mem.read_obj(GuestAddress(PDE_START + 8)).expect("read");
        assert_eq!(pde1, 0x20_0083);
    }
}
