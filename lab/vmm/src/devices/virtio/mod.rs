//! Virtio devices (virtio spec 1.x over split virtqueues, from `virtio-queue`). Each device is a
//! folder: `mod.rs` (docs, errors, constants), `device.rs`, `event_handler.rs`, its backend and
//! `test_utils.rs`. The in-process transport is [`mmio`] (virtio-mmio v2).

pub mod mmio;
pub mod vsock;
