//! The guest physical memory layout: where RAM, the 32-bit MMIO gap and every boot structure live.
//!
//! ```text
//! 0x0000_0000  +---------------------------------+
//!              | real-mode IVT / BDA (unused)    |
//! 0x0000_0500  | GDT            (BOOT_GDT_START) |
//! 0x0000_0540  | IDT            (BOOT_IDT_START) |
//! 0x0000_6000  | PVH hvm_start_info, module list, memory map
//! 0x0000_7000  | zero page (boot_params)         |
//! 0x0000_8ff0  | boot stack top (grows down)     |
//! 0x0000_9000  | PML4, PDPT, PD (identity map)   |
//! 0x0002_0000  | kernel command line             |
//! 0x0009_fc00  +--- e820 reserved ---------------+
//!              | EBDA: MP table                  |
//! 0x000e_0000  | BIOS area (free for ACPI: RSDP  |
//!              | and tables, see ACPI_START)     |
//! 0x0010_0000  +--- e820 RAM --------------------+
//!              | kernel (HIMEM_START), initrd at the top of low RAM
//! 0xc000_0000  +--- 32-bit MMIO gap (not RAM) ---+
//!              | MMIO32_START: devices (virtio-mmio, ...)
//! 0xfec0_0000  | IOAPIC                          |
//! 0xfee0_0000  | local APIC                      |
//! 0xfffb_c000  | KVM identity map page, TSS (3 pages)
//! 0x1_0000_0000+--- e820 RAM (when mem > 3 GiB) -+
//! ```

/// Start of the GDT the boot vCPUs use.
pub const BOOT_GDT_START: u64 = 0x500;
/// Start of the (empty) IDT the boot vCPUs use.
pub const BOOT_IDT_START: u64 = 0x540;
/// Where the PVH `hvm_start_info` is written.
pub const PVH_INFO_START: u64 = 0x6000;
/// Where the PVH module list (the initrd) is written, right after `hvm_start_info` (56 bytes).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// Where the PVH memory map is written, after one module entry (32 bytes).
pub const PVH_MEMMAP_START: u64 = 0x6060;
/// Most PVH memory map entries that fit before the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = ((ZERO_PAGE_START - PVH_MEMMAP_START) / 24) as usize;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The identity-map page tables: PML4, then PDPT, then PD, one page each.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the identity map.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory of the identity map (512 entries of 2 MiB: the first 1 GiB).
pub const PDE_START: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Room reserved for the command line, its terminating NUL included. The kernel's own limit
/// (`setup_header.cmdline_size`, 2048 on older kernels) is checked as well.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Start of the Extended BIOS Data Area; everything from here to 1 MiB is e820-reserved.
pub const EBDA_START: u64 = 0x9fc00;
/// The MP table lives at the start of the EBDA, where the kernel's MP scan looks.
pub const MPTABLE_START: u64 = EBDA_START;
/// Free low memory for the ACPI tables (RSDP must be in 0xe0000..0x100000 to be found by scan).
pub const ACPI_START: u64 = 0xe0000;
/// First byte of high memory: where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO gap: guest RAM stops here and resumes at [`HIGH_RAM_START`].
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Where devices' MMIO windows go (virtio-mmio and friends), up to [`MMIO32_END`].
pub const MMIO32_START: u64 = MMIO_GAP_START;
/// End (exclusive) of the device MMIO window: the IOAPIC and what follows are the platform's.
pub const MMIO32_END: u64 = IOAPIC_START;
/// The IOAPIC's MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APIC's MMIO base.
pub const APIC_START: u64 = 0xfee0_0000;
/// KVM's identity-map page (KVM_SET_IDENTITY_MAP_ADDR); one page, inside the MMIO gap.
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// KVM's TSS area (KVM_SET_TSS_ADDR); three pages right after the identity-map page.
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// RAM above the MMIO gap starts here.
pub const HIGH_RAM_START: u64 = MMIO_GAP_END;

// KVM's pages sit in the MMIO gap, above the APIC, in the order KVM expects.
const _: () = assert!(KVM_TSS_START + 3 * 0x1000 <= MMIO_GAP_END);
const _: () = assert!(KVM_IDENTITY_MAP_START + 0x1000 <= KVM_TSS_START);
const _: () = assert!(APIC_START < KVM_IDENTITY_MAP_START);

/// The guest RAM ranges `(start, size)` for `mem_size` bytes of RAM: one range below the MMIO
/// gap, and a second one from 4 GiB when the RAM does not fit below it.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (HIGH_RAM_START, mem_size - MMIO_GAP_START),
        ]
    }
}

/// End (exclusive) of the RAM below the MMIO gap.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_ranges_split_around_the_mmio_gap() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
        assert_eq!(ram_ranges(MMIO_GAP_START), vec![(0, MMIO_GAP_START)]);
        assert_eq!(
            ram_ranges(4 << 30),
            vec![(0, MMIO_GAP_START), (1 << 32, (4 << 30) - MMIO_GAP_START)]
        );
        assert_eq!(low_ram_end(4 << 30), MMIO_GAP_START);
        assert_eq!(low_ram_end(128 << 20), 128 << 20);
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let areas = [
            (BOOT_GDT_START, BOOT_IDT_START),
            (BOOT_IDT_START, BOOT_IDT_START + 8),
            (PVH_INFO_START, PVH_MODLIST_START),
            (PVH_MODLIST_START, PVH_MEMMAP_START),
            (
                PVH_MEMMAP_START,
                PVH_MEMMAP_START + 24 * PVH_MEMMAP_MAX_ENTRIES as u64,
            ),
            (ZERO_PAGE_START, ZERO_PAGE_START + 0x1000),
            (ZERO_PAGE_START + 0x1000, BOOT_STACK_POINTER + 0x10),
            (PML4_START, PDE_START + 0x1000),
            (CMDLINE_START, CMDLINE_START + CMDLINE_MAX_SIZE as u64),
            (EBDA_START, HIMEM_START),
        ];
        for pair in areas.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:x?} overlap");
        }
    }
}
