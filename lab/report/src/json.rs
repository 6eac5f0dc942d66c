//! `--format json`: every event as one JSON object on its own line, as it happens.

use std::io::Write;

use lab_model::RunEvent;

use crate::reporter::{ReportError, Reporter};

/// Writes each event as a line of JSON.
#[derive(Debug)]
pub struct JsonReporter<W: Write> {
    out: W,
}

impl<W: Write> JsonReporter<W> {
    /// A reporter writing to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// The writer, back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Reporter for JsonReporter<W> {
    fn event(&mut self, e: &RunEvent) -> Result<(), ReportError> {
        let mut line = serde_json::to_vec(e).map_err(ReportError::Json)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn one_object_per_line_that_reads_back() {
        let events = fixture::run();
        let mut r = JsonReporter::new(Vec::new());
        for e in &events {
            r.event(e).expect("writes to a Vec");
        }
        let out = String::from_utf8(r.into_inner()).expect("utf-8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), events.len());
        for (l, e) in lines.iter().zip(&events) {
            let back: RunEvent = serde_json::from_str(l).expect("a RunEvent");
            assert_eq!(&back, e);
        }
    }

    #[test]
    fn snapshot() {
        let events = fixture::run();
        let mut r = JsonReporter::new(Vec::new());
        for e in &events {
            r.event(e).expect("writes to a Vec");
        }
        let out = String::from_utf8(r.into_inner()).expect("utf-8");
        let want = [
            r#"{"event":"run_started","kernels":["debian-6.1","debian-6.12"],"programs":3,"jobs":2,"root":"initramfs"}"#,
            r#"{"event":"vm_booting","slot":0,"kernel":"debian-6.1"}"#,
            r#"{"event":"vm_booting","slot":1,"kernel":"debian-6.12"}"#,
            r#"{"event":"vm_ready","slot":0,"kernel":"debian-6.1","release":"6.1.0-18-cloud-amd64","boot_time":2100}"#,
            r#"{"event":"cases_listed","kernel":"debian-6.1","program":"t/atf_test","cases":5}"#,
        ];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(out.lines().nth(i), Some(*w));
        }
        let fail = out
            .lines()
            .find(|l| l.contains(r#""case":"fail""#) && l.contains("case_finished"))
            .expect("the failed case");
        assert_eq!(
            fail,
            r#"{"event":"case_finished","id":{"kernel":"debian-6.1","program":"t/atf_test","case":"fail"},"interface":"atf","result":"failed","reason":"assertion failed: x == 1\nat t/atf_test.c:12","duration":1250,"stdout":"checking x\n","stderr":"x is 2\nexpected 1\n"}"#
        );
        assert_eq!(
            out.lines().last(),
            Some(
                r#"{"event":"run_finished","counts":{"passed":4,"failed":2,"skipped":2,"expected_failure":1,"broken":2},"duration":12345,"interrupted":false}"#
            )
        );
    }
}
