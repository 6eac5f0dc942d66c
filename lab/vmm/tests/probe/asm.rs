//! A tiny x86 assembler for 32-bit protected-mode probe guests (the PVH entry: flat segments,
//! paging off, so every guest-physical address below 4 GiB is reachable as it is).
//!
//! It knows only the instructions an instruction-emulating host (`kvm_pvm`) is sure to run:
//! `mov` (register, immediate, memory, 16-bit stores, zero-extending loads), `add`/`and`/`or`/
//! `cmp` with an immediate, `jmp`/`jcc` to labels, `in`, `out`, `hlt`. Memory operands are an
//! absolute address or a register plus a displacement; every form is encoded with a 32-bit
//! displacement so that no operand needs a SIB byte. Jumps always take a 32-bit offset, fixed
//! up by [`Asm::finish`] once every label is bound.

/// A general register. ESP and EBP are left out: the probes have no stack, and leaving them
/// out keeps every memory operand a plain ModRM byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Eax = 0,
    Ecx = 1,
    Edx = 2,
    Ebx = 3,
    Esi = 6,
    Edi = 7,
}

/// A memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mem {
    /// `[addr]`.
    Abs(u32),
    /// `[reg + disp]`.
    At(Reg, i32),
}

/// A jump condition, after a `cmp a, b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// a == b.
    Eq = 0x4,
    /// a != b.
    Ne = 0x5,
    /// a < b, unsigned.
    Below = 0x2,
    /// a >= b, unsigned.
    AboveEq = 0x3,
}

/// A place in the code that jumps can name before it is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// The code being assembled, to be loaded at `origin`.
#[derive(Debug)]
pub struct Asm {
    origin: u32,
    code: Vec<u8>,
    /// Where each label was bound (an offset in `code`).
    labels: Vec<Option<usize>>,
    /// 32-bit relative offsets still to fill in: (offset of the field, target).
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// An empty program that will run at guest-physical `origin`.
    pub fn new(origin: u32) -> Self {
        Self {
            origin,
            code: Vec::new(),
            labels: Vec::new(),
            fixups: Vec::new(),
        }
    }

    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `label` to the next instruction.
    pub fn bind(&mut self, label: Label) {
        let slot = &mut self.labels[label.0];
        assert!(slot.is_none(), "label {} bound twice", label.0);
        *slot = Some(self.code.len());
    }

    /// The machine code, jumps fixed up. Panics on a label that was never bound.
    pub fn finish(mut self) -> Vec<u8> {
        for &(at, label) in &self.fixups {
            let target =
                self.labels[label.0].unwrap_or_else(|| panic!("label {} unbound", label.0));
            // rel32 counts from the end of the 4-byte field, which ends the instruction.
            let rel = target as i64 - (at as i64 + 4);
            let rel = i32::try_from(rel).expect("jump within 2 GiB");
            self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        }
        self.code
    }

    /// The guest-physical address of the next instruction.
    pub fn here(&self) -> u32 {
        self.origin + u32::try_from(self.code.len()).expect("code under 4 GiB")
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.code.extend_from_slice(bytes);
    }

    fn imm32(&mut self, value: u32) {
        self.bytes(&value.to_le_bytes());
    }

    /// A ModRM byte (and displacement) for register/opcode-extension `reg` and operand `mem`.
    fn modrm_mem(&mut self, reg: u8, mem: Mem) {
        match mem {
            // mod 00, r/m 101: a bare 32-bit displacement.
            Mem::Abs(addr) => {
                self.bytes(&[(reg << 3) | 0b101]);
                self.imm32(addr);
            }
            // mod 10: base register plus a 32-bit displacement.
            Mem::At(base, disp) => {
                self.bytes(&[0b1000_0000 | (reg << 3) | base as u8]);
                self.bytes(&disp.to_le_bytes());
            }
        }
    }

    /// ModRM for two registers: `reg` in the reg field, `rm` in r/m.
    fn modrm_regs(&mut self, reg: u8, rm: Reg) {
        self.bytes(&[0b1100_0000 | (reg << 3) | rm as u8]);
    }

    /// `mov dst, imm32`.
    pub fn mov_imm(&mut self, dst: Reg, value: u32) {
        self.bytes(&[0xb8 + dst as u8]);
        self.imm32(value);
    }

    /// `mov dst, src`.
    pub fn mov(&mut self, dst: Reg, src: Reg) {
        self.bytes(&[0x89]);
        self.modrm_regs(src as u8, dst);
    }

    /// `mov dst, dword [mem]`.
    pub fn load(&mut self, dst: Reg, mem: Mem) {
        self.bytes(&[0x8b]);
        self.modrm_mem(dst as u8, mem);
    }

    /// `movzx dst, word [mem]`.
    pub fn load16(&mut self, dst: Reg, mem: Mem) {
        self.bytes(&[0x0f, 0xb7]);
        self.modrm_mem(dst as u8, mem);
    }

    /// `movzx dst, byte [mem]`.
    pub fn load8(&mut self, dst: Reg, mem: Mem) {
        self.bytes(&[0x0f, 0xb6]);
        self.modrm_mem(dst as u8, mem);
    }

    /// `mov dword [mem], src`.
    pub fn store(&mut self, mem: Mem, src: Reg) {
        self.bytes(&[0x89]);
        self.modrm_mem(src as u8, mem);
    }

    /// `mov word [mem], src` (its low 16 bits).
    pub fn store16(&mut self, mem: Mem, src: Reg) {
        self.bytes(&[0x66, 0x89]);
        self.modrm_mem(src as u8, mem);
    }

    /// `mov dword [mem], imm32`.
    pub fn store_imm(&mut self, mem: Mem, value: u32) {
        self.bytes(&[0xc7]);
        self.modrm_mem(0, mem);
        self.imm32(value);
    }

    /// The `81 /ext imm32` group: add, or, and, cmp.
    fn alu_imm(&mut self, ext: u8, dst: Reg, value: u32) {
        self.bytes(&[0x81]);
        self.modrm_regs(ext, dst);
        self.imm32(value);
    }

    /// `add dst, imm32` (wrapping: a negative step is `0u32.wrapping_sub(n)`).
    pub fn add_imm(&mut self, dst: Reg, value: u32) {
        self.alu_imm(0, dst, value);
    }

    /// `or dst, imm32`.
    pub fn or_imm(&mut self, dst: Reg, value: u32) {
        self.alu_imm(1, dst, value);
    }

    /// `and dst, imm32`.
    pub fn and_imm(&mut self, dst: Reg, value: u32) {
        self.alu_imm(4, dst, value);
    }

    /// `cmp a, imm32`.
    pub fn cmp_imm(&mut self, a: Reg, value: u32) {
        self.alu_imm(7, a, value);
    }

    /// `cmp a, b`.
    pub fn cmp(&mut self, a: Reg, b: Reg) {
        self.bytes(&[0x39]);
        self.modrm_regs(b as u8, a);
    }

    /// `jmp target`.
    pub fn jmp(&mut self, target: Label) {
        self.bytes(&[0xe9]);
        self.fixup(target);
    }

    /// `j<cond> target`.
    pub fn jcc(&mut self, cond: Cond, target: Label) {
        self.bytes(&[0x0f, 0x80 + cond as u8]);
        self.fixup(target);
    }

    fn fixup(&mut self, target: Label) {
        self.fixups.push((self.code.len(), target));
        self.imm32(0);
    }

    /// `mov edx, port; out dx, eax`.
    pub fn out32(&mut self, port: u16) {
        self.mov_imm(Reg::Edx, u32::from(port));
        self.bytes(&[0xef]);
    }

    /// `mov edx, port; out dx, al`.
    pub fn out8(&mut self, port: u16) {
        self.mov_imm(Reg::Edx, u32::from(port));
        self.bytes(&[0xee]);
    }

    /// `mov edx, port; in eax, dx`.
    pub fn in32(&mut self, port: u16) {
        self.mov_imm(Reg::Edx, u32::from(port));
        self.bytes(&[0xed]);
    }

    /// `hlt`.
    pub fn hlt(&mut self) {
        self.bytes(&[0xf4]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings as `objdump -b binary -m i386` decodes them.
    #[test]
    fn encodings_match_the_manual() {
        /// (the instruction, how to emit it, its bytes)
        type Case = (&'static str, fn(&mut Asm), &'static [u8]);
        let table: &[Case] = &[
            (
                "mov ecx, 0x12345678",
                |a| a.mov_imm(Reg::Ecx, 0x1234_5678),
                &[0xb9, 0x78, 0x56, 0x34, 0x12],
            ),
            ("mov ebx, eax", |a| a.mov(Reg::Ebx, Reg::Eax), &[0x89, 0xc3]),
            (
                "mov eax, [0xc0000000]",
                |a| a.load(Reg::Eax, Mem::Abs(0xc000_0000)),
                &[0x8b, 0x05, 0, 0, 0, 0xc0],
            ),
            (
                "mov eax, [esi+0x10]",
                |a| a.load(Reg::Eax, Mem::At(Reg::Esi, 0x10)),
                &[0x8b, 0x86, 0x10, 0, 0, 0],
            ),
            (
                "movzx eax, word [0x2002]",
                |a| a.load16(Reg::Eax, Mem::Abs(0x2002)),
                &[0x0f, 0xb7, 0x05, 2, 0x20, 0, 0],
            ),
            (
                "movzx eax, byte [esi+0]",
                |a| a.load8(Reg::Eax, Mem::At(Reg::Esi, 0)),
                &[0x0f, 0xb6, 0x86, 0, 0, 0, 0],
            ),
            (
                "mov [0x1000], ecx",
                |a| a.store(Mem::Abs(0x1000), Reg::Ecx),
                &[0x89, 0x0d, 0, 0x10, 0, 0],
            ),
            (
                "mov [0x1000], cx",
                |a| a.store16(Mem::Abs(0x1000), Reg::Ecx),
                &[0x66, 0x89, 0x0d, 0, 0x10, 0, 0],
            ),
            (
                "mov dword [0x1000], 7",
                |a| a.store_imm(Mem::Abs(0x1000), 7),
                &[0xc7, 0x05, 0, 0x10, 0, 0, 7, 0, 0, 0],
            ),
            (
                "add ecx, -1",
                |a| a.add_imm(Reg::Ecx, u32::MAX),
                &[0x81, 0xc1, 0xff, 0xff, 0xff, 0xff],
            ),
            (
                "and eax, 0x40",
                |a| a.and_imm(Reg::Eax, 0x40),
                &[0x81, 0xe0, 0x40, 0, 0, 0],
            ),
            (
                "cmp eax, 2",
                |a| a.cmp_imm(Reg::Eax, 2),
                &[0x81, 0xf8, 2, 0, 0, 0],
            ),
            ("cmp ecx, ebx", |a| a.cmp(Reg::Ecx, Reg::Ebx), &[0x39, 0xd9]),
            (
                "out 0x10, eax",
                |a| a.out32(0x10),
                &[0xba, 0x10, 0, 0, 0, 0xef],
            ),
            (
                "in eax, 0x1c",
                |a| a.in32(0x1c),
                &[0xba, 0x1c, 0, 0, 0, 0xed],
            ),
            ("hlt", |a| a.hlt(), &[0xf4]),
        ];
        for (what, emit, want) in table {
            let mut a = Asm::new(0);
            emit(&mut a);
            assert_eq!(a.finish(), *want, "{what}");
        }
    }

    #[test]
    fn jumps_reach_labels_both_ways() {
        let mut a = Asm::new(0x1000);
        let back = a.label();
        let ahead = a.label();
        a.bind(back);
        a.jcc(Cond::Ne, ahead); // 6 bytes
        a.jmp(back); // 5 bytes
        a.bind(ahead);
        a.hlt();
        assert_eq!(a.here(), 0x1000 + 12);
        assert_eq!(
            a.finish(),
            [0x0f, 0x85, 5, 0, 0, 0, 0xe9, 0xf5, 0xff, 0xff, 0xff, 0xf4]
        );
    }
}
