//! Test programs and test cases: what a suite declares and what listing a program finds.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metadata::Metadata;

/// The test case name of a program's listing, when listing itself failed (Kyua's).
pub const LIST_CASE: &str = "__test_cases_list__";

/// The test case name of a program lab could not build from its source (a `.c` name): its
/// one result, the compiler's first error as the reason and all it said as stderr.
pub const BUILD_CASE: &str = "__build__";

/// The test case name of programs that are one test case (plain, tap).
pub const MAIN_CASE: &str = "main";

/// How lab talks to a test program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interface {
    /// ATF: list with `-l`, run one case with `-r resfile`, optional cleanup.
    Atf,
    /// The exit status is the verdict.
    Plain,
    /// The TAP stream on stdout is the verdict; each test point is a result.
    Tap,
    /// A BPF object run through BPF_PROG_TEST_RUN.
    Bpf,
    /// A program of an installed kselftest tree, run as the kernel's `kselftest/runner.sh`
    /// runs it: from its collection's directory, its exit status the verdict (0 pass, 4 skip),
    /// its KTAP output the sub-results.
    Kselftest,
}

impl Interface {
    /// The name Kyua uses (and the Kyuafile's `NAME_test_program`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Atf => "atf",
            Self::Plain => "plain",
            Self::Tap => "tap",
            Self::Bpf => "bpf",
            Self::Kselftest => "kselftest",
        }
    }
}

/// One test case of a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCase {
    /// Its name within the program.
    pub name: String,
    /// Its metadata: the program's, overridden by the case's own.
    pub metadata: Metadata,
}

/// A test program declared by a suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestProgram {
    /// Its interface.
    pub interface: Interface,
    /// Its path relative to the suite root, `/`-separated: its identity in results.
    pub path: String,
    /// The suite root on the host (the directory of the top Kyuafile).
    pub root: PathBuf,
    /// The test suite it belongs to (`test_suite()` or the `test_suite` property).
    pub test_suite: String,
    /// Program-level metadata, the default for its cases.
    pub metadata: Metadata,
    /// Its test cases: known at load time for plain and tap programs (one, `main`), found by
    /// listing for atf and bpf ones.
    pub cases: Vec<TestCase>,
    /// What runs in the guest when lab built it from the program's source (a BPF object
    /// compiled from `x.c`); `None`: the program file itself runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built: Option<PathBuf>,
    /// How a `bpf` program is built and run (its Kyuafile's bpf properties).
    #[serde(default, skip_serializing_if = "BpfOptions::is_default")]
    pub bpf: BpfOptions,
}

/// How the tests of a BPF object share a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BpfState {
    /// One load for the object: its tests run in name order and share its maps; only
    /// `suite_result_map` and `mock_skb_meta_map` are cleared between them (Cilium's harness).
    Object,
    /// A fresh load for each test (Kmesh's harness).
    Test,
}

impl BpfState {
    /// The name used in Kyuafiles.
    pub fn name(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Test => "test",
        }
    }
}

/// A slot the harness fills by program name before a test's stages run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailCallSlot {
    /// The prog array.
    pub map: String,
    /// The slot.
    pub slot: u32,
    /// The program, by name.
    pub program: String,
}

/// The `bpf_test_program` properties beyond Kyua's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BpfOptions {
    /// Globals (`.data`, `.bss`, `.rodata*` variables) set before load: name → value.
    #[serde(default)]
    pub globals: std::collections::BTreeMap<String, String>,
    /// Slots filled by program name (Kmesh's `registerTailCall`).
    #[serde(default)]
    pub tail_calls: Vec<TailCallSlot>,
    /// How tests share a load; `None`: chosen by the object's style (see `effective_state`).
    #[serde(default)]
    pub state: Option<BpfState>,
    /// A program (root-relative path) run in the guest once the maps exist, with them pinned.
    #[serde(default)]
    pub maps_setup: Option<String>,
    /// What lab built from a `maps_setup` written in C (`x.c`): the executable on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maps_setup_built: Option<std::path::PathBuf>,
    /// The compiler flags for a `.c` source, instead of lab's.
    #[serde(default)]
    pub cflags: Option<Vec<String>>,
    /// Extra include directories for a `.c` source (root-relative).
    #[serde(default)]
    pub include: Vec<String>,
}

impl BpfOptions {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The state a run uses: the Kyuafile's, else `test` for Kmesh-style objects (their stage
    /// is `jump`) and `object` for the rest (Cilium's `setup`, or checks alone).
    pub fn effective_state(&self, kmesh_style: bool) -> BpfState {
        self.state.unwrap_or(if kmesh_style {
            BpfState::Test
        } else {
            BpfState::Object
        })
    }
}

impl TestProgram {
    /// A program with no cases listed yet; plain and tap programs get their single `main` case.
    pub fn new(
        interface: Interface,
        root: &Path,
        path: &str,
        test_suite: &str,
        metadata: Metadata,
    ) -> Self {
        let cases = match interface {
            Interface::Plain | Interface::Tap | Interface::Kselftest => vec![TestCase {
                name: MAIN_CASE.to_string(),
                metadata: metadata.clone(),
            }],
            Interface::Atf | Interface::Bpf => Vec::new(),
        };
        Self {
            interface,
            path: path.to_string(),
            root: root.to_path_buf(),
            test_suite: test_suite.to_string(),
            metadata,
            cases,
            built: None,
            bpf: BpfOptions::default(),
        }
    }

    /// The program on the host.
    pub fn host_path(&self) -> PathBuf {
        self.root.join(&self.path)
    }

    /// What runs in the guest: the built artifact if lab built one, else the program.
    pub fn runnable(&self) -> PathBuf {
        self.built.clone().unwrap_or_else(|| self.host_path())
    }

    /// Whether the program must be listed (run with `-l` or opened) to find its cases.
    pub fn needs_listing(&self) -> bool {
        matches!(self.interface, Interface::Atf | Interface::Bpf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tap_have_main() {
        let root = Path::new("/suites/kyua");
        let mut md = Metadata::default();
        md.set("timeout", "5").expect("valid");
        let p = TestProgram::new(Interface::Tap, root, "sub/t.sh", "lab", md.clone());
        assert_eq!(p.cases.len(), 1);
        assert_eq!(p.cases[0].name, MAIN_CASE);
        assert_eq!(p.cases[0].metadata, md);
        assert!(!p.needs_listing());
        assert_eq!(p.host_path(), Path::new("/suites/kyua/sub/t.sh"));
        let a = TestProgram::new(Interface::Atf, root, "a", "lab", Metadata::default());
        assert!(a.cases.is_empty() && a.needs_listing());
    }
}
