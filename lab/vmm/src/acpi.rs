//! The guest's ACPI tables (x86_64), built with the `acpi_tables` crate: how a Linux kernel
//! that reads ACPI (Debian's do) learns the vCPUs, the interrupt controllers, the reset
//! register and the virtio-mmio devices, which it otherwise finds only through
//! `virtio_mmio.device=` arguments (a `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` feature Debian's
//! kernels lack).
//!
//! The tables, all in the BIOS area that Linux scans for the RSDP (`0xe0000..0x100000`, which
//! the e820 map must not give the guest as RAM), one after the other on 16-byte boundaries:
//!
//! ```text
//!  0xe0000  RSDP  "RSD PTR ", revision 2 ──► XSDT
//!  0xe0040  DSDT  \_SB_.Vnnn: _HID "LNRO0005", _UID n, _CRS { Memory32Fixed, Interrupt }
//!                 \_SB_.COM1: _HID PNP0501, _CRS { IO 0x3f8/8, Interrupt 4 } (when asked for)
//!                 \_S5_: Package { 5 } (the soft-off sleep type)
//!  then     FADT  HW-reduced ACPI, reset register: port 0x64 ← 0xfe (the i8042's reset), sleep
//!                 control/status registers at ports 0x600/0x601 (power-off), no VGA, no MSI,
//!                 no CMOS RTC, no 8042 to probe; X_DSDT ──► DSDT
//!  then     MADT  local APIC at 0xfee00000, one enabled local APIC per vCPU (APIC id = index),
//!                 the I/O APIC (id 0) at 0xfec00000 with GSI base 0
//!  then     XSDT  ──► FADT, MADT
//! ```
//!
//! A HW-reduced FADT tells Linux there is no legacy PIC and no PIT-driven timer setup: it uses
//! the local APIC and the I/O APIC (as Firecracker's and cloud-hypervisor's guests do). The
//! virtio-mmio interrupts are edge-triggered and active-high, as irqfds deliver them.

use acpi_tables::aml::{
    Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::arch::x86_64::layout;
use crate::devices::legacy::acpi_sleep::{S5_SLEEP_TYPE, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT};

/// Where the RSDP goes: the start of the BIOS area Linux scans for it.
pub const RSDP_ADDR: u64 = layout::ACPI_START;
/// The end of the area the tables may fill (exclusive): where RAM for the kernel starts.
pub const ACPI_AREA_END: u64 = layout::HIMEM_START;
/// The local APIC's address.
pub const LAPIC_ADDR: u32 = layout::APIC_START as u32;
/// The I/O APIC's address.
pub const IOAPIC_ADDR: u32 = layout::IOAPIC_START as u32;

const _: () = assert!(RSDP_ADDR == 0xe_0000 && ACPI_AREA_END == 0x10_0000);
const _: () = assert!(layout::APIC_START == LAPIC_ADDR as u64);
const _: () = assert!(layout::IOAPIC_START == IOAPIC_ADDR as u64);
/// The OEM id in every table.
pub const OEM_ID: [u8; 6] = *b"LABVMM";
/// The `_HID` Linux's virtio_mmio driver matches.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// The i8042 command port, which the FADT's reset register names.
pub const RESET_PORT: u16 = 0x64;
/// The value written there to reset (pulse the CPU reset line).
pub const RESET_VALUE: u8 = 0xfe;

/// The most virtio-mmio devices the DSDT names (`V000`..`V999`).
pub const MAX_VIRTIO_DEVICES: usize = 1000;
/// The hypervisor vendor identity in the FADT.
const HYPERVISOR_VENDOR: [u8; 8] = *b"LABVMKVM";
/// The OEM revision of every table.
const OEM_REVISION: u32 = 1;

/// IA-PC boot architecture flags (FADT `IAPC_BOOT_ARCH`).
mod iapc {
    /// VGA not present.
    pub const VGA_NOT_PRESENT: u16 = 1 << 2;
    /// MSI not supported.
    pub const MSI_NOT_SUPPORTED: u16 = 1 << 3;
    /// CMOS RTC not present.
    pub const CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
}

/// Why the tables could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// A VM needs 1 to 255 vCPUs (APIC ids are bytes here).
    #[error("cannot describe {0} vcpus (1 to 255)")]
    VcpuCount(usize),
    /// More virtio-mmio devices than the DSDT names.
    #[error("too many virtio-mmio devices ({0}, at most {MAX_VIRTIO_DEVICES})")]
    TooManyDevices(usize),
    /// A virtio-mmio window that a 32-bit memory descriptor cannot hold.
    #[error("virtio-mmio window {base:#x}+{len:#x} does not lie below 4 GiB")]
    WindowAbove4G {
        /// The window's start.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// The tables do not fit in the BIOS area.
    #[error("acpi tables end at {end:#x}, past {ACPI_AREA_END:#x}")]
    TooLarge {
        /// Where they would end.
        end: u64,
    },
    /// Writing the tables into guest memory failed.
    #[error("failed to write the acpi tables to guest memory")]
    GuestMemory(#[source] vm_memory::GuestMemoryError),
}

/// A virtio-mmio device as the DSDT describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioInfo {
    /// The window's guest physical address.
    pub base: u64,
    /// The window's length (0x1000).
    pub len: u64,
    /// Its interrupt (GSI).
    pub irq: u32,
}

/// A 16550 UART as the DSDT describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialInfo {
    /// The first port (0x3f8 for COM1).
    pub port: u16,
    /// Its interrupt (4 for COM1).
    pub irq: u32,
}

/// What the tables describe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcpiConfig {
    /// The number of vCPUs.
    pub vcpus: usize,
    /// The virtio-mmio devices, in `_UID` order.
    pub virtio_mmio: Vec<VirtioMmioInfo>,
    /// The serial port, if the DSDT should name it.
    pub serial: Option<SerialInfo>,
}

/// The built tables and where each goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// (address, signature, bytes) of each table, RSDP first.
    tables: Vec<(u64, [u8; 4], Vec<u8>)>,
}

impl AcpiTables {
    /// Builds the tables for `config`, the RSDP at [`RSDP_ADDR`].
    pub fn build(config: &AcpiConfig) -> Result<Self, AcpiError> {
        if config.vcpus == 0 || config.vcpus > usize::from(u8::MAX) {
            return Err(AcpiError::VcpuCount(config.vcpus));
        }
        let dsdt = dsdt(config)?;
        let madt = madt(config.vcpus);

        let align = |at: u64| at.next_multiple_of(16);
        let dsdt_addr = align(RSDP_ADDR + Rsdp::len() as u64);
        let fadt_addr = align(dsdt_addr + dsdt.len() as u64);
        let fadt = fadt(dsdt_addr);
        let madt_addr = align(fadt_addr + fadt.len() as u64);
        let xsdt_addr = align(madt_addr + madt.len() as u64);
        let mut xsdt = XSDT::new(OEM_ID, *b"LABVMXSD", OEM_REVISION);
        xsdt.add_entry(fadt_addr);
        xsdt.add_entry(madt_addr);
        let xsdt = to_bytes(&xsdt);
        let end = xsdt_addr + xsdt.len() as u64;
        if end > ACPI_AREA_END {
            return Err(AcpiError::TooLarge { end });
        }
        let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
        Ok(Self {
            tables: vec![
                (RSDP_ADDR, *b"RSD ", rsdp),
                (dsdt_addr, *b"DSDT", dsdt),
                (fadt_addr, *b"FACP", fadt),
                (madt_addr, *b"APIC", madt),
                (xsdt_addr, *b"XSDT", xsdt),
            ],
        })
    }

    /// The RSDP's address (for `boot_params.acpi_rsdp_addr`).
    pub fn rsdp_addr(&self) -> u64 {
        RSDP_ADDR
    }

    /// The table with `signature` ("RSD " for the RSDP): its address and bytes.
    pub fn table(&self, signature: &[u8; 4]) -> Option<(u64, &[u8])> {
        self.tables
            .iter()
            .find(|(_, sig, _)| sig == signature)
            .map(|(addr, _, bytes)| (*addr, bytes.as_slice()))
    }

    /// Every table: (address, signature, bytes), the RSDP first.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8; 4], &[u8])> {
        self.tables
            .iter()
            .map(|(addr, sig, bytes)| (*addr, sig, bytes.as_slice()))
    }

    /// Writes every table to its address in `mem`.
    pub fn write_to<M: GuestMemory>(&self, mem: &M) -> Result<(), AcpiError> {
        for (addr, _, bytes) in &self.tables {
            mem.write_slice(bytes, GuestAddress(*addr))
                .map_err(AcpiError::GuestMemory)?;
        }
        Ok(())
    }
}

/// Builds the tables for `config` and writes them into `mem`; returns the RSDP's address.
pub fn setup_acpi<M: GuestMemory>(mem: &M, config: &AcpiConfig) -> Result<u64, AcpiError> {
    let tables = AcpiTables::build(config)?;
    tables.write_to(mem)?;
    Ok(tables.rsdp_addr())
}

fn to_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The DSDT: the devices under `\_SB_`.
fn dsdt(config: &AcpiConfig) -> Result<Vec<u8>, AcpiError> {
    if config.virtio_mmio.len() > MAX_VIRTIO_DEVICES {
        return Err(AcpiError::TooManyDevices(config.virtio_mmio.len()));
    }
    let mut devices = Vec::new();
    for (uid, dev) in config.virtio_mmio.iter().enumerate() {
        let too_high = AcpiError::WindowAbove4G {
            base: dev.base,
            len: dev.len,
        };
        let base = u32::try_from(dev.base).map_err(|_| too_high)?;
        let fits = u32::try_from(dev.len)
            .ok()
            .filter(|&len| len > 0 && base.checked_add(len - 1).is_some());
        let Some(len) = fits else {
            return Err(AcpiError::WindowAbove4G {
                base: dev.base,
                len: dev.len,
            });
        };
        let uid = u32::try_from(uid).expect("at most MAX_VIRTIO_DEVICES");
        devices.push(RawAml(to_bytes(&Device::new(
            Path::new(&format!("V{uid:03}")),
            vec![
                &Name::new(Path::new("_HID"), &VIRTIO_MMIO_HID),
                &Name::new(Path::new("_UID"), &uid),
                &Name::new(
                    Path::new("_CRS"),
                    &ResourceTemplate::new(vec![
                        &Memory32Fixed::new(true, base, len),
                        &Interrupt::new(true, true, false, false, dev.irq),
                    ]),
                ),
            ],
        ))));
    }
    if let Some(serial) = config.serial {
        devices.push(RawAml(to_bytes(&Device::new(
            Path::new("COM1"),
            vec![
                &Name::new(Path::new("_HID"), &EISAName::new("PNP0501")),
                &Name::new(Path::new("_UID"), &1u32),
                &Name::new(
                    Path::new("_CRS"),
                    &ResourceTemplate::new(vec![
                        &IO::new(serial.port, serial.port, 1, 8),
                        &Interrupt::new(true, true, false, false, serial.irq),
                    ]),
                ),
            ],
        ))));
    }
    let children: Vec<&dyn Aml> = devices.iter().map(|d| d as &dyn Aml).collect();
    let mut body = to_bytes(&Scope::new(Path::new("\\_SB_"), children));
    // The soft-off state, entered through the FADT's sleep control register.
    body.extend(to_bytes(&Name::new(
        Path::new("_S5_"),
        &Package::new(vec![&S5_SLEEP_TYPE]),
    )));
    // Revision 2: integers are 64 bits.
    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, *b"LABVMDSD", OEM_REVISION);
    dsdt.append_slice(&body);
    Ok(dsdt.as_slice().to_vec())
}

/// Already-encoded AML, to nest encoded devices in a scope.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// The FADT: HW-reduced, with the i8042 reset as the reset register.
fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"LABVMFAC", OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // No fixed-feature power or sleep button.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.reset_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(RESET_PORT),
    );
    fadt.reset_value = RESET_VALUE;
    let sleep_register = |port: u16| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            port.into(),
        )
    };
    fadt.sleep_control_reg = sleep_register(SLEEP_CONTROL_PORT);
    fadt.sleep_status_reg = sleep_register(SLEEP_STATUS_PORT);
    fadt.iapc_boot_arch =
        (iapc::VGA_NOT_PRESENT | iapc::MSI_NOT_SUPPORTED | iapc::CMOS_RTC_NOT_PRESENT).into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR).into();
    to_bytes(&fadt.finalize())
}

/// The MADT: the I/O APIC and one local APIC per vCPU.
fn madt(vcpus: usize) -> Vec<u8> {
    let mut madt = MADT::new(
        OEM_ID,
        *b"LABVMAPI",
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    madt.add_structure(IoApic::new(0, IOAPIC_ADDR, 0));
    for id in 0..vcpus {
        let id = u8::try_from(id).expect("checked: at most 255 vcpus");
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    to_bytes(&madt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use vm_memory::GuestMemoryMmap;

    fn config() -> AcpiConfig {
        AcpiConfig {
            vcpus: 4,
            virtio_mmio: vec![
                VirtioMmioInfo {
                    base: 0xd000_0000,
                    len: 0x1000,
                    irq: 5,
                },
                VirtioMmioInfo {
                    base: 0xd000_1000,
                    len: 0x1000,
                    irq: 6,
                },
            ],
            serial: Some(SerialInfo {
                port: 0x3f8,
                irq: 4,
            }),
        }
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    }

    #[test]
    fn every_table_has_a_valid_checksum_and_length() {
        for vcpus in [1, 2, 255] {
            let tables = AcpiTables::build(&AcpiConfig { vcpus, ..config() }).expect("tables");
            for (addr, sig, bytes) in tables.iter() {
                let name = String::from_utf8_lossy(sig);
                assert_eq!(sum(bytes), 0, "{name} checksum");
                assert_eq!(addr % 16, 0, "{name} alignment");
                if sig == b"RSD " {
                    assert_eq!(&bytes[..8], b"RSD PTR ");
                    assert_eq!(sum(&bytes[..20]), 0, "RSDP v1 checksum");
                    assert_eq!(bytes[15], 2, "RSDP revision");
                    assert_eq!(u32_at(bytes, 20) as usize, bytes.len());
                } else {
                    assert_eq!(&bytes[..4], sig);
                    assert_eq!(u32_at(bytes, 4) as usize, bytes.len(), "{name} length");
                }
            }
        }
    }

    #[test]
    fn tables_point_at_each_other() {
        let tables = AcpiTables::build(&config()).expect("tables");
        let (_, rsdp) = tables.table(b"RSD ").expect("rsdp");
        let (xsdt_addr, xsdt) = tables.table(b"XSDT").expect("xsdt");
        let (fadt_addr, fadt) = tables.table(b"FACP").expect("fadt");
        let (madt_addr, _) = tables.table(b"APIC").expect("madt");
        let (dsdt_addr, _) = tables.table(b"DSDT").expect("dsdt");
        assert_eq!(u64_at(rsdp, 24), xsdt_addr);
        assert_eq!(xsdt.len(), 36 + 16);
        assert_eq!(u64_at(xsdt, 36), fadt_addr);
        assert_eq!(u64_at(xsdt, 44), madt_addr);
        // X_DSDT at offset 140; the 32-bit DSDT field is zero.
        assert_eq!(u64_at(fadt, 140), dsdt_addr);
        assert_eq!(u32_at(fadt, 40), 0);
        assert!(tables
            .iter()
            .all(|(addr, _, b)| addr + b.len() as u64 <= ACPI_AREA_END));
    }

    #[test]
    fn fadt_is_hw_reduced_with_the_i8042_reset() {
        let tables = AcpiTables::build(&config()).expect("tables");
        let (_, fadt) = tables.table(b"FACP").expect("fadt");
        let flags = u32_at(fadt, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        // Reset register (GAS at 116): system I/O, 8 bits, port 0x64; value 0xfe at 128.
        assert_eq!(&fadt[116..120], &[1, 8, 0, 1]);
        assert_eq!(u64_at(fadt, 120), 0x64);
        assert_eq!(fadt[128], 0xfe);
        // IAPC_BOOT_ARCH at 109: no VGA, no MSI, no CMOS RTC, and no 8042 announced.
        let iapc = u16::from_le_bytes([fadt[109], fadt[110]]);
        assert_eq!(iapc, (1 << 2) | (1 << 3) | (1 << 5));
        assert_eq!(&fadt[268..276], b"LABVMKVM");
        // Sleep control (GAS at 244) and status (256): system I/O bytes at 0x600 and 0x601.
        assert_eq!(&fadt[244..248], &[1, 8, 0, 1]);
        assert_eq!(u64_at(fadt, 248), 0x600);
        assert_eq!(&fadt[256..260], &[1, 8, 0, 1]);
        assert_eq!(u64_at(fadt, 260), 0x601);
    }

    #[test]
    fn madt_has_a_local_apic_per_vcpu_and_the_ioapic() {
        let tables = AcpiTables::build(&AcpiConfig {
            vcpus: 3,
            ..config()
        })
        .expect("tables");
        let (_, madt) = tables.table(b"APIC").expect("madt");
        assert_eq!(u32_at(madt, 36), LAPIC_ADDR);
        let mut at = 44;
        let mut lapics = Vec::new();
        let mut ioapics = Vec::new();
        while at < madt.len() {
            let (kind, len) = (madt[at], usize::from(madt[at + 1]));
            match kind {
                0 => lapics.push((madt[at + 2], madt[at + 3], u32_at(madt, at + 4))),
                1 => ioapics.push((madt[at + 2], u32_at(madt, at + 4), u32_at(madt, at + 8))),
                other => panic!("unexpected madt entry {other}"),
            }
            at += len;
        }
        assert_eq!(at, madt.len());
        assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
        assert_eq!(ioapics, vec![(0, IOAPIC_ADDR, 0)]);
    }

    #[test]
    fn bad_configs_are_refused() {
        let cases: Vec<(AcpiConfig, &str)> = vec![
            (
                AcpiConfig {
                    vcpus: 0,
                    ..config()
                },
                "cannot describe 0 vcpus (1 to 255)",
            ),
            (
                AcpiConfig {
                    vcpus: 256,
                    ..config()
                },
                "cannot describe 256 vcpus (1 to 255)",
            ),
            (
                AcpiConfig {
                    virtio_mmio: vec![VirtioMmioInfo {
                        base: 0x1_0000_0000,
                        len: 0x1000,
                        irq: 5,
                    }],
                    ..config()
                },
                "virtio-mmio window 0x100000000+0x1000 does not lie below 4 GiB",
            ),
            (
                AcpiConfig {
                    virtio_mmio: vec![VirtioMmioInfo {
                        base: 0xffff_f800,
                        len: 0x1000,
                        irq: 5,
                    }],
                    ..config()
                },
                "virtio-mmio window 0xfffff800+0x1000 does not lie below 4 GiB",
            ),
            (
                AcpiConfig {
                    virtio_mmio: vec![
                        VirtioMmioInfo {
                            base: 0xd000_0000,
                            len: 0x1000,
                            irq: 5,
                        };
                        MAX_VIRTIO_DEVICES + 1
                    ],
                    ..config()
                },
                "too many virtio-mmio devices (1001, at most 1000)",
            ),
        ];
        for (cfg, want) in cases {
            let err = AcpiTables::build(&cfg).expect_err(want);
            assert_eq!(err.to_string(), want);
        }
        // The most devices still fit in the BIOS area.
        let many = AcpiConfig {
            vcpus: 255,
            virtio_mmio: (0..MAX_VIRTIO_DEVICES as u64)
                .map(|i| VirtioMmioInfo {
                    base: 0xd000_0000 + i * 0x1000,
                    len: 0x1000,
                    irq: 5 + i as u32 % 19,
                })
                .collect(),
            serial: None,
        };
        AcpiTables::build(&many).expect("1000 devices fit");
    }

    #[test]
    fn tables_are_written_to_guest_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("mem");
        let rsdp = setup_acpi(&mem, &config()).expect("written");
        assert_eq!(rsdp, 0xe_0000);
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(rsdp)).expect("read");
        assert_eq!(&sig, b"RSD PTR ");
        let xsdt: u64 = mem.read_obj(GuestAddress(rsdp + 24)).expect("xsdt ptr");
        let fadt: u64 = mem.read_obj(GuestAddress(xsdt + 36)).expect("fadt ptr");
        let dsdt: u64 = mem.read_obj(GuestAddress(fadt + 140)).expect("dsdt ptr");
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(dsdt)).expect("dsdt");
        assert_eq!(&sig, b"DSDT");
        // Memory that does not reach the BIOS area is an error, not a panic.
        let small =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1_0000)]).expect("mem");
        assert!(matches!(
            setup_acpi(&small, &config()),
            Err(AcpiError::GuestMemory(_))
        ));
    }

    /// Decompiles the DSDT with `iasl -d` (Debian's acpica-tools) and checks what it says.
    #[test]
    fn dsdt_decompiles_with_iasl() {
        if Command::new("iasl").arg("-v").output().is_err() {
            eprintln!("skipped: iasl not found (install acpica-tools to check the DSDT)");
            return;
        }
        let tables = AcpiTables::build(&config()).expect("tables");
        let (_, dsdt) = tables.table(b"DSDT").expect("dsdt");
        let dir = tempfile::tempdir().expect("tempdir");
        let aml = dir.path().join("dsdt.aml");
        std::fs::write(&aml, dsdt).expect("write aml");
        let out = Command::new("iasl")
            .arg("-d")
            .arg(&aml)
            .current_dir(dir.path())
            .output()
            .expect("run iasl");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "iasl -d failed:\n{log}");
        let dsl = std::fs::read_to_string(dir.path().join("dsdt.dsl")).expect("dsdt.dsl");
        // Whitespace-insensitive, as iasl's layout may change.
        let flat: String = dsl.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            "Scope (\\_SB) {",
            "Device (V000) { Name (_HID, \"LNRO0005\") // _HID: Hardware ID Name (_UID, Zero)",
            "Memory32Fixed (ReadWrite, 0xD0000000, // Address Base 0x00001000, // Address Length )",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000005, }",
            "Device (V001) { Name (_HID, \"LNRO0005\") // _HID: Hardware ID Name (_UID, One)",
            "Memory32Fixed (ReadWrite, 0xD0001000, // Address Base 0x00001000, // Address Length )",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000006, }",
            "Device (COM1) { Name (_HID, EisaId (\"PNP0501\")",
            "IO (Decode16, 0x03F8, // Range Minimum 0x03F8, // Range Maximum 0x01, // Alignment 0x08, // Length )",
            "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000004, }",
            "Name (_S5, Package (0x01) // _S5_: S5 System State { 0x05 })",
        ] {
            assert!(flat.contains(want), "missing {want:?} in:\n{dsl}");
        }
        assert!(!log.contains("Error"), "iasl reported errors:\n{log}");
    }
}
