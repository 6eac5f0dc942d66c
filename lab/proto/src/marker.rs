//! The console markers: single lines guest-init prints on the kernel console so that a person
//! reading a console log, and lab scanning it, can see where the agent got to.
//!
//! ```text
//! @@lab/1 ready agent=0.1.0 kernel=6.1.0-56-cloud-amd64
//! @@lab/1 exit code=0          (or: signal=9)
//! @@lab/1 failed stage=mount: cannot mount /proc: ENODEV
//! ```
//!
//! The number after `@@lab/` is [`crate::MARKER_VERSION`]; a marker of another version is
//! reported as such, so that a stale guest agent is named instead of timing out.

use crate::message::ExitStatus;

/// The text every marker starts with.
pub const PREFIX: &str = "@@lab/";

/// A parsed console marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// The agent is up and about to take its job.
    Ready {
        /// guest-init's version.
        agent: String,
        /// The kernel release.
        kernel: String,
    },
    /// The job ended.
    Exit(ExitStatus),
    /// guest-init failed at `stage`.
    Failed {
        /// The step.
        stage: String,
        /// What happened.
        message: String,
    },
    /// A marker of a protocol version this lab does not speak.
    OtherVersion(String),
}

impl Marker {
    /// The marker as the line guest-init prints (no newline).
    pub fn render(&self) -> String {
        let v = crate::MARKER_VERSION;
        match self {
            Self::Ready { agent, kernel } => {
                format!("{PREFIX}{v} ready agent={agent} kernel={kernel}")
            }
            Self::Exit(ExitStatus::Code(c)) => format!("{PREFIX}{v} exit code={c}"),
            Self::Exit(ExitStatus::Signal(s)) => format!("{PREFIX}{v} exit signal={s}"),
            Self::Failed { stage, message } => {
                format!("{PREFIX}{v} failed stage={stage}: {message}")
            }
            Self::OtherVersion(version) => format!("{PREFIX}{version}"),
        }
    }

    /// Finds a marker in a console line. The marker may follow other text on the line (a kernel
    /// message printed into the middle of it); trailing `\r` is ignored.
    pub fn parse(line: &str) -> Option<Self> {
        let at = line.find(PREFIX)?;
        let rest = line[at + PREFIX.len()..].trim_end_matches(['\r', '\n']);
        let (version, body) = rest.split_once(' ').unwrap_or((rest, ""));
        if version != crate::MARKER_VERSION.to_string() {
            return Some(Self::OtherVersion(version.to_string()));
        }
        let (event, fields) = body.split_once(' ').unwrap_or((body, ""));
        match event {
            "ready" => {
                let mut agent = None;
                let mut kernel = None;
                for field in fields.split_whitespace() {
                    match field.split_once('=') {
                        Some(("agent", v)) => agent = Some(v.to_string()),
                        Some(("kernel", v)) => kernel = Some(v.to_string()),
                        _ => {}
                    }
                }
                Some(Self::Ready {
                    agent: agent?,
                    kernel: kernel?,
                })
            }
            "exit" => {
                let (key, value) = fields.trim().split_once('=')?;
                let value: i32 = value.parse().ok()?;
                match key {
                    "code" => Some(Self::Exit(ExitStatus::Code(value))),
                    "signal" => Some(Self::Exit(ExitStatus::Signal(value))),
                    _ => None,
                }
            }
            "failed" => {
                let fields = fields.strip_prefix("stage=")?;
                let (stage, message) = fields.split_once(": ").unwrap_or((fields, ""));
                Some(Self::Failed {
                    stage: stage.to_string(),
                    message: message.to_string(),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        for m in [
            Marker::Ready {
                agent: "0.1.0".into(),
                kernel: "6.12.117+deb12-cloud-amd64".into(),
            },
            Marker::Exit(ExitStatus::Code(-1)),
            Marker::Exit(ExitStatus::Signal(9)),
            Marker::Failed {
                stage: "mount".into(),
                message: "cannot mount /proc: x: y".into(),
            },
        ] {
            assert_eq!(Marker::parse(&m.render()), Some(m));
        }
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<Marker>)] = &[
            ("", None),
            ("[    0.5] Run /init as init process", None),
            (
                "[ 1.2] random: crng init done@@lab/1 exit code=3\r",
                Some(Marker::Exit(ExitStatus::Code(3))),
            ),
            ("@@lab/1 exit code=x", None),
            ("@@lab/1 exit pid=3", None),
            ("@@lab/1 ready agent=1", None),
            ("@@lab/1 bogus", None),
            (
                "@@lab/2 ready agent=9 kernel=k",
                Some(Marker::OtherVersion("2".into())),
            ),
            (
                "@@lab/1 failed stage=job",
                Some(Marker::Failed {
                    stage: "job".into(),
                    message: String::new(),
                }),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&Marker::parse(line), want, "{line:?}");
        }
    }
}
