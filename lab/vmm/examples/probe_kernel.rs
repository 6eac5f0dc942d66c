//! Writes a probe-guest "kernel" for `scripts/bench-vmm`: a tiny ELF64 file with a Xen PVH
//! entry note (so both the lab VMM and QEMU's microvm load it through the PVH entry: 32-bit
//! protected mode, paging off), whose code
//!
//! 1. writes one byte (`!`) to COM1 (port 0x3f8) at once,
//! 2. counts `spin` down to zero in a register loop (`dec ecx; jnz`), so the VMM stays up a
//!    moment with the guest running (for its thread count and peak RSS),
//! 3. pulses the i8042's reset line (`out 0x64, 0xfe`): the lab VMM's `ExitReason::Reset`,
//! 4. writes the reset value to QEMU microvm's ACPI GED reset register (microvm has no
//!    i8042; with `-no-reboot` the reset ends QEMU), then halts for good.
//!
//! Both resets are asynchronous in their VMM, so the vCPU runs on a few instructions: in the
//! lab VMM the GED write is an MMIO access no device claims (ignored) and the `hlt` stays in
//! KVM until the VMM stops the vCPU; in QEMU the port write goes nowhere. Every instruction is
//! a plain `mov`/`out`/`dec`/`jnz`/`hlt`, which even KVM's instruction emulator (`kvm_pvm`
//! hosts) runs.
//!
//! `cargo run --release -p lab-vmm --example probe_kernel -- OUT [SPIN]` (SPIN defaults to 0).

use std::process::ExitCode;

/// Where the code is loaded and entered (1 MiB, as for a kernel).
const ENTRY: u32 = 0x10_0000;

/// QEMU microvm's ACPI GED reset register (`GED_MMIO_BASE_REGS + ACPI_GED_REG_RESET`) and
/// the value that resets.
const GED_RESET: u32 = 0xfea0_0202;
const GED_RESET_VALUE: u8 = 0x42;

/// The guest's code, to be loaded at [`ENTRY`].
fn code(spin: u32) -> Vec<u8> {
    let mut code = vec![
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'!', // mov al, '!'
        0xee, // out dx, al
    ];
    if spin > 0 {
        code.push(0xb9); // mov ecx, spin
        code.extend(spin.to_le_bytes());
        code.extend([
            0xff, 0xc9, // dec ecx
            0x75, 0xfc, // jnz back to the dec
        ]);
    }
    code.extend([
        0xb0, 0xfe, // mov al, 0xfe
        0xe6, 0x64, // out 0x64, al: the i8042 pulses the reset line
    ]);
    // QEMU's microvm has no i8042: it resets through the ACPI GED's reset register instead
    // (what its FADT names: 0x42 to MMIO 0xfea00202). The lab VMM has nothing there.
    code.extend([0xc6, 0x05]); // mov byte [disp32], imm8
    code.extend(GED_RESET.to_le_bytes());
    code.push(GED_RESET_VALUE);
    code.extend([
        0xf4, // hlt
        0xeb, 0xfd, // jmp back to the hlt
    ]);
    code
}

/// A minimal ELF64 executable: one PT_LOAD of `code` at [`ENTRY`] and a PT_NOTE with the Xen
/// PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`) naming the same address.
fn elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let mut note = Vec::new();
    note.extend(4u32.to_le_bytes()); // n_namesz: "Xen\0"
    note.extend(4u32.to_le_bytes()); // n_descsz: a 32-bit entry
    note.extend(18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend(b"Xen\0");
    note.extend(ENTRY.to_le_bytes());
    let note_at = EHDR + PHDR * 2;
    let code_at = note_at + note.len();
    let mut out = Vec::new();
    out.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    out.extend(2u16.to_le_bytes()); // ET_EXEC
    out.extend(0x3eu16.to_le_bytes()); // EM_X86_64
    out.extend(1u32.to_le_bytes()); // EV_CURRENT
    out.extend(u64::from(ENTRY).to_le_bytes()); // e_entry
    out.extend((EHDR as u64).to_le_bytes()); // e_phoff
    out.extend(0u64.to_le_bytes()); // e_shoff
    out.extend(0u32.to_le_bytes()); // e_flags
    out.extend((EHDR as u16).to_le_bytes());
    out.extend((PHDR as u16).to_le_bytes());
    out.extend(2u16.to_le_bytes()); // e_phnum
    out.extend([0u8; 6]); // no sections
    let phdr = |out: &mut Vec<u8>, kind: u32, flags: u32, at: usize, len: usize, addr: u64| {
        out.extend(kind.to_le_bytes());
        out.extend(flags.to_le_bytes());
        out.extend((at as u64).to_le_bytes()); // p_offset
        out.extend(addr.to_le_bytes()); // p_vaddr
        out.extend(addr.to_le_bytes()); // p_paddr
        out.extend((len as u64).to_le_bytes()); // p_filesz
        out.extend((len as u64).to_le_bytes()); // p_memsz
        out.extend(4u64.to_le_bytes()); // p_align
    };
    phdr(&mut out, 1, 7, code_at, code.len(), u64::from(ENTRY)); // PT_LOAD, RWX
    phdr(&mut out, 4, 4, note_at, note.len(), 0); // PT_NOTE
    out.extend(note);
    out.extend(code);
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, spin) = match args.as_slice() {
        [out] => (out, Ok(0)),
        [out, spin] => (out, spin.parse::<u32>()),
        _ => {
            eprintln!("usage: probe_kernel OUT [SPIN]");
            return ExitCode::from(2);
        }
    };
    let Ok(spin) = spin else {
        eprintln!("probe_kernel: SPIN must be a number of loop iterations (0 to 2^32-1)");
        return ExitCode::from(2);
    };
    if let Err(e) = std::fs::write(out, elf(&code(spin))) {
        eprintln!("probe_kernel: failed to write {out}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
