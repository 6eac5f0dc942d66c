//! The messages: the job lab gives the guest, and what the guest agent reports back.

use crate::wire::{Decoder, Encoder, WireError};

/// The most bytes of output carried by one [`GuestMessage::Output`].
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;

/// A command for the guest to run: the job of a boot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    /// The program and its arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Extra environment, `KEY=VALUE`, on top of guest-init's base environment.
    pub env: Vec<String>,
    /// The working directory (empty: `/`).
    pub cwd: String,
    /// Timeout in milliseconds enforced by guest-init (0: none; the host enforces its own).
    pub timeout_ms: u64,
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
        e.u16(crate::PROTO_VERSION)
            .strs(&self.argv)
            .strs(&self.env)
            .str(&self.cwd)
            .u64(self.timeout_ms);
        e.finish()
    }

    /// Decodes a job written by [`Job::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut d = Decoder::new(bytes);
        let version = d.u16()?;
        if version != crate::PROTO_VERSION {
            return Err(MessageError::Version(version));
        }
        let job = Self {
            argv: d.strs()?,
            env: d.strs()?,
            cwd: d.str()?,
            timeout_ms: d.u64()?,
        };
        d.end()?;
        if job.argv.is_empty() {
            return Err(MessageError::EmptyArgv);
        }
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
    /// Output of the job, in the order it was read.
    Output {
        /// Which stream.
        stream: Stream,
        /// The bytes (at most [`MAX_OUTPUT_CHUNK`]).
        data: Vec<u8>,
    },
    /// The job ended.
    Exit {
        /// How.
        status: ExitStatus,
        /// Wall time of the job in microseconds.
        wall_us: u64,
        /// User CPU time in microseconds.
        user_us: u64,
        /// System CPU time in microseconds.
        sys_us: u64,
        /// Peak resident set size in KiB.
        max_rss_kib: u64,
    },
    /// guest-init could not do its part: the lab failed, not the job.
    Failure {
        /// The step that failed ("mount", "job", "spawn", …).
        stage: String,
        /// What happened.
        message: String,
    },
}

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

const HELLO: u8 = 1;
const LOG: u8 = 2;
const OUTPUT: u8 = 3;
const EXIT: u8 = 4;
const FAILURE: u8 = 5;

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
            Self::Output { stream, data } => {
                let s = match stream {
                    Stream::Stdout => 1,
                    Stream::Stderr => 2,
                };
                e.u8(OUTPUT).u8(s).bytes(data);
            }
            Self::Exit {
                status,
                wall_us,
                user_us,
                sys_us,
                max_rss_kib,
            } => {
                let (kind, value) = match status {
                    ExitStatus::Code(c) => (0, *c),
                    ExitStatus::Signal(s) => (1, *s),
                };
                e.u8(EXIT)
                    .u8(kind)
                    .i32(value)
                    .u64(*wall_us)
                    .u64(*user_us)
                    .u64(*sys_us)
                    .u64(*max_rss_kib);
            }
            Self::Failure { stage, message } => {
                e.u8(FAILURE).str(stage).str(message);
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
            OUTPUT => {
                let stream = match d.u8()? {
                    1 => Stream::Stdout,
                    2 => Stream::Stderr,
                    tag => {
                        return Err(WireError::UnknownTag {
                            what: "stream",
                            tag: tag.into(),
                        }
                        .into())
                    }
                };
                let data = d.bytes(MAX_OUTPUT_CHUNK)?.to_vec();
                Self::Output { stream, data }
            }
            EXIT => {
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
                    status,
                    wall_us: d.u64()?,
                    user_us: d.u64()?,
                    sys_us: d.u64()?,
                    max_rss_kib: d.u64()?,
                }
            }
            FAILURE => Self::Failure {
                stage: d.str()?,
                message: d.str()?,
            },
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

    fn all() -> Vec<GuestMessage> {
        vec![
            GuestMessage::Hello {
                proto: 1,
                agent_version: "0.1.0".into(),
                kernel_release: "6.1.0-56-cloud-amd64".into(),
                features: vec!["exec".into()],
            },
            GuestMessage::Log {
                line: "loaded vsock".into(),
            },
            GuestMessage::Output {
                stream: Stream::Stderr,
                data: vec![0, 1, 2, 255],
            },
            GuestMessage::Exit {
                status: ExitStatus::Signal(9),
                wall_us: 1,
                user_us: 2,
                sys_us: 3,
                max_rss_kib: 4,
            },
            GuestMessage::Failure {
                stage: "mount".into(),
                message: "no /proc".into(),
            },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for msg in all() {
            assert_eq!(GuestMessage::decode(&msg.encode()).unwrap(), msg);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for msg in all() {
            let bytes = msg.encode();
            for cut in 0..bytes.len() {
                assert!(
                    GuestMessage::decode(&bytes[..cut]).is_err(),
                    "{msg:?} at {cut}"
                );
            }
        }
    }

    #[test]
    fn unknown_kinds_and_oversized_output_are_refused() {
        assert!(matches!(
            GuestMessage::decode(&[99]),
            Err(MessageError::Wire(WireError::UnknownTag { tag: 99, .. }))
        ));
        let mut e = Encoder::new();
        e.u8(OUTPUT).u8(1).bytes(&vec![0; MAX_OUTPUT_CHUNK + 1]);
        assert!(matches!(
            GuestMessage::decode(&e.finish()),
            Err(MessageError::Wire(WireError::TooLong { .. }))
        ));
    }

    #[test]
    fn jobs_round_trip_and_check_their_version() {
        let job = Job {
            argv: vec!["uname".into(), "-r".into()],
            env: vec!["A=b".into()],
            cwd: "/tmp".into(),
            timeout_ms: 5000,
        };
        assert_eq!(Job::decode(&job.encode()).unwrap(), job);
        let mut bytes = job.encode();
        bytes[0] = 9;
        assert_eq!(Job::decode(&bytes), Err(MessageError::Version(9)));
        assert_eq!(
            Job::decode(&Job::default().encode()),
            Err(MessageError::EmptyArgv)
        );
    }

    #[test]
    fn shell_codes_follow_the_shell() {
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
    }
}
