//! vCPU register state at the first guest instruction, for both boot protocols: general
//! registers, segment and control registers, the FPU, and the local APIC's LINT pins.
//!
//! - [`BootEntry::Linux64`]: the Linux 64-bit boot protocol. Long mode with paging on (CR3 →
//!   the identity map), CS = `__BOOT_CS` (0x10), DS/ES/SS = `__BOOT_DS` (0x18), interrupts off,
//!   RSI = the zero page.
//! - [`BootEntry::Pvh`]: the Xen PVH entry. 32-bit protected mode, paging off, flat 4 GiB
//!   segments (CS 0x08, data 0x18), interrupts off, EBX = `hvm_start_info`.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;

use super::gdt::{self, CODE32_INDEX, CODE64_INDEX, DATA_INDEX, TSS_INDEX};
use super::layout::{BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PML4_START};

/// Errors setting registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A KVM register ioctl failed; the name says which.
    #[error("failed to {0}")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
}

/// Where and how a vCPU starts executing the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// 64-bit long mode at `entry`, RSI = `boot_params` (the Linux 64-bit boot protocol).
    Linux64 {
        /// First instruction (guest-physical = guest-virtual in the identity map).
        entry: u64,
        /// The zero page.
        boot_params: u64,
    },
    /// 32-bit protected mode at `entry`, EBX = `start_info` (the PVH boot protocol).
    Pvh {
        /// First instruction.
        entry: u64,
        /// The `hvm_start_info` structure.
        start_info: u64,
    },
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS with only the always-one bit 1: interrupts off.
const RFLAGS_RESERVED: u64 = 0x2;

/// The general registers for `entry`.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    match *entry {
        BootEntry::Linux64 { entry, boot_params } => kvm_regs {
            rip: entry,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: boot_params,
            rflags: RFLAGS_RESERVED,
            ..Default::default()
        },
        BootEntry::Pvh { entry, start_info } => kvm_regs {
            rip: entry,
            rbx: start_info,
            rflags: RFLAGS_RESERVED,
            ..Default::default()
        },
    }
}

/// The special registers for `entry`, starting from the vCPU's current ones (which keep what
/// this does not set: the APIC base, interrupt bitmap).
pub fn boot_sregs(entry: &BootEntry, mut sregs: kvm_sregs) -> kvm_sregs {
    let data = gdt::segment(DATA_INDEX);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = gdt::gdt_limit();
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = gdt::IDT_LIMIT;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(TSS_INDEX);
    sregs.cr0 = (sregs.cr0 | CR0_PE | CR0_ET) & !(CR0_CD | CR0_NW);
    match entry {
        BootEntry::Linux64 { .. } => {
            sregs.cs = gdt::segment(CODE64_INDEX);
            sregs.cr0 |= CR0_PG;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= CR4_PAE;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        BootEntry::Pvh { .. } => {
            sregs.cs = gdt::segment(CODE32_INDEX);
            sregs.cr0 &= !CR0_PG;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    sregs
}

/// The FPU state at reset: x87 control word 0x37f, MXCSR 0x1f80 (all exceptions masked).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Loads general, special and FPU registers for `entry` into the vCPU. The GDT and (for
/// [`BootEntry::Linux64`]) the identity page tables must already be in guest memory.
pub fn setup_registers(vcpu: &VcpuFd, entry: &BootEntry) -> Result<(), RegsError> {
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| RegsError::Ioctl("get sregs", e))?;
    vcpu.set_sregs(&boot_sregs(entry, sregs))
        .map_err(|e| RegsError::Ioctl("set sregs", e))?;
    vcpu.set_regs(&boot_regs(entry))
        .map_err(|e| RegsError::Ioctl("set regs", e))?;
    vcpu.set_fpu(&boot_fpu())
        .map_err(|e| RegsError::Ioctl("set fpu", e))
}

/// Local APIC register offsets and delivery modes for the LINT pins.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// Routes LINT0 to ExtINT (the legacy PIC) and LINT1 to NMI, as firmware would; needs the
/// in-kernel irqchip.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| RegsError::Ioctl("get lapic", e))?;
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let reg = &mut lapic.regs[offset..offset + 4];
        let old = u32::from_le_bytes([reg[0] as u8, reg[1] as u8, reg[2] as u8, reg[3] as u8]);
        let new = (old & !0x700) | (mode << 8);
        for (dst, src) in reg.iter_mut().zip(new.to_le_bytes()) {
            *dst = src as _;
        }
    }
    vcpu.set_lapic(&lapic)
        .map_err(|e| RegsError::Ioctl("set lapic", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux64_entry_is_long_mode_with_rsi() {
        let entry = BootEntry::Linux64 {
            entry: 0x100_0200,
            boot_params: 0x7000,
        };
        let regs = boot_regs(&entry);
        assert_eq!(
            (regs.rip, regs.rsi, regs.rsp, regs.rflags),
            (0x100_0200, 0x7000, 0x8ff0, 2)
        );
        let sregs = boot_sregs(
            &entry,
            kvm_sregs {
                cr0: 0x6000_0010,
                ..Default::default()
            },
        );
        assert_eq!(sregs.cr0, 0x8000_0011, "PE|ET|PG, caches on");
        assert_eq!(sregs.cr3, PML4_START);
        assert_eq!(sregs.cr4 & CR4_PAE, CR4_PAE);
        assert_eq!(sregs.efer, EFER_LME | EFER_LMA);
        assert_eq!((sregs.cs.selector, sregs.cs.l), (0x10, 1));
        assert_eq!((sregs.ds.selector, sregs.ss.selector), (0x18, 0x18));
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (BOOT_GDT_START, 39));
        assert_eq!((sregs.idt.base, sregs.idt.limit), (BOOT_IDT_START, 7));
    }

    #[test]
    fn pvh_entry_is_protected_mode_with_ebx() {
        let entry = BootEntry::Pvh {
            entry: 0x100_0000,
            start_info: 0x6000,
        };
        let regs = boot_regs(&entry);
        assert_eq!((regs.rip, regs.rbx, regs.rflags), (0x100_0000, 0x6000, 2));
        let sregs = boot_sregs(
            &entry,
            kvm_sregs {
                cr0: 0x6000_0010,
                cr4: CR4_PAE,
                efer: EFER_LME,
                ..Default::default()
            },
        );
        assert_eq!(sregs.cr0, CR0_PE | CR0_ET);
        assert_eq!((sregs.cr4, sregs.efer), (0, 0));
        assert_eq!((sregs.cs.selector, sregs.cs.db, sregs.cs.l), (0x08, 1, 0));
        assert_eq!(sregs.cs.limit, 0xffff_ffff);
        assert_eq!(sregs.es.selector, 0x18);
    }

    #[test]
    fn fpu_starts_at_reset_values() {
        let fpu = boot_fpu();
        assert_eq!((fpu.fcw, fpu.mxcsr), (0x37f, 0x1f80));
    }
}
