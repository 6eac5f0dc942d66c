//! Guest memory: anonymous private mappings (optionally backed by huge pages) laid out as the
//! architecture wants, RAM below the 32-bit MMIO gap and the rest above 4 GiB.

use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{GuestAddress, GuestRegionCollectionError, GuestRegionMmap};

use crate::arch::x86_64::layout;

/// The guest memory type the VMM uses.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size is zero or not a multiple of the page size in use.
    #[error("guest memory size {size:#x} is not a positive multiple of {page:#x}")]
    Size {
        /// The size asked for.
        size: u64,
        /// The page size it must be a multiple of.
        page: u64,
    },
    /// mmap failed (for huge pages: none reserved, see /proc/sys/vm/nr_hugepages).
    #[error("failed to map {size:#x} bytes of guest memory")]
    Mmap {
        /// The size of the failing region.
        size: u64,
        /// The mmap error.
        #[source]
        source: MmapRegionError,
    },
    /// A region would end past the top of the address space.
    #[error("guest memory region at {0:#x} overflows the address space")]
    Overflow(u64),
    /// The regions do not form a valid memory map.
    #[error("failed to assemble guest memory regions")]
    Regions(#[source] GuestRegionCollectionError),
}

/// What guest memory to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Bytes of guest RAM.
    pub size: u64,
    /// Back it with 2 MiB huge pages (MAP_HUGETLB) instead of ordinary pages.
    pub hugepages: bool,
}

const PAGE_SIZE: u64 = 4096;
const HUGE_PAGE_SIZE: u64 = 2 << 20;

/// Maps guest RAM per [`layout::ram_ranges`].
pub fn create_guest_memory(config: &MemoryConfig) -> Result<GuestMemoryMmap, MemoryError> {
    let page = if config.hugepages {
        HUGE_PAGE_SIZE
    } else {
        PAGE_SIZE
    };
    if config.size == 0 || !config.size.is_multiple_of(page) {
        return Err(MemoryError::Size {
            size: config.size,
            page,
        });
    }
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    if config.hugepages {
        flags |= libc::MAP_HUGETLB;
    }
    let mut regions = Vec::new();
    for (start, size) in layout::ram_ranges(config.size) {
        let len = usize::try_from(size).expect("x86_64 has a 64-bit usize");
        let region = MmapRegionBuilder::new(len)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .with_hugetlbfs(config.hugepages)
            .build()
            .map_err(|source| MemoryError::Mmap { size, source })?;
        let region = GuestRegionMmap::new(region, GuestAddress(start))
            .ok_or(MemoryError::Overflow(start))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Regions)
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;

    #[test]
    fn small_memory_is_one_region() {
        let mem = create_guest_memory(&MemoryConfig {
            size: 64 << 20,
            hugepages: false,
        })
        .expect("memory");
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
        mem.write_obj(0xdead_beefu32, GuestAddress(0x1000))
            .expect("write");
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        // MAP_NORESERVE: nothing is touched, so this costs no RAM.
        let mem = create_guest_memory(&MemoryConfig {
            size: 5 << 30,
            hugepages: false,
        })
        .expect("memory");
        let regions: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
        assert_eq!(
            regions,
            vec![
                (0, layout::MMIO_GAP_START),
                (1 << 32, (5 << 30) - layout::MMIO_GAP_START)
            ]
        );
        assert!(!mem.address_in_range(GuestAddress(layout::MMIO_GAP_START)));
    }

    #[test]
    fn sizes_are_checked() {
        for (size, hugepages) in [(0, false), (4097, false), (3 << 20, true)] {
            assert!(matches!(
                create_guest_memory(&MemoryConfig { size, hugepages }),
                Err(MemoryError::Size { .. })
            ));
        }
    }
}
