//! The messages: what lab asks of the guest agent (exec, kill, put, get, shutdown) and what the
//! agent reports back (output, exits, files, heartbeats), plus the job stored in an initramfs.

use crate::wire::{Decoder, Encoder, WireError};

/// The most bytes of output carried by one [`GuestMessage::Output`].
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;

/// A command for the guest to run: the job of a boot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    /// The program and its arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Extra environment on top of guest-init's base environment, in order: `KEY=VALUE` sets
    /// a variable, a bare `KEY` (no `=`) removes it.
    pub env: Vec<String>,
    /// The working directory (empty: `/`).
    pub cwd: String,
    /// Timeout in milliseconds enforced by guest-init (0: none; the host enforces its own).
    pub timeout_ms: u64,
    /// Run as this user and group (uid, gid) instead of root; supplementary groups are
    /// dropped.
    pub user: Option<(u32, u32)>,
    /// Run in a jail: a fresh set of namespaces for this exec alone (Kyua's jail execenv).
    pub isolation: Option<Isolation>,
    /// `cwd` is the exec's own work directory: the agent creates it fresh (mode 0755, owned by
    /// `user`) before the exec and removes it, recursively, once the process has exited.
    pub workdir: bool,
}

/// A new mount namespace: `/` private, a fresh `/proc`.
pub const NS_MOUNT: u32 = 1 << 0;
/// A new pid namespace: the job is its PID 1; killing it ends the namespace.
pub const NS_PID: u32 = 1 << 1;
/// A new UTS namespace: the jail's own hostname.
pub const NS_UTS: u32 = 1 << 2;
/// A new IPC namespace.
pub const NS_IPC: u32 = 1 << 3;
/// A new network namespace with only `lo`, up (a jail's `vnet`).
pub const NS_NET: u32 = 1 << 4;
/// Every namespace bit this version defines.
pub const NS_ALL: u32 = NS_MOUNT | NS_PID | NS_UTS | NS_IPC | NS_NET;
/// The longest jail hostname, in bytes (the kernel's `HOST_NAME_MAX`).
pub const MAX_HOSTNAME: usize = 64;

/// How an exec is isolated from the rest of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Isolation {
    /// The namespaces to create, as `NS_*` bits. Bits this version does not define are carried
    /// as they are; the agent refuses the exec rather than ignore them.
    pub namespaces: u32,
    /// The hostname set in the new UTS namespace (the jail's name; at most
    /// [`MAX_HOSTNAME`] bytes; empty: keep the guest's). Needs [`NS_UTS`].
    pub hostname: String,
}

impl Isolation {
    /// Kyua's jail: mount, pid, UTS and IPC namespaces named `name`, plus a network namespace
    /// of its own when `vnet`.
    pub fn jail(name: impl Into<String>, vnet: bool) -> Self {
        let net = if vnet { NS_NET } else { 0 };
        Self {
            namespaces: NS_MOUNT | NS_PID | NS_UTS | NS_IPC | net,
            hostname: name.into(),
        }
    }

    /// The bits set that this version does not define.
    pub fn unknown_namespaces(&self) -> u32 {
        self.namespaces & !NS_ALL
    }
}

impl Job {
    /// A job running `argv` with no extra environment.
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The encoded job, as stored in [`crate::JOB_PATH`].
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.u16(crate::PROTO_VERSION);
        encode_job(&mut e, self);
        e.finish()
    }

    /// Decodes a job written by [`Job::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut d = Decoder::new(bytes);
        let version = d.u16()?;
        if version != crate::PROTO_VERSION {
            return Err(MessageError::Version(version));
        }
        let job = decode_job(&mut d)?;
        d.end()?;
        Ok(job)
    }
}

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a guest process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// The status a shell would report: the code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            Self::Code(c) => c,
            Self::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// Resource usage of an ended process, as the guest measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Wall time in microseconds.
    pub wall_us: u64,
    /// User CPU time in microseconds.
    pub user_us: u64,
    /// System CPU time in microseconds.
    pub sys_us: u64,
    /// Peak resident set size in KiB.
    pub max_rss_kib: u64,
}

/// The most bytes carried by one [`HostMessage::PutData`] or [`GuestMessage::FileData`].
pub const MAX_FILE_CHUNK: usize = 64 * 1024;

/// A message from lab to the guest agent. Every request carries an id chosen by lab; the
/// agent's answers carry the same id, so requests can overlap on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMessage {
    /// Run a process.
    Exec {
        /// Request id.
        id: u32,
        /// What to run.
        job: Job,
    },
    /// Send `signal` to the process group of exec `id` (a timeout from the host).
    Kill {
        /// The exec's id.
        id: u32,
        /// The signal.
        signal: i32,
    },
    /// Start writing a file; [`HostMessage::PutData`] chunks and [`HostMessage::PutEnd`]
    /// follow.
    PutStart {
        /// Request id.
        id: u32,
        /// Absolute guest path; parent directories are created.
        path: String,
        /// Permission bits.
        mode: u32,
        /// Total size in bytes.
        size: u64,
        /// SHA-256 of the content, checked by the agent at the end.
        sha256: [u8; 32],
    },
    /// A chunk of a put (at most [`MAX_FILE_CHUNK`] bytes).
    PutData {
        /// The put's id.
        id: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The put is complete; the agent checks size and hash and answers Done or Error.
    PutEnd {
        /// The put's id.
        id: u32,
    },
    /// Read a file; the agent answers FileStart, FileData…, FileEnd (or Error).
    Get {
        /// Request id.
        id: u32,
        /// Absolute guest path.
        path: String,
    },
    /// Sync and power off.
    Shutdown,
    /// The module the guest asked for with [`GuestMessage::FetchModule`] `id` follows:
    /// [`HostMessage::ModuleData`] chunks, then [`HostMessage::ModuleEnd`].
    ModuleStart {
        /// The fetch's id (the guest's).
        id: u32,
        /// The decompressed module's size in bytes.
        size: u64,
        /// Its SHA-256, checked by the agent at the end.
        sha256: [u8; 32],
    },
    /// A chunk of a module (at most [`MAX_FILE_CHUNK`] bytes).
    ModuleData {
        /// The fetch's id.
        id: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The module of fetch `id` is complete.
    ModuleEnd {
        /// The fetch's id.
        id: u32,
    },
    /// Lab has no such module for this kernel (or could not read it).
    ModuleUnavailable {
        /// The fetch's id.
        id: u32,
        /// Why.
        message: String,
    },
}

/// A message from the guest agent to lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMessage {
    /// The agent is up. Sent first.
    Hello {
        /// The protocol version it speaks.
        proto: u16,
        /// guest-init's version.
        agent_version: String,
        /// The guest kernel's release.
        kernel_release: String,
        /// Optional capabilities, by name.
        features: Vec<String>,
    },
    /// A diagnostic from guest-init itself (a module that failed to load, a mount skipped).
    Log {
        /// The line.
        line: String,
    },
    /// Exec `id` is running.
    Started {
        /// The exec's id.
        id: u32,
        /// Its pid (and process group) in the guest.
        pid: u32,
    },
    /// Output of exec `id`, in the order it was read.
    Output {
        /// The exec's id.
        id: u32,
        /// Which stream.
        stream: Stream,
        /// The bytes (at most [`MAX_OUTPUT_CHUNK`]).
        data: Vec<u8>,
    },
    /// Exec `id` ended.
    Exit {
        /// The exec's id.
        id: u32,
        /// How.
        status: ExitStatus,
        /// What it used.
        usage: Usage,
    },
    /// The file of get `id` follows.
    FileStart {
        /// The get's id.
        id: u32,
        /// Its size.
        size: u64,
        /// Its permission bits.
        mode: u32,
    },
    /// A chunk of get `id` (at most [`MAX_FILE_CHUNK`] bytes).
    FileData {
        /// The get's id.
        id: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Get `id` is complete.
    FileEnd {
        /// The get's id.
        id: u32,
        /// SHA-256 of what was sent.
        sha256: [u8; 32],
    },
    /// Request `id` (a put) succeeded.
    Done {
        /// The request's id.
        id: u32,
    },
    /// Request `id` failed in the guest (no such file, hash mismatch, cannot spawn…).
    Error {
        /// The request's id.
        id: u32,
        /// What happened.
        message: String,
    },
    /// The agent is alive (sent periodically).
    Heartbeat {
        /// The guest's uptime in milliseconds.
        uptime_ms: u64,
    },
    /// guest-init could not do its part: the lab failed, not the job.
    Failure {
        /// The step that failed ("mount", "job", "spawn", …).
        stage: String,
        /// What happened.
        message: String,
    },
    /// The guest's modprobe needs a module the image does not carry: lab answers with
    /// [`HostMessage::ModuleStart`]… or [`HostMessage::ModuleUnavailable`]. The id is the
    /// guest's own (its fetches are numbered apart from lab's requests).
    FetchModule {
        /// The fetch's id.
        id: u32,
        /// The module's path under `/lib/modules/<release>`, as in the guest's modules.dep
        /// (`kernel/drivers/net/veth.ko`).
        path: String,
    },
}

/// The longest module path a guest may ask for.
pub const MAX_MODULE_PATH: usize = 1024;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The bytes are malformed.
    #[error("malformed message")]
    Wire(#[from] WireError),
    /// The peer speaks another protocol version.
    #[error("protocol version {0} is not supported (lab speaks {v})", v = crate::PROTO_VERSION)]
    Version(u16),
    /// A job with nothing to run.
    #[error("job has an empty argv")]
    EmptyArgv,
}

fn encode_job(e: &mut Encoder, job: &Job) {
    e.strs(&job.argv)
        .strs(&job.env)
        .str(&job.cwd)
        .u64(job.timeout_ms);
    match job.user {
        Some((uid, gid)) => e.u8(1).u32(uid).u32(gid),
        None => e.u8(0),
    };
    match &job.isolation {
        Some(iso) => e.u8(1).u32(iso.namespaces).str(&iso.hostname),
        None => e.u8(0),
    };
    e.u8(u8::from(job.workdir));
}

fn decode_isolation(d: &mut Decoder<'_>) -> Result<Option<Isolation>, WireError> {
    match d.u8()? {
        0 => Ok(None),
        1 => {
            let namespaces = d.u32()?;
            let raw = d.bytes(MAX_HOSTNAME)?;
            let hostname = String::from_utf8(raw.to_vec()).map_err(|_| WireError::BadUtf8)?;
            Ok(Some(Isolation {
                namespaces,
                hostname,
            }))
        }
        tag => Err(WireError::UnknownTag {
            what: "isolation",
            tag: tag.into(),
        }),
    }
}

fn decode_flag(d: &mut Decoder<'_>, what: &'static str) -> Result<bool, WireError> {
    match d.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        tag => Err(WireError::UnknownTag {
            what,
            tag: tag.into(),
        }),
    }
}

fn decode_job(d: &mut Decoder<'_>) -> Result<Job, MessageError> {
    let job = Job {
        argv: d.strs()?,
        env: d.strs()?,
        cwd: d.str()?,
        timeout_ms: d.u64()?,
        user: match d.u8()? {
            0 => None,
            1 => Some((d.u32()?, d.u32()?)),
            tag => {
                return Err(WireError::UnknownTag {
                    what: "user",
                    tag: tag.into(),
                }
                .into())
            }
        },
        isolation: decode_isolation(d)?,
        workdir: decode_flag(d, "workdir")?,
    };
    if job.argv.is_empty() {
        return Err(MessageError::EmptyArgv);
    }
    Ok(job)
}

fn encode_stream(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    }
}

fn decode_stream(tag: u8) -> Result<Stream, WireError> {
    match tag {
        1 => Ok(Stream::Stdout),
        2 => Ok(Stream::Stderr),
        tag => Err(WireError::UnknownTag {
            what: "stream",
            tag: tag.into(),
        }),
    }
}

fn digest(d: &mut Decoder<'_>) -> Result<[u8; 32], WireError> {
    let raw = d.bytes(32)?;
    raw.try_into().map_err(|_| WireError::Truncated)
}

// Kinds of host messages.
const EXEC: u8 = 1;
const KILL: u8 = 2;
const PUT_START: u8 = 3;
const PUT_DATA: u8 = 4;
const PUT_END: u8 = 5;
const GET: u8 = 6;
const SHUTDOWN: u8 = 7;
const MODULE_START: u8 = 8;
const MODULE_DATA: u8 = 9;
const MODULE_END: u8 = 10;
const MODULE_UNAVAILABLE: u8 = 11;

impl HostMessage {
    /// The message as a frame payload: a kind byte and its fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        match self {
            Self::Exec { id, job } => {
                e.u8(EXEC).u32(*id);
                encode_job(&mut e, job);
            }
            Self::Kill { id, signal } => {
                e.u8(KILL).u32(*id).i32(*signal);
            }
            Self::PutStart {
                id,
                path,
                mode,
                size,
                sha256,
            } => {
                e.u8(PUT_START)
                    .u32(*id)
                    .str(path)
                    .u32(*mode)
                    .u64(*size)
                    .bytes(sha256);
            }
            Self::PutData { id, data } => {
                e.u8(PUT_DATA).u32(*id).bytes(data);
            }
            Self::PutEnd { id } => {
                e.u8(PUT_END).u32(*id);
            }
            Self::Get { id, path } => {
                e.u8(GET).u32(*id).str(path);
            }
            Self::Shutdown => {
                e.u8(SHUTDOWN);
            }
            Self::ModuleStart { id, size, sha256 } => {
                e.u8(MODULE_START).u32(*id).u64(*size).bytes(sha256);
            }
            Self::ModuleData { id, data } => {
                e.u8(MODULE_DATA).u32(*id).bytes(data);
            }
            Self::ModuleEnd { id } => {
                e.u8(MODULE_END).u32(*id);
            }
            Self::ModuleUnavailable { id, message } => {
                e.u8(MODULE_UNAVAILABLE).u32(*id).str(message);
            }
        }
        e.finish()
    }

    /// Decodes a frame payload written by [`HostMessage::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut d = Decoder::new(bytes);
        let msg = match d.u8()? {
            EXEC => Self::Exec {
                id: d.u32()?,
                job: decode_job(&mut d)?,
            },
            KILL => Self::Kill {
                id: d.u32()?,
                signal: d.i32()?,
            },
            PUT_START => Self::PutStart {
                id: d.u32()?,
                path: d.str()?,
                mode: d.u32()?,
                size: d.u64()?,
                sha256: digest(&mut d)?,
            },
            PUT_DATA => Self::PutData {
                id: d.u32()?,
                data: d.bytes(MAX_FILE_CHUNK)?.to_vec(),
            },
            PUT_END => Self::PutEnd { id: d.u32()? },
            GET => Self::Get {
                id: d.u32()?,
                path: d.str()?,
            },
            SHUTDOWN => Self::Shutdown,
            MODULE_START => Self::ModuleStart {
                id: d.u32()?,
                size: d.u64()?,
                sha256: digest(&mut d)?,
            },
            MODULE_DATA => Self::ModuleData {
                id: d.u32()?,
                data: d.bytes(MAX_FILE_CHUNK)?.to_vec(),
            },
            MODULE_END => Self::ModuleEnd { id: d.u32()? },
            MODULE_UNAVAILABLE => Self::ModuleUnavailable {
                id: d.u32()?,
                message: d.str()?,
            },
            tag => {
                return Err(WireError::UnknownTag {
                    what: "host message",
                    tag: tag.into(),
                }
                .into())
            }
        };
        d.end()?;
        Ok(msg)
    }
}

// Kinds of guest messages.
const HELLO: u8 = 1;
const LOG: u8 = 2;
const OUTPUT: u8 = 3;
const EXIT: u8 = 4;
const FAILURE: u8 = 5;
const STARTED: u8 = 6;
const FILE_START: u8 = 7;
const FILE_DATA: u8 = 8;
const FILE_END: u8 = 9;
const DONE: u8 = 10;
const ERROR: u8 = 11;
const HEARTBEAT: u8 = 12;
const FETCH_MODULE: u8 = 13;

impl GuestMessage {
    /// The message as a frame payload: a kind byte and its fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        match self {
            Self::Hello {
                proto,
                agent_version,
                kernel_release,
                features,
            } => {
                e.u8(HELLO)
                    .u16(*proto)
                    .str(agent_version)
                    .str(kernel_release)
                    .strs(features);
            }
            Self::Log { line } => {
                e.u8(LOG).str(line);
            }
            Self::Started { id, pid } => {
                e.u8(STARTED).u32(*id).u32(*pid);
            }
            Self::Output { id, stream, data } => {
                e.u8(OUTPUT).u32(*id).u8(encode_stream(*stream)).bytes(data);
            }
            Self::Exit { id, status, usage } => {
                let (kind, value) = match status {
                    ExitStatus::Code(c) => (0, *c),
                    ExitStatus::Signal(s) => (1, *s),
                };
                e.u8(EXIT)
                    .u32(*id)
                    .u8(kind)
                    .i32(value)
                    .u64(usage.wall_us)
                    .u64(usage.user_us)
                    .u64(usage.sys_us)
                    .u64(usage.max_rss_kib);
            }
            Self::FileStart { id, size, mode } => {
                e.u8(FILE_START).u32(*id).u64(*size).u32(*mode);
            }
            Self::FileData { id, data } => {
                e.u8(FILE_DATA).u32(*id).bytes(data);
            }
            Self::FileEnd { id, sha256 } => {
                e.u8(FILE_END).u32(*id).bytes(sha256);
            }
            Self::Done { id } => {
                e.u8(DONE).u32(*id);
            }
            Self::Error { id, message } => {
                e.u8(ERROR).u32(*id).str(message);
            }
            Self::Heartbeat { uptime_ms } => {
                e.u8(HEARTBEAT).u64(*uptime_ms);
            }
            Self::Failure { stage, message } => {
                e.u8(FAILURE).str(stage).str(message);
            }
            Self::FetchModule { id, path } => {
                e.u8(FETCH_MODULE).u32(*id).str(path);
            }
        }
        e.finish()
    }

    /// Decodes a frame payload. A `Hello` of another protocol version is returned as is, so
    /// that the caller can name the version in its error.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut d = Decoder::new(bytes);
        let msg = match d.u8()? {
            HELLO => Self::Hello {
                proto: d.u16()?,
                agent_version: d.str()?,
                kernel_release: d.str()?,
                features: d.strs()?,
            },
            LOG => Self::Log { line: d.str()? },
            STARTED => Self::Started {
                id: d.u32()?,
                pid: d.u32()?,
            },
            OUTPUT => Self::Output {
                id: d.u32()?,
                stream: decode_stream(d.u8()?)?,
                data: d.bytes(MAX_OUTPUT_CHUNK)?.to_vec(),
            },
            EXIT => {
                let id = d.u32()?;
                let kind = d.u8()?;
                let value = d.i32()?;
                let status = match kind {
                    0 => ExitStatus::Code(value),
                    1 => ExitStatus::Signal(value),
                    tag => {
                        return Err(WireError::UnknownTag {
                            what: "exit",
                            tag: tag.into(),
                        }
                        .into())
                    }
                };
                Self::Exit {
                    id,
                    status,
                    usage: Usage {
                        wall_us: d.u64()?,
                        user_us: d.u64()?,
                        sys_us: d.u64()?,
                        max_rss_kib: d.u64()?,
                    },
                }
            }
            FILE_START => Self::FileStart {
                id: d.u32()?,
                size: d.u64()?,
                mode: d.u32()?,
            },
            FILE_DATA => Self::FileData {
                id: d.u32()?,
                data: d.bytes(MAX_FILE_CHUNK)?.to_vec(),
            },
            FILE_END => Self::FileEnd {
                id: d.u32()?,
                sha256: digest(&mut d)?,
            },
            DONE => Self::Done { id: d.u32()? },
            ERROR => Self::Error {
                id: d.u32()?,
                message: d.str()?,
            },
            HEARTBEAT => Self::Heartbeat {
                uptime_ms: d.u64()?,
            },
            FAILURE => Self::Failure {
                stage: d.str()?,
                message: d.str()?,
            },
            FETCH_MODULE => {
                let id = d.u32()?;
                let raw = d.bytes(MAX_MODULE_PATH)?;
                let path = String::from_utf8(raw.to_vec()).map_err(|_| WireError::BadUtf8)?;
                Self::FetchModule { id, path }
            }
            tag => {
                return Err(WireError::UnknownTag {
                    what: "message",
                    tag: tag.into(),
                }
                .into())
            }
        };
        d.end()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_all() -> Vec<GuestMessage> {
        vec![
            GuestMessage::Hello {
                proto: 3,
                agent_version: "0.1.0".into(),
                kernel_release: "6.1.0-56-cloud-amd64".into(),
                features: vec!["exec".into()],
            },
            GuestMessage::Log {
                line: "loaded vsock".into(),
            },
            GuestMessage::Started { id: 7, pid: 42 },
            GuestMessage::Output {
                id: 7,
                stream: Stream::Stderr,
                data: vec![0, 1, 2, 255],
            },
            GuestMessage::Exit {
                id: 7,
                status: ExitStatus::Signal(9),
                usage: Usage {
                    wall_us: 1,
                    user_us: 2,
                    sys_us: 3,
                    max_rss_kib: 4,
                },
            },
            GuestMessage::FileStart {
                id: 8,
                size: 3,
                mode: 0o644,
            },
            GuestMessage::FileData {
                id: 8,
                data: b"abc".to_vec(),
            },
            GuestMessage::FileEnd {
                id: 8,
                sha256: [9; 32],
            },
            GuestMessage::Done { id: 9 },
            GuestMessage::Error {
                id: 9,
                message: "no such file".into(),
            },
            GuestMessage::Heartbeat { uptime_ms: 1234 },
            GuestMessage::Failure {
                stage: "mount".into(),
                message: "no /proc".into(),
            },
            GuestMessage::FetchModule {
                id: 0x8000_0001,
                path: "kernel/drivers/net/veth.ko".into(),
            },
        ]
    }

    fn host_all() -> Vec<HostMessage> {
        vec![
            HostMessage::Exec {
                id: 1,
                job: Job::new(["uname", "-r"]),
            },
            HostMessage::Exec {
                id: 4,
                job: Job {
                    cwd: "/tmp/work".into(),
                    isolation: Some(Isolation::jail("j", false)),
                    workdir: true,
                    ..Job::new(["hostname"])
                },
            },
            HostMessage::Kill { id: 1, signal: 9 },
            HostMessage::PutStart {
                id: 2,
                path: "/tmp/x".into(),
                mode: 0o755,
                size: 5,
                sha256: [1; 32],
            },
            HostMessage::PutData {
                id: 2,
                data: b"hello".to_vec(),
            },
            HostMessage::PutEnd { id: 2 },
            HostMessage::Get {
                id: 3,
                path: "/etc/passwd".into(),
            },
            HostMessage::Shutdown,
            HostMessage::ModuleStart {
                id: 5,
                size: 3,
                sha256: [2; 32],
            },
            HostMessage::ModuleData {
                id: 5,
                data: b"elf".to_vec(),
            },
            HostMessage::ModuleEnd { id: 5 },
            HostMessage::ModuleUnavailable {
                id: 6,
                message: "no such module".into(),
            },
        ]
    }

    #[test]
    fn module_paths_from_the_guest_are_bounded() {
        let mut e = Encoder::new();
        e.u8(FETCH_MODULE)
            .u32(1)
            .bytes(&vec![b'a'; MAX_MODULE_PATH + 1]);
        assert!(GuestMessage::decode(&e.finish()).is_err());
    }

    #[test]
    fn messages_round_trip() {
        for msg in guest_all() {
            assert_eq!(GuestMessage::decode(&msg.encode()).unwrap(), msg);
        }
        for msg in host_all() {
            assert_eq!(HostMessage::decode(&msg.encode()).unwrap(), msg);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for msg in guest_all() {
            let bytes = msg.encode();
            for cut in 0..bytes.len() {
                assert!(
                    GuestMessage::decode(&bytes[..cut]).is_err(),
                    "{msg:?} at {cut}"
                );
            }
        }
        for msg in host_all() {
            let bytes = msg.encode();
            for cut in 0..bytes.len() {
                assert!(
                    HostMessage::decode(&bytes[..cut]).is_err(),
                    "{msg:?} at {cut}"
                );
            }
        }
    }

    #[test]
    fn unknown_kinds_oversized_chunks_and_bad_digests_are_refused() {
        assert!(matches!(
            GuestMessage::decode(&[99]),
            Err(MessageError::Wire(WireError::UnknownTag { tag: 99, .. }))
        ));
        assert!(matches!(
            HostMessage::decode(&[0]),
            Err(MessageError::Wire(WireError::UnknownTag { tag: 0, .. }))
        ));
        let mut e = Encoder::new();
        e.u8(OUTPUT)
            .u32(1)
            .u8(1)
            .bytes(&vec![0; MAX_OUTPUT_CHUNK + 1]);
        assert!(matches!(
            GuestMessage::decode(&e.finish()),
            Err(MessageError::Wire(WireError::TooLong { .. }))
        ));
        let mut e = Encoder::new();
        e.u8(PUT_DATA).u32(1).bytes(&vec![0; MAX_FILE_CHUNK + 1]);
        assert!(HostMessage::decode(&e.finish()).is_err());
        let mut e = Encoder::new();
        e.u8(FILE_END).u32(1).bytes(&[0; 31]);
        assert!(GuestMessage::decode(&e.finish()).is_err());
        let mut e = Encoder::new();
        e.u8(EXEC).u32(1);
        encode_job(&mut e, &Job::default());
        assert_eq!(
            HostMessage::decode(&e.finish()),
            Err(MessageError::EmptyArgv)
        );
    }

    #[test]
    fn jobs_round_trip_and_check_their_version() {
        let job = Job {
            argv: vec!["uname".into(), "-r".into()],
            env: vec!["A=b".into()],
            cwd: "/tmp".into(),
            timeout_ms: 5000,
            user: Some((65534, 65534)),
            isolation: Some(Isolation::jail("jail-1", true)),
            workdir: true,
        };
        assert_eq!(Job::decode(&job.encode()).unwrap(), job);
        let unknown = Job {
            isolation: Some(Isolation {
                namespaces: 1 << 31 | NS_PID,
                hostname: String::new(),
            }),
            ..Job::new(["true"])
        };
        let back = Job::decode(&unknown.encode()).unwrap();
        assert_eq!(
            back, unknown,
            "unknown bits are carried for the agent to refuse"
        );
        assert_eq!(back.isolation.unwrap().unknown_namespaces(), 1 << 31);
        let mut bytes = job.encode();
        bytes[0] = 9;
        assert_eq!(Job::decode(&bytes), Err(MessageError::Version(9)));
        assert_eq!(
            Job::decode(&Job::default().encode()),
            Err(MessageError::EmptyArgv)
        );
    }

    #[test]
    fn isolation_fields_are_bounded_and_tagged() {
        let exec = |isolation: &dyn Fn(&mut Encoder), workdir: u8| {
            let mut e = Encoder::new();
            e.u8(EXEC)
                .u32(1)
                .strs(&["true"])
                .strs::<&str>(&[])
                .str("/w")
                .u64(0)
                .u8(0);
            isolation(&mut e);
            e.u8(workdir);
            HostMessage::decode(&e.finish())
        };
        let longest = "h".repeat(MAX_HOSTNAME);
        let ok = exec(
            &|e| {
                e.u8(1).u32(NS_UTS).str(&longest);
            },
            1,
        )
        .unwrap();
        let HostMessage::Exec { job, .. } = ok else {
            panic!("not an exec: {ok:?}");
        };
        assert_eq!(job.isolation.unwrap().hostname, longest);
        assert!(job.workdir);
        let too_long = "h".repeat(MAX_HOSTNAME + 1);
        assert_eq!(
            exec(
                &|e| {
                    e.u8(1).u32(NS_UTS).str(&too_long);
                },
                0
            ),
            Err(MessageError::Wire(WireError::TooLong {
                len: MAX_HOSTNAME + 1,
                max: MAX_HOSTNAME
            }))
        );
        assert_eq!(
            exec(
                &|e| {
                    e.u8(1).u32(NS_UTS).bytes(&[0xff]);
                },
                0
            ),
            Err(MessageError::Wire(WireError::BadUtf8))
        );
        assert!(matches!(
            exec(
                &|e| {
                    e.u8(2);
                },
                0
            ),
            Err(MessageError::Wire(WireError::UnknownTag {
                what: "isolation",
                tag: 2
            }))
        ));
        assert!(matches!(
            exec(
                &|e| {
                    e.u8(0);
                },
                2
            ),
            Err(MessageError::Wire(WireError::UnknownTag {
                what: "workdir",
                tag: 2
            }))
        ));
    }

    #[test]
    fn jails_name_their_namespaces() {
        assert_eq!(
            Isolation::jail("a", false).namespaces,
            NS_MOUNT | NS_PID | NS_UTS | NS_IPC
        );
        assert_eq!(Isolation::jail("a", true).namespaces, NS_ALL);
        assert_eq!(Isolation::jail("a", true).unknown_namespaces(), 0);
    }

    #[test]
    fn shell_codes_follow_the_shell() {
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
    }
}
