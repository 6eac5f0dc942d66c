//! One vsock connection: its state machine (REQUEST/RESPONSE, data, SHUTDOWN, RST) and its
//! credit accounting, between a guest AF_VSOCK socket and a host stream.
//!
//! Credit (virtio spec 5.10.6.3): every packet carries the sender's `buf_alloc` (its receive
//! buffer) and `fwd_cnt` (bytes it has consumed, ever). A sender may have at most
//! `peer_buf_alloc - (sent - peer_fwd_cnt)` bytes in flight.
//! - Guest to host: the host side offers [`CONN_BUF_SIZE`]. What the host stream does not take
//!   at once waits in `tx_buf`; a guest that sends past its credit is reset. `fwd_cnt` counts
//!   bytes written to the host stream, and a CREDIT_UPDATE goes out once half the guest's
//!   window has been forwarded since it last heard from us (or when it asks); the window is
//!   the smaller of our `buf_alloc` and the guest's own, which Linux caps its sends at.
//! - Host to guest: the host stream is read only while the guest has credit; at zero credit the
//!   connection sends one CREDIT_REQUEST and waits for any packet that carries new credit.
//!
//! Shutdown is passed on per direction: EOF on the host stream becomes SHUTDOWN(SEND) to the
//! guest; a guest SHUTDOWN(SEND) becomes `shutdown(SHUT_WR)` on the host stream once `tx_buf`
//! is flushed; when neither side will send any more (or the guest will neither send nor
//! receive) the connection sends RST, which ends it. Any stream error resets it at once.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use vmm_sys_util::epoll::EventSet;

use super::{
    op, VsockHeader, CONN_BUF_SIZE, HOST_CID, REQUEST_TIMEOUT, SHUTDOWN_RCV, SHUTDOWN_SEND,
    SHUTDOWN_TIMEOUT, TYPE_STREAM,
};

/// The host end of a connection: a non-blocking stream.
pub trait ConnStream: Read + Write + AsRawFd + Send {
    /// Shuts down one or both directions.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

impl ConnStream for UnixStream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        UnixStream::shutdown(self, how)
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: REQUEST queued or sent, waiting for the guest's RESPONSE.
    LocalInit,
    /// Guest-initiated: the host end is connected and RESPONSE is queued.
    PeerInit,
    /// Data may flow (as far as the shutdown flags allow).
    Established,
    /// Reset: RST is queued; the connection ends once it is sent.
    Killed,
}

/// Packets a connection owes the guest, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PendingRx(u8);

impl PendingRx {
    const REQUEST: u8 = 1;
    const RESPONSE: u8 = 2;
    const RST: u8 = 4;
    const RW: u8 = 8;
    const CREDIT_UPDATE: u8 = 16;

    fn insert(&mut self, bit: u8) {
        self.0 |= bit;
    }

    fn contains(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    fn take(&mut self, bit: u8) -> bool {
        let had = self.contains(bit);
        self.0 &= !bit;
        had
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One connection between a guest port and a host stream.
#[derive(Debug)]
pub struct VsockConnection<S> {
    state: ConnState,
    peer_cid: u64,
    local_port: u32,
    peer_port: u32,
    stream: S,
    /// Guest data the host stream has not taken yet (at most [`CONN_BUF_SIZE`]).
    tx_buf: VecDeque<u8>,
    /// Bytes of guest data written to the host stream, ever.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    last_fwd_cnt_to_peer: Wrapping<u32>,
    /// The guest's receive buffer size.
    peer_buf_alloc: u32,
    /// Bytes the guest has consumed, ever.
    peer_fwd_cnt: Wrapping<u32>,
    /// Bytes sent to the guest, ever.
    rx_cnt: Wrapping<u32>,
    /// A CREDIT_REQUEST went out and no new credit has come since.
    credit_requested: bool,
    /// The host stream reached EOF (SHUTDOWN(SEND) goes to the guest).
    host_eof: bool,
    /// The host stream hung up or failed: nothing more can be learnt from polling it.
    host_hup: bool,
    /// The host stream's write side is shut (after the guest's SHUTDOWN(SEND)).
    host_write_shut: bool,
    /// The guest will receive no more.
    peer_no_recv: bool,
    /// The guest will send no more.
    peer_no_send: bool,
    pending: PendingRx,
    /// When the connection is reset if it has not moved on by then.
    expiry: Option<Instant>,
}

impl<S: ConnStream> VsockConnection<S> {
    /// A host-initiated connection to guest port `peer_port`; the first packet is the REQUEST.
    pub fn new_local_init(stream: S, peer_cid: u64, local_port: u32, peer_port: u32) -> Self {
        let mut c = Self::new(
            stream,
            ConnState::LocalInit,
            peer_cid,
            local_port,
            peer_port,
        );
        c.pending.insert(PendingRx::REQUEST);
        c
    }

    /// A guest-initiated connection, accepted on the host; the first packet is the RESPONSE.
    pub fn new_peer_init(stream: S, request: &VsockHeader) -> Self {
        let mut c = Self::new(
            stream,
            ConnState::PeerInit,
            request.src_cid,
            request.dst_port,
            request.src_port,
        );
        c.peer_buf_alloc = request.buf_alloc;
        c.peer_fwd_cnt = Wrapping(request.fwd_cnt);
        c.pending.insert(PendingRx::RESPONSE);
        c
    }

    fn new(stream: S, state: ConnState, peer_cid: u64, local_port: u32, peer_port: u32) -> Self {
        Self {
            state,
            peer_cid,
            local_port,
            peer_port,
            stream,
            tx_buf: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_to_peer: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            credit_requested: false,
            host_eof: false,
            host_hup: false,
            host_write_shut: false,
            peer_no_recv: false,
            peer_no_send: false,
            pending: PendingRx::default(),
            expiry: None,
        }
    }

    /// The connection's state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The host stream.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// When the connection must be reset unless it moves on first.
    pub fn expiry(&self) -> Option<Instant> {
        self.expiry
    }

    /// Whether the connection owes the guest a packet.
    pub fn has_pending_rx(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Resets the connection: RST goes to the guest next, the host stream is shut, and any
    /// buffered guest data is dropped.
    pub fn kill(&mut self) {
        self.state = ConnState::Killed;
        self.pending = PendingRx::default();
        self.pending.insert(PendingRx::RST);
        self.tx_buf.clear();
        self.expiry = None;
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// How much more the guest can take.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the guest's idea of our free buffer space is stale enough to update: once
    /// half its window has been forwarded since it last heard from us. Its window is our
    /// `buf_alloc`, or its own `buf_alloc` if smaller: Linux caps what it keeps in flight at
    /// its own buffer size (seen with Debian 6.1.192; `virtio_transport_tx_buf_alloc`), so
    /// a guest with the default 256 KiB stops there whatever we offer.
    fn peer_needs_credit_update(&self) -> bool {
        let window = CONN_BUF_SIZE.min(self.peer_buf_alloc);
        let forwarded_since = (self.fwd_cnt - self.last_fwd_cnt_to_peer).0;
        forwarded_since > 0 && forwarded_since >= (window / 2).max(1)
    }

    /// Whether host data may go to the guest now (state and shutdowns; not credit).
    fn may_read_host(&self) -> bool {
        self.state == ConnState::Established && !self.host_eof && !self.peer_no_recv
    }

    /// The events to poll the host stream for; `None`: do not poll it at all (a hung-up
    /// stream would report HUP forever).
    pub fn polled_evset(&self) -> Option<EventSet> {
        if self.state == ConnState::Killed {
            return None;
        }
        let mut evset = EventSet::empty();
        if !self.tx_buf.is_empty() {
            evset |= EventSet::OUT;
        }
        if self.host_hup {
            return (!evset.is_empty()).then_some(evset);
        }
        // IN is re-armed once the pending read is done: while RW is pending, the data waits
        // for a guest receive buffer and polling would only spin.
        if self.may_read_host() && self.peer_credit() > 0 && !self.pending.contains(PendingRx::RW) {
            evset |= EventSet::IN;
        }
        Some(evset)
    }

    /// The host stream is ready with `evset`.
    pub fn notify(&mut self, evset: EventSet) {
        if self.state == ConnState::Killed {
            return;
        }
        if evset.intersects(EventSet::HANG_UP | EventSet::ERROR | EventSet::READ_HANG_UP) {
            // The rest of the data and the EOF (or the error) are found by reading.
            self.host_hup = evset.intersects(EventSet::HANG_UP | EventSet::ERROR);
            if self.may_read_host() {
                self.pending.insert(PendingRx::RW);
            } else if self.host_hup && !self.tx_buf.is_empty() {
                // Nobody will read what the guest still has buffered.
                self.kill();
                return;
            }
        }
        if evset.contains(EventSet::IN) && self.may_read_host() {
            self.pending.insert(PendingRx::RW);
        }
        if evset.contains(EventSet::OUT) && !self.tx_buf.is_empty() {
            if let Err(_e) = self.flush_tx_buf() {
                self.kill();
                return;
            }
            self.after_forwarding();
        }
    }

    /// Writes as much of `tx_buf` to the host stream as it takes.
    fn flush_tx_buf(&mut self) -> io::Result<()> {
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt += Wrapping(u32::try_from(n).expect("at most CONN_BUF_SIZE"));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes guest data to the host stream, buffering what it does not take.
    fn forward(&mut self, data: &[u8]) -> io::Result<()> {
        let mut written = 0;
        if self.tx_buf.is_empty() {
            while written < data.len() {
                match self.stream.write(&data[written..]) {
                    Ok(0) => return Err(ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.fwd_cnt += Wrapping(u32::try_from(written).expect("at most 64 KiB"));
        }
        self.tx_buf.extend(&data[written..]);
        Ok(())
    }

    /// After guest data reached the host stream: update credit, finish shutdowns.
    fn after_forwarding(&mut self) {
        if self.peer_needs_credit_update() {
            self.pending.insert(PendingRx::CREDIT_UPDATE);
        }
        self.settle_shutdown();
    }

    /// Carries out what the shutdown flags imply once `tx_buf` is empty.
    fn settle_shutdown(&mut self) {
        if self.state != ConnState::Established || !self.tx_buf.is_empty() {
            if self.peer_no_send && self.peer_no_recv && self.expiry.is_none() {
                // Give the host stream a while to take the rest.
                self.expiry = Some(Instant::now() + SHUTDOWN_TIMEOUT);
            }
            return;
        }
        if self.peer_no_send && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        let guest_done = self.peer_no_send && self.peer_no_recv;
        let both_done = self.peer_no_send && self.host_eof;
        if guest_done || both_done {
            self.kill();
        }
    }

    /// Takes a packet from the guest. The muxer has routed it here by its ports and handles
    /// RST itself.
    pub fn send_pkt(&mut self, hdr: &VsockHeader, data: &[u8]) {
        // Every packet carries the guest's credit.
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        if self.peer_credit() > 0 {
            self.credit_requested = false;
            // A hung-up stream is no longer polled: what is left in it is read on credit.
            if self.host_hup && self.may_read_host() {
                self.pending.insert(PendingRx::RW);
            }
        }
        match (self.state, hdr.op) {
            (ConnState::Killed, _) => {}
            (ConnState::LocalInit, op::RESPONSE) => {
                self.state = ConnState::Established;
                self.expiry = None;
                // The host side learns it is connected, and its port, before any data.
                let line = format!("OK {}\n", self.local_port);
                match self.stream.write(line.as_bytes()) {
                    Ok(n) if n == line.len() => {}
                    _ => self.kill(),
                }
            }
            (ConnState::Established, op::RW) => {
                let over_credit = self.tx_buf.len() + data.len() > CONN_BUF_SIZE as usize;
                if self.peer_no_send || over_credit {
                    self.kill();
                    return;
                }
                if data.is_empty() {
                    return;
                }
                if self.forward(data).is_err() {
                    self.kill();
                    return;
                }
                self.after_forwarding();
            }
            (ConnState::Established, op::SHUTDOWN) => {
                self.peer_no_recv |= hdr.flags & SHUTDOWN_RCV != 0;
                self.peer_no_send |= hdr.flags & SHUTDOWN_SEND != 0;
                self.settle_shutdown();
            }
            (ConnState::Established, op::CREDIT_REQUEST) => {
                self.pending.insert(PendingRx::CREDIT_UPDATE);
            }
            // New credit was taken above; nothing else to do.
            (_, op::CREDIT_UPDATE) => {}
            // Data or a second request before the handshake, a request on an open connection,
            // an unknown op: the guest is confused about this connection, so reset it.
            _ => self.kill(),
        }
    }

    /// The header every packet to the guest starts from.
    fn header(&self, op: u16) -> VsockHeader {
        VsockHeader {
            src_cid: HOST_CID,
            dst_cid: self.peer_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// Produces the next packet for the guest, its payload in `data[..hdr.len]`.
    pub fn recv_pkt(&mut self, data: &mut [u8]) -> Option<VsockHeader> {
        let hdr = self.next_pkt(data)?;
        self.last_fwd_cnt_to_peer = self.fwd_cnt;
        Some(hdr)
    }

    fn next_pkt(&mut self, data: &mut [u8]) -> Option<VsockHeader> {
        if self.pending.take(PendingRx::RST) {
            self.state = ConnState::Killed;
            self.pending = PendingRx::default();
            return Some(self.header(op::RST));
        }
        if self.pending.take(PendingRx::RESPONSE) {
            self.state = ConnState::Established;
            return Some(self.header(op::RESPONSE));
        }
        if self.pending.take(PendingRx::REQUEST) {
            self.expiry = Some(Instant::now() + REQUEST_TIMEOUT);
            return Some(self.header(op::REQUEST));
        }
        if self.pending.take(PendingRx::RW) && self.may_read_host() {
            if let Some(hdr) = self.read_host(data) {
                return Some(hdr);
            }
        }
        if self.pending.take(PendingRx::CREDIT_UPDATE) {
            return Some(self.header(op::CREDIT_UPDATE));
        }
        None
    }

    /// Reads host data for the guest, as much as fits its buffer and credit.
    fn read_host(&mut self, data: &mut [u8]) -> Option<VsockHeader> {
        let credit = self.peer_credit() as usize;
        if credit == 0 {
            if self.credit_requested {
                return None;
            }
            self.credit_requested = true;
            return Some(self.header(op::CREDIT_REQUEST));
        }
        let max = data.len().min(credit);
        if max == 0 {
            // A receive buffer with room for the header only: try again with the next one.
            self.pending.insert(PendingRx::RW);
            return None;
        }
        loop {
            match self.stream.read(&mut data[..max]) {
                Ok(0) => {
                    self.host_eof = true;
                    let mut hdr = self.header(op::SHUTDOWN);
                    hdr.flags = SHUTDOWN_SEND;
                    self.settle_shutdown();
                    return Some(hdr);
                }
                Ok(n) => {
                    let n32 = u32::try_from(n).expect("at most 64 KiB");
                    self.rx_cnt += Wrapping(n32);
                    // There may be more: stay scheduled until a read would block.
                    self.pending.insert(PendingRx::RW);
                    let mut hdr = self.header(op::RW);
                    hdr.len = n32;
                    return Some(hdr);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(_) => {
                    self.kill();
                    self.pending = PendingRx::default();
                    return Some(self.header(op::RST));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const GUEST_CID: u64 = 3;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).expect("nonblocking");
        (a, b)
    }

    fn guest_hdr(op: u16, len: u32) -> VsockHeader {
        crate::devices::virtio::vsock::test_utils::guest_header(op, 1000, 5000, len)
    }

    fn established() -> (VsockConnection<UnixStream>, UnixStream) {
        let (ours, theirs) = pair();
        let mut c = VsockConnection::new_peer_init(ours, &guest_hdr(op::REQUEST, 0));
        let mut buf = [0u8; 4096];
        let h = c.recv_pkt(&mut buf).expect("response");
        assert_eq!(h.op, op::RESPONSE);
        assert_eq!((h.src_port, h.dst_port), (5000, 1000));
        assert_eq!(c.state(), ConnState::Established);
        (c, theirs)
    }

    #[test]
    fn host_initiated_handshake_writes_ok_line() {
        let (ours, mut theirs) = pair();
        let mut c = VsockConnection::new_local_init(ours, GUEST_CID, 1 << 30, 1234);
        let mut buf = [0u8; 64];
        let h = c.recv_pkt(&mut buf).expect("request");
        assert_eq!(
            (h.op, h.dst_port, h.dst_cid),
            (op::REQUEST, 1234, GUEST_CID)
        );
        assert!(c.expiry().is_some());
        let mut resp = guest_hdr(op::RESPONSE, 0);
        resp.src_port = 1234;
        resp.dst_port = 1 << 30;
        c.send_pkt(&resp, &[]);
        assert_eq!(c.state(), ConnState::Established);
        assert!(c.expiry().is_none());
        let mut line = [0u8; 14];
        theirs.read_exact(&mut line).expect("ok line");
        assert_eq!(&line, b"OK 1073741824\n");
    }

    #[test]
    fn data_flows_both_ways_with_credit() {
        let (mut c, mut theirs) = established();
        c.send_pkt(&guest_hdr(op::RW, 5), b"hello");
        let mut got = [0u8; 5];
        theirs.read_exact(&mut got).expect("data");
        assert_eq!(&got, b"hello");

        theirs.write_all(b"world").expect("write");
        c.notify(EventSet::IN);
        let mut buf = [0u8; 4096];
        let h = c.recv_pkt(&mut buf).expect("rw");
        assert_eq!((h.op, h.len), (op::RW, 5));
        assert_eq!(&buf[..5], b"world");
        assert_eq!(h.fwd_cnt, 5);
        // Stays scheduled until a read would block.
        assert!(c.has_pending_rx());
        assert!(c.recv_pkt(&mut buf).is_none());
    }

    #[test]
    fn host_reads_stop_at_zero_credit_and_resume_on_update() {
        let (ours, mut theirs) = pair();
        let mut req = guest_hdr(op::REQUEST, 0);
        req.buf_alloc = 8;
        let mut c = VsockConnection::new_peer_init(ours, &req);
        let mut buf = [0u8; 4096];
        c.recv_pkt(&mut buf).expect("response");
        theirs.write_all(&[7u8; 20]).expect("write");
        c.notify(EventSet::IN);
        let h = c.recv_pkt(&mut buf).expect("rw");
        assert_eq!(h.len, 8, "no more than the guest's credit");
        let h = c.recv_pkt(&mut buf).expect("credit request");
        assert_eq!(h.op, op::CREDIT_REQUEST);
        assert!(!c.polled_evset().expect("polled").contains(EventSet::IN));
        // The guest consumed the 8 bytes.
        let mut upd = guest_hdr(op::CREDIT_UPDATE, 0);
        upd.buf_alloc = 8;
        upd.fwd_cnt = 8;
        c.send_pkt(&upd, &[]);
        assert!(c.polled_evset().expect("polled").contains(EventSet::IN));
    }

    #[test]
    fn guest_overrunning_its_credit_is_reset() {
        let (mut c, _theirs) = established();
        // The host never reads; fill the host socket and then the buffer.
        let chunk = vec![1u8; 64 * 1024];
        let mut killed = false;
        for _ in 0..200 {
            c.send_pkt(&guest_hdr(op::RW, chunk.len() as u32), &chunk);
            if c.state() == ConnState::Killed {
                killed = true;
                break;
            }
        }
        assert!(killed);
        let mut buf = [0u8; 64];
        assert_eq!(c.recv_pkt(&mut buf).expect("rst").op, op::RST);
    }

    #[test]
    fn host_eof_becomes_shutdown_send_then_rst_when_guest_is_done() {
        let (mut c, theirs) = established();
        theirs.shutdown(Shutdown::Write).expect("shutdown");
        c.notify(EventSet::IN | EventSet::READ_HANG_UP);
        let mut buf = [0u8; 64];
        let h = c.recv_pkt(&mut buf).expect("shutdown");
        assert_eq!((h.op, h.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
        assert_eq!(c.state(), ConnState::Established);
        let mut sd = guest_hdr(op::SHUTDOWN, 0);
        sd.flags = SHUTDOWN_SEND;
        c.send_pkt(&sd, &[]);
        assert_eq!(c.recv_pkt(&mut buf).expect("rst").op, op::RST);
    }

    #[test]
    fn guest_shutdown_send_half_closes_the_host_stream() {
        let (mut c, mut theirs) = established();
        c.send_pkt(&guest_hdr(op::RW, 3), b"abc");
        let mut sd = guest_hdr(op::SHUTDOWN, 0);
        sd.flags = SHUTDOWN_SEND;
        c.send_pkt(&sd, &[]);
        let mut all = Vec::new();
        theirs.read_to_end(&mut all).expect("eof after data");
        assert_eq!(all, b"abc");
        // The host can still answer.
        theirs.write_all(b"xyz").expect("write");
        c.notify(EventSet::IN);
        let mut buf = [0u8; 64];
        assert_eq!(c.recv_pkt(&mut buf).expect("rw").len, 3);
    }

    #[test]
    fn unexpected_packets_reset_the_connection() {
        let (mut c, _theirs) = established();
        c.send_pkt(&guest_hdr(op::REQUEST, 0), &[]);
        assert_eq!(c.state(), ConnState::Killed);
        let (ours, _t) = pair();
        let mut c = VsockConnection::new_local_init(ours, GUEST_CID, 1 << 30, 1);
        c.send_pkt(&guest_hdr(op::RW, 1), b"x");
        assert_eq!(c.state(), ConnState::Killed);
    }

    #[test]
    fn credit_updates_follow_the_guests_smaller_window() {
        // Linux sends no more than its own buf_alloc ahead of our fwd_cnt (64 KiB here), so
        // the update must come by half of that, not half of ours.
        let (mut c, mut theirs) = established();
        let chunk = vec![3u8; 16 * 1024];
        let mut sink = vec![0u8; 16 * 1024];
        let mut buf = [0u8; 64];
        c.send_pkt(&guest_hdr(op::RW, chunk.len() as u32), &chunk);
        theirs.read_exact(&mut sink).expect("read");
        assert!(c.recv_pkt(&mut buf).is_none(), "16 KiB of a 64 KiB window");
        c.send_pkt(&guest_hdr(op::RW, chunk.len() as u32), &chunk);
        theirs.read_exact(&mut sink).expect("read");
        let h = c
            .recv_pkt(&mut buf)
            .expect("credit update at half the window");
        assert_eq!((h.op, h.fwd_cnt), (op::CREDIT_UPDATE, 32 * 1024));
    }

    #[test]
    fn credit_update_goes_out_after_enough_is_forwarded() {
        let (mut c, mut theirs) = established();
        let chunk = vec![2u8; 64 * 1024];
        let mut sink = vec![0u8; 64 * 1024];
        for _ in 0..3 {
            c.send_pkt(&guest_hdr(op::RW, chunk.len() as u32), &chunk);
            theirs.read_exact(&mut sink).expect("read");
        }
        let mut buf = [0u8; 64];
        let h = c.recv_pkt(&mut buf).expect("credit update");
        assert_eq!(h.op, op::CREDIT_UPDATE);
        assert_eq!(h.fwd_cnt, 3 * 64 * 1024);
        assert_eq!(h.buf_alloc, CONN_BUF_SIZE);
    }
}
