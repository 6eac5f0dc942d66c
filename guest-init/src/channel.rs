//! The agent channel: the stream that carries framed messages between lab and guest-init — a
//! virtio-vsock connection to the host, or a serial port in raw mode. One reader (the request loop) and a cloneable [`Sender`] shared by the threads
//! that report (execs, gets, the heartbeat); a frame is written whole under a lock, so frames
//! from different threads never interleave.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex};

use lab_proto::{write_frame, GuestMessage};

use crate::sys;

/// Where the channel is, from `lab.channel=` on the kernel command line: `vsock:PORT` (a
/// connection to the host, CID 2) or a serial device path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Connect to the host's vsock `port`.
    Vsock(u32),
    /// A serial device.
    Serial(String),
}

impl Endpoint {
    /// Parses the parameter's value.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.strip_prefix("vsock:") {
            Some(port) => port
                .parse()
                .map(Self::Vsock)
                .map_err(|_| format!("bad vsock port in lab.channel={value}")),
            None if value.starts_with('/') => Ok(Self::Serial(value.to_string())),
            None => Err(format!(
                "lab.channel={value}: expected vsock:PORT or a device path"
            )),
        }
    }
}

/// The host's vsock context id.
const HOST_CID: u32 = 2;

/// Opens the channel; returns its reading end and a sender.
pub fn open(endpoint: &Endpoint) -> io::Result<(File, Sender)> {
    match endpoint {
        Endpoint::Serial(path) => open_serial(path),
        Endpoint::Vsock(port) => {
            let sock = File::from(sys::vsock_connect(HOST_CID, *port)?);
            let reader = sock.try_clone()?;
            Ok((
                reader,
                Sender {
                    port: Arc::new(Mutex::new(sock)),
                },
            ))
        }
    }
}

/// Opens serial device `path` in raw mode.
fn open_serial(path: &str) -> io::Result<(File, Sender)> {
    let port = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    let fd: OwnedFd = port.try_clone()?.into();
    sys::make_raw(&fd)?;
    let reader = port.try_clone()?;
    Ok((
        reader,
        Sender {
            port: Arc::new(Mutex::new(port)),
        },
    ))
}

/// Sends messages to lab; clones share the port.
#[derive(Debug, Clone)]
pub struct Sender {
    port: Arc<Mutex<File>>,
}

impl Sender {
    /// Sends one message.
    pub fn send(&self, msg: &GuestMessage) -> io::Result<()> {
        let mut port = self
            .port
            .lock()
            .map_err(|_| io::Error::other("channel lock poisoned"))?;
        write_frame(&mut *port, &msg.encode()).map_err(|e| match e {
            lab_proto::FrameError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        })
    }

    /// Waits until everything written has left a UART (a no-op on sockets, whose writes are
    /// complete when they return).
    pub fn drain(&self) {
        if let Ok(port) = self.port.lock() {
            // SAFETY: the fd is open while `port` is borrowed; tcdrain takes no pointers and
            // fails harmlessly (ENOTTY) on a socket.
            unsafe { libc::tcdrain(port.as_raw_fd()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(Endpoint::parse("vsock:1024"), Ok(Endpoint::Vsock(1024)));
        assert_eq!(
            Endpoint::parse("/dev/ttyS1"),
            Ok(Endpoint::Serial("/dev/ttyS1".into()))
        );
        assert!(Endpoint::parse("vsock:x").is_err());
        assert!(Endpoint::parse("ttyS1").is_err());
    }
}
