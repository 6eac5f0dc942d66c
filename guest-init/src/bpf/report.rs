//! What `/init bpf run` prints: one JSON object on one line (the contract lab-engine's
//! `interface/bpf.rs` parses), written by hand to keep the guest binary small.

use std::fmt::Write as _;

use super::elf::Stage;

/// How far a run got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ran,
    Skipped,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Skipped => "skipped",
            Outcome::Error => "error",
        }
    }
}

/// One stage's test run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageRun {
    pub stage: Stage,
    pub section: String,
    pub retval: u32,
    pub duration_ns: u64,
}

/// The runner's answer for one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub test: String,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub verifier_log: Option<String>,
    pub stages: Vec<StageRun>,
    /// `suite_result_map[0]` in lowercase hex; None where the object has no such map.
    pub result_map: Option<String>,
    /// Wall time of the test in a shared-object run (its stages, result read and map clears).
    pub wall_ns: Option<u64>,
}

impl Report {
    pub fn new(test: &str) -> Self {
        Self {
            test: test.to_string(),
            outcome: Outcome::Error,
            reason: None,
            verifier_log: None,
            stages: Vec::new(),
            result_map: None,
            wall_ns: None,
        }
    }

    pub fn error(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Error;
        self.reason = Some(reason.into());
        self
    }

    pub fn skipped(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Skipped;
        self.reason = Some(reason.into());
        self
    }

    /// The report as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"test\":");
        string(&mut out, &self.test);
        out.push_str(",\"outcome\":\"");
        out.push_str(self.outcome.as_str());
        out.push('"');
        if let Some(reason) = &self.reason {
            out.push_str(",\"reason\":");
            string(&mut out, reason);
        }
        if let Some(log) = &self.verifier_log {
            out.push_str(",\"verifier_log\":");
            string(&mut out, log);
        }
        out.push_str(",\"stages\":[");
        for (i, s) in self.stages.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"stage\":\"");
            out.push_str(s.stage.as_str());
            out.push_str("\",\"section\":");
            string(&mut out, &s.section);
            let _ = write!(
                out,
                ",\"retval\":{},\"duration_ns\":{}}}",
                s.retval, s.duration_ns
            );
        }
        out.push_str("],\"result_map\":");
        match &self.result_map {
            Some(hex) => string(&mut out, hex),
            None => out.push_str("null"),
        }
        if let Some(ns) = self.wall_ns {
            let _ = write!(out, ",\"wall_ns\":{ns}");
        }
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_one_line_of_json() {
        let mut r = Report::new("t\"1");
        r.outcome = Outcome::Ran;
        r.stages.push(StageRun {
            stage: Stage::Check,
            section: "xdp/test/t/check".into(),
            retval: 1,
            duration_ns: 42,
        });
        r.result_map = Some("0a00".into());
        assert_eq!(
            r.to_json(),
            r#"{"test":"t\"1","outcome":"ran","stages":[{"stage":"check","section":"xdp/test/t/check","retval":1,"duration_ns":42}],"result_map":"0a00"}"#
        );
        let mut e = Report::new("x").error("bad\tthing");
        e.verifier_log = Some("0: R1=ctx\n\u{1}".into());
        assert_eq!(
            e.to_json(),
            r#"{"test":"x","outcome":"error","reason":"bad\tthing","verifier_log":"0: R1=ctx\n\u0001","stages":[],"result_map":null}"#
        );
        assert!(!e.to_json().contains('\n'));
    }
}
