//! The host side of the vsock device, Firecracker's "hybrid vsock": guest connections are
//! bridged to Unix sockets (see the protocol in [`super`]). The muxer owns every host socket
//! of one device, routes guest packets to their [`VsockConnection`] by port pair, and polls all
//! its fds through one nested epoll fd, which the device's event loop watches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::csm::{ConnState, VsockConnection};
use super::{op, VsockBackend, VsockHeader, HOST_CID, MAX_CONNECTIONS, TYPE_STREAM};

/// Host-initiated connections get host ports from here up (as in Firecracker), far from the
/// ports guest-initiated connections use.
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// The longest `CONNECT <port>\n` line accepted.
const MAX_CONNECT_LINE: usize = 32;
/// The most RSTs for unknown connections kept waiting for the guest; more are dropped.
const MAX_PENDING_RST: usize = 1024;

/// Why the muxer could not start.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// Binding the host socket failed.
    #[error("failed to bind the host socket {}", path.display())]
    Bind {
        /// The socket's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating or registering the epoll fd failed.
    #[error("failed to set up the muxer's event sources")]
    Events(#[source] io::Error),
    /// Creating the timer failed.
    #[error("failed to create the muxer's timer")]
    Timer(#[source] vmm_sys_util::errno::Error),
}

/// A connection's key: (host port, guest port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    local_port: u32,
    peer_port: u32,
}

/// What owns an fd registered in the muxer's epoll.
#[derive(Debug, Clone, Copy)]
enum FdOwner {
    Listener,
    Timer,
    /// A host stream that has not sent its `CONNECT` line yet.
    Pending,
    Conn(ConnKey),
}

/// Something owed to the guest.
#[derive(Debug, Clone, Copy)]
enum RxItem {
    /// Ask this connection for its next packet.
    Conn(ConnKey),
    /// Reset a connection the muxer does not know.
    Rst { local_port: u32, peer_port: u32 },
}

/// A host stream waiting for its `CONNECT <port>\n` line.
#[derive(Debug)]
struct PendingConnect {
    stream: UnixStream,
    line: Vec<u8>,
}

/// A connection with its bookkeeping.
#[derive(Debug)]
struct MuxConn {
    csm: VsockConnection<UnixStream>,
    /// What the stream is registered for in the epoll (None: not registered).
    registered: Option<EventSet>,
    /// Whether an [`RxItem::Conn`] for it is in the queue.
    queued: bool,
    /// Whether its host port was allocated by the muxer (host-initiated).
    allocated_port: bool,
}

/// The vsock muxer: one per device.
#[derive(Debug)]
pub struct VsockMuxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: Option<UnixListener>,
    epoll: Epoll,
    timer: TimerFd,
    timer_deadline: Option<Instant>,
    conns: HashMap<ConnKey, MuxConn>,
    pending: HashMap<RawFd, PendingConnect>,
    fds: HashMap<RawFd, FdOwner>,
    rxq: VecDeque<RxItem>,
    pending_rst: usize,
    local_ports: HashSet<u32>,
    next_local_port: u32,
}

impl VsockMuxer {
    /// Binds the host socket at `uds_path` (which must not exist) for a guest with `guest_cid`.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, MuxerError> {
        let bind_err = |source| MuxerError::Bind {
            path: uds_path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(uds_path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let epoll = Epoll::new().map_err(MuxerError::Events)?;
        let timer = TimerFd::new().map_err(MuxerError::Timer)?;
        let mut muxer = Self {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener: None,
            epoll,
            timer,
            timer_deadline: None,
            conns: HashMap::new(),
            pending: HashMap::new(),
            fds: HashMap::new(),
            rxq: VecDeque::new(),
            pending_rst: 0,
            local_ports: HashSet::new(),
            next_local_port: FIRST_LOCAL_PORT,
        };
        muxer
            .register(listener.as_raw_fd(), EventSet::IN, FdOwner::Listener)
            .map_err(MuxerError::Events)?;
        let timer_fd = muxer.timer.as_raw_fd();
        muxer
            .register(timer_fd, EventSet::IN, FdOwner::Timer)
            .map_err(MuxerError::Events)?;
        muxer.listener = Some(listener);
        Ok(muxer)
    }

    /// The host socket's path.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn register(&mut self, fd: RawFd, evset: EventSet, owner: FdOwner) -> io::Result<()> {
        let data = u64::try_from(fd).map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(evset, data))?;
        self.fds.insert(fd, owner);
        Ok(())
    }

    fn unregister(&mut self, fd: RawFd) {
        if self.fds.remove(&fd).is_some() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                fd,
                EpollEvent::new(EventSet::empty(), 0),
            );
        }
    }

    /// Brings a connection's epoll registration and rx scheduling up to date after it changed.
    fn sync_conn(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let fd = conn.csm.stream().as_raw_fd();
        let wanted = conn.csm.polled_evset();
        if wanted != conn.registered {
            let data = u64::try_from(fd).unwrap_or_default();
            let res = match (conn.registered, wanted) {
                (None, Some(ev)) => {
                    self.epoll
                        .ctl(ControlOperation::Add, fd, EpollEvent::new(ev, data))
                }
                (Some(_), Some(ev)) => {
                    self.epoll
                        .ctl(ControlOperation::Modify, fd, EpollEvent::new(ev, data))
                }
                (Some(_), None) => self.epoll.ctl(
                    ControlOperation::Delete,
                    fd,
                    EpollEvent::new(EventSet::empty(), 0),
                ),
                (None, None) => Ok(()),
            };
            match res {
                Ok(()) => {
                    conn.registered = wanted;
                    match wanted {
                        Some(_) => self.fds.insert(fd, FdOwner::Conn(key)),
                        None => self.fds.remove(&fd),
                    };
                }
                // Without polling the connection cannot work: reset it.
                Err(_) => conn.csm.kill(),
            }
        }
        if conn.csm.has_pending_rx() && !conn.queued {
            conn.queued = true;
            self.rxq.push_back(RxItem::Conn(key));
        }
        if let Some(at) = conn.csm.expiry() {
            if self.timer_deadline.is_none_or(|d| at < d) {
                self.arm_timer(at);
            }
        }
    }

    fn arm_timer(&mut self, at: Instant) {
        let after = at
            .saturating_duration_since(Instant::now())
            .max(std::time::Duration::from_millis(1));
        if self.timer.reset(after, None).is_ok() {
            self.timer_deadline = Some(at);
        }
    }

    fn remove_conn(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.remove(&key) {
            let fd = conn.csm.stream().as_raw_fd();
            if conn.registered.is_some() {
                self.unregister(fd);
            }
            if conn.allocated_port {
                self.local_ports.remove(&key.local_port);
            }
        }
    }

    fn enqueue_rst(&mut self, local_port: u32, peer_port: u32) {
        if self.pending_rst < MAX_PENDING_RST {
            self.pending_rst += 1;
            self.rxq.push_back(RxItem::Rst {
                local_port,
                peer_port,
            });
        }
    }

    fn allocate_local_port(&mut self) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_local_port;
            self.next_local_port = if port == u32::MAX - 1 {
                FIRST_LOCAL_PORT
            } else {
                port + 1
            };
            if self.local_ports.insert(port) {
                return Some(port);
            }
        }
        None
    }

    /// A guest REQUEST for a host port nobody is connected on: connect to `<uds_path>_<port>`.
    fn handle_guest_request(&mut self, hdr: &VsockHeader) {
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            self.enqueue_rst(key.local_port, key.peer_port);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", hdr.dst_port));
        let stream = match UnixStream::connect(&path) {
            Ok(s) if s.set_nonblocking(true).is_ok() => s,
            _ => {
                self.enqueue_rst(key.local_port, key.peer_port);
                return;
            }
        };
        let conn = MuxConn {
            csm: VsockConnection::new_peer_init(stream, hdr),
            registered: None,
            queued: false,
            allocated_port: false,
        };
        self.conns.insert(key, conn);
        self.sync_conn(key);
    }

    /// New host connections on the listener.
    fn handle_listener(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    if self.pending.len() + self.conns.len() >= MAX_CONNECTIONS
                        || stream.set_nonblocking(true).is_err()
                    {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    if self.register(fd, EventSet::IN, FdOwner::Pending).is_ok() {
                        let line = Vec::with_capacity(MAX_CONNECT_LINE);
                        self.pending.insert(fd, PendingConnect { stream, line });
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock (all accepted) or a transient error (EMFILE): wait for the next
                // readiness event.
                Err(_) => return,
            }
        }
    }

    /// A pending host stream sent (part of) its `CONNECT` line. It is read a byte at a time so
    /// that data the host writes right after the line stays in the stream for the guest.
    fn handle_pending(&mut self, fd: RawFd) {
        let Some(p) = self.pending.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        let outcome = loop {
            match p.stream.read(&mut byte) {
                Ok(0) => break Err(()),
                Ok(_) if byte[0] == b'\n' => break Ok(true),
                Ok(_) if p.line.len() >= MAX_CONNECT_LINE => break Err(()),
                Ok(_) => p.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(false),
                Err(_) => break Err(()),
            }
        };
        match outcome {
            Ok(false) => {}
            Err(()) => {
                self.unregister(fd);
                self.pending.remove(&fd);
            }
            Ok(true) => {
                self.unregister(fd);
                let Some(p) = self.pending.remove(&fd) else {
                    return;
                };
                let Some(peer_port) = parse_connect(&p.line) else {
                    return; // dropping the stream closes it
                };
                let Some(local_port) = self.allocate_local_port() else {
                    return;
                };
                let key = ConnKey {
                    local_port,
                    peer_port,
                };
                let csm = VsockConnection::new_local_init(
                    p.stream,
                    self.guest_cid,
                    local_port,
                    peer_port,
                );
                let conn = MuxConn {
                    csm,
                    registered: None,
                    queued: false,
                    allocated_port: true,
                };
                self.conns.insert(key, conn);
                self.sync_conn(key);
            }
        }
    }

    /// The timer fired: reset connections whose deadline passed.
    fn handle_timer(&mut self) {
        // Not `TimerFd::wait`, which blocks if the timer was re-armed since it fired: arming
        // or clearing it below resets its expiry count, which is what makes it quiet again.
        self.timer_deadline = None;
        let now = Instant::now();
        let expired: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.csm.expiry().is_some_and(|at| at <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(conn) = self.conns.get_mut(&key) {
                conn.csm.kill();
            }
            self.sync_conn(key);
        }
        let next = self.conns.values().filter_map(|c| c.csm.expiry()).min();
        match next {
            Some(at) => self.arm_timer(at),
            None => {
                let _ = self.timer.clear();
            }
        }
    }

    fn handle_fd_event(&mut self, fd: RawFd, evset: EventSet) {
        match self.fds.get(&fd).copied() {
            Some(FdOwner::Listener) => self.handle_listener(),
            Some(FdOwner::Timer) => self.handle_timer(),
            Some(FdOwner::Pending) => self.handle_pending(fd),
            Some(FdOwner::Conn(key)) => {
                if let Some(conn) = self.conns.get_mut(&key) {
                    conn.csm.notify(evset);
                }
                self.sync_conn(key);
            }
            None => {}
        }
    }
}

/// Parses `CONNECT <port>` (the newline already stripped; the keyword in any case, as
/// Firecracker accepts it).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (keyword, port) = line.split_once(' ')?;
    if !keyword.eq_ignore_ascii_case("connect") {
        return None;
    }
    port.trim().parse().ok()
}

impl AsRawFd for VsockMuxer {
    /// The nested epoll fd: readable when any host socket needs attention.
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl VsockBackend for VsockMuxer {
    fn send_pkt(&mut self, hdr: &VsockHeader, data: &[u8]) {
        // Only the guest may speak, and only to the host; anything else is dropped.
        if hdr.src_cid != self.guest_cid || hdr.dst_cid != HOST_CID {
            return;
        }
        let key = ConnKey {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if hdr.type_ != TYPE_STREAM {
            if hdr.op != op::RST {
                self.enqueue_rst(key.local_port, key.peer_port);
            }
            return;
        }
        if !self.conns.contains_key(&key) {
            match hdr.op {
                op::REQUEST => self.handle_guest_request(hdr),
                op::RST => {}
                _ => self.enqueue_rst(key.local_port, key.peer_port),
            }
            return;
        }
        if hdr.op == op::RST {
            self.remove_conn(key);
            return;
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.csm.send_pkt(hdr, data);
        }
        self.sync_conn(key);
    }

    fn recv_pkt(&mut self, data: &mut [u8]) -> Option<VsockHeader> {
        // Each item is looked at once per call, so a connection that keeps itself scheduled
        // without producing a packet cannot spin here.
        for _ in 0..self.rxq.len() {
            let item = self.rxq.pop_front()?;
            match item {
                RxItem::Rst {
                    local_port,
                    peer_port,
                } => {
                    self.pending_rst = self.pending_rst.saturating_sub(1);
                    return Some(VsockHeader {
                        src_cid: HOST_CID,
                        dst_cid: self.guest_cid,
                        src_port: local_port,
                        dst_port: peer_port,
                        type_: TYPE_STREAM,
                        op: op::RST,
                        ..VsockHeader::default()
                    });
                }
                RxItem::Conn(key) => {
                    let Some(conn) = self.conns.get_mut(&key) else {
                        continue;
                    };
                    conn.queued = false;
                    let hdr = conn.csm.recv_pkt(data);
                    let killed = conn.csm.state() == ConnState::Killed;
                    match hdr {
                        Some(h) if h.op == op::RST => {
                            self.remove_conn(key);
                            return Some(h);
                        }
                        Some(h) => {
                            self.sync_conn(key);
                            return Some(h);
                        }
                        None if killed && !conn.csm.has_pending_rx() => self.remove_conn(key),
                        None => self.sync_conn(key),
                    }
                }
            }
        }
        None
    }

    fn has_pending_rx(&self) -> bool {
        !self.rxq.is_empty()
    }

    fn notify(&mut self, _evset: EventSet) {
        let mut events = [EpollEvent::default(); 32];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(_) => return,
        };
        for ev in &events[..n] {
            let Ok(fd) = RawFd::try_from(ev.data()) else {
                continue;
            };
            self.handle_fd_event(fd, ev.event_set());
        }
    }

    fn close_all(&mut self) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove_conn(key);
        }
        let pending: Vec<RawFd> = self.pending.keys().copied().collect();
        for fd in pending {
            self.unregister(fd);
            self.pending.remove(&fd);
        }
        if let Some(listener) = self.listener.take() {
            self.unregister(listener.as_raw_fd());
        }
        let timer_fd = self.timer.as_raw_fd();
        self.unregister(timer_fd);
        self.rxq.clear();
        self.pending_rst = 0;
    }
}

impl Drop for VsockMuxer {
    fn drop(&mut self) {
        // The socket file was made by `new`; leave no stale file behind.
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::test_utils::poll_readable;
    use std::io::Write;

    const CID: u64 = 3;

    fn muxer(dir: &tempfile::TempDir) -> VsockMuxer {
        VsockMuxer::new(CID, &dir.path().join("v.sock")).expect("muxer")
    }

    fn guest(op: u16, src_port: u32, dst_port: u32, len: u32) -> VsockHeader {
        crate::devices::virtio::vsock::test_utils::guest_header(op, src_port, dst_port, len)
    }

    /// Runs the muxer's event handling until it has something for the guest.
    fn pump(m: &mut VsockMuxer) {
        for _ in 0..50 {
            if m.has_pending_rx() {
                return;
            }
            if poll_readable(m.as_raw_fd(), 100) {
                m.notify(EventSet::IN);
            }
        }
    }

    #[test]
    fn parses_connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 1234"), Some(1234));
        assert_eq!(parse_connect(b"connect 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT"), None);
        assert_eq!(parse_connect(b"CONNECT x"), None);
        assert_eq!(parse_connect(b"OPEN 1"), None);
        assert_eq!(parse_connect(b"CONNECT 99999999999"), None);
    }

    #[test]
    fn host_connect_reaches_the_guest_and_gets_ok() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = muxer(&dir);
        let mut host = UnixStream::connect(m.uds_path()).expect("connect");
        host.write_all(b"CONNECT 1234\nearly").expect("write");
        pump(&mut m);
        let mut buf = vec![0u8; 4096];
        let req = m.recv_pkt(&mut buf).expect("request");
        assert_eq!(
            (req.op, req.dst_port, req.dst_cid),
            (op::REQUEST, 1234, CID)
        );
        assert!(req.src_port >= FIRST_LOCAL_PORT);
        m.send_pkt(&guest(op::RESPONSE, 1234, req.src_port, 0), &[]);
        let mut line = [0u8; 14];
        host.read_exact(&mut line).expect("ok");
        assert_eq!(&line, format!("OK {}\n", req.src_port).as_bytes());
        // Bytes written right after the CONNECT line reach the guest.
        pump(&mut m);
        let rw = m.recv_pkt(&mut buf).expect("data");
        assert_eq!((rw.op, &buf[..rw.len as usize]), (op::RW, &b"early"[..]));
    }

    #[test]
    fn host_connect_to_a_closed_guest_port_is_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = muxer(&dir);
        let mut host = UnixStream::connect(m.uds_path()).expect("connect");
        host.write_all(b"CONNECT 9\n").expect("write");
        pump(&mut m);
        let mut buf = vec![0u8; 64];
        let req = m.recv_pkt(&mut buf).expect("request");
        m.send_pkt(&guest(op::RST, 9, req.src_port, 0), &[]);
        assert_eq!(m.connection_count(), 0);
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).expect("eof");
        assert!(rest.is_empty());
    }

    #[test]
    fn a_bad_connect_line_closes_the_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = muxer(&dir);
        let mut host = UnixStream::connect(m.uds_path()).expect("connect");
        host.write_all(b"HELLO there\n").expect("write");
        for _ in 0..5 {
            if poll_readable(m.as_raw_fd(), 100) {
                m.notify(EventSet::IN);
            }
        }
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).expect("eof");
        assert!(!m.has_pending_rx());
    }

    #[test]
    fn guest_connect_reaches_a_host_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = muxer(&dir);
        let listener =
            UnixListener::bind(dir.path().join("v.sock_5000")).expect("bind port listener");
        m.send_pkt(&guest(op::REQUEST, 777, 5000, 0), &[]);
        let mut buf = vec![0u8; 4096];
        let resp = m.recv_pkt(&mut buf).expect("response");
        assert_eq!(
            (resp.op, resp.src_port, resp.dst_port),
            (op::RESPONSE, 5000, 777)
        );
        let (mut host, _) = listener.accept().expect("accepted");
        m.send_pkt(&guest(op::RW, 777, 5000, 3), b"hey");
        let mut got = [0u8; 3];
        host.read_exact(&mut got).expect("data");
        assert_eq!(&got, b"hey");
    }

    #[test]
    fn guest_connect_without_listener_and_stray_packets_get_rst() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = muxer(&dir);
        m.send_pkt(&guest(op::REQUEST, 777, 6000, 0), &[]);
        m.send_pkt(&guest(op::RW, 778, 6001, 0), &[]);
        let mut buf = vec![0u8; 64];
        let a = m.recv_pkt(&mut buf).expect("rst");
        let b = m.recv_pkt(&mut buf).expect("rst");
        assert_eq!((a.op, a.src_port, a.dst_port), (op::RST, 6000, 777));
        assert_eq!((b.op, b.src_port, b.dst_port), (op::RST, 6001, 778));
        assert!(m.recv_pkt(&mut buf).is_none());
        // A stray RST gets nothing back; a spoofed source CID is ignored.
        m.send_pkt(&guest(op::RST, 1, 2, 0), &[]);
        let mut spoofed = guest(op::REQUEST, 1, 2, 0);
        spoofed.src_cid = 99;
        m.send_pkt(&spoofed, &[]);
        assert!(!m.has_pending_rx());
    }

    #[test]
    fn close_all_closes_host_streams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = muxer(&dir);
        let listener = UnixListener::bind(dir.path().join("v.sock_5000")).expect("bind");
        m.send_pkt(&guest(op::REQUEST, 777, 5000, 0), &[]);
        let (mut host, _) = listener.accept().expect("accepted");
        m.close_all();
        let mut rest = Vec::new();
        host.read_to_end(&mut rest).expect("eof");
        assert_eq!(m.connection_count(), 0);
        assert!(
            UnixStream::connect(m.uds_path()).is_err(),
            "listener closed"
        );
    }
}
