//! The plain interface: the test program is one test case (`main`) and its exit status is the
//! verdict, with Kyua's reasons.

use lab_model::{Cause, TestResult};
use lab_proto::ExitStatus;

use super::RunOutcome;

/// The command that runs a plain program: the program alone, no arguments (Kyua passes
/// configuration variables as `TEST_ENV_name` environment variables instead).
pub fn run_argv(program: &str) -> Vec<String> {
    vec![program.to_string()]
}

/// The result of a plain program's run, as Kyua computes it.
pub fn result(outcome: &RunOutcome) -> TestResult {
    match outcome.finished() {
        None => TestResult::broken("Test case timed out").with_cause(Cause::Timeout),
        Some(ExitStatus::Code(0)) => TestResult::passed(),
        Some(ExitStatus::Code(code)) => {
            TestResult::failed(format!("Returned non-success exit status {code}"))
        }
        Some(ExitStatus::Signal(sig)) => TestResult::broken(format!("Received signal {sig}")),
    }
}

#[cfg(test)]
mod tests {
    use lab_model::ResultType;

    use super::*;

    #[test]
    fn results_are_kyuas() {
        let table: &[(RunOutcome, ResultType, Option<&str>, Option<Cause>)] = &[
            (
                RunOutcome::exited(ExitStatus::Code(0)),
                ResultType::Passed,
                None,
                None,
            ),
            (
                RunOutcome::exited(ExitStatus::Code(1)),
                ResultType::Failed,
                Some("Returned non-success exit status 1"),
                None,
            ),
            (
                RunOutcome::exited(ExitStatus::Code(77)),
                ResultType::Failed,
                Some("Returned non-success exit status 77"),
                None,
            ),
            (
                RunOutcome::exited(ExitStatus::Signal(6)),
                ResultType::Broken,
                Some("Received signal 6"),
                None,
            ),
            (
                RunOutcome::timeout(),
                ResultType::Broken,
                Some("Test case timed out"),
                Some(Cause::Timeout),
            ),
            (
                RunOutcome {
                    status: ExitStatus::Code(0),
                    timed_out: true,
                },
                ResultType::Broken,
                Some("Test case timed out"),
                Some(Cause::Timeout),
            ),
        ];
        for (outcome, kind, reason, cause) in table {
            let r = result(outcome);
            assert_eq!(r.kind, *kind, "{outcome:?}");
            assert_eq!(r.reason.as_deref(), *reason, "{outcome:?}");
            assert_eq!(r.cause, *cause, "{outcome:?}");
        }
        assert_eq!(run_argv("/t/p"), ["/t/p"]);
    }
}
