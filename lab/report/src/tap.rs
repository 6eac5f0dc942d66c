//! TAP 14 on a writer (stdout), live: one subtest per (kernel, program) as the program
//! finishes, its test cases as test points, TAP subresults as a subtest inside their case.
//!
//! The plan comes last (`1..N`, N programs × kernels); an interrupted run ends with
//! `Bail out! interrupted` instead, as nothing may follow a trailing plan.

use std::collections::BTreeMap;
use std::io::Write;

use lab_model::{ResultType, RunEvent, SubResult, TestResult};

use crate::reporter::{
    plural, serde_name, summary, tail_lines, FinishedCase, ReportError, Reporter, TAIL_LINES,
};

/// Indentation of one subtest level (TAP 14).
const INDENT: &str = "    ";

/// Writes a run as a TAP 14 stream.
#[derive(Debug)]
pub struct TapReporter<W: Write> {
    out: W,
    /// Finished cases per (kernel, program), until the program finishes.
    pending: BTreeMap<(String, String), Vec<FinishedCase>>,
    /// Top-level test points written.
    points: usize,
    interrupted: bool,
}

impl<W: Write> TapReporter<W> {
    /// A reporter writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            pending: BTreeMap::new(),
            points: 0,
            interrupted: false,
        }
    }

    /// The writer, back.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn write(&mut self, text: &str) -> Result<(), ReportError> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    /// The subtest and parent test point of a finished program.
    fn program(&mut self, kernel: &str, program: &str, cases: &[FinishedCase]) -> String {
        self.points += 1;
        let name = format!("[{kernel}] {program}");
        let mut t = String::new();
        line(&mut t, 0, &format!("# Subtest: {}", escape(&name)));
        for (i, c) in cases.iter().enumerate() {
            case(&mut t, 1, i + 1, c);
        }
        line(&mut t, 1, &format!("1..{}", cases.len()));
        let ok = cases.iter().all(|c| c.result.kind.is_good());
        let directive = cases.is_empty().then_some(("SKIP", Some("no test cases")));
        point(&mut t, 0, ok, self.points, &name, directive);
        t
    }
}

impl<W: Write> Reporter for TapReporter<W> {
    fn event(&mut self, e: &RunEvent) -> Result<(), ReportError> {
        match e {
            RunEvent::RunStarted {
                kernels,
                programs,
                jobs,
                root,
            } => {
                let t = format!(
                    "TAP version 14\n# {} on {} ({}), {}, root {}\n",
                    plural(*programs, "program"),
                    plural(kernels.len(), "kernel"),
                    kernels.join(", "),
                    plural(*jobs, "VM slot"),
                    root,
                );
                self.write(&t)
            }
            RunEvent::CaseFinished { id, .. } => {
                let key = (id.kernel.clone(), id.program.clone());
                let case = FinishedCase::from_event(e).expect("a CaseFinished event");
                self.pending.entry(key).or_default().push(case);
                Ok(())
            }
            RunEvent::ProgramFinished { kernel, program } => {
                let cases = self
                    .pending
                    .remove(&(kernel.clone(), program.clone()))
                    .unwrap_or_default();
                let t = self.program(kernel, program, &cases);
                self.write(&t)
            }
            RunEvent::VmFailed {
                slot,
                kernel,
                reason,
                console_tail,
            } => {
                let mut t = String::new();
                comment(
                    &mut t,
                    &format!("VM failed: [{kernel}] slot {slot}: {reason}"),
                );
                for l in console_tail {
                    comment(&mut t, &format!("  {l}"));
                }
                self.write(&t)
            }
            RunEvent::Interrupted { forced } => {
                self.interrupted = true;
                let t = if *forced {
                    "# interrupted again: killing the VMs\n"
                } else {
                    "# interrupted: finishing without running the rest\n"
                };
                self.write(t)
            }
            RunEvent::RunFinished {
                counts,
                interrupted,
                ..
            } => {
                // The contract gives every program a ProgramFinished; should one be missing,
                // its cases are still reported.
                let mut t = String::new();
                for ((kernel, program), cases) in std::mem::take(&mut self.pending) {
                    t.push_str(&self.program(&kernel, &program, &cases));
                }
                comment(&mut t, &summary(counts));
                // A bailed-out stream needs no plan, and nothing may follow a trailing plan.
                if *interrupted || self.interrupted {
                    line(&mut t, 0, "Bail out! interrupted");
                } else {
                    line(&mut t, 0, &format!("1..{}", self.points));
                }
                self.write(&t)
            }
            RunEvent::VmBooting { .. }
            | RunEvent::VmReady { .. }
            | RunEvent::CasesListed { .. }
            | RunEvent::CaseStarted { .. }
            | RunEvent::CaseOutput { .. } => Ok(()),
        }
    }
}

/// A line at subtest `depth`.
fn line(t: &mut String, depth: usize, text: &str) {
    for _ in 0..depth {
        t.push_str(INDENT);
    }
    t.push_str(text);
    t.push('\n');
}

/// Top-level `#` comment lines, one per line of `text`.
fn comment(t: &mut String, text: &str) {
    for l in text.lines() {
        line(t, 0, format!("# {l}").trim_end());
    }
}

/// Escapes a description or directive reason: `\` and `#` (TAP 14), and line breaks, which
/// would end the test point.
fn escape(s: &str) -> String {
    let mut e = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => e.push_str("\\\\"),
            '#' => e.push_str("\\#"),
            '\n' => e.push_str("\\n"),
            '\r' => e.push_str("\\r"),
            c => e.push(c),
        }
    }
    e
}

/// A test point: `ok 3 - name # SKIP reason`.
fn point(
    t: &mut String,
    depth: usize,
    ok: bool,
    n: usize,
    desc: &str,
    directive: Option<(&str, Option<&str>)>,
) {
    let mut p = format!("{}ok {n}", if ok { "" } else { "not " });
    if !desc.is_empty() {
        p.push_str(" - ");
        p.push_str(&escape(desc));
    }
    if let Some((word, reason)) = directive {
        p.push_str(" # ");
        p.push_str(word);
        if let Some(r) = reason.filter(|r| !r.is_empty()) {
            p.push(' ');
            p.push_str(&escape(r));
        }
    }
    line(t, depth, &p);
}

/// How a result shows as a test point: ok, and its directive.
fn verdict(r: &TestResult) -> (bool, Option<(&'static str, Option<&str>)>) {
    let reason = r.reason.as_deref();
    match r.kind {
        ResultType::Passed => (true, None),
        ResultType::Skipped => (true, Some(("SKIP", reason))),
        ResultType::ExpectedFailure => (false, Some(("TODO", reason))),
        ResultType::Failed | ResultType::Broken => (false, None),
    }
}

/// A test case as test point `n` at `depth`, after the subtest of its subresults.
fn case(t: &mut String, depth: usize, n: usize, c: &FinishedCase) {
    if !c.subresults.is_empty() {
        line(t, depth, &format!("# Subtest: {}", escape(&c.id.case)));
        for (i, s) in c.subresults.iter().enumerate() {
            subresult(t, depth + 1, i + 1, s);
        }
        line(t, depth + 1, &format!("1..{}", c.subresults.len()));
    }
    let (ok, directive) = verdict(&c.result);
    point(t, depth, ok, n, &c.id.case, directive);
    if directive.is_none() && !ok {
        let mut y = Yaml::default();
        y.result(&c.result);
        y.field("duration_ms", &c.duration.as_millis().to_string());
        for (name, text) in [("stdout", &c.stdout), ("stderr", &c.stderr)] {
            let tail = tail_lines(text, TAIL_LINES);
            if !tail.is_empty() {
                y.text(name, tail);
            }
        }
        y.write(t, depth);
    }
}

/// A TAP subresult as test point `n` at `depth`.
fn subresult(t: &mut String, depth: usize, n: usize, s: &SubResult) {
    let (ok, directive) = verdict(&s.result);
    point(t, depth, ok, n, point_name(&s.name, n), directive);
    if directive.is_none() && !ok {
        let mut y = Yaml::default();
        y.result(&s.result);
        if !s.diagnostics.is_empty() {
            y.text("diagnostics", &s.diagnostics);
        }
        y.write(t, depth);
    }
}

/// A subresult's name without the number it had in its own stream (`3 - parses` → `parses`),
/// as it is renumbered here.
fn point_name(name: &str, n: usize) -> &str {
    let Some(rest) = name.strip_prefix(&n.to_string()) else {
        return name;
    };
    if rest.is_empty() {
        ""
    } else if let Some(r) = rest.strip_prefix(" - ") {
        r
    } else if let Some(r) = rest.strip_prefix(' ') {
        r
    } else {
        name
    }
}

/// A YAML diagnostic block, built field by field.
#[derive(Debug, Default)]
struct Yaml {
    body: String,
}

impl Yaml {
    /// A plain scalar field (a name or a number).
    fn field(&mut self, key: &str, value: &str) {
        self.body.push_str(&format!("{key}: {value}\n"));
    }

    /// A quoted string field: JSON's quoting is valid YAML.
    fn string(&mut self, key: &str, value: &str) {
        let quoted = serde_json::Value::String(value.to_string()).to_string();
        self.field(key, &quoted);
    }

    /// A text field: a literal block when its lines allow, else a quoted string.
    fn text(&mut self, key: &str, value: &str) {
        let literal_ok = !value.starts_with([' ', '\t'])
            && !value.ends_with('\n')
            && !value
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t');
        if !literal_ok {
            return self.string(key, value);
        }
        self.body.push_str(&format!("{key}: |-\n"));
        for l in value.split('\n') {
            if !l.is_empty() {
                self.body.push_str("  ");
            }
            self.body.push_str(l);
            self.body.push('\n');
        }
    }

    /// The result, its reason and cause.
    fn result(&mut self, r: &TestResult) {
        self.field("result", r.kind.name());
        if let Some(reason) = &r.reason {
            self.string("reason", reason);
        }
        if let Some(cause) = &r.cause {
            self.field("cause", &serde_name(cause));
        }
    }

    /// The block under a test point at `depth`: indented two more spaces.
    fn write(&self, t: &mut String, depth: usize) {
        let pad = format!("{}  ", INDENT.repeat(depth));
        t.push_str(&format!("{pad}---\n"));
        for l in self.body.lines() {
            if l.is_empty() {
                t.push('\n');
            } else {
                t.push_str(&format!("{pad}{l}\n"));
            }
        }
        t.push_str(&format!("{pad}...\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use lab_model::Counts;

    fn render(events: &[RunEvent]) -> String {
        let mut r = TapReporter::new(Vec::new());
        for e in events {
            r.event(e).expect("writes to a Vec");
        }
        String::from_utf8(r.into_inner()).expect("utf-8")
    }

    const RUN: &str = r#"TAP version 14
# 3 programs on 2 kernels (debian-6.1, debian-6.12), 2 VM slots, root initramfs
# VM failed: [debian-6.12] slot 1: guest kernel panicked
#   Kernel panic - not syncing: Attempted to kill init!
#   ---[ end Kernel panic ]---
# Subtest: [debian-6.12] t/plain_test
    not ok 1 - main
      ---
      result: broken
      reason: "the VM died"
      cause: vm_died
      duration_ms: 900
      stdout: |-
        starting
      ...
    1..1
not ok 1 - [debian-6.12] t/plain_test
# Subtest: [debian-6.1] t/atf_test
    ok 1 - pass
    ok 2 - skip # SKIP requires root
    not ok 3 - xfail # TODO bug \#42: off by one
    not ok 4 - fail
      ---
      result: failed
      reason: "assertion failed: x == 1\nat t/atf_test.c:12"
      duration_ms: 1250
      stdout: |-
        checking x
      stderr: |-
        x is 2
        expected 1
      ...
    not ok 5 - hang
      ---
      result: broken
      reason: "timed out after 300s"
      cause: timeout
      duration_ms: 300000
      stderr: |-
        waiting
      ...
    1..5
not ok 2 - [debian-6.1] t/atf_test
# Subtest: [debian-6.12] t/tap_test
    # Subtest: main
        ok 1 - loads
        ok 2 - runs
        1..2
    ok 1 - main
    1..1
ok 3 - [debian-6.12] t/tap_test
# Subtest: [debian-6.1] t/plain_test
    ok 1 - main
    1..1
ok 4 - [debian-6.1] t/plain_test
# Subtest: [debian-6.12] t/atf_test
    ok 1 - pass
    ok 2 - skip # SKIP requires root
    1..2
ok 5 - [debian-6.12] t/atf_test
# Subtest: [debian-6.1] t/tap_test
    # Subtest: main
        ok 1 - parses
        not ok 2 - writes \# to disk
          ---
          result: failed
          reason: "not ok"
          diagnostics: |-
            got: EIO
            want: 0
          ...
        ok 3 # SKIP no disk
        not ok 4 # TODO later
        1..4
    not ok 1 - main
      ---
      result: failed
      reason: "1 of 4 test points failed"
      duration_ms: 700
      stdout: |-
        ok 1 - parses
        not ok 2 - writes # to disk
        ok 3 # SKIP no disk
        not ok 4 # TODO later
      stderr: |-
        write: EIO
      ...
    1..1
not ok 6 - [debian-6.1] t/tap_test
# 11 cases: 4 passed, 2 failed, 2 skipped, 1 expected failure, 2 broken
1..6
"#;

    #[test]
    fn snapshot_run() {
        let out = render(&fixture::run());
        assert_eq!(out, RUN, "got:\n{out}");
        validate(&out).expect("valid TAP 14");
    }

    #[test]
    fn snapshot_interrupted() {
        let out = render(&fixture::interrupted());
        let want = "TAP version 14
# 2 programs on 1 kernel (debian-6.1), 1 VM slot, root initramfs
# Subtest: [debian-6.1] t/plain_test
    ok 1 - main
    1..1
ok 1 - [debian-6.1] t/plain_test
# interrupted: finishing without running the rest
# Subtest: [debian-6.1] t/tap_test
    ok 1 - main # SKIP interrupted
    1..1
ok 2 - [debian-6.1] t/tap_test
# 2 cases: 1 passed, 1 skipped
Bail out! interrupted
";
        assert_eq!(out, want, "got:\n{out}");
        validate(&out).expect("valid TAP 14");
    }

    #[test]
    fn program_without_cases_is_a_skipped_subtest() {
        let out = render(&[
            RunEvent::RunStarted {
                kernels: vec![fixture::K1.into()],
                programs: 1,
                jobs: 1,
                root: "initramfs".into(),
            },
            fixture::program_finished(fixture::K1, fixture::ATF),
            RunEvent::RunFinished {
                counts: Counts::default(),
                duration: fixture::ms(5),
                interrupted: false,
            },
        ]);
        assert!(
            out.contains("    1..0\nok 1 - [debian-6.1] t/atf_test # SKIP no test cases\n"),
            "{out}"
        );
        validate(&out).expect("valid TAP 14");
    }

    #[test]
    fn escapes() {
        for (raw, want) in [
            ("plain", "plain"),
            ("a # b", "a \\# b"),
            ("back\\slash", "back\\\\slash"),
            ("two\nlines\r", "two\\nlines\\r"),
            ("# SKIP x", "\\# SKIP x"),
        ] {
            assert_eq!(escape(raw), want, "{raw:?}");
        }
        for (name, n, want) in [
            ("3 - parses", 3, "parses"),
            ("3 parses", 3, "parses"),
            ("3", 3, ""),
            ("30 - x", 3, "30 - x"),
            ("parses", 1, "parses"),
        ] {
            assert_eq!(point_name(name, n), want, "{name:?}");
        }
    }

    #[test]
    fn odd_output_is_quoted_yaml() {
        let mut y = Yaml::default();
        y.text("a", "  indented");
        y.text("b", "bell\u{7}");
        y.text("c", "one\n\ntwo");
        assert_eq!(
            y.body,
            "a: \"  indented\"\nb: \"bell\\u0007\"\nc: |-\n  one\n\n  two\n"
        );
    }

    #[test]
    fn hostile_names_stay_valid() {
        let mut events = fixture::interrupted();
        for e in &mut events {
            if let RunEvent::CaseFinished { id, result, .. } = e {
                id.case = "we#ird\nname \\ # TODO not really".into();
                *result = TestResult::failed("multi\nline # reason");
            }
        }
        let out = render(&events);
        validate(&out).expect("valid TAP 14");
        assert!(out.contains("not ok 1 - we\\#ird\\nname \\\\ \\# TODO not really\n"));
    }

    /// Checks a TAP 14 stream as a consumer would read it: the version line, subtests indented
    /// by four spaces each closed by their plan and a parent test point, numbering in order,
    /// plans that match, YAML blocks right after a test point, no stray `#` in descriptions,
    /// and nothing after `Bail out!`.
    fn validate(tap: &str) -> Result<(), String> {
        let mut lines = tap.lines().enumerate().peekable();
        match lines.next() {
            Some((_, "TAP version 14")) => {}
            other => return Err(format!("no version line: {other:?}")),
        }
        // Per open level: test points seen, its plan, and the description the
        // `# Subtest:` comment announced for its parent test point.
        struct Level {
            points: usize,
            plan: Option<usize>,
            announced: Option<String>,
        }
        let mut levels = vec![Level {
            points: 0,
            plan: None,
            announced: None,
        }];
        let mut last_was_point = false;
        while let Some((no, l)) = lines.next() {
            let err = |m: &str| Err(format!("line {}: {m}: {l:?}", no + 1));
            if levels[0].plan.is_some() && !l.starts_with('#') {
                return err("a line after the trailing plan");
            }
            if l.starts_with("Bail out!") {
                return match lines.next() {
                    None => Ok(()),
                    Some(_) => err("lines after bail out"),
                };
            }
            let indent = l.len() - l.trim_start_matches(' ').len();
            let body = &l[indent..];
            if indent % 4 == 2 && body == "---" {
                if !last_was_point || indent / 4 + 1 != levels.len() {
                    return err("YAML block not right after a test point");
                }
                loop {
                    let Some((_, y)) = lines.next() else {
                        return err("unterminated YAML block");
                    };
                    if y == format!("{}...", " ".repeat(indent)) {
                        break;
                    }
                    if !y.is_empty() && !y.starts_with(&" ".repeat(indent)) {
                        return err("YAML line not indented");
                    }
                }
                last_was_point = false;
                continue;
            }
            if indent % 4 != 0 {
                return err("indentation not a multiple of 4");
            }
            let depth = indent / 4;
            last_was_point = false;
            if let Some(name) = body.strip_prefix("# Subtest: ") {
                if depth + 1 != levels.len() {
                    return err("subtest at the wrong depth");
                }
                levels.push(Level {
                    points: 0,
                    plan: None,
                    announced: Some(name.to_string()),
                });
                continue;
            }
            if body.starts_with('#') {
                continue;
            }
            // A subtest ends at the first line less indented than it.
            while depth + 1 < levels.len() {
                let sub = levels.pop().expect("nonempty");
                if sub.plan != Some(sub.points) {
                    return err("subtest plan does not match its test points");
                }
                let parent = levels.last().expect("has a parent");
                let rest = body
                    .strip_prefix("ok ")
                    .or_else(|| body.strip_prefix("not ok "))
                    .ok_or("a subtest not followed by its test point")?;
                let want = format!(
                    "{} - {}",
                    parent.points + 1,
                    sub.announced.unwrap_or_default()
                );
                if !rest.starts_with(&want) {
                    return err("parent test point does not match the subtest");
                }
            }
            if depth + 1 > levels.len() {
                return err("indented line outside a subtest");
            }
            let level = levels.last_mut().expect("nonempty");
            if let Some(plan) = body.strip_prefix("1..") {
                if level.plan.is_some() {
                    return err("second plan");
                }
                let n: usize = plan
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|_| "bad plan")?;
                level.plan = Some(n);
                continue;
            }
            let Some(rest) = body
                .strip_prefix("ok ")
                .or_else(|| body.strip_prefix("not ok "))
            else {
                return err("not a TAP line");
            };
            if level.plan.is_some() && depth > 0 {
                return err("test point after a trailing plan");
            }
            level.points += 1;
            let number = rest.split(' ').next().unwrap_or("");
            if number != level.points.to_string() {
                return err("test point out of order");
            }
            // Only a directive may follow an unescaped `#`.
            let mut chars = rest.char_indices();
            let mut directive = None;
            while let Some((i, c)) = chars.next() {
                if c == '\\' {
                    chars.next();
                } else if c == '#' {
                    directive = Some(&rest[i + 1..]);
                    break;
                }
            }
            if let Some(d) = directive {
                let d = d.trim_start();
                if !(d.starts_with("SKIP") || d.starts_with("TODO")) {
                    return err("unescaped # in a description");
                }
            }
            last_was_point = true;
        }
        if levels.len() != 1 {
            return Err("unclosed subtest".into());
        }
        let top = &levels[0];
        if top.plan != Some(top.points) {
            return Err(format!(
                "plan {:?} but {} test points",
                top.plan, top.points
            ));
        }
        Ok(())
    }

    #[test]
    fn validator_catches_mistakes() {
        for bad in [
            "ok 1\n1..1\n",
            "TAP version 14\nok 2\n1..1\n",
            "TAP version 14\nok 1 - a # b\n1..1\n",
            "TAP version 14\n# Subtest: x\n    ok 1\nok 1 - x\n1..1\n",
            "TAP version 14\n# Subtest: x\n    ok 1\n    1..1\nok 1 - y\n1..1\n",
            "TAP version 14\nok 1\n  ---\n  a: 1\n1..1\n",
            "TAP version 14\nok 1\n1..2\n",
            "TAP version 14\nBail out! x\nok 1\n",
            "TAP version 14\nok 1\n1..1\nBail out! x\n",
        ] {
            assert!(validate(bad).is_err(), "accepted {bad:?}");
        }
    }
}
