//! The closed result space of a test case (Kyua's five) and the cause of a broken one.

use serde::{Deserialize, Serialize};

/// What became of a test case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultType {
    /// It passed.
    Passed,
    /// It ran and its checks failed: the code under test is at fault.
    Failed,
    /// It did not run, or chose not to (a requirement not met).
    Skipped,
    /// It failed in the way it said it would.
    ExpectedFailure,
    /// It could not give a verdict: the test program, the VM or the lab is at fault.
    Broken,
}

impl ResultType {
    /// Kyua's name for the result.
    pub fn name(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::ExpectedFailure => "expected_failure",
            Self::Broken => "broken",
        }
    }

    /// Whether this result lets the run succeed (Kyua: passed, skipped, expected failure).
    pub fn is_good(self) -> bool {
        matches!(self, Self::Passed | Self::Skipped | Self::ExpectedFailure)
    }
}

impl std::fmt::Display for ResultType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a result is broken (or skipped) when the lab, not the test, decided it: lets a user see
/// at once whether their code or the lab failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The test case ran past its timeout and was killed.
    Timeout,
    /// The VM for the test case could not be booted.
    VmBoot,
    /// The guest kernel panicked, or the VM died, while the test case ran.
    VmDied,
    /// The guest agent was lost or broke the protocol.
    AgentLost,
    /// The test program could not be started.
    Exec,
    /// Lab's own side broke its protocol: its eBPF runner (`/init bpf`) gave no or invalid
    /// output. A test program's own invalid output (an atf result file, a TAP stream, a case
    /// list) is not this: that result carries no cause, its reason says what the program did.
    Protocol,
    /// A requirement in the metadata is not met.
    Requirement,
    /// The run was interrupted before the test case finished.
    Interrupted,
}

/// The result of one test case: its type and, but for a plain pass, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    /// What became of it.
    #[serde(rename = "result")]
    pub kind: ResultType,
    /// Why (the test's own reason, or the lab's).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Set when the lab, not the test program, decided the result.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cause: Option<Cause>,
}

impl TestResult {
    /// A result of `kind` with an optional reason.
    pub fn new(kind: ResultType, reason: Option<String>) -> Self {
        Self {
            kind,
            reason,
            cause: None,
        }
    }

    /// Passed, no reason.
    pub fn passed() -> Self {
        Self::new(ResultType::Passed, None)
    }

    /// Failed with `reason`.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::new(ResultType::Failed, Some(reason.into()))
    }

    /// Skipped with `reason`.
    pub fn skipped(reason: impl Into<String>) -> Self {
        Self::new(ResultType::Skipped, Some(reason.into()))
    }

    /// Expected failure with `reason`.
    pub fn expected_failure(reason: impl Into<String>) -> Self {
        Self::new(ResultType::ExpectedFailure, Some(reason.into()))
    }

    /// Broken with `reason`.
    pub fn broken(reason: impl Into<String>) -> Self {
        Self::new(ResultType::Broken, Some(reason.into()))
    }

    /// The same result, marked as decided by the lab for `cause`.
    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = Some(cause);
        self
    }
}

impl std::fmt::Display for TestResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            Some(r) => write!(f, "{}: {r}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_results_are_kyuas() {
        let good: Vec<_> = [
            ResultType::Passed,
            ResultType::Failed,
            ResultType::Skipped,
            ResultType::ExpectedFailure,
            ResultType::Broken,
        ]
        .into_iter()
        .filter(|r| r.is_good())
        .map(ResultType::name)
        .collect();
        assert_eq!(good, ["passed", "skipped", "expected_failure"]);
    }

    #[test]
    fn display_and_json() {
        let r = TestResult::broken("timed out after 1s").with_cause(Cause::Timeout);
        assert_eq!(r.to_string(), "broken: timed out after 1s");
        let json = serde_json::to_string(&r).expect("serializes");
        assert_eq!(
            json,
            r#"{"result":"broken","reason":"timed out after 1s","cause":"timeout"}"#
        );
        assert_eq!(TestResult::passed().to_string(), "passed");
    }
}
