//! The agent channel: the serial port (raw mode) that carries framed messages between lab and
//! guest-init. One reader (the request loop) and a cloneable [`Sender`] shared by the threads
//! that report (execs, gets, the heartbeat); a frame is written whole under a lock, so frames
//! from different threads never interleave.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex};

use lab_proto::{write_frame, GuestMessage};

use crate::sys;

/// Opens `path` in raw mode; returns its reading end and a sender.
pub fn open(path: &str) -> io::Result<(File, Sender)> {
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

    /// Waits until everything written has left the UART.
    pub fn drain(&self) {
        if let Ok(port) = self.port.lock() {
            // SAFETY: the fd is open while `port` is borrowed; tcdrain takes no pointers.
            unsafe { libc::tcdrain(port.as_raw_fd()) };
        }
    }
}
