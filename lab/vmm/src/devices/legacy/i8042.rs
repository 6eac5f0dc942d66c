//! Just enough of the i8042 keyboard controller (ports 0x60 and 0x64) for a Linux guest: the
//! reset line, so that `reboot=k` (and ACPI's reset register, which the lab's FADT points at
//! port 0x64) ends the VM, and the controller commands Linux's i8042 driver issues when it
//! probes at boot (self tests, reading and writing the command byte), answered the way a
//! healthy controller with no device behind it answers.
//!
//! A write of 0xfe to port 0x64 (or any "pulse output lines" command that pulses line 0, or an
//! output-port write with the reset bit low) signals the reset [`EventFd`]; the VMM turns it
//! into the VM's exit reason. No keyboard is emulated: bytes for the keyboard are acknowledged
//! (0xfa) and otherwise ignored, and no interrupt is ever raised. Guests do best with
//! `i8042.noaux i8042.nomux i8042.dumbkbd` on the command line (as Firecracker's do); Linux
//! kernels booted with the lab's ACPI tables skip probing the controller altogether (the FADT
//! does not announce an 8042).

use std::collections::VecDeque;

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;

/// The first port of the range the device occupies (the data port).
pub const I8042_PORT: u16 = 0x60;
/// The range's length: 0x60 (data) to 0x64 (status and command).
pub const I8042_PORT_LEN: u16 = 5;

/// Offset of the data port (0x60).
const DATA: u64 = 0;
/// Offset of the status (read) and command (write) port (0x64).
const COMMAND: u64 = 4;

/// Status register: output buffer full (a byte waits at port 0x60).
const STATUS_OUTPUT_FULL: u8 = 1 << 0;
/// Status register: system flag (self test passed).
const STATUS_SYSTEM: u8 = 1 << 2;
/// Status register: the last write went to port 0x64 (a command).
const STATUS_COMMAND: u8 = 1 << 3;
/// Status register: keyboard not inhibited.
const STATUS_UNLOCKED: u8 = 1 << 4;

/// Command byte: system flag.
const CTR_SYSTEM: u8 = 1 << 2;
/// Command byte: keyboard clock disabled.
const CTR_KBD_DISABLED: u8 = 1 << 4;
/// Command byte: aux clock disabled.
const CTR_AUX_DISABLED: u8 = 1 << 5;
/// Command byte: translate scan codes to set 1.
const CTR_XLATE: u8 = 1 << 6;

/// Output port: the CPU reset line (active low).
const OUTP_RESET_HIGH: u8 = 1 << 0;
/// Output port: the A20 gate.
const OUTP_A20: u8 = 1 << 1;

/// Controller commands (written to port 0x64).
mod cmd {
    pub const READ_CTR: u8 = 0x20;
    pub const WRITE_CTR: u8 = 0x60;
    pub const AUX_DISABLE: u8 = 0xa7;
    pub const AUX_ENABLE: u8 = 0xa8;
    pub const AUX_TEST: u8 = 0xa9;
    pub const SELF_TEST: u8 = 0xaa;
    pub const KBD_TEST: u8 = 0xab;
    pub const KBD_DISABLE: u8 = 0xad;
    pub const KBD_ENABLE: u8 = 0xae;
    pub const READ_OUTP: u8 = 0xd0;
    pub const WRITE_OUTP: u8 = 0xd1;
    /// 0xf0..=0xff pulse the output lines whose bits are clear in the low nibble.
    pub const PULSE_BASE: u8 = 0xf0;
    /// Pulses line 0: the CPU reset (what Linux's `reboot=k` writes).
    pub const RESET_CPU: u8 = 0xfe;
}

/// Self-test passed.
const SELF_TEST_OK: u8 = 0x55;
/// Interface test passed.
const INTERFACE_TEST_OK: u8 = 0x00;
/// The keyboard's acknowledgement.
const KBD_ACK: u8 = 0xfa;
/// How many bytes the controller holds for the guest.
const OUTPUT_LEN: usize = 16;

/// The i8042 controller.
#[derive(Debug)]
pub struct I8042Device {
    reset: EventFd,
    /// Resets signalled, and whether signalling one failed.
    resets: u64,
    reset_failed: bool,
    ctr: u8,
    outp: u8,
    /// The last write was a command (status bit 3).
    last_was_command: bool,
    /// A command waiting for its parameter byte at port 0x60.
    pending: Option<u8>,
    output: VecDeque<u8>,
}

impl I8042Device {
    /// A controller that signals `reset` when the guest pulls the CPU reset line.
    pub fn new(reset: EventFd) -> Self {
        Self {
            reset,
            resets: 0,
            reset_failed: false,
            ctr: CTR_SYSTEM | CTR_XLATE | CTR_AUX_DISABLED,
            outp: OUTP_RESET_HIGH | OUTP_A20,
            last_was_command: false,
            pending: None,
            output: VecDeque::with_capacity(OUTPUT_LEN),
        }
    }

    /// The reset eventfd the VMM waits on.
    pub fn reset_event(&self) -> &EventFd {
        &self.reset
    }

    /// How many times the guest asked for a reset.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Whether signalling a reset ever failed (the VMM should then also check
    /// [`I8042Device::resets`]).
    pub fn reset_failed(&self) -> bool {
        self.reset_failed
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        if !self.output.is_empty() {
            status |= STATUS_OUTPUT_FULL;
        }
        if self.ctr & CTR_SYSTEM != 0 {
            status |= STATUS_SYSTEM;
        }
        if self.last_was_command {
            status |= STATUS_COMMAND;
        }
        status
    }

    /// Puts a reply in the output buffer; replies to a command replace what was unread.
    fn reply(&mut self, byte: u8) {
        self.output.clear();
        self.output.push_back(byte);
    }

    fn signal_reset(&mut self) {
        self.resets += 1;
        if self.reset.write(1).is_err() {
            self.reset_failed = true;
        }
    }

    fn command(&mut self, command: u8) {
        self.last_was_command = true;
        self.pending = None;
        match command {
            cmd::READ_CTR => self.reply(self.ctr),
            cmd::WRITE_CTR | cmd::WRITE_OUTP => self.pending = Some(command),
            cmd::AUX_DISABLE => self.ctr |= CTR_AUX_DISABLED,
            // There is no aux device, but the bit is the guest's to set.
            cmd::AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLED,
            // 0x01: the aux clock line is stuck low, i.e. no aux port.
            cmd::AUX_TEST => self.reply(0x01),
            cmd::SELF_TEST => {
                self.ctr |= CTR_SYSTEM;
                self.reply(SELF_TEST_OK);
            }
            cmd::KBD_TEST => self.reply(INTERFACE_TEST_OK),
            cmd::KBD_DISABLE => self.ctr |= CTR_KBD_DISABLED,
            cmd::KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLED,
            cmd::READ_OUTP => self.reply(self.outp),
            cmd::RESET_CPU => self.signal_reset(),
            // Any other pulse that includes line 0; pulses of other lines only do nothing.
            pulse if pulse >= cmd::PULSE_BASE && pulse & OUTP_RESET_HIGH == 0 => {
                self.signal_reset();
            }
            // Everything else (aux loopback and the like) has no effect and no reply.
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        self.last_was_command = false;
        match self.pending.take() {
            Some(cmd::WRITE_CTR) => self.ctr = byte,
            Some(cmd::WRITE_OUTP) => {
                self.outp = byte;
                if byte & OUTP_RESET_HIGH == 0 {
                    self.signal_reset();
                }
            }
            // A byte for the keyboard: acknowledged, never acted on.
            _ => self.reply(KBD_ACK),
        }
    }
}

impl BusDevice for I8042Device {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(first) = data.first_mut() else {
            return;
        };
        *first = match offset {
            DATA => self.output.pop_front().unwrap_or(0),
            COMMAND => self.status(),
            // Port 0x61 (system control port B) and the unused ports read as zero.
            _ => 0,
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else {
            return;
        };
        match offset {
            DATA => self.data(byte),
            COMMAND => self.command(byte),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn i8042() -> I8042Device {
        I8042Device::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"))
    }

    fn inb(dev: &mut I8042Device, offset: u64) -> u8 {
        let mut b = [0xffu8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_signals_the_reset_event() {
        let mut dev = i8042();
        assert!(dev.reset_event().read().is_err(), "no reset yet");
        // What Linux's kb_wait() polls: the input buffer is never full.
        assert_eq!(inb(&mut dev, COMMAND) & 0x02, 0);
        dev.write(COMMAND, &[cmd::RESET_CPU]);
        assert_eq!(dev.reset_event().read().expect("reset"), 1);
        assert_eq!(dev.resets(), 1);
        assert!(!dev.reset_failed());
    }

    #[test]
    fn only_commands_that_pull_the_reset_line_reset() {
        // (port offset, bytes written, resets)
        let table: &[(u64, &[u8], u64)] = &[
            (COMMAND, &[0xfe], 1),
            (COMMAND, &[0xf0], 1), // pulses every line, reset included
            (COMMAND, &[0xff], 0), // pulses none
            (COMMAND, &[0xfd], 0), // pulses line 1 only
            (DATA, &[0xfe], 0),    // a byte for the keyboard
            (COMMAND, &[cmd::WRITE_OUTP, 0], 0), // command alone; its data below
            (COMMAND, &[0x20], 0),
        ];
        for &(offset, bytes, resets) in table {
            let mut dev = i8042();
            for &b in bytes {
                dev.write(offset, &[b]);
            }
            assert_eq!(dev.resets(), resets, "{offset} {bytes:x?}");
        }
        // The output port written with the reset bit low resets; high does not.
        let mut dev = i8042();
        dev.write(COMMAND, &[cmd::WRITE_OUTP]);
        dev.write(DATA, &[OUTP_A20 | OUTP_RESET_HIGH]);
        assert_eq!(dev.resets(), 0);
        dev.write(COMMAND, &[cmd::WRITE_OUTP]);
        dev.write(DATA, &[OUTP_A20]);
        assert_eq!(dev.resets(), 1);
    }

    #[test]
    fn linux_probe_sequence_sees_a_healthy_controller() {
        let mut dev = i8042();
        // i8042_flush: nothing to read.
        assert_eq!(inb(&mut dev, COMMAND) & STATUS_OUTPUT_FULL, 0);
        // Self test.
        dev.write(COMMAND, &[cmd::SELF_TEST]);
        let status = inb(&mut dev, COMMAND);
        assert_eq!(status & STATUS_OUTPUT_FULL, STATUS_OUTPUT_FULL);
        assert_eq!(status & STATUS_COMMAND, STATUS_COMMAND);
        assert_eq!(status & STATUS_SYSTEM, STATUS_SYSTEM);
        assert_eq!(inb(&mut dev, DATA), SELF_TEST_OK);
        assert_eq!(inb(&mut dev, COMMAND) & STATUS_OUTPUT_FULL, 0);
        // Read, change and write back the command byte.
        dev.write(COMMAND, &[cmd::READ_CTR]);
        let ctr = inb(&mut dev, DATA);
        assert_eq!(ctr & CTR_SYSTEM, CTR_SYSTEM);
        dev.write(COMMAND, &[cmd::WRITE_CTR]);
        dev.write(DATA, &[ctr | CTR_KBD_DISABLED]);
        assert_eq!(inb(&mut dev, COMMAND) & STATUS_COMMAND, 0);
        dev.write(COMMAND, &[cmd::READ_CTR]);
        assert_eq!(inb(&mut dev, DATA), ctr | CTR_KBD_DISABLED);
        dev.write(COMMAND, &[cmd::KBD_ENABLE]);
        dev.write(COMMAND, &[cmd::READ_CTR]);
        assert_eq!(inb(&mut dev, DATA) & CTR_KBD_DISABLED, 0);
        // Keyboard interface test; aux test says there is no aux port.
        dev.write(COMMAND, &[cmd::KBD_TEST]);
        assert_eq!(inb(&mut dev, DATA), INTERFACE_TEST_OK);
        dev.write(COMMAND, &[cmd::AUX_TEST]);
        assert_ne!(inb(&mut dev, DATA), 0);
        // A keyboard command is acknowledged.
        dev.write(DATA, &[0xf4]);
        assert_eq!(inb(&mut dev, DATA), KBD_ACK);
        // Reading an empty buffer gives zero.
        assert_eq!(inb(&mut dev, DATA), 0);
        assert_eq!(dev.resets(), 0);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut dev = i8042();
        let mut wide = [0xffu8; 4];
        dev.read(COMMAND, &mut wide);
        assert_eq!(&wide[1..], &[0, 0, 0]);
        assert_eq!(inb(&mut dev, 1), 0);
        dev.write(2, &[cmd::RESET_CPU]);
        dev.write(COMMAND, &[]);
        dev.read(DATA, &mut []);
        assert_eq!(dev.resets(), 0);
    }
}
