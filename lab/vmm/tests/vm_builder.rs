//! The whole VMM under real KVM, through `builder::run` exactly as `lab __vmm` calls it: probe
//! "kernels" (tiny ELF files of hand-assembled `mov`/`in`/`out`/`hlt`, which even an
//! instruction-emulating host such as `kvm_pvm` runs) are loaded from disk by the real boot
//! path, talk to the real devices, and end the VM each in its own way. One run happens in a
//! child process with the seccomp filter on, since the filter cannot be taken off again.
//!
//! Each test says why and returns where /dev/kvm cannot be opened (and fails under
//! `LAB_E2E=1`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use lab_vmm::builder::{run, BuildError, ExitReason, VmConfig, VsockConfig};
use lab_vmm::vstate::{Kvm, KvmError};

const ENTRY: u64 = 0x10_0000;
const CHILD_ENV: &str = "LAB_VMM_BUILDER_CHILD";

fn kvm_or_skip(test: &str) -> bool {
    match Kvm::new() {
        Ok(_) => true,
        Err(KvmError::Open(e)) => {
            assert!(
                std::env::var("LAB_E2E").as_deref() != Ok("1"),
                "LAB_E2E=1 but /dev/kvm cannot be opened: {e}"
            );
            eprintln!("SKIPPED {test}: /dev/kvm cannot be opened here ({e})");
            false
        }
        Err(e) => panic!("/dev/kvm opens but is unusable: {e}"),
    }
}

/// A minimal ELF64 executable: one PT_LOAD of `code` at [`ENTRY`], entered there, and with
/// `pvh` a Xen PVH note naming the same entry (32-bit protected mode, paging off) instead of
/// the 64-bit boot protocol (long mode, the first GiB identity-mapped).
fn elf(code: &[u8], pvh: bool) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let mut note = Vec::new();
    if pvh {
        note.extend(4u32.to_le_bytes()); // n_namesz: "Xen\0"
        note.extend(4u32.to_le_bytes()); // n_descsz: a 32-bit entry
        note.extend(18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
        note.extend(b"Xen\0");
        note.extend((ENTRY as u32).to_le_bytes());
    }
    let phnum = if pvh { 2 } else { 1 };
    let note_at = EHDR + PHDR * phnum;
    let code_at = note_at + note.len();
    let mut out = Vec::new();
    out.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    out.extend(2u16.to_le_bytes()); // ET_EXEC
    out.extend(0x3eu16.to_le_bytes()); // EM_X86_64
    out.extend(1u32.to_le_bytes());
    out.extend(ENTRY.to_le_bytes());
    out.extend((EHDR as u64).to_le_bytes()); // e_phoff
    out.extend(0u64.to_le_bytes()); // e_shoff
    out.extend(0u32.to_le_bytes()); // e_flags
    out.extend((EHDR as u16).to_le_bytes());
    out.extend((PHDR as u16).to_le_bytes());
    out.extend((phnum as u16).to_le_bytes());
    out.extend([0u8; 6]); // no sections
    let phdr = |out: &mut Vec<u8>, kind: u32, flags: u32, at: usize, len: usize, addr: u64| {
        out.extend(kind.to_le_bytes());
        out.extend(flags.to_le_bytes());
        out.extend((at as u64).to_le_bytes());
        out.extend(addr.to_le_bytes()); // p_vaddr
        out.extend(addr.to_le_bytes()); // p_paddr
        out.extend((len as u64).to_le_bytes()); // p_filesz
        out.extend((len as u64).to_le_bytes()); // p_memsz
        out.extend(4u64.to_le_bytes()); // p_align
    };
    phdr(&mut out, 1, 5, code_at, code.len(), ENTRY); // PT_LOAD, R+X
    if pvh {
        phdr(&mut out, 4, 4, note_at, note.len(), 0); // PT_NOTE
    }
    assert_eq!(out.len(), note_at);
    out.extend(note);
    out.extend(code);
    out
}

/// A console the test can read.
#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("console").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Console {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("console")).into_owned()
    }
}

struct Probe {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    console: Console,
}

impl Probe {
    fn new(code: &[u8], pvh: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("probe.elf");
        std::fs::write(&kernel, elf(code, pvh)).expect("write the probe");
        Self {
            dir,
            kernel,
            console: Console::default(),
        }
    }

    fn config(&self) -> VmConfig {
        VmConfig {
            kernel: self.kernel.clone(),
            initrd: None,
            cmdline: "console=ttyS0 reboot=k".into(),
            memory_mib: 64,
            vcpus: 1,
            vsock: None,
            console: Box::new(self.console.clone()),
            diagnostics: Box::new(std::io::stderr()),
            seccomp: false,
            nested: false,
        }
    }

    fn uds(&self) -> PathBuf {
        self.dir.path().join("vsock.sock")
    }
}

/// `out` of each byte of `text` to COM1, in long mode.
fn say(text: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for &b in text {
        code.extend([0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    code
}

/// Pulses the i8042's reset line, then halts for good.
const RESET: [u8; 7] = [
    0xb0, 0xfe, // mov al, 0xfe
    0xe6, 0x64, // out 0x64, al
    0xf4, // hlt
    0xeb, 0xfd, // jmp back to hlt
];

#[test]
fn a_probe_says_hello_on_com1_and_resets_through_the_i8042() {
    if !kvm_or_skip("a_probe_says_hello_on_com1_and_resets_through_the_i8042") {
        return;
    }
    let mut code = say(b"hello\n");
    code.extend(RESET);
    let probe = Probe::new(&code, false);
    let reason = run(probe.config()).expect("the vm runs");
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(probe.console.text(), "hello\n");
}

#[test]
fn smp_vms_stop_every_vcpu_at_the_end() {
    if !kvm_or_skip("smp_vms_stop_every_vcpu_at_the_end") {
        return;
    }
    let mut code = say(b"bsp\n");
    code.extend(RESET);
    let probe = Probe::new(&code, false);
    // The other vCPUs wait for a SIPI that never comes, inside KVM: they must be kicked out.
    let reason = run(VmConfig {
        vcpus: 4,
        ..probe.config()
    })
    .expect("the vm runs");
    assert_eq!(reason, ExitReason::Reset);
    assert_eq!(probe.console.text(), "bsp\n");
}

#[test]
fn entering_acpi_s5_is_a_shutdown() {
    if !kvm_or_skip("entering_acpi_s5_is_a_shutdown") {
        return;
    }
    // What Linux's acpi_power_off does on this machine: SLP_TYP 5 | SLP_EN to the FADT's
    // sleep control register, then it waits (here: halts).
    #[rustfmt::skip]
    let code = [
        0x66, 0xba, 0x01, 0x06, // mov dx, 0x601 (sleep status)
        0xb0, 0x80, 0xee,       // clear WAK_STS
        0x66, 0xba, 0x00, 0x06, // mov dx, 0x600 (sleep control)
        0xb0, 0x34, 0xee,       // SLP_TYP 5 | SLP_EN
        0xf4, 0xeb, 0xfd,       // hlt forever
    ];
    let probe = Probe::new(&code, false);
    assert_eq!(run(probe.config()).expect("runs"), ExitReason::Shutdown);
}

#[test]
fn a_triple_fault_is_reported_as_such() {
    if !kvm_or_skip("a_triple_fault_is_reported_as_such") {
        return;
    }
    let mut code = say(b"x");
    // mov eax, [0x40000000]: past the identity map, so #PF; the boot IDT has no gates, so
    // #PF becomes #GP, then #DF, then a triple fault.
    code.extend([0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x40, 0xf4]);
    let probe = Probe::new(&code, false);
    assert_eq!(run(probe.config()).expect("runs"), ExitReason::TripleFault);
    assert_eq!(probe.console.text(), "x");
}

#[test]
fn an_unemulated_instruction_is_a_kvm_internal_error_on_emulating_hosts() {
    if !kvm_or_skip("an_unemulated_instruction_is_a_kvm_internal_error_on_emulating_hosts") {
        return;
    }
    // popcnt eax, eax: native KVM runs it (and the probe resets); KVM's emulator has none.
    let mut code = vec![0xf3, 0x0f, 0xb8, 0xc0];
    code.extend(RESET);
    let probe = Probe::new(&code, false);
    let reason = run(probe.config()).expect("runs");
    if Kvm::runs_kernel_in_emulator() {
        assert_eq!(reason, ExitReason::InternalError { suberror: 1 });
        assert!(reason.to_string().contains("KVM internal error"));
    } else {
        assert_eq!(reason, ExitReason::Reset);
    }
}

/// A PVH probe (32-bit, paging off, so the MMIO gap is in reach) that prints the vsock
/// device's virtio-mmio magic, then the kernel command line from guest memory, then resets.
fn magic_and_cmdline_probe() -> Vec<u8> {
    #[rustfmt::skip]
    let code = vec![
        0xba, 0xf8, 0x03, 0x00, 0x00,   // mov edx, 0x3f8
        0xa1, 0x00, 0x00, 0x00, 0xc0,   // mov eax, [0xc0000000] (MagicValue)
        0xee, 0xc1, 0xe8, 0x08,         // out dx, al; shr eax, 8
        0xee, 0xc1, 0xe8, 0x08,
        0xee, 0xc1, 0xe8, 0x08,
        0xee,
        0xb0, b'\n', 0xee,              // a newline
        0xbe, 0x00, 0x00, 0x02, 0x00,   // mov esi, 0x20000 (the command line)
        // next:
        0x8a, 0x06,                     // mov al, [esi]
        0x84, 0xc0,                     // test al, al
        0x74, 0x04,                     // jz done
        0xee,                           // out dx, al
        0x46,                           // inc esi
        0xeb, 0xf6,                     // jmp next
        // done:
        0xb0, 0xfe, 0xe6, 0x64,         // reset through the i8042
        0xf4, 0xeb, 0xfd,
    ];
    code
}

fn assert_vsock_probe_output(console: &str) {
    let (magic, cmdline) = console.split_once('\n').expect("two parts");
    assert_eq!(magic, "virt", "the virtio-mmio window is at 0xc0000000");
    assert_eq!(
        cmdline,
        "console=ttyS0 reboot=k virtio_mmio.device=4K@0xc0000000:5"
    );
}

#[test]
fn the_vsock_device_sits_where_the_command_line_says() {
    if !kvm_or_skip("the_vsock_device_sits_where_the_command_line_says") {
        return;
    }
    let probe = Probe::new(&magic_and_cmdline_probe(), true);
    let config = VmConfig {
        vsock: Some(VsockConfig {
            cid: 3,
            uds: probe.uds(),
        }),
        ..probe.config()
    };
    assert_eq!(run(config).expect("runs"), ExitReason::Reset);
    assert_vsock_probe_output(&probe.console.text());
    assert!(
        !probe.uds().exists(),
        "the host socket is removed at the end"
    );
}

#[test]
fn a_missing_kernel_fails_before_the_guest_runs() {
    if !kvm_or_skip("a_missing_kernel_fails_before_the_guest_runs") {
        return;
    }
    let probe = Probe::new(&RESET, false);
    let config = VmConfig {
        kernel: Path::new("/nonexistent/vmlinux").into(),
        ..probe.config()
    };
    let err = run(config).expect_err("no kernel");
    assert!(matches!(err, BuildError::Boot(_)), "{err}");
}

/// Runs the vsock probe with the seccomp filter on: in a child process (this test binary
/// again, running only this test), since the filter stays on every thread for good.
#[test]
fn a_whole_vm_runs_under_the_seccomp_filter() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        // The parent's probe: the child must not touch the file system once the filter is on.
        let dir = PathBuf::from(dir);
        let console = Console::default();
        let config = VmConfig {
            kernel: dir.join("probe.elf"),
            initrd: None,
            cmdline: "console=ttyS0 reboot=k".into(),
            memory_mib: 64,
            vcpus: 2,
            vsock: Some(VsockConfig {
                cid: 3,
                uds: dir.join("vsock.sock"),
            }),
            console: Box::new(console.clone()),
            diagnostics: Box::new(std::io::stderr()),
            seccomp: true,
            nested: false,
        };
        let reason = run(config).expect("runs");
        println!("reason: {reason:?}");
        println!("console: {}", console.text().replace('\n', "|"));
        return;
    }
    if !kvm_or_skip("a_whole_vm_runs_under_the_seccomp_filter") {
        return;
    }
    let probe = Probe::new(&magic_and_cmdline_probe(), true);
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_whole_vm_runs_under_the_seccomp_filter",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, probe.dir.path())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("reason: Reset"), "{stdout}");
    assert!(
        !probe.uds().exists(),
        "the host socket is removed at the end, under the filter"
    );
    let console = stdout
        .lines()
        .find_map(|l| l.strip_prefix("console: "))
        .expect("console line");
    assert_vsock_probe_output(&console.replacen('|', "\n", 1));
}
