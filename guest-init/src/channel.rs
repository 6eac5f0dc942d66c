//! The agent channel: the serial port that carries framed messages to lab, in raw mode.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use lab_proto::{write_frame, GuestMessage};

use crate::sys;

/// The open channel.
#[derive(Debug)]
pub struct Channel {
    port: File,
}

impl Channel {
    /// Opens `path` and puts it in raw mode.
    pub fn open(path: &str) -> io::Result<Self> {
        let port = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)?;
        let fd: OwnedFd = port.try_clone()?.into();
        sys::make_raw(&fd)?;
        Ok(Self { port })
    }

    /// Sends one message.
    pub fn send(&mut self, msg: &GuestMessage) -> io::Result<()> {
        write_frame(&mut self.port, &msg.encode()).map_err(|e| match e {
            lab_proto::FrameError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        })
    }

    /// Waits until everything written has left the UART.
    pub fn drain(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is open for the lifetime of `self.port`; tcdrain takes no pointers.
        unsafe { libc::tcdrain(self.port.as_raw_fd()) };
    }
}
