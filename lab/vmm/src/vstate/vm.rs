//! The VM: its KVM file descriptor, guest memory slots, the in-kernel interrupt controllers
//! (PIC, IOAPIC, local APICs) and PIT, and interrupt eventfds.
//!
//! Order matters to KVM: [`Vm::new`] places the TSS and identity-map pages (x86 needs them
//! before any vCPU exists), then [`Vm::register_memory`], then [`Vm::setup_irqchip`] (also
//! before vCPUs), then the vCPUs.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::kvm::Kvm;
use super::memory::GuestMemoryMmap;
use crate::arch::x86_64::layout::{KVM_IDENTITY_MAP_START, KVM_TSS_START};

/// Errors setting up the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM VM ioctl failed; the name says which.
    #[error("failed to {0}")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
    /// More memory regions than KVM slots.
    #[error("too many guest memory regions ({0})")]
    TooManyRegions(usize),
}

/// AMD's legacy K7 performance counters: (first MSR, count) — PERFEVTSEL0..3, PERFCTR0..3.
pub const AMD_K7_PMU_MSRS: (u32, u32) = (0xc001_0000, 8);
/// AMD's family 15h core performance counters: (first MSR, count) — six select/counter pairs.
pub const AMD_F15H_PMU_MSRS: (u32, u32) = (0xc001_0200, 12);

/// A KVM VM.
#[derive(Debug)]
pub struct Vm {
    fd: VmFd,
    /// The memory registered with KVM, kept alive as long as KVM may access it.
    memory: Vec<GuestMemoryMmap>,
    next_slot: u32,
    irqchip: bool,
}

impl Vm {
    /// Creates the VM and places KVM's TSS and identity-map pages in the MMIO gap.
    pub fn new(kvm: &Kvm) -> Result<Self, VmError> {
        let fd = kvm
            .fd()
            .create_vm()
            .map_err(|e| VmError::Ioctl("create vm", e))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_START)
            .map_err(|e| VmError::Ioctl("set identity map address", e))?;
        fd.set_tss_address(KVM_TSS_START as usize)
            .map_err(|e| VmError::Ioctl("set tss address", e))?;
        Ok(Vm {
            fd,
            memory: Vec::new(),
            next_slot: 0,
            irqchip: false,
        })
    }

    /// Registers every region of `memory` as a KVM memory slot. The VM keeps a handle on the
    /// mappings so that they outlive it.
    pub fn register_memory(&mut self, memory: &GuestMemoryMmap) -> Result<(), VmError> {
        for region in memory.iter() {
            if self.next_slot >= u32::from(u16::MAX) {
                return Err(VmError::TooManyRegions(memory.num_regions()));
            }
            let slot = kvm_userspace_memory_region {
                slot: self.next_slot,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the slot describes a live, writable mapping of exactly `memory_size`
            // bytes owned by `region`; a clone of `memory` (sharing the same `Arc`ed mappings)
            // is stored in `self.memory` below, so the mapping outlives the VM fd that KVM
            // accesses it through. Slot numbers are fresh, so no existing slot is replaced.
            unsafe { self.fd.set_user_memory_region(slot) }
                .map_err(|e| VmError::Ioctl("set user memory region", e))?;
            self.next_slot += 1;
        }
        self.memory.push(memory.clone());
        Ok(())
    }

    /// Creates the in-kernel PIC/IOAPIC/LAPIC (KVM_CREATE_IRQCHIP) and the PIT
    /// (KVM_CREATE_PIT2, speaker port a dummy). Call before creating vCPUs.
    pub fn setup_irqchip(&mut self) -> Result<(), VmError> {
        self.fd
            .create_irq_chip()
            .map_err(|e| VmError::Ioctl("create irqchip", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(|e| VmError::Ioctl("create pit2", e))?;
        self.irqchip = true;
        Ok(())
    }

    /// Whether [`Vm::setup_irqchip`] ran.
    pub fn has_irqchip(&self) -> bool {
        self.irqchip
    }

    /// Makes a write to `event` raise interrupt line `gsi` (IOAPIC pin, or PIC line below 16).
    pub fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(event, gsi)
            .map_err(|e| VmError::Ioctl("register irqfd", e))
    }

    /// Makes the guest's accesses to AMD's performance-counter MSRs fail with #GP, the way
    /// hardware without them behaves: the legacy K7 counters (0xc001_0000..=0xc001_0007) and
    /// the family 15h core counters (0xc001_0200..=0xc001_020b). AMD has no CPUID bit to hide
    /// the former, and Linux probes them at boot; refused, it runs without a PMU ("PMU not
    /// available due to virtualization") instead of making the host's KVM log unhandled MSR
    /// writes. The accesses exit to the VMM ([`crate::vstate::VcpuExit::MsrRefused`]).
    ///
    /// Returns false, changing nothing, where KVM lacks user-space MSR exits or MSR filters
    /// (before Linux 5.10): the guest then probes the counters as before.
    pub fn refuse_amd_pmu_msrs(&self, kvm: &Kvm) -> Result<bool, VmError> {
        use kvm_bindings::{
            kvm_enable_cap, KVM_CAP_X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_FILTER,
        };
        use kvm_ioctls::{Cap, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags};
        if !kvm.fd().check_extension(Cap::X86UserSpaceMsr)
            || !kvm.fd().check_extension(Cap::X86MsrFilter)
        {
            return Ok(false);
        }
        let cap = kvm_enable_cap {
            cap: KVM_CAP_X86_USER_SPACE_MSR,
            args: [u64::from(KVM_MSR_EXIT_REASON_FILTER), 0, 0, 0],
            ..Default::default()
        };
        self.fd
            .enable_cap(&cap)
            .map_err(|e| VmError::Ioctl("enable user-space msr exits", e))?;
        // Every bit 0: each MSR of a range denied for reads and writes.
        let denied = [0u8; 2];
        let range = |base, msr_count| MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base,
            msr_count,
            bitmap: &denied,
        };
        self.fd
            .set_msr_filter(
                MsrFilterDefaultAction::ALLOW,
                &[
                    range(AMD_K7_PMU_MSRS.0, AMD_K7_PMU_MSRS.1),
                    range(AMD_F15H_PMU_MSRS.0, AMD_F15H_PMU_MSRS.1),
                ],
            )
            .map_err(|e| VmError::Ioctl("set the msr filter", e))?;
        Ok(true)
    }

    /// The raw VM fd, for ioctls this type does not wrap (ioeventfds, for one).
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}
