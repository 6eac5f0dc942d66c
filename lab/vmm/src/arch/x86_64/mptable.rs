//! The Intel MultiProcessor Specification 1.4 table that tells a kernel about its vCPUs, the
//! IOAPIC and the ISA interrupt routing (how SMP guests find their CPUs without ACPI).
//!
//! At [`MPTABLE_START`] (the first KiB of the EBDA, where the kernel scans): the 16-byte MP
//! floating pointer, then the configuration table: header, one processor entry per vCPU (APIC
//! id = vCPU index, vCPU 0 the bootstrap processor), the ISA bus, the IOAPIC (id = vCPU
//! count), ISA IRQs 0-23 routed to the same IOAPIC pins, and LINT0 = ExtINT, LINT1 = NMI.
//! Both structures checksum to zero.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{ACPI_START, APIC_START, IOAPIC_START, MPTABLE_START};

/// Errors writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// No vCPUs, or more than APIC ids (and the IOAPIC's id after them) can name.
    #[error("unsupported vcpu count {0} for the mp table")]
    VcpuCount(u8),
    /// The table would run into the ACPI area.
    #[error("mp table of {0} bytes does not fit below the acpi area")]
    TooBig(usize),
    /// Guest memory does not hold the table's address.
    #[error("failed to write the mp table into guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Number of IOAPIC pins (and ISA-style IRQs routed 1:1 to them).
pub const IOAPIC_PINS: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const CPU_ENTRY_LEN: usize = 20;
const SMALL_ENTRY_LEN: usize = 8;
/// Processor signature in processor entries: family 6.
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags in processor entries: FPU (bit 0) and on-chip APIC (bit 9).
const CPU_FEATURES: u32 = (1 << 9) | 1;

/// Sum of `bytes` modulo 256; zero for a valid MP structure.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// The MP floating pointer and configuration table for `vcpus` vCPUs, as the bytes to write at
/// `base` (the table follows the pointer).
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    if vcpus == 0 || vcpus == u8::MAX {
        return Err(MptableError::VcpuCount(vcpus));
    }
    let ioapic_id = vcpus;
    let mut table = Vec::new();
    // Header; length, entry count and checksum are filled in at the end.
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&0u16.to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum
    table.extend_from_slice(b"LAB-VMM ");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&0u16.to_le_bytes()); // entry count
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table length, checksum, reserved
    debug_assert_eq!(table.len(), HEADER_LEN);
    let mut entries: u16 = 0;
    for id in 0..vcpus {
        table.push(0); // processor
        table.push(id);
        table.push(APIC_VERSION);
        table.push(if id == 0 { 0b11 } else { 0b01 }); // enabled, bootstrap
        table.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        table.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        table.extend_from_slice(&[0; 8]);
        entries += 1;
    }
    table.extend_from_slice(&[1, 0]); // bus 0
    table.extend_from_slice(b"ISA   ");
    entries += 1;
    table.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]); // IOAPIC, enabled
    table.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    entries += 1;
    for irq in 0..IOAPIC_PINS {
        // I/O interrupt: INT, conforming polarity/trigger, bus 0 irq -> ioapic pin.
        table.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        entries += 1;
    }
    // Local interrupts to every local APIC: ExtINT on LINT0, NMI on LINT1.
    table.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    table.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    entries += 2;
    debug_assert_eq!(
        table.len(),
        HEADER_LEN
            + CPU_ENTRY_LEN * usize::from(vcpus)
            + SMALL_ENTRY_LEN * (4 + IOAPIC_PINS as usize)
    );

    let total = FLOATING_LEN + table.len();
    if base + total as u64 > ACPI_START {
        return Err(MptableError::TooBig(total));
    }
    let table_len = u16::try_from(table.len()).map_err(|_| MptableError::TooBig(total))?;
    table[4..6].copy_from_slice(&table_len.to_le_bytes());
    table[34..36].copy_from_slice(&entries.to_le_bytes());
    table[7] = 0u8.wrapping_sub(checksum(&table));

    let table_addr = (base + FLOATING_LEN as u64) as u32;
    let mut floating = Vec::with_capacity(total);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&table_addr.to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(4); // spec revision 1.4
    floating.push(0); // checksum
    floating.extend_from_slice(&[0; 5]); // feature bytes: a configuration table is present
    floating[10] = 0u8.wrapping_sub(checksum(&floating));
    floating.extend_from_slice(&table);
    Ok(floating)
}

/// Writes the MP table for `vcpus` vCPUs at [`MPTABLE_START`].
pub fn write_mptable(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MptableError> {
    let bytes = build(vcpus, MPTABLE_START)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([b[off], b[off + 1]])
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }

    #[test]
    fn both_structures_checksum_to_zero() {
        for vcpus in [1, 2, 7, 32, 254] {
            let bytes = build(vcpus, MPTABLE_START).expect("build");
            assert_eq!(
                checksum(&bytes[..FLOATING_LEN]),
                0,
                "{vcpus} vcpus: pointer"
            );
            let table_len = usize::from(u16_at(&bytes, FLOATING_LEN + 4));
            assert_eq!(FLOATING_LEN + table_len, bytes.len());
            assert_eq!(checksum(&bytes[FLOATING_LEN..]), 0, "{vcpus} vcpus: table");
        }
    }

    #[test]
    fn table_describes_cpus_bus_ioapic_and_irqs() {
        let bytes = build(3, MPTABLE_START).expect("build");
        assert_eq!(&bytes[..4], b"_MP_");
        assert_eq!(u64::from(u32_at(&bytes, 4)), MPTABLE_START + 16);
        let t = &bytes[FLOATING_LEN..];
        assert_eq!(&t[..4], b"PCMP");
        assert_eq!(u16_at(t, 34), 3 + 1 + 1 + 24 + 2, "entry count");
        assert_eq!(u64::from(u32_at(t, 36)), APIC_START);
        let cpus = &t[HEADER_LEN..HEADER_LEN + 3 * CPU_ENTRY_LEN];
        for (id, cpu) in cpus.chunks(CPU_ENTRY_LEN).enumerate() {
            assert_eq!(cpu[0], 0);
            assert_eq!(usize::from(cpu[1]), id);
            assert_eq!(cpu[3], if id == 0 { 3 } else { 1 });
        }
        let rest = &t[HEADER_LEN + 3 * CPU_ENTRY_LEN..];
        assert_eq!(&rest[..8], b"\x01\x00ISA   ");
        assert_eq!(&rest[8..12], &[2, 3, IOAPIC_VERSION, 1]);
        assert_eq!(u64::from(u32_at(rest, 12)), IOAPIC_START);
        let irq4 = &rest[16 + 4 * 8..16 + 5 * 8];
        assert_eq!(irq4, &[3, 0, 0, 0, 0, 4, 3, 4]);
    }

    #[test]
    fn bad_counts_and_oversized_tables_are_refused() {
        assert!(matches!(
            build(0, MPTABLE_START),
            Err(MptableError::VcpuCount(0))
        ));
        assert!(matches!(
            build(255, MPTABLE_START),
            Err(MptableError::VcpuCount(255))
        ));
        assert!(matches!(
            build(8, ACPI_START - 64),
            Err(MptableError::TooBig(_))
        ));
    }

    #[test]
    fn table_lands_in_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory");
        write_mptable(&mem, 2).expect("write");
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(MPTABLE_START))
            .expect("read");
        assert_eq!(&sig, b"_MP_");
    }
}
