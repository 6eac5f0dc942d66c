//! The lab's emulated devices. Only virtio devices so far; legacy devices (serial, i8042) join
//! here when the lab boots guests with its own VMM.

pub mod virtio;
