//! The atf interface: the commands that list and run an atf test program's cases, the parsers
//! for its `-l` listing and its result file, and Kyua 0.13's rules that turn a case's run into
//! a result.
//!
//! Reasons in results are Kyua's own words, so reports read the same as Kyua's; errors'
//! `Display` follows the house style and [`AtfError::reason`] gives Kyua's wording.

use lab_model::{Cause, Metadata, MetadataError, TestCase, TestResult};
use lab_proto::ExitStatus;

use super::RunOutcome;

/// The first line of a listing.
pub const LIST_HEADER: &str = "Content-Type: application/X-atf-tp; version=\"1\"";

/// The most bytes of a reason taken from a result file; the rest is cut.
pub const MAX_REASON: usize = 16 << 10;

/// A listing or a result file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtfError {
    /// The listing does not start with the atf header.
    #[error("line {line}: invalid listing header")]
    BadHeader {
        /// Its line.
        line: usize,
        /// What was there.
        got: String,
    },
    /// The header is not followed by a blank line.
    #[error("line {line}: expected a blank line after the listing header")]
    NoBlankLine {
        /// Its line.
        line: usize,
        /// What was there.
        got: String,
    },
    /// A line that is not `name: value`.
    #[error("line {line}: invalid property line")]
    BadPropertyLine {
        /// Its line.
        line: usize,
    },
    /// A block that does not start with `ident: NAME`.
    #[error("line {line}: test case does not start with its ident")]
    NoIdent {
        /// Its line.
        line: usize,
    },
    /// A property given twice for one case.
    #[error("line {line}: duplicate property '{name}'")]
    DuplicateProperty {
        /// Its line.
        line: usize,
        /// The property.
        name: String,
    },
    /// A property atf does not define.
    #[error("line {line}: unknown property '{name}'")]
    UnknownProperty {
        /// Its line.
        line: usize,
        /// The property.
        name: String,
    },
    /// A property whose value does not parse.
    #[error("line {line}: invalid value for property '{name}'")]
    BadValue {
        /// Its line.
        line: usize,
        /// The atf property.
        name: String,
        /// Why.
        #[source]
        source: MetadataError,
    },
    /// A case listed twice.
    #[error("line {line}: duplicate test case '{name}'")]
    DuplicateCase {
        /// Its line.
        line: usize,
        /// The case.
        name: String,
    },
    /// A listing with no cases.
    #[error("no test cases listed")]
    NoCases,
    /// A result file that is empty or has no final newline.
    #[error("empty result file or no newline")]
    EmptyResult,
    /// A result file of more than one line.
    #[error("result file has more than one line")]
    MultipleLines {
        /// Its lines joined with Kyua's `<<NEWLINE>>`.
        joined: String,
    },
    /// A result atf does not define.
    #[error("unknown result '{0}'")]
    UnknownResult(String),
    /// `passed` with something after it.
    #[error("result '{0}' takes no reason")]
    UnexpectedReason(&'static str),
    /// A result that needs `: reason` without one.
    #[error("result '{0}' needs ': reason'")]
    MissingReason(&'static str),
    /// `expected_exit`/`expected_signal` not followed by `[(N)]: reason`.
    #[error("result '{status}' needs '[(N)]: reason'")]
    BadArgumentForm {
        /// The result.
        status: &'static str,
        /// What followed it.
        rest: String,
    },
    /// `(` with no `):` after it.
    #[error("unclosed '(' in result")]
    UnclosedArgument {
        /// What followed the result's name.
        rest: String,
    },
    /// An argument that is not an integer.
    #[error("invalid argument '{arg}' to result '{status}'")]
    BadArgument {
        /// The result.
        status: &'static str,
        /// The argument.
        arg: String,
    },
}

impl AtfError {
    /// Kyua's words for the error: the reason of the broken result it leads to.
    pub fn reason(&self) -> String {
        match self {
            Self::BadHeader { got, .. } => format!(
                "Invalid header for test case list; expecting Content-Type for \
                 application/X-atf-tp version 1, got '{got}'"
            ),
            Self::NoBlankLine { got, .. } => {
                format!("Invalid header for test case list; expecting a blank line, got '{got}'")
            }
            Self::BadPropertyLine { .. } => {
                "Invalid property line; expecting line of the form 'name: value'".to_string()
            }
            // Kyua's spelling.
            Self::NoIdent { .. } => {
                "Invalid test case definition; must be preceeded by the identifier".to_string()
            }
            Self::DuplicateProperty { name, .. } => format!("Duplicate value for property {name}"),
            Self::UnknownProperty { name, .. } => {
                format!("Unknown test case metadata property '{name}'")
            }
            Self::BadValue { name, source, .. } => {
                format!("Invalid value for property '{name}': {source}")
            }
            Self::DuplicateCase { name, .. } => format!("Duplicate test case {name}"),
            Self::NoCases => "No test cases".to_string(),
            Self::EmptyResult => "Empty test result or no new line".to_string(),
            Self::MultipleLines { joined } => {
                format!("Test result contains multiple lines: {joined}")
            }
            Self::UnknownResult(s) => format!("Unknown test result '{s}'"),
            Self::UnexpectedReason(s) => format!("{s} cannot have a reason"),
            Self::MissingReason(s) => format!("{s} must be followed by ': <reason>'"),
            Self::BadArgumentForm { status, rest } => format!(
                "Invalid format for '{status}' test case result; must be followed by \
                 '[(num)]: <reason>' but found '{rest}'"
            ),
            Self::UnclosedArgument { rest } => format!("Mismatched '(' in {rest}"),
            Self::BadArgument { status, arg } => {
                format!("Invalid integer argument '{arg}' to '{status}' test case result")
            }
        }
    }
}

/// What a test case's result file says, before it is checked against how the case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtfRawResult {
    /// `passed`.
    Passed,
    /// `failed: R`.
    Failed(String),
    /// `skipped: R`.
    Skipped(String),
    /// `expected_failure: R`.
    ExpectedFailure(String),
    /// `expected_death: R`.
    ExpectedDeath(String),
    /// `expected_exit: R` or `expected_exit(N): R`.
    ExpectedExit(Option<i32>, String),
    /// `expected_signal: R` or `expected_signal(N): R`.
    ExpectedSignal(Option<i32>, String),
    /// `expected_timeout: R`.
    ExpectedTimeout(String),
    /// `broken: R`.
    Broken(String),
}

impl AtfRawResult {
    /// Whether the result lets the run succeed (Kyua's `good()`).
    fn is_good(&self) -> bool {
        !matches!(self, Self::Failed(_) | Self::Broken(_))
    }

    /// The interface-free result (Kyua's `externalize()`).
    fn externalize(self) -> TestResult {
        match self {
            Self::Passed => TestResult::passed(),
            Self::Failed(r) => TestResult::failed(r),
            Self::Skipped(r) => TestResult::skipped(r),
            Self::ExpectedFailure(r)
            | Self::ExpectedDeath(r)
            | Self::ExpectedExit(_, r)
            | Self::ExpectedSignal(_, r)
            | Self::ExpectedTimeout(r) => TestResult::expected_failure(r),
            Self::Broken(r) => TestResult::broken(r),
        }
    }
}

/// The command that lists a program's test cases.
pub fn list_argv(program: &str) -> Vec<String> {
    vec![program.to_string(), "-l".to_string()]
}

/// The command that runs the body of test case `case`: `PROG -r RESFILE -s SRCDIR [-v k=v…]
/// CASE`. `srcdir` is the directory holding the program in the guest (atf programs look for
/// themselves and their data files there); `config_vars` are the suite's configuration
/// variables. Plain `CASE` runs the body alone, with or without a cleanup routine.
pub fn run_argv(
    program: &str,
    srcdir: &str,
    case: &str,
    resfile: &str,
    config_vars: &[(String, String)],
) -> Vec<String> {
    let mut argv = vec![program.to_string(), "-r".to_string(), resfile.to_string()];
    push_common(&mut argv, srcdir, config_vars);
    argv.push(case.to_string());
    argv
}

/// The command that runs the cleanup routine of test case `case`, with the same flags as its
/// body but no result file: `PROG -s SRCDIR [-v k=v…] CASE:cleanup`.
pub fn cleanup_argv(
    program: &str,
    srcdir: &str,
    case: &str,
    config_vars: &[(String, String)],
) -> Vec<String> {
    let mut argv = vec![program.to_string()];
    push_common(&mut argv, srcdir, config_vars);
    argv.push(format!("{case}:cleanup"));
    argv
}

fn push_common(argv: &mut Vec<String>, srcdir: &str, config_vars: &[(String, String)]) {
    argv.push("-s".to_string());
    argv.push(srcdir.to_string());
    for (k, v) in config_vars {
        argv.push("-v".to_string());
        argv.push(format!("{k}={v}"));
    }
}

/// The lab property an atf property sets, if atf defines it (Kyua's mapping; `X-NAME` is the
/// custom property `NAME`, as Kyua reports it).
fn lab_property(atf: &str) -> Option<String> {
    let lab = match atf {
        "descr" => "description",
        "has.cleanup" => "has_cleanup",
        "is.exclusive" => "is_exclusive",
        "require.arch" => "allowed_architectures",
        "require.config" => "required_configs",
        "require.diskspace" => "required_disk_space",
        "require.files" => "required_files",
        "require.kmods" => "required_kmods",
        "require.machine" => "allowed_platforms",
        "require.memory" => "required_memory",
        "require.progs" => "required_programs",
        "require.user" => "required_user",
        "timeout" => "timeout",
        "execenv" => "execenv",
        "execenv.jail.params" => "execenv_jail_params",
        _ => {
            return atf
                .strip_prefix("X-")
                .filter(|name| !name.is_empty())
                .map(|name| format!("custom.{name}"));
        }
    };
    Some(lab.to_string())
}

/// Splits `name: value` at the first `": "`.
fn split_property(line: &str) -> Option<(&str, &str)> {
    line.split_once(": ")
}

/// Parses what `PROG -l` printed into its test cases, each with the program's metadata
/// overridden by the properties listed for it. The grammar is Kyua's: the header line, a blank
/// line, then blocks of `name: value` lines separated by one blank line, each starting with
/// `ident: NAME`. (Kyua drops a last line with no newline; this parser keeps it.)
pub fn parse_list(stdout: &str, program_md: &Metadata) -> Result<Vec<TestCase>, AtfError> {
    let mut lines = stdout
        .split_terminator('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, LIST_HEADER)) => {}
        other => {
            return Err(AtfError::BadHeader {
                line: 1,
                got: truncated(other.map_or("", |(_, l)| l)),
            })
        }
    }
    match lines.next() {
        Some((_, "")) => {}
        other => {
            return Err(AtfError::NoBlankLine {
                line: 2,
                got: truncated(other.map_or("", |(_, l)| l)),
            })
        }
    }
    let mut cases: Vec<TestCase> = Vec::new();
    while let Some((n, line)) = lines.next() {
        let (key, name) = split_property(line).ok_or(AtfError::BadPropertyLine { line: n })?;
        if key != "ident" || name.is_empty() {
            return Err(AtfError::NoIdent { line: n });
        }
        let mut props: Vec<(usize, &str, &str)> = Vec::new();
        for (n, line) in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            let (k, v) = split_property(line).ok_or(AtfError::BadPropertyLine { line: n })?;
            if props.iter().any(|(_, seen, _)| *seen == k) {
                return Err(AtfError::DuplicateProperty {
                    line: n,
                    name: k.to_string(),
                });
            }
            props.push((n, k, v));
        }
        let mut metadata = program_md.clone();
        for (n, k, v) in props {
            let lab = lab_property(k).ok_or_else(|| AtfError::UnknownProperty {
                line: n,
                name: k.to_string(),
            })?;
            metadata.set(&lab, v).map_err(|source| AtfError::BadValue {
                line: n,
                name: k.to_string(),
                source,
            })?;
        }
        if cases.iter().any(|c| c.name == name) {
            return Err(AtfError::DuplicateCase {
                line: n,
                name: name.to_string(),
            });
        }
        cases.push(TestCase {
            name: name.to_string(),
            metadata,
        });
    }
    if cases.is_empty() {
        return Err(AtfError::NoCases);
    }
    Ok(cases)
}

/// Cuts `s` to at most [`MAX_REASON`] bytes, at a character boundary.
fn truncated(s: &str) -> String {
    if s.len() <= MAX_REASON {
        return s.to_string();
    }
    let mut end = MAX_REASON;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Parses a result file, with Kyua's rules: exactly one line ending in a newline (none, no
/// final newline, or a second line are errors), a lowercase result name, then nothing
/// (`passed`), `: REASON`, or for `expected_exit`/`expected_signal` an optional `(N)` before
/// the `:`.
pub fn parse_result_file(contents: &str) -> Result<AtfRawResult, AtfError> {
    let mut pieces: Vec<&str> = contents.split('\n').collect();
    // What follows the last newline: empty when the file ends in one.
    let tail = pieces.pop().unwrap_or("");
    let line = match (pieces.as_slice(), tail) {
        ([], _) => return Err(AtfError::EmptyResult),
        ([one], "") => *one,
        (many, tail) => {
            let mut all = many.to_vec();
            if !tail.is_empty() {
                all.push(tail);
            }
            return Err(AtfError::MultipleLines {
                joined: truncated(&all.join("<<NEWLINE>>")),
            });
        }
    };
    let split = line
        .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .unwrap_or(line.len());
    let (status, rest) = line.split_at(split);
    let with_reason = |status: &'static str| -> Result<String, AtfError> {
        match rest.strip_prefix(": ") {
            Some(reason) if !reason.is_empty() => Ok(truncated(reason)),
            _ => Err(AtfError::MissingReason(status)),
        }
    };
    Ok(match status {
        "passed" if rest.is_empty() => AtfRawResult::Passed,
        "passed" => return Err(AtfError::UnexpectedReason("passed")),
        "failed" => AtfRawResult::Failed(with_reason("failed")?),
        "skipped" => AtfRawResult::Skipped(with_reason("skipped")?),
        "broken" => AtfRawResult::Broken(with_reason("broken")?),
        "expected_failure" => AtfRawResult::ExpectedFailure(with_reason("expected_failure")?),
        "expected_death" => AtfRawResult::ExpectedDeath(with_reason("expected_death")?),
        "expected_timeout" => AtfRawResult::ExpectedTimeout(with_reason("expected_timeout")?),
        "expected_exit" => {
            let (arg, reason) = argument_and_reason("expected_exit", rest)?;
            AtfRawResult::ExpectedExit(arg, reason)
        }
        "expected_signal" => {
            let (arg, reason) = argument_and_reason("expected_signal", rest)?;
            AtfRawResult::ExpectedSignal(arg, reason)
        }
        other => return Err(AtfError::UnknownResult(truncated(other))),
    })
}

/// Parses `[(N)]: REASON` after `expected_exit`/`expected_signal`, as loosely as Kyua: from
/// the first `:` or `(`, the character after the `:` is skipped unchecked and the reason may be
/// empty.
fn argument_and_reason(
    status: &'static str,
    rest: &str,
) -> Result<(Option<i32>, String), AtfError> {
    let bad_form = || AtfError::BadArgumentForm {
        status,
        rest: truncated(rest),
    };
    let delim = rest.find([':', '(']).ok_or_else(bad_form)?;
    let (arg, after) = if rest[delim..].starts_with('(') {
        let inner = &rest[delim + 1..];
        let close = inner.find("):").ok_or_else(|| AtfError::UnclosedArgument {
            rest: truncated(rest),
        })?;
        let text = &inner[..close];
        let arg = text
            .trim_start()
            .parse::<i32>()
            .map_err(|_| AtfError::BadArgument {
                status,
                arg: truncated(text),
            })?;
        (Some(arg), &inner[close + 1..])
    } else {
        (None, &rest[delim..])
    };
    // `after` starts at the ':'; skip it and the one character after it.
    let mut chars = after.chars();
    chars.next();
    if chars.next().is_none() {
        return Err(bad_form());
    }
    Ok((arg, truncated(chars.as_str())))
}

/// Kyua's words for how a process ended.
fn describe(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exited with code {c}"),
        ExitStatus::Signal(s) => format!("received signal {s}"),
    }
}

/// Checks what the result file says against how the body ended (Kyua's `apply()` for a body
/// that did not time out). Returns the adjusted result and whether the lab overruled the file.
fn apply(raw: AtfRawResult, status: ExitStatus) -> (AtfRawResult, bool) {
    use AtfRawResult as R;
    let exited_ok = status == ExitStatus::Code(0);
    let broken = |what: &str| (R::Broken(format!("{what} but {}", describe(status))), true);
    match raw {
        R::Broken(_) | R::ExpectedDeath(_) => (raw, false),
        R::ExpectedExit(arg, reason) => match (status, arg) {
            (ExitStatus::Code(code), Some(want)) if code != want => (
                R::Failed(format!(
                    "Test case expected to exit with code {want} but got code {code}"
                )),
                false,
            ),
            (ExitStatus::Code(_), _) => (R::ExpectedExit(arg, reason), false),
            (ExitStatus::Signal(_), _) => broken("Expected clean exit"),
        },
        R::ExpectedSignal(arg, reason) => match (status, arg) {
            (ExitStatus::Signal(sig), Some(want)) if sig != want => (
                R::Failed(format!(
                    "Test case expected to receive signal {want} but got {sig}"
                )),
                false,
            ),
            (ExitStatus::Signal(_), _) => (R::ExpectedSignal(arg, reason), false),
            (ExitStatus::Code(_), _) => broken("Expected signal"),
        },
        R::ExpectedFailure(_) if exited_ok => (raw, false),
        R::ExpectedFailure(_) => broken("Expected failure should have reported success"),
        R::ExpectedTimeout(_) => broken("Expected timeout"),
        R::Failed(_) if status == ExitStatus::Code(1) => (raw, false),
        R::Failed(_) => broken("Failed test case should have reported failure"),
        R::Passed if exited_ok => (raw, false),
        R::Passed => broken("Passed test case should have reported success"),
        R::Skipped(_) if exited_ok => (raw, false),
        R::Skipped(_) => broken("Skipped test case should have reported success"),
    }
}

/// The result of an atf test case, by Kyua's rules (`calculate_atf_result`).
///
/// `raw` is the parsed result file (`None`: the body wrote none), `body` how the body ended,
/// `cleanup` how the cleanup routine ended (`None`: the case has none, or it was not run).
/// The file's result must agree with the body's end (passed, skipped and expected_failure
/// need exit 0, failed exit 1, expected_exit(N) code N, expected_signal(N) signal N,
/// expected_timeout a timeout); a body timeout without expected_timeout is broken; a good
/// result turns broken when the cleanup fails or times out. A timeout, which the lab decided,
/// carries [`Cause::Timeout`]; a bad or missing result file, or one that disagrees with the exit
/// status, is the program's own doing (Kyua's reason says which) and carries no cause.
pub fn result(
    raw: Option<Result<AtfRawResult, AtfError>>,
    body: &RunOutcome,
    cleanup: Option<&RunOutcome>,
) -> TestResult {
    let body_status = body.finished();
    let (mut res, mut cause) = match raw {
        Some(Ok(r)) => (r, None),
        Some(Err(e)) => (AtfRawResult::Broken(e.reason()), None),
        None => match body_status {
            Some(st) => (
                AtfRawResult::Broken(format!("Premature exit; test case {}", describe(st))),
                None,
            ),
            // Replaced below: a timeout.
            None => (AtfRawResult::Broken("Unknown result".to_string()), None),
        },
    };
    match body_status {
        None => {
            if !matches!(res, AtfRawResult::ExpectedTimeout(_)) {
                res = AtfRawResult::Broken("Test case body timed out".to_string());
                cause = Some(Cause::Timeout);
            }
        }
        Some(st) => {
            let (applied, overruled) = apply(res, st);
            res = applied;
            if overruled {
                cause = None;
            }
        }
    }
    if res.is_good() {
        match cleanup {
            Some(c) if c.timed_out => {
                res = AtfRawResult::Broken("Test case cleanup timed out".to_string());
                cause = Some(Cause::Timeout);
            }
            Some(c) if c.status != ExitStatus::Code(0) => {
                res = AtfRawResult::Broken(
                    "Test case cleanup did not terminate successfully".to_string(),
                );
                cause = None;
            }
            _ => {}
        }
    }
    let mut out = res.externalize();
    out.cause = cause;
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lab_model::{Execenv, RequiredUser, ResultType};

    use super::*;

    fn listing(body: &str) -> String {
        format!("{LIST_HEADER}\n\n{body}")
    }

    #[test]
    fn argv() {
        let vars = vec![("a".to_string(), "1".to_string())];
        assert_eq!(list_argv("/t/p"), ["/t/p", "-l"]);
        assert_eq!(
            run_argv("/t/p", "/t", "c", "/w/result", &vars),
            ["/t/p", "-r", "/w/result", "-s", "/t", "-v", "a=1", "c"]
        );
        assert_eq!(
            cleanup_argv("/t/p", "/t", "c", &vars),
            ["/t/p", "-s", "/t", "-v", "a=1", "c:cleanup"]
        );
        assert_eq!(
            run_argv("/p", "/", "c", "/r", &[]),
            ["/p", "-r", "/r", "-s", "/", "c"]
        );
    }

    #[test]
    fn lists_cases_with_metadata() {
        let mut program = Metadata::default();
        program.set("timeout", "10").expect("valid");
        program.set("required_files", "/etc/passwd").expect("valid");
        program.set("custom.team", "net").expect("valid");
        let out = listing(
            "ident: first\n\
             descr: does: things\n\
             has.cleanup: true\n\
             require.arch: x86_64 aarch64\n\
             require.config: v1 v2\n\
             require.diskspace: 1m\n\
             require.files: /a /b\n\
             require.machine: lab\n\
             require.memory: 2k\n\
             require.progs: /bin/sh ip\n\
             require.user: unprivileged\n\
             timeout: 7\n\
             execenv: jail\n\
             execenv.jail.params: vnet\n\
             is.exclusive: true\n\
             X-owner: me\n\
             \n\
             ident: second\n",
        );
        let cases = parse_list(&out, &program).expect("parses");
        assert_eq!(cases.len(), 2);
        let m = &cases[0].metadata;
        assert_eq!(cases[0].name, "first");
        assert_eq!(m.description, "does: things");
        assert!(m.has_cleanup && m.is_exclusive);
        assert_eq!(m.allowed_architectures.len(), 2);
        assert!(m.required_configs.contains("v2"));
        assert_eq!(m.required_disk_space, 1 << 20);
        assert_eq!(m.required_files.len(), 2);
        assert!(!m.required_files.contains("/etc/passwd"), "overridden");
        assert!(m.allowed_platforms.contains("lab"));
        assert_eq!(m.required_memory, 2048);
        assert!(m.required_programs.contains("ip"));
        assert_eq!(m.required_user, RequiredUser::Unprivileged);
        assert_eq!(m.timeout, Duration::from_secs(7));
        assert_eq!(m.execenv, Execenv::Jail);
        assert!(m.jail_vnet());
        assert_eq!(m.custom["owner"], "me");
        assert_eq!(m.custom["team"], "net", "kept from the program");
        assert_eq!(cases[1].name, "second");
        assert_eq!(cases[1].metadata, program, "the program's, untouched");
    }

    #[test]
    fn rejects_bad_listings() {
        let md = Metadata::default();
        let table: &[(&str, AtfError, &str)] = &[
            (
                "",
                AtfError::BadHeader {
                    line: 1,
                    got: String::new(),
                },
                "Invalid header for test case list; expecting Content-Type for \
                 application/X-atf-tp version 1, got ''",
            ),
            (
                "Content-Type: application/X-atf-tp; version=\"2\"\n\nident: a\n",
                AtfError::BadHeader {
                    line: 1,
                    got: "Content-Type: application/X-atf-tp; version=\"2\"".into(),
                },
                "Invalid header for test case list; expecting Content-Type for \
                 application/X-atf-tp version 1, got 'Content-Type: \
                 application/X-atf-tp; version=\"2\"'",
            ),
            (
                "Content-Type: application/X-atf-tp; version=\"1\"\nident: a\n",
                AtfError::NoBlankLine {
                    line: 2,
                    got: "ident: a".into(),
                },
                "Invalid header for test case list; expecting a blank line, got 'ident: a'",
            ),
            (
                "Content-Type: application/X-atf-tp; version=\"1\"\n",
                AtfError::NoBlankLine {
                    line: 2,
                    got: String::new(),
                },
                "Invalid header for test case list; expecting a blank line, got ''",
            ),
            (&listing(""), AtfError::NoCases, "No test cases"),
            (
                &listing("ident a\n"),
                AtfError::BadPropertyLine { line: 3 },
                "Invalid property line; expecting line of the form 'name: value'",
            ),
            (
                &listing("descr: x\n"),
                AtfError::NoIdent { line: 3 },
                "Invalid test case definition; must be preceeded by the identifier",
            ),
            (
                &listing("ident: \n"),
                AtfError::NoIdent { line: 3 },
                "Invalid test case definition; must be preceeded by the identifier",
            ),
            (
                &listing("ident: a\n\n\nident: b\n"),
                AtfError::BadPropertyLine { line: 5 },
                "Invalid property line; expecting line of the form 'name: value'",
            ),
            (
                &listing("ident: a\ndescr: x\ndescr: y\n"),
                AtfError::DuplicateProperty {
                    line: 5,
                    name: "descr".into(),
                },
                "Duplicate value for property descr",
            ),
            (
                &listing("ident: a\ncolour: red\n"),
                AtfError::UnknownProperty {
                    line: 4,
                    name: "colour".into(),
                },
                "Unknown test case metadata property 'colour'",
            ),
            (
                &listing("ident: a\nX-: red\n"),
                AtfError::UnknownProperty {
                    line: 4,
                    name: "X-".into(),
                },
                "Unknown test case metadata property 'X-'",
            ),
            (
                &listing("ident: a\n\nident: a\n"),
                AtfError::DuplicateCase {
                    line: 5,
                    name: "a".into(),
                },
                "Duplicate test case a",
            ),
        ];
        for (input, want, reason) in table {
            let got = parse_list(input, &md).expect_err(input);
            assert_eq!(&got, want, "{input:?}");
            assert_eq!(got.reason(), *reason, "{input:?}");
        }
        let bad = parse_list(&listing("ident: a\ntimeout: soon\n"), &md).expect_err("bad");
        assert!(matches!(bad, AtfError::BadValue { line: 4, .. }), "{bad:?}");
        assert!(bad
            .reason()
            .starts_with("Invalid value for property 'timeout'"));
    }

    #[test]
    fn parses_result_files() {
        use AtfRawResult as R;
        let ok: &[(&str, R)] = &[
            ("passed\n", R::Passed),
            ("failed: it broke\n", R::Failed("it broke".into())),
            ("skipped: no net\n", R::Skipped("no net".into())),
            ("broken: oops\n", R::Broken("oops".into())),
            (
                "expected_failure: bug 1\n",
                R::ExpectedFailure("bug 1".into()),
            ),
            ("expected_death: dies\n", R::ExpectedDeath("dies".into())),
            (
                "expected_timeout: slow\n",
                R::ExpectedTimeout("slow".into()),
            ),
            ("expected_exit: any\n", R::ExpectedExit(None, "any".into())),
            (
                "expected_exit(3): three\n",
                R::ExpectedExit(Some(3), "three".into()),
            ),
            (
                "expected_exit(-1): neg\n",
                R::ExpectedExit(Some(-1), "neg".into()),
            ),
            (
                "expected_signal: sig\n",
                R::ExpectedSignal(None, "sig".into()),
            ),
            (
                "expected_signal(9): kill\n",
                R::ExpectedSignal(Some(9), "kill".into()),
            ),
            ("expected_exit: \n", R::ExpectedExit(None, String::new())),
            ("expected_exit junk: r\n", R::ExpectedExit(None, "r".into())),
            (
                "expected_exit( 2): r\n",
                R::ExpectedExit(Some(2), "r".into()),
            ),
            ("failed: a: b\n", R::Failed("a: b".into())),
            ("failed:  \n", R::Failed(" ".into())),
        ];
        for (input, want) in ok {
            assert_eq!(parse_result_file(input).as_ref(), Ok(want), "{input:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("", "Empty test result or no new line"),
            ("passed", "Empty test result or no new line"),
            (
                "passed\n\n",
                "Test result contains multiple lines: passed<<NEWLINE>>",
            ),
            (
                "failed: a\nmore",
                "Test result contains multiple lines: failed: a<<NEWLINE>>more",
            ),
            ("\n", "Unknown test result ''"),
            ("Passed\n", "Unknown test result ''"),
            ("bogus: x\n", "Unknown test result 'bogus'"),
            ("passed: yes\n", "passed cannot have a reason"),
            ("failed\n", "failed must be followed by ': <reason>'"),
            ("failed: \n", "failed must be followed by ': <reason>'"),
            ("failed:x\n", "failed must be followed by ': <reason>'"),
            (
                "expected_exit\n",
                "Invalid format for 'expected_exit' test case result; must be followed by \
                 '[(num)]: <reason>' but found ''",
            ),
            (
                "expected_signal x\n",
                "Invalid format for 'expected_signal' test case result; must be followed by \
                 '[(num)]: <reason>' but found ' x'",
            ),
            (
                "expected_exit:\n",
                "Invalid format for 'expected_exit' test case result; must be followed by \
                 '[(num)]: <reason>' but found ':'",
            ),
            ("expected_exit(3: r\n", "Mismatched '(' in (3: r"),
            (
                "expected_exit(x): r\n",
                "Invalid integer argument 'x' to 'expected_exit' test case result",
            ),
            (
                "expected_exit(): r\n",
                "Invalid integer argument '' to 'expected_exit' test case result",
            ),
        ];
        for (input, reason) in bad {
            let e = parse_result_file(input).expect_err(input);
            assert_eq!(e.reason(), *reason, "{input:?}");
        }
    }

    fn code(c: i32) -> RunOutcome {
        RunOutcome::exited(ExitStatus::Code(c))
    }

    fn signal(s: i32) -> RunOutcome {
        RunOutcome::exited(ExitStatus::Signal(s))
    }

    #[test]
    fn results_follow_kyuas_rules() {
        use AtfRawResult as R;
        let r = |s: &str| s.to_string();
        let to = RunOutcome::timeout();
        type Row<'a> = (
            Option<Result<R, AtfError>>,
            RunOutcome,
            Option<RunOutcome>,
            ResultType,
            Option<&'a str>,
            Option<Cause>,
        );
        use ResultType::*;
        let table: Vec<Row<'_>> = vec![
            (Some(Ok(R::Passed)), code(0), None, Passed, None, None),
            (
                Some(Ok(R::Passed)),
                code(1),
                None,
                Broken,
                Some("Passed test case should have reported success but exited with code 1"),
                None,
            ),
            (
                Some(Ok(R::Passed)),
                signal(11),
                None,
                Broken,
                Some("Passed test case should have reported success but received signal 11"),
                None,
            ),
            (
                Some(Ok(R::Failed(r("x")))),
                code(1),
                None,
                Failed,
                Some("x"),
                None,
            ),
            (
                Some(Ok(R::Failed(r("x")))),
                code(0),
                None,
                Broken,
                Some("Failed test case should have reported failure but exited with code 0"),
                None,
            ),
            (
                Some(Ok(R::Skipped(r("s")))),
                code(0),
                None,
                Skipped,
                Some("s"),
                None,
            ),
            (
                Some(Ok(R::Skipped(r("s")))),
                code(2),
                None,
                Broken,
                Some("Skipped test case should have reported success but exited with code 2"),
                None,
            ),
            (
                Some(Ok(R::Broken(r("b")))),
                code(0),
                None,
                Broken,
                Some("b"),
                None,
            ),
            (
                Some(Ok(R::ExpectedFailure(r("e")))),
                code(0),
                None,
                ExpectedFailure,
                Some("e"),
                None,
            ),
            (
                Some(Ok(R::ExpectedFailure(r("e")))),
                code(1),
                None,
                Broken,
                Some("Expected failure should have reported success but exited with code 1"),
                None,
            ),
            (
                Some(Ok(R::ExpectedDeath(r("d")))),
                signal(6),
                None,
                ExpectedFailure,
                Some("d"),
                None,
            ),
            (
                Some(Ok(R::ExpectedExit(None, r("e")))),
                code(5),
                None,
                ExpectedFailure,
                Some("e"),
                None,
            ),
            (
                Some(Ok(R::ExpectedExit(Some(3), r("e")))),
                code(3),
                None,
                ExpectedFailure,
                Some("e"),
                None,
            ),
            (
                Some(Ok(R::ExpectedExit(Some(3), r("e")))),
                code(4),
                None,
                Failed,
                Some("Test case expected to exit with code 3 but got code 4"),
                None,
            ),
            (
                Some(Ok(R::ExpectedExit(Some(3), r("e")))),
                signal(9),
                None,
                Broken,
                Some("Expected clean exit but received signal 9"),
                None,
            ),
            (
                Some(Ok(R::ExpectedSignal(None, r("e")))),
                signal(6),
                None,
                ExpectedFailure,
                Some("e"),
                None,
            ),
            (
                Some(Ok(R::ExpectedSignal(Some(6), r("e")))),
                signal(9),
                None,
                Failed,
                Some("Test case expected to receive signal 6 but got 9"),
                None,
            ),
            (
                Some(Ok(R::ExpectedSignal(Some(6), r("e")))),
                code(0),
                None,
                Broken,
                Some("Expected signal but exited with code 0"),
                None,
            ),
            (
                Some(Ok(R::ExpectedTimeout(r("t")))),
                to,
                None,
                ExpectedFailure,
                Some("t"),
                None,
            ),
            (
                Some(Ok(R::ExpectedTimeout(r("t")))),
                code(0),
                None,
                Broken,
                Some("Expected timeout but exited with code 0"),
                None,
            ),
            (
                Some(Ok(R::Passed)),
                to,
                None,
                Broken,
                Some("Test case body timed out"),
                Some(Cause::Timeout),
            ),
            (
                None,
                to,
                None,
                Broken,
                Some("Test case body timed out"),
                Some(Cause::Timeout),
            ),
            (
                Some(Err(AtfError::EmptyResult)),
                to,
                None,
                Broken,
                Some("Test case body timed out"),
                Some(Cause::Timeout),
            ),
            (
                None,
                code(0),
                None,
                Broken,
                Some("Premature exit; test case exited with code 0"),
                None,
            ),
            (
                None,
                signal(9),
                None,
                Broken,
                Some("Premature exit; test case received signal 9"),
                None,
            ),
            (
                Some(Err(AtfError::EmptyResult)),
                code(0),
                None,
                Broken,
                Some("Empty test result or no new line"),
                None,
            ),
            // Cleanup.
            (
                Some(Ok(R::Passed)),
                code(0),
                Some(code(0)),
                Passed,
                None,
                None,
            ),
            (
                Some(Ok(R::Passed)),
                code(0),
                Some(code(1)),
                Broken,
                Some("Test case cleanup did not terminate successfully"),
                None,
            ),
            (
                Some(Ok(R::Skipped(r("s")))),
                code(0),
                Some(signal(15)),
                Broken,
                Some("Test case cleanup did not terminate successfully"),
                None,
            ),
            (
                Some(Ok(R::Passed)),
                code(0),
                Some(to),
                Broken,
                Some("Test case cleanup timed out"),
                Some(Cause::Timeout),
            ),
            (
                Some(Ok(R::ExpectedTimeout(r("t")))),
                to,
                Some(code(2)),
                Broken,
                Some("Test case cleanup did not terminate successfully"),
                None,
            ),
            // A bad result is not made worse by a bad cleanup.
            (
                Some(Ok(R::Failed(r("x")))),
                code(1),
                Some(code(1)),
                Failed,
                Some("x"),
                None,
            ),
            (
                None,
                to,
                Some(to),
                Broken,
                Some("Test case body timed out"),
                Some(Cause::Timeout),
            ),
        ];
        for (i, (raw, body, cleanup, kind, reason, cause)) in table.into_iter().enumerate() {
            let got = result(raw, &body, cleanup.as_ref());
            assert_eq!(got.kind, kind, "row {i}: {got}");
            assert_eq!(got.reason.as_deref(), reason, "row {i}");
            assert_eq!(got.cause, cause, "row {i}");
        }
    }

    #[test]
    fn reasons_are_bounded() {
        let long = format!("failed: {}\n", "é".repeat(MAX_REASON));
        match parse_result_file(&long) {
            Ok(AtfRawResult::Failed(r)) => assert!(r.len() <= MAX_REASON),
            other => panic!("{other:?}"),
        }
    }
}
