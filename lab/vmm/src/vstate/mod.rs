//! The VM's state in KVM: the KVM handle and its checks, guest memory, the VM with its
//! in-kernel interrupt controllers, and the vCPUs with their run loops.

pub mod kvm;
pub mod memory;
pub mod vcpu;
pub mod vm;

pub use kvm::{Kvm, KvmError};
pub use memory::{GuestMemoryMmap, MemoryConfig, MemoryError};
pub use vcpu::{Bus, SystemEvent, Vcpu, VcpuError, VcpuExit, VcpuHandle};
pub use vm::{Vm, VmError};

#[cfg(test)]
mod probe_tests;
