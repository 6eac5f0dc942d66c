//! The HW-reduced ACPI sleep control and status registers (ACPI 6.5 §4.8.3.7–8), one byte each
//! on the port I/O bus: how a Linux guest powers the machine off. The FADT names them
//! ([`crate::acpi`]) and the DSDT's `\_S5_` gives sleep type [`S5_SLEEP_TYPE`]; Linux's
//! `acpi_power_off` then writes `SLP_TYP = 5 | SLP_EN` to the control register, which signals
//! the power-off [`EventFd`] the VMM waits on.
//!
//! Without these a HW-reduced machine has no S5: Linux turns `reboot(RB_POWER_OFF)` into a
//! halt, and the vCPUs sit in `cli; hlt` inside KVM (the in-kernel irqchip keeps HLT there)
//! until the host's timeout.
//!
//! Only S5 is offered; a write asking for another state, or without `SLP_EN`, is ignored. The
//! status register reads zero (never "woken") and ignores writes (Linux clears `WAK_STS` first).

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;

/// The sleep control register's port.
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// The sleep status register's port.
pub const SLEEP_STATUS_PORT: u16 = 0x601;
/// The ports the device occupies, from [`SLEEP_CONTROL_PORT`].
pub const SLEEP_PORT_LEN: u16 = 2;
/// The sleep type `\_S5_` names (any value 0..=7 works; 5 is the conventional one).
pub const S5_SLEEP_TYPE: u8 = 5;

/// Offset of the control register (the status register, at 1, takes no writes).
const CONTROL: u64 = 0;
/// Sleep control: the sleep type field (bits 2..=4).
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;
/// Sleep control: enter the sleep state.
const SLP_EN: u8 = 1 << 5;

/// The two sleep registers.
#[derive(Debug)]
pub struct AcpiSleepDevice {
    power_off: EventFd,
    /// Power-offs asked for, and whether signalling one failed.
    requests: u64,
    signal_failed: bool,
}

impl AcpiSleepDevice {
    /// Registers that signal `power_off` when the guest enters S5.
    pub fn new(power_off: EventFd) -> Self {
        Self {
            power_off,
            requests: 0,
            signal_failed: false,
        }
    }

    /// The eventfd the VMM waits on.
    pub fn power_off_event(&self) -> &EventFd {
        &self.power_off
    }

    /// How many times the guest asked to power off.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Whether signalling a power-off ever failed.
    pub fn signal_failed(&self) -> bool {
        self.signal_failed
    }
}

/// Whether a write of `value` to the sleep control register asks for S5.
pub fn is_s5_request(value: u8) -> bool {
    value & SLP_EN != 0 && (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK == S5_SLEEP_TYPE
}

impl BusDevice for AcpiSleepDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != CONTROL {
            return;
        }
        if data.first().copied().is_some_and(is_s5_request) {
            self.requests += 1;
            if self.power_off.write(1).is_err() {
                self.signal_failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;

    #[test]
    fn only_s5_with_slp_en_powers_off() {
        // (value written to the control register, powers off)
        let table: &[(u8, bool)] = &[
            (0x34, true),  // SLP_TYP 5 | SLP_EN: what Linux writes
            (0x14, false), // SLP_TYP 5 without SLP_EN
            (0x20, false), // S0 with SLP_EN
            (0x2c, false), // SLP_TYP 3 (S3) | SLP_EN
            (0xb4, true),  // stray high bit ignored
            (0xff, false), // SLP_TYP 7
        ];
        for &(value, want) in table {
            assert_eq!(is_s5_request(value), want, "{value:#x}");
        }
    }

    #[test]
    fn control_writes_signal_and_status_is_inert() {
        let evt = EventFd::new(EFD_NONBLOCK).expect("eventfd");
        let mut dev = AcpiSleepDevice::new(evt.try_clone().expect("clone"));
        // Linux clears WAK_STS in the status register first.
        dev.write(1, &[0x80]);
        assert!(evt.read().is_err());
        dev.write(0, &[0x20]);
        assert!(evt.read().is_err());
        dev.write(0, &[0x34]);
        assert_eq!(evt.read().expect("power off"), 1);
        assert_eq!(dev.requests(), 1);
        let mut data = [0xaa; 2];
        dev.read(1, &mut data[..1]);
        dev.read(0, &mut data[1..]);
        assert_eq!(data, [0, 0]);
        // Empty and wide accesses do not panic.
        dev.write(0, &[]);
        dev.write(0, &[0x34, 0, 0, 0]);
        assert_eq!(dev.requests(), 2);
        assert!(!dev.signal_failed());
    }
}
