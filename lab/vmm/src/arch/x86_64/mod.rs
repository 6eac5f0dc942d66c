//! x86_64 guest setup: the memory layout, CPU registers, CPUID, MSRs, descriptor tables, page
//! tables and the MP table that a booting kernel expects to find.

pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod paging;
pub mod regs;
