//! What lab prints about itself: progress lines on a terminal (or with -v), nothing extra when
//! piped, and errors with their causes and the VM's console tail.

use std::io::IsTerminal;

use lab_engine::lab::LabError;
use lab_engine::session::SessionError;
use lab_kernel::catalog::CatalogError;

use crate::exit;

/// A mistake in what the user asked for (a host file that is not there, a malformed argument):
/// exit status 2, like the other usage errors.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Output settings.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    progress: bool,
    verbose: bool,
}

impl Ui {
    /// Progress shows on a terminal or with `-v`; `-q` silences it.
    pub fn new(verbose: bool, quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            progress: !quiet && (verbose || tty),
            verbose,
        }
    }

    /// Whether `-q` silenced progress (or stderr is not a terminal and `-v` was not given).
    pub fn quiet(&self) -> bool {
        !self.progress
    }

    /// Whether diagnostics (guest-init's notes) are shown.
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// A progress line on stderr.
    pub fn progress(&self, line: &str) {
        if self.progress {
            eprintln!("lab: {line}");
        }
    }

    /// A warning on stderr (also when quiet: it is about the user's input).
    pub fn warn(&self, line: &str) {
        eprintln!("lab: warning: {line}");
    }

    /// The error, its causes, and a VM's console tail.
    pub fn error(&self, err: &anyhow::Error) {
        let mut text = format!("lab: error: {err}");
        for cause in err.chain().skip(1) {
            text.push_str(&format!(": {cause}"));
        }
        eprintln!("{text}");
        if let Some(tail) = session_error(err).map(SessionError::console_tail) {
            if !tail.is_empty() {
                eprintln!("lab: console tail:");
                for line in tail {
                    eprintln!("  | {line}");
                }
            }
        }
    }
}

fn session_error(err: &anyhow::Error) -> Option<&SessionError> {
    err.chain().find_map(|e| e.downcast_ref::<SessionError>())
}

/// The exit status for an error: bad input 2 (a kernel or file that is not there, a guest path
/// the guest refuses), a job timeout 124, a cancelled run 130, any other failure of the VM or
/// the lab 69.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    if let Some(s) = session_error(err) {
        return match s {
            SessionError::RunTimeout { .. } => exit::TIMED_OUT,
            SessionError::Cancelled { .. } => exit::INTERRUPTED,
            // A put or get the guest refused (bad path, no such file): the user's input.
            SessionError::Request { .. } => exit::USAGE,
            _ => exit::VM_FAILED,
        };
    }
    for e in err.chain() {
        if e.downcast_ref::<BadInput>().is_some() {
            return exit::USAGE;
        }
        let catalog =
            e.downcast_ref::<CatalogError>()
                .or_else(|| match e.downcast_ref::<LabError>() {
                    Some(LabError::Kernel(c)) => Some(c),
                    _ => None,
                });
        if let Some(
            CatalogError::Unknown { .. }
            | CatalogError::MissingFile { .. }
            | CatalogError::BadImage { .. },
        ) = catalog
        {
            return exit::USAGE;
        }
        // A path to carry that does not exist or is not absolute is the user's input.
        if let Some(
            lab_engine::carry::CarryError::Read { .. }
            | lab_engine::carry::CarryError::Unsupported { .. },
        ) = e.downcast_ref::<lab_engine::carry::CarryError>()
        {
            return exit::USAGE;
        }
        if let Some(LabError::Guest(
            lab_engine::guest::GuestError::BadExtra(_)
            | lab_engine::guest::GuestError::NoSuchModule { .. },
        )) = e.downcast_ref::<LabError>()
        {
            return exit::USAGE;
        }
        // A package name Debian does not know is the user's input.
        if let Some(LabError::Packages(lab_kernel::guest_packages::GuestPackagesError::Unknown {
            ..
        })) = e.downcast_ref::<LabError>()
        {
            return exit::USAGE;
        }
        if e.downcast_ref::<lab_kernel::guest_packages::GuestPackagesError>()
            .is_some_and(|g| {
                matches!(
                    g,
                    lab_kernel::guest_packages::GuestPackagesError::Unknown { .. }
                )
            })
        {
            return exit::USAGE;
        }
        if e.downcast_ref::<lab_engine::guest::GuestError>()
            .is_some_and(|g| matches!(g, lab_engine::guest::GuestError::BadExtra(_)))
        {
            return exit::USAGE;
        }
    }
    exit::VM_FAILED
}

/// Writes `text` to stdout; a reader that went away (EPIPE: `lab … | grep -q x`) ends the
/// output quietly instead of panicking as `println!` does.
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
