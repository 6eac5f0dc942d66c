//! The lab's test model, after Kyua's: test programs of an interface, their test cases and
//! metadata, the five results, and the events a run emits. Pure data: no I/O, no VMs.
#![forbid(unsafe_code)]

pub mod event;
pub mod metadata;
pub mod program;
pub mod result;

pub use event::{CaseId, Counts, OutputStream, RunEvent, SubResult};
pub use metadata::{Execenv, Metadata, MetadataError, RequiredUser};
pub use program::{
    BpfOptions, BpfState, Interface, TailCallSlot, TestCase, TestProgram, BUILD_CASE, LIST_CASE,
    MAIN_CASE,
};
pub use result::{Cause, ResultType, TestResult};
