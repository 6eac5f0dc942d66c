//! Tests under real KVM: tiny probe guests (hand-assembled `mov`/`in`/`out`/`hlt`, which even an
//! instruction-emulating host such as `kvm_pvm` runs) prove memory slots, vCPU configuration for
//! each entry mode, typed exits, bus forwarding, the threaded run loop and kick/stop. Each test
//! says why and returns when /dev/kvm cannot be used.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::kvm::{Kvm, KvmError};
use super::memory::{create_guest_memory, GuestMemoryMmap, MemoryConfig};
use super::vcpu::{Bus, Vcpu, VcpuExit};
use super::vm::Vm;
use crate::arch::x86_64::cpuid::CpuidConfig;
use crate::arch::x86_64::layout::{HIMEM_START, PVH_INFO_START, ZERO_PAGE_START};
use crate::arch::x86_64::regs::BootEntry;
use crate::arch::x86_64::{gdt, paging};

/// The port the probes report on.
const PROBE_PORT: u16 = 0x10;
/// An address below the identity map's 1 GiB that is not RAM in a 16 MiB guest.
const PROBE_MMIO: u64 = 0x2000_0000;
const MEM_SIZE: u64 = 16 << 20;

fn kvm_or_skip(test: &str) -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(KvmError::Open(e)) => {
            println!("skipped {test}: /dev/kvm cannot be opened here ({e})");
            None
        }
        Err(e) => panic!("kvm is present but unusable: {e}"),
    }
}

/// Records every access; reads answer 0xa5 bytes from ports and 0x5a bytes from MMIO.
#[derive(Debug, Default)]
struct RecordingBus {
    log: Mutex<Vec<Access>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    PioRead(u16, usize),
    PioWrite(u16, Vec<u8>),
    MmioRead(u64, usize),
    MmioWrite(u64, Vec<u8>),
}

impl RecordingBus {
    fn log(&self) -> Vec<Access> {
        self.log.lock().expect("bus log").clone()
    }

    fn push(&self, access: Access) {
        self.log.lock().expect("bus log").push(access);
    }
}

impl Bus for RecordingBus {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xa5);
        self.push(Access::PioRead(port, data.len()));
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.push(Access::PioWrite(port, data.to_vec()));
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        data.fill(0x5a);
        self.push(Access::MmioRead(addr, data.len()));
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.push(Access::MmioWrite(addr, data.to_vec()));
    }
}

struct Probe {
    vm: Vm,
    mem: GuestMemoryMmap,
    supported: kvm_bindings::CpuId,
}

/// A VM with 16 MiB of RAM, the boot GDT and identity map, and `code` at 1 MiB.
fn probe_vm(kvm: &Kvm, irqchip: bool, code: &[u8]) -> Probe {
    let mem = create_guest_memory(&MemoryConfig {
        size: MEM_SIZE,
        hugepages: false,
    })
    .expect("guest memory");
    let mut vm = Vm::new(kvm).expect("vm");
    vm.register_memory(&mem).expect("memory slots");
    if irqchip {
        vm.setup_irqchip().expect("irqchip");
    }
    gdt::write_tables(&mem).expect("gdt");
    paging::write_identity_tables(&mem).expect("page tables");
    mem.write_slice(code, GuestAddress(HIMEM_START))
        .expect("code");
    Probe {
        vm,
        mem,
        supported: kvm.supported_cpuid().expect("supported cpuid"),
    }
}

fn cpuid_config(vcpu_count: u8) -> CpuidConfig {
    CpuidConfig {
        vcpu_count,
        emulator_safe: Kvm::runs_kernel_in_emulator(),
        nested: false,
    }
}

fn linux64_entry() -> BootEntry {
    BootEntry::Linux64 {
        entry: HIMEM_START,
        boot_params: ZERO_PAGE_START,
    }
}

/// Runs until a non-bus exit, at most `limit` exits.
fn run_to_stop(vcpu: &mut Vcpu, bus: &RecordingBus, limit: usize) -> (Vec<VcpuExit>, VcpuExit) {
    let mut seen = Vec::new();
    for _ in 0..limit {
        let exit = vcpu.run_once(bus).expect("run");
        if exit.is_bus_access() || exit == VcpuExit::Interrupted {
            seen.push(exit);
        } else {
            return (seen, exit);
        }
    }
    panic!("no stop within {limit} exits: {seen:?}");
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn real_mode_probe_outs_and_halts() {
    let Some(kvm) = kvm_or_skip("real_mode_probe_outs_and_halts") else {
        return;
    };
    // mov dx, 0x10; mov al, 0x42; out dx, al; hlt
    let code = [0xba, 0x10, 0x00, 0xb0, 0x42, 0xee, 0xf4];
    let probe = probe_vm(&kvm, false, &[]);
    probe
        .mem
        .write_slice(&code, GuestAddress(0x1000))
        .expect("code");
    let mut vcpu = Vcpu::new(&probe.vm, 0).expect("vcpu");
    let mut sregs = vcpu.fd().get_sregs().expect("sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.fd().set_sregs(&sregs).expect("set sregs");
    let regs = kvm_bindings::kvm_regs {
        rip: 0x1000,
        rflags: 2,
        ..Default::default()
    };
    vcpu.fd().set_regs(&regs).expect("set regs");
    let bus = RecordingBus::default();
    let (seen, stop) = run_to_stop(&mut vcpu, &bus, 10);
    assert_eq!(
        seen,
        vec![VcpuExit::IoOut {
            port: PROBE_PORT,
            size: 1
        }]
    );
    assert_eq!(stop, VcpuExit::Hlt);
    assert_eq!(bus.log(), vec![Access::PioWrite(PROBE_PORT, vec![0x42])]);
}

#[test]
fn long_mode_probe_reaches_the_bus_with_boot_registers() {
    let Some(kvm) = kvm_or_skip("long_mode_probe_reaches_the_bus_with_boot_registers") else {
        return;
    };
    #[rustfmt::skip]
    let code = [
        0x66, 0xba, 0x10, 0x00,                   // mov dx, 0x10
        0x89, 0xf0,                               // mov eax, esi
        0xef,                                     // out dx, eax
        0xb8, 0xef, 0xbe, 0xad, 0xde,             // mov eax, 0xdeadbeef
        0x89, 0x04, 0x25, 0x00, 0x00, 0x00, 0x20, // mov [0x20000000], eax
        0x8b, 0x04, 0x25, 0x08, 0x00, 0x00, 0x20, // mov eax, [0x20000008]
        0xef,                                     // out dx, eax
        0xec,                                     // in al, dx
        0xee,                                     // out dx, al
        0xf4,                                     // hlt
    ];
    let probe = probe_vm(&kvm, false, &code);
    let mut vcpu = Vcpu::new(&probe.vm, 0).expect("vcpu");
    vcpu.configure(&probe.supported, cpuid_config(1), &linux64_entry())
        .expect("configure");
    let bus = RecordingBus::default();
    let (seen, stop) = run_to_stop(&mut vcpu, &bus, 20);
    assert_eq!(stop, VcpuExit::Hlt, "after {seen:?}");
    assert_eq!(
        bus.log(),
        vec![
            Access::PioWrite(PROBE_PORT, (ZERO_PAGE_START as u32).to_le_bytes().to_vec()),
            Access::MmioWrite(PROBE_MMIO, 0xdead_beefu32.to_le_bytes().to_vec()),
            Access::MmioRead(PROBE_MMIO + 8, 4),
            Access::PioWrite(PROBE_PORT, vec![0x5a; 4]),
            Access::PioRead(PROBE_PORT, 1),
            Access::PioWrite(PROBE_PORT, vec![0xa5]),
        ]
    );
    assert!(seen.contains(&VcpuExit::MmioWrite {
        addr: PROBE_MMIO,
        size: 4
    }));
    let sregs = vcpu.fd().get_sregs().expect("sregs");
    assert_eq!(sregs.cs.selector, 0x10);
    assert_ne!(sregs.efer & (1 << 10), 0, "long mode active");
}

#[test]
fn pvh_probe_starts_in_protected_mode_with_ebx() {
    let Some(kvm) = kvm_or_skip("pvh_probe_starts_in_protected_mode_with_ebx") else {
        return;
    };
    #[rustfmt::skip]
    let code = [
        0xba, 0x10, 0x00, 0x00, 0x00, // mov edx, 0x10
        0x89, 0xd8,                   // mov eax, ebx
        0xef,                         // out dx, eax
        0xf4,                         // hlt
    ];
    let probe = probe_vm(&kvm, false, &code);
    let mut vcpu = Vcpu::new(&probe.vm, 0).expect("vcpu");
    let entry = BootEntry::Pvh {
        entry: HIMEM_START,
        start_info: PVH_INFO_START,
    };
    vcpu.configure(&probe.supported, cpuid_config(1), &entry)
        .expect("configure");
    let bus = RecordingBus::default();
    let (_, stop) = run_to_stop(&mut vcpu, &bus, 10);
    assert_eq!(stop, VcpuExit::Hlt);
    assert_eq!(
        bus.log(),
        vec![Access::PioWrite(
            PROBE_PORT,
            (PVH_INFO_START as u32).to_le_bytes().to_vec()
        )]
    );
}

#[test]
fn threaded_loop_ends_on_hlt_without_irqchip() {
    let Some(kvm) = kvm_or_skip("threaded_loop_ends_on_hlt_without_irqchip") else {
        return;
    };
    // mov dx, 0x10; mov al, 7; out dx, al; hlt
    let code = [0x66, 0xba, 0x10, 0x00, 0xb0, 0x07, 0xee, 0xf4];
    let probe = probe_vm(&kvm, false, &code);
    let vcpu = Vcpu::new(&probe.vm, 0).expect("vcpu");
    vcpu.configure(&probe.supported, cpuid_config(1), &linux64_entry())
        .expect("configure");
    let bus = Arc::new(RecordingBus::default());
    let handle = vcpu.start(bus.clone()).expect("start");
    assert_eq!(handle.join().expect("join"), VcpuExit::Hlt);
    assert_eq!(bus.log(), vec![Access::PioWrite(PROBE_PORT, vec![7])]);
}

#[test]
fn halted_smp_vcpus_stop_when_kicked() {
    let Some(kvm) = kvm_or_skip("halted_smp_vcpus_stop_when_kicked") else {
        return;
    };
    // mov dx, 0x10; mov al, 1; out dx, al; cli; hlt; jmp back to hlt
    let code = [
        0x66, 0xba, 0x10, 0x00, 0xb0, 0x01, 0xee, 0xfa, 0xf4, 0xeb, 0xfd,
    ];
    let probe = probe_vm(&kvm, true, &code);
    let bus = Arc::new(RecordingBus::default());
    let mut handles = Vec::new();
    for index in 0..2 {
        let vcpu = Vcpu::new(&probe.vm, index).expect("vcpu");
        vcpu.configure(&probe.supported, cpuid_config(2), &linux64_entry())
            .expect("configure");
        handles.push(vcpu.start(bus.clone()).expect("start"));
    }
    // The bootstrap vCPU reports, then halts in the kernel (the irqchip keeps HLT there);
    // the other waits for a SIPI that never comes.
    wait_for("the boot vcpu's out", || !bus.log().is_empty());
    std::thread::sleep(Duration::from_millis(20));
    assert!(handles.iter().all(|h| !h.is_finished()));
    for handle in &handles {
        handle.stop();
    }
    for handle in handles {
        assert_eq!(handle.join().expect("join"), VcpuExit::Stopped);
    }
    assert_eq!(bus.log(), vec![Access::PioWrite(PROBE_PORT, vec![1])]);
}

#[test]
fn dropping_a_handle_stops_its_vcpu() {
    let Some(kvm) = kvm_or_skip("dropping_a_handle_stops_its_vcpu") else {
        return;
    };
    // jmp $ (spins in the guest until kicked)
    let probe = probe_vm(&kvm, true, &[0xeb, 0xfe]);
    let vcpu = Vcpu::new(&probe.vm, 0).expect("vcpu");
    vcpu.configure(&probe.supported, cpuid_config(1), &linux64_entry())
        .expect("configure");
    let handle = vcpu
        .start(Arc::new(RecordingBus::default()))
        .expect("start");
    std::thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    drop(handle);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn unmapped_access_triple_faults_into_shutdown() {
    let Some(kvm) = kvm_or_skip("unmapped_access_triple_faults_into_shutdown") else {
        return;
    };
    // mov eax, [0x40000000]: outside the identity map, so #PF; the boot IDT has no gates, so
    // #PF becomes #GP, then #DF, then a triple fault.
    let code = [0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x40, 0xf4];
    let probe = probe_vm(&kvm, false, &code);
    let mut vcpu = Vcpu::new(&probe.vm, 0).expect("vcpu");
    vcpu.configure(&probe.supported, cpuid_config(1), &linux64_entry())
        .expect("configure");
    let bus = RecordingBus::default();
    let (seen, stop) = run_to_stop(&mut vcpu, &bus, 10);
    assert_eq!(stop, VcpuExit::Shutdown, "after {seen:?}");
    assert!(bus.log().is_empty());
}

#[test]
fn unemulated_instruction_is_a_typed_internal_error_on_emulating_hosts() {
    let Some(kvm) = kvm_or_skip("unemulated_instruction_is_a_typed_internal_error") else {
        return;
    };
    // popcnt eax, eax; hlt. Native KVM runs it; KVM's instruction emulator has no popcnt.
    let code = [0xf3, 0x0f, 0xb8, 0xc0, 0xf4];
    let probe = probe_vm(&kvm, false, &code);
    let mut vcpu = Vcpu::new(&probe.vm, 0).expect("vcpu");
    vcpu.configure(&probe.supported, cpuid_config(1), &linux64_entry())
        .expect("configure");
    let bus = RecordingBus::default();
    let (seen, stop) = run_to_stop(&mut vcpu, &bus, 10);
    if Kvm::runs_kernel_in_emulator() {
        assert!(
            matches!(stop, VcpuExit::InternalError { suberror: 1, .. }),
            "after {seen:?}: {stop:?}"
        );
    } else {
        assert_eq!(stop, VcpuExit::Hlt);
    }
}
