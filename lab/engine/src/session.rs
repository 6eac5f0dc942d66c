//! A running VM and the conversation with its guest agent: [`Vm::boot`] launches a VM through a
//! [`Backend`] and waits for guest-init's hello (retrying stalled boots); [`Vm::exec`],
//! [`Vm::put`] and [`Vm::get`] run requests over the agent channel, streaming output to an
//! observer; [`Vm::shutdown`] powers it off. One event loop per VM, with deadlines and no
//! polling: console events (markers, panics), agent messages, VM faults and cancellation arrive
//! on one channel. Whatever goes wrong is named — panic, boot or run timeout, agent lost or
//! silent, protocol violation — with the console tail attached. A job that runs past its timeout
//! is killed in the guest and the VM stays usable; anything else breaks only that VM.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use lab_proto::message::MAX_FILE_CHUNK;
use lab_proto::{
    ExitStatus, GuestMessage, HostMessage, Job, Marker, Stream, Usage, MARKER_VERSION,
    PROTO_VERSION,
};
use sha2::{Digest, Sha256};

use lab_kernel::module_index::ModuleSource;

use crate::cancel::{Cancel, Registration};
use crate::console::ConsoleEvent;
use crate::scratch;
use crate::vm::{Accel, Backend, BackendError, Machine, VmEvent, VmSpec};

/// How long a VM may take to power off after it was asked to before it is killed.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);

/// How long a killed job may take to be reported before the agent counts as lost.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// The most modules one VM may fetch: a guest asking for more is broken or hostile.
pub const MAX_MODULE_FETCHES: u32 = 4096;

/// How long the agent may stay silent (it sends a heartbeat every 2 s) before it counts as lost.
/// Generous: a guest under emulation on a loaded host can stall for seconds.
pub const AGENT_SILENCE: Duration = Duration::from_secs(30);

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
    /// How long the agent may stay silent before it counts as lost.
    pub agent_silence: Duration,
    /// Which VMM runs the VM (the lab's own needs `accel` KVM).
    pub backend: crate::vm::BackendKind,
    /// Hardware virtualization for the guest (nested KVM): the backend passes it through and
    /// guest-init loads the kvm module its CPU calls for (`lab.nested=1`).
    pub nested: bool,
    /// A host directory shown to the guest, read-only, as the root its jobs run in.
    pub root: Option<std::path::PathBuf>,
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
            agent_silence: AGENT_SILENCE,
            backend: crate::vm::BackendKind::Qemu,
            nested: false,
            root: None,
        }
    }
}

/// The kernel command line of a boot with `opts`: lab's words, `lab.nested=1` for a nested
/// guest, then the user's.
pub fn boot_cmdline(opts: &BootOptions) -> String {
    let mut extra = Vec::new();
    if opts.nested {
        extra.push("lab.nested=1".to_string());
    }
    extra.extend(opts.extra_cmdline.iter().cloned());
    cmdline(&extra)
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    words.extend(extra.iter().cloned());
    words.join(" ")
}

/// Something the observer is told while a VM boots and works.
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
    /// Output of the exec in progress.
    Output(Stream, &'a [u8]),
    /// The boot stalled and is tried again.
    Retrying {
        /// Why.
        reason: String,
    },
}

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecReport {
    /// Its exit.
    pub status: ExitStatus,
    /// What it used, as the guest measured it.
    pub usage: Usage,
}

/// How a one-shot job (boot, exec, power off) went.
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

/// Why a VM could not do what was asked: the VM or the lab failed, not the job.
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
    /// The job did not end in time; it was killed and the VM is still usable.
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
    /// The agent went away: the VM ended, the channel broke, or it fell silent.
    #[error("vm {vm}: guest agent lost: {detail}")]
    AgentLost {
        /// The VM.
        vm: String,
        /// How.
        detail: String,
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
    /// A request failed in the guest (no such file, bad path); the VM is fine.
    #[error("vm {vm}: {request} failed in the guest: {message}")]
    Request {
        /// The VM.
        vm: String,
        /// The request ("put /x", "get /y").
        request: String,
        /// The agent's words.
        message: String,
    },
    /// The VM failed earlier and cannot serve requests any more.
    #[error("vm {vm}: already failed")]
    Dead {
        /// The VM.
        vm: String,
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

/// What one wait on the event channel produced.
enum Wait {
    /// A message from the agent that a request may be waiting for.
    Msg(GuestMessage),
    /// The deadline passed.
    Timeout,
    /// The VM is gone (its console closed) with nothing worse seen.
    Closed,
}

/// What the loop saw that decides how a VM's end is reported.
#[derive(Default)]
struct Seen {
    panic: Option<String>,
    failure: Option<(String, String)>,
    ready: bool,
}

/// A running VM with its guest agent up.
pub struct Vm {
    name: String,
    machine: Box<dyn Machine>,
    events: Receiver<VmEvent>,
    _registration: Registration,
    workdir: Option<tempfile::TempDir>,
    kept_workdir: Option<PathBuf>,
    kernel_release: String,
    agent_version: String,
    launched: Instant,
    boot_time: Duration,
    attempts: u32,
    next_id: u32,
    last_heard: Instant,
    seen: Seen,
    dead: bool,
    agent_silence: Duration,
    /// The kernel's modules, served to the guest's modprobe on demand.
    modules: Option<ModuleSource>,
    module_fetches: u32,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.name)
            .field("pid", &self.machine.pid())
            .field("kernel_release", &self.kernel_release)
            .finish_non_exhaustive()
    }
}

/// What to boot, and how.
#[derive(Clone, Copy)]
pub struct BootRequest<'a> {
    /// The backend that runs the VM.
    pub backend: &'a dyn Backend,
    /// A name for messages ("debian-6.1").
    pub name: &'a str,
    /// The kernel image.
    pub kernel: &'a Path,
    /// The initramfs.
    pub initrd: &'a Path,
    /// How.
    pub opts: &'a BootOptions,
    /// Cancels the boot and everything after it.
    pub cancel: &'a Cancel,
    /// The kernel's modules, which the guest may fetch on demand.
    pub modules: Option<&'a ModuleSource>,
}

impl std::fmt::Debug for BootRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootRequest")
            .field("backend", &self.backend.name())
            .field("name", &self.name)
            .field("kernel", &self.kernel)
            .field("initrd", &self.initrd)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Boots `kernel` with `initrd` and waits for guest-init; stalled boots are retried up to
    /// `opts.boot_attempts` times.
    pub fn boot(
        req: &BootRequest<'_>,
        observer: &mut dyn FnMut(SessionEvent<'_>),
    ) -> Result<Self, SessionError> {
        let attempts = req.opts.boot_attempts.max(1);
        let mut attempt = 1;
        loop {
            match Self::boot_once(req, observer, attempt) {
                Err(SessionError::BootTimeout { after, tail, .. }) if attempt < attempts => {
                    observer(SessionEvent::Retrying {
                        reason: format!(
                            "guest agent not ready after {after:?}; console: {}",
                            tail.last().map(String::as_str).unwrap_or("(empty)")
                        ),
                    });
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn boot_once(
        req: &BootRequest<'_>,
        observer: &mut dyn FnMut(SessionEvent<'_>),
        attempt: u32,
    ) -> Result<Self, SessionError> {
        let BootRequest {
            backend,
            name,
            kernel,
            initrd,
            opts,
            cancel,
            modules,
        } = *req;
        let workdir = scratch::create(&scratch::base_dir(), "vm").map_err(SessionError::Workdir)?;
        let spec = VmSpec {
            name: name.to_string(),
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            cmdline: boot_cmdline(opts),
            cpus: opts.cpus,
            memory_mib: opts.memory_mib,
            accel: opts.accel,
            nested: opts.nested,
            workdir: workdir.path().to_path_buf(),
            root: opts.root.clone(),
        };
        let (tx, rx) = mpsc::channel();
        let registration = cancel.register(tx.clone());
        let launched = Instant::now();
        let machine = backend
            .launch(&spec, tx)
            .map_err(|source| SessionError::Launch {
                vm: name.to_string(),
                source,
            })?;
        observer(SessionEvent::Launched {
            attempt,
            pid: machine.pid(),
        });
        let mut vm = Self {
            name: name.to_string(),
            machine,
            events: rx,
            _registration: registration,
            workdir: Some(workdir),
            kept_workdir: None,
            kernel_release: String::new(),
            agent_version: String::new(),
            launched,
            boot_time: Duration::ZERO,
            attempts: attempt,
            next_id: 0,
            last_heard: launched,
            seen: Seen::default(),
            dead: false,
            agent_silence: opts.agent_silence,
            modules: modules.cloned(),
            module_fetches: 0,
        };
        if opts.keep_workdir {
            vm.kept_workdir = vm.workdir.take().map(tempfile::TempDir::keep);
        }
        let deadline = launched + opts.boot_timeout;
        match vm.wait(Some(deadline), observer)? {
            Wait::Msg(GuestMessage::Hello {
                proto,
                agent_version,
                kernel_release,
                ..
            }) => {
                if proto != PROTO_VERSION {
                    return Err(vm.fail_protocol(format!(
                            "guest-init speaks protocol {proto}, lab speaks {PROTO_VERSION}: rebuild lab and its initramfs"
                        )));
                }
                vm.seen.ready = true;
                vm.boot_time = launched.elapsed();
                vm.last_heard = Instant::now();
                observer(SessionEvent::Ready {
                    kernel: &kernel_release,
                    agent: &agent_version,
                    after: vm.boot_time,
                });
                vm.kernel_release = kernel_release;
                vm.agent_version = agent_version;
                Ok(vm)
            }
            Wait::Msg(other) => Err(vm.fail_protocol(format!("{} before hello", kind(&other)))),
            Wait::Timeout => {
                let tail = vm.stop();
                Err(SessionError::BootTimeout {
                    vm: vm.name.clone(),
                    after: opts.boot_timeout,
                    attempts: attempt,
                    tail,
                })
            }
            Wait::Closed => Err(vm.ended()),
        }
    }

    /// The guest kernel's release.
    pub fn kernel_release(&self) -> &str {
        &self.kernel_release
    }

    /// guest-init's version.
    pub fn agent_version(&self) -> &str {
        &self.agent_version
    }

    /// Launch → agent ready.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The VM process's id (QEMU's, or the lab VMM's).
    pub fn pid(&self) -> u32 {
        self.machine.pid()
    }

    /// Boot attempts it took.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The VM's work directory, when `keep_workdir` asked to keep it.
    pub fn kept_workdir(&self) -> Option<&Path> {
        self.kept_workdir.as_deref()
    }

    fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn send(&mut self, msg: &HostMessage) -> Result<(), SessionError> {
        if self.dead {
            return Err(SessionError::Dead {
                vm: self.name.clone(),
            });
        }
        if let Err(e) = self.machine.send(msg) {
            let tail = self.stop();
            return Err(SessionError::AgentLost {
                vm: self.name.clone(),
                detail: format!("cannot send to the agent: {e}"),
                tail,
            });
        }
        Ok(())
    }

    /// Runs `job`; output goes to `observer` as it arrives. Past `timeout`, the job's process
    /// group is killed in the guest and [`SessionError::RunTimeout`] returned; the VM stays
    /// usable.
    pub fn exec(
        &mut self,
        job: &Job,
        timeout: Option<Duration>,
        observer: &mut dyn FnMut(SessionEvent<'_>),
    ) -> Result<ExecReport, SessionError> {
        let id = self.id();
        self.send(&HostMessage::Exec {
            id,
            job: job.clone(),
        })?;
        let mut deadline = timeout.map(|t| Instant::now() + t);
        let mut killed = false;
        loop {
            match self.wait(deadline, observer)? {
                Wait::Msg(GuestMessage::Started { id: i, .. }) if i == id => {}
                Wait::Msg(GuestMessage::Output {
                    id: i,
                    stream,
                    data,
                }) if i == id => observer(SessionEvent::Output(stream, &data)),
                Wait::Msg(GuestMessage::Exit {
                    id: i,
                    status,
                    usage,
                }) if i == id => {
                    if killed {
                        return Err(SessionError::RunTimeout {
                            vm: self.name.clone(),
                            after: timeout.unwrap_or_default(),
                            tail: self.machine.console_tail(),
                        });
                    }
                    return Ok(ExecReport { status, usage });
                }
                Wait::Msg(GuestMessage::Error { id: i, message }) if i == id => {
                    return Err(SessionError::Request {
                        vm: self.name.clone(),
                        request: format!("exec {}", job.argv[0]),
                        message,
                    });
                }
                // Late messages of an earlier request (a killed job's last output).
                Wait::Msg(_) => {}
                Wait::Timeout if !killed => {
                    killed = true;
                    self.send(&HostMessage::Kill {
                        id,
                        signal: libc_sigkill(),
                    })?;
                    deadline = Some(Instant::now() + KILL_GRACE);
                }
                Wait::Timeout => {
                    let tail = self.stop();
                    return Err(SessionError::AgentLost {
                        vm: self.name.clone(),
                        detail: format!("a killed job was not reported within {KILL_GRACE:?}"),
                        tail,
                    });
                }
                Wait::Closed => return Err(self.ended()),
            }
        }
    }

    /// Writes `data` to `path` in the guest with `mode` (parents created); the agent checks the
    /// size and SHA-256 before moving it into place.
    pub fn put(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), SessionError> {
        let id = self.id();
        self.send(&HostMessage::PutStart {
            id,
            path: path.to_string(),
            mode,
            size: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        })?;
        for chunk in data.chunks(MAX_FILE_CHUNK) {
            self.send(&HostMessage::PutData {
                id,
                data: chunk.to_vec(),
            })?;
        }
        self.send(&HostMessage::PutEnd { id })?;
        loop {
            match self.wait(None, &mut |_| {})? {
                Wait::Msg(GuestMessage::Done { id: i }) if i == id => return Ok(()),
                Wait::Msg(GuestMessage::Error { id: i, message }) if i == id => {
                    return Err(SessionError::Request {
                        vm: self.name.clone(),
                        request: format!("put {path}"),
                        message,
                    })
                }
                Wait::Msg(_) | Wait::Timeout => {}
                Wait::Closed => return Err(self.ended()),
            }
        }
    }

    /// Reads `path` from the guest; returns its content and permission bits. The agent's
    /// announced size and SHA-256 are checked; a guest that sends more than it announced breaks
    /// the VM.
    pub fn get(&mut self, path: &str) -> Result<(Vec<u8>, u32), SessionError> {
        let id = self.id();
        self.send(&HostMessage::Get {
            id,
            path: path.to_string(),
        })?;
        let mut file: Option<(u64, u32, Vec<u8>)> = None;
        loop {
            match self.wait(None, &mut |_| {})? {
                Wait::Msg(GuestMessage::FileStart { id: i, size, mode }) if i == id => {
                    // Grow as data arrives: the announced size is the guest's word, not ours.
                    file = Some((size, mode, Vec::new()));
                }
                Wait::Msg(GuestMessage::FileData { id: i, data }) if i == id => {
                    let Some((size, _, buf)) = file.as_mut() else {
                        return Err(self.fail_protocol("file data before its start".into()));
                    };
                    if buf.len() as u64 + data.len() as u64 > *size {
                        return Err(self.fail_protocol(format!(
                            "get {path}: more data than the {size} bytes announced"
                        )));
                    }
                    buf.extend_from_slice(&data);
                }
                Wait::Msg(GuestMessage::FileEnd { id: i, sha256 }) if i == id => {
                    let Some((size, mode, buf)) = file.take() else {
                        return Err(self.fail_protocol("file end before its start".into()));
                    };
                    if buf.len() as u64 != size || Sha256::digest(&buf).as_slice() != sha256 {
                        return Err(
                            self.fail_protocol(format!("get {path}: size or sha256 mismatch"))
                        );
                    }
                    return Ok((buf, mode));
                }
                Wait::Msg(GuestMessage::Error { id: i, message }) if i == id => {
                    return Err(SessionError::Request {
                        vm: self.name.clone(),
                        request: format!("get {path}"),
                        message,
                    })
                }
                Wait::Msg(_) | Wait::Timeout => {}
                Wait::Closed => return Err(self.ended()),
            }
        }
    }

    /// Asks the agent to power off and waits for the VM to end (killing it after a grace
    /// period). Returns launch → VM gone.
    pub fn shutdown(mut self) -> Duration {
        if !self.dead && self.send(&HostMessage::Shutdown).is_ok() {
            let deadline = Instant::now() + POWER_OFF_GRACE;
            // Late messages are drained until the VM is gone or the grace period ends.
            while let Ok(Wait::Msg(_)) = self.wait(Some(deadline), &mut |_| {}) {}
        }
        self.stop();
        self.launched.elapsed()
    }

    /// Kills the VM process and returns the console's last lines.
    fn stop(&mut self) -> Vec<String> {
        self.dead = true;
        self.machine.kill();
        self.machine.wait();
        self.machine.console_tail()
    }

    fn fail_protocol(&mut self, detail: String) -> SessionError {
        let tail = self.stop();
        SessionError::Protocol {
            vm: self.name.clone(),
            detail,
            tail,
        }
    }

    /// The error for a VM that ended on its own: the most specific cause seen wins.
    fn ended(&mut self) -> SessionError {
        let tail = self.stop();
        let vm = self.name.clone();
        if let Some((stage, message)) = self.seen.failure.take() {
            return SessionError::AgentFailed {
                vm,
                stage,
                message,
                tail,
            };
        }
        if let Some(reason) = self.seen.panic.take() {
            return SessionError::Panic { vm, reason, tail };
        }
        if !self.seen.ready {
            let diagnostics = self.machine.diagnostics();
            let first = diagnostics.lines().find(|l| !l.trim().is_empty());
            let detail = first.map(|l| format!(": {}", l.trim())).unwrap_or_default();
            return SessionError::NeverReady { vm, detail, tail };
        }
        SessionError::AgentLost {
            vm,
            detail: "the vm ended".into(),
            tail,
        }
    }

    /// Waits for the next agent message, the deadline, or the VM's end, handling everything
    /// else (console events, heartbeats, logs, faults, cancellation) on the way.
    fn wait(
        &mut self,
        deadline: Option<Instant>,
        observer: &mut dyn FnMut(SessionEvent<'_>),
    ) -> Result<Wait, SessionError> {
        if self.dead {
            return Err(SessionError::Dead {
                vm: self.name.clone(),
            });
        }
        loop {
            // A live agent is never silent for long; after a panic, the VM gets a moment to
            // print its trace and end.
            let silence = if self.seen.panic.is_some() {
                Some(Instant::now() + POWER_OFF_GRACE)
            } else {
                self.seen
                    .ready
                    .then(|| self.last_heard + self.agent_silence)
            };
            let wake = match (deadline, silence) {
                (Some(d), Some(s)) => Some(d.min(s)),
                (d, s) => d.or(s),
            };
            let event = match wake {
                Some(w) => match self
                    .events
                    .recv_timeout(w.saturating_duration_since(Instant::now()))
                {
                    Ok(e) => e,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.seen.panic.is_some() {
                            return Ok(Wait::Closed);
                        }
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Ok(Wait::Timeout);
                        }
                        let tail = self.stop();
                        return Err(SessionError::AgentLost {
                            vm: self.name.clone(),
                            detail: format!("no word from the agent for {:?}", self.agent_silence),
                            tail,
                        });
                    }
                    Err(RecvTimeoutError::Disconnected) => return Ok(Wait::Closed),
                },
                None => match self.events.recv() {
                    Ok(e) => e,
                    Err(_) => return Ok(Wait::Closed),
                },
            };
            match event {
                VmEvent::Console(ConsoleEvent::Marker(Marker::OtherVersion(v))) => {
                    return Err(self.fail_protocol(format!(
                        "guest-init speaks marker version {v}, lab speaks {MARKER_VERSION}: rebuild lab and its initramfs"
                    )));
                }
                VmEvent::Console(ConsoleEvent::Marker(Marker::Failed { stage, message })) => {
                    self.seen.failure.get_or_insert((stage, message));
                }
                VmEvent::Console(ConsoleEvent::Marker(_)) => {}
                VmEvent::Console(ConsoleEvent::Panic(reason)) => {
                    self.seen.panic.get_or_insert(reason);
                }
                VmEvent::ConsoleClosed => return Ok(Wait::Closed),
                VmEvent::AgentConnected | VmEvent::AgentClosed => {}
                VmEvent::Agent(GuestMessage::Heartbeat { .. }) => self.last_heard = Instant::now(),
                VmEvent::Agent(GuestMessage::Log { line }) => {
                    self.last_heard = Instant::now();
                    observer(SessionEvent::Log(&line));
                }
                VmEvent::Agent(GuestMessage::Failure { stage, message }) => {
                    self.seen.failure = Some((stage, message));
                }
                VmEvent::Agent(GuestMessage::FetchModule { id, path }) => {
                    self.last_heard = Instant::now();
                    self.serve_module(id, &path, observer)?;
                }
                VmEvent::Agent(GuestMessage::Hello { .. }) if self.seen.ready => {
                    return Err(self.fail_protocol("a second hello: the agent restarted".into()));
                }
                VmEvent::Agent(msg) => {
                    self.last_heard = Instant::now();
                    return Ok(Wait::Msg(msg));
                }
                VmEvent::AgentError(detail) => return Err(self.fail_protocol(detail)),
                VmEvent::Fault(detail) => {
                    let tail = self.stop();
                    return Err(SessionError::Fault {
                        vm: self.name.clone(),
                        detail,
                        tail,
                    });
                }
                VmEvent::Cancelled => {
                    self.stop();
                    return Err(SessionError::Cancelled {
                        vm: self.name.clone(),
                    });
                }
            }
        }
    }
}

impl Vm {
    /// Answers the guest's fetch `id` of the module at `path` (as in its modules.dep): the
    /// decompressed file, or why not. Only modules of the kernel's index are served.
    fn serve_module(
        &mut self,
        id: u32,
        path: &str,
        observer: &mut dyn FnMut(SessionEvent<'_>),
    ) -> Result<(), SessionError> {
        self.module_fetches = self.module_fetches.saturating_add(1);
        let data = match &self.modules {
            _ if self.module_fetches > MAX_MODULE_FETCHES => Err(format!(
                "more than {MAX_MODULE_FETCHES} module fetches from one vm"
            )),
            None => Err(format!(
                "lab has no module tree for kernel {} (only the modules in the image)",
                self.name
            )),
            Some(source) => source.read(path).map_err(|e| error_chain(&e)),
        };
        let data = match data {
            Ok(data) => data,
            Err(message) => {
                let line = format!("module {path} not served: {message}");
                observer(SessionEvent::Log(&line));
                return self.send(&HostMessage::ModuleUnavailable { id, message });
            }
        };
        self.send(&HostMessage::ModuleStart {
            id,
            size: data.len() as u64,
            sha256: Sha256::digest(&data).into(),
        })?;
        for chunk in data.chunks(MAX_FILE_CHUNK) {
            self.send(&HostMessage::ModuleData {
                id,
                data: chunk.to_vec(),
            })?;
        }
        self.send(&HostMessage::ModuleEnd { id })?;
        let line = format!("module {path} sent ({} bytes)", data.len());
        observer(SessionEvent::Log(&line));
        Ok(())
    }
}

/// An error and its causes, as one line.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// SIGKILL's number (9 on every Linux architecture lab supports).
fn libc_sigkill() -> i32 {
    9
}

/// A message kind's name for errors.
fn kind(msg: &GuestMessage) -> &'static str {
    match msg {
        GuestMessage::Hello { .. } => "hello",
        GuestMessage::Log { .. } => "log",
        GuestMessage::Started { .. } => "started",
        GuestMessage::Output { .. } => "output",
        GuestMessage::Exit { .. } => "exit",
        GuestMessage::FileStart { .. } => "file start",
        GuestMessage::FileData { .. } => "file data",
        GuestMessage::FileEnd { .. } => "file end",
        GuestMessage::Done { .. } => "done",
        GuestMessage::Error { .. } => "error",
        GuestMessage::Heartbeat { .. } => "heartbeat",
        GuestMessage::Failure { .. } => "failure",
        GuestMessage::FetchModule { .. } => "fetch module",
    }
}

/// Boots, runs `job` with `opts.run_timeout`, and powers off: one job in a fresh VM.
pub fn run(
    req: &BootRequest<'_>,
    job: &Job,
    observer: &mut dyn FnMut(SessionEvent<'_>),
) -> Result<JobReport, SessionError> {
    let mut vm = Vm::boot(req, observer)?;
    if let Some(dir) = vm.kept_workdir() {
        let line = format!("vm work directory kept at {}", dir.display());
        observer(SessionEvent::Log(&line));
    }
    let report = vm.exec(job, req.opts.run_timeout, observer)?;
    let (kernel_release, agent_version) = (vm.kernel_release.clone(), vm.agent_version.clone());
    let (boot_time, attempts) = (vm.boot_time, vm.attempts);
    let total_time = vm.shutdown();
    Ok(JobReport {
        status: report.status,
        kernel_release,
        agent_version,
        boot_time,
        total_time,
        job_wall: Duration::from_micros(report.usage.wall_us),
        job_cpu: Duration::from_micros(report.usage.user_us.saturating_add(report.usage.sys_us)),
        job_max_rss_kib: report.usage.max_rss_kib,
        attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc::Sender;
    use std::sync::{Arc, Mutex};

    type Responder = Box<dyn FnMut(&HostMessage) -> Vec<VmEvent> + Send>;

    /// A backend whose VMs play back a boot script and answer requests with a responder.
    struct Scripted {
        vms: Mutex<Vec<(Vec<VmEvent>, Responder)>>,
        launches: AtomicU32,
    }

    struct FakeMachine {
        events: Sender<VmEvent>,
        responder: Responder,
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
        fn send(&mut self, msg: &HostMessage) -> std::io::Result<()> {
            for e in (self.responder)(msg) {
                let _ = self.events.send(e);
            }
            Ok(())
        }
        fn kill(&mut self) {}
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
            self.launches.fetch_add(1, Ordering::SeqCst);
            let (script, responder) = self.vms.lock().unwrap().remove(0);
            for e in script {
                events.send(e).unwrap();
            }
            Ok(Box::new(FakeMachine { events, responder }))
        }
    }

    fn scripted(vms: Vec<(Vec<VmEvent>, Responder)>) -> Scripted {
        Scripted {
            vms: Mutex::new(vms),
            launches: AtomicU32::new(0),
        }
    }

    fn hello() -> VmEvent {
        hello_v(PROTO_VERSION)
    }

    fn hello_v(proto: u16) -> VmEvent {
        VmEvent::Agent(GuestMessage::Hello {
            proto,
            agent_version: "0.1.0".into(),
            kernel_release: "6.1.0-test".into(),
            features: vec![],
        })
    }

    fn agent(msg: GuestMessage) -> VmEvent {
        VmEvent::Agent(msg)
    }

    fn exit(id: u32, status: ExitStatus) -> VmEvent {
        agent(GuestMessage::Exit {
            id,
            status,
            usage: Usage {
                wall_us: 5,
                user_us: 1,
                sys_us: 2,
                max_rss_kib: 3,
            },
        })
    }

    /// A guest that runs every exec to `code` with "hi" on stdout and powers off on shutdown.
    fn well_behaved(code: i32) -> Responder {
        Box::new(move |msg| match msg {
            HostMessage::Exec { id, .. } => vec![
                agent(GuestMessage::Started { id: *id, pid: 7 }),
                agent(GuestMessage::Output {
                    id: *id,
                    stream: Stream::Stdout,
                    data: b"hi\n".to_vec(),
                }),
                exit(*id, ExitStatus::Code(code)),
            ],
            HostMessage::Shutdown => vec![VmEvent::ConsoleClosed],
            _ => vec![],
        })
    }

    fn silent() -> Responder {
        Box::new(|_| vec![])
    }

    fn quick() -> BootOptions {
        BootOptions {
            boot_timeout: Duration::from_millis(200),
            run_timeout: Some(Duration::from_millis(200)),
            boot_attempts: 1,
            ..BootOptions::default()
        }
    }

    fn request<'a>(
        backend: &'a Scripted,
        opts: &'a BootOptions,
        cancel: &'a Cancel,
    ) -> BootRequest<'a> {
        BootRequest {
            backend,
            name: "fake",
            kernel: Path::new("/k"),
            initrd: Path::new("/i"),
            opts,
            cancel,
            modules: None,
        }
    }

    fn boot(backend: &Scripted, opts: &BootOptions) -> Result<Vm, SessionError> {
        let cancel = Cancel::new();
        Vm::boot(&request(backend, opts, &cancel), &mut |_| {})
    }

    #[test]
    fn one_vm_serves_many_execs_and_streams_their_output() {
        let backend = scripted(vec![(vec![hello()], well_behaved(3))]);
        let mut vm = boot(&backend, &quick()).unwrap();
        assert_eq!(vm.kernel_release(), "6.1.0-test");
        for _ in 0..3 {
            let mut out = Vec::new();
            let report = vm
                .exec(&Job::new(["true"]), None, &mut |e| {
                    if let SessionEvent::Output(Stream::Stdout, d) = e {
                        out.extend_from_slice(d);
                    }
                })
                .unwrap();
            assert_eq!(report.status, ExitStatus::Code(3));
            assert_eq!(report.usage.max_rss_kib, 3);
            assert_eq!(out, b"hi\n");
        }
        vm.shutdown();
    }

    #[test]
    fn the_one_shot_run_reports_boot_and_job() {
        let backend = scripted(vec![(vec![hello()], well_behaved(0))]);
        let opts = quick();
        let cancel = Cancel::new();
        let report = run(
            &request(&backend, &opts, &cancel),
            &Job::new(["true"]),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(report.status, ExitStatus::Code(0));
        assert_eq!(report.job_cpu, Duration::from_micros(3));
        assert_eq!(report.attempts, 1);
    }

    #[test]
    fn modules_the_guest_fetches_come_from_the_kernels_index_only() {
        use lab_kernel::module_index::{ModuleEntry, ModuleIndex};
        let tree = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::create_dir_all(tree.path().join("kernel/net")).unwrap();
        std::fs::write(tree.path().join("kernel/net/veth.ko"), &content).unwrap();
        let mut index = ModuleIndex::default();
        index.modules.insert(
            "veth".into(),
            ModuleEntry {
                path: "kernel/net/veth.ko".into(),
                depends: vec![],
                aliases: vec!["rtnl-link-veth".into()],
                softdep_pre: vec![],
                softdep_post: vec![],
            },
        );
        let source = ModuleSource::new(tree.path().into(), tree.path().join("plain"), index);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        let responder: Responder = Box::new(move |msg| {
            record.lock().unwrap().push(msg.clone());
            match msg {
                HostMessage::Exec { id, .. } => vec![
                    agent(GuestMessage::FetchModule {
                        id: 0x8000_0001,
                        path: "kernel/net/veth.ko".into(),
                    }),
                    agent(GuestMessage::FetchModule {
                        id: 0x8000_0002,
                        path: "../../etc/passwd".into(),
                    }),
                    exit(*id, ExitStatus::Code(0)),
                ],
                _ => vec![],
            }
        });
        let backend = scripted(vec![(vec![hello()], responder)]);
        let cancel = Cancel::new();
        let opts = quick();
        let req = BootRequest {
            modules: Some(&source),
            ..request(&backend, &opts, &cancel)
        };
        let mut vm = Vm::boot(&req, &mut |_| {}).unwrap();
        let report = vm.exec(&Job::new(["ip"]), None, &mut |_| {}).unwrap();
        assert_eq!(report.status, ExitStatus::Code(0));
        let sent = sent.lock().unwrap();
        let mut got = Vec::new();
        let mut ended = false;
        for msg in sent.iter() {
            match msg {
                HostMessage::ModuleStart { id, size, sha256 } => {
                    assert_eq!((*id, *size), (0x8000_0001, content.len() as u64));
                    assert_eq!(sha256.as_slice(), Sha256::digest(&content).as_slice());
                }
                HostMessage::ModuleData { id, data } => {
                    assert_eq!(*id, 0x8000_0001);
                    got.extend_from_slice(data);
                }
                HostMessage::ModuleEnd { id } => {
                    assert_eq!(*id, 0x8000_0001);
                    ended = true;
                }
                HostMessage::ModuleUnavailable { id, message } => {
                    assert_eq!(*id, 0x8000_0002);
                    assert!(message.contains("etc/passwd"), "{message}");
                }
                _ => {}
            }
        }
        assert!(ended);
        assert_eq!(got, content);
        assert!(sent
            .iter()
            .any(|m| matches!(m, HostMessage::ModuleUnavailable { .. })));
    }

    #[test]
    fn a_panic_during_a_job_is_a_vm_failure_with_its_tail() {
        let responder: Responder = Box::new(|msg| match msg {
            HostMessage::Exec { .. } => vec![
                VmEvent::Console(ConsoleEvent::Panic("sysrq triggered crash".into())),
                VmEvent::ConsoleClosed,
            ],
            _ => vec![],
        });
        let backend = scripted(vec![(vec![hello()], responder)]);
        let mut vm = boot(&backend, &quick()).unwrap();
        match vm.exec(&Job::new(["x"]), None, &mut |_| {}) {
            Err(e @ SessionError::Panic { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "vm fake: kernel panic: sysrq triggered crash"
                );
                assert_eq!(e.console_tail(), ["last console line"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            vm.exec(&Job::new(["x"]), None, &mut |_| {}),
            Err(SessionError::Dead { .. })
        ));
    }

    #[test]
    fn a_vm_that_ends_before_ready_names_what_the_vm_process_said() {
        let backend = scripted(vec![(vec![VmEvent::ConsoleClosed], silent())]);
        match boot(&backend, &quick()) {
            Err(e @ SessionError::NeverReady { .. }) => assert_eq!(
                e.to_string(),
                "vm fake: exited before the guest agent was ready: qemu: something went wrong"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_vm_that_dies_under_a_job_is_an_agent_lost() {
        let responder: Responder = Box::new(|_| vec![VmEvent::ConsoleClosed]);
        let backend = scripted(vec![(vec![hello()], responder)]);
        let mut vm = boot(&backend, &quick()).unwrap();
        assert!(matches!(
            vm.exec(&Job::new(["x"]), None, &mut |_| {}),
            Err(SessionError::AgentLost { .. })
        ));
    }

    #[test]
    fn a_silent_agent_is_lost_after_the_silence_limit() {
        let backend = scripted(vec![(vec![hello()], silent())]);
        let opts = BootOptions {
            agent_silence: Duration::from_millis(150),
            ..quick()
        };
        let mut vm = boot(&backend, &opts).unwrap();
        match vm.exec(&Job::new(["x"]), None, &mut |_| {}) {
            Err(e @ SessionError::AgentLost { .. }) => {
                assert!(e.to_string().contains("no word from the agent"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stalled_boots_are_retried_then_reported() {
        let opts = BootOptions {
            boot_attempts: 2,
            ..quick()
        };
        let backend = scripted(vec![(vec![], silent()), (vec![], silent())]);
        let cancel = Cancel::new();
        let mut seen = Vec::new();
        let result = Vm::boot(&request(&backend, &opts, &cancel), &mut |e| {
            seen.push(format!("{e:?}"))
        });
        assert_eq!(backend.launches.load(Ordering::SeqCst), 2);
        assert!(seen.iter().any(|e| e.starts_with("Retrying")), "{seen:?}");
        match result {
            Err(SessionError::BootTimeout { attempts, .. }) => assert_eq!(attempts, 2),
            other => panic!("{other:?}"),
        }
        let backend = scripted(vec![(vec![], silent()), (vec![hello()], silent())]);
        assert_eq!(boot(&backend, &opts).unwrap().attempts(), 2);
    }

    #[test]
    fn a_job_past_its_timeout_is_killed_and_the_vm_stays_usable() {
        let responder: Responder = Box::new(|msg| match msg {
            HostMessage::Exec { id, job } if job.argv[0] == "sleep" => {
                vec![agent(GuestMessage::Started { id: *id, pid: 9 })]
            }
            HostMessage::Exec { id, .. } => vec![exit(*id, ExitStatus::Code(0))],
            HostMessage::Kill { id, signal } => vec![exit(*id, ExitStatus::Signal(*signal))],
            _ => vec![],
        });
        let backend = scripted(vec![(vec![hello()], responder)]);
        let mut vm = boot(&backend, &quick()).unwrap();
        let slow = vm.exec(
            &Job::new(["sleep", "100"]),
            Some(Duration::from_millis(100)),
            &mut |_| {},
        );
        assert!(
            matches!(slow, Err(SessionError::RunTimeout { .. })),
            "{slow:?}"
        );
        let next = vm.exec(&Job::new(["true"]), None, &mut |_| {}).unwrap();
        assert_eq!(next.status, ExitStatus::Code(0));
    }

    #[test]
    fn files_round_trip_and_guest_errors_are_requests_not_vm_failures() {
        let store: Arc<Mutex<Vec<u8>>> = Arc::default();
        let s = store.clone();
        let responder: Responder = Box::new(move |msg| match msg {
            HostMessage::PutData { data, .. } => {
                s.lock().unwrap().extend_from_slice(data);
                vec![]
            }
            HostMessage::PutEnd { id } => vec![agent(GuestMessage::Done { id: *id })],
            HostMessage::Get { id, path } if path == "/missing" => {
                vec![agent(GuestMessage::Error {
                    id: *id,
                    message: "no such file".into(),
                })]
            }
            HostMessage::Get { id, .. } => {
                let data = s.lock().unwrap().clone();
                let mut events = vec![agent(GuestMessage::FileStart {
                    id: *id,
                    size: data.len() as u64,
                    mode: 0o600,
                })];
                for c in data.chunks(MAX_FILE_CHUNK) {
                    events.push(agent(GuestMessage::FileData {
                        id: *id,
                        data: c.to_vec(),
                    }));
                }
                events.push(agent(GuestMessage::FileEnd {
                    id: *id,
                    sha256: Sha256::digest(&data).into(),
                }));
                events
            }
            _ => vec![],
        });
        let backend = scripted(vec![(vec![hello()], responder)]);
        let mut vm = boot(&backend, &quick()).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        vm.put("/tmp/blob", 0o600, &data).unwrap();
        let (back, mode) = vm.get("/tmp/blob").unwrap();
        assert_eq!(back, data);
        assert_eq!(mode, 0o600);
        match vm.get("/missing") {
            Err(e @ SessionError::Request { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "vm fake: get /missing failed in the guest: no such file"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            vm.get("/tmp/blob").unwrap().0.len(),
            data.len(),
            "the vm is still usable"
        );
    }

    #[test]
    fn hostile_or_stale_guests_break_only_their_vm() {
        let boots: Vec<(Vec<VmEvent>, &str)> = vec![
            (
                vec![agent(GuestMessage::Output {
                    id: 1,
                    stream: Stream::Stdout,
                    data: vec![1],
                })],
                "output before hello",
            ),
            (
                vec![VmEvent::AgentError("bad frame magic".into())],
                "bad frame magic",
            ),
            (vec![hello_v(9)], "protocol 9"),
            (
                vec![VmEvent::Console(ConsoleEvent::Marker(
                    Marker::OtherVersion("2".into()),
                ))],
                "marker version 2",
            ),
        ];
        for (script, want) in boots {
            let backend = scripted(vec![(script, silent())]);
            match boot(&backend, &quick()) {
                Err(e @ SessionError::Protocol { .. }) => {
                    assert!(e.to_string().contains(want), "{e} lacks {want}")
                }
                other => panic!("{want}: {other:?}"),
            }
        }
        // A get answered with more than was announced, and a second hello.
        let responder: Responder = Box::new(|msg| match msg {
            HostMessage::Get { id, .. } => vec![
                agent(GuestMessage::FileStart {
                    id: *id,
                    size: 2,
                    mode: 0,
                }),
                agent(GuestMessage::FileData {
                    id: *id,
                    data: vec![0; 3],
                }),
            ],
            HostMessage::Exec { .. } => vec![hello()],
            _ => vec![],
        });
        let backend = scripted(vec![(vec![hello()], responder)]);
        let mut vm = boot(&backend, &quick()).unwrap();
        assert!(matches!(vm.get("/x"), Err(SessionError::Protocol { .. })));
        let backend = scripted(vec![(
            vec![hello()],
            Box::new(|msg: &HostMessage| match msg {
                HostMessage::Exec { .. } => vec![hello()],
                _ => vec![],
            }) as Responder,
        )]);
        let mut vm = boot(&backend, &quick()).unwrap();
        match vm.exec(&Job::new(["x"]), None, &mut |_| {}) {
            Err(e @ SessionError::Protocol { .. }) => {
                assert!(e.to_string().contains("second hello"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn faults_and_guest_init_failures_are_named() {
        let backend = scripted(vec![(
            vec![VmEvent::Fault("KVM internal error. Suberror: 1".into())],
            silent(),
        )]);
        match boot(&backend, &quick()) {
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
        let backend = scripted(vec![(script, silent())]);
        match boot(&backend, &quick()) {
            Err(e @ SessionError::AgentFailed { .. }) => assert_eq!(
                e.to_string(),
                "vm fake: guest-init failed at channel: cannot open /dev/ttyS1"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cancellation_ends_the_vm_at_once() {
        let cancel = Cancel::new();
        let backend = scripted(vec![(vec![hello()], silent())]);
        let opts = quick();
        let mut vm = Vm::boot(&request(&backend, &opts, &cancel), &mut |_| {}).unwrap();
        cancel.cancel();
        assert!(matches!(
            vm.exec(&Job::new(["sleep"]), None, &mut |_| {}),
            Err(SessionError::Cancelled { .. })
        ));
    }

    #[test]
    fn the_command_line_carries_lab_s_words_and_extra_ones() {
        let c = cmdline(&["loglevel=8".into()]);
        assert!(c.starts_with("console=ttyS0 panic=-1"), "{c}");
        assert!(c.contains("rdinit=/init"), "{c}");
        assert!(c.ends_with(" loglevel=8"), "{c}");
    }
}
