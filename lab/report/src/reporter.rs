//! The [`Reporter`] trait, its error, a fan-out to several reporters, and text helpers they share.

use std::path::PathBuf;
use std::time::Duration;

use lab_model::{CaseId, Counts, RunEvent, SubResult, TestResult};

/// Why a reporter could not report an event.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing the output failed.
    #[error("failed to write the report")]
    Write(#[source] std::io::Error),
    /// The report file could not be written.
    #[error("failed to write {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An event could not be serialized to JSON.
    #[error("failed to serialize an event")]
    Json(#[source] serde_json::Error),
    /// The JUnit report could not be serialized.
    #[error("failed to serialize the junit report")]
    Junit(#[source] quick_junit::SerializeError),
}

impl From<std::io::Error> for ReportError {
    fn from(e: std::io::Error) -> Self {
        Self::Write(e)
    }
}

/// A consumer of a run's events, fed in the order of [`lab_model::event`]'s contract.
pub trait Reporter {
    /// Takes the next event of the run.
    fn event(&mut self, e: &RunEvent) -> Result<(), ReportError>;
}

impl<R: Reporter + ?Sized> Reporter for Box<R> {
    fn event(&mut self, e: &RunEvent) -> Result<(), ReportError> {
        (**self).event(e)
    }
}

/// Feeds every event to several reporters, in the order they were added.
#[derive(Default)]
pub struct FanOut {
    reporters: Vec<Box<dyn Reporter + Send>>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("reporters", &self.reporters.len())
            .finish()
    }
}

impl FanOut {
    /// A fan-out to no reporter yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a reporter.
    pub fn push(&mut self, reporter: impl Reporter + Send + 'static) -> &mut Self {
        self.reporters.push(Box::new(reporter));
        self
    }

    /// How many reporters it feeds.
    pub fn len(&self) -> usize {
        self.reporters.len()
    }

    /// Whether it feeds none.
    pub fn is_empty(&self) -> bool {
        self.reporters.is_empty()
    }
}

impl Reporter for FanOut {
    /// Feeds every reporter, even after one fails (a closed stdout must not lose the JUnit
    /// file); returns the first error.
    fn event(&mut self, e: &RunEvent) -> Result<(), ReportError> {
        let mut first = None;
        for r in &mut self.reporters {
            if let Err(err) = r.event(e) {
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// A finished test case, as a reporter holds it until its program finishes.
#[derive(Debug, Clone)]
pub(crate) struct FinishedCase {
    pub id: CaseId,
    pub result: TestResult,
    pub subresults: Vec<SubResult>,
    pub duration: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl FinishedCase {
    /// The case of a [`RunEvent::CaseFinished`]; `None` for other events.
    pub fn from_event(e: &RunEvent) -> Option<Self> {
        match e {
            RunEvent::CaseFinished {
                id,
                result,
                subresults,
                duration,
                stdout,
                stderr,
                ..
            } => Some(Self {
                id: id.clone(),
                result: result.clone(),
                subresults: subresults.clone(),
                duration: *duration,
                stdout: stdout.clone(),
                stderr: stderr.clone(),
            }),
            _ => None,
        }
    }
}

/// How many trailing lines of a failed case's output reporters show.
pub(crate) const TAIL_LINES: usize = 20;

/// The last `n` lines of `text`, without a trailing newline.
pub(crate) fn tail_lines(text: &str, n: usize) -> &str {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut start = text.len();
    for _ in 0..n {
        match text[..start].rfind('\n') {
            Some(i) => start = i,
            None => return text,
        }
    }
    &text[start + 1..]
}

/// The serialized name of a value that serializes as a string (a [`lab_model::Cause`]).
pub(crate) fn serde_name(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::from("?"),
    }
}

/// `n thing` or `n things`.
pub(crate) fn plural(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("{n} {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// `12 cases: 10 passed, 1 failed, 1 skipped`, naming only the results that occurred.
pub(crate) fn summary(c: &Counts) -> String {
    let parts: Vec<String> = [
        (c.passed, "passed"),
        (c.failed, "failed"),
        (c.skipped, "skipped"),
        (c.expected_failure, "expected failures"),
        (c.broken, "broken"),
    ]
    .into_iter()
    .filter(|&(n, name)| n > 0 || name == "passed")
    .map(|(n, name)| {
        if n == 1 && name == "expected failures" {
            "1 expected failure".to_string()
        } else {
            format!("{n} {name}")
        }
    })
    .collect();
    format!("{}: {}", plural(c.total(), "case"), parts.join(", "))
}

/// A duration in seconds with one decimal, as `1.2s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing;
    impl Reporter for Failing {
        fn event(&mut self, _: &RunEvent) -> Result<(), ReportError> {
            Err(std::io::Error::other("closed").into())
        }
    }

    #[derive(Clone, Default)]
    struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Reporter for Counting {
        fn event(&mut self, _: &RunEvent) -> Result<(), ReportError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn fan_out_feeds_all_and_returns_the_first_error() {
        let counting = Counting::default();
        let mut f = FanOut::new();
        f.push(Failing).push(counting.clone());
        assert_eq!(f.len(), 2);
        let e = RunEvent::Interrupted { forced: false };
        assert!(matches!(f.event(&e), Err(ReportError::Write(_))));
        assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn tails() {
        for (text, n, want) in [
            ("", 3, ""),
            ("a\nb\nc\n", 2, "b\nc"),
            ("a\nb\nc", 2, "b\nc"),
            ("a\nb\nc", 3, "a\nb\nc"),
            ("a\nb\nc", 9, "a\nb\nc"),
            ("a\n\n", 1, ""),
            ("a\n\n", 2, "a\n"),
        ] {
            assert_eq!(tail_lines(text, n), want, "{text:?} {n}");
        }
        assert_eq!(secs(Duration::from_millis(1250)), "1.2s");
        assert_eq!(serde_name(&lab_model::Cause::VmBoot), "vm_boot");
    }
}
