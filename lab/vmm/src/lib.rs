//! lab-vmm: the lab's own KVM microVM ([`builder::run`] boots one and says how it ended), and its
//! virtio-vsock device, which QEMU can also use out of process as a vhost-user backend
//! ([`vhost_user::serve`]).

#[cfg(target_arch = "x86_64")]
pub mod acpi;
pub mod arch;
pub mod boot;
#[cfg(target_arch = "x86_64")]
pub mod builder;
pub mod devices;
pub mod event_loop;
pub mod process;
#[cfg(target_arch = "x86_64")]
pub mod seccomp;
pub mod shared_root;
pub mod vhost_user;
pub mod vstate;
