//! The bpf interface: eBPF unit tests in Cilium's and Kmesh's protocol, run by the guest's
//! runner (`/init bpf list|run`), and the rules that turn a run into a result.
//!
//! # The runner
//! [`list_argv`] lists an object's tests (one name a line, [`parse_list`]); [`run_argv`] runs
//! one and prints one JSON object ([`parse_run`] → [`RunnerOutput`]), holding the hex of
//! `suite_result_map[0]`: the check program's verdict as a hand-encoded protobuf,
//!
//! ```text
//! SuiteResult { repeated TestResult results = 1; repeated Log suite_log = 2; }
//! TestResult  { string name = 1; Status status = 2; repeated Log test_log = 3; }
//! Log         { string fmt = 1; repeated fixed64 args = 2; }   // packed or not
//! Status      { ERROR = 0; PASS = 1; FAIL = 2; SKIP = 3; }
//! ```
//!
//! [`decode_suite_result`] reads it. The bytes come from the guest and are untrusted: the
//! decoder is bounded by its input ([`MAX_RESULT_BYTES`]), never panics, skips unknown fields,
//! accepts non-minimal varints (the headers reserve two bytes for lengths), strips the NUL
//! that Cilium's header leaves at the end of strings, and stops at the first zero tag byte
//! (trailing zeros end the buffer), after which only zeros may follow. [`render`] prints a Log
//! with its arguments (a printf subset, see there).
//!
//! # Verdict
//! As Cilium's and Kmesh's harnesses give it ([`result`]): a timeout, a signal or a non-zero exit
//! of the runner, or output that is not its JSON → broken; the runner's `error` (the object or
//! a program would not load: the verifier's log goes into the diagnostics) → broken; `skipped`
//! (the kernel cannot test-run the program type) → skipped. For a test that ran, **the check
//! program's return code is the verdict**: ERROR (0, or Cilium's current 100) → broken, FAIL
//! (2, 102) → failed, SKIP (3, 103) → skipped, PASS (1, 101) and any other value → passed,
//! exactly the harnesses' `switch`; before it, a pktgen or setup stage that returns current
//! Cilium's ERROR (100) or FAIL (102) ends the test so, as Cilium's harness does. The entries of `suite_result_map` are the test's named
//! sub-results (its `TEST()` blocks), reported as such; a failing one fails the test, an
//! ERROR one breaks it, as a failed or fatal Go subtest fails its parent; a skipped one skips
//! only itself. An empty map is normal (a check that only returns); an object without the map
//! or a buffer that does not decode is broken, saying which. Entries with the test's own name
//! or none (`lab/test.h`'s `test_finish()`) carry the check's log lines. The reason of a
//! failure or error is the first (failure) or last (error) log line of the check, else the
//! failing entry's. The stages, every log line and the verifier's log make the diagnostics.

use lab_model::{Cause, SubResult, TestResult};
use lab_proto::ExitStatus;
use serde::Deserialize;

use super::RunOutcome;

/// The guest runner: guest-init, run as a normal process.
pub const RUNNER: &str = "/init";
/// The most bytes of a result buffer decoded (the map's value is 8192 bytes).
pub const MAX_RESULT_BYTES: usize = 64 << 10;
/// The most bytes of runner output parsed.
pub const MAX_RUNNER_OUTPUT_BYTES: usize = 1 << 20;
/// The most tests one object may list.
pub const MAX_TESTS: usize = 10_000;
/// The most bytes of one listed test name.
pub const MAX_NAME_BYTES: usize = 4 << 10;
/// The widest field [`render`] pads to.
pub const MAX_WIDTH: usize = 256;
/// The most bytes of the verifier's log kept in diagnostics (its tail).
pub const MAX_VERIFIER_LOG_BYTES: usize = 8 << 10;

/// Something wrong with what the runner printed or the check program wrote.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// An empty line among the listed names.
    #[error("line {line}: empty test name")]
    EmptyName {
        /// Its line.
        line: usize,
    },
    /// A listed name with control characters.
    #[error("line {line}: test name has control characters")]
    BadName {
        /// Its line.
        line: usize,
    },
    /// A listed name longer than [`MAX_NAME_BYTES`].
    #[error("line {line}: test name longer than {MAX_NAME_BYTES} bytes")]
    LongName {
        /// Its line.
        line: usize,
    },
    /// A name listed twice.
    #[error("line {line}: duplicate test name '{name}'")]
    DuplicateName {
        /// Its second line.
        line: usize,
        /// The name.
        name: String,
    },
    /// More than [`MAX_TESTS`] names.
    #[error("more than {MAX_TESTS} tests")]
    TooManyTests,
    /// Runner output longer than [`MAX_RUNNER_OUTPUT_BYTES`].
    #[error("runner output of {len} bytes is longer than {MAX_RUNNER_OUTPUT_BYTES}")]
    OutputTooLong {
        /// Its length.
        len: usize,
    },
    /// No line of the runner's output is a JSON object.
    #[error("no json object in the runner's output")]
    NoJson,
    /// The output of a shared-object run is not what the runner prints.
    #[error("{0}")]
    Other(String),
    /// The runner's JSON line does not parse.
    #[error("invalid runner json")]
    Json(#[source] serde_json::Error),
    /// `result_map` is not hex.
    #[error("result_map is not hex at offset {offset}")]
    Hex {
        /// The first bad character, or the odd length.
        offset: usize,
    },
    /// A result buffer longer than [`MAX_RESULT_BYTES`].
    #[error("result buffer of {len} bytes is longer than {MAX_RESULT_BYTES}")]
    ResultTooLong {
        /// Its length.
        len: usize,
    },
    /// A field running past the end of its message.
    #[error("truncated field at offset {offset}")]
    Truncated {
        /// Where the field starts.
        offset: usize,
    },
    /// A varint longer than ten bytes or past 64 bits.
    #[error("bad varint at offset {offset}")]
    Varint {
        /// Where it starts.
        offset: usize,
    },
    /// Field number 0 inside a message, or one past 2^29.
    #[error("bad field number {field} at offset {offset}")]
    FieldNumber {
        /// The number.
        field: u64,
        /// Where its key starts.
        offset: usize,
    },
    /// A wire type that is invalid, a group, or not the one a known field has.
    #[error("field {field} has wire type {wire_type} at offset {offset}")]
    WireType {
        /// The field.
        field: u64,
        /// Its wire type.
        wire_type: u8,
        /// Where its key starts.
        offset: usize,
    },
    /// Packed fixed64 arguments whose length is not a multiple of 8.
    #[error("packed arguments of {len} bytes at offset {offset}")]
    PackedArgs {
        /// Where the field starts.
        offset: usize,
        /// Its length.
        len: usize,
    },
    /// Non-zero bytes after the zero that ends the buffer.
    #[error("non-zero byte after the end of the result at offset {offset}")]
    TrailingGarbage {
        /// The first one.
        offset: usize,
    },
}

/// The command that lists an object's tests.
pub fn list_argv(object: &str) -> Vec<String> {
    vec![
        RUNNER.to_string(),
        "bpf".to_string(),
        "list".to_string(),
        object.to_string(),
    ]
}

/// How the runner runs tests: the program's bpf options, with guest paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// One load for all the tests named (Cilium's harness), or one per test.
    pub object: bool,
    /// Globals, name and value.
    pub globals: Vec<(String, String)>,
    /// Slots to fill: map, slot, program.
    pub tail_calls: Vec<(String, u32, String)>,
    /// The maps setup program's guest path.
    pub maps_setup: Option<String>,
}

/// The command that runs tests `names` of an object (one, without `args.object`).
pub fn run_argv(object: &str, names: &[&str], args: &RunArgs) -> Vec<String> {
    let mut argv = vec![
        RUNNER.to_string(),
        "bpf".to_string(),
        "run".to_string(),
        object.to_string(),
    ];
    if args.object {
        argv.push("--object".into());
    }
    for (k, v) in &args.globals {
        argv.push("--global".into());
        argv.push(format!("{k}={v}"));
    }
    for (map, slot, program) in &args.tail_calls {
        argv.push("--tail-call".into());
        argv.push(format!("{map}:{slot}={program}"));
    }
    if let Some(p) = &args.maps_setup {
        argv.push("--maps-setup".into());
        argv.push(p.clone());
    }
    argv.extend(names.iter().map(|n| n.to_string()));
    argv
}

/// What `/init bpf list` printed: the test names, in order, and whether the object's tests
/// use Kmesh's `jump` stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The names.
    pub names: Vec<String>,
    /// Kmesh-style (`# stages: jump`).
    pub kmesh: bool,
}

/// The test names `/init bpf list` printed, in order, and its `# ` annotations. A final empty
/// line is allowed; other empty lines, control characters, overlong and duplicate names are
/// errors.
pub fn parse_list(stdout: &str) -> Result<Listing, BpfError> {
    let mut names: Vec<String> = Vec::new();
    let mut kmesh = false;
    let mut seen = std::collections::HashSet::new();
    for (index, raw) in stdout.lines().enumerate() {
        let line = index + 1;
        let name = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(note) = name.strip_prefix("# ") {
            kmesh |= note == "stages: jump";
            continue;
        }
        if name.is_empty() {
            return Err(BpfError::EmptyName { line });
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(BpfError::LongName { line });
        }
        if name.chars().any(char::is_control) {
            return Err(BpfError::BadName { line });
        }
        if names.len() == MAX_TESTS {
            return Err(BpfError::TooManyTests);
        }
        if !seen.insert(name) {
            return Err(BpfError::DuplicateName {
                line,
                name: name.to_string(),
            });
        }
        names.push(name.to_string());
    }
    Ok(Listing { names, kmesh })
}

/// What the runner did with a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerOutcome {
    /// The programs ran.
    Ran,
    /// The kernel cannot test-run the program type.
    Skipped,
    /// The object or a program would not load, or a run failed.
    Error,
}

/// A stage of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// Builds the packet.
    Pktgen,
    /// Runs the code under test (Kmesh: `jump`).
    #[serde(alias = "jump")]
    Setup,
    /// Checks and writes the verdict.
    Check,
    /// A stage this lab does not know.
    #[serde(other)]
    Other,
}

/// One program run of a test.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Stage {
    /// Which.
    pub stage: StageKind,
    /// Its ELF section.
    #[serde(default)]
    pub section: String,
    /// What the program returned.
    #[serde(default)]
    pub retval: u32,
    /// How long the run took, as the kernel measured it.
    #[serde(default)]
    pub duration_ns: u64,
}

/// The JSON object `/init bpf run` prints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerOutput {
    /// The test's name.
    pub test: String,
    /// What became of it.
    pub outcome: RunnerOutcome,
    /// Why it was skipped or is in error.
    #[serde(default)]
    pub reason: Option<String>,
    /// The tail of the verifier's log, when loading failed.
    #[serde(default)]
    pub verifier_log: Option<String>,
    /// The programs run, in order.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// `suite_result_map[0]` in hex; `None` when the object has no such map.
    #[serde(default)]
    pub result_map: Option<String>,
    /// The test's wall time in a shared-object run.
    #[serde(default)]
    pub wall_ns: Option<u64>,
}

impl RunnerOutput {
    /// The check program's return value, if it ran.
    pub fn check_retval(&self) -> Option<u32> {
        self.stages
            .iter()
            .rev()
            .find(|s| s.stage == StageKind::Check)
            .map(|s| s.retval)
    }

    /// The result buffer's bytes, if the object has the map.
    pub fn result_bytes(&self) -> Option<Result<Vec<u8>, BpfError>> {
        self.result_map.as_deref().map(unhex)
    }
}

/// The runner's JSON object: the last line of `stdout` that starts with `{`.
pub fn parse_run(stdout: &str) -> Result<RunnerOutput, BpfError> {
    if stdout.len() > MAX_RUNNER_OUTPUT_BYTES {
        return Err(BpfError::OutputTooLong { len: stdout.len() });
    }
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .ok_or(BpfError::NoJson)?;
    serde_json::from_str(line).map_err(BpfError::Json)
}

/// Hex (either case) to bytes, at most [`MAX_RESULT_BYTES`] of them.
fn unhex(text: &str) -> Result<Vec<u8>, BpfError> {
    let text = text.trim().as_bytes();
    if text.len() / 2 > MAX_RESULT_BYTES {
        return Err(BpfError::ResultTooLong {
            len: text.len() / 2,
        });
    }
    if !text.len().is_multiple_of(2) {
        return Err(BpfError::Hex { offset: text.len() });
    }
    let nibble = |i: usize| -> Result<u8, BpfError> {
        let c = text.get(i).copied().unwrap_or(b'?');
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(BpfError::Hex { offset: i }),
        }
    };
    (0..text.len() / 2)
        .map(|i| Ok(nibble(2 * i)? << 4 | nibble(2 * i + 1)?))
        .collect()
}

/// A test's status as the check program wrote or returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 0: the test framework failed.
    Error,
    /// 1.
    Pass,
    /// 2.
    Fail,
    /// 3.
    Skip,
    /// Anything else.
    Unknown(u64),
}

impl Status {
    /// The status of a protobuf or return value: Kmesh's and Cilium's older codes (0 error, 1
    /// pass, 2 fail, 3 skip) and Cilium's current ones (100 to 103 in that order).
    pub fn from_value(value: u64) -> Self {
        match value {
            0 | 100 => Self::Error,
            1 | 101 => Self::Pass,
            2 | 102 => Self::Fail,
            3 | 103 => Self::Skip,
            other => Self::Unknown(other),
        }
    }

    fn name(self) -> String {
        match self {
            Self::Error => "ERROR".to_string(),
            Self::Pass => "PASS".to_string(),
            Self::Fail => "FAIL".to_string(),
            Self::Skip => "SKIP".to_string(),
            Self::Unknown(v) => format!("status {v}"),
        }
    }
}

/// A log line: a printf-style format and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Log {
    /// The format (invalid UTF-8 replaced, trailing NULs dropped).
    pub fmt: String,
    /// The arguments.
    pub args: Vec<u64>,
}

/// One `TestResult` entry of the buffer: a `TEST()` block, or the check's own verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestEntry {
    /// Its name; empty for the check's own verdict.
    pub name: String,
    /// Its status (ERROR when the entry has none, as protobuf's default).
    pub status: Status,
    /// Its log.
    pub logs: Vec<Log>,
}

/// The decoded buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SuiteResult {
    /// The entries, in order.
    pub results: Vec<TestEntry>,
    /// The lines logged outside any `TEST()` block.
    pub suite_log: Vec<Log>,
}

impl SuiteResult {
    /// Whether the check wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty() && self.suite_log.is_empty()
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// A bounded protobuf reader over one message; offsets are reported from the buffer's start.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, BpfError> {
        let offset = self.offset();
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(BpfError::Truncated { offset });
            };
            self.pos += 1;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                return Err(BpfError::Varint { offset });
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BpfError::Varint { offset })
    }

    /// A field's key: (field number, wire type, where the key starts).
    fn key(&mut self) -> Result<(u64, u8, usize), BpfError> {
        let offset = self.offset();
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field >= 1 << 29 {
            return Err(BpfError::FieldNumber { field, offset });
        }
        Ok((field, (key & 7) as u8, offset))
    }

    fn take(&mut self, len: usize, offset: usize) -> Result<&'a [u8], BpfError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(BpfError::Truncated { offset })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A length-delimited field's bytes and where they start.
    fn delimited(&mut self, offset: usize) -> Result<(&'a [u8], usize), BpfError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| BpfError::Truncated { offset })?;
        let start = self.offset();
        Ok((self.take(len, offset)?, start))
    }

    fn fixed64(&mut self, offset: usize) -> Result<u64, BpfError> {
        let bytes = self.take(8, offset)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(le))
    }

    /// Skips a field of an unknown number.
    fn skip(&mut self, field: u64, wire_type: u8, offset: usize) -> Result<(), BpfError> {
        match wire_type {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8, offset).map(drop),
            WIRE_LEN => self.delimited(offset).map(drop),
            WIRE_FIXED32 => self.take(4, offset).map(drop),
            _ => Err(BpfError::WireType {
                field,
                wire_type,
                offset,
            }),
        }
    }
}

fn wrong_wire(field: u64, wire_type: u8, offset: usize) -> BpfError {
    BpfError::WireType {
        field,
        wire_type,
        offset,
    }
}

/// A string field: lossy UTF-8, Cilium's trailing NUL dropped.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\0')
        .to_string()
}

fn decode_log(bytes: &[u8], base: usize) -> Result<Log, BpfError> {
    let mut r = Reader::new(bytes, base);
    let mut log = Log::default();
    while !r.at_end() {
        let (field, wire_type, offset) = r.key()?;
        match (field, wire_type) {
            (1, WIRE_LEN) => log.fmt = text(r.delimited(offset)?.0),
            (2, WIRE_FIXED64) => log.args.push(r.fixed64(offset)?),
            (2, WIRE_LEN) => {
                let (packed, start) = r.delimited(offset)?;
                if packed.len() % 8 != 0 {
                    return Err(BpfError::PackedArgs {
                        offset,
                        len: packed.len(),
                    });
                }
                let mut p = Reader::new(packed, start);
                while !p.at_end() {
                    log.args.push(p.fixed64(start)?);
                }
            }
            (1 | 2, _) => return Err(wrong_wire(field, wire_type, offset)),
            _ => r.skip(field, wire_type, offset)?,
        }
    }
    Ok(log)
}

fn decode_entry(bytes: &[u8], base: usize) -> Result<TestEntry, BpfError> {
    let mut r = Reader::new(bytes, base);
    let mut entry = TestEntry {
        name: String::new(),
        status: Status::Error,
        logs: Vec::new(),
    };
    while !r.at_end() {
        let (field, wire_type, offset) = r.key()?;
        match (field, wire_type) {
            (1, WIRE_LEN) => entry.name = text(r.delimited(offset)?.0),
            (2, WIRE_VARINT) => entry.status = Status::from_value(r.varint()?),
            (3, WIRE_LEN) => {
                let (bytes, start) = r.delimited(offset)?;
                entry.logs.push(decode_log(bytes, start)?);
            }
            (1..=3, _) => return Err(wrong_wire(field, wire_type, offset)),
            _ => r.skip(field, wire_type, offset)?,
        }
    }
    Ok(entry)
}

/// Decodes `suite_result_map[0]`. The first zero byte where a field would start ends it; only
/// zeros may follow. An all-zero buffer decodes to an empty [`SuiteResult`].
pub fn decode_suite_result(bytes: &[u8]) -> Result<SuiteResult, BpfError> {
    if bytes.len() > MAX_RESULT_BYTES {
        return Err(BpfError::ResultTooLong { len: bytes.len() });
    }
    let mut r = Reader::new(bytes, 0);
    let mut suite = SuiteResult::default();
    while let Some(&first) = bytes.get(r.pos) {
        if first == 0 {
            if let Some(i) = bytes[r.pos..].iter().position(|&b| b != 0) {
                return Err(BpfError::TrailingGarbage { offset: r.pos + i });
            }
            break;
        }
        let (field, wire_type, offset) = r.key()?;
        match (field, wire_type) {
            (1, WIRE_LEN) => {
                let (bytes, start) = r.delimited(offset)?;
                suite.results.push(decode_entry(bytes, start)?);
            }
            (2, WIRE_LEN) => {
                let (bytes, start) = r.delimited(offset)?;
                suite.suite_log.push(decode_log(bytes, start)?);
            }
            (1 | 2, _) => return Err(wrong_wire(field, wire_type, offset)),
            _ => r.skip(field, wire_type, offset)?,
        }
    }
    Ok(suite)
}

/// Renders a log line: its format with its arguments, printf-style. Conversions `%d %i %u %x
/// %X %o %c %p %%`, with the length modifiers `hh` (8 bits), `h` (16), none (32), `l`, `ll`
/// and `z` (64, as in BPF C), a width (at most [`MAX_WIDTH`]) and the flags `-` (left-align)
/// and `0` (zero-pad). `%s` prints `<str>` (the argument is an address in the guest). A
/// conversion that is not one of these, or has no argument left, is printed as written, so an
/// `assert()`ed expression with `%` in it reads as in the source.
pub fn render(log: &Log) -> String {
    let fmt = log.fmt.as_str();
    let bytes = fmt.as_bytes();
    let mut out = String::with_capacity(fmt.len());
    let mut args = log.args.iter();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(bytes.len(), |p| i + p);
            out.push_str(&fmt[i..next]);
            i = next;
            continue;
        }
        let start = i;
        i += 1;
        if bytes.get(i) == Some(&b'%') {
            out.push('%');
            i += 1;
            continue;
        }
        let (mut left, mut zero) = (false, false);
        while let Some(&flag) = bytes.get(i) {
            match flag {
                b'-' => left = true,
                b'0' => zero = true,
                _ => break,
            }
            i += 1;
        }
        let mut width: usize = 0;
        while let Some(&d) = bytes.get(i).filter(|d| d.is_ascii_digit()) {
            width = width
                .saturating_mul(10)
                .saturating_add(usize::from(d - b'0'));
            i += 1;
        }
        let width = width.min(MAX_WIDTH);
        let bits = if bytes[i..].starts_with(b"hh") {
            i += 2;
            8
        } else if bytes[i..].starts_with(b"ll") {
            i += 2;
            64
        } else {
            match bytes.get(i) {
                Some(b'h') => {
                    i += 1;
                    16
                }
                Some(b'l' | b'z') => {
                    i += 1;
                    64
                }
                _ => 32,
            }
        };
        let conversion = bytes.get(i).copied();
        let known = matches!(
            conversion,
            Some(b'd' | b'i' | b'u' | b'x' | b'X' | b'o' | b'c' | b'p' | b's')
        );
        if !known {
            // Everything from `start` to `i` is ASCII: slicing there is safe.
            out.push_str(&fmt[start..i]);
            continue;
        }
        i += 1;
        let Some(&arg) = args.next() else {
            out.push_str(&fmt[start..i]);
            continue;
        };
        let truncated = if bits == 64 {
            arg
        } else {
            arg & ((1u64 << bits) - 1)
        };
        let (sign, digits) = match conversion {
            Some(b'd' | b'i') => {
                let shift = 64 - bits;
                let signed = ((truncated << shift) as i64) >> shift;
                (
                    if signed < 0 { "-" } else { "" },
                    signed.unsigned_abs().to_string(),
                )
            }
            Some(b'u') => ("", truncated.to_string()),
            Some(b'x') => ("", format!("{truncated:x}")),
            Some(b'X') => ("", format!("{truncated:X}")),
            Some(b'o') => ("", format!("{truncated:o}")),
            Some(b'p') => ("", format!("0x{arg:x}")),
            Some(b'c') => {
                let byte = (arg & 0xff) as u8;
                let shown = if byte.is_ascii_graphic() || byte == b' ' {
                    char::from(byte).to_string()
                } else {
                    format!("\\x{byte:02x}")
                };
                ("", shown)
            }
            _ => ("", "<str>".to_string()),
        };
        let numeric = !matches!(conversion, Some(b'c' | b's' | b'p'));
        let len = sign.len() + digits.len();
        let pad = width.saturating_sub(len);
        if left {
            out.push_str(sign);
            out.push_str(&digits);
            out.extend(std::iter::repeat_n(' ', pad));
        } else if zero && numeric {
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', pad));
            out.push_str(&digits);
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(sign);
            out.push_str(&digits);
        }
    }
    out
}

/// The last `max` bytes of `text`, from a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The verifier's words for why it refused: the last line of its log that is not a statistic.
fn verifier_reason(log: &str) -> Option<&str> {
    log.lines().rev().map(str::trim).find(|l| {
        !l.is_empty()
            && !l.starts_with("processed ")
            && !l.starts_with("verification time")
            && !l.starts_with("stack depth")
            && !l.starts_with("-- END PROG LOAD LOG --")
    })
}

/// The diagnostics: stages, every log line, and the verifier's log.
fn describe(run: &RunnerOutput, suite: Option<&SuiteResult>) -> String {
    let mut out = String::new();
    for stage in &run.stages {
        out.push_str(&format!(
            "stage {:?} ({}): returned {}, {} ns\n",
            stage.stage, stage.section, stage.retval, stage.duration_ns
        ));
    }
    if let Some(suite) = suite {
        for log in &suite.suite_log {
            out.push_str(&render(log));
            out.push('\n');
        }
        for entry in &suite.results {
            let name = if entry.name.is_empty() {
                "(check)"
            } else {
                entry.name.as_str()
            };
            out.push_str(&format!("[{}] {name}\n", entry.status.name()));
            for log in &entry.logs {
                out.push_str("    ");
                out.push_str(&render(log));
                out.push('\n');
            }
        }
    }
    if let Some(log) = run.verifier_log.as_deref().filter(|l| !l.is_empty()) {
        out.push_str("verifier log (tail):\n");
        out.push_str(tail(log, MAX_VERIFIER_LOG_BYTES));
        if !log.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn broken_protocol(reason: impl Into<String>) -> TestResult {
    TestResult::broken(reason).with_cause(Cause::Protocol)
}

/// The verdict of test `name` from its check's return code and its decoded buffer, by the
/// rules in the module's documentation, with the `TEST()` entries as sub-results.
fn verdict(
    suite: &SuiteResult,
    name: &str,
    check_retval: Option<u32>,
) -> (TestResult, Vec<SubResult>) {
    let is_own = |e: &&TestEntry| e.name.is_empty() || e.name == name;
    let own_logs: Vec<&Log> = suite
        .results
        .iter()
        .filter(is_own)
        .flat_map(|e| e.logs.iter())
        .chain(suite.suite_log.iter())
        .collect();
    let parts: Vec<&TestEntry> = suite.results.iter().filter(|e| !is_own(e)).collect();
    let subresults: Vec<SubResult> = parts.iter().map(|e| sub_result(e)).collect();
    let first = |logs: &[&Log]| logs.first().map(|l| render(l));
    let last = |logs: &[&Log]| logs.last().map(|l| render(l));
    let Some(retval) = check_retval else {
        return (broken_protocol("the check program did not run"), subresults);
    };
    let status = Status::from_value(retval.into());
    let part = |want: fn(Status) -> bool| parts.iter().find(|e| want(e.status));
    // A failed or fatal Go subtest fails its parent, whatever the parent does next.
    let failed_part = || {
        if let Some(e) = part(|s| s == Status::Error) {
            Some(TestResult::broken(part_reason(e, "reported an error")))
        } else {
            part(|s| s == Status::Fail).map(|e| TestResult::failed(part_reason(e, "failed")))
        }
    };
    let result = match status {
        Status::Error => TestResult::broken(
            last(&own_logs).unwrap_or_else(|| format!("check returned ERROR ({retval})")),
        ),
        Status::Fail => TestResult::failed(
            match (failure_line(&own_logs), part(|s| s == Status::Fail)) {
                (Some(line), _) => line,
                (None, Some(e)) => part_reason(e, "failed"),
                (None, None) => format!("check returned FAIL ({retval})"),
            },
        ),
        Status::Skip => failed_part().unwrap_or_else(|| {
            TestResult::skipped(
                first(&own_logs).unwrap_or_else(|| format!("check returned SKIP ({retval})")),
            )
        }),
        // PASS, and any other value: the harnesses' `default:` branch.
        Status::Pass | Status::Unknown(_) => failed_part().unwrap_or_else(TestResult::passed),
    };
    (result, subresults)
}

/// The line that says why a check failed: its `assert failed…` line (lab's and Cilium's
/// `assert()` both log one), else its first line.
fn failure_line(logs: &[&Log]) -> Option<String> {
    let rendered: Vec<String> = logs.iter().map(|l| render(l)).collect();
    rendered
        .iter()
        .find(|l| l.starts_with("assert failed"))
        .or(rendered.first())
        .cloned()
}

/// Current Cilium's rule for the stages before the check: a pktgen or setup program that
/// returns ERROR (100) or FAIL (102) ends the test so. Only those codes count: the older 0..3
/// are ordinary TC and XDP verdicts there (`TC_ACT_SHOT` is 2).
fn stage_failure(stages: &[Stage]) -> Option<TestResult> {
    stages
        .iter()
        .filter(|s| matches!(s.stage, StageKind::Pktgen | StageKind::Setup))
        .find_map(|s| {
            let what = format!("{:?}", s.stage).to_lowercase();
            match s.retval {
                100 => Some(TestResult::broken(format!("{what} returned ERROR (100)"))),
                102 => Some(TestResult::failed(format!("{what} returned FAIL (102)"))),
                _ => None,
            }
        })
}

/// `NAME: first log line` (or `NAME failed`) for a sub-result that decides the test.
fn part_reason(e: &TestEntry, what: &str) -> String {
    match e.logs.first() {
        Some(l) => format!("{}: {}", e.name, render(l)),
        None => format!("{} {what}", e.name),
    }
}

/// A `TEST()` entry as a sub-result.
fn sub_result(e: &TestEntry) -> SubResult {
    let logs: Vec<String> = e.logs.iter().map(render).collect();
    let first = logs.first().cloned();
    let result = match e.status {
        Status::Pass | Status::Unknown(_) => TestResult::passed(),
        Status::Fail => TestResult::failed(first.unwrap_or_else(|| "failed".into())),
        Status::Skip => TestResult::skipped(first.unwrap_or_else(|| "skipped".into())),
        Status::Error => TestResult::broken(first.unwrap_or_else(|| "error".into())),
    };
    SubResult {
        name: e.name.clone(),
        result,
        diagnostics: logs.join("\n"),
    }
}

/// The result of test `name` from the runner's output (parsed by [`parse_run`]) and how the
/// runner's process ended, with the `TEST()` sub-results and the diagnostics (stages,
/// rendered logs, verifier log).
pub fn result(
    run: &Result<RunnerOutput, BpfError>,
    outcome: &RunOutcome,
    name: &str,
) -> (TestResult, Vec<SubResult>, String) {
    let diagnostics = |suite: Option<&SuiteResult>| match run {
        Ok(run) => describe(run, suite),
        Err(e) => format!("{e}\n"),
    };
    let verdict = match outcome.finished() {
        None => TestResult::broken("Test case timed out").with_cause(Cause::Timeout),
        Some(ExitStatus::Signal(sig)) => {
            broken_protocol(format!("bpf runner received signal {sig}"))
        }
        Some(ExitStatus::Code(code)) if code != 0 => {
            broken_protocol(format!("bpf runner exited with status {code}"))
        }
        Some(ExitStatus::Code(_)) => match run {
            Err(e) => broken_protocol(format!("invalid bpf runner output: {e}")),
            Ok(out) if out.test != name => broken_protocol(format!(
                "bpf runner reported test '{}', not '{name}'",
                out.test
            )),
            Ok(out) => return ran(out, name),
        },
    };
    (verdict, Vec::new(), diagnostics(None))
}

/// [`result`] for a runner that answered about `name`.
pub fn ran(out: &RunnerOutput, name: &str) -> (TestResult, Vec<SubResult>, String) {
    let reason = out.reason.as_deref().filter(|r| !r.is_empty());
    let verdict = match out.outcome {
        RunnerOutcome::Error => {
            let mut why = reason
                .unwrap_or("bpf runner could not run the test")
                .to_string();
            if let Some(line) = out.verifier_log.as_deref().and_then(verifier_reason) {
                if !why.contains(line) {
                    why = format!("{why} (verifier: {line})");
                }
            }
            TestResult::broken(why).with_cause(Cause::Exec)
        }
        RunnerOutcome::Skipped => {
            TestResult::skipped(reason.unwrap_or("bpf runner skipped the test"))
                .with_cause(Cause::Requirement)
        }
        RunnerOutcome::Ran => match out.result_bytes() {
            None => broken_protocol(
                "the object has no suite_result_map, the map the check's results are read from",
            ),
            Some(Err(e)) => broken_protocol(format!("invalid suite_result_map: {e}")),
            Some(Ok(bytes)) => match decode_suite_result(&bytes) {
                Err(e) => broken_protocol(format!("invalid suite_result_map: {e}")),
                Ok(suite) => {
                    let (verdict, subs) = match stage_failure(&out.stages) {
                        Some(failed) => (
                            failed,
                            suite
                                .results
                                .iter()
                                .filter(|e| !e.name.is_empty() && e.name != name)
                                .map(sub_result)
                                .collect(),
                        ),
                        None => verdict(&suite, name, out.check_retval()),
                    };
                    return (verdict, subs, describe(out, Some(&suite)));
                }
            },
        },
    };
    (verdict, Vec::new(), describe(out, None))
}

/// Every runner output of a shared-object run (`/init bpf run --object`), one JSON object a
/// line, by test name; at most [`MAX_TESTS`].
pub fn parse_runs(
    stdout: &str,
) -> Result<std::collections::HashMap<String, RunnerOutput>, BpfError> {
    if stdout.len() > MAX_RUNNER_OUTPUT_BYTES.saturating_mul(64) {
        return Err(BpfError::OutputTooLong { len: stdout.len() });
    }
    let mut out = std::collections::HashMap::new();
    for line in stdout.lines().map(str::trim).filter(|l| l.starts_with('{')) {
        if out.len() == MAX_TESTS {
            return Err(BpfError::TooManyTests);
        }
        let run: RunnerOutput = serde_json::from_str(line).map_err(BpfError::Json)?;
        out.insert(run.test.clone(), run);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use lab_model::ResultType;
    use proptest::prelude::*;

    use super::*;

    // ---- Hand-built protobuf. ----

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn delimited(field: u64, body: &[u8]) -> Vec<u8> {
        let mut out = varint(field << 3 | 2);
        out.extend(varint(body.len() as u64));
        out.extend_from_slice(body);
        out
    }

    fn log_msg(fmt: &str, args: &[u64], packed: bool) -> Vec<u8> {
        let mut out = delimited(1, fmt.as_bytes());
        if packed && !args.is_empty() {
            let bytes: Vec<u8> = args.iter().flat_map(|a| a.to_le_bytes()).collect();
            out.extend(delimited(2, &bytes));
        } else {
            for a in args {
                out.push(2 << 3 | 1);
                out.extend(a.to_le_bytes());
            }
        }
        out
    }

    fn entry(name: &str, status: Option<u64>, logs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = delimited(1, name.as_bytes());
        if let Some(status) = status {
            out.push(2 << 3);
            out.extend(varint(status));
        }
        for log in logs {
            out.extend(delimited(3, log));
        }
        out
    }

    fn suite(entries: &[Vec<u8>], suite_logs: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            out.extend(delimited(1, e));
        }
        for l in suite_logs {
            out.extend(delimited(2, l));
        }
        out
    }

    fn log(fmt: &str, args: &[u64]) -> Log {
        Log {
            fmt: fmt.to_string(),
            args: args.to_vec(),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn decodes_hand_built_buffers() {
        let full = {
            let mut b = suite(
                &[entry(
                    "t1",
                    Some(2),
                    &[log_msg("x=%d", &[7], true), log_msg("y", &[], true)],
                )],
                &[log_msg("s %u %u", &[1, 2], false)],
            );
            b.resize(8192, 0);
            b
        };
        // Cilium's header: NUL-terminated strings, a two-byte length, unpacked arguments.
        let cilium = [
            0x0a, 0x8d, 0x00, // results, length 13 as a non-minimal varint
            0x0a, 0x03, b'a', b'b', 0x00, // name "ab\0"
            0x10, 0x01, // PASS
            0x1a, 0x04, 0x0a, 0x02, b'z', 0x00, // log "z\0"
        ];
        let unknown = {
            let mut e = entry("u", Some(3), &[]);
            e.extend([9 << 3, 0x96, 0x01]); // varint field 9
            e.extend([10 << 3 | 5, 1, 2, 3, 4]); // fixed32 field 10
            e.extend(delimited(11, b"zz"));
            let mut l = log_msg("f", &[5], false);
            l.extend([12 << 3 | 1, 0, 0, 0, 0, 0, 0, 0, 0]);
            let mut b = suite(&[e], &[l]);
            b.extend([13 << 3, 1]);
            b
        };
        let table: Vec<(&str, Vec<u8>, SuiteResult)> = vec![
            ("empty", vec![], SuiteResult::default()),
            ("zeros", vec![0; 8192], SuiteResult::default()),
            (
                "full",
                full,
                SuiteResult {
                    results: vec![TestEntry {
                        name: "t1".into(),
                        status: Status::Fail,
                        logs: vec![log("x=%d", &[7]), log("y", &[])],
                    }],
                    suite_log: vec![log("s %u %u", &[1, 2])],
                },
            ),
            (
                "cilium",
                cilium.to_vec(),
                SuiteResult {
                    results: vec![TestEntry {
                        name: "ab".into(),
                        status: Status::Pass,
                        logs: vec![log("z", &[])],
                    }],
                    suite_log: vec![],
                },
            ),
            (
                "unknown fields",
                unknown,
                SuiteResult {
                    results: vec![TestEntry {
                        name: "u".into(),
                        status: Status::Skip,
                        logs: vec![],
                    }],
                    suite_log: vec![log("f", &[5])],
                },
            ),
            (
                "no status, odd status, bad utf-8",
                suite(
                    &[entry("a", None, &[]), {
                        let mut e = delimited(1, b"b\xff");
                        e.extend([0x10, 7]);
                        e
                    }],
                    &[],
                ),
                SuiteResult {
                    results: vec![
                        TestEntry {
                            name: "a".into(),
                            status: Status::Error,
                            logs: vec![],
                        },
                        TestEntry {
                            name: "b\u{fffd}".into(),
                            status: Status::Unknown(7),
                            logs: vec![],
                        },
                    ],
                    suite_log: vec![],
                },
            ),
        ];
        for (what, bytes, want) in table {
            let got = decode_suite_result(&bytes)
                .unwrap_or_else(|e| panic!("{what}: {e} in {}", hex(&bytes)));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn refuses_broken_buffers() {
        let with_garbage = {
            let mut b = suite(&[entry("a", Some(1), &[])], &[]);
            b.extend([0, 0, 0, 5, 0]);
            b
        };
        let field_zero = suite(&[vec![0x00, 0x01]], &[]);
        let table: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "length past the end",
                vec![0x0a, 0x05, 0x0a, 0x00],
                "Truncated { offset: 0 }",
            ),
            ("varint cut", vec![0x0a, 0x80], "Truncated { offset: 1 }"),
            ("key cut", vec![0x88], "Truncated { offset: 0 }"),
            (
                "varint too long",
                vec![
                    0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                "Varint { offset: 1 }",
            ),
            (
                "varint past 64 bits",
                vec![
                    0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                ],
                "Varint { offset: 1 }",
            ),
            (
                "group",
                vec![3 << 3 | 3],
                "WireType { field: 3, wire_type: 3, offset: 0 }",
            ),
            (
                "wire type 7",
                vec![3 << 3 | 7],
                "WireType { field: 3, wire_type: 7, offset: 0 }",
            ),
            (
                "results as varint",
                vec![0x08, 0x01],
                "WireType { field: 1, wire_type: 0, offset: 0 }",
            ),
            (
                "status as bytes",
                suite(&[delimited(2, b"x")], &[]),
                "WireType { field: 2, wire_type: 2, offset: 2 }",
            ),
            (
                "fmt as fixed64",
                suite(&[], &[vec![0x09, 0, 0, 0, 0, 0, 0, 0, 0]]),
                "WireType { field: 1, wire_type: 1, offset: 2 }",
            ),
            (
                "packed args of 7 bytes",
                suite(&[], &[delimited(2, &[0; 7])]),
                "PackedArgs { offset: 2, len: 7 }",
            ),
            (
                "fixed64 cut",
                suite(&[], &[vec![0x11, 1, 2, 3]]),
                "Truncated { offset: 2 }",
            ),
            (
                "garbage after the end",
                with_garbage,
                "TrailingGarbage { offset: 10 }",
            ),
            (
                "field 0 in a message",
                field_zero,
                "FieldNumber { field: 0, offset: 2 }",
            ),
            (
                "too long",
                vec![0; MAX_RESULT_BYTES + 1],
                "ResultTooLong { len: 65537 }",
            ),
        ];
        for (what, bytes, want) in table {
            match decode_suite_result(&bytes) {
                Ok(got) => panic!("{what}: decoded {got:?}"),
                Err(e) => assert_eq!(format!("{e:?}"), want, "{what}"),
            }
        }
    }

    #[test]
    fn renders_the_printf_subset() {
        let minus = |v: i64| v as u64;
        let table: &[(&str, &[u64], &str)] = &[
            ("x=%d", &[5], "x=5"),
            ("%d", &[u64::MAX], "-1"),
            ("%i", &[0xffff_ffff], "-1"),
            ("%u", &[0xffff_ffff], "4294967295"),
            ("%u", &[0x1_0000_0001], "1"),
            ("%lld", &[u64::MAX], "-1"),
            ("%ld", &[minus(-5)], "-5"),
            ("%llu", &[u64::MAX], "18446744073709551615"),
            ("%lu", &[1 << 40], "1099511627776"),
            ("%zu", &[1 << 40], "1099511627776"),
            ("%x", &[255], "ff"),
            ("%X", &[255], "FF"),
            ("%lx", &[0xdead_beef_cafe], "deadbeefcafe"),
            ("%llx", &[u64::MAX], "ffffffffffffffff"),
            ("%08x", &[0xbeef], "0000beef"),
            ("%-5d|", &[42], "42   |"),
            ("%5d|", &[minus(-42)], "  -42|"),
            ("%05d", &[minus(-42)], "-0042"),
            ("%-05d|", &[7], "7    |"),
            ("%hhu", &[0x1ff], "255"),
            ("%hhd", &[0x80], "-128"),
            ("%hd", &[0xffff], "-1"),
            ("%hu", &[0x1ffff], "65535"),
            ("%o", &[8], "10"),
            ("%c%c", &[65, 0x142], "AB"),
            ("%c", &[10], "\\x0a"),
            ("%3c|", &[b'z'.into()], "  z|"),
            ("%p", &[0x1000], "0x1000"),
            ("%s", &[1], "<str>"),
            ("100%%", &[], "100%"),
            ("%d and %d", &[1], "1 and %d"),
            ("x % 2 == 1", &[], "x % 2 == 1"),
            ("a%q", &[1], "a%q"),
            ("%", &[], "%"),
            ("%l", &[1], "%l"),
            ("%-", &[1], "%-"),
            ("é%dü", &[3], "é3ü"),
            ("%d", &[1, 2], "1"),
            ("%5%", &[], "%5%"),
        ];
        for (fmt, args, want) in table {
            assert_eq!(render(&log(fmt, args)), *want, "{fmt} {args:?}");
        }
        let wide = render(&log("%999999999999999999999d", &[1]));
        assert_eq!(wide.len(), MAX_WIDTH);
        assert!(wide.ends_with(" 1"));
    }

    #[test]
    fn lists_names() {
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        let table: Vec<(String, Result<Vec<&str>, &str>)> = vec![
            ("a\nb/c\n".into(), Ok(vec!["a", "b/c"])),
            ("".into(), Ok(vec![])),
            ("only".into(), Ok(vec!["only"])),
            ("a\r\nb\r\n".into(), Ok(vec!["a", "b"])),
            ("a\n\nb\n".into(), Err("EmptyName { line: 2 }")),
            (
                "a\nb\na\n".into(),
                Err("DuplicateName { line: 3, name: \"a\" }"),
            ),
            ("a\x01\n".into(), Err("BadName { line: 1 }")),
            (format!("{long}\n"), Err("LongName { line: 1 }")),
        ];
        for (stdout, want) in table {
            let got = parse_list(&stdout)
                .map(|l| l.names)
                .map_err(|e| format!("{e:?}"));
            let want = want
                .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(str::to_string);
            assert_eq!(got, want, "{stdout:?}");
        }
        let many = "t\n".repeat(2);
        assert!(parse_list(&many).is_err());
        let too_many: String = (0..=MAX_TESTS).map(|i| format!("t{i}\n")).collect();
        assert!(matches!(parse_list(&too_many), Err(BpfError::TooManyTests)));
        assert_eq!(list_argv("/t/x.o"), ["/init", "bpf", "list", "/t/x.o"]);
        assert_eq!(
            run_argv("/t/x.o", &["a b"], &RunArgs::default()),
            ["/init", "bpf", "run", "/t/x.o", "a b"]
        );
        let args = RunArgs {
            object: true,
            globals: vec![("bpf_log_level".into(), "3".into())],
            tail_calls: vec![("km_xdp_tailcall".into(), 1, "policy_check".into())],
            maps_setup: Some("/t/setup".into()),
        };
        assert_eq!(
            run_argv("/t/x.o", &["a", "b"], &args),
            [
                "/init",
                "bpf",
                "run",
                "/t/x.o",
                "--object",
                "--global",
                "bpf_log_level=3",
                "--tail-call",
                "km_xdp_tailcall:1=policy_check",
                "--maps-setup",
                "/t/setup",
                "a",
                "b"
            ]
        );
        let kmesh = parse_list("# stages: jump\na\n").expect("parses");
        assert_eq!((kmesh.names, kmesh.kmesh), (vec!["a".to_string()], true));
        let cilium = parse_list("# other note\na\n").expect("parses");
        assert!(!cilium.kmesh);
    }

    #[test]
    fn parses_runner_json() {
        let full = r#"{"test":"t","outcome":"ran","reason":"","verifier_log":"",
            "stages":[{"stage":"pktgen","section":"tc/test/t/pktgen","retval":0,"duration_ns":5},
                      {"stage":"jump","section":"tc/test/t/jump","retval":2,"duration_ns":6},
                      {"stage":"check","section":"tc/test/t/check","retval":1,"duration_ns":7},
                      {"stage":"later","retval":9}],
            "result_map":"0AfF00","extra":1}"#
            .replace('\n', " ");
        let out = parse_run(&format!("libbpf: noise\n{full}\n\n")).expect("parses");
        assert_eq!(out.test, "t");
        assert_eq!(out.outcome, RunnerOutcome::Ran);
        let kinds: Vec<StageKind> = out.stages.iter().map(|s| s.stage).collect();
        assert_eq!(
            kinds,
            [
                StageKind::Pktgen,
                StageKind::Setup,
                StageKind::Check,
                StageKind::Other
            ]
        );
        assert_eq!(out.check_retval(), Some(1));
        assert_eq!(
            out.result_bytes().map(|r| r.expect("hex")),
            Some(vec![0x0a, 0xff, 0x00])
        );

        let minimal =
            parse_run(r#"{"test":"t","outcome":"skipped","result_map":null}"#).expect("parses");
        assert_eq!(minimal.outcome, RunnerOutcome::Skipped);
        assert!(minimal.result_bytes().is_none());
        assert_eq!(minimal.check_retval(), None);

        let errors: &[(&str, &str)] = &[
            ("", "NoJson"),
            ("not json\n", "NoJson"),
            ("{\"test\":\"t\"}", "Json"),
            ("{\"test\":\"t\",\"outcome\":\"exploded\"}", "Json"),
            ("{\"test\":", "Json"),
        ];
        for (stdout, want) in errors {
            let got = format!("{:?}", parse_run(stdout).expect_err(stdout));
            assert!(got.starts_with(want), "{stdout}: {got}");
        }
        let huge = " ".repeat(MAX_RUNNER_OUTPUT_BYTES + 1);
        assert!(matches!(
            parse_run(&huge),
            Err(BpfError::OutputTooLong { .. })
        ));

        for (text, want) in [
            ("0", "Hex { offset: 1 }"),
            ("zz", "Hex { offset: 0 }"),
            ("0g", "Hex { offset: 1 }"),
        ] {
            assert_eq!(format!("{:?}", unhex(text).expect_err(text)), want);
        }
        assert_eq!(unhex(" 00ff\n").expect("hex"), [0, 255]);
    }

    fn stage(kind: StageKind, retval: u32) -> Stage {
        Stage {
            stage: kind,
            section: format!("tc/test/t/{kind:?}").to_lowercase(),
            retval,
            duration_ns: 10,
        }
    }

    fn ran_with(bytes: &[u8], retval: Option<u32>) -> RunnerOutput {
        let mut stages = vec![stage(StageKind::Pktgen, 0)];
        stages.extend(retval.map(|r| stage(StageKind::Check, r)));
        RunnerOutput {
            test: "t".into(),
            outcome: RunnerOutcome::Ran,
            reason: None,
            verifier_log: None,
            stages,
            result_map: Some(hex(bytes)),
            wall_ns: None,
        }
    }

    #[test]
    fn results_follow_the_rules() {
        let ok = RunOutcome::exited(ExitStatus::Code(0));
        let own = |status: u64, logs: &[Vec<u8>]| entry("", Some(status), logs);
        let line = |s: &str| log_msg(s, &[], true);
        let error_run = RunnerOutput {
            test: "t".into(),
            outcome: RunnerOutcome::Error,
            reason: Some("verifier rejected check".into()),
            verifier_log: Some(
                "0: (b7) r0 = 0\nR1 invalid mem access 'scalar'\nprocessed 3 insns (limit 1000000)\n"
                    .into(),
            ),
            stages: vec![],
            result_map: None,
            wall_ns: None,
        };
        let skipped_run = RunnerOutput {
            outcome: RunnerOutcome::Skipped,
            reason: Some("kernel cannot test-run cgroup_sock_addr programs".into()),
            ..error_run.clone()
        };
        type Case = (
            &'static str,
            Result<RunnerOutput, BpfError>,
            RunOutcome,
            ResultType,
            &'static str,
            Option<Cause>,
        );
        let table: Vec<Case> = vec![
            (
                "timeout",
                Ok(ran_with(&[], Some(1))),
                RunOutcome::timeout(),
                ResultType::Broken,
                "Test case timed out",
                Some(Cause::Timeout),
            ),
            (
                "signal",
                Ok(ran_with(&[], Some(1))),
                RunOutcome::exited(ExitStatus::Signal(9)),
                ResultType::Broken,
                "bpf runner received signal 9",
                Some(Cause::Protocol),
            ),
            (
                "exit 1",
                Err(BpfError::NoJson),
                RunOutcome::exited(ExitStatus::Code(1)),
                ResultType::Broken,
                "bpf runner exited with status 1",
                Some(Cause::Protocol),
            ),
            (
                "no json",
                Err(BpfError::NoJson),
                ok,
                ResultType::Broken,
                "invalid bpf runner output: no json object in the runner's output",
                Some(Cause::Protocol),
            ),
            (
                "other test",
                Ok(RunnerOutput {
                    test: "u".into(),
                    ..ran_with(&[], None)
                }),
                ok,
                ResultType::Broken,
                "bpf runner reported test 'u', not 't'",
                Some(Cause::Protocol),
            ),
            (
                "verifier",
                Ok(error_run.clone()),
                ok,
                ResultType::Broken,
                "verifier rejected check (verifier: R1 invalid mem access 'scalar')",
                Some(Cause::Exec),
            ),
            (
                "error, no reason",
                Ok(RunnerOutput {
                    reason: None,
                    verifier_log: None,
                    ..error_run.clone()
                }),
                ok,
                ResultType::Broken,
                "bpf runner could not run the test",
                Some(Cause::Exec),
            ),
            (
                "skipped",
                Ok(skipped_run),
                ok,
                ResultType::Skipped,
                "kernel cannot test-run cgroup_sock_addr programs",
                Some(Cause::Requirement),
            ),
            (
                "no map",
                Ok(RunnerOutput {
                    result_map: None,
                    ..ran_with(&[], Some(1))
                }),
                ok,
                ResultType::Broken,
                "the object has no suite_result_map, the map the check's results are read from",
                Some(Cause::Protocol),
            ),
            (
                "bad hex",
                Ok(RunnerOutput {
                    result_map: Some("xyz".into()),
                    ..ran_with(&[], Some(1))
                }),
                ok,
                ResultType::Broken,
                "invalid suite_result_map: result_map is not hex at offset 3",
                Some(Cause::Protocol),
            ),
            (
                "garbage",
                Ok(ran_with(&[0x0a, 0x7f, 1], Some(1))),
                ok,
                ResultType::Broken,
                "invalid suite_result_map: truncated field at offset 0",
                Some(Cause::Protocol),
            ),
            (
                "empty map, pass",
                Ok(ran_with(&[0; 8192], Some(1))),
                ok,
                ResultType::Passed,
                "",
                None,
            ),
            (
                "empty map, current cilium pass",
                Ok(ran_with(&[0; 8192], Some(101))),
                ok,
                ResultType::Passed,
                "",
                None,
            ),
            (
                "empty map, fail",
                Ok(ran_with(&[0; 8192], Some(2))),
                ok,
                ResultType::Failed,
                "check returned FAIL (2)",
                None,
            ),
            (
                "empty map, current cilium fail",
                Ok(ran_with(&[0; 8192], Some(102))),
                ok,
                ResultType::Failed,
                "check returned FAIL (102)",
                None,
            ),
            (
                "empty map, skip",
                Ok(ran_with(&[], Some(103))),
                ok,
                ResultType::Skipped,
                "check returned SKIP (103)",
                None,
            ),
            (
                "empty map, error",
                Ok(ran_with(&[], Some(0))),
                ok,
                ResultType::Broken,
                "check returned ERROR (0)",
                None,
            ),
            (
                "unknown code passes, as upstream's default branch",
                Ok(ran_with(&[], Some(7))),
                ok,
                ResultType::Passed,
                "",
                None,
            ),
            (
                "own pass",
                Ok(ran_with(&suite(&[own(1, &[])], &[]), Some(1))),
                ok,
                ResultType::Passed,
                "",
                None,
            ),
            (
                "return code beats the map's own entry",
                Ok(ran_with(&suite(&[own(1, &[])], &[]), Some(2))),
                ok,
                ResultType::Failed,
                "check returned FAIL (2)",
                None,
            ),
            (
                "own entry fails but check returns pass",
                Ok(ran_with(&suite(&[own(2, &[line("x")])], &[]), Some(1))),
                ok,
                ResultType::Passed,
                "",
                None,
            ),
            (
                "named fail is the test's own",
                Ok(ran_with(
                    &suite(
                        &[entry("t", Some(2), &[line("first"), line("second")])],
                        &[],
                    ),
                    Some(2),
                )),
                ok,
                ResultType::Failed,
                "first",
                None,
            ),
            (
                "fail, suite log",
                Ok(ran_with(
                    &suite(&[own(2, &[])], &[log_msg("got %d", &[3], false)]),
                    Some(2),
                )),
                ok,
                ResultType::Failed,
                "got 3",
                None,
            ),
            (
                "a failure's assert line before its other lines",
                Ok(ran_with(
                    &suite(
                        &[own(2, &[])],
                        &[
                            line("input of 64 bytes"),
                            line("assert failed: got == 0 (x.c:3)"),
                        ],
                    ),
                    Some(2),
                )),
                ok,
                ResultType::Failed,
                "assert failed: got == 0 (x.c:3)",
                None,
            ),
            (
                "skip with a log line",
                Ok(ran_with(
                    &suite(&[own(3, &[])], &[line("no ipv6")]),
                    Some(3),
                )),
                ok,
                ResultType::Skipped,
                "no ipv6",
                None,
            ),
            (
                "error: the last line",
                Ok(ran_with(
                    &suite(&[own(0, &[])], &[line("a"), line("lab: full")]),
                    Some(0),
                )),
                ok,
                ResultType::Broken,
                "lab: full",
                None,
            ),
            (
                "cilium-style suite log only",
                Ok(ran_with(&suite(&[], &[line("bad")]), Some(2))),
                ok,
                ResultType::Failed,
                "bad",
                None,
            ),
            (
                "no check ran",
                Ok(ran_with(&suite(&[], &[line("x")]), None)),
                ok,
                ResultType::Broken,
                "the check program did not run",
                Some(Cause::Protocol),
            ),
            (
                "a failed TEST() fails a passing check",
                Ok(ran_with(
                    &suite(
                        &[
                            entry("p", Some(2), &[line("assert failed: x")]),
                            own(1, &[]),
                        ],
                        &[],
                    ),
                    Some(1),
                )),
                ok,
                ResultType::Failed,
                "p: assert failed: x",
                None,
            ),
            (
                "a silent failed TEST()",
                Ok(ran_with(
                    &suite(&[entry("p", Some(2), &[]), own(1, &[])], &[]),
                    Some(1),
                )),
                ok,
                ResultType::Failed,
                "p failed",
                None,
            ),
            (
                "an ERROR TEST() breaks a passing check",
                Ok(ran_with(
                    &suite(
                        &[
                            entry("p", Some(2), &[]),
                            entry("q", Some(0), &[line("oops")]),
                            own(1, &[]),
                        ],
                        &[],
                    ),
                    Some(1),
                )),
                ok,
                ResultType::Broken,
                "q: oops",
                None,
            ),
            (
                "a TEST() of unknown status passes",
                Ok(ran_with(&suite(&[entry("p", Some(9), &[])], &[]), Some(1))),
                ok,
                ResultType::Passed,
                "",
                None,
            ),
            (
                "a skipped TEST() skips itself only",
                Ok(ran_with(
                    &suite(&[entry("p", Some(3), &[]), own(1, &[])], &[]),
                    Some(1),
                )),
                ok,
                ResultType::Passed,
                "",
                None,
            ),
            (
                "the check's own failure line first",
                Ok(ran_with(
                    &suite(
                        &[entry("p", Some(2), &[line("p")]), own(2, &[])],
                        &[line("own")],
                    ),
                    Some(2),
                )),
                ok,
                ResultType::Failed,
                "own",
                None,
            ),
            (
                "a failed TEST() beats a skip, as in Go",
                Ok(ran_with(
                    &suite(&[entry("p", Some(2), &[line("p")]), own(3, &[])], &[]),
                    Some(3),
                )),
                ok,
                ResultType::Failed,
                "p: p",
                None,
            ),
            (
                "setup returned current cilium's FAIL",
                Ok(RunnerOutput {
                    stages: vec![stage(StageKind::Setup, 102), stage(StageKind::Check, 101)],
                    ..ran_with(&[], Some(1))
                }),
                ok,
                ResultType::Failed,
                "setup returned FAIL (102)",
                None,
            ),
            (
                "pktgen returned current cilium's ERROR",
                Ok(RunnerOutput {
                    stages: vec![stage(StageKind::Pktgen, 100), stage(StageKind::Check, 101)],
                    ..ran_with(&[], Some(1))
                }),
                ok,
                ResultType::Broken,
                "pktgen returned ERROR (100)",
                None,
            ),
            (
                "setup's TC_ACT_SHOT is no status",
                Ok(RunnerOutput {
                    stages: vec![stage(StageKind::Setup, 2), stage(StageKind::Check, 1)],
                    ..ran_with(&[], Some(1))
                }),
                ok,
                ResultType::Passed,
                "",
                None,
            ),
        ];
        for (what, run, outcome, kind, reason, cause) in table {
            let (got, _, _) = result(&run, &outcome, "t");
            assert_eq!(got.kind, kind, "{what}: {got}");
            assert_eq!(got.reason.as_deref().unwrap_or(""), reason, "{what}");
            assert_eq!(got.cause, cause, "{what}");
        }
    }

    #[test]
    fn diagnostics_hold_stages_logs_and_the_verifier_log() {
        let ok = RunOutcome::exited(ExitStatus::Code(0));
        let bytes = suite(
            &[
                entry("p", Some(2), &[log_msg("want %d got %d", &[1, 2], true)]),
                entry("", Some(1), &[]),
            ],
            &[log_msg("suite %x", &[255], false)],
        );
        let (_, _, text) = result(&Ok(ran_with(&bytes, Some(1))), &ok, "t");
        assert_eq!(
            text,
            "stage Pktgen (tc/test/t/pktgen): returned 0, 10 ns\n\
             stage Check (tc/test/t/check): returned 1, 10 ns\n\
             suite ff\n\
             [FAIL] p\n    want 1 got 2\n\
             [PASS] (check)\n"
        );
        let long = format!("{}END", "x".repeat(MAX_VERIFIER_LOG_BYTES * 2));
        let run = RunnerOutput {
            test: "t".into(),
            outcome: RunnerOutcome::Error,
            reason: Some("load failed".into()),
            verifier_log: Some(long),
            stages: vec![],
            result_map: None,
            wall_ns: None,
        };
        let (_, _, text) = result(&Ok(run), &ok, "t");
        assert!(text.starts_with("verifier log (tail):\nxxx"), "{text:.40}");
        assert!(text.ends_with("END\n"));
        assert!(text.len() < MAX_VERIFIER_LOG_BYTES + 100);
        let (_, _, text) = result(&Err(BpfError::NoJson), &ok, "t");
        assert_eq!(text, "no json object in the runner's output\n");
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_suite_result(&bytes);
            let run = ran_with(&bytes, Some(1));
            let _ = result(&Ok(run), &RunOutcome::exited(ExitStatus::Code(0)), "t");
        }

        #[test]
        fn decoding_structured_noise_never_panics(
            fields in proptest::collection::vec((0u64..20, 0u8..8, proptest::collection::vec(any::<u8>(), 0..40)), 0..20)
        ) {
            let mut bytes = Vec::new();
            for (field, wire, body) in fields {
                bytes.extend(varint(field << 3 | u64::from(wire)));
                bytes.extend(varint(body.len() as u64));
                bytes.extend(body);
            }
            let _ = decode_suite_result(&bytes);
        }

        #[test]
        fn rendering_never_panics(fmt in "[%a-z0-9lhz.\\- é]{0,40}", args in proptest::collection::vec(any::<u64>(), 0..6)) {
            let _ = render(&Log { fmt, args });
        }
    }

    // ---- The header and this decoder agree. ----

    /// A check program using every part of lab/test.h; `len` is 64 on the host and in the
    /// kernel (a 64-byte packet).
    const SAMPLE: &str = r#"#include <lab/test.h>

CHECK("tc", "sample")
int sample_check(struct __sk_buff *ctx)
{
	__u32 len = ctx->len;

	test_init();
	test_log("suite says %d and %llx", -5, 0xdeadbeefULL);
	TEST("passes", {
		assert(len == 64);
		test_log("len is %u", len);
	});
	TEST("fails", {
		assert(len % 2 == 1);
		test_log("not reached");
	});
	TEST("skips", {
		test_skip_now();
		test_log("not reached");
	});
	TEST("errs", {
		int a = 1, b = 2;
		test_error("bad %d %d %d", a, b, 3);
		test_log("after %s", 0);
	});
	test_finish();
}

CHECK("tc", "overflow")
int overflow_check(struct __sk_buff *ctx)
{
	__u32 len = ctx->len;

	test_init();
	TEST("fills", {
		for (int i = 0; i < 200; i++)
			test_log("filler line number %d of many, len %u", i, len);
	});
	TEST("a test whose name is far too long to fit in what the filler lines left of the result buffer, so that the check must say that its verdict cannot be trusted", {
		test_fail();
	});
	TEST("small", {
		test_fail();
	});
	test_finish();
}

CHECK("xdp", "bare")
int bare_check(struct xdp_md *ctx)
{
	test_init();
	if (ctx->data_end - ctx->data != 64)
		test_fatal("size %u", ctx->data_end - ctx->data);
	test_skip();
	test_log("skipping on purpose");
	test_finish();
}

CHECK("tc", "silent")
int silent_check(struct __sk_buff *ctx)
{
	(void)ctx;
	test_init();
	test_finish();
}
"#;

    const CHECKS: [&str; 4] = ["sample", "overflow", "bare", "silent"];

    /// Runs the sample's check functions on the host, compiled with LAB_TEST_HOST.
    const HOST_HARNESS: &str = r#"#define LAB_TEST_HOST 1
#include <stdio.h>
#include <stdlib.h>
#include SAMPLE_PATH
__u8 lab_test_host_result[LAB_RESULT_SIZE];
int main(int argc, char **argv)
{
	struct __sk_buff skb;
	struct xdp_md xdp;
	int rc, i;

	memset(&skb, 0, sizeof(skb));
	memset(&xdp, 0, sizeof(xdp));
	skb.len = 64;
	xdp.data_end = 64;
	if (argc != 2)
		return 2;
	if (!strcmp(argv[1], "sample")) rc = sample_check(&skb);
	else if (!strcmp(argv[1], "overflow")) rc = overflow_check(&skb);
	else if (!strcmp(argv[1], "bare")) rc = bare_check(&xdp);
	else if (!strcmp(argv[1], "silent")) rc = silent_check(&skb);
	else return 2;
	printf("%d\n", rc);
	for (i = 0; i < LAB_RESULT_SIZE; i++)
		printf("%02x", lab_test_host_result[i]);
	printf("\n");
	return 0;
}
"#;

    /// Loads the object with libbpf, test-runs one check on a 64-byte packet and prints its
    /// return value and suite_result_map[0], as the host harness does; exit 77: no privileges.
    const KERNEL_LOADER: &str = r#"#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_map *map;
	unsigned char pkt[64] = { 0 }, value[8192];
	unsigned int key = 0;
	char func[64];
	int err, i;

	if (argc != 3)
		return 2;
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		return 3;
	bpf_object__for_each_program(prog, obj) {
		const char *sec = bpf_program__section_name(prog);
		bpf_program__set_type(prog, strncmp(sec, "xdp", 3) ? BPF_PROG_TYPE_SCHED_CLS : BPF_PROG_TYPE_XDP);
	}
	err = bpf_object__load(obj);
	if (err)
		return (err == -EPERM || errno == EPERM) ? 77 : 4;
	snprintf(func, sizeof(func), "%s_check", argv[2]);
	prog = bpf_object__find_program_by_name(obj, func);
	map = bpf_object__find_map_by_name(obj, "suite_result_map");
	if (!prog || !map)
		return 5;
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = sizeof(pkt), .repeat = 1);
	if (bpf_prog_test_run_opts(bpf_program__fd(prog), &opts))
		return errno == EPERM ? 77 : 6;
	if (bpf_map_lookup_elem(bpf_map__fd(map), &key, value))
		return 7;
	printf("%u\n", opts.retval);
	for (i = 0; i < 8192; i++)
		printf("%02x", value[i]);
	printf("\n");
	return 0;
}
"#;

    fn on_path(program: &str) -> bool {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn header_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites/ebpf/include")
    }

    /// What a check left: its return value and its buffer, parsed from a harness's stdout.
    fn parse_dump(stdout: &[u8]) -> (u32, Vec<u8>) {
        let text = String::from_utf8_lossy(stdout);
        let mut lines = text.lines();
        let retval = lines
            .next()
            .and_then(|l| l.parse().ok())
            .expect("retval line");
        let bytes = unhex(lines.next().expect("hex line")).expect("hex");
        assert_eq!(bytes.len(), 8192);
        (retval, bytes)
    }

    fn gcc(args: &[&str]) -> std::process::Output {
        Command::new("gcc").args(args).output().expect("gcc runs")
    }

    /// Checks one check's dump against what the sample means, through `result()`.
    fn check_dump(check: &str, retval: u32, bytes: &[u8], sample: &Path) {
        let suite = decode_suite_result(bytes).expect("the header writes valid protobuf");
        let run = RunnerOutput {
            stages: vec![stage(StageKind::Check, retval)],
            test: check.to_string(),
            ..ran_with(bytes, None)
        };
        let (got, _, text) = result(&Ok(run), &RunOutcome::exited(ExitStatus::Code(0)), check);
        let rendered = |logs: &[Log]| logs.iter().map(render).collect::<Vec<_>>();
        let names: Vec<(&str, Status)> = suite
            .results
            .iter()
            .map(|e| (e.name.as_str(), e.status))
            .collect();
        match check {
            "sample" => {
                assert_eq!(retval, 1);
                assert_eq!(
                    names,
                    [
                        ("passes", Status::Pass),
                        ("fails", Status::Fail),
                        ("skips", Status::Skip),
                        ("errs", Status::Fail),
                        ("", Status::Pass)
                    ]
                );
                assert_eq!(rendered(&suite.suite_log), ["suite says -5 and deadbeef"]);
                assert_eq!(rendered(&suite.results[0].logs), ["len is 64"]);
                let assert_line = format!("assert failed: len % 2 == 1 ({}:15)", sample.display());
                assert_eq!(
                    rendered(&suite.results[1].logs),
                    std::slice::from_ref(&assert_line)
                );
                assert!(suite.results[2].logs.is_empty());
                assert_eq!(
                    rendered(&suite.results[3].logs),
                    ["bad 1 2 3", "after <str>"]
                );
                assert_eq!(got, TestResult::failed(format!("fails: {assert_line}")));
                assert!(text.contains("[SKIP] skips\n"), "{text}");
            }
            "overflow" => {
                assert_eq!(retval, 0);
                assert_eq!(names[0], ("fills", Status::Pass));
                assert_eq!(&names[1..], [("small", Status::Fail), ("", Status::Error)]);
                let kept = suite.results[0].logs.len();
                assert!(kept > 100 && kept < 200, "{kept} logs kept");
                assert_eq!(
                    render(&suite.results[0].logs[kept - 1]),
                    format!("filler line number {} of many, len 64", kept - 1)
                );
                let note = format!(
                    "lab: suite_result_map full: 1 TEST blocks and {} logs not recorded",
                    200 - kept
                );
                assert_eq!(rendered(&suite.suite_log), std::slice::from_ref(&note));
                assert_eq!(got, TestResult::broken(note));
            }
            "bare" => {
                assert_eq!(retval, 3);
                assert_eq!(names, [("", Status::Skip)]);
                assert_eq!(got, TestResult::skipped("skipping on purpose"));
            }
            "silent" => {
                assert_eq!(retval, 1);
                assert_eq!(names, [("", Status::Pass)]);
                assert_eq!(got, TestResult::passed());
            }
            other => panic!("no check {other}"),
        }
    }

    /// The sample compiled for the host with gcc writes what the decoder expects, and, where
    /// clang, libbpf and the privilege to load programs are at hand, the kernel's run of the
    /// same object writes the very same bytes.
    #[test]
    fn header_and_decoder_agree() {
        if !on_path("gcc") {
            eprintln!("SKIPPED header_and_decoder_agree: gcc is not on PATH (apt-get install gcc)");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let dir = dir.path().canonicalize().expect("canonical temp dir");
        let sample = dir.join("sample.c");
        std::fs::write(&sample, SAMPLE).expect("writes the sample");
        std::fs::write(dir.join("host.c"), HOST_HARNESS).expect("writes the harness");
        let host = dir.join("host");
        let include = format!("-I{}", header_dir().display());
        let path_define = format!("-DSAMPLE_PATH=\"{}\"", sample.display());
        let out = gcc(&[
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            &include,
            &path_define,
            "-o",
            host.to_str().expect("utf-8 path"),
            dir.join("host.c").to_str().expect("utf-8 path"),
        ]);
        assert!(
            out.status.success(),
            "gcc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut host_dumps = Vec::new();
        for check in CHECKS {
            let out = Command::new(&host)
                .arg(check)
                .output()
                .expect("harness runs");
            assert!(out.status.success(), "{check}");
            let (retval, bytes) = parse_dump(&out.stdout);
            check_dump(check, retval, &bytes, &sample);
            host_dumps.push((retval, bytes));
        }

        if !on_path("clang") {
            eprintln!("SKIPPED header_and_decoder_agree (kernel half): clang is not on PATH (apt-get install clang)");
            return;
        }
        let cache = dir.join("cache");
        let object =
            crate::suite::bpf_build::build(&sample, &dir, &cache).expect("sample compiles for bpf");
        if !Path::new("/usr/include/bpf/libbpf.h").exists() {
            eprintln!("SKIPPED header_and_decoder_agree (kernel half): no libbpf headers (apt-get install libbpf-dev)");
            return;
        }
        std::fs::write(dir.join("load.c"), KERNEL_LOADER).expect("writes the loader");
        let loader = dir.join("load");
        let out = gcc(&[
            "-O2",
            "-o",
            loader.to_str().expect("utf-8 path"),
            dir.join("load.c").to_str().expect("utf-8 path"),
            "-lbpf",
        ]);
        assert!(
            out.status.success(),
            "gcc loader: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (check, (host_retval, host_bytes)) in CHECKS.iter().zip(&host_dumps) {
            let out = Command::new(&loader)
                .arg(&object)
                .arg(check)
                .output()
                .expect("loader runs");
            if out.status.code() == Some(77) {
                eprintln!("SKIPPED header_and_decoder_agree (kernel half): no privilege to load BPF programs");
                return;
            }
            assert!(
                out.status.success(),
                "{check}: loader exited {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let (retval, bytes) = parse_dump(&out.stdout);
            assert_eq!(retval, *host_retval, "{check}: return values");
            assert!(
                bytes == *host_bytes,
                "{check}: kernel and host bytes differ"
            );
        }
    }
}
