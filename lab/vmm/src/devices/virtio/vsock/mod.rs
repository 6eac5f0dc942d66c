//! The lab's virtio-vsock device (virtio spec 1.x, device id 19): a stream socket between the
//! guest (its CID from the config space, 3 by default) and the host (CID 2).
//!
//! ```text
//!  guest driver ──rx/tx/event virtqueues──► VsockDevice ──VsockBackend──► VsockMuxer ──► Unix sockets
//!   (untrusted)      packet.rs checks         device.rs      (trait)       muxer.rs + csm.rs
//!                    every chain              event_handler.rs
//! ```
//!
//! - [`chain`] walks descriptor chains itself and checks every index, length and address
//!   against guest memory before a byte is copied; [`packet`] copies the header and payload
//!   out of (or into) guest memory once, so the guest cannot change them after the checks.
//! - [`device`] holds features, the config space and the device's health; [`event_handler`]
//!   has one `handle_*` per event source (rx, tx and event queue kicks, backend readiness).
//! - [`muxer`] is the host side, Firecracker's "hybrid vsock" over Unix sockets, and [`csm`] is
//!   one connection's state machine with its credit accounting.
//!
//! The guest is untrusted. A descriptor loop, an out-of-range descriptor index, a buffer
//! outside guest RAM, a bad indirect table (not negotiated, nested, with NEXT, of a bad size or
//! outside RAM), a buffer of the wrong direction, a header whose `len` exceeds the chain or
//! 64 KiB, an avail index more than the queue size ahead, or a queue reconfigured after
//! DRIVER_OK breaks the device: it records the first error, closes its host sockets and
//! processes nothing more. Vsock-level oddities (unknown
//! connection, unknown op, credit overrun) are answered the way Linux does, with an RST on
//! that connection.
//!
//! The host side ("hybrid vsock", as in Firecracker):
//! - one Unix socket per VM at `uds_path`. A host process connects, writes `CONNECT <port>\n`
//!   and, once the guest accepts, reads `OK <host_port>\n`; from then on the stream is the
//!   connection to the guest's `<port>`. If nothing listens on that port in the guest, the
//!   stream is closed without a reply;
//! - a guest connection to host port `P` is forwarded to the Unix socket `<uds_path>_P` if
//!   something listens there, and reset otherwise;
//! - shutdowns are passed on in both directions: EOF from the host stream becomes a vsock
//!   SHUTDOWN(SEND), a guest SHUTDOWN(SEND) becomes `shutdown(SHUT_WR)` on the host stream
//!   once all its data is written, and the connection ends with an RST when both sides are
//!   done (or when either side resets).

pub mod chain;
pub mod csm;
pub mod device;
pub mod event_handler;
pub mod muxer;
pub mod packet;
#[cfg(test)]
pub(crate) mod test_utils;

use std::os::unix::io::AsRawFd;

pub use device::{QueueWrite, VsockDevice};
pub use event_handler::Notify;
pub use muxer::{MuxerError, VsockMuxer};
pub use packet::{PacketError, VsockHeader};

use vmm_sys_util::epoll::EventSet;

/// The virtio device id of a vsock device.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Index of the receive queue (device to driver).
pub const RXQ: usize = 0;
/// Index of the transmit queue (driver to device).
pub const TXQ: usize = 1;
/// Index of the event queue (transport reset events; the lab never sends any).
pub const EVQ: usize = 2;
/// The number of queues.
pub const NUM_QUEUES: usize = 3;
/// The largest queue size the device accepts (QEMU's vhost-user-vsock uses 1024).
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// The names of the queues, for messages.
pub const QUEUE_NAMES: [&str; NUM_QUEUES] = ["rx", "tx", "event"];

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// The guest's CID unless configured otherwise.
pub const DEFAULT_GUEST_CID: u64 = 3;
/// The largest payload one packet may carry (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_DATA: u32 = 64 * 1024;

/// `virtio_vsock_hdr.type` of a stream socket, the only type the device serves.
pub const TYPE_STREAM: u16 = 1;

/// `virtio_vsock_hdr.op` values.
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset (refused or terminated).
    pub const RST: u16 = 3;
    /// The sender will no longer receive and/or send (see the shutdown flags).
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// The sender's buffer space changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// The sender asks for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Buffer space the host side of each connection offers the guest (`buf_alloc`): data the
/// host stream does not take at once waits in a buffer this big.
pub const CONN_BUF_SIZE: u32 = 256 * 1024;
/// The most connections one device keeps open.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a host-initiated connection waits for the guest to accept, once the request has
/// been delivered.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a closing connection may take to flush before it is reset.
pub const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the vsock device broke or refused to start. Any of these ends the device: the guest
/// gets no more service from it and its host connections are closed.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The configured guest CID is one the vsock address space reserves.
    #[error("guest cid {0} is reserved (it must lie in 3..=4294967294)")]
    InvalidCid(u64),
    /// The driver acknowledged features the device never offered.
    #[error("driver acknowledged features the device does not offer ({0:#x})")]
    UnknownFeatures(u64),
    /// A queue was started that is not ready or whose rings lie outside guest memory.
    #[error("{queue} queue is not ready or its rings lie outside guest memory")]
    QueueInvalid {
        /// The queue's name.
        queue: &'static str,
    },
    /// A queue's size or ring addresses changed after DRIVER_OK.
    #[error("{queue} queue was reconfigured after driver_ok")]
    QueueReconfigured {
        /// The queue's name.
        queue: &'static str,
    },
    /// The driver published more new buffers than the queue holds.
    #[error("avail index of the {queue} queue is {ahead} entries ahead of the device, more than the queue size {size}")]
    AvailIndexAhead {
        /// The queue's name.
        queue: &'static str,
        /// How far ahead the driver's index is.
        ahead: u16,
        /// The queue's size.
        size: u16,
    },
    /// A descriptor chain broke the rules.
    #[error("invalid descriptor chain on the {queue} queue")]
    Packet {
        /// The queue's name.
        queue: &'static str,
        /// What was wrong with it.
        #[source]
        source: PacketError,
    },
    /// Reading or writing a queue's rings failed.
    #[error("failed to access the {queue} queue")]
    Queue {
        /// The queue's name.
        queue: &'static str,
        /// The queue library's error.
        #[source]
        source: virtio_queue::Error,
    },
    /// The device broke earlier and serves nothing more.
    #[error("device is broken: {reason}")]
    Broken {
        /// The first error, as text.
        reason: String,
    },
}

/// The host side of a vsock device: where guest packets go and host packets come from. The
/// device calls it only with checked packets. It is driven by readiness: the device polls the
/// backend's fd (for the muxer, a nested epoll fd) and calls [`VsockBackend::notify`].
pub trait VsockBackend: AsRawFd + Send {
    /// Takes one packet from the guest; `data` is its payload (`hdr.len` bytes, checked).
    fn send_pkt(&mut self, hdr: &VsockHeader, data: &[u8]);

    /// Produces the next packet for the guest, its payload written to the start of `data`
    /// (which is no longer than the guest's buffer); the header's `len` says how much.
    fn recv_pkt(&mut self, data: &mut [u8]) -> Option<VsockHeader>;

    /// Whether [`VsockBackend::recv_pkt`] may produce a packet.
    fn has_pending_rx(&self) -> bool;

    /// The backend's fd became ready with `evset`.
    fn notify(&mut self, evset: EventSet);

    /// The device broke: close every host connection (and nothing else).
    fn close_all(&mut self);
}
