//! lab-vmm: the lab's own virtual-machine devices. Today that is the virtio-vsock device, served
//! to QEMU out of process as a vhost-user backend ([`vhost_user::serve`]); it is written so that
//! the lab's own KVM VMM can later run it in process.

#[cfg(target_arch = "x86_64")]
pub mod acpi;
pub mod arch;
pub mod boot;
pub mod devices;
pub mod vhost_user;
pub mod vstate;
