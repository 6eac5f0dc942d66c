//! One boot: launches a VM through a [`Backend`], waits for guest-init, streams the job's output
//! to an observer, enforces the boot and run timeouts, and turns whatever happened into a job
//! report or an error that names the VM's failure (panic, timeout, agent lost) with the console
//! tail attached.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use lab_proto::{ExitStatus, GuestMessage, Marker, Stream, PROTO_VERSION};

use crate::cancel::Cancel;
use crate::console::ConsoleEvent;
use crate::vm::{Accel, Backend, BackendError, VmEvent, VmSpec};

/// How long a VM may take to power off after its job ended before it is killed.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);

/// What a boot should look like.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// How to execute the guest.
    pub accel: Accel,
    /// Launch → agent ready, per attempt.
    pub boot_timeout: Duration,
    /// Agent ready → job exit (None: no limit).
    pub run_timeout: Option<Duration>,
    /// Attempts when the agent does not come up in time (boots under emulation occasionally
    /// stall); at least 1.
    pub boot_attempts: u32,
    /// Extra kernel command-line words.
    pub extra_cmdline: Vec<String>,
    /// Keep the VM's work directory (console log, sockets) instead of removing it.
    pub keep_workdir: bool,
}

impl Default for BootOptions {
    fn default() -> Self {
        Self {
            cpus: 1,
            memory_mib: 512,
            accel: Accel::Tcg,
            boot_timeout: Duration::from_secs(60),
            run_timeout: Some(Duration::from_secs(300)),
            boot_attempts: 2,
            extra_cmdline: Vec::new(),
            keep_workdir: false,
        }
    }
}

/// The kernel command line lab boots with (before `extra`).
pub fn cmdline(extra: &[String]) -> String {
    let mut words: Vec<String> = [
        "console=ttyS0",
        // Panic → reboot at once; QEMU runs with -no-reboot, so the VM ends.
        "panic=-1",
        "oops=panic",
        "loglevel=4",
        "8250.nr_uarts=4",
        "rdinit=/init",
        "lab.channel=/dev/ttyS1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    words.extend(extra.iter().cloned());
    words.join(" ")
}

/// Something the observer is told while a boot goes on.
#[derive(Debug)]
pub enum SessionEvent<'a> {
    /// A VM process started.
    Launched {
        /// 1-based attempt.
        attempt: u32,
        /// Its pid.
        pid: u32,
    },
    /// The agent is up.
    Ready {
        /// The guest kernel's release.
        kernel: &'a str,
        /// guest-init's version.
        agent: &'a str,
        /// Launch → ready.
        after: Duration,
    },
    /// A diagnostic line from guest-init.
    Log(&'a str),
    /// Job output.
    Output(Stream, &'a [u8]),
    /// The boot stalled and is tried again.
    Retrying {
        /// Why.
        reason: String,
    },
}

/// How a finished job went.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The job's exit.
    pub status: ExitStatus,
    /// The guest kernel's release.
    pub kernel_release: String,
    /// guest-init's version.
    pub agent_version: String,
    /// Launch → agent ready (last attempt).
    pub boot_time: Duration,
    /// Launch → VM process gone (last attempt).
    pub total_time: Duration,
    /// The job's wall time in the guest.
    pub job_wall: Duration,
    /// User and system CPU of the job in the guest.
    pub job_cpu: Duration,
    /// Peak RSS of the job in KiB.
    pub job_max_rss_kib: u64,
    /// Attempts it took.
    pub attempts: u32,
}

/// Why a boot produced no job result: the VM or the lab failed, not the job.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The per-VM work directory could not be made.
    #[error("failed to create the vm work directory")]
    Workdir(#[source] std::io::Error),
    /// The backend could not start the VM.
    #[error("vm {vm}: failed to launch")]
    Launch {
        /// The VM.
        vm: String,
        /// The cause.
        #[source]
        source: BackendError,
    },
    /// The guest kernel panicked.
    #[error("vm {vm}: kernel panic: {reason}")]
    Panic {
        /// The VM.
        vm: String,
        /// The panic message.
        reason: String,
        /// The console's last lines.
        tail: Vec<String>,
    },
    /// guest-init did not announce itself in time.
    #[error(
        "vm {vm}: boot timed out: guest agent not ready after {after:?} ({attempts} attempt(s))"
    )]
    BootTimeout {
        /// The VM.
        vm: String,
        /// The timeout.
        after: Duration,
        /// Attempts made.
        attempts: u32,
        /// The console's last lines.
        tail: Vec<String>,
    },
    /// The job did not end in time.
    #[error("vm {vm}: job timed out after {after:?}")]
    RunTimeout {
        /// The VM.
        vm: String,
        /// The timeout.
        after: Duration,
        /// The console's last lines.
        tail: Vec<String>,
    },
    /// The VM ended before guest-init announced itself.
    #[error("vm {vm}: exited before the guest agent was ready{detail}")]
    NeverReady {
        /// The VM.
        vm: String,
        /// What the VM process said, as ": …", or empty.
        detail: String,
        /// The console's last lines.
        tail: Vec<String>,
    },
    /// The VM ended after guest-init announced itself but before the job's exit was reported.
    #[error("vm {vm}: guest agent lost before the job finished")]
    AgentLost {
        /// The VM.
        vm: String,
        /// The console's last lines.
        tail: Vec<String>,
    },
    /// guest-init reported a failure of its own.
    #[error("vm {vm}: guest-init failed at {stage}: {message}")]
    AgentFailed {
        /// The VM.
        vm: String,
        /// Its step.
        stage: String,
        /// What happened.
        message: String,
        /// The console's last lines.
        tail: Vec<String>,
    },
    /// The guest broke the agent protocol.
    #[error("vm {vm}: guest agent protocol violation: {detail}")]
    Protocol {
        /// The VM.
        vm: String,
        /// What was wrong.
        detail: String,
        /// The console's last lines.
        tail: Vec<String>,
    },
    /// The VM process reported a fatal fault (the guest is stopped).
    #[error("vm {vm}: {detail}")]
    Fault {
        /// The VM.
        vm: String,
        /// The VM process's words.
        detail: String,
        /// The console's last lines.
        tail: Vec<String>,
    },
    /// The run was cancelled.
    #[error("vm {vm}: cancelled")]
    Cancelled {
        /// The VM.
        vm: String,
    },
}

impl SessionError {
    /// The console lines that belong with this error, if any.
    pub fn console_tail(&self) -> &[String] {
        match self {
            Self::Panic { tail, .. }
            | Self::BootTimeout { tail, .. }
            | Self::RunTimeout { tail, .. }
            | Self::NeverReady { tail, .. }
            | Self::AgentLost { tail, .. }
            | Self::AgentFailed { tail, .. }
            | Self::Protocol { tail, .. }
            | Self::Fault { tail, .. } => tail,
            _ => &[],
        }
    }
}

/// Boots `kernel` with `initrd` and runs the job baked into the initrd, telling `observer`
/// what happens. Stalled boots are retried up to `opts.boot_attempts` times.
pub fn run(
    backend: &dyn Backend,
    name: &str,
    kernel: &Path,
    initrd: &Path,
    opts: &BootOptions,
    cancel: &Cancel,
    observer: &mut dyn FnMut(SessionEvent<'_>),
) -> Result<JobReport, SessionError> {
    let boot = Boot {
        backend,
        name,
        kernel,
        initrd,
        opts,
        cancel,
    };
    let attempts = opts.boot_attempts.max(1);
    let mut attempt = 1;
    loop {
        match attempt_once(&boot, observer, attempt) {
            Err(SessionError::BootTimeout { after, tail, .. }) if attempt < attempts => {
                observer(SessionEvent::Retrying {
                    reason: format!(
                        "guest agent not ready after {after:?}; console: {}",
                        tail.last().map(String::as_str).unwrap_or("(empty)")
                    ),
                });
                attempt += 1;
            }
            Err(SessionError::BootTimeout {
                vm, after, tail, ..
            }) => {
                return Err(SessionError::BootTimeout {
                    vm,
                    after,
                    attempts: attempt,
                    tail,
                })
            }
            other => return other,
        }
    }
}

/// Where per-VM work directories go: `$XDG_RUNTIME_DIR` (short paths for Unix sockets), else
/// the system temp dir.
fn runtime_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// What the event loop is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Booting,
    Running,
    Ending,
}

/// What every attempt of one boot shares.
struct Boot<'a> {
    backend: &'a dyn Backend,
    name: &'a str,
    kernel: &'a Path,
    initrd: &'a Path,
    opts: &'a BootOptions,
    cancel: &'a Cancel,
}

fn attempt_once(
    boot: &Boot<'_>,
    observer: &mut dyn FnMut(SessionEvent<'_>),
    attempt: u32,
) -> Result<JobReport, SessionError> {
    let Boot {
        backend,
        name,
        kernel,
        initrd,
        opts,
        cancel,
    } = *boot;
    let workdir = tempfile::Builder::new()
        .prefix("lab-vm-")
        .tempdir_in(runtime_dir())
        .map_err(SessionError::Workdir)?;
    let spec = VmSpec {
        name: name.to_string(),
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        cmdline: cmdline(&opts.extra_cmdline),
        cpus: opts.cpus,
        memory_mib: opts.memory_mib,
        accel: opts.accel,
        workdir: workdir.path().to_path_buf(),
    };
    let (tx, rx) = mpsc::channel();
    let _registration = cancel.register(tx.clone());
    let launched = Instant::now();
    let mut machine = backend
        .launch(&spec, tx)
        .map_err(|source| SessionError::Launch {
            vm: name.to_string(),
            source,
        })?;
    observer(SessionEvent::Launched {
        attempt,
        pid: machine.pid(),
    });

    let vm = name.to_string();
    let mut phase = Phase::Booting;
    let mut ready_at: Option<Instant> = None;
    let mut hello: Option<(String, String)> = None;
    let mut exit: Option<GuestMessage> = None;
    let mut panic: Option<String> = None;
    let mut failure: Option<(String, String)> = None;
    let mut violation: Option<String> = None;
    let mut fault: Option<String> = None;
    let mut ending_since = launched;
    let mut outcome_timeout: Option<SessionError> = None;

    loop {
        let deadline = match phase {
            Phase::Booting => Some(launched + opts.boot_timeout),
            Phase::Running => opts.run_timeout.and_then(|t| ready_at.map(|r| r + t)),
            Phase::Ending => Some(ending_since + POWER_OFF_GRACE),
        };
        let event = match deadline {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    match phase {
                        Phase::Booting => {
                            outcome_timeout = Some(SessionError::BootTimeout {
                                vm: vm.clone(),
                                after: opts.boot_timeout,
                                attempts: attempt,
                                tail: Vec::new(),
                            })
                        }
                        Phase::Running => {
                            outcome_timeout = Some(SessionError::RunTimeout {
                                vm: vm.clone(),
                                after: opts.run_timeout.unwrap_or_default(),
                                tail: Vec::new(),
                            })
                        }
                        // The job is done; a VM that does not power off is simply killed.
                        Phase::Ending => {}
                    }
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(e) => e,
                Err(_) => break,
            },
        };
        match event {
            VmEvent::Console(ConsoleEvent::Marker(Marker::Ready { .. })) => {
                became_ready(&mut phase, &mut ready_at);
            }
            VmEvent::Console(ConsoleEvent::Marker(Marker::OtherVersion(v))) => {
                violation = Some(format!(
                    "guest-init speaks marker version {v}, lab speaks {PROTO_VERSION}: rebuild the initramfs"
                ));
                break;
            }
            VmEvent::Console(ConsoleEvent::Marker(Marker::Failed { stage, message })) => {
                failure.get_or_insert((stage, message));
                enter_ending(&mut phase, &mut ending_since);
            }
            VmEvent::Console(ConsoleEvent::Marker(Marker::Exit(_))) => {}
            VmEvent::Console(ConsoleEvent::Panic(reason)) => {
                panic.get_or_insert(reason);
                enter_ending(&mut phase, &mut ending_since);
            }
            VmEvent::ConsoleClosed => break,
            VmEvent::AgentConnected | VmEvent::AgentClosed => {}
            VmEvent::Agent(GuestMessage::Hello {
                proto,
                agent_version,
                kernel_release,
                ..
            }) => {
                if proto != PROTO_VERSION {
                    violation = Some(format!(
                        "guest-init speaks protocol {proto}, lab speaks {PROTO_VERSION}"
                    ));
                    break;
                }
                became_ready(&mut phase, &mut ready_at);
                observer(SessionEvent::Ready {
                    kernel: &kernel_release,
                    agent: &agent_version,
                    after: launched.elapsed(),
                });
                hello = Some((kernel_release, agent_version));
            }
            VmEvent::Agent(GuestMessage::Log { line }) => observer(SessionEvent::Log(&line)),
            VmEvent::Agent(GuestMessage::Output { stream, data }) => {
                if hello.is_none() {
                    violation = Some("output before hello".into());
                    break;
                }
                observer(SessionEvent::Output(stream, &data));
            }
            VmEvent::Agent(msg @ GuestMessage::Exit { .. }) => {
                if hello.is_none() {
                    violation = Some("exit before hello".into());
                    break;
                }
                exit = Some(msg);
                enter_ending(&mut phase, &mut ending_since);
            }
            VmEvent::Agent(GuestMessage::Failure { stage, message }) => {
                failure = Some((stage, message));
                enter_ending(&mut phase, &mut ending_since);
            }
            VmEvent::AgentError(detail) => {
                violation = Some(detail);
                break;
            }
            VmEvent::Fault(detail) => {
                fault = Some(detail);
                break;
            }
            VmEvent::Cancelled => {
                machine.kill();
                machine.wait();
                return Err(SessionError::Cancelled { vm });
            }
        }
    }
    machine.kill();
    machine.wait();
    let total_time = launched.elapsed();
    let tail = machine.console_tail();
    let diagnostics = machine.diagnostics();
    drop(machine);
    if opts.keep_workdir {
        let kept = workdir.keep();
        observer(SessionEvent::Log(&format!(
            "vm work directory kept at {}",
            kept.display()
        )));
    }
    decide(Decided {
        vm,
        tail,
        diagnostics,
        hello,
        exit,
        panic,
        failure,
        violation,
        fault,
        timeout: outcome_timeout,
        boot_time: ready_at.map(|r| r - launched).unwrap_or_default(),
        total_time,
        attempts: attempt,
    })
}

fn became_ready(phase: &mut Phase, ready_at: &mut Option<Instant>) {
    if *phase == Phase::Booting {
        *phase = Phase::Running;
        *ready_at = Some(Instant::now());
    }
}

fn enter_ending(phase: &mut Phase, since: &mut Instant) {
    if *phase != Phase::Ending {
        *phase = Phase::Ending;
        *since = Instant::now();
    }
}

/// Everything the event loop saw, for [`decide`].
struct Decided {
    vm: String,
    tail: Vec<String>,
    diagnostics: String,
    hello: Option<(String, String)>,
    exit: Option<GuestMessage>,
    panic: Option<String>,
    failure: Option<(String, String)>,
    violation: Option<String>,
    fault: Option<String>,
    timeout: Option<SessionError>,
    boot_time: Duration,
    total_time: Duration,
    attempts: u32,
}

/// Turns what was seen into the outcome. A reported job exit wins over anything that happened
/// while the VM was going down; otherwise the most specific cause of the VM's failure wins.
fn decide(d: Decided) -> Result<JobReport, SessionError> {
    let Decided { vm, tail, .. } = &d;
    let (vm, tail) = (vm.clone(), tail.clone());
    if let Some(detail) = d.violation {
        return Err(SessionError::Protocol { vm, detail, tail });
    }
    if let Some(detail) = d.fault {
        return Err(SessionError::Fault { vm, detail, tail });
    }
    if let (
        Some(GuestMessage::Exit {
            status,
            wall_us,
            user_us,
            sys_us,
            max_rss_kib,
        }),
        Some((kernel_release, agent_version)),
    ) = (d.exit, d.hello)
    {
        return Ok(JobReport {
            status,
            kernel_release,
            agent_version,
            boot_time: d.boot_time,
            total_time: d.total_time,
            job_wall: Duration::from_micros(wall_us),
            job_cpu: Duration::from_micros(user_us.saturating_add(sys_us)),
            job_max_rss_kib: max_rss_kib,
            attempts: d.attempts,
        });
    }
    if let Some((stage, message)) = d.failure {
        return Err(SessionError::AgentFailed {
            vm,
            stage,
            message,
            tail,
        });
    }
    if let Some(reason) = d.panic {
        return Err(SessionError::Panic { vm, reason, tail });
    }
    match d.timeout {
        Some(SessionError::BootTimeout {
            vm,
            after,
            attempts,
            ..
        }) => {
            return Err(SessionError::BootTimeout {
                vm,
                after,
                attempts,
                tail,
            })
        }
        Some(SessionError::RunTimeout { vm, after, .. }) => {
            return Err(SessionError::RunTimeout { vm, after, tail })
        }
        _ => {}
    }
    if d.boot_time.is_zero() {
        let first = d.diagnostics.lines().find(|l| !l.trim().is_empty());
        let detail = first.map(|l| format!(": {}", l.trim())).unwrap_or_default();
        return Err(SessionError::NeverReady { vm, detail, tail });
    }
    Err(SessionError::AgentLost { vm, tail })
}
