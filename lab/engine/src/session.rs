//! One boot: launches a VM through a [`Backend`], waits for guest-init, streams the job's output
//! to an observer, enforces the boot and run timeouts, and turns whatever happened into a job
//! report or an error that names the VM's failure (panic, timeout, agent lost) with the console
//! tail attached.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use lab_proto::{ExitStatus, GuestMessage, Marker, Stream, PROTO_VERSION};

use crate::cancel::Cancel;
use crate::console::ConsoleEvent;
use crate::scratch;
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
    let workdir = scratch::create(&scratch::base_dir(), "vm").map_err(SessionError::Workdir)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{Machine, VmSpec};
    use lab_proto::Marker;
    use std::sync::mpsc::Sender;
    use std::sync::{Arc, Mutex};

    /// A backend whose VMs play back scripted events, one script per launch.
    struct Scripted {
        scripts: Mutex<Vec<Vec<VmEvent>>>,
        launches: Arc<Mutex<u32>>,
    }

    struct FakeMachine {
        killed: bool,
    }

    impl Machine for FakeMachine {
        fn console_tail(&self) -> Vec<String> {
            vec!["last console line".into()]
        }
        fn diagnostics(&self) -> String {
            "qemu: something went wrong\nmore".into()
        }
        fn pid(&self) -> u32 {
            4242
        }
        fn kill(&mut self) {
            self.killed = true;
        }
        fn wait(&mut self) -> Option<i32> {
            Some(0)
        }
    }

    impl Backend for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn launch(
            &self,
            _spec: &VmSpec,
            events: Sender<VmEvent>,
        ) -> Result<Box<dyn Machine>, BackendError> {
            *self.launches.lock().unwrap() += 1;
            let script = self.scripts.lock().unwrap().remove(0);
            for e in script {
                events.send(e).unwrap();
            }
            // A script without ConsoleClosed leaves the VM silent: the session keeps a sender
            // (its cancel registration), so only its deadlines end it.
            Ok(Box::new(FakeMachine { killed: false }))
        }
    }

    fn hello() -> VmEvent {
        VmEvent::Agent(GuestMessage::Hello {
            proto: PROTO_VERSION,
            agent_version: "0.1.0".into(),
            kernel_release: "6.1.0-test".into(),
            features: vec![],
        })
    }

    fn exit(code: i32) -> VmEvent {
        VmEvent::Agent(GuestMessage::Exit {
            status: ExitStatus::Code(code),
            wall_us: 5,
            user_us: 1,
            sys_us: 2,
            max_rss_kib: 3,
        })
    }

    fn boot(
        scripts: Vec<Vec<VmEvent>>,
        opts: BootOptions,
    ) -> (Result<JobReport, SessionError>, Vec<String>, u32) {
        let launches = Arc::new(Mutex::new(0));
        let backend = Scripted {
            scripts: Mutex::new(scripts),
            launches: launches.clone(),
        };
        let mut seen = Vec::new();
        let result = run(
            &backend,
            "fake",
            Path::new("/k"),
            Path::new("/i"),
            &opts,
            &Cancel::new(),
            &mut |e| seen.push(format!("{e:?}")),
        );
        let n = *launches.lock().unwrap();
        (result, seen, n)
    }

    fn quick() -> BootOptions {
        BootOptions {
            boot_timeout: Duration::from_millis(200),
            run_timeout: Some(Duration::from_millis(200)),
            boot_attempts: 1,
            ..BootOptions::default()
        }
    }

    #[test]
    fn a_clean_run_reports_the_exit_and_streams_output() {
        let script = vec![
            hello(),
            VmEvent::Agent(GuestMessage::Output {
                stream: Stream::Stdout,
                data: b"hi\n".to_vec(),
            }),
            exit(3),
            VmEvent::ConsoleClosed,
        ];
        let (result, seen, _) = boot(vec![script], quick());
        let report = result.unwrap();
        assert_eq!(report.status, ExitStatus::Code(3));
        assert_eq!(report.kernel_release, "6.1.0-test");
        assert_eq!(report.job_cpu, Duration::from_micros(3));
        assert!(
            seen.iter()
                .any(|e| e.contains("Output(Stdout, [104, 105, 10])")),
            "{seen:?}"
        );
    }

    #[test]
    fn an_exit_wins_over_a_panic_while_going_down() {
        let script = vec![
            hello(),
            exit(0),
            VmEvent::Console(ConsoleEvent::Panic("late".into())),
            VmEvent::ConsoleClosed,
        ];
        assert!(boot(vec![script], quick()).0.is_ok());
    }

    #[test]
    fn a_panic_before_the_exit_is_a_vm_failure_with_its_tail() {
        let script = vec![
            hello(),
            VmEvent::Console(ConsoleEvent::Panic("sysrq triggered crash".into())),
            VmEvent::ConsoleClosed,
        ];
        match boot(vec![script], quick()).0 {
            Err(e @ SessionError::Panic { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "vm fake: kernel panic: sysrq triggered crash"
                );
                assert_eq!(e.console_tail(), ["last console line"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_vm_that_ends_before_ready_names_what_the_vm_process_said() {
        match boot(vec![vec![VmEvent::ConsoleClosed]], quick()).0 {
            Err(e @ SessionError::NeverReady { .. }) => assert_eq!(
                e.to_string(),
                "vm fake: exited before the guest agent was ready: qemu: something went wrong"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_agent_lost_after_ready_is_not_a_never_ready() {
        let script = vec![hello(), VmEvent::ConsoleClosed];
        assert!(matches!(
            boot(vec![script], quick()).0,
            Err(SessionError::AgentLost { .. })
        ));
    }

    #[test]
    fn stalled_boots_are_retried_then_reported() {
        // Each script leaves the VM silent (no ConsoleClosed), so the boot deadline fires.
        let opts = BootOptions {
            boot_attempts: 2,
            ..quick()
        };
        let (result, seen, launches) = boot(vec![vec![], vec![]], opts);
        assert_eq!(launches, 2);
        assert!(seen.iter().any(|e| e.starts_with("Retrying")), "{seen:?}");
        match result {
            Err(SessionError::BootTimeout { attempts, .. }) => assert_eq!(attempts, 2),
            other => panic!("{other:?}"),
        }
        let (result, _, launches) = boot(
            vec![vec![], vec![hello(), exit(0), VmEvent::ConsoleClosed]],
            BootOptions {
                boot_attempts: 2,
                ..quick()
            },
        );
        assert_eq!(launches, 2);
        assert_eq!(result.unwrap().attempts, 2);
    }

    #[test]
    fn a_job_past_its_timeout_is_a_run_timeout() {
        let script = vec![VmEvent::Console(ConsoleEvent::Marker(Marker::Ready {
            agent: "0.1.0".into(),
            kernel: "k".into(),
        }))];
        assert!(matches!(
            boot(vec![script], quick()).0,
            Err(SessionError::RunTimeout { .. })
        ));
    }

    #[test]
    fn hostile_or_stale_guests_break_only_their_session() {
        for (script, want) in [
            (
                vec![VmEvent::Agent(GuestMessage::Output {
                    stream: Stream::Stdout,
                    data: vec![1],
                })],
                "output before hello",
            ),
            (
                vec![VmEvent::AgentError("bad frame magic".into())],
                "bad frame magic",
            ),
            (
                vec![VmEvent::Agent(GuestMessage::Hello {
                    proto: 9,
                    agent_version: "9".into(),
                    kernel_release: "k".into(),
                    features: vec![],
                })],
                "protocol 9",
            ),
            (
                vec![VmEvent::Console(ConsoleEvent::Marker(
                    Marker::OtherVersion("2".into()),
                ))],
                "marker version 2",
            ),
        ] {
            match boot(vec![script], quick()).0 {
                Err(e @ SessionError::Protocol { .. }) => {
                    assert!(e.to_string().contains(want), "{e} lacks {want}")
                }
                other => panic!("{want}: {other:?}"),
            }
        }
    }

    #[test]
    fn faults_and_guest_init_failures_are_named() {
        let script = vec![VmEvent::Fault("KVM internal error. Suberror: 1".into())];
        match boot(vec![script], quick()).0 {
            Err(e @ SessionError::Fault { .. }) => {
                assert!(e.to_string().contains("KVM internal error"))
            }
            other => panic!("{other:?}"),
        }
        let script = vec![
            VmEvent::Console(ConsoleEvent::Marker(Marker::Failed {
                stage: "channel".into(),
                message: "cannot open /dev/ttyS1".into(),
            })),
            VmEvent::ConsoleClosed,
        ];
        match boot(vec![script], quick()).0 {
            Err(e @ SessionError::AgentFailed { .. }) => assert_eq!(
                e.to_string(),
                "vm fake: guest-init failed at channel: cannot open /dev/ttyS1"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cancellation_ends_the_session_at_once() {
        let cancel = Cancel::new();
        cancel.cancel();
        let backend = Scripted {
            scripts: Mutex::new(vec![vec![hello()]]),
            launches: Arc::new(Mutex::new(0)),
        };
        let opts = BootOptions {
            run_timeout: None,
            ..quick()
        };
        let result = run(
            &backend,
            "fake",
            Path::new("/k"),
            Path::new("/i"),
            &opts,
            &cancel,
            &mut |_| {},
        );
        assert!(matches!(result, Err(SessionError::Cancelled { .. })));
    }

    #[test]
    fn the_command_line_carries_the_channel_and_extra_words() {
        let c = cmdline(&["loglevel=8".into()]);
        assert!(c.starts_with("console=ttyS0 panic=-1"), "{c}");
        assert!(c.contains("lab.channel=/dev/ttyS1"), "{c}");
        assert!(c.ends_with(" loglevel=8"), "{c}");
    }
}
