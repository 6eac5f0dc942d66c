//! CPUID shaping: what each vCPU is told about itself, built from KVM_GET_SUPPORTED_CPUID with a
//! deliberate, documented mask.
//!
//! Starting point: the table KVM says it can virtualize. Then, per vCPU:
//!
//! | leaf                | change                                                               |
//! |---------------------|----------------------------------------------------------------------|
//! | 0x1 EBX             | initial APIC id = vCPU index; logical count = vCPUs; CLFLUSH 64 bytes |
//! | 0x1 ECX             | hypervisor bit set; SMX, DTES64, MONITOR, DS-CPL, EST, TM2, xTPR, PDCM cleared (no such hardware to manage); VMX cleared unless nested |
//! | 0x1 EDX             | HTT set when there is more than one vCPU                             |
//! | 0x4 (Intel)         | cores per package = vCPUs; L1/L2 private, L3 shared by all vCPUs     |
//! | 0x6                 | zeroed: no thermal or power management                               |
//! | 0xA                 | zeroed: no virtual PMU (keeps Intel guests off perf MSRs)            |
//! | 0xB, 0x1F           | rebuilt: 1 thread per core, vCPUs cores per package, x2APIC id = index |
//! | 0x4000_0000         | "KVMKVMKVM\0\0\0", max hypervisor leaf 0x4000_0001                   |
//! | 0x8000_0001 ECX     | SVM cleared unless nested; PERFCTR_CORE, PERFCTR_NB, PERFCTR_LLC cleared (no PMU) |
//! | 0x8000_0008 (AMD)   | ECX NC = vCPUs - 1                                                   |
//! | 0x8000_000A         | (SVM features) dropped unless nested                                 |
//! | 0x8000_0022         | (AMD PerfMonV2) dropped: no PMU                                      |
//! | 0x8000_001E (AMD)   | extended APIC id = core id = index, one thread per core, node 0     |
//!
//! # Nested virtualization ([`CpuidConfig::nested`])
//!
//! By default a guest is told it has no hardware virtualization: VMX and SVM are hidden, so a
//! guest kernel never loads kvm_intel/kvm_amd by surprise. With `nested`, what KVM can
//! virtualize (VMX with KVM's nested VMX MSRs, or SVM and its leaf 0x8000_000A) is passed
//! through as KVM_GET_SUPPORTED_CPUID reports it: present exactly when the host's
//! kvm_intel/kvm_amd runs with `nested=1`.
//!
//! AMD has no CPUID bit that removes the legacy K7 performance counters (MSRs
//! 0xc001_0000..0xc001_0007), which Linux probes at boot; the VM refuses them with #GP
//! through an MSR filter (see `Vm::refuse_amd_pmu_msrs`), so the guest says "PMU not
//! available due to virtualization" and the host's KVM logs no unhandled WRMSR.
//!
//! # The emulator-safe mask ([`CpuidConfig::emulator_safe`])
//!
//! On a host whose KVM runs guest kernel-mode code in its instruction emulator (the nested
//! `kvm_pvm` host: see `Kvm::runs_kernel_in_emulator`), a guest kernel that takes an alternative
//! path for an instruction the emulator lacks dies on #UD or an internal error. So these
//! features are hidden from it:
//!
//! | feature                        | where              | emulator lacks                       |
//! |--------------------------------|--------------------|--------------------------------------|
//! | CMPXCHG16B                     | 0x1 ECX bit 13     | cmpxchg16b                           |
//! | POPCNT                         | 0x1 ECX bit 23     | popcnt                               |
//! | XSAVE, OSXSAVE                 | 0x1 ECX bits 26-27 | xsave/xrstor (leaf 0xD dropped too)  |
//! | AVX, FMA, F16C                 | 0x1 ECX 28, 12, 29 | need XSAVE-managed state             |
//! | AVX2, AVX-512F                 | 0x7 EBX bits 5, 16 | need XSAVE-managed state             |
//! | BMI2                           | 0x7 EBX bit 8      | bmi2 instructions                    |
//! | SMAP                           | 0x7 EBX bit 20     | clac/stac                            |
//!
//! `int3` and `fwait` are missing from that emulator too, but no CPUID bit turns them off: Linux
//! uses them unconditionally (text poking, the x87 FPU), which is why stock kernels cannot boot
//! there whatever this mask says. Guest *user* code runs natively on such a host, so the mask is
//! off by default and only for hosts that need it.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Errors shaping CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// The shaped table does not fit a KVM CPUID list.
    #[error("failed to build the cpuid list")]
    List(#[source] vmm_sys_util::fam::Error),
    /// No vCPUs, or more than the topology leaves can describe.
    #[error("unsupported vcpu count {0}")]
    VcpuCount(u8),
}

/// How to shape the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidConfig {
    /// How many vCPUs the VM has.
    pub vcpu_count: u8,
    /// Hide what an instruction-emulating host cannot run (see the module docs).
    pub emulator_safe: bool,
    /// Pass hardware virtualization (VMX or SVM) through, as KVM supports it.
    pub nested: bool,
}

/// The CPU vendor, from leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD" (or "HygonGenuine", which follows AMD's topology leaves).
    Amd,
    /// Anything else: only the vendor-neutral fixups apply.
    Other,
}

/// Leaf 0x1 ECX bits.
mod leaf1_ecx {
    pub const DTES64: u32 = 1 << 2;
    pub const MONITOR: u32 = 1 << 3;
    pub const DS_CPL: u32 = 1 << 4;
    pub const VMX: u32 = 1 << 5;
    pub const SMX: u32 = 1 << 6;
    pub const EST: u32 = 1 << 7;
    pub const TM2: u32 = 1 << 8;
    pub const FMA: u32 = 1 << 12;
    pub const CX16: u32 = 1 << 13;
    pub const XTPR: u32 = 1 << 14;
    pub const PDCM: u32 = 1 << 15;
    pub const POPCNT: u32 = 1 << 23;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const AVX: u32 = 1 << 28;
    pub const F16C: u32 = 1 << 29;
    pub const HYPERVISOR: u32 = 1 << 31;
}

/// Leaf 0x8000_0001 ECX bits.
mod leaf_ext1_ecx {
    pub const SVM: u32 = 1 << 2;
    pub const PERFCTR_CORE: u32 = 1 << 23;
    pub const PERFCTR_NB: u32 = 1 << 24;
    pub const PERFCTR_LLC: u32 = 1 << 28;
}

/// Leaf 0x8000_0001 ECX bits cleared on every host: the AMD PMU extensions.
pub const LEAF_EXT1_ECX_PMU: u32 =
    leaf_ext1_ecx::PERFCTR_CORE | leaf_ext1_ecx::PERFCTR_NB | leaf_ext1_ecx::PERFCTR_LLC;

/// Leaf 0x8000_0001 ECX bit of AMD's SVM (cleared unless nested).
pub const LEAF_EXT1_ECX_SVM: u32 = leaf_ext1_ecx::SVM;

/// Leaf 0x1 ECX bit of Intel's VMX (cleared unless nested).
pub const LEAF1_ECX_VMX: u32 = leaf1_ecx::VMX;

/// Leaf 0x7 subleaf 0 EBX bits.
mod leaf7_ebx {
    pub const AVX2: u32 = 1 << 5;
    pub const BMI2: u32 = 1 << 8;
    pub const AVX512F: u32 = 1 << 16;
    pub const SMAP: u32 = 1 << 20;
}

/// Leaf 0x1 ECX bits cleared on every host.
pub const LEAF1_ECX_ALWAYS_CLEARED: u32 = leaf1_ecx::DTES64
    | leaf1_ecx::MONITOR
    | leaf1_ecx::DS_CPL
    | leaf1_ecx::SMX
    | leaf1_ecx::EST
    | leaf1_ecx::TM2
    | leaf1_ecx::XTPR
    | leaf1_ecx::PDCM;

/// Leaf 0x1 ECX bits cleared by the emulator-safe mask.
pub const LEAF1_ECX_EMULATOR_CLEARED: u32 = leaf1_ecx::CX16
    | leaf1_ecx::POPCNT
    | leaf1_ecx::XSAVE
    | leaf1_ecx::OSXSAVE
    | leaf1_ecx::AVX
    | leaf1_ecx::FMA
    | leaf1_ecx::F16C;

/// Leaf 0x7 EBX bits cleared by the emulator-safe mask.
pub const LEAF7_EBX_EMULATOR_CLEARED: u32 =
    leaf7_ebx::AVX2 | leaf7_ebx::BMI2 | leaf7_ebx::AVX512F | leaf7_ebx::SMAP;

/// Leaf 0x1 EDX bit 28: hyper-threading (more than one logical processor per package).
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// Most vCPUs the topology leaves are shaped for (APIC ids fit the MP table's 8 bits).
pub const MAX_VCPUS: u8 = 254;

/// "KVMKVMKVM\0\0\0" as the three registers EBX, ECX, EDX.
pub const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

/// The vendor named by leaf 0 in `entries`.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(leaf0) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut name = [0u8; 12];
    name[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    name[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    name[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    match &name {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Shapes KVM's supported table for the vCPU with index `vcpu_index`.
pub fn shape(supported: &CpuId, vcpu_index: u8, config: CpuidConfig) -> Result<CpuId, CpuidError> {
    let entries = shape_entries(supported.as_slice(), vcpu_index, config)?;
    CpuId::from_entries(&entries).map_err(CpuidError::List)
}

/// [`shape`] on a plain list of entries.
pub fn shape_entries(
    supported: &[kvm_cpuid_entry2],
    vcpu_index: u8,
    config: CpuidConfig,
) -> Result<Vec<kvm_cpuid_entry2>, CpuidError> {
    let n = config.vcpu_count;
    if n == 0 || n > MAX_VCPUS || vcpu_index >= n {
        return Err(CpuidError::VcpuCount(n));
    }
    let vendor = vendor(supported);
    let id = u32::from(vcpu_index);
    let count = u32::from(n);
    let mut out: Vec<kvm_cpuid_entry2> = Vec::with_capacity(supported.len() + 4);
    for entry in supported {
        let mut e = *entry;
        match e.function {
            0x1 => {
                e.ebx = (id << 24) | (count << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx &= !LEAF1_ECX_ALWAYS_CLEARED;
                if !config.nested {
                    e.ecx &= !LEAF1_ECX_VMX;
                }
                e.ecx |= leaf1_ecx::HYPERVISOR;
                if config.emulator_safe {
                    e.ecx &= !LEAF1_ECX_EMULATOR_CLEARED;
                }
                if n > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 if vendor == Vendor::Intel => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                let cores = (count - 1).min(63);
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (cores << 26);
            }
            0x6 | 0xa => {
                (e.eax, e.ebx, e.ecx, e.edx) = (0, 0, 0, 0);
            }
            0x7 if e.index == 0 && config.emulator_safe => {
                e.ebx &= !LEAF7_EBX_EMULATOR_CLEARED;
            }
            0xd if config.emulator_safe => continue,
            // Rebuilt below, once, from the vCPU count.
            0xb | 0x1f | 0x4000_0000 => continue,
            0x8000_0001 => {
                e.ecx &= !LEAF_EXT1_ECX_PMU;
                if !config.nested {
                    e.ecx &= !LEAF_EXT1_ECX_SVM;
                }
            }
            0x8000_000a if !config.nested => continue,
            0x8000_0022 => continue,
            0x8000_0008 if vendor == Vendor::Amd => {
                e.ecx = (e.ecx & !0xf0ff) | ((count - 1) & 0xff);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                e.eax = id;
                e.ebx = (e.ebx & !0xffff) | (id & 0xff);
                e.ecx &= !0xff;
            }
            _ => {}
        }
        out.push(e);
    }
    let has_leaf = |f: u32| supported.iter().any(|e| e.function == f);
    if has_leaf(0xb) {
        out.extend(topology_leaf(0xb, id, count));
    }
    if has_leaf(0x1f) {
        out.extend(topology_leaf(0x1f, id, count));
    }
    let kvm_leaf = supported.iter().find(|e| e.function == 0x4000_0000);
    out.push(kvm_cpuid_entry2 {
        function: 0x4000_0000,
        eax: kvm_leaf.map_or(0x4000_0001, |e| e.eax.max(0x4000_0001)),
        ebx: KVM_SIGNATURE[0],
        ecx: KVM_SIGNATURE[1],
        edx: KVM_SIGNATURE[2],
        ..Default::default()
    });
    Ok(out)
}

/// Leaf 0xB (or 0x1F) for `count` single-threaded cores: subleaf 0 the SMT level, subleaf 1
/// the core level, subleaf 2 the terminating invalid level. EDX is the x2APIC id everywhere.
fn topology_leaf(function: u32, id: u32, count: u32) -> [kvm_cpuid_entry2; 3] {
    let core_shift = u32::BITS - (count - 1).leading_zeros();
    let level = |index: u32, eax: u32, ebx: u32, level_type: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx: (level_type << 8) | index,
        edx: id,
        ..Default::default()
    };
    [
        level(0, 0, 1, 1),
        level(1, core_shift, count, 2),
        level(2, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// A small Intel table in the shape KVM_GET_SUPPORTED_CPUID returns, every feature bit set.
    fn fake_intel() -> Vec<kvm_cpuid_entry2> {
        let intel = *b"GenuineIntel";
        let word =
            |i: usize| u32::from_le_bytes([intel[i], intel[i + 1], intel[i + 2], intel[i + 3]]);
        vec![
            entry(0, 0, [0x1f, word(0), word(8), word(4)]),
            entry(1, 0, [0x906ea, 0x00ff_ffff, 0xffff_ffff, 0xffff_ffff]),
            entry(4, 0, [0x0000_0121, 0, 0, 0]), // L1d
            entry(4, 1, [0x0000_0122, 0, 0, 0]), // L1i
            entry(4, 2, [0x0000_0143, 0, 0, 0]), // L2
            entry(4, 3, [0x0000_0163, 0, 0, 0]), // L3
            entry(6, 0, [0x77, 2, 9, 0]),
            entry(7, 0, [0, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff]),
            entry(0xa, 0, [0x0760_3804, 0, 0, 0x603]),
            entry(0xb, 0, [1, 2, 0x100, 7]),
            entry(0xb, 1, [4, 16, 0x201, 7]),
            entry(0xd, 0, [0x7, 0x340, 0x340, 0]),
            entry(0xd, 1, [0xf, 0, 0, 0]),
            entry(0x4000_0001, 0, [0x0100_7afb, 0, 0, 0]),
            entry(0x8000_0000, 0, [0x8000_0008, 0, 0, 0]),
        ]
    }

    fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("leaf {function:#x}.{index} missing"))
    }

    fn config(vcpu_count: u8, emulator_safe: bool) -> CpuidConfig {
        CpuidConfig {
            vcpu_count,
            emulator_safe,
            nested: false,
        }
    }

    /// A small AMD table with SVM, its feature leaf, the PMU extensions and PerfMonV2.
    fn fake_amd() -> Vec<kvm_cpuid_entry2> {
        let amd = *b"AuthenticAMD";
        let word = |i: usize| u32::from_le_bytes([amd[i], amd[i + 1], amd[i + 2], amd[i + 3]]);
        vec![
            entry(0, 0, [0x10, word(0), word(8), word(4)]),
            entry(1, 0, [0x00a0_0f11, 0, 0xffff_ffff, 0xffff_ffff]),
            entry(0x8000_0000, 0, [0x8000_0022, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, 0xffff_ffff, 0xffff_ffff]),
            entry(0x8000_000a, 0, [1, 0x8000, 0, 0x1_b6ff]),
            entry(0x8000_0022, 0, [1, 0x15, 0, 0]),
        ]
    }

    #[test]
    fn hardware_virtualization_is_hidden_unless_nested() {
        let amd = shape_entries(&fake_amd(), 0, config(1, false)).expect("shape");
        let ext1 = find(&amd, 0x8000_0001, 0);
        assert_eq!(ext1.ecx & LEAF_EXT1_ECX_SVM, 0, "svm hidden");
        assert!(
            amd.iter().all(|e| e.function != 0x8000_000a),
            "svm leaf dropped"
        );
        let intel = shape_entries(&fake_intel(), 0, config(1, false)).expect("shape");
        assert_eq!(find(&intel, 1, 0).ecx & LEAF1_ECX_VMX, 0, "vmx hidden");

        let nested = CpuidConfig {
            nested: true,
            ..config(1, false)
        };
        let amd = shape_entries(&fake_amd(), 0, nested).expect("shape");
        assert_ne!(find(&amd, 0x8000_0001, 0).ecx & LEAF_EXT1_ECX_SVM, 0);
        assert_eq!(
            find(&amd, 0x8000_000a, 0).edx,
            0x1_b6ff,
            "svm features as kvm has them"
        );
        let intel = shape_entries(&fake_intel(), 0, nested).expect("shape");
        assert_ne!(find(&intel, 1, 0).ecx & LEAF1_ECX_VMX, 0);
        // What KVM does not offer is not invented.
        let mut no_svm = fake_amd();
        no_svm.retain(|e| e.function != 0x8000_000a);
        for e in &mut no_svm {
            if e.function == 0x8000_0001 {
                e.ecx &= !LEAF_EXT1_ECX_SVM;
            }
        }
        let out = shape_entries(&no_svm, 0, nested).expect("shape");
        assert_eq!(find(&out, 0x8000_0001, 0).ecx & LEAF_EXT1_ECX_SVM, 0);
    }

    #[test]
    fn the_amd_pmu_extensions_are_hidden() {
        for nested in [false, true] {
            let cfg = CpuidConfig {
                nested,
                ..config(2, false)
            };
            let out = shape_entries(&fake_amd(), 1, cfg).expect("shape");
            assert_eq!(find(&out, 0x8000_0001, 0).ecx & LEAF_EXT1_ECX_PMU, 0);
            assert!(
                out.iter().all(|e| e.function != 0x8000_0022),
                "perfmon v2 dropped"
            );
            assert_ne!(find(&out, 0x8000_0001, 0).ecx & 1, 0, "unrelated bits stay");
        }
    }

    #[test]
    fn vendor_is_read_from_leaf0() {
        assert_eq!(vendor(&fake_intel()), Vendor::Intel);
        assert_eq!(vendor(&[]), Vendor::Other);
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let out = shape_entries(&fake_intel(), 2, config(4, false)).expect("shape");
        let l1 = find(&out, 1, 0);
        assert_eq!(l1.ebx >> 24, 2, "initial apic id");
        assert_eq!((l1.ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!((l1.ebx >> 8) & 0xff, 8, "clflush line in 8-byte units");
        assert_ne!(l1.ecx & leaf1_ecx::HYPERVISOR, 0);
        assert_eq!(l1.ecx & leaf1_ecx::VMX, 0);
        assert_eq!(l1.ecx & LEAF1_ECX_ALWAYS_CLEARED, 0);
        // Without the emulator mask, the ordinary features survive.
        assert_ne!(l1.ecx & leaf1_ecx::POPCNT, 0);
        assert_ne!(l1.ecx & leaf1_ecx::XSAVE, 0);
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        let single = shape_entries(&fake_intel(), 0, config(1, false)).expect("shape");
        assert_eq!(find(&single, 1, 0).edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn emulator_mask_hides_what_the_emulator_lacks() {
        let out = shape_entries(&fake_intel(), 0, config(1, true)).expect("shape");
        let l1 = find(&out, 1, 0);
        for (name, bit) in [
            ("cx16", leaf1_ecx::CX16),
            ("popcnt", leaf1_ecx::POPCNT),
            ("xsave", leaf1_ecx::XSAVE),
            ("osxsave", leaf1_ecx::OSXSAVE),
            ("avx", leaf1_ecx::AVX),
        ] {
            assert_eq!(l1.ecx & bit, 0, "{name} still set");
        }
        let l7 = find(&out, 7, 0);
        assert_eq!(
            l7.ebx & (leaf7_ebx::BMI2 | leaf7_ebx::SMAP | leaf7_ebx::AVX2),
            0
        );
        assert_ne!(l7.ebx & 1, 0, "unrelated leaf 7 bits stay");
        assert!(out.iter().all(|e| e.function != 0xd), "xsave leaf dropped");
    }

    #[test]
    fn power_and_pmu_leaves_are_zeroed() {
        let out = shape_entries(&fake_intel(), 0, config(2, false)).expect("shape");
        for leaf in [6, 0xa] {
            let e = find(&out, leaf, 0);
            assert_eq!((e.eax, e.ebx, e.ecx, e.edx), (0, 0, 0, 0), "leaf {leaf:#x}");
        }
    }

    #[test]
    fn topology_describes_single_thread_cores() {
        let out = shape_entries(&fake_intel(), 5, config(6, false)).expect("shape");
        let smt = find(&out, 0xb, 0);
        let core = find(&out, 0xb, 1);
        let end = find(&out, 0xb, 2);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 5));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 5));
        assert_eq!((end.ebx, (end.ecx >> 8) & 0xff, end.edx), (0, 0, 5));
        assert_eq!(out.iter().filter(|e| e.function == 0xb).count(), 3);
        assert!(
            out.iter().all(|e| e.function != 0x1f),
            "no 0x1f when kvm has none"
        );
        assert_eq!(
            find(
                &shape_entries(&fake_intel(), 0, config(1, false)).expect("shape"),
                0xb,
                1
            )
            .eax,
            0
        );
    }

    #[test]
    fn intel_cache_leaf_shares_only_l3() {
        let out = shape_entries(&fake_intel(), 0, config(4, false)).expect("shape");
        let l1d = find(&out, 4, 0);
        let l3 = find(&out, 4, 3);
        assert_eq!((l1d.eax >> 14) & 0xfff, 0);
        assert_eq!((l3.eax >> 14) & 0xfff, 3);
        assert_eq!(l3.eax >> 26, 3);
        assert_eq!(l3.eax & 0x3fff, 0x163, "cache type and level kept");
    }

    #[test]
    fn kvm_signature_leaf_is_present_once() {
        let out = shape_entries(&fake_intel(), 0, config(1, false)).expect("shape");
        let sig = find(&out, 0x4000_0000, 0);
        let mut bytes = Vec::new();
        for r in [sig.ebx, sig.ecx, sig.edx] {
            bytes.extend(r.to_le_bytes());
        }
        assert_eq!(&bytes, b"KVMKVMKVM\0\0\0");
        assert_eq!(sig.eax, 0x4000_0001);
        assert_eq!(out.iter().filter(|e| e.function == 0x4000_0000).count(), 1);
        assert_eq!(
            find(&out, 0x4000_0001, 0).eax,
            0x0100_7afb,
            "kvm features kept"
        );
    }

    #[test]
    fn amd_topology_leaves_are_fixed_up() {
        let amd = *b"AuthenticAMD";
        let word = |i: usize| u32::from_le_bytes([amd[i], amd[i + 1], amd[i + 2], amd[i + 3]]);
        let table = vec![
            entry(0, 0, [0x10, word(0), word(8), word(4)]),
            entry(0x8000_0008, 0, [0x3030, 0, 0x700f, 0]),
            entry(0x8000_001e, 0, [9, 0x0109, 0x0103, 0]),
        ];
        let out = shape_entries(&table, 3, config(4, false)).expect("shape");
        assert_eq!(find(&out, 0x8000_0008, 0).ecx, 0x0003);
        let ext = find(&out, 0x8000_001e, 0);
        assert_eq!((ext.eax, ext.ebx & 0xffff, ext.ecx & 0xff), (3, 3, 0));
    }

    #[test]
    fn bad_vcpu_counts_are_refused() {
        assert!(matches!(
            shape_entries(&fake_intel(), 0, config(0, false)),
            Err(CpuidError::VcpuCount(0))
        ));
        assert!(shape_entries(&fake_intel(), 4, config(4, false)).is_err());
        assert!(shape_entries(&fake_intel(), 0, config(255, false)).is_err());
    }
}
