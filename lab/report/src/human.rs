//! Progress for people: a bar over the test cases on a terminal (indicatif) or plain lines
//! elsewhere; a line per failed or broken case as it happens, VM failures, and a summary.

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lab_model::{CaseId, Counts, OutputStream, ResultType, RunEvent, TestResult};

use crate::reporter::{plural, secs, serde_name, summary, ReportError, Reporter};

/// Width the status words (`FAIL`, `BROKEN`) are right-aligned to.
const STATUS_WIDTH: usize = 8;

/// The bar's look once the number of cases is known.
const BAR_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len}  {msg}";

/// The bar's look while some programs are not listed yet.
const SPINNER_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {pos}/? cases  {msg}";

/// Where the lines go.
enum Output {
    /// Lines only.
    Plain(Box<dyn Write + Send>),
    /// Lines above a progress bar.
    Bar {
        bar: ProgressBar,
        out: Box<dyn Write + Send>,
    },
}

/// What is known of one program on one kernel, to size the bar.
#[derive(Debug, Default)]
struct Tally {
    listed: Option<usize>,
    finished: usize,
    done: bool,
}

impl Tally {
    /// The cases it adds to the total.
    fn cases(&self) -> usize {
        self.listed.unwrap_or(0).max(self.finished)
    }
}

/// Reports a run to a person.
pub struct HumanReporter {
    output: Output,
    every_case: bool,
    /// Programs the run will report (kernels × programs), once it started.
    expected_programs: Option<usize>,
    /// Programs whose number of cases is known: listed, or finished without a listing.
    known_programs: usize,
    tallies: HashMap<(String, String), Tally>,
    /// Cases known so far.
    total: usize,
    done: Counts,
    /// Cases started and not finished.
    running: HashSet<CaseId>,
    /// Failed and broken cases and failed VMs, for the summary.
    problems: Vec<String>,
    /// Live output not yet ended by a newline.
    partial: HashMap<(CaseId, bool), Vec<u8>>,
}

impl std::fmt::Debug for HumanReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HumanReporter")
            .field("bar", &matches!(self.output, Output::Bar { .. }))
            .field("every_case", &self.every_case)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl HumanReporter {
    fn with_output(output: Output) -> Self {
        Self {
            output,
            every_case: false,
            expected_programs: None,
            known_programs: 0,
            tallies: HashMap::new(),
            total: 0,
            done: Counts::default(),
            running: HashSet::new(),
            problems: Vec::new(),
            partial: HashMap::new(),
        }
    }

    /// Plain lines to `out`, no bar (logs, CI).
    pub fn plain(out: impl Write + Send + 'static) -> Self {
        Self::with_output(Output::Plain(Box::new(out)))
    }

    /// A progress bar on stderr, lines above it.
    pub fn tty() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(100));
        Self::with_bar(bar, Box::new(std::io::stderr()))
    }

    fn with_bar(bar: ProgressBar, out: Box<dyn Write + Send>) -> Self {
        bar.set_style(style(SPINNER_TEMPLATE));
        Self::with_output(Output::Bar { bar, out })
    }

    /// On stderr: a bar when it is a terminal, plain lines otherwise.
    pub fn stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::tty()
        } else {
            Self::plain(std::io::stderr())
        }
    }

    /// Also print a line for every passed, skipped and expected-failure case.
    pub fn every_case(mut self, yes: bool) -> Self {
        self.every_case = yes;
        self
    }

    /// Prints a line (above the bar, if any).
    fn line(&mut self, text: &str) -> Result<(), ReportError> {
        let write = |out: &mut Box<dyn Write + Send>| -> std::io::Result<()> {
            writeln!(out, "{text}")?;
            out.flush()
        };
        match &mut self.output {
            Output::Plain(out) => write(out)?,
            Output::Bar { bar, out } => bar.suspend(|| write(out))?,
        }
        Ok(())
    }

    /// Brings the bar up to date: its length once every program's cases are known, its
    /// position and counts.
    fn update_bar(&self) {
        let Output::Bar { bar, .. } = &self.output else {
            return;
        };
        let known = self.expected_programs == Some(self.known_programs);
        if known && bar.length() != Some(self.total as u64) {
            if bar.length().is_none() {
                bar.set_style(style(BAR_TEMPLATE));
            }
            bar.set_length(self.total as u64);
        }
        bar.set_position(self.done.total() as u64);
        bar.set_message(format!(
            "{} running: {}",
            self.running.len(),
            counts_short(&self.done)
        ));
    }

    fn case_finished(
        &mut self,
        id: &CaseId,
        result: &TestResult,
        duration: Duration,
    ) -> Result<(), ReportError> {
        self.flush_output(id)?;
        let tally = self
            .tallies
            .entry((id.kernel.clone(), id.program.clone()))
            .or_default();
        let before = tally.cases();
        tally.finished += 1;
        let grew = tally.cases() - before;
        self.total += grew;
        self.done.add(result.kind);
        let line = case_line(id, result, duration);
        if !result.kind.is_good() {
            self.problems.push(line.clone());
            self.line(&line)?;
        } else if self.every_case {
            self.line(&line)?;
        }
        Ok(())
    }

    /// Prints the complete lines of a case's live output.
    fn output(
        &mut self,
        id: &CaseId,
        stream: OutputStream,
        data: &[u8],
    ) -> Result<(), ReportError> {
        let buf = self
            .partial
            .entry((id.clone(), is_stderr(stream)))
            .or_default();
        buf.extend_from_slice(data);
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = buf.drain(..=end).collect();
        for l in String::from_utf8_lossy(&complete).lines() {
            self.line(&output_line(id, stream, l))?;
        }
        Ok(())
    }

    /// Prints what is left of a finished case's live output.
    fn flush_output(&mut self, id: &CaseId) -> Result<(), ReportError> {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            if let Some(rest) = self.partial.remove(&(id.clone(), is_stderr(stream))) {
                if !rest.is_empty() {
                    self.line(&output_line(id, stream, &String::from_utf8_lossy(&rest)))?;
                }
            }
        }
        Ok(())
    }
}

impl Reporter for HumanReporter {
    fn event(&mut self, e: &RunEvent) -> Result<(), ReportError> {
        match e {
            RunEvent::RunStarted {
                kernels,
                programs,
                jobs,
                root,
            } => {
                self.expected_programs = Some(kernels.len() * programs);
                let root = if root == "initramfs" {
                    String::new()
                } else {
                    format!(", jobs in the host's {root} (read-only)")
                };
                self.line(&format!(
                    "{:>STATUS_WIDTH$} {} on {} ({}) with {}{root}",
                    "Starting",
                    plural(*programs, "program"),
                    plural(kernels.len(), "kernel"),
                    kernels.join(", "),
                    plural(*jobs, "VM slot"),
                ))?;
            }
            RunEvent::VmBooting { .. } | RunEvent::VmReady { .. } => {}
            RunEvent::VmFailed {
                slot,
                kernel,
                reason,
                console_tail,
            } => {
                let line = format!(
                    "{:>STATUS_WIDTH$} [{kernel}] slot {slot}: {}",
                    "VM FAIL",
                    one_line(reason)
                );
                self.problems.push(line.clone());
                self.line(&line)?;
                for l in console_tail {
                    self.line(&format!("{:STATUS_WIDTH$}   {l}", ""))?;
                }
            }
            RunEvent::CasesListed {
                kernel,
                program,
                cases,
            } => {
                let tally = self
                    .tallies
                    .entry((kernel.clone(), program.clone()))
                    .or_default();
                if tally.listed.is_none() && !tally.done {
                    let before = tally.cases();
                    tally.listed = Some(*cases);
                    let grew = tally.cases() - before;
                    self.known_programs += 1;
                    self.total += grew;
                }
            }
            RunEvent::CaseStarted { id, .. } => {
                self.running.insert(id.clone());
            }
            RunEvent::CaseOutput { id, stream, data } => self.output(id, *stream, data)?,
            RunEvent::CaseFinished {
                id,
                result,
                duration,
                ..
            } => {
                self.running.remove(id);
                self.case_finished(id, result, *duration)?;
            }
            RunEvent::ProgramFinished { kernel, program } => {
                let tally = self
                    .tallies
                    .entry((kernel.clone(), program.clone()))
                    .or_default();
                if tally.listed.is_none() && !tally.done {
                    self.known_programs += 1;
                }
                tally.done = true;
            }
            RunEvent::Interrupted { forced } => {
                let text = if *forced {
                    "Interrupted again: killing the VMs"
                } else {
                    "Interrupted: finishing without running the rest (interrupt again to kill the VMs)"
                };
                self.line(text)?;
            }
            RunEvent::RunFinished {
                counts,
                duration,
                interrupted,
            } => {
                if let Output::Bar { bar, .. } = &self.output {
                    bar.finish_and_clear();
                }
                self.line("------------")?;
                let note = if *interrupted { " (interrupted)" } else { "" };
                self.line(&format!(
                    "{:>STATUS_WIDTH$} [{}] {}{note}",
                    "Summary",
                    secs(*duration),
                    summary(counts)
                ))?;
                for p in std::mem::take(&mut self.problems) {
                    self.line(&p)?;
                }
                return Ok(());
            }
        }
        self.update_bar();
        Ok(())
    }
}

/// A style from a template, or the default bar should the template be wrong.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// `5 passed, 1 failed`: the counts so far, for the bar.
fn counts_short(c: &Counts) -> String {
    let parts: Vec<String> = [
        (c.passed, "passed"),
        (c.failed, "failed"),
        (c.broken, "broken"),
        (c.skipped, "skipped"),
        (c.expected_failure, "xfail"),
    ]
    .into_iter()
    .filter(|&(n, name)| n > 0 || name == "passed")
    .map(|(n, name)| format!("{n} {name}"))
    .collect();
    parts.join(", ")
}

/// Text on one line: line breaks become ` | `.
fn one_line(s: &str) -> String {
    s.trim_end().lines().collect::<Vec<_>>().join(" | ")
}

/// `    FAIL [1.2s] [debian-6.1] prog:case — reason`, and for broken cases the cause.
fn case_line(id: &CaseId, r: &TestResult, duration: Duration) -> String {
    let word = match r.kind {
        ResultType::Passed => "PASS",
        ResultType::Failed => "FAIL",
        ResultType::Skipped => "SKIP",
        ResultType::ExpectedFailure => "XFAIL",
        ResultType::Broken => "BROKEN",
    };
    let mut line = format!("{word:>STATUS_WIDTH$} [{}] {id}", secs(duration));
    if let Some(reason) = &r.reason {
        line.push_str(" — ");
        line.push_str(&one_line(reason));
    }
    if let (ResultType::Broken, Some(cause)) = (r.kind, &r.cause) {
        line.push_str(&format!(" ({})", serde_name(cause)));
    }
    line
}

/// Whether `stream` is stderr (the key of buffered output).
fn is_stderr(stream: OutputStream) -> bool {
    matches!(stream, OutputStream::Stderr)
}

/// A line of a case's live output: `[debian-6.1] prog:case | text` (`!` for stderr).
fn output_line(id: &CaseId, stream: OutputStream, text: &str) -> String {
    let mark = match stream {
        OutputStream::Stdout => '|',
        OutputStream::Stderr => '!',
    };
    format!("{:STATUS_WIDTH$} {id} {mark} {text}", "")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::fixture;

    /// A writer the test can read afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("utf-8")
        }
    }

    fn feed(r: &mut HumanReporter, events: &[RunEvent]) {
        for e in events {
            r.event(e).expect("reports");
        }
    }

    const RUN: &str = "\
Starting 3 programs on 2 kernels (debian-6.1, debian-6.12) with 2 VM slots
         [debian-6.12] t/plain_test:main | starting
 VM FAIL [debian-6.12] slot 1: guest kernel panicked
           Kernel panic - not syncing: Attempted to kill init!
           ---[ end Kernel panic ]---
  BROKEN [0.9s] [debian-6.12] t/plain_test:main — the VM died (vm_died)
    FAIL [1.2s] [debian-6.1] t/atf_test:fail — assertion failed: x == 1 | at t/atf_test.c:12
  BROKEN [300.0s] [debian-6.1] t/atf_test:hang — timed out after 300s (timeout)
    FAIL [0.7s] [debian-6.1] t/tap_test:main — 1 of 4 test points failed
------------
 Summary [12.3s] 11 cases: 4 passed, 2 failed, 2 skipped, 1 expected failure, 2 broken
 VM FAIL [debian-6.12] slot 1: guest kernel panicked
  BROKEN [0.9s] [debian-6.12] t/plain_test:main — the VM died (vm_died)
    FAIL [1.2s] [debian-6.1] t/atf_test:fail — assertion failed: x == 1 | at t/atf_test.c:12
  BROKEN [300.0s] [debian-6.1] t/atf_test:hang — timed out after 300s (timeout)
    FAIL [0.7s] [debian-6.1] t/tap_test:main — 1 of 4 test points failed
";

    #[test]
    fn snapshot_plain() {
        let out = Shared::default();
        let mut r = HumanReporter::plain(out.clone());
        feed(&mut r, &fixture::run());
        assert_eq!(out.text(), RUN, "got:\n{}", out.text());
    }

    #[test]
    fn snapshot_every_case_interrupted() {
        let out = Shared::default();
        let mut r = HumanReporter::plain(out.clone()).every_case(true);
        feed(&mut r, &fixture::interrupted());
        let want = "\
Starting 2 programs on 1 kernel (debian-6.1) with 1 VM slot
    PASS [0.0s] [debian-6.1] t/plain_test:main
Interrupted: finishing without running the rest (interrupt again to kill the VMs)
    SKIP [0.0s] [debian-6.1] t/tap_test:main — interrupted
------------
 Summary [1.5s] 2 cases: 1 passed, 1 skipped (interrupted)
";
        assert_eq!(out.text(), want, "got:\n{}", out.text());
    }

    #[test]
    fn bar_length_is_set_once_every_program_is_known() {
        let out = Shared::default();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let mut r = HumanReporter::with_bar(bar.clone(), Box::new(out.clone()));
        let events = fixture::run();
        // Kernel 1's three programs and kernel 2's first two are listed: not known yet.
        let last_listing = events
            .iter()
            .rposition(|e| matches!(e, RunEvent::CasesListed { .. }))
            .expect("listings");
        feed(&mut r, &events[..last_listing]);
        assert_eq!(bar.length(), None);
        feed(&mut r, &events[last_listing..=last_listing]);
        assert_eq!(bar.length(), Some(11));
        feed(&mut r, &events[last_listing + 1..]);
        // The lines went above the bar, the same as without one.
        assert_eq!(out.text(), RUN);
        assert_eq!(bar.position(), 11);
    }

    #[test]
    fn unlisted_program_is_counted_when_it_finishes() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        let mut r = HumanReporter::with_bar(bar.clone(), Box::new(std::io::sink()));
        feed(
            &mut r,
            &[
                RunEvent::RunStarted {
                    kernels: vec![fixture::K1.into()],
                    programs: 2,
                    jobs: 1,
                    root: "initramfs".into(),
                },
                fixture::listed(fixture::K1, fixture::PLAIN, 1),
                fixture::finished(
                    fixture::K1,
                    fixture::ATF,
                    lab_model::LIST_CASE,
                    TestResult::broken("listing failed"),
                    0,
                ),
            ],
        );
        assert_eq!(bar.length(), None);
        feed(
            &mut r,
            &[fixture::program_finished(fixture::K1, fixture::ATF)],
        );
        assert_eq!(bar.length(), Some(2));
        assert_eq!(bar.position(), 1);
    }

    #[test]
    fn partial_output_lines_are_joined() {
        let out = Shared::default();
        let mut r = HumanReporter::plain(out.clone());
        let id = fixture::id(fixture::K1, fixture::PLAIN, "main");
        for chunk in ["hel", "lo\nwor", "ld"] {
            let e = RunEvent::CaseOutput {
                id: id.clone(),
                stream: OutputStream::Stderr,
                data: chunk.as_bytes().to_vec(),
            };
            r.event(&e).expect("reports");
        }
        r.event(&fixture::finished(
            fixture::K1,
            fixture::PLAIN,
            "main",
            TestResult::passed(),
            1,
        ))
        .expect("reports");
        assert_eq!(
            out.text(),
            "         [debian-6.1] t/plain_test:main ! hello\n         [debian-6.1] t/plain_test:main ! world\n"
        );
    }
}
