//! The lab's emulated devices: the buses vCPU exits are dispatched on ([`bus`]), the legacy PC
//! devices ([`legacy`]: serial console, i8042 reset) and the virtio devices with their
//! virtio-mmio transport ([`virtio`]).

pub mod bus;
pub mod legacy;
pub mod virtio;
