//! The KVM handle: opens `/dev/kvm`, checks the API version and every capability the VMM relies
//! on (listed once, in [`REQUIRED_CAPABILITIES`]), and answers questions about the host.

use std::path::Path;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Cap;

/// Errors opening or checking KVM.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` could not be opened (absent, or no permission).
    #[error("failed to open /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    /// KVM_GET_API_VERSION is not the stable 12.
    #[error("kvm api version is {0}, not 12")]
    ApiVersion(i32),
    /// A capability the VMM needs is missing.
    #[error("kvm lacks the {name} capability ({why})")]
    MissingCapability {
        /// The capability's KVM name.
        name: &'static str,
        /// What the VMM needs it for.
        why: &'static str,
    },
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("failed to get kvm's supported cpuid")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
}

/// The stable KVM API version.
pub const KVM_API_VERSION: i32 = 12;

/// Every capability the VMM needs, with its KVM name and what it is for.
pub const REQUIRED_CAPABILITIES: &[(Cap, &str, &str)] = &[
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY", "guest memory"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR", "the tss area"),
    (
        Cap::SetIdentityMapAddr,
        "KVM_CAP_SET_IDENTITY_MAP_ADDR",
        "the identity-map page",
    ),
    (
        Cap::Irqchip,
        "KVM_CAP_IRQCHIP",
        "the in-kernel pic, ioapic and lapic",
    ),
    (Cap::Pit2, "KVM_CAP_PIT2", "the in-kernel pit"),
    (
        Cap::Irqfd,
        "KVM_CAP_IRQFD",
        "device interrupts through eventfds",
    ),
    (
        Cap::Ioeventfd,
        "KVM_CAP_IOEVENTFD",
        "device notifications through eventfds",
    ),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID", "cpuid shaping"),
    (Cap::MpState, "KVM_CAP_MP_STATE", "smp bring-up"),
    (
        Cap::ImmediateExit,
        "KVM_CAP_IMMEDIATE_EXIT",
        "kicking vcpus",
    ),
];

/// An open, checked `/dev/kvm`.
#[derive(Debug)]
pub struct Kvm {
    kvm: kvm_ioctls::Kvm,
}

impl Kvm {
    /// Opens `/dev/kvm` and checks the API version and [`REQUIRED_CAPABILITIES`].
    pub fn new() -> Result<Self, KvmError> {
        let kvm = kvm_ioctls::Kvm::new().map_err(KvmError::Open)?;
        check_api_version(kvm.get_api_version())?;
        check_capabilities(|cap| kvm.check_extension(cap))?;
        Ok(Kvm { kvm })
    }

    /// The raw handle, for ioctls this type does not wrap.
    pub fn fd(&self) -> &kvm_ioctls::Kvm {
        &self.kvm
    }

    /// The CPUID table KVM can virtualize (the input to CPUID shaping).
    pub fn supported_cpuid(&self) -> Result<CpuId, KvmError> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::SupportedCpuid)
    }

    /// Most vCPUs KVM recommends for one VM.
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_nr_vcpus()
    }

    /// Whether KVM can virtualize the TSC-deadline timer mode of the local APIC.
    pub fn has_tsc_deadline_timer(&self) -> bool {
        self.kvm.check_extension(Cap::TscDeadlineTimer)
    }

    /// Which hardware virtualization this KVM can give its guests (nested): `Some("svm")` or
    /// `Some("vmx")` when KVM_GET_SUPPORTED_CPUID offers it (the host's kvm_amd/kvm_intel runs
    /// with `nested=1`), `None` otherwise.
    pub fn nested_virtualization(&self) -> Result<Option<&'static str>, KvmError> {
        use crate::arch::x86_64::cpuid::{LEAF1_ECX_VMX, LEAF_EXT1_ECX_SVM};
        let cpuid = self.supported_cpuid()?;
        let has = |function: u32, bit: u32| {
            cpuid
                .as_slice()
                .iter()
                .any(|e| e.function == function && e.ecx & bit != 0)
        };
        Ok(if has(0x8000_0001, LEAF_EXT1_ECX_SVM) {
            Some("svm")
        } else if has(0x1, LEAF1_ECX_VMX) {
            Some("vmx")
        } else {
            None
        })
    }

    /// Whether this host's KVM runs guest kernel-mode code in its instruction emulator: the
    /// pagetable-based `kvm_pvm` module (a nested host). Such a host cannot run stock Linux
    /// guests; CPUID shaping hides what its emulator lacks.
    pub fn runs_kernel_in_emulator() -> bool {
        Path::new("/sys/module/kvm_pvm").exists()
    }
}

/// Checks a KVM API version.
pub fn check_api_version(version: i32) -> Result<(), KvmError> {
    if version == KVM_API_VERSION {
        Ok(())
    } else {
        Err(KvmError::ApiVersion(version))
    }
}

/// Checks [`REQUIRED_CAPABILITIES`] with `has`, naming the first one missing.
pub fn check_capabilities(has: impl Fn(Cap) -> bool) -> Result<(), KvmError> {
    for (cap, name, why) in REQUIRED_CAPABILITIES {
        if !has(*cap) {
            return Err(KvmError::MissingCapability { name, why });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_must_be_12() {
        assert!(check_api_version(12).is_ok());
        assert!(matches!(
            check_api_version(11),
            Err(KvmError::ApiVersion(11))
        ));
    }

    #[test]
    fn missing_capability_is_named() {
        assert!(check_capabilities(|_| true).is_ok());
        let err = check_capabilities(|cap| cap != Cap::Pit2).expect_err("pit2 missing");
        assert_eq!(
            err.to_string(),
            "kvm lacks the KVM_CAP_PIT2 capability (the in-kernel pit)"
        );
    }

    #[test]
    fn real_kvm_passes_the_checks() {
        if !Path::new("/dev/kvm").exists() {
            println!("skipped: /dev/kvm is absent on this host");
            return;
        }
        let kvm = Kvm::new().expect("kvm checks");
        assert!(kvm.supported_cpuid().expect("cpuid").as_slice().len() > 1);
        assert!(kvm.max_vcpus() >= 1);
    }
}
