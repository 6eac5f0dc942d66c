//! A virtio-mmio driver written as guest code: each method emits the instructions a guest
//! driver runs for one step (a register access, a status change, a descriptor, a kick, a poll
//! of the used ring), so that a probe program reads like the driver it plays. Everything the
//! driver knows statically (queue indices, avail slots) is decided here, at assembly time; the
//! guest only moves values between registers, memory and the device.
//!
//! Register use: EAX carries values, ECX counts polls and bytes, EDX is the port of `out`,
//! ESI walks buffers. Nothing lives across steps.

use lab_vmm::devices::virtio::mmio::{reg, status};

use super::asm::{Asm, Cond, Label, Mem, Reg};
use super::{CHECKPOINT_PORT, CODE_START, DEADLINE_PORT, FAIL_PORT, REPORT_PORT};

/// The size the driver gives every queue.
pub const QUEUE_SIZE: u16 = 8;
/// Descriptor flag: the chain goes on at `next`.
pub const DESC_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const DESC_WRITE: u16 = 2;
/// How many times a poll loop looks between two questions to the deadline port (a few
/// milliseconds of emulated guest time on `kvm_pvm`).
pub const POLL_BATCH: u32 = 1000;

/// Where one queue's rings lie in guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rings {
    /// Descriptor table (16 bytes per entry).
    pub desc: u32,
    /// Available ring: flags, idx, then one u16 head per slot.
    pub avail: u32,
    /// Used ring: flags, idx, then one (id u32, len u32) element per slot.
    pub used: u32,
}

/// Queue `q`'s rings: a page each, from 2 MiB up.
pub fn rings(q: u32) -> Rings {
    let base = 0x20_0000 + q * 0x1000;
    Rings {
        desc: base,
        avail: base + 0x400,
        used: base + 0x800,
    }
}

/// The address of used-ring element `slot`'s `len` field.
pub fn used_len_at(rings: Rings, slot: u16) -> u32 {
    rings.used + 4 + 8 * u32::from(slot % QUEUE_SIZE) + 4
}

/// A guest program driving the virtio-mmio device at `base`.
pub struct Driver {
    /// The program so far, for steps this type has no method for.
    pub asm: Asm,
    base: u32,
}

impl Driver {
    /// A program loaded at [`CODE_START`] for the device window at `base`.
    pub fn new(base: u64) -> Self {
        Self {
            asm: Asm::new(CODE_START),
            base: u32::try_from(base).expect("window below 4 GiB"),
        }
    }

    /// The machine code, ending in `hlt`.
    pub fn finish(mut self) -> Vec<u8> {
        self.asm.hlt();
        self.asm.finish()
    }

    fn register(&self, offset: u64) -> Mem {
        Mem::Abs(self.base + u32::try_from(offset).expect("inside the window"))
    }

    /// EAX = register `offset`.
    pub fn read(&mut self, offset: u64) {
        let mem = self.register(offset);
        self.asm.load(Reg::Eax, mem);
    }

    /// Register `offset` = `value`.
    pub fn write(&mut self, offset: u64, value: u32) {
        let mem = self.register(offset);
        self.asm.store_imm(mem, value);
    }

    /// Reports EAX.
    pub fn report_eax(&mut self) {
        self.asm.out32(REPORT_PORT);
    }

    /// Reads register `offset` and reports it.
    pub fn report(&mut self, offset: u64) {
        self.read(offset);
        self.report_eax();
    }

    /// Reports the dword at `addr` in guest RAM.
    pub fn report_mem(&mut self, addr: u32) {
        self.asm.load(Reg::Eax, Mem::Abs(addr));
        self.report_eax();
    }

    /// Lets the test look at the device now.
    pub fn checkpoint(&mut self) {
        self.asm.out32(CHECKPOINT_PORT);
    }

    /// Gives up: reports `step` on the fail port and halts.
    pub fn fail(&mut self, step: u32) {
        self.asm.mov_imm(Reg::Eax, step);
        self.asm.out32(FAIL_PORT);
        self.asm.hlt();
    }

    /// Writes `value` to the status register.
    pub fn set_status(&mut self, value: u8) {
        self.write(reg::STATUS, u32::from(value));
    }

    /// Resets the device and negotiates `features` up to FEATURES_OK, reporting, when
    /// `report` is set, what [`expected_negotiation`] lists.
    pub fn negotiate(&mut self, features: u64, report: bool) {
        use status::{ACKNOWLEDGE, DRIVER, FEATURES_OK};
        if report {
            self.report(reg::MAGIC_VALUE);
            self.report(reg::VERSION);
            self.report(reg::DEVICE_ID);
            self.report(reg::VENDOR_ID);
        }
        self.set_status(0);
        for step in [ACKNOWLEDGE, ACKNOWLEDGE | DRIVER] {
            self.set_status(step);
            if report {
                self.report(reg::STATUS);
            }
        }
        for sel in 0..2 {
            self.write(reg::DEVICE_FEATURES_SEL, sel);
            if report {
                self.report(reg::DEVICE_FEATURES);
            }
        }
        for (sel, half) in [(0, features as u32), (1, (features >> 32) as u32)] {
            self.write(reg::DRIVER_FEATURES_SEL, sel);
            self.write(reg::DRIVER_FEATURES, half);
        }
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if report {
            self.report(reg::STATUS);
            // The first dword of the configuration space (for vsock: the CID's low half).
            self.report(reg::CONFIG);
        }
    }

    /// Configures queue `q` with `size` and its [`rings`], and marks it ready; reports
    /// QueueNumMax and then QueueReady when `report` is set.
    pub fn setup_queue(&mut self, q: u32, size: u16, report: bool) {
        let r = rings(q);
        self.write(reg::QUEUE_SEL, q);
        if report {
            self.report(reg::QUEUE_NUM_MAX);
        }
        self.write(reg::QUEUE_NUM, u32::from(size));
        for (low, high, addr) in [
            (reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, r.desc),
            (reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH, r.avail),
            (reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH, r.used),
        ] {
            self.write(low, addr);
            self.write(high, 0);
        }
        self.write(reg::QUEUE_READY, 1);
        if report {
            self.report(reg::QUEUE_READY);
        }
    }

    /// Sets DRIVER_OK; reports the status after when `report` is set.
    pub fn driver_ok(&mut self, report: bool) {
        use status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        if report {
            self.report(reg::STATUS);
        }
    }

    /// The whole bring-up of a device with `queues` queues of [`QUEUE_SIZE`].
    pub fn bring_up(&mut self, features: u64, queues: u32, report: bool) {
        self.negotiate(features, report);
        for q in 0..queues {
            self.setup_queue(q, QUEUE_SIZE, report);
        }
        self.driver_ok(report);
    }

    /// Writes descriptor `index` of queue `q`.
    pub fn desc(&mut self, q: u32, index: u16, addr: u32, len: u32, flags: u16, next: u16) {
        let at = rings(q).desc + 16 * u32::from(index);
        self.asm.store_imm(Mem::Abs(at), addr);
        self.asm.store_imm(Mem::Abs(at + 4), 0);
        self.asm.store_imm(Mem::Abs(at + 8), len);
        self.asm.store_imm(
            Mem::Abs(at + 12),
            u32::from(flags) | (u32::from(next) << 16),
        );
    }

    /// Puts chain `head` in avail slot `slot` of queue `q` and publishes it (avail idx =
    /// `slot + 1`).
    pub fn publish(&mut self, q: u32, slot: u16, head: u16) {
        let r = rings(q);
        self.asm.mov_imm(Reg::Eax, u32::from(head));
        self.asm.store16(
            Mem::Abs(r.avail + 4 + 2 * u32::from(slot % QUEUE_SIZE)),
            Reg::Eax,
        );
        self.asm.mov_imm(Reg::Eax, u32::from(slot.wrapping_add(1)));
        self.asm.store16(Mem::Abs(r.avail + 2), Reg::Eax);
    }

    /// Kicks queue `q`.
    pub fn notify(&mut self, q: u32) {
        self.write(reg::QUEUE_NOTIFY, q);
    }

    /// A poll loop: `check` emits a test that jumps to its label when the wait is over; the
    /// loop runs it [`POLL_BATCH`] times between asking the deadline port, and gives up with
    /// `step` once the deadline has passed. Clobbers EAX, ECX, EDX.
    fn poll(&mut self, step: u32, check: impl Fn(&mut Self, Label)) {
        let (batch, again, done) = (self.asm.label(), self.asm.label(), self.asm.label());
        self.asm.bind(batch);
        self.asm.mov_imm(Reg::Ecx, POLL_BATCH);
        self.asm.bind(again);
        check(self, done);
        self.asm.add_imm(Reg::Ecx, u32::MAX); // ecx -= 1
        self.asm.jcc(Cond::Ne, again);
        self.asm.in32(DEADLINE_PORT);
        self.asm.cmp_imm(Reg::Eax, 0);
        self.asm.jcc(Cond::Eq, batch);
        self.fail(step);
        self.asm.bind(done);
    }

    /// Polls queue `q`'s used idx until it reaches `idx`; gives up with `step`.
    pub fn wait_used(&mut self, q: u32, idx: u16, step: u32) {
        let used_idx = Mem::Abs(rings(q).used + 2);
        self.poll(step, |d, done| {
            d.asm.load16(Reg::Eax, used_idx);
            d.asm.cmp_imm(Reg::Eax, u32::from(idx));
            d.asm.jcc(Cond::AboveEq, done);
        });
    }

    /// Polls the status register until `bit` is set; gives up with `step`.
    pub fn wait_status(&mut self, bit: u8, step: u32) {
        self.poll(step, |d, done| {
            d.read(reg::STATUS);
            d.asm.and_imm(Reg::Eax, u32::from(bit));
            d.asm.jcc(Cond::Ne, done);
        });
    }

    /// Stores `bytes` at `addr` a dword at a time (the last one padded with zeros).
    pub fn store_bytes(&mut self, addr: u32, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(4).enumerate() {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            let at = addr + 4 * u32::try_from(i).expect("small");
            self.asm.store_imm(Mem::Abs(at), u32::from_le_bytes(word));
        }
    }

    /// Reports, a byte at a time, the bytes at `addr` whose count is the dword at `len_at`; a
    /// count over `max` gives up with `step` (the guest does not trust a length it read to stay
    /// within its buffer). Clobbers EAX, ECX, EDX, ESI.
    pub fn report_bytes(&mut self, addr: u32, len_at: u32, max: u32, step: u32) {
        self.asm.load(Reg::Ecx, Mem::Abs(len_at));
        let (fits, again, done) = (self.asm.label(), self.asm.label(), self.asm.label());
        self.asm.cmp_imm(Reg::Ecx, max + 1);
        self.asm.jcc(Cond::Below, fits);
        self.fail(step);
        self.asm.bind(fits);
        self.asm.mov_imm(Reg::Esi, addr);
        self.asm.cmp_imm(Reg::Ecx, 0);
        self.asm.jcc(Cond::Eq, done);
        self.asm.bind(again);
        self.asm.load8(Reg::Eax, Mem::At(Reg::Esi, 0));
        self.asm.out8(REPORT_PORT);
        self.asm.add_imm(Reg::Esi, 1);
        self.asm.add_imm(Reg::Ecx, u32::MAX);
        self.asm.jcc(Cond::Ne, again);
        self.asm.bind(done);
    }
}

/// What [`Driver::negotiate`] reports for a device of `device_id` offering `offered`, its
/// first config dword `config0`, when the device accepts the features.
pub fn expected_negotiation(device_id: u32, offered: u64, config0: u32) -> Vec<u32> {
    use lab_vmm::devices::virtio::mmio::{MAGIC_VALUE, MMIO_VERSION, VENDOR_ID};
    use status::{ACKNOWLEDGE, DRIVER, FEATURES_OK};
    vec![
        MAGIC_VALUE,
        MMIO_VERSION,
        device_id,
        VENDOR_ID,
        u32::from(ACKNOWLEDGE),
        u32::from(ACKNOWLEDGE | DRIVER),
        offered as u32,
        (offered >> 32) as u32,
        u32::from(ACKNOWLEDGE | DRIVER | FEATURES_OK),
        config0,
    ]
}
