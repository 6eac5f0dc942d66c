//! The tap interface: a TAP 14 parser (TAP 13 and version-less streams too, and the kernel's
//! KTAP) for what a TAP program prints, and Kyua 0.13's rules that turn the program's run into
//! one result, plus one sub-result per test point.
//!
//! # Parsing
//! [`parse`] never fails and never panics: it reads untrusted guest output, keeps at most
//! [`MAX_POINTS`] test points and [`MAX_TEXT_BYTES`] of text in all (descriptions, reasons,
//! diagnostics), and records what is wrong with the stream as [`TapError`]s: `errors` make the
//! program broken (the ones Kyua rejects: no plan, duplicate or reversed plan, a skip plan
//! other than `1..0`, a plan that does not match the points run), `warnings` are kept for
//! people (numbers out of sequence, a plan between points, problems inside subtests, …).
//! Unknown lines are ignored, as TAP says.
//!
//! Subtests are TAP 14's: a stream indented by four spaces per level, optionally introduced
//! by `# Subtest: NAME` (at the parent's level or as the child's first line) and concluded by
//! the parent's next test point, which gets the subtest. YAML blocks (`---` … `...` indented
//! two spaces past their test point) and `#` comment lines become the diagnostics of the
//! preceding test point, as text. A version line inside a subtest is ignored.
//!
//! # KTAP
//! A stream whose first line is `KTAP version 1`, or any stream given to [`parse_ktap`]
//! (kselftest programs print `TAP version 13`), is read by the kernel's rules
//! (Documentation/dev-tools/ktap.rst, and what kselftest.h, kselftest_harness.h,
//! kselftest/runner.sh and KUnit print), [`Dialect::Ktap`]. What differs from TAP 14:
//! - **Nesting** is by indentation of any width: a TAP line (version, plan, result, `# Subtest:`,
//!   `Bail out!`) indented past its frame opens a subtest at that column, so KUnit's four
//!   spaces and ktap.rst's two both work; a subtest usually starts with its own
//!   `KTAP version 1` and `# Subtest: NAME`, and the parent's next result line concludes it.
//! - **kselftest's runner nests by prefix**: run_kselftest.sh prints each program's output with
//!   `# ` before every line, between the runner's `# selftests: DIR: NAME` and its
//!   `ok N selftests: DIR: NAME` lines. A `# TAP version 13` (or `# KTAP version 1`) comment
//!   opens such a prefixed subtest; the lines that keep the prefix are read as the subtest's
//!   (recursively: a prefix inside a prefix nests again) until the parent's next result. A
//!   `Bail out!` there ends that subtest only ([`Subtest::bail_out`]), as the runner goes on
//!   with the next program.
//! - **Diagnostics** (`# ` lines, and unknown lines, which KTAP allows anywhere and at any
//!   indentation) belong to the result line *after* them, as ktap.rst says; top-level ones
//!   before the plan and the first result, and those after the last result (`# Totals: …`),
//!   go to [`TapReport::comments`]. Unknown lines never close a subtest.
//! - **Directives** after ` # `: `SKIP`, `TODO`, `XFAIL` (kselftest's `ok N # XFAIL`),
//!   `TIMEOUT` (runner.sh's `not ok N … # TIMEOUT 45 seconds`) and `ERROR` (kselftest.h's
//!   `not ok N # error …`), case-insensitively; other text after `#` (runner.sh's `# exit=1`)
//!   is the point's [`TestPoint::data`], not part of its description.
//! - **Plans** are optional in subtests (KUnit's parameterised tests have none); a missing
//!   top-level plan is still an error. A top-level version line is taken until the first
//!   plan or result, not only on line 1 (console output may come first).
//! - `# Totals: pass:N fail:N xfail:N xpass:N skip:N error:N` (kselftest.h) or
//!   `# Totals: pass:N fail:N skip:N total:N` (KUnit) at the top level is kept as
//!   [`TapReport::totals`] (the line stays in the comments too).
//!
//! # Verdict
//! [`result`] follows Kyua: timeout → broken; signal → broken; invalid stream → broken
//! ("TAP test program yielded invalid data: …", without Kyua's file name); `Bail out!` →
//! failed; `1..0` plan → skipped; any top-level `not ok` without a TODO or SKIP directive →
//! failed "N of M tests failed"; all ok but a non-zero exit → broken ("Dubious test program:
//! …"). Only top-level points count, as in Kyua. Where Kyua's line matching is looser than
//! TAP 14, this parser follows TAP 14: a bare `ok` is a test point, directives are only
//! recognised after `#` (Kyua takes any `skip` in a `not ok` line), `1..0` with no directive
//! skips rather than being a "reversed plan", a `: ` before the skip reason is dropped,
//! `Bail out!` is recognised case-insensitively and in subtests, and its reason is kept.
//! (In KTAP, `XFAIL` also keeps a `not ok` from counting as a failure.)
//!
//! [`kselftest_result`] is kselftest/runner.sh's verdict instead: the exit status alone decides
//! (0 passed, 4 = `KSFT_SKIP` skipped, anything else failed `exit=N`), whatever was printed.
//!
//! # Sub-results
//! One [`SubResult`] per stored test point, in stream order with each subtest's points right
//! after the point that concludes it, named `N - description` (`N` alone when there is no
//! description); a subtest's points are named by their path of numbers, `2.1 - description`.
//! ok → passed; not ok → failed; SKIP → skipped; not ok with TODO → expected_failure; ok with
//! TODO → passed; XFAIL → expected_failure; not ok with TIMEOUT → failed ("Timed out: …");
//! not ok with ERROR → broken ("Error: …").

use lab_model::{Cause, SubResult, TestResult};
use lab_proto::ExitStatus;

use super::RunOutcome;

/// The most test points kept, subtests' included; later ones are counted but not kept.
pub const MAX_POINTS: usize = 100_000;
/// The most bytes of one description, reason, name or pragma.
pub const MAX_FIELD_BYTES: usize = 4 << 10;
/// The most bytes of diagnostics kept for one test point.
pub const MAX_DIAGNOSTICS_BYTES: usize = 64 << 10;
/// The most bytes of text kept in all.
pub const MAX_TEXT_BYTES: usize = 16 << 20;
/// The deepest subtest nesting followed; deeper lines are ignored.
pub const MAX_DEPTH: usize = 16;
/// The most errors, and the most warnings, kept.
pub const MAX_ISSUES: usize = 1000;
/// The most pragmas kept.
pub const MAX_PRAGMAS: usize = 100;

/// Something wrong with a TAP stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    /// A second plan.
    #[error(
        "line {line}: duplicate plan {first}..{last} (earlier {earlier_first}..{earlier_last})"
    )]
    DuplicatePlan {
        /// Its line.
        line: usize,
        /// Its first number.
        first: u64,
        /// Its last number.
        last: u64,
        /// The first number of the plan seen earlier.
        earlier_first: u64,
        /// The last number of the plan seen earlier.
        earlier_last: u64,
    },
    /// A plan that ends before it starts.
    #[error("line {line}: reversed plan {first}..{last}")]
    ReversedPlan {
        /// Its line.
        line: usize,
        /// Its first number.
        first: u64,
        /// Its last number.
        last: u64,
    },
    /// A plan with a SKIP directive that is not `1..0`.
    #[error("line {line}: skip plan {first}..{last} is not 1..0")]
    SkipPlanNotEmpty {
        /// Its line.
        line: usize,
        /// Its first number.
        first: u64,
        /// Its last number.
        last: u64,
    },
    /// A plan whose numbers do not fit.
    #[error("line {line}: plan numbers out of range")]
    BadPlan {
        /// Its line.
        line: usize,
    },
    /// No plan, and no bail out.
    #[error("no plan")]
    NoPlan,
    /// The plan does not match the test points seen.
    #[error("plan of {planned} test points but {ran} seen")]
    PlanMismatch {
        /// Points planned.
        planned: u64,
        /// Points seen.
        ran: u64,
    },
    /// A test point whose number is not the next one.
    #[error("line {line}: test point {number} out of sequence (expected {expected})")]
    OutOfSequence {
        /// Its line.
        line: usize,
        /// Its number.
        number: u64,
        /// The number expected.
        expected: u64,
    },
    /// Test points on both sides of the plan.
    #[error("line {line}: plan between test points")]
    PlanInMiddle {
        /// The plan's line.
        line: usize,
    },
    /// A plan that does not start at 1.
    #[error("line {line}: plan does not start at 1")]
    PlanNotFromOne {
        /// Its line.
        line: usize,
    },
    /// Test points under a `1..0` plan.
    #[error("line {line}: test point under a skip-all plan")]
    PointsInSkippedPlan {
        /// The first such point's line.
        line: usize,
    },
    /// A version line that is not the first line.
    #[error("line {line}: version line is not the first line")]
    MisplacedVersion {
        /// Its line.
        line: usize,
    },
    /// A version other than 13 or 14.
    #[error("line {line}: unsupported TAP version '{version}'")]
    UnsupportedVersion {
        /// Its line.
        line: usize,
        /// What it said.
        version: String,
    },
    /// A YAML block with no `...`.
    #[error("line {line}: unterminated YAML block")]
    UnterminatedYaml {
        /// Where the block started.
        line: usize,
    },
    /// A subtest not followed by a test point of its parent.
    #[error("line {line}: subtest not concluded by a test point")]
    UnconcludedSubtest {
        /// Where the subtest started.
        line: usize,
    },
    /// Subtests nested past [`MAX_DEPTH`].
    #[error("line {line}: subtest nested too deep")]
    TooDeep {
        /// The first such line.
        line: usize,
    },
    /// A problem inside a subtest.
    #[error("in subtest starting at line {line}")]
    InSubtest {
        /// Where the subtest started.
        line: usize,
        /// The problem.
        #[source]
        source: Box<TapError>,
    },
}

impl TapError {
    /// Kyua's words for the error where Kyua has them (its file name left out).
    pub fn reason(&self) -> String {
        match self {
            Self::DuplicatePlan {
                first,
                last,
                earlier_first,
                earlier_last,
                ..
            } => format!(
                "Found duplicate plan {first}..{last} (saw {earlier_first}..{earlier_last} earlier)"
            ),
            Self::ReversedPlan { first, last, .. } => {
                format!("Found reversed plan {first}..{last}")
            }
            Self::SkipPlanNotEmpty { .. } => "Skipped plan must be 1..0".to_string(),
            Self::BadPlan { .. } => "Invalid value".to_string(),
            Self::NoPlan => {
                "Output did not contain any TAP plan and the program did not bail out".to_string()
            }
            Self::PlanMismatch { .. } => {
                "Reported plan differs from actual executed tests".to_string()
            }
            Self::InSubtest { line, source } => {
                format!("In subtest starting at line {line}: {}", source.reason())
            }
            other => other.to_string(),
        }
    }
}

/// A plan: `FIRST..LAST`, with the reason of a `1..0` plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The first test point's number (1 in TAP 14).
    pub first: u64,
    /// The last test point's number.
    pub last: u64,
    /// For `1..0`: why everything is skipped (the text after `#`, less a `SKIP` word).
    pub skip_reason: Option<String>,
    /// Its line.
    pub line: usize,
}

impl Plan {
    /// Whether it says to skip everything (`1..0`).
    pub fn skips_all(&self) -> bool {
        self.first == 1 && self.last == 0
    }

    /// How many test points it announces.
    pub fn count(&self) -> u64 {
        (self.last + 1).saturating_sub(self.first)
    }
}

/// A test point's directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// `# SKIP reason`.
    Skip(String),
    /// `# TODO reason`.
    Todo(String),
    /// KTAP's `# XFAIL reason`: failed as expected (kselftest.h's `ksft_test_result_xfail`).
    Xfail(String),
    /// KTAP's `# TIMEOUT reason` (kselftest/runner.sh: `# TIMEOUT 45 seconds`).
    Timeout(String),
    /// KTAP's `# ERROR reason` (kselftest.h's `ksft_test_result_error` writes `# error`).
    Error(String),
}

/// One `ok` / `not ok` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPoint {
    /// `ok` (true) or `not ok`.
    pub ok: bool,
    /// Its number: the one given, or its position in its stream.
    pub number: u64,
    /// Its description, without the ` - ` before it and with `\#`, `\\` unescaped.
    pub description: String,
    /// Its directive.
    pub directive: Option<Directive>,
    /// KTAP only: the diagnostic data after `#` when no directive starts it (`exit=1` in
    /// runner.sh's `not ok 3 selftests: x: y # exit=1`). Empty otherwise; in TAP 14 such
    /// text stays in the description.
    pub data: String,
    /// Its YAML block (with `---` and `...`) and the comment lines after it, as text (KTAP:
    /// the diagnostic and unknown lines before it, then its YAML block, if any).
    pub diagnostics: String,
    /// The subtest it concludes.
    pub subtest: Option<Subtest>,
    /// Its line.
    pub line: usize,
}

impl TestPoint {
    /// Whether it counts as a failure (Kyua: `not ok` without TODO or SKIP; KTAP: nor XFAIL).
    pub fn is_failure(&self) -> bool {
        !self.ok
            && !matches!(
                self.directive,
                Some(Directive::Skip(_) | Directive::Todo(_) | Directive::Xfail(_))
            )
    }
}

/// A subtest: an indented TAP stream concluded by its parent's test point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subtest {
    /// Its name from `# Subtest: NAME`.
    pub name: Option<String>,
    /// Its plan.
    pub plan: Option<Plan>,
    /// Its test points.
    pub points: Vec<TestPoint>,
    /// KTAP: the reason of a `Bail out!` that ended this subtest only (one read from
    /// kselftest's `# `-prefixed output: the runner went on with the next program).
    pub bail_out: Option<String>,
    /// Where it started.
    pub line: usize,
}

/// The rules a stream is read by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// TAP 14 (and 13, and version-less TAP), as Kyua reads it.
    #[default]
    Tap,
    /// The kernel's KTAP, as kselftest and KUnit print it (see the module docs).
    Ktap,
}

/// A `# Totals:` line: a kernel test program's own counts of its results (kselftest.h's
/// `ksft_print_cnts`, KUnit's summary). Counts the line does not name are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// `pass:N`.
    pub pass: u64,
    /// `fail:N`.
    pub fail: u64,
    /// `xfail:N` (kselftest).
    pub xfail: u64,
    /// `xpass:N` (kselftest).
    pub xpass: u64,
    /// `skip:N`.
    pub skip: u64,
    /// `error:N` (kselftest).
    pub error: u64,
    /// `total:N` (KUnit), if given.
    pub total: Option<u64>,
    /// Its line.
    pub line: usize,
}

/// What a TAP stream said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapReport {
    /// The rules it was read by.
    pub dialect: Dialect,
    /// The version line's version (13 or 14), if any.
    pub version: Option<u32>,
    /// The version of a `KTAP version N` line (1), if the stream had one instead.
    pub ktap_version: Option<u32>,
    /// The top-level plan, if a valid one was seen.
    pub plan: Option<Plan>,
    /// Top-level test points kept (their subtests inside them).
    pub points: Vec<TestPoint>,
    /// Top-level test points seen, kept or not.
    pub total: u64,
    /// Top-level test points seen that are failures.
    pub failed: u64,
    /// `Bail out!`'s reason, if the stream bailed out.
    pub bail_out: Option<String>,
    /// Pragmas (`pragma +strict` gives `+strict`).
    pub pragmas: Vec<String>,
    /// Top-level comment lines before the first test point (KTAP: the diagnostic and unknown
    /// lines before the plan and the first result, then those after the last result).
    pub comments: String,
    /// KTAP: the last top-level `# Totals:` line, parsed.
    pub totals: Option<Totals>,
    /// What makes the stream invalid (the program is broken).
    pub errors: Vec<TapError>,
    /// What is odd about the stream but does not change the verdict.
    pub warnings: Vec<TapError>,
    /// Whether something was left out for the limits.
    pub truncated: bool,
}

impl TapReport {
    /// The reason to skip everything, when the plan is `1..0`.
    pub fn skip_all_reason(&self) -> Option<&str> {
        let plan = self.plan.as_ref().filter(|p| p.skips_all())?;
        Some(
            plan.skip_reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .unwrap_or("No reason specified"),
        )
    }
}

/// A test point line, parsed.
struct PointLine {
    ok: bool,
    number: Option<u64>,
    description: String,
    directive: Option<Directive>,
    data: String,
}

/// One stream being read: the top level or a subtest.
struct Frame {
    name: Option<String>,
    start_line: usize,
    plan: Option<Plan>,
    points: Vec<TestPoint>,
    seen: u64,
    failed: u64,
    lines: usize,
    last_was_point: bool,
    last_point_kept: bool,
    plan_after_points: bool,
    warned_skipped_points: bool,
    pending_child: Option<Subtest>,
    pending_name: Option<String>,
    /// Its column within its context (TAP: four per level).
    indent: usize,
    /// KTAP: read from its parent's `# `-prefixed lines, which makes it start a context of its
    /// own: the frames whose lines carry the same prefixes.
    prefixed: bool,
    /// KTAP: diagnostic lines waiting for the next test point.
    pending_diag: String,
    /// KTAP: the `Bail out!` that ended this prefixed stream.
    bail_out: Option<String>,
}

impl Frame {
    fn new(name: Option<String>, start_line: usize) -> Self {
        Self {
            name,
            start_line,
            plan: None,
            points: Vec::new(),
            seen: 0,
            failed: 0,
            lines: 0,
            last_was_point: false,
            last_point_kept: false,
            plan_after_points: false,
            warned_skipped_points: false,
            pending_child: None,
            pending_name: None,
            indent: 0,
            prefixed: false,
            pending_diag: String::new(),
            bail_out: None,
        }
    }
}

/// A YAML block being read.
struct Yaml {
    indent: usize,
    depth: usize,
    /// The context it is in (KTAP's prefixed streams; 0 in TAP).
    ctx: usize,
    start_line: usize,
    text: String,
}

struct Parser {
    dialect: Dialect,
    report: TapReport,
    stack: Vec<Frame>,
    yaml: Option<Yaml>,
    kept_points: usize,
    text_budget: usize,
    warned_deep: bool,
    done: bool,
}

/// Parses a TAP stream: by KTAP's rules when its first line is `KTAP version …`, by TAP 14's
/// otherwise. See the module docs for what is kept and what is an error.
pub fn parse(stdout: &str) -> TapReport {
    let first = stdout.split_terminator('\n').next().unwrap_or("");
    let dialect = if first.starts_with("KTAP version ") {
        Dialect::Ktap
    } else {
        Dialect::Tap
    };
    parse_with(stdout, dialect)
}

/// Parses a stream by KTAP's rules whatever its version line says: what a kselftest program
/// (`TAP version 13`), kselftest's run_kselftest.sh or KUnit prints. See the module docs.
pub fn parse_ktap(stdout: &str) -> TapReport {
    parse_with(stdout, Dialect::Ktap)
}

/// Parses a TAP stream given as bytes, invalid UTF-8 replaced.
pub fn parse_bytes(stdout: &[u8]) -> TapReport {
    parse(&String::from_utf8_lossy(stdout))
}

/// [`parse_ktap`] of bytes, invalid UTF-8 replaced.
pub fn parse_ktap_bytes(stdout: &[u8]) -> TapReport {
    parse_ktap(&String::from_utf8_lossy(stdout))
}

fn parse_with(stdout: &str, dialect: Dialect) -> TapReport {
    let mut p = Parser {
        dialect,
        report: TapReport {
            dialect,
            ..TapReport::default()
        },
        stack: vec![Frame::new(None, 1)],
        yaml: None,
        kept_points: 0,
        text_budget: MAX_TEXT_BYTES,
        warned_deep: false,
        done: false,
    };
    let mut line_no = 0;
    for raw in stdout.split_terminator('\n') {
        line_no += 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        match dialect {
            Dialect::Tap => p.line(line_no, line),
            Dialect::Ktap => p.ktap_line(line_no, line),
        }
        if p.done {
            break;
        }
    }
    p.finish();
    p.report
}

/// The number of spaces `s` starts with.
fn leading_spaces(s: &str) -> usize {
    s.len() - s.trim_start_matches(' ').len()
}

impl Parser {
    /// Cuts `s` to `cap` bytes and what is left of the text budget, charging the budget.
    fn keep(&mut self, s: &str, cap: usize) -> String {
        let limit = cap.min(self.text_budget);
        let mut end = s.len().min(limit);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        if end < s.len() {
            self.report.truncated = true;
        }
        self.text_budget -= end;
        s[..end].to_string()
    }

    /// Appends `line` and a newline to `diag`, within the per-point cap and the budget.
    fn append_diag(&mut self, diag: &mut String, line: &str) {
        let room = MAX_DIAGNOSTICS_BYTES.saturating_sub(diag.len());
        if room == 0 || self.text_budget == 0 {
            self.report.truncated = true;
            return;
        }
        let kept = self.keep(line, room - 1);
        diag.push_str(&kept);
        diag.push('\n');
        self.text_budget = self.text_budget.saturating_sub(1);
    }

    fn issue(&mut self, depth: usize, error: TapError, is_error: bool) {
        let (error, list) = if depth == 0 {
            let list = if is_error {
                &mut self.report.errors
            } else {
                &mut self.report.warnings
            };
            (error, list)
        } else {
            let line = self.stack.get(depth).map_or(0, |f| f.start_line);
            (
                TapError::InSubtest {
                    line,
                    source: Box::new(error),
                },
                &mut self.report.warnings,
            )
        };
        if list.len() < MAX_ISSUES {
            list.push(error);
        } else {
            self.report.truncated = true;
        }
    }

    /// Goes on with a YAML block, or ends it, for a line in context `ctx`. True when the
    /// line was the block's.
    fn yaml_line(&mut self, ctx: usize, line: &str) -> bool {
        let Some(mut y) = self.yaml.take() else {
            return false;
        };
        let indent = leading_spaces(line);
        if y.ctx == ctx && (indent >= y.indent || indent == line.len()) {
            let inner = line.get(y.indent..).unwrap_or("");
            if indent == y.indent && inner.trim_end() == "..." {
                let text = std::mem::take(&mut y.text);
                self.attach_yaml(y.depth, &text);
            } else {
                let mut text = std::mem::take(&mut y.text);
                self.append_diag(&mut text, inner);
                y.text = text;
                self.yaml = Some(y);
            }
            return true;
        }
        self.issue(
            y.depth,
            TapError::UnterminatedYaml { line: y.start_line },
            false,
        );
        let text = std::mem::take(&mut y.text);
        self.attach_yaml(y.depth, &text);
        false
    }

    /// A line by TAP 14's rules.
    fn line(&mut self, n: usize, line: &str) {
        if self.yaml_line(0, line) {
            return;
        }
        let indent = leading_spaces(line);
        let content = &line[indent..];
        if content.is_empty() {
            return;
        }

        // A YAML block starts two spaces past the test point it follows.
        if indent % 4 == 2 && content.trim_end() == "---" {
            let depth = indent / 4;
            if depth + 1 == self.stack.len() && self.stack[depth].last_was_point {
                self.stack[depth].last_was_point = false;
                self.yaml = Some(Yaml {
                    indent,
                    depth,
                    ctx: 0,
                    start_line: n,
                    text: String::new(),
                });
                return;
            }
        }
        if !indent.is_multiple_of(4) {
            return;
        }
        let depth = indent / 4;
        if depth > MAX_DEPTH {
            self.too_deep(n);
            return;
        }
        self.close_to(depth);
        while self.stack.len() <= depth {
            let parent = self.stack.len() - 1;
            self.push(parent, 4 * (parent + 1), false, n);
        }
        self.content(n, depth, 0, content);
    }

    /// A line by KTAP's rules.
    fn ktap_line(&mut self, n: usize, line: &str) {
        // Into the `# `-prefixed streams open at the line's place, innermost first.
        let mut ctx = 0;
        let mut text = line;
        loop {
            let end = self.context_end(ctx);
            let child = end + 1;
            if child >= self.stack.len() || leading_spaces(text) != self.stack[end].indent {
                break;
            }
            let content = &text[self.stack[end].indent..];
            let rest = if content == "#" {
                ""
            } else if let Some(rest) = content.strip_prefix("# ") {
                rest
            } else {
                break;
            };
            if self.stack[child].bail_out.is_some() {
                return;
            }
            ctx = child;
            text = rest;
        }

        if self.yaml_line(ctx, text) {
            return;
        }
        let indent = leading_spaces(text);
        let content = &text[indent..];
        if content.is_empty() {
            return;
        }
        let end = self.context_end(ctx);
        if content.trim_end() == "---"
            && end + 1 == self.stack.len()
            && indent == self.stack[end].indent + 2
            && self.stack[end].last_was_point
        {
            self.stack[end].last_was_point = false;
            self.yaml = Some(Yaml {
                indent,
                depth: end,
                ctx,
                start_line: n,
                text: String::new(),
            });
            return;
        }
        let tap = is_tap_line(content);
        if !tap && !content.starts_with('#') {
            // An unknown line: a diagnostic of the innermost stream; it closes nothing.
            self.ktap_diag(end, content);
            let frame = &mut self.stack[end];
            frame.lines += 1;
            frame.last_was_point = false;
            return;
        }
        let mut depth = end;
        while depth > ctx && self.stack[depth].indent > indent {
            depth -= 1;
        }
        self.close_to(depth);
        if tap && indent > self.stack[depth].indent {
            if depth + 1 > MAX_DEPTH {
                self.too_deep(n);
                return;
            }
            self.push(depth, indent, false, n);
            depth += 1;
        }
        self.content(n, depth, ctx, content);
    }

    /// The index of the last frame of the context that starts at frame `ctx`.
    fn context_end(&self, ctx: usize) -> usize {
        (ctx + 1..self.stack.len())
            .find(|&j| self.stack[j].prefixed)
            .map_or(self.stack.len() - 1, |j| j - 1)
    }

    fn too_deep(&mut self, n: usize) {
        if !self.warned_deep {
            self.warned_deep = true;
            self.issue(0, TapError::TooDeep { line: n }, false);
        }
    }

    /// Opens a subtest under `parent` (the top of the stack) at `indent`, first line `n`.
    fn push(&mut self, parent: usize, indent: usize, prefixed: bool, n: usize) {
        if let Some(old) = self.stack[parent].pending_child.take() {
            self.issue(
                parent,
                TapError::UnconcludedSubtest { line: old.line },
                false,
            );
        }
        let name = self.stack[parent].pending_name.take();
        let mut frame = Frame::new(name, n);
        frame.indent = indent;
        frame.prefixed = prefixed;
        self.stack.push(frame);
    }

    /// A line's content, at `depth` (the top of the stack) in context `ctx`.
    fn content(&mut self, n: usize, depth: usize, ctx: usize, content: &str) {
        let ktap = self.dialect == Dialect::Ktap;
        let mut is_point = false;
        let mut counts = true;
        if let Some(point) = parse_point(content, self.dialect) {
            self.point(depth, n, point);
            is_point = true;
        } else if let Some(plan) = parse_plan(content) {
            self.plan(depth, n, plan);
        } else if let Some(reason) = bail_out_reason(content) {
            let reason = self.keep(reason, MAX_FIELD_BYTES);
            if ktap && ctx > 0 {
                // A program's bail out under kselftest's runner ends its own output only.
                self.close_to(ctx);
                self.stack[ctx].bail_out = Some(reason);
                return;
            }
            self.report.bail_out = Some(reason);
            self.done = true;
        } else if let Some((is_ktap, v)) = version_line(content) {
            // A subtest's version line is not one of its lines: `# Subtest:` may follow it.
            counts = depth == 0;
            if depth == 0 {
                self.version(n, is_ktap, v);
            }
        } else if let Some(p) = content.strip_prefix("pragma ") {
            if self.report.pragmas.len() < MAX_PRAGMAS {
                let p = self.keep(p.trim(), MAX_FIELD_BYTES);
                self.report.pragmas.push(p);
            } else {
                self.report.truncated = true;
            }
        } else if let Some(name) = subtest_header(content) {
            let name = (!name.is_empty()).then(|| self.keep(name, MAX_FIELD_BYTES));
            let frame = &mut self.stack[depth];
            if depth > 0 && frame.lines == 0 {
                frame.name = name;
            } else {
                frame.pending_name = name;
            }
        } else if content.starts_with('#') {
            if ktap {
                self.ktap_comment(n, depth, content);
            } else {
                self.comment(depth, content);
            }
        }
        let frame = &mut self.stack[depth];
        if counts {
            frame.lines += 1;
        }
        frame.last_was_point = is_point;
    }

    /// A top-level version line: `TAP version 13|14` or `KTAP version 1`.
    fn version(&mut self, n: usize, is_ktap: bool, v: &str) {
        let first = match self.dialect {
            Dialect::Tap => n == 1,
            Dialect::Ktap => {
                let root = &self.stack[0];
                root.seen == 0
                    && root.plan.is_none()
                    && self.report.version.is_none()
                    && self.report.ktap_version.is_none()
            }
        };
        if !first {
            self.issue(0, TapError::MisplacedVersion { line: n }, false);
        }
        let number = v.trim().parse::<u32>();
        let supported = match number {
            Ok(1) => is_ktap,
            Ok(13 | 14) => !is_ktap,
            _ => false,
        };
        if !supported {
            let version = self.keep(v.trim(), MAX_FIELD_BYTES);
            self.issue(0, TapError::UnsupportedVersion { line: n, version }, false);
        } else if first {
            if is_ktap {
                self.report.ktap_version = number.ok();
            } else {
                self.report.version = number.ok();
            }
        }
    }

    /// A `#` line by KTAP's rules: a kselftest program's output under the runner, the totals,
    /// or a diagnostic.
    fn ktap_comment(&mut self, n: usize, depth: usize, content: &str) {
        let opens = content
            .strip_prefix("# ")
            .is_some_and(|rest| version_line(rest).is_some());
        if opens {
            if depth + 1 > MAX_DEPTH {
                self.too_deep(n);
            } else {
                self.push(depth, 0, true, n);
                return;
            }
        }
        if depth == 0 {
            if let Some(totals) = parse_totals(content, n) {
                self.report.totals = Some(totals);
            }
        }
        self.ktap_diag(depth, content);
    }

    /// Keeps a KTAP diagnostic for the next test point at `depth` (top-level ones before
    /// the plan and the first point: for the report's comments).
    fn ktap_diag(&mut self, depth: usize, content: &str) {
        let root = &self.stack[0];
        if depth == 0 && root.seen == 0 && root.plan.is_none() {
            let mut c = std::mem::take(&mut self.report.comments);
            self.append_diag(&mut c, content);
            self.report.comments = c;
            return;
        }
        let mut diag = std::mem::take(&mut self.stack[depth].pending_diag);
        self.append_diag(&mut diag, content);
        self.stack[depth].pending_diag = diag;
    }

    fn attach_yaml(&mut self, depth: usize, text: &str) {
        let Some(frame) = self.stack.get(depth) else {
            return;
        };
        if !frame.last_point_kept {
            return;
        }
        let mut diag = self.stack[depth]
            .points
            .last_mut()
            .map(|p| std::mem::take(&mut p.diagnostics))
            .unwrap_or_default();
        self.append_diag(&mut diag, "---");
        for l in text.lines() {
            self.append_diag(&mut diag, l);
        }
        self.append_diag(&mut diag, "...");
        if let Some(p) = self.stack[depth].points.last_mut() {
            p.diagnostics = diag;
        }
    }

    fn comment(&mut self, depth: usize, content: &str) {
        let frame = &mut self.stack[depth];
        if frame.seen == 0 {
            if depth == 0 {
                let mut c = std::mem::take(&mut self.report.comments);
                self.append_diag(&mut c, content);
                self.report.comments = c;
            }
            return;
        }
        if !frame.last_point_kept {
            return;
        }
        let Some(p) = frame.points.last_mut() else {
            return;
        };
        let mut diag = std::mem::take(&mut p.diagnostics);
        self.append_diag(&mut diag, content);
        if let Some(p) = self.stack[depth].points.last_mut() {
            p.diagnostics = diag;
        }
    }

    fn point(&mut self, depth: usize, n: usize, p: PointLine) {
        let frame = &mut self.stack[depth];
        let subtest = frame.pending_child.take();
        frame.seen += 1;
        let expected = frame.seen;
        let skipping = frame.plan.as_ref().is_some_and(Plan::skips_all);
        let middle = frame
            .plan_after_points
            .then(|| frame.plan.as_ref().map(|p| p.line));
        frame.plan_after_points = false;
        let warn_skipped = skipping && !frame.warned_skipped_points;
        if warn_skipped {
            frame.warned_skipped_points = true;
        }
        if let Some(Some(line)) = middle {
            self.issue(depth, TapError::PlanInMiddle { line }, false);
        }
        if warn_skipped {
            self.issue(depth, TapError::PointsInSkippedPlan { line: n }, false);
        }
        let number = match p.number {
            Some(number) if number != expected => {
                self.issue(
                    depth,
                    TapError::OutOfSequence {
                        line: n,
                        number,
                        expected,
                    },
                    false,
                );
                number
            }
            Some(number) => number,
            None => expected,
        };
        let point = TestPoint {
            ok: p.ok,
            number,
            description: self.keep(&p.description, MAX_FIELD_BYTES),
            directive: p.directive.map(|d| match d {
                Directive::Skip(r) => Directive::Skip(self.keep(&r, MAX_FIELD_BYTES)),
                Directive::Todo(r) => Directive::Todo(self.keep(&r, MAX_FIELD_BYTES)),
                Directive::Xfail(r) => Directive::Xfail(self.keep(&r, MAX_FIELD_BYTES)),
                Directive::Timeout(r) => Directive::Timeout(self.keep(&r, MAX_FIELD_BYTES)),
                Directive::Error(r) => Directive::Error(self.keep(&r, MAX_FIELD_BYTES)),
            }),
            data: self.keep(&p.data, MAX_FIELD_BYTES),
            // KTAP: the diagnostics before it are its own (TAP: none yet).
            diagnostics: std::mem::take(&mut self.stack[depth].pending_diag),
            subtest,
            line: n,
        };
        let failure = point.is_failure();
        let keep = self.kept_points < MAX_POINTS;
        if keep {
            self.kept_points += 1;
        } else {
            self.report.truncated = true;
        }
        let frame = &mut self.stack[depth];
        if failure {
            frame.failed += 1;
        }
        frame.last_point_kept = keep;
        if keep {
            frame.points.push(point);
        }
    }

    fn plan(&mut self, depth: usize, n: usize, plan: Result<Plan, ()>) {
        let Ok(mut plan) = plan else {
            self.issue(depth, TapError::BadPlan { line: n }, true);
            return;
        };
        plan.line = n;
        let frame = &self.stack[depth];
        if let Some(earlier) = &frame.plan {
            let e = TapError::DuplicatePlan {
                line: n,
                first: plan.first,
                last: plan.last,
                earlier_first: earlier.first,
                earlier_last: earlier.last,
            };
            self.issue(depth, e, true);
            return;
        }
        let (first, last) = (plan.first, plan.last);
        if plan.skip_reason.is_some() && !plan.skips_all() {
            self.issue(
                depth,
                TapError::SkipPlanNotEmpty {
                    line: n,
                    first,
                    last,
                },
                true,
            );
            return;
        }
        if first > last && !plan.skips_all() {
            self.issue(
                depth,
                TapError::ReversedPlan {
                    line: n,
                    first,
                    last,
                },
                true,
            );
            return;
        }
        if first != 1 {
            self.issue(depth, TapError::PlanNotFromOne { line: n }, false);
        }
        if let Some(r) = plan.skip_reason.take() {
            plan.skip_reason = Some(self.keep(&r, MAX_FIELD_BYTES));
        }
        let frame = &mut self.stack[depth];
        frame.plan_after_points = frame.seen > 0;
        frame.plan = Some(plan);
    }

    /// Ends the subtests deeper than `depth`: each becomes its parent's pending child.
    fn close_to(&mut self, depth: usize) {
        while self.stack.len() > depth + 1 {
            let Some(frame) = self.stack.pop() else {
                return;
            };
            let child_depth = self.stack.len();
            if let Some(old) = &frame.pending_child {
                let line = old.line;
                self.issue_in(&frame, TapError::UnconcludedSubtest { line });
            }
            // KTAP: a subtest's plan is optional, and a bailed-out one is not checked.
            let ktap = self.dialect == Dialect::Ktap;
            if !(ktap && (frame.plan.is_none() || frame.bail_out.is_some())) {
                self.check_plan(&frame, child_depth);
            }
            let parent = self.stack.len() - 1;
            // KTAP: diagnostics after its last point wait for the parent's next point.
            if !frame.pending_diag.is_empty() {
                let mut diag = std::mem::take(&mut self.stack[parent].pending_diag);
                for l in frame.pending_diag.lines() {
                    self.append_diag(&mut diag, l);
                }
                self.stack[parent].pending_diag = diag;
            }
            let sub = Subtest {
                name: frame.name,
                plan: frame.plan,
                points: frame.points,
                bail_out: frame.bail_out,
                line: frame.start_line,
            };
            if let Some(old) = self.stack[parent].pending_child.replace(sub) {
                self.issue(
                    parent,
                    TapError::UnconcludedSubtest { line: old.line },
                    false,
                );
            }
        }
    }

    /// Records a problem of a subtest frame already off the stack.
    fn issue_in(&mut self, frame: &Frame, error: TapError) {
        let e = TapError::InSubtest {
            line: frame.start_line,
            source: Box::new(error),
        };
        if self.report.warnings.len() < MAX_ISSUES {
            self.report.warnings.push(e);
        } else {
            self.report.truncated = true;
        }
    }

    /// Checks a finished stream's plan against its points.
    fn check_plan(&mut self, frame: &Frame, depth: usize) {
        let problem = match &frame.plan {
            None => Some(TapError::NoPlan),
            Some(plan) if plan.skips_all() => None,
            Some(plan) if plan.count() != frame.seen => Some(TapError::PlanMismatch {
                planned: plan.count(),
                ran: frame.seen,
            }),
            Some(_) => None,
        };
        if let Some(e) = problem {
            if depth == 0 {
                self.issue(0, e, true);
            } else {
                self.issue_in(frame, e);
            }
        }
    }

    fn finish(&mut self) {
        if let Some(mut y) = self.yaml.take() {
            if !self.done {
                self.issue(
                    y.depth,
                    TapError::UnterminatedYaml { line: y.start_line },
                    false,
                );
            }
            let text = std::mem::take(&mut y.text);
            self.attach_yaml(y.depth, &text);
        }
        if self.done {
            // Bailed out: what was left open is not checked.
            self.stack.truncate(1);
        } else {
            self.close_to(0);
        }
        let Some(mut root) = self.stack.pop() else {
            return;
        };
        if let Some(old) = root.pending_child.take() {
            if !self.done {
                self.issue(0, TapError::UnconcludedSubtest { line: old.line }, false);
            }
        }
        // KTAP: what followed the last point (`# Totals: …`).
        if !root.pending_diag.is_empty() {
            let mut c = std::mem::take(&mut self.report.comments);
            for l in root.pending_diag.lines() {
                self.append_diag(&mut c, l);
            }
            self.report.comments = c;
        }
        if !self.done {
            self.check_plan(&root, 0);
        }
        self.report.plan = root.plan.take();
        self.report.points = std::mem::take(&mut root.points);
        self.report.total = root.seen;
        self.report.failed = root.failed;
    }
}

/// Parses `ok`/`not ok` lines: `(not )?ok[ NUMBER][ -][ DESCRIPTION][ # DIRECTIVE]`. In KTAP
/// the description ends at a `#` that starts it or follows a blank, directive or not.
fn parse_point(content: &str, dialect: Dialect) -> Option<PointLine> {
    let (ok, rest) = if let Some(r) = content.strip_prefix("not ok") {
        (false, r)
    } else if let Some(r) = content.strip_prefix("ok") {
        (true, r)
    } else {
        return None;
    };
    if !matches!(rest.chars().next(), None | Some(' ' | '\t' | '-')) {
        return None;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, rest) = if digits > 0
        && matches!(
            rest[digits..].chars().next(),
            None | Some(' ' | '\t' | '-' | '#')
        ) {
        (rest[..digits].parse::<u64>().ok(), &rest[digits..])
    } else {
        (None, rest)
    };
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = match rest.strip_prefix('-') {
        Some(r) if r.is_empty() || r.starts_with([' ', '\t']) => r.trim_start_matches([' ', '\t']),
        _ => rest,
    };
    let mut data = String::new();
    let (description, directive) = match dialect {
        Dialect::Tap => match split_at_hash(rest) {
            Some((before, after)) => match parse_directive(after, dialect) {
                Some(d) => (unescape(before).trim_end().to_string(), Some(d)),
                None => (unescape(rest).trim_end().to_string(), None),
            },
            None => (unescape(rest).trim_end().to_string(), None),
        },
        Dialect::Ktap => match split_at_spaced_hash(rest) {
            Some((before, after)) => {
                let directive = parse_directive(after, dialect);
                if directive.is_none() {
                    data = unescape(after.trim());
                }
                (unescape(before).trim_end().to_string(), directive)
            }
            None => (unescape(rest).trim_end().to_string(), None),
        },
    };
    Some(PointLine {
        ok,
        number,
        description,
        directive,
        data,
    })
}

/// Splits at the first `#` not escaped by a backslash that starts `s` or follows a blank.
fn split_at_spaced_hash(s: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    let mut after_blank = true;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '#' if after_blank => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
        after_blank = matches!(c, ' ' | '\t');
    }
    None
}

/// Splits at the first `#` not escaped by a backslash.
fn split_at_hash(s: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '#' => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Undoes `\#` and `\\`; other backslashes stay.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next @ ('#' | '\\')) = chars.peek() {
                out.push(next);
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Parses what follows `#` on a test point line as `SKIP reason` or `TODO reason`, and in
/// KTAP also `XFAIL`, `TIMEOUT` or `ERROR reason` (case-insensitive; `skipped` and the like
/// count as SKIP; a `:` before the reason is dropped).
fn parse_directive(after_hash: &str, dialect: Dialect) -> Option<Directive> {
    let t = after_hash.trim_start();
    let word_len = t.len()
        - t.trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .len();
    let word = t[..word_len].to_ascii_lowercase();
    let reason = || {
        let r = t[word_len..].trim_start();
        unescape(r.strip_prefix(':').unwrap_or(r).trim())
    };
    if word.starts_with("skip") {
        Some(Directive::Skip(reason()))
    } else if word.starts_with("todo") {
        Some(Directive::Todo(reason()))
    } else if dialect == Dialect::Tap {
        None
    } else {
        match word.as_str() {
            "xfail" => Some(Directive::Xfail(reason())),
            "timeout" => Some(Directive::Timeout(reason())),
            "error" => Some(Directive::Error(reason())),
            _ => None,
        }
    }
}

/// Parses a plan line, `FIRST..LAST` then optionally `# reason` (Kyua takes anything after
/// the numbers). `None`: not a plan; `Err`: numbers out of range.
fn parse_plan(content: &str) -> Option<Result<Plan, ()>> {
    let first_len = content.len()
        - content
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .len();
    if first_len == 0 {
        return None;
    }
    let after = content[first_len..].strip_prefix("..")?;
    let last_len = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if last_len == 0 {
        return None;
    }
    let (Ok(first), Ok(last)) = (
        content[..first_len].parse::<u64>(),
        after[..last_len].parse::<u64>(),
    ) else {
        return Some(Err(()));
    };
    if last == u64::MAX {
        return Some(Err(()));
    }
    let rest = after[last_len..].trim();
    let skip_reason = rest.strip_prefix('#').map(|c| {
        let c = c.trim_start();
        let word_len = c.len()
            - c.trim_start_matches(|ch: char| ch.is_ascii_alphabetic())
                .len();
        let r = if c[..word_len].to_ascii_lowercase().starts_with("skip") {
            c[word_len..].trim_start()
        } else {
            c
        };
        r.strip_prefix(':').unwrap_or(r).trim().to_string()
    });
    // Only `# SKIP…` makes a plan a skip plan; a plain comment is `1..0`'s reason.
    let is_skip = rest.strip_prefix('#').is_some_and(|c| {
        c.trim_start()
            .get(..4)
            .is_some_and(|w| w.eq_ignore_ascii_case("skip"))
    });
    let skip_reason = match (first, last) {
        (1, 0) => skip_reason,
        _ if is_skip => skip_reason,
        _ => None,
    };
    Some(Ok(Plan {
        first,
        last,
        skip_reason,
        line: 0,
    }))
}

/// `Bail out!` (any case) gives the reason (maybe empty).
fn bail_out_reason(content: &str) -> Option<&str> {
    content
        .get(..9)
        .is_some_and(|w| w.eq_ignore_ascii_case("bail out!"))
        .then(|| content[9..].trim())
}

/// `TAP version N` gives `(false, "N")`, `KTAP version N` `(true, "N")`.
fn version_line(content: &str) -> Option<(bool, &str)> {
    if let Some(v) = content.strip_prefix("TAP version ") {
        Some((false, v))
    } else {
        content.strip_prefix("KTAP version ").map(|v| (true, v))
    }
}

/// Whether a KTAP line is one of TAP's own (which may open a subtest), not a diagnostic or
/// an unknown line.
fn is_tap_line(content: &str) -> bool {
    parse_point(content, Dialect::Ktap).is_some()
        || parse_plan(content).is_some()
        || bail_out_reason(content).is_some()
        || version_line(content).is_some()
        || subtest_header(content).is_some()
        || content.starts_with("pragma ")
}

/// `# Totals: pass:N fail:N …`, parsed; unknown keys are ignored. `None` when no count is
/// there.
fn parse_totals(content: &str, line: usize) -> Option<Totals> {
    let rest = content
        .strip_prefix('#')?
        .trim_start()
        .strip_prefix("Totals:")?;
    let mut totals = Totals {
        line,
        ..Totals::default()
    };
    let mut any = false;
    for field in rest.split_whitespace() {
        let Some((key, value)) = field.split_once(':') else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        any = true;
        match key {
            "pass" => totals.pass = value,
            "fail" => totals.fail = value,
            "xfail" => totals.xfail = value,
            "xpass" => totals.xpass = value,
            "skip" => totals.skip = value,
            "error" => totals.error = value,
            "total" => totals.total = Some(value),
            _ => {}
        }
    }
    any.then_some(totals)
}

/// `# Subtest: NAME` or `# Subtest` gives the name (maybe empty).
fn subtest_header(content: &str) -> Option<&str> {
    let rest = content
        .strip_prefix('#')?
        .trim_start()
        .strip_prefix("Subtest")?;
    match rest.strip_prefix(':') {
        Some(name) => Some(name.trim()),
        None if rest.trim().is_empty() => Some(""),
        None => None,
    }
}

/// The program's result and one sub-result per test point. See the module docs.
pub fn result(report: &TapReport, outcome: &RunOutcome) -> (TestResult, Vec<SubResult>) {
    let verdict = match outcome.finished() {
        None => TestResult::broken("Test case timed out").with_cause(Cause::Timeout),
        Some(ExitStatus::Signal(sig)) => TestResult::broken(format!("Received signal {sig}")),
        Some(ExitStatus::Code(code)) => {
            if let Some(e) = report.errors.first() {
                TestResult::broken(format!(
                    "TAP test program yielded invalid data: {}",
                    e.reason()
                ))
            } else if let Some(reason) = &report.bail_out {
                if reason.is_empty() {
                    TestResult::failed("Bailed out")
                } else {
                    TestResult::failed(format!("Bailed out: {reason}"))
                }
            } else if let Some(reason) = report.skip_all_reason() {
                TestResult::skipped(reason)
            } else if report.failed == 0 {
                if code == 0 {
                    TestResult::passed()
                } else {
                    TestResult::broken(format!(
                        "Dubious test program: reported all tests as passed but returned \
                         exit code {code}"
                    ))
                }
            } else {
                TestResult::failed(format!(
                    "{} of {} tests failed",
                    report.failed, report.total
                ))
            }
        }
    };
    let mut subs = Vec::new();
    flatten(&report.points, "", &mut subs);
    (verdict, subs)
}

/// A kselftest program's result as kselftest/runner.sh (Linux 6.1) decides it, and one
/// sub-result per test point of what it printed (read with [`parse_ktap`]).
///
/// The runner looks at the exit status only: 0 passed; 4 (`KSFT_SKIP`) skipped, here with the
/// reason the program gave (its `1..0 # SKIP` plan's, else its last skipped point's), else
/// `KSFT_SKIP`; anything else failed, with the runner's `exit=N` (a signal is `exit=128+N`
/// there; here "Received signal N"). A program killed at its timeout is broken "Test case
/// timed out" with the timeout cause, as in the other interfaces (the runner prints
/// `not ok N selftests: DIR: NAME # TIMEOUT 45 seconds`, a failure). What the program printed
/// never changes the verdict: not even a `Bail out!`, a `not ok` or a missing plan.
pub fn kselftest_result(report: &TapReport, outcome: &RunOutcome) -> (TestResult, Vec<SubResult>) {
    let verdict = match outcome.finished() {
        // kselftest/runner.sh: `not ok N … # TIMEOUT T seconds`, a failure.
        None => TestResult::failed("Timed out").with_cause(Cause::Timeout),
        Some(ExitStatus::Code(0)) => TestResult::passed(),
        Some(ExitStatus::Code(KSFT_SKIP)) => {
            let last_skip = report.points.iter().rev().find_map(|p| match &p.directive {
                Some(Directive::Skip(r)) if !r.is_empty() => Some(r.as_str()),
                _ => None,
            });
            let reason = report
                .plan
                .as_ref()
                .filter(|p| p.skips_all())
                .and_then(|p| p.skip_reason.as_deref())
                .filter(|r| !r.is_empty())
                .or(last_skip)
                .unwrap_or("KSFT_SKIP");
            TestResult::skipped(reason)
        }
        Some(ExitStatus::Code(code)) => TestResult::failed(format!("exit={code}")),
        Some(ExitStatus::Signal(sig)) => TestResult::failed(format!("Received signal {sig}")),
    };
    let mut subs = Vec::new();
    flatten(&report.points, "", &mut subs);
    (verdict, subs)
}

/// kselftest.h's exit status for a skipped program, which kselftest/runner.sh reports as
/// `ok N … # SKIP`.
pub const KSFT_SKIP: i32 = 4;

fn flatten(points: &[TestPoint], prefix: &str, out: &mut Vec<SubResult>) {
    for p in points {
        let path = format!("{prefix}{}", p.number);
        let name = if p.description.is_empty() {
            path.clone()
        } else {
            format!("{path} - {}", p.description)
        };
        let or_none = |r: &str| {
            if r.is_empty() {
                "No reason specified".to_string()
            } else {
                r.to_string()
            }
        };
        let with = |what: &str, r: &str| {
            if r.is_empty() {
                what.to_string()
            } else {
                format!("{what}: {r}")
            }
        };
        let result = match (&p.directive, p.ok) {
            (Some(Directive::Skip(r)), _) => TestResult::skipped(or_none(r)),
            (Some(Directive::Todo(r) | Directive::Xfail(r)), false) => {
                TestResult::expected_failure(or_none(r))
            }
            (Some(Directive::Xfail(r)), true) => TestResult::expected_failure(or_none(r)),
            (Some(Directive::Timeout(r)), false) => TestResult::failed(with("Timed out", r)),
            (Some(Directive::Error(r)), false) => TestResult::broken(with("Error", r)),
            (Some(Directive::Todo(_) | Directive::Timeout(_) | Directive::Error(_)), true)
            | (None, true) => TestResult::passed(),
            (None, false) => TestResult::failed(with("not ok", &p.data)),
        };
        out.push(SubResult {
            name,
            result,
            diagnostics: p.diagnostics.clone(),
        });
        if let Some(sub) = &p.subtest {
            flatten(&sub.points, &format!("{path}."), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use lab_model::ResultType;
    use proptest::prelude::*;

    use super::*;

    fn code(c: i32) -> RunOutcome {
        RunOutcome::exited(ExitStatus::Code(c))
    }

    #[test]
    fn parses_test_points() {
        let table: &[(&str, bool, u64, &str, Option<Directive>)] = &[
            ("ok", true, 1, "", None),
            ("not ok", false, 1, "", None),
            ("ok 1", true, 1, "", None),
            ("ok 1 - first", true, 1, "first", None),
            ("ok - first", true, 1, "first", None),
            ("ok first thing", true, 1, "first thing", None),
            ("ok 1 -dash", true, 1, "-dash", None),
            ("ok 1 - a - b", true, 1, "a - b", None),
            (
                "not ok 1 - x # TODO later",
                false,
                1,
                "x",
                Some(Directive::Todo("later".into())),
            ),
            (
                "not ok 1 - x # todo",
                false,
                1,
                "x",
                Some(Directive::Todo(String::new())),
            ),
            (
                "ok 1 # SKIP no net",
                true,
                1,
                "",
                Some(Directive::Skip("no net".into())),
            ),
            (
                "ok 1 # skipped: no net",
                true,
                1,
                "",
                Some(Directive::Skip("no net".into())),
            ),
            (
                "ok 1 - x # Skip",
                true,
                1,
                "x",
                Some(Directive::Skip(String::new())),
            ),
            (
                "ok 1 - a \\# b # SKIP c",
                true,
                1,
                "a # b",
                Some(Directive::Skip("c".into())),
            ),
            ("ok 1 - a \\\\ b", true, 1, "a \\ b", None),
            (
                "ok 1 - a # not a directive",
                true,
                1,
                "a # not a directive",
                None,
            ),
            (
                "not ok 1 - do not skip me",
                false,
                1,
                "do not skip me",
                None,
            ),
            ("ok 1\t- tab", true, 1, "tab", None),
            ("ok 99999999999999999999999 - big", true, 1, "big", None),
        ];
        for (line, ok, number, desc, directive) in table {
            let r = parse(&format!("1..1\n{line}\n"));
            assert!(r.errors.is_empty(), "{line}: {:?}", r.errors);
            let p = &r.points[0];
            assert_eq!(p.ok, *ok, "{line}");
            assert_eq!(p.number, *number, "{line}");
            assert_eq!(p.description, *desc, "{line}");
            assert_eq!(p.directive, *directive, "{line}");
        }
        for not_a_point in [
            "okay",
            "ok1",
            "not okay 1",
            "# ok 1",
            " ok 1",
            "\tok 1",
            "Ok 1",
        ] {
            let r = parse(&format!("1..0\n{not_a_point}\n"));
            assert_eq!(r.total, 0, "{not_a_point}");
        }
    }

    #[test]
    fn parses_plans() {
        type Row<'a> = (&'a str, Option<(u64, u64, Option<&'a str>)>, Vec<TapError>);
        let table: Vec<Row<'_>> = vec![
            ("1..2\nok\nok\n", Some((1, 2, None)), vec![]),
            ("ok\nok\n1..2\n", Some((1, 2, None)), vec![]),
            ("1..0\n", Some((1, 0, None)), vec![]),
            ("1..0 # SKIP no net\n", Some((1, 0, Some("no net"))), vec![]),
            (
                "1..0 # skip: no net\n",
                Some((1, 0, Some("no net"))),
                vec![],
            ),
            (
                "1..0 # no tests here\n",
                Some((1, 0, Some("no tests here"))),
                vec![],
            ),
            ("1..2 # just a note\nok\nok\n", Some((1, 2, None)), vec![]),
            (
                "1..2 # SKIP nope\n",
                None,
                vec![
                    TapError::SkipPlanNotEmpty {
                        line: 1,
                        first: 1,
                        last: 2,
                    },
                    TapError::NoPlan,
                ],
            ),
            (
                "3..1\n",
                None,
                vec![
                    TapError::ReversedPlan {
                        line: 1,
                        first: 3,
                        last: 1,
                    },
                    TapError::NoPlan,
                ],
            ),
            (
                "1..1\nok\n1..1\n",
                Some((1, 1, None)),
                vec![TapError::DuplicatePlan {
                    line: 3,
                    first: 1,
                    last: 1,
                    earlier_first: 1,
                    earlier_last: 1,
                }],
            ),
            ("ok\n", None, vec![TapError::NoPlan]),
            ("", None, vec![TapError::NoPlan]),
            (
                "1..3\nok\nok\n",
                Some((1, 3, None)),
                vec![TapError::PlanMismatch { planned: 3, ran: 2 }],
            ),
            (
                "ok\n1..2\n",
                Some((1, 2, None)),
                vec![TapError::PlanMismatch { planned: 2, ran: 1 }],
            ),
            (
                "1..99999999999999999999999\n",
                None,
                vec![TapError::BadPlan { line: 1 }, TapError::NoPlan],
            ),
            ("1..0 # SKIP x\nok\n", Some((1, 0, Some("x"))), vec![]),
            ("2..3\nok\nok\n", Some((2, 3, None)), vec![]),
        ];
        for (input, plan, errors) in table {
            let r = parse(input);
            let got = r
                .plan
                .as_ref()
                .map(|p| (p.first, p.last, p.skip_reason.as_deref()));
            assert_eq!(got, plan, "{input:?}");
            assert_eq!(r.errors, errors, "{input:?}");
        }
    }

    #[test]
    fn records_warnings() {
        let r = parse("TAP version 14\n1..3\nok 1\nok 3\nok 3\n");
        assert_eq!(r.version, Some(14));
        assert_eq!(
            r.warnings,
            [TapError::OutOfSequence {
                line: 4,
                number: 3,
                expected: 2
            },]
        );
        let r = parse("ok 1\n1..2\nok 2\n");
        assert!(r.errors.is_empty());
        assert_eq!(r.warnings, [TapError::PlanInMiddle { line: 2 }]);
        let r = parse("1..1\nTAP version 14\nok\n");
        assert_eq!(r.version, None);
        assert_eq!(r.warnings, [TapError::MisplacedVersion { line: 2 }]);
        let r = parse("TAP version 12\n1..0\n");
        assert!(matches!(
            r.warnings[..],
            [TapError::UnsupportedVersion { line: 1, .. }]
        ));
        let r = parse("TAP version 13\n1..0 # SKIP x\nok\n");
        assert_eq!(r.version, Some(13));
        assert_eq!(r.warnings, [TapError::PointsInSkippedPlan { line: 3 }]);
        let r = parse("2..2\nok\n");
        assert_eq!(r.warnings, [TapError::PlanNotFromOne { line: 1 }]);
    }

    #[test]
    fn attaches_diagnostics() {
        let input = "TAP version 14\n\
                     # before anything\n\
                     1..3\n\
                     not ok 1 - first\n  \
                     ---\n  \
                     found: false\n  \
                     at:\n    \
                     line: 3\n  \
                     ...\n\
                     # after yaml\n\
                     ok 2 - second\n\
                     # about second\n\
                     junk line\n\
                     pragma +strict\n\
                     ok 3\n  \
                     ---\n  \
                     unterminated: true\n";
        let r = parse(input);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.comments, "# before anything\n");
        assert_eq!(
            r.points[0].diagnostics,
            "---\nfound: false\nat:\n  line: 3\n...\n# after yaml\n"
        );
        assert_eq!(r.points[1].diagnostics, "# about second\n");
        assert_eq!(r.points[2].diagnostics, "---\nunterminated: true\n...\n");
        assert_eq!(r.pragmas, ["+strict"]);
        assert_eq!(r.warnings, [TapError::UnterminatedYaml { line: 16 }]);
        // A YAML block must follow its point at once.
        let r = parse("1..1\nok 1\n# c\n  ---\n  a: b\n  ...\n");
        assert_eq!(r.points[0].diagnostics, "# c\n");
        // A YAML block ends at a line indented less than it.
        let r = parse("1..2\nok 1\n  ---\n  a: 1\nok 2\n");
        assert_eq!(r.total, 2);
        assert_eq!(r.points[0].diagnostics, "---\na: 1\n...\n");
        assert_eq!(r.warnings, [TapError::UnterminatedYaml { line: 3 }]);
        // CRLF line ends.
        let r = parse("1..1\r\nok 1 - x\r\n");
        assert_eq!(r.points[0].description, "x");
        assert!(r.errors.is_empty());
    }

    #[test]
    fn bails_out() {
        let r = parse("1..3\nok 1\nBail out! db down\nnot ok 2\n1..3\n");
        assert_eq!(r.bail_out.as_deref(), Some("db down"));
        assert!(r.errors.is_empty());
        assert_eq!(r.total, 1);
        let r = parse("bail out!\n");
        assert_eq!(r.bail_out.as_deref(), Some(""));
        assert!(r.errors.is_empty());
        let r = parse("1..1\n    1..2\n    ok 1\n    Bail out! deep\n");
        assert_eq!(r.bail_out.as_deref(), Some("deep"));
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        // An error before the bail out still stands, as in Kyua.
        let r = parse("1..1\n1..1\nBail out!\n");
        assert_eq!(r.errors.len(), 1);
    }

    #[test]
    fn parses_subtests() {
        let input = "TAP version 14\n\
                     1..3\n\
                     # Subtest: foo\n    \
                     1..2\n    \
                     ok 1 - inner one\n    \
                     ok 2 - inner two\n\
                     ok 1 - foo\n    \
                     # Subtest: bar\n    \
                     ok 1 - bar one\n    \
                     not ok 2 - bar two\n      \
                     ---\n      \
                     wanted: true\n      \
                     ...\n        \
                     1..1\n        \
                     ok 1 - deep\n    \
                     ok 3 - nested\n    \
                     1..3\n\
                     not ok 2 - bar\n  \
                     ---\n  \
                     fail: 1\n  \
                     ...\n\
                     ok 3 - plain\n";
        let r = parse(input);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!((r.total, r.failed), (3, 1));
        let foo = r.points[0].subtest.as_ref().expect("foo's subtest");
        assert_eq!(foo.name.as_deref(), Some("foo"));
        assert_eq!(foo.points.len(), 2);
        assert_eq!(foo.plan.as_ref().map(Plan::count), Some(2));
        let bar = r.points[1].subtest.as_ref().expect("bar's subtest");
        assert_eq!(bar.name.as_deref(), Some("bar"));
        assert_eq!(bar.points.len(), 3);
        assert_eq!(bar.points[1].diagnostics, "---\nwanted: true\n...\n");
        assert_eq!(
            bar.points[2].subtest.as_ref().map(|s| s.points.len()),
            Some(1)
        );
        assert_eq!(r.points[1].diagnostics, "---\nfail: 1\n...\n");
        assert!(r.points[2].subtest.is_none());

        let (verdict, subs) = result(&r, &code(1));
        assert_eq!(verdict, TestResult::failed("1 of 3 tests failed"));
        let names: Vec<_> = subs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "1 - foo",
                "1.1 - inner one",
                "1.2 - inner two",
                "2 - bar",
                "2.1 - bar one",
                "2.2 - bar two",
                "2.3 - nested",
                "2.3.1 - deep",
                "3 - plain",
            ]
        );
        assert_eq!(subs[5].result.kind, ResultType::Failed);
        assert_eq!(subs[5].diagnostics, "---\nwanted: true\n...\n");
    }

    #[test]
    fn subtest_problems_are_warnings() {
        // No concluding point, then a subtest with no plan, then one with a short plan.
        let input = "1..2\n    \
                     ok 1\n\
                     # Subtest: b\n    \
                     ok 1\n\
                     ok 1 - b\n    \
                     1..2\n    \
                     ok 1\n\
                     ok 2 - c\n";
        let r = parse(input);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(
            r.warnings,
            [
                TapError::InSubtest {
                    line: 2,
                    source: Box::new(TapError::NoPlan)
                },
                TapError::UnconcludedSubtest { line: 2 },
                TapError::InSubtest {
                    line: 4,
                    source: Box::new(TapError::NoPlan)
                },
                TapError::InSubtest {
                    line: 6,
                    source: Box::new(TapError::PlanMismatch { planned: 2, ran: 1 })
                },
            ]
        );
        assert_eq!(
            r.points[0].subtest.as_ref().and_then(|s| s.name.as_deref()),
            Some("b")
        );
        // A subtest left open at the end.
        let r = parse("1..0\n    1..1\n    ok 1\n");
        assert_eq!(r.warnings, [TapError::UnconcludedSubtest { line: 2 }]);
        // Too deep.
        let deep = format!("1..0\n{}ok 1\n", " ".repeat(4 * (MAX_DEPTH + 1)));
        assert_eq!(parse(&deep).warnings, [TapError::TooDeep { line: 2 }]);
    }

    #[test]
    fn verdicts_are_kyuas() {
        let table: &[(&str, RunOutcome, ResultType, &str, Option<Cause>)] = &[
            ("1..2\nok 1\nok 2\n", code(0), ResultType::Passed, "", None),
            (
                "1..2\nok 1\nnot ok 2\n",
                code(1),
                ResultType::Failed,
                "1 of 2 tests failed",
                None,
            ),
            (
                "1..2\nok 1\nnot ok 2\n",
                code(0),
                ResultType::Failed,
                "1 of 2 tests failed",
                None,
            ),
            (
                "1..3\nok 1\nnot ok 2 # TODO x\nnot ok 3 # SKIP y\n",
                code(0),
                ResultType::Passed,
                "",
                None,
            ),
            (
                "1..1\nok 1\n",
                code(2),
                ResultType::Broken,
                "Dubious test program: reported all tests as passed but returned exit code 2",
                None,
            ),
            (
                "1..0 # SKIP no net\n",
                code(0),
                ResultType::Skipped,
                "no net",
                None,
            ),
            (
                "1..0 # SKIP\n",
                code(3),
                ResultType::Skipped,
                "No reason specified",
                None,
            ),
            (
                "1..0\n",
                code(0),
                ResultType::Skipped,
                "No reason specified",
                None,
            ),
            (
                "1..2\nok 1\nBail out!\n",
                code(0),
                ResultType::Failed,
                "Bailed out",
                None,
            ),
            (
                "1..2\nBail out! db down\n",
                code(1),
                ResultType::Failed,
                "Bailed out: db down",
                None,
            ),
            (
                "ok 1\n",
                code(0),
                ResultType::Broken,
                "TAP test program yielded invalid data: Output did not contain any TAP plan \
                 and the program did not bail out",
                None,
            ),
            (
                "1..3\nok 1\n",
                code(0),
                ResultType::Broken,
                "TAP test program yielded invalid data: Reported plan differs from actual \
                 executed tests",
                None,
            ),
            (
                "1..1\nok 1\n1..1\n",
                code(0),
                ResultType::Broken,
                "TAP test program yielded invalid data: Found duplicate plan 1..1 (saw 1..1 \
                 earlier)",
                None,
            ),
            (
                "3..1\n",
                code(0),
                ResultType::Broken,
                "TAP test program yielded invalid data: Found reversed plan 3..1",
                None,
            ),
            (
                "1..2 # SKIP x\n",
                code(0),
                ResultType::Broken,
                "TAP test program yielded invalid data: Skipped plan must be 1..0",
                None,
            ),
            (
                "1..1\nok 1\n",
                RunOutcome::exited(ExitStatus::Signal(9)),
                ResultType::Broken,
                "Received signal 9",
                None,
            ),
            (
                "1..1\nok 1\n",
                RunOutcome::timeout(),
                ResultType::Broken,
                "Test case timed out",
                Some(Cause::Timeout),
            ),
        ];
        for (input, outcome, kind, reason, cause) in table {
            let (r, _) = result(&parse(input), outcome);
            assert_eq!(r.kind, *kind, "{input:?}: {r}");
            assert_eq!(r.reason.as_deref().unwrap_or(""), *reason, "{input:?}");
            assert_eq!(r.cause, *cause, "{input:?}");
        }
    }

    #[test]
    fn sub_results_per_point() {
        let input = "1..5\nok 1 - a\nnot ok 2 - b\n# why b\nok 3 # SKIP\n\
                     not ok 4 - d # TODO soon\nok 5 # TODO done\n";
        let (_, subs) = result(&parse(input), &code(1));
        let got: Vec<_> = subs
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.result.to_string(),
                    s.diagnostics.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("1 - a", "passed".to_string(), ""),
                ("2 - b", "failed: not ok".to_string(), "# why b\n"),
                ("3", "skipped: No reason specified".to_string(), ""),
                ("4 - d", "expected_failure: soon".to_string(), ""),
                ("5", "passed".to_string(), ""),
            ]
        );
    }

    #[test]
    fn bounds_what_it_keeps() {
        let mut input = String::from("1..0\n");
        for _ in 0..MAX_POINTS + 10 {
            input.push_str("ok\n");
        }
        let r = parse(&input);
        assert_eq!(r.points.len(), MAX_POINTS);
        assert_eq!(r.total, (MAX_POINTS + 10) as u64);
        assert!(r.truncated);

        let long = "x".repeat(MAX_DIAGNOSTICS_BYTES * 2);
        let r = parse(&format!("1..1\nok 1 - {long}\n# {long}\n# {long}\n"));
        assert_eq!(r.points[0].description.len(), MAX_FIELD_BYTES);
        assert!(r.points[0].diagnostics.len() <= MAX_DIAGNOSTICS_BYTES);
        assert!(r.truncated);

        let many_dups = "1..1\n".repeat(MAX_ISSUES * 2);
        let r = parse(&many_dups);
        assert!(r.errors.len() <= MAX_ISSUES);
    }

    /// The points of `points` (and their subtests'), flattened as `path ok description`.
    fn outline(points: &[TestPoint], prefix: &str, out: &mut Vec<String>) {
        for p in points {
            let path = format!("{prefix}{}", p.number);
            out.push(format!(
                "{path} {} {}",
                if p.ok { "ok" } else { "not-ok" },
                p.description
            ));
            if let Some(sub) = &p.subtest {
                outline(&sub.points, &format!("{path}."), out);
            }
        }
    }

    fn outline_of(r: &TapReport) -> Vec<String> {
        let mut out = Vec::new();
        outline(&r.points, "", &mut out);
        out
    }

    #[test]
    fn ktap_directives_and_data() {
        let table: &[(&str, bool, &str, Option<Directive>, &str)] = &[
            (
                "ok 1 test # SKIP necessary dependency unavailable",
                true,
                "test",
                Some(Directive::Skip("necessary dependency unavailable".into())),
                "",
            ),
            (
                "not ok 1 test # TIMEOUT 30 seconds",
                false,
                "test",
                Some(Directive::Timeout("30 seconds".into())),
                "",
            ),
            (
                "not ok 3 selftests: seccomp: seccomp_bpf # exit=1",
                false,
                "selftests: seccomp: seccomp_bpf",
                None,
                "exit=1",
            ),
            (
                "ok 5 check return code # rcode=0",
                true,
                "check return code",
                None,
                "rcode=0",
            ),
            // kselftest.h's ksft_test_result_xfail / _error / _skip: no description.
            (
                "ok 2 # XFAIL kernel lacks it",
                true,
                "",
                Some(Directive::Xfail("kernel lacks it".into())),
                "",
            ),
            (
                "not ok 4 # error open /dev/rtc0: No such file",
                false,
                "",
                Some(Directive::Error("open /dev/rtc0: No such file".into())),
                "",
            ),
            (
                "ok 7 # SKIP need CAP_SYS_ADMIN",
                true,
                "",
                Some(Directive::Skip("need CAP_SYS_ADMIN".into())),
                "",
            ),
            (
                "ok 1 - dashed # todo",
                true,
                "dashed",
                Some(Directive::Todo(String::new())),
                "",
            ),
            // A `#` inside a word does not start a directive; an escaped one is text.
            ("not ok 2 foo#bar", false, "foo#bar", None, ""),
            (
                "ok 1 a \\# b # skip c",
                true,
                "a # b",
                Some(Directive::Skip("c".into())),
                "",
            ),
            (
                "ok 1 selftests: size: get_size # SKIP",
                true,
                "selftests: size: get_size",
                Some(Directive::Skip(String::new())),
                "",
            ),
        ];
        for (line, ok, desc, directive, data) in table {
            let r = parse_ktap(&format!("TAP version 13\n1..1\n{line}\n"));
            assert_eq!(r.dialect, Dialect::Ktap);
            assert!(r.errors.is_empty(), "{line}: {:?}", r.errors);
            let p = &r.points[0];
            assert_eq!(p.ok, *ok, "{line}");
            assert_eq!(p.description, *desc, "{line}");
            assert_eq!(p.directive, *directive, "{line}");
            assert_eq!(p.data, *data, "{line}");
        }
        // TAP 14 keeps its two directives and its descriptions.
        let r = parse("1..2\nnot ok 1 test # TIMEOUT 30 seconds\nok 2 # XFAIL x\n");
        assert_eq!(r.dialect, Dialect::Tap);
        assert_eq!(r.points[0].description, "test # TIMEOUT 30 seconds");
        assert_eq!(r.points[0].directive, None);
        assert_eq!(r.points[1].description, "# XFAIL x");
        assert_eq!(r.failed, 1);
        // In KTAP, XFAIL keeps a `not ok` from counting; TIMEOUT and ERROR do not.
        let r = parse_ktap(
            "1..3\nnot ok 1 a # XFAIL\nnot ok 2 b # TIMEOUT 5 seconds\nnot ok 3 # error e\n",
        );
        assert_eq!((r.total, r.failed), (3, 2));
        let (_, subs) = result(&r, &code(1));
        let got: Vec<_> = subs.iter().map(|s| s.result.to_string()).collect();
        assert_eq!(
            got,
            [
                "expected_failure: No reason specified",
                "failed: Timed out: 5 seconds",
                "broken: Error: e",
            ]
        );
    }

    /// What kselftest's run_kselftest.sh (6.1) prints for one collection: the runner's own TAP
    /// 13, each program's output prefixed by `# `, a failing kselftest_harness program, one
    /// killed at its timeout before printing any TAP, one that skips.
    const RUNNER_OUTPUT: &str = "\
TAP version 13
1..3
# selftests: seccomp: seccomp_bpf
# TAP version 13
# 1..4
# # Starting 4 tests from 2 test cases.
# #  RUN           global.kcmp ...
# #            OK  global.kcmp
# ok 1 global.kcmp
# #  RUN           global.user_notification_basic ...
# # seccomp_bpf.c:4158:user_notification_basic:Expected 0 (0) == ret (-1)
# # user_notification_basic: Test failed at step #3
# #          FAIL  global.user_notification_basic
# not ok 2 global.user_notification_basic
# #  RUN           TRAP.dfl ...
# #            OK  TRAP.dfl
# ok 3 TRAP.dfl
# #  RUN           global.syscall_restart ...
# #      SKIP      ptrace not permitted
# #            OK  global.syscall_restart
# ok 4 # SKIP ptrace not permitted
# # FAILED: 3 / 4 tests passed.
# # Totals: pass:2 fail:1 xfail:0 xpass:0 skip:1 error:0
not ok 1 selftests: seccomp: seccomp_bpf # exit=1
# selftests: seccomp: seccomp_benchmark
# Running on:
# Linux lab 6.1.0-57-cloud-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 x86_64 GNU/Linux
# Current BPF sysctl settings:
# net.core.bpf_jit_enable = 1
# Calibrating sample size for 15 seconds worth of syscalls ...
#
not ok 2 selftests: seccomp: seccomp_benchmark # TIMEOUT 120 seconds
# selftests: seccomp: get_size
# TAP version 13
# 1..0 # SKIP not on this platform
ok 3 selftests: seccomp: get_size # SKIP
";

    #[test]
    fn parses_kselftest_runner_output() {
        let r = parse_ktap(RUNNER_OUTPUT);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.version, Some(13));
        assert_eq!((r.total, r.failed), (3, 2));
        assert_eq!(
            outline_of(&r),
            [
                "1 not-ok selftests: seccomp: seccomp_bpf",
                "1.1 ok global.kcmp",
                "1.2 not-ok global.user_notification_basic",
                "1.3 ok TRAP.dfl",
                "1.4 ok ",
                "2 not-ok selftests: seccomp: seccomp_benchmark",
                "3 ok selftests: seccomp: get_size",
            ]
        );
        let bpf = &r.points[0];
        assert_eq!(bpf.data, "exit=1");
        // The runner's header before the program, its summary after.
        assert_eq!(
            bpf.diagnostics,
            "# selftests: seccomp: seccomp_bpf\n\
             # FAILED: 3 / 4 tests passed.\n\
             # Totals: pass:2 fail:1 xfail:0 xpass:0 skip:1 error:0\n"
        );
        let sub = bpf.subtest.as_ref().expect("seccomp_bpf's own output");
        assert_eq!(sub.plan.as_ref().map(Plan::count), Some(4));
        assert_eq!(sub.bail_out, None);
        // A harness test's log lines belong to its result line, after them.
        assert_eq!(
            sub.points[1].diagnostics,
            "#  RUN           global.user_notification_basic ...\n\
             # seccomp_bpf.c:4158:user_notification_basic:Expected 0 (0) == ret (-1)\n\
             # user_notification_basic: Test failed at step #3\n\
             #          FAIL  global.user_notification_basic\n"
        );
        assert_eq!(
            sub.points[3].directive,
            Some(Directive::Skip("ptrace not permitted".into()))
        );
        let bench = &r.points[1];
        assert_eq!(
            bench.directive,
            Some(Directive::Timeout("120 seconds".into()))
        );
        assert!(bench.subtest.is_none());
        assert!(bench
            .diagnostics
            .starts_with("# selftests: seccomp: seccomp_benchmark\n# Running on:\n"));
        let skip = r.points[2].subtest.as_ref().expect("get_size's output");
        assert_eq!(
            skip.plan.as_ref().and_then(|p| p.skip_reason.as_deref()),
            Some("not on this platform")
        );

        let (verdict, subs) = result(&r, &code(0));
        assert_eq!(verdict, TestResult::failed("2 of 3 tests failed"));
        let got: Vec<_> = subs
            .iter()
            .map(|s| format!("{}: {}", s.name, s.result))
            .collect();
        assert_eq!(
            got,
            [
                "1 - selftests: seccomp: seccomp_bpf: failed: not ok: exit=1",
                "1.1 - global.kcmp: passed",
                "1.2 - global.user_notification_basic: failed: not ok",
                "1.3 - TRAP.dfl: passed",
                "1.4: skipped: ptrace not permitted",
                "2 - selftests: seccomp: seccomp_benchmark: failed: Timed out: 120 seconds",
                "3 - selftests: seccomp: get_size: skipped: No reason specified",
            ]
        );
    }

    /// What the kernel's run_kselftest.sh (6.1) printed for suites/kselftest's `nested` and
    /// `timeouts` collections (scripts/kselftest-reference --tap), verbatim: KUnit-style KTAP
    /// inside the runner's prefix, and a program killed at its timeout.
    const BUNDLED_RUNNER_OUTPUT: &str = "\
TAP version 13
1..2
# selftests: nested: ktap_subtests.sh
# KTAP version 1
# 1..2
#     KTAP version 1
#     # Subtest: strings
#     1..3
#     # strings_upper: initializing
#     ok 1 strings_upper
#     ok 2 strings_lower
#         KTAP version 1
#         # Subtest: strings_param
#         ok 1 empty
#         ok 2 ascii
#         ok 3 utf8 # SKIP no locale
#     # strings_param: pass:2 fail:0 skip:1 total:3
#     ok 3 strings_param
# # strings: pass:3 fail:0 skip:0 total:3
# ok 1 strings
#     KTAP version 1
#     # Subtest: numbers
#     1..2
#     ok 1 numbers_add
#     ok 2 numbers_overflow # SKIP not on this architecture
# # numbers: pass:1 fail:0 skip:1 total:2
# ok 2 numbers
# # Totals: pass:5 fail:0 skip:2 total:7
ok 1 selftests: nested: ktap_subtests.sh
# selftests: nested: directives.sh
# TAP version 13
# 1..3
# ok 1 # XFAIL known kernel limitation
# ok 2 # SKIP needs a second CPU
# ok 3 works
# # Totals: pass:1 fail:0 xfail:1 xpass:0 skip:1 error:0
ok 2 selftests: nested: directives.sh
TAP version 13
1..2
# selftests: timeouts: in_time.sh
# TAP version 13
# 1..1
# ok 1 finished within the timeout
# # Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0
ok 1 selftests: timeouts: in_time.sh
# selftests: timeouts: hang.sh
# TAP version 13
# 1..2
# ok 1 started
#
not ok 2 selftests: timeouts: hang.sh # TIMEOUT 5 seconds
";

    #[test]
    fn parses_the_runner_on_the_bundled_tree() {
        // Two collections: two TAP headers and plans, as the 6.1 runner prints them.
        let (nested, timeouts) = BUNDLED_RUNNER_OUTPUT.split_at(
            BUNDLED_RUNNER_OUTPUT
                .rfind("TAP version 13\n1..2\n")
                .unwrap_or(0),
        );
        let r = parse_ktap(nested);
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        assert_eq!(
            outline_of(&r),
            [
                "1 ok selftests: nested: ktap_subtests.sh",
                "1.1 ok strings",
                "1.1.1 ok strings_upper",
                "1.1.2 ok strings_lower",
                "1.1.3 ok strings_param",
                "1.1.3.1 ok empty",
                "1.1.3.2 ok ascii",
                "1.1.3.3 ok utf8",
                "1.2 ok numbers",
                "1.2.1 ok numbers_add",
                "1.2.2 ok numbers_overflow",
                "2 ok selftests: nested: directives.sh",
                "2.1 ok ",
                "2.2 ok ",
                "2.3 ok works",
            ]
        );
        let ktap = r.points[0]
            .subtest
            .as_ref()
            .expect("ktap_subtests.sh's output");
        assert_eq!(
            ktap.points[0]
                .subtest
                .as_ref()
                .and_then(|s| s.name.as_deref()),
            Some("strings")
        );
        let (verdict, subs) = result(&r, &code(0));
        assert_eq!(verdict, TestResult::passed());
        let kinds: Vec<_> = subs.iter().map(|s| s.result.kind.name()).collect();
        assert_eq!(
            kinds,
            [
                "passed",
                "passed",
                "passed",
                "passed",
                "passed",
                "passed",
                "passed",
                "skipped",
                "passed",
                "passed",
                "skipped",
                "passed",
                "expected_failure",
                "skipped",
                "passed",
            ]
        );

        let r = parse_ktap(timeouts);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        // hang.sh planned two points and printed one before it was killed.
        assert_eq!(
            r.warnings,
            [TapError::InSubtest {
                line: 10,
                source: Box::new(TapError::PlanMismatch { planned: 2, ran: 1 })
            }]
        );
        let hang = &r.points[1];
        assert_eq!(hang.directive, Some(Directive::Timeout("5 seconds".into())));
        assert_eq!(hang.subtest.as_ref().map(|s| s.points.len()), Some(1));
        assert_eq!(
            result(&r, &code(0)).0,
            TestResult::failed("1 of 2 tests failed")
        );
    }

    #[test]
    fn prefixed_bail_out_ends_that_program_only() {
        let input = "TAP version 13\n\
                     1..2\n\
                     # selftests: timens: timens\n\
                     # TAP version 13\n\
                     # 1..10\n\
                     # ok 1 Passed for CLOCK_BOOTTIME (syscall)\n\
                     # Bail out! Can't get namespace of the current process: Operation not permitted\n\
                     # # Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0\n\
                     not ok 1 selftests: timens: timens # exit=1\n\
                     # selftests: timens: timerfd\n\
                     # TAP version 13\n\
                     # 1..0 # SKIP Time namespaces are not supported\n\
                     ok 2 selftests: timens: timerfd # SKIP\n";
        let r = parse_ktap(input);
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        assert_eq!(r.bail_out, None);
        let timens = r.points[0].subtest.as_ref().expect("timens' output");
        assert_eq!(
            timens.bail_out.as_deref(),
            Some("Can't get namespace of the current process: Operation not permitted")
        );
        assert_eq!(timens.points.len(), 1);
        assert_eq!(r.points[0].diagnostics, "# selftests: timens: timens\n");
        assert_eq!(
            r.points[1]
                .subtest
                .as_ref()
                .map(|s| s.plan.as_ref().map(Plan::skips_all)),
            Some(Some(true))
        );
        // Prefixes nest: a runner's output inside a runner's output.
        let r = parse_ktap(
            "TAP version 13\n1..1\n# TAP version 13\n# 1..1\n# # KTAP version 1\n# # 1..1\n\
             # # not ok 1 deep\n# not ok 1 middle\nnot ok 1 top\n",
        );
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        assert_eq!(
            outline_of(&r),
            ["1 not-ok top", "1.1 not-ok middle", "1.1.1 not-ok deep"]
        );
    }

    #[test]
    fn kselftest_programs_own_output() {
        // kcmp_test (6.1) counts its checks but prints no result lines; get_size prints its
        // plan last and a YAML-like block one space in; seccomp_bpf's harness.
        let kcmp = "TAP version 13\n\
                    1..3\n\
                    pid1:   7358 pid2:   7359 FD:  1 FILES:  2 VM:  1 FS:  2 SIGHAND:  1 IO:  0 SYSVSEM:  0 INV: -1\n\
                    PASS: 0 returned as expected\n\
                    PASS: 0 returned as expected\n\
                    PASS: 0 returned as expected\n\
                    # Totals: pass:3 fail:0 xfail:0 xpass:0 skip:0 error:0\n";
        let r = parse_ktap(kcmp);
        assert_eq!(r.errors, [TapError::PlanMismatch { planned: 3, ran: 0 }]);
        assert_eq!(
            r.totals,
            Some(Totals {
                pass: 3,
                line: 7,
                ..Totals::default()
            })
        );
        assert!(r.comments.starts_with("pid1: "), "{}", r.comments);
        assert!(r
            .comments
            .ends_with("# Totals: pass:3 fail:0 xfail:0 xpass:0 skip:0 error:0\n"));
        // Kyua's rules call it broken; the runner's, passed.
        assert_eq!(result(&r, &code(0)).0.kind, ResultType::Broken);
        assert_eq!(kselftest_result(&r, &code(0)).0, TestResult::passed());

        let get_size = "TAP version 13\n\
                        # Testing system size.\n\
                        ok 1 get runtime memory use\n\
                        # System runtime memory report (units in Kilobytes):\n \
                        ---\n \
                        Total:  24683664\n \
                        Free:   21410580\n \
                        ...\n\
                        1..1\n";
        let r = parse_ktap(get_size);
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        assert_eq!(outline_of(&r), ["1 ok get runtime memory use"]);
        assert_eq!(r.comments.lines().next(), Some("# Testing system size."));
        assert!(r.comments.contains("Total:  24683664\n"));

        let seccomp = "TAP version 13\n\
                       1..2\n\
                       # Starting 2 tests from 1 test cases.\n\
                       #  RUN           global.kcmp ...\n\
                       #            OK  global.kcmp\n\
                       ok 1 global.kcmp\n\
                       #  RUN           global.mode_strict_support ...\n\
                       # mode_strict_support: Test terminated by timeout\n\
                       #          FAIL  global.mode_strict_support\n\
                       not ok 2 global.mode_strict_support\n\
                       # FAILED: 1 / 2 tests passed.\n\
                       # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:0 error:0\n";
        let r = parse_ktap(seccomp);
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        assert_eq!(r.totals.as_ref().map(|t| (t.pass, t.fail)), Some((1, 1)));
        assert_eq!(
            r.points[0].diagnostics,
            "# Starting 2 tests from 1 test cases.\n#  RUN           global.kcmp ...\n\
             #            OK  global.kcmp\n"
        );
        let (verdict, subs) = kselftest_result(&r, &code(1));
        assert_eq!(verdict, TestResult::failed("exit=1"));
        assert_eq!(subs[1].name, "2 - global.mode_strict_support");
        assert_eq!(subs[1].result.kind, ResultType::Failed);
        assert_eq!(
            result(&r, &code(1)).0,
            TestResult::failed("1 of 2 tests failed")
        );

        // ksft_exit_fail_msg: a bail out, then the counts.
        let r =
            parse_ktap("TAP version 13\n1..2\nok 1 x\nBail out! no /dev/kmsg\n# Totals: pass:1\n");
        assert_eq!(r.bail_out.as_deref(), Some("no /dev/kmsg"));
        assert!(r.errors.is_empty());
    }

    #[test]
    fn kselftest_verdicts_are_the_runners() {
        let table: &[(&str, RunOutcome, ResultType, &str, Option<Cause>)] = &[
            (
                "TAP version 13\n1..1\nok 1 a\n",
                code(0),
                ResultType::Passed,
                "",
                None,
            ),
            // The exit status decides, not the points.
            (
                "TAP version 13\n1..1\nnot ok 1 a\n",
                code(0),
                ResultType::Passed,
                "",
                None,
            ),
            ("no tap at all\n", code(0), ResultType::Passed, "", None),
            (
                "TAP version 13\n1..1\nok 1 a\n",
                code(1),
                ResultType::Failed,
                "exit=1",
                None,
            ),
            // KSFT_XFAIL and KSFT_XPASS are failures to the runner.
            ("", code(2), ResultType::Failed, "exit=2", None),
            ("", code(3), ResultType::Failed, "exit=3", None),
            (
                "TAP version 13\n1..0 # SKIP Time namespaces are not supported\n",
                code(4),
                ResultType::Skipped,
                "Time namespaces are not supported",
                None,
            ),
            (
                "TAP version 13\n1..2\nok 1 a\nok 2 # SKIP need root\n",
                code(4),
                ResultType::Skipped,
                "need root",
                None,
            ),
            ("", code(4), ResultType::Skipped, "KSFT_SKIP", None),
            (
                "",
                RunOutcome::exited(ExitStatus::Signal(11)),
                ResultType::Failed,
                "Received signal 11",
                None,
            ),
            (
                "TAP version 13\n1..3\nok 1\n",
                RunOutcome::timeout(),
                ResultType::Failed,
                "Timed out",
                Some(Cause::Timeout),
            ),
        ];
        for (input, outcome, kind, reason, cause) in table {
            let (r, _) = kselftest_result(&parse_ktap(input), outcome);
            assert_eq!(r.kind, *kind, "{input:?}: {r}");
            assert_eq!(r.reason.as_deref().unwrap_or(""), *reason, "{input:?}");
            assert_eq!(r.cause, *cause, "{input:?}");
        }
    }

    /// KUnit (6.1) as it prints to the console: four spaces per level, each suite with its
    /// own version, `# Subtest:` and plan, a parameterised test with no plan, the suite's
    /// counts before its result line, kernel messages in between.
    const KUNIT_OUTPUT: &str = "\
KTAP version 1
1..2
    KTAP version 1
    # Subtest: example
    1..3
    # example_simple_test: initializing
    ok 1 example_simple_test
    # example_skip_test: initializing
    # example_skip_test: You should not see a line below.
    ok 2 example_skip_test # SKIP this test should be skipped
        KTAP version 1
        # Subtest: example_params_test
        ok 1 example value 3
        ok 2 example value 2
    # example_params_test: pass:2 fail:0 skip:0 total:2
    ok 3 example_params_test
# example: pass:2 fail:0 skip:1 total:3
# Totals: pass:3 fail:0 skip:1 total:4
ok 1 example
    KTAP version 1
    # Subtest: list_sort
    1..1
    # list_sort_test: EXPECTATION FAILED at lib/test_list_sort.c:85
    Expected cmp(priv, el, el1) <= 0, but
        cmp(priv, el, el1) == 1
[   12.345678] virtio_net virtio1 enp0s1: renamed from eth0
    not ok 1 list_sort_test
# list_sort: pass:0 fail:1 skip:0 total:1
# Totals: pass:0 fail:1 skip:0 total:1
not ok 2 list_sort
";

    #[test]
    fn parses_kunit_nesting() {
        let r = parse(KUNIT_OUTPUT);
        assert_eq!(r.dialect, Dialect::Ktap);
        assert_eq!((r.ktap_version, r.version), (Some(1), None));
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(
            outline_of(&r),
            [
                "1 ok example",
                "1.1 ok example_simple_test",
                "1.2 ok example_skip_test",
                "1.3 ok example_params_test",
                "1.3.1 ok example value 3",
                "1.3.2 ok example value 2",
                "2 not-ok list_sort",
                "2.1 not-ok list_sort_test",
            ]
        );
        let example = r.points[0].subtest.as_ref().expect("example's subtest");
        assert_eq!(example.name.as_deref(), Some("example"));
        assert_eq!(
            example.points[2]
                .subtest
                .as_ref()
                .and_then(|s| s.name.as_deref()),
            Some("example_params_test")
        );
        assert_eq!(
            example.points[1].diagnostics,
            "# example_skip_test: initializing\n\
             # example_skip_test: You should not see a line below.\n"
        );
        assert_eq!(
            r.points[0].diagnostics,
            "# example: pass:2 fail:0 skip:1 total:3\n# Totals: pass:3 fail:0 skip:1 total:4\n"
        );
        // Unknown lines, at any indentation, stay in the suite they came in.
        let list_sort = r.points[1].subtest.as_ref().expect("list_sort's subtest");
        assert_eq!(
            list_sort.points[0].diagnostics,
            "# list_sort_test: EXPECTATION FAILED at lib/test_list_sort.c:85\n\
             Expected cmp(priv, el, el1) <= 0, but\n\
             cmp(priv, el, el1) == 1\n\
             [   12.345678] virtio_net virtio1 enp0s1: renamed from eth0\n"
        );
        assert_eq!(
            r.totals,
            Some(Totals {
                fail: 1,
                total: Some(1),
                line: 29,
                ..Totals::default()
            })
        );
        let (verdict, subs) = result(&r, &code(0));
        assert_eq!(verdict, TestResult::failed("1 of 2 tests failed"));
        let names: Vec<_> = subs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "1 - example",
                "1.1 - example_simple_test",
                "1.2 - example_skip_test",
                "1.3 - example_params_test",
                "1.3.1 - example value 3",
                "1.3.2 - example value 2",
                "2 - list_sort",
                "2.1 - list_sort_test",
            ]
        );
        assert_eq!(
            subs[2].result,
            TestResult::skipped("this test should be skipped")
        );
    }

    #[test]
    fn parses_ktap_rst_example() {
        // Documentation/dev-tools/ktap.rst's example: two spaces per level.
        let input = "KTAP version 1\n\
                     1..1\n  \
                     KTAP version 1\n  \
                     1..3\n    \
                     KTAP version 1\n    \
                     1..1\n    \
                     # test_1: initializing test_1\n    \
                     ok 1 test_1\n  \
                     ok 1 example_test_1\n    \
                     KTAP version 1\n    \
                     1..2\n    \
                     ok 1 test_1 # SKIP test_1 skipped\n    \
                     ok 2 test_2\n  \
                     ok 2 example_test_2\n    \
                     KTAP version 1\n    \
                     1..3\n    \
                     ok 1 test_1\n    \
                     # test_2: FAIL\n    \
                     not ok 2 test_2\n    \
                     ok 3 test_3 # SKIP test_3 skipped\n  \
                     not ok 3 example_test_3\n\
                     not ok 1 main_test\n";
        let r = parse(input);
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        assert_eq!(
            outline_of(&r),
            [
                "1 not-ok main_test",
                "1.1 ok example_test_1",
                "1.1.1 ok test_1",
                "1.2 ok example_test_2",
                "1.2.1 ok test_1",
                "1.2.2 ok test_2",
                "1.3 not-ok example_test_3",
                "1.3.1 ok test_1",
                "1.3.2 not-ok test_2",
                "1.3.3 ok test_3",
            ]
        );
        let main = r.points[0].subtest.as_ref().expect("main_test's subtest");
        let first = main.points[0].subtest.as_ref().expect("example_test_1's");
        assert_eq!(
            first.points[0].diagnostics,
            "# test_1: initializing test_1\n"
        );
        let third = main.points[2].subtest.as_ref().expect("example_test_3's");
        assert_eq!(third.points[1].diagnostics, "# test_2: FAIL\n");
    }

    #[test]
    fn ktap_problems() {
        // A subtest's plan, when given, must still match.
        let r = parse("KTAP version 1\n1..1\n    KTAP version 1\n    1..2\n    ok 1 a\nok 1 b\n");
        assert!(r.errors.is_empty());
        assert_eq!(
            r.warnings,
            [TapError::InSubtest {
                line: 3,
                source: Box::new(TapError::PlanMismatch { planned: 2, ran: 1 })
            }]
        );
        // A second top-level version line; an unsupported one.
        let r = parse_ktap("TAP version 13\n1..1\nTAP version 13\nok 1\n");
        assert_eq!(r.warnings, [TapError::MisplacedVersion { line: 3 }]);
        let r = parse("KTAP version 2\n1..0\n");
        assert!(matches!(
            r.warnings[..],
            [TapError::UnsupportedVersion { line: 1, .. }]
        ));
        // Console lines before the version line.
        let r = parse_ktap("[    0.5] Run /init as init process\nKTAP version 1\n1..0\n");
        assert_eq!(r.ktap_version, Some(1));
        assert!(r.warnings.is_empty() && r.errors.is_empty(), "{r:?}");
        assert_eq!(r.comments, "[    0.5] Run /init as init process\n");
        // Too deep, by indentation or by prefixes.
        let mut deep = String::from("KTAP version 1\n1..0\n");
        for level in 1..=MAX_DEPTH + 2 {
            deep.push_str(&format!("{}KTAP version 1\n", "  ".repeat(level)));
        }
        assert!(parse(&deep).warnings.contains(&TapError::TooDeep {
            line: MAX_DEPTH + 3
        }));
        let mut prefixed = String::from("1..0\n");
        for level in 1..=MAX_DEPTH + 2 {
            prefixed.push_str(&format!("{}TAP version 13\n", "# ".repeat(level)));
        }
        let r = parse_ktap(&prefixed);
        assert_eq!(
            r.warnings.first(),
            Some(&TapError::TooDeep {
                line: MAX_DEPTH + 2
            })
        );
        // A YAML block in KTAP, prefixed too.
        let r = parse_ktap("1..1\n# TAP version 13\n# 1..1\n# not ok 1 a\n#   ---\n#   got: 1\n#   ...\nnot ok 1 b\n");
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
        let sub = r.points[0].subtest.as_ref().expect("a subtest");
        assert_eq!(sub.points[0].diagnostics, "---\ngot: 1\n...\n");
    }

    proptest! {
        #[test]
        fn never_panics(input in ".{0,2000}") {
            let r = parse(&input);
            let _ = result(&r, &code(0));
            let r = parse_ktap(&input);
            let _ = kselftest_result(&r, &code(4));
        }

        #[test]
        fn never_panics_on_tap_like_lines(
            lines in proptest::collection::vec(
                (0usize..12, prop::sample::select(vec![
                    "ok", "not ok 2 - x # TODO", "ok 1 # SKIP", "1..2", "1..0 # skip",
                    "---", "...", "# Subtest: s", "# c", "Bail out!", "TAP version 14",
                    "pragma +strict", "ok 99999999999999999999", "1..", "ok \\#", "é", "",
                    "KTAP version 1", "# TAP version 13", "# # KTAP version 1", "# ok 1 x",
                    "# Bail out! b", "#", "not ok 3 x # TIMEOUT 4 s", "ok 2 # XFAIL",
                    "# Totals: pass:1 fail:0", "#   ---", "  ---", "[ 1.0] console",
                ])),
                0..60,
            ),
        ) {
            let input: String = lines
                .iter()
                .map(|(indent, l)| format!("{}{l}\n", " ".repeat(*indent)))
                .collect();
            let r = parse(&input);
            let (_, subs) = result(&r, &code(1));
            prop_assert!(subs.len() <= MAX_POINTS);
            let r = parse_ktap(&input);
            let (_, subs) = result(&r, &code(1));
            prop_assert!(subs.len() <= MAX_POINTS);
        }

        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = parse_bytes(&bytes);
            let _ = parse_ktap_bytes(&bytes);
        }
    }
}
