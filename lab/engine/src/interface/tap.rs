//! The tap interface: a TAP 14 parser (TAP 13 and version-less streams too) for what a TAP
//! program prints, and Kyua 0.13's rules that turn the program's run into one result, plus
//! one sub-result per test point.
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
//! preceding test point, as text.
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
//!
//! # Sub-results
//! One [`SubResult`] per stored test point, in stream order with each subtest's points right
//! after the point that concludes it, named `N - description` (`N` alone when there is no
//! description); a subtest's points are named by their path of numbers, `2.1 - description`.
//! ok → passed; not ok → failed; SKIP → skipped; not ok with TODO → expected_failure; ok with
//! TODO → passed.

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
    /// Its YAML block (with `---` and `...`) and the comment lines after it, as text.
    pub diagnostics: String,
    /// The subtest it concludes.
    pub subtest: Option<Subtest>,
    /// Its line.
    pub line: usize,
}

impl TestPoint {
    /// Whether it counts as a failure (Kyua: `not ok` without TODO or SKIP).
    pub fn is_failure(&self) -> bool {
        !self.ok && self.directive.is_none()
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
    /// Where it started.
    pub line: usize,
}

/// What a TAP stream said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapReport {
    /// The version line's version (13 or 14), if any.
    pub version: Option<u32>,
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
    /// Top-level comment lines before the first test point.
    pub comments: String,
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
        }
    }
}

/// A YAML block being read.
struct Yaml {
    indent: usize,
    depth: usize,
    start_line: usize,
    text: String,
}

struct Parser {
    report: TapReport,
    stack: Vec<Frame>,
    yaml: Option<Yaml>,
    kept_points: usize,
    text_budget: usize,
    warned_deep: bool,
    done: bool,
}

/// Parses a TAP stream. See the module docs for what is kept and what is an error.
pub fn parse(stdout: &str) -> TapReport {
    let mut p = Parser {
        report: TapReport::default(),
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
        p.line(line_no, raw.strip_suffix('\r').unwrap_or(raw));
        if p.done {
            break;
        }
    }
    p.finish();
    p.report
}

/// Parses a TAP stream given as bytes, invalid UTF-8 replaced.
pub fn parse_bytes(stdout: &[u8]) -> TapReport {
    parse(&String::from_utf8_lossy(stdout))
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

    fn line(&mut self, n: usize, line: &str) {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = &line[indent..];

        if let Some(mut y) = self.yaml.take() {
            if indent >= y.indent || content.is_empty() {
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
                return;
            }
            self.issue(
                y.depth,
                TapError::UnterminatedYaml { line: y.start_line },
                false,
            );
            let text = std::mem::take(&mut y.text);
            self.attach_yaml(y.depth, &text);
        }

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
            if !self.warned_deep {
                self.warned_deep = true;
                self.issue(0, TapError::TooDeep { line: n }, false);
            }
            return;
        }
        self.close_to(depth);
        while self.stack.len() <= depth {
            let parent = self.stack.len() - 1;
            if let Some(old) = self.stack[parent].pending_child.take() {
                self.issue(
                    parent,
                    TapError::UnconcludedSubtest { line: old.line },
                    false,
                );
            }
            let name = self.stack[parent].pending_name.take();
            self.stack.push(Frame::new(name, n));
        }

        let mut is_point = false;
        if let Some(point) = parse_point(content) {
            self.point(depth, n, point);
            is_point = true;
        } else if let Some(plan) = parse_plan(content) {
            self.plan(depth, n, plan);
        } else if content
            .get(..9)
            .is_some_and(|w| w.eq_ignore_ascii_case("bail out!"))
        {
            let reason = self.keep(content[9..].trim(), MAX_FIELD_BYTES);
            self.report.bail_out = Some(reason);
            self.done = true;
        } else if let Some(v) = content.strip_prefix("TAP version ") {
            if depth == 0 {
                if n != 1 {
                    self.issue(0, TapError::MisplacedVersion { line: n }, false);
                }
                match v.trim().parse::<u32>() {
                    Ok(v @ (13 | 14)) if n == 1 => self.report.version = Some(v),
                    Ok(13 | 14) => {}
                    _ => {
                        let version = self.keep(v.trim(), MAX_FIELD_BYTES);
                        self.issue(0, TapError::UnsupportedVersion { line: n, version }, false);
                    }
                }
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
            self.comment(depth, content);
        }
        let frame = &mut self.stack[depth];
        frame.lines += 1;
        frame.last_was_point = is_point;
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
            }),
            diagnostics: String::new(),
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
            self.check_plan(&frame, child_depth);
            let parent = self.stack.len() - 1;
            let sub = Subtest {
                name: frame.name,
                plan: frame.plan,
                points: frame.points,
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
        if !self.done {
            self.check_plan(&root, 0);
        }
        self.report.plan = root.plan.take();
        self.report.points = std::mem::take(&mut root.points);
        self.report.total = root.seen;
        self.report.failed = root.failed;
    }
}

/// Parses `ok`/`not ok` lines: `(not )?ok[ NUMBER][ -][ DESCRIPTION][ # DIRECTIVE]`.
fn parse_point(content: &str) -> Option<PointLine> {
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
    let (description, directive) = match split_at_hash(rest) {
        Some((before, after)) => match parse_directive(after) {
            Some(d) => (unescape(before).trim_end().to_string(), Some(d)),
            None => (unescape(rest).trim_end().to_string(), None),
        },
        None => (unescape(rest).trim_end().to_string(), None),
    };
    Some(PointLine {
        ok,
        number,
        description,
        directive,
    })
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

/// Parses what follows `#` on a test point line as `SKIP reason` or `TODO reason`
/// (case-insensitive; `skipped` and the like count as SKIP; a `:` before the reason is
/// dropped).
fn parse_directive(after_hash: &str) -> Option<Directive> {
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
    } else {
        None
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
                .with_cause(Cause::Protocol)
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
                    .with_cause(Cause::Protocol)
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
        let result = match (&p.directive, p.ok) {
            (Some(Directive::Skip(r)), _) => TestResult::skipped(or_none(r)),
            (Some(Directive::Todo(r)), false) => TestResult::expected_failure(or_none(r)),
            (Some(Directive::Todo(_)), true) | (None, true) => TestResult::passed(),
            (None, false) => TestResult::failed("not ok"),
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
                Some(Cause::Protocol),
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
                Some(Cause::Protocol),
            ),
            (
                "1..3\nok 1\n",
                code(0),
                ResultType::Broken,
                "TAP test program yielded invalid data: Reported plan differs from actual \
                 executed tests",
                Some(Cause::Protocol),
            ),
            (
                "1..1\nok 1\n1..1\n",
                code(0),
                ResultType::Broken,
                "TAP test program yielded invalid data: Found duplicate plan 1..1 (saw 1..1 \
                 earlier)",
                Some(Cause::Protocol),
            ),
            (
                "3..1\n",
                code(0),
                ResultType::Broken,
                "TAP test program yielded invalid data: Found reversed plan 3..1",
                Some(Cause::Protocol),
            ),
            (
                "1..2 # SKIP x\n",
                code(0),
                ResultType::Broken,
                "TAP test program yielded invalid data: Skipped plan must be 1..0",
                Some(Cause::Protocol),
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

    proptest! {
        #[test]
        fn never_panics(input in ".{0,2000}") {
            let r = parse(&input);
            let _ = result(&r, &code(0));
        }

        #[test]
        fn never_panics_on_tap_like_lines(
            lines in proptest::collection::vec(
                (0usize..12, prop::sample::select(vec![
                    "ok", "not ok 2 - x # TODO", "ok 1 # SKIP", "1..2", "1..0 # skip",
                    "---", "...", "# Subtest: s", "# c", "Bail out!", "TAP version 14",
                    "pragma +strict", "ok 99999999999999999999", "1..", "ok \\#", "é", "",
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
        }

        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = parse_bytes(&bytes);
        }
    }
}
