//! The 8250/16550A UART at COM1 (ports 0x3f8..=0x3ff, IRQ 4), emulated by `vm-superio`: what
//! the guest transmits goes to the VM's console log (any [`Write`]); its interrupt is an
//! [`EventFd`] the VMM registers with KVM as an irqfd for IRQ 4. Input is optional: the VMM
//! may push bytes the guest then reads ([`SerialDevice::enqueue_input`]).
//!
//! The guest's writes are untrusted only in what they say, and the UART has no state a write
//! can break: every offset and value is handled by `vm-superio`. A console log that fails to
//! take a byte loses that byte (as a real UART without a listener would) and the failure is
//! counted, never passed to the guest.

use std::io::Write;

use vm_superio::serial::{Error as SuperioError, NoEvents};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;

/// COM1's first port.
pub const COM1_PORT: u16 = 0x3f8;
/// The number of ports a UART occupies.
pub const SERIAL_PORT_LEN: u16 = 8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;

/// Why serial input could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The receive FIFO is full: the guest has not read what came before.
    #[error("serial receive fifo is full")]
    FifoFull,
    /// Raising the interrupt failed.
    #[error("failed to raise the serial interrupt")]
    Interrupt(#[source] std::io::Error),
    /// Writing to the console log failed.
    #[error("failed to write to the console log")]
    Output(#[source] std::io::Error),
}

impl From<SuperioError<std::io::Error>> for SerialError {
    fn from(err: SuperioError<std::io::Error>) -> Self {
        match err {
            SuperioError::Trigger(e) => Self::Interrupt(e),
            SuperioError::IOError(e) => Self::Output(e),
            SuperioError::FullFifo => Self::FifoFull,
        }
    }
}

/// An interrupt line backed by an eventfd (an irqfd once the VM registers it).
#[derive(Debug)]
pub struct IrqLine(EventFd);

impl IrqLine {
    /// A line that signals `evt`.
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }

    /// The eventfd, to register as an irqfd.
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }
}

impl Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// A UART whose output goes to `W`.
pub struct SerialDevice<W: Write> {
    uart: Serial<IrqLine, NoEvents, W>,
    /// Bytes the console log failed to take, and failed interrupt triggers.
    lost: u64,
    /// The first such failure, as text.
    first_failure: Option<String>,
}

impl<W: Write> std::fmt::Debug for SerialDevice<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice")
            .field("lost", &self.lost)
            .field("first_failure", &self.first_failure)
            .finish_non_exhaustive()
    }
}

impl<W: Write> SerialDevice<W> {
    /// A UART that raises `irq` and writes what the guest sends to `out`.
    pub fn new(irq: EventFd, out: W) -> Self {
        Self {
            uart: Serial::new(IrqLine::new(irq), out),
            lost: 0,
            first_failure: None,
        }
    }

    /// The interrupt's eventfd, to register as an irqfd for [`COM1_IRQ`].
    pub fn irq(&self) -> &EventFd {
        self.uart.interrupt_evt().eventfd()
    }

    /// The console log.
    pub fn output(&self) -> &W {
        self.uart.writer()
    }

    /// The console log, mutably (to flush it).
    pub fn output_mut(&mut self) -> &mut W {
        self.uart.writer_mut()
    }

    /// Gives `input` to the guest as received bytes; returns how many fit in the FIFO.
    pub fn enqueue_input(&mut self, input: &[u8]) -> Result<usize, SerialError> {
        Ok(self.uart.enqueue_raw_bytes(input)?)
    }

    /// How many more input bytes the FIFO takes now.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// How many output bytes or interrupts were lost to failures, and the first failure.
    pub fn losses(&self) -> (u64, Option<&str>) {
        (self.lost, self.first_failure.as_deref())
    }
}

impl<W: Write + Send> BusDevice for SerialDevice<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // A UART's registers are bytes; wider reads see the register and zeroes.
        data.fill(0);
        if let (Some(first), Ok(offset)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(offset);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(offset)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(err) = self.uart.write(offset, value) {
            self.lost += 1;
            if self.first_failure.is_none() {
                let err = SerialError::from(err);
                let cause = std::error::Error::source(&err)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                self.first_failure = Some(format!("{err}{cause}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    const DATA: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LSR: u64 = 5;

    fn uart() -> SerialDevice<Vec<u8>> {
        SerialDevice::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"), Vec::new())
    }

    fn read(dev: &mut impl BusDevice, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn output_reaches_the_log_and_raises_the_interrupt() {
        let mut dev = uart();
        // No interrupt until the driver enables THR-empty interrupts.
        dev.write(DATA, b"h");
        assert!(dev.irq().read().is_err(), "no interrupt yet");
        // Enabling it raises it at once (the THR is always empty).
        dev.write(IER, &[0x02]);
        assert_eq!(dev.irq().read().expect("interrupt"), 1);
        // Like Linux's 8250 driver: each interrupt is acknowledged by reading IIR, which says
        // THR empty (0x02) with FIFOs on (0xc0); then the next byte goes out and interrupts.
        for &b in b"ello\n" {
            assert_eq!(read(&mut dev, IIR), 0xc2);
            assert_eq!(read(&mut dev, IIR), 0xc1, "no interrupt pending");
            assert_eq!(read(&mut dev, LSR) & 0x60, 0x60, "THR and TX empty");
            dev.write(DATA, &[b]);
            assert_eq!(dev.irq().read().expect("interrupt"), 1);
        }
        assert_eq!(dev.output(), b"hello\n");
    }

    #[test]
    fn input_reaches_the_guest_with_an_interrupt() {
        let mut dev = uart();
        dev.write(IER, &[0x01]); // received-data interrupt
        assert_eq!(dev.enqueue_input(b"ok").expect("enqueue"), 2);
        assert_eq!(dev.irq().read().expect("interrupt"), 1);
        assert_eq!(read(&mut dev, LSR) & 0x01, 0x01, "data ready");
        assert_eq!(read(&mut dev, DATA), b'o');
        assert_eq!(read(&mut dev, DATA), b'k');
        assert_eq!(read(&mut dev, LSR) & 0x01, 0);
    }

    #[test]
    fn a_failing_log_loses_bytes_not_the_guest() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut dev = SerialDevice::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"), Broken);
        dev.write(DATA, b"x");
        dev.write(DATA, b"y");
        let (lost, first) = dev.losses();
        assert_eq!(lost, 2);
        assert_eq!(first, Some("failed to write to the console log: disk full"));
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut dev = uart();
        let mut wide = [0xffu8; 4];
        dev.read(LSR, &mut wide);
        assert_eq!(&wide[1..], &[0, 0, 0]);
        dev.read(1 << 40, &mut wide);
        assert_eq!(wide, [0; 4]);
        dev.write(1 << 40, &[1]);
        dev.write(DATA, &[]);
        dev.read(DATA, &mut []);
        assert!(dev.output().is_empty());
    }
}
