//! The lab's engine: boots kernels in VMs through a backend trait (QEMU now, the lab's own VMM
//! later), assembles what the guest boots with, and runs jobs in it.
#![forbid(unsafe_code)]

pub mod accel;
pub mod cancel;
pub mod carry;
pub mod config;
pub mod console;
pub(crate) mod executor;
pub mod guest;
pub mod interface;
pub mod kvm;
pub mod lab;
pub mod launcher;
pub(crate) mod process;
pub mod qemu;
pub mod scheduler;
pub mod scratch;
pub mod session;
pub mod suite;
pub mod vm;
