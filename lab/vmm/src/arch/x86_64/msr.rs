//! The MSRs every boot vCPU starts with, in one documented list.
//!
//! | MSR                      | value                  | why                                         |
//! |--------------------------|------------------------|---------------------------------------------|
//! | IA32_SYSENTER_CS/ESP/EIP | 0                      | no stale fast-syscall state                 |
//! | STAR, LSTAR, CSTAR       | 0                      | the kernel programs syscall entry itself    |
//! | SYSCALL_MASK (FMASK)     | 0                      | "                                           |
//! | KERNEL_GS_BASE           | 0                      | no stale swapgs value                       |
//! | IA32_TSC                 | 0                      | every vCPU's TSC starts together            |
//! | IA32_MISC_ENABLE         | FAST_STRING (bit 0)    | as firmware leaves it; `rep movs` is fast   |
//! | IA32_MTRR_DEF_TYPE       | E (bit 11) + WB (6)    | memory is write-back without MTRR ranges    |
//!
//! KVM writes them in order and stops at the first it refuses; [`write_boot_msrs`] names that one.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

/// Errors writing the boot MSRs.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    /// The entries do not fit a KVM MSR list.
    #[error("failed to build the msr list")]
    List(#[source] vmm_sys_util::fam::Error),
    /// KVM_SET_MSRS failed as a whole.
    #[error("failed to set msrs")]
    Set(#[source] kvm_ioctls::Error),
    /// KVM accepted the list only up to this MSR.
    #[error("kvm refused msr {name} ({index:#x})")]
    Refused {
        /// The MSR's architectural name.
        name: &'static str,
        /// Its index.
        index: u32,
    },
}

/// IA32_SYSENTER_CS.
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP.
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP.
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// STAR: syscall segment selectors.
pub const MSR_STAR: u32 = 0xc000_0081;
/// LSTAR: 64-bit syscall entry.
pub const MSR_LSTAR: u32 = 0xc000_0082;
/// CSTAR: compat syscall entry.
pub const MSR_CSTAR: u32 = 0xc000_0083;
/// SYSCALL_MASK: RFLAGS bits cleared on syscall.
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// KERNEL_GS_BASE: the value swapgs exchanges.
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_TSC.
pub const MSR_IA32_TSC: u32 = 0x10;
/// IA32_MISC_ENABLE.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// IA32_MISC_ENABLE bit 0: fast string operations.
pub const MISC_ENABLE_FAST_STRING: u64 = 1;
/// IA32_MTRR_DEF_TYPE.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled (bit 11), default type write-back (6).
pub const MTRR_ENABLE_WRITE_BACK: u64 = (1 << 11) | 6;

/// The boot MSRs as `(name, index, value)`, in the order they are written.
pub const BOOT_MSRS: [(&str, u32, u64); 11] = [
    ("IA32_SYSENTER_CS", MSR_IA32_SYSENTER_CS, 0),
    ("IA32_SYSENTER_ESP", MSR_IA32_SYSENTER_ESP, 0),
    ("IA32_SYSENTER_EIP", MSR_IA32_SYSENTER_EIP, 0),
    ("STAR", MSR_STAR, 0),
    ("CSTAR", MSR_CSTAR, 0),
    ("KERNEL_GS_BASE", MSR_KERNEL_GS_BASE, 0),
    ("SYSCALL_MASK", MSR_SYSCALL_MASK, 0),
    ("LSTAR", MSR_LSTAR, 0),
    ("IA32_TSC", MSR_IA32_TSC, 0),
    (
        "IA32_MISC_ENABLE",
        MSR_IA32_MISC_ENABLE,
        MISC_ENABLE_FAST_STRING,
    ),
    (
        "IA32_MTRR_DEF_TYPE",
        MSR_MTRR_DEF_TYPE,
        MTRR_ENABLE_WRITE_BACK,
    ),
];

/// [`BOOT_MSRS`] as KVM entries.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    BOOT_MSRS
        .iter()
        .map(|&(_, index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect()
}

/// Writes [`BOOT_MSRS`] into the vCPU.
pub fn write_boot_msrs(vcpu: &VcpuFd) -> Result<(), MsrError> {
    let msrs = Msrs::from_entries(&boot_msr_entries()).map_err(MsrError::List)?;
    let written = vcpu.set_msrs(&msrs).map_err(MsrError::Set)?;
    match BOOT_MSRS.get(written) {
        None => Ok(()),
        Some(&(name, index, _)) => Err(MsrError::Refused { name, index }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_list_is_complete_and_unique() {
        let entries = boot_msr_entries();
        assert_eq!(entries.len(), BOOT_MSRS.len());
        let mut indices: Vec<u32> = entries.iter().map(|e| e.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), BOOT_MSRS.len());
        let mtrr = entries
            .iter()
            .find(|e| e.index == MSR_MTRR_DEF_TYPE)
            .expect("mtrr");
        assert_eq!(mtrr.data, 0x806);
    }
}
