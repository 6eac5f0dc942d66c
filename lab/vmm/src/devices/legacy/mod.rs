//! Legacy PC devices on the port I/O bus: the COM1 UART (the guest's console) and the i8042
//! controller (its reset line ends the VM).

pub mod acpi_sleep;
pub mod i8042;
pub mod serial;

pub use acpi_sleep::AcpiSleepDevice;
pub use i8042::I8042Device;
pub use serial::SerialDevice;
