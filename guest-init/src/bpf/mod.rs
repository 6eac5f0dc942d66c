//! `/init bpf`: guest-init as the guest side of eBPF unit tests (Cilium's and Kmesh's
//! `<progtype>/test/<name>/<stage>` protocol). `list OBJ` prints the object's test names;
//! `run OBJ NAME` loads the object afresh, runs the test's stages with `BPF_PROG_TEST_RUN` and
//! prints one JSON line (see `report`). Before a test's stages run, the object's tail call
//! targets (`<progtype>/tail/<map>/<index>`) fill its prog arrays (see `tail`). The contract
//! is `notes/bpf-contract.md`'s.

mod btf;
mod cli;
mod elf;
mod load;
mod object;
mod progtype;
mod report;
mod run;
mod sys;
mod tail;

pub use cli::main;

/// A failure to read, parse, load or relocate a test object.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("invalid object: {0}")]
    Elf(String),
    #[error("cannot prepare the object for aya-obj: {0}")]
    Rename(String),
    #[error("aya-obj cannot parse the object")]
    Parse(#[source] aya_obj::ParseError),
    #[error("cannot read the kernel's BTF for CO-RE relocations")]
    KernelBtf(#[source] aya_obj::btf::BtfError),
    #[error("CO-RE relocation failed")]
    CoRe(#[source] aya_obj::btf::BtfRelocationError),
    #[error("relocation failed")]
    Relocate(#[source] aya_obj::relocation::EbpfRelocationError),
    #[error("cannot create map {0}")]
    MapCreate(String, #[source] std::io::Error),
    #[error("the object has no program {0}")]
    NoProgram(String),
    #[error("{0}")]
    Global(String),
    /// Something the object uses that lab's loader does not do, named.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// `e` and its sources, joined by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
