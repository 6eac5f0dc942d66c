//! Architecture-specific guest setup. Only x86_64 exists today.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
