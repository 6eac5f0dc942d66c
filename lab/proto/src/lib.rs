//! The lab's host ↔ guest-agent protocol: length-prefixed, versioned frames carrying the job,
//! its output and its exit; and the human-readable markers guest-init prints on the console.
//!
//! Everything decoded here may come from an untrusted guest: every length is bounded and every
//! read is checked, so a hostile or broken guest yields an error, never a panic or a huge
//! allocation.
#![forbid(unsafe_code)]

pub mod frame;
pub mod glob;
pub mod marker;
pub mod message;
pub mod wire;

pub use frame::{read_frame, write_frame, FrameError, MAX_FRAME};
pub use marker::Marker;
pub use message::{ExitStatus, GuestMessage, HostMessage, Isolation, Job, Stream, Usage};

/// The protocol version spoken by this build over the agent channel.
pub const PROTO_VERSION: u16 = 4;

/// The version of the console markers' format (independent of the channel protocol).
pub const MARKER_VERSION: u16 = 1;

/// Where guest-init looks for its job inside the initramfs.
pub const JOB_PATH: &str = "/lab/job";

/// The serial device carrying agent frames (the second UART; the first is the kernel console).
pub const DEFAULT_CHANNEL: &str = "/dev/ttyS1";
