//! Probe guests under real KVM drive the lab's virtio-mmio transport and vsock device the way a
//! guest driver does: a program assembled here (see `probe/driver.rs`) runs in 32-bit
//! protected mode on a vCPU thread, reaches the vsock device's `MmioTransport` through MMIO
//! exits on the VM's bus, and tells the test what it read on a debug port. A device event loop
//! thread (`probe/event_loop.rs`) serves the queue kicks and the muxer's sockets, as the
//! builder's will. No interrupts: the guest polls its used rings and the status register.
//!
//! Proven here: the register handshake to DRIVER_OK, a vsock connection from the guest to a
//! host Unix socket with data both ways, and that a hostile driver (a queue size that is not a
//! power of two, a queue moved after DRIVER_OK, a descriptor outside RAM) gets
//! DEVICE_NEEDS_RESET while the VM runs on, and can reset and start over.
//!
//! Each test skips, saying why, only when /dev/kvm cannot be opened; with `LAB_E2E=1` that is
//! a failure.

mod probe;

use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_vmm::arch::x86_64::layout::MMIO32_START;
use lab_vmm::devices::virtio::mmio::vsock::{MmioVsock, MmioVsockError};
use lab_vmm::devices::virtio::mmio::{reg, status, MmioTransport, VirtioDevice, MMIO_WINDOW_LEN};
use lab_vmm::devices::virtio::vsock::{
    op, VsockDevice, VsockError, VsockMuxer, MAX_QUEUE_SIZE, RXQ, TXQ, TYPE_STREAM, VIRTIO_ID_VSOCK,
};
use lab_vmm::vstate::{GuestMemoryMmap, Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use probe::driver::{expected_negotiation, rings, used_len_at, Driver, DESC_NEXT, DESC_WRITE};
use probe::event_loop::{EventLoop, LoopLog, SharedVsock};
use probe::{kvm_or_skip, ProbeEnd, ProbeVm, Report, RunningProbe, TransportState};

/// Where the vsock device's window is mapped: the first slot of the device MMIO range.
const VSOCK_BASE: u64 = MMIO32_START;
/// The guest's CID.
const GUEST_CID: u64 = 3;
/// VIRTIO_F_VERSION_1, the one feature the probe driver takes.
const VERSION_1: u64 = 1 << 32;
/// The host port the guest connects to, served at `<uds>_5000`.
const HOST_PORT: u32 = 5000;
/// The guest's own port.
const GUEST_PORT: u32 = 49152;
/// The receive buffer the guest advertises (`buf_alloc`).
const GUEST_BUF_ALLOC: u32 = 64 * 1024;
/// `virtio_vsock_hdr`'s size.
const HDR: u32 = 44;
/// How many receive buffers the guest posts, a page each, from [`RX_BUFS`].
const RX_BUF_COUNT: u16 = 4;
const RX_BUFS: u32 = 0x30_0000;
const RX_BUF_LEN: u32 = 0x1000;
/// Transmit headers and payload.
const TX_HDR0: u32 = 0x38_0000;
const TX_HDR1: u32 = 0x38_0100;
const TX_DATA: u32 = 0x38_1000;
/// Guest RAM ends at 16 MiB; this is well past it.
const OUTSIDE_RAM: u32 = 0x7fff_0000;

/// What the guest sends and what the host answers.
const PING: &[u8] = b"ping from the probe guest";
const PONG: &[u8] = b"pong from the host";

/// The steps a guest gives up at (reported on the fail port).
mod step {
    pub const RESPONSE: u32 = 1;
    pub const TX_DONE: u32 = 2;
    pub const DATA: u32 = 3;
    pub const DATA_LEN: u32 = 4;
    pub const NEEDS_RESET: u32 = 5;
}

/// A probe VM with the vsock device on its bus and the device's event loop running.
struct VsockRig {
    probe: Option<ProbeVm>,
    mem: GuestMemoryMmap,
    transport: Arc<Mutex<MmioTransport>>,
    vsock: SharedVsock,
    events: Option<EventLoop>,
    uds: PathBuf,
    _dir: tempfile::TempDir,
}

impl VsockRig {
    fn new(kvm: Kvm) -> Self {
        let mut probe = ProbeVm::new(kvm);
        let dir = tempfile::tempdir().expect("tempdir");
        let uds = dir.path().join("vsock");
        let muxer = VsockMuxer::new(GUEST_CID, &uds).expect("muxer");
        let device = VsockDevice::new(GUEST_CID, muxer).expect("vsock device");
        let vsock: SharedVsock = Arc::new(Mutex::new(MmioVsock::new(device)));
        let as_virtio: Arc<Mutex<dyn VirtioDevice>> = vsock.clone();
        let irq = EventFd::new(EFD_NONBLOCK).expect("irq eventfd");
        let transport = MmioTransport::new(probe.mem.clone(), as_virtio, irq).expect("transport");
        let queue_events = transport
            .queue_events()
            .iter()
            .map(|e| e.try_clone().expect("queue eventfd"))
            .collect();
        let transport = Arc::new(Mutex::new(transport));
        probe.add_mmio(transport.clone(), VSOCK_BASE, MMIO_WINDOW_LEN);
        probe.watch(transport.clone());
        let events = EventLoop::start(vsock.clone(), queue_events);
        Self {
            mem: probe.mem.clone(),
            probe: Some(probe),
            transport,
            vsock,
            events: Some(events),
            uds,
            _dir: dir,
        }
    }

    /// A host listener on `<uds>_<port>`, where guest connections to `port` go.
    fn listen(&self, port: u32) -> UnixListener {
        let mut path = self.uds.clone().into_os_string();
        path.push(format!("_{port}"));
        UnixListener::bind(path).expect("host listener")
    }

    fn start(&mut self, code: Vec<u8>) -> RunningProbe {
        self.probe.take().expect("started once").start(&code)
    }

    /// Runs `code` to its end; returns how it ended and what the event loop saw.
    fn run(mut self, code: Vec<u8>) -> (ProbeEnd, LoopLog, Self) {
        let end = self.start(code).finish();
        let log = self.stop_events();
        (end, log, self)
    }

    fn stop_events(&mut self) -> LoopLog {
        self.events.take().expect("running").stop()
    }

    fn state(&self) -> TransportState {
        TransportState::of(&self.transport)
    }

    fn used_idx(&self, q: u32) -> u16 {
        self.mem
            .read_obj(GuestAddress(u64::from(rings(q).used + 2)))
            .expect("used idx")
    }
}

/// Queue indices as the driver writes them.
const RX: u32 = RXQ as u32;
const TX: u32 = TXQ as u32;

/// A guest-to-host `virtio_vsock_hdr` (little-endian, packed): src_cid u64 @0, dst_cid u64
/// @8, src_port @16, dst_port @20, len @24, type u16 @28, op u16 @30, flags @32, buf_alloc
/// @36, fwd_cnt @40.
fn guest_header(op: u16, len: u32) -> [u8; HDR as usize] {
    let mut h = [0u8; HDR as usize];
    h[0..8].copy_from_slice(&GUEST_CID.to_le_bytes());
    h[8..16].copy_from_slice(&2u64.to_le_bytes());
    h[16..20].copy_from_slice(&GUEST_PORT.to_le_bytes());
    h[20..24].copy_from_slice(&HOST_PORT.to_le_bytes());
    h[24..28].copy_from_slice(&len.to_le_bytes());
    h[28..30].copy_from_slice(&TYPE_STREAM.to_le_bytes());
    h[30..32].copy_from_slice(&op.to_le_bytes());
    h[36..40].copy_from_slice(&GUEST_BUF_ALLOC.to_le_bytes());
    h
}

/// Offsets of the header fields the guest reports.
mod hdr {
    pub const SRC_PORT: u32 = 16;
    pub const DST_PORT: u32 = 20;
    pub const LEN: u32 = 24;
    /// `type` and `op`, read as one dword.
    pub const TYPE_OP: u32 = 28;
}

/// The dword at [`hdr::TYPE_OP`] for a stream packet with `op`.
fn type_and_op(op: u16) -> u32 {
    u32::from(TYPE_STREAM) | (u32::from(op) << 16)
}

/// Posts [`RX_BUF_COUNT`] one-page receive buffers and kicks the rx queue.
fn post_rx_buffers(d: &mut Driver) {
    for i in 0..RX_BUF_COUNT {
        let buf = RX_BUFS + u32::from(i) * RX_BUF_LEN;
        d.desc(RX, i, buf, RX_BUF_LEN, DESC_WRITE, 0);
        d.publish(RX, i, i);
    }
    d.notify(RX);
}

/// Sends a REQUEST for [`HOST_PORT`] from tx descriptor 0 / avail slot 0.
fn send_request(d: &mut Driver) {
    d.store_bytes(TX_HDR0, &guest_header(op::REQUEST, 0));
    d.desc(TX, 0, TX_HDR0, HDR, 0, 0);
    d.publish(TX, 0, 0);
    d.notify(TX);
}

fn words(values: &[u32]) -> Vec<Report> {
    values.iter().copied().map(Report::Word).collect()
}

fn live_state() -> TransportState {
    TransportState {
        status: status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        activated: true,
        acked_features: VERSION_1,
        broken: None,
    }
}

/// Accepts one connection on `listener` within `timeout`.
fn accept_within(listener: &UnixListener, timeout: Duration) -> UnixStream {
    assert!(
        readable_within(listener.as_raw_fd(), timeout),
        "the guest's connection never reached the host listener"
    );
    let (stream, _) = listener.accept().expect("accept");
    stream
}

/// Whether `fd` becomes readable within `timeout`.
fn readable_within(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).expect("short timeout");
    // SAFETY: `pfd` is one valid pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
    n == 1
}

#[test]
fn guest_driver_brings_the_vsock_transport_to_driver_ok() {
    let Some(kvm) = kvm_or_skip("guest_driver_brings_the_vsock_transport_to_driver_ok") else {
        return;
    };
    let rig = VsockRig::new(kvm);
    let offered = rig.vsock.lock().expect("vsock").device().avail_features();
    let mut d = Driver::new(VSOCK_BASE);
    d.bring_up(VERSION_1, 3, true);
    d.checkpoint();
    let (end, log, rig) = rig.run(d.finish());

    assert_eq!(end.exit, VcpuExit::Hlt, "{:?}", end.reports);
    let mut expected = words(&expected_negotiation(
        VIRTIO_ID_VSOCK,
        offered,
        GUEST_CID as u32,
    ));
    for _queue in 0..3 {
        // QueueNumMax, then QueueReady after the setup.
        expected.extend(words(&[u32::from(MAX_QUEUE_SIZE), 1]));
    }
    expected.push(Report::Word(u32::from(live_state().status)));
    expected.push(Report::Checkpoint(live_state()));
    assert_eq!(end.reports, expected);
    assert_eq!(end.unclaimed, 0, "every access reached a device");

    assert_eq!(rig.state(), live_state());
    // The device behind the transport went live with what the guest negotiated and set up.
    let vsock = rig.vsock.lock().expect("vsock");
    assert!(vsock.is_live());
    assert_eq!(vsock.device().acked_features(), VERSION_1);
    for q in 0..3 {
        assert!(vsock.device().queue_started(q), "queue {q} started");
    }
    assert!(log.errors.is_empty(), "{:?}", log.errors);
}

#[test]
fn guest_connects_to_a_host_socket_and_data_flows_both_ways() {
    let Some(kvm) = kvm_or_skip("guest_connects_to_a_host_socket_and_data_flows_both_ways") else {
        return;
    };
    let mut rig = VsockRig::new(kvm);
    let listener = rig.listen(HOST_PORT);
    let ping_len = u32::try_from(PING.len()).expect("short");
    let pong_buf = RX_BUFS + RX_BUF_LEN; // the second rx buffer

    let mut d = Driver::new(VSOCK_BASE);
    d.bring_up(VERSION_1, 3, false);
    post_rx_buffers(&mut d);
    send_request(&mut d);
    // The RESPONSE arrives in the first rx buffer.
    d.wait_used(RX, 1, step::RESPONSE);
    d.report_mem(used_len_at(rings(RX), 0));
    d.report_mem(RX_BUFS + hdr::TYPE_OP);
    d.report_mem(RX_BUFS + hdr::SRC_PORT);
    d.report_mem(RX_BUFS + hdr::DST_PORT);
    // An RW packet: header and payload in two chained descriptors.
    d.store_bytes(TX_HDR1, &guest_header(op::RW, ping_len));
    d.store_bytes(TX_DATA, PING);
    d.desc(TX, 1, TX_HDR1, HDR, DESC_NEXT, 2);
    d.desc(TX, 2, TX_DATA, ping_len, 0, 0);
    d.publish(TX, 1, 1);
    d.notify(TX);
    d.wait_used(TX, 2, step::TX_DONE);
    // The host's answer arrives in the second rx buffer.
    d.wait_used(RX, 2, step::DATA);
    d.report_mem(used_len_at(rings(RX), 1));
    d.report_mem(pong_buf + hdr::TYPE_OP);
    d.report_mem(pong_buf + hdr::LEN);
    d.report_bytes(pong_buf + HDR, pong_buf + hdr::LEN, 64, step::DATA_LEN);
    d.checkpoint();

    let running = rig.start(d.finish());
    let mut host = accept_within(&listener, Duration::from_secs(20));
    host.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut got = vec![0u8; PING.len()];
    host.read_exact(&mut got).expect("the guest's payload");
    assert_eq!(got, PING, "guest to host");
    host.write_all(PONG).expect("host to guest");
    let end = running.finish();
    let log = rig.stop_events();

    assert_eq!(end.exit, VcpuExit::Hlt, "{:?}", end.reports);
    let pong_len = u32::try_from(PONG.len()).expect("short");
    let mut expected = words(&[
        HDR,
        type_and_op(op::RESPONSE),
        HOST_PORT,
        GUEST_PORT,
        HDR + pong_len,
        type_and_op(op::RW),
        pong_len,
    ]);
    expected.extend(PONG.iter().copied().map(Report::Byte));
    expected.push(Report::Checkpoint(live_state()));
    assert_eq!(end.reports, expected);
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    assert!(log.kicks[TXQ] >= 1 && log.backend_events >= 1, "{log:?}");
    assert_eq!(rig.used_idx(TX), 2);
    assert_eq!(
        rig.vsock
            .lock()
            .expect("vsock")
            .device()
            .backend()
            .connection_count(),
        1
    );
    drop(host);
}

#[test]
fn queue_size_not_a_power_of_two_needs_reset_and_the_driver_recovers() {
    let Some(kvm) = kvm_or_skip("queue_size_not_a_power_of_two_needs_reset") else {
        return;
    };
    let rig = VsockRig::new(kvm);
    let negotiated = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    let mut d = Driver::new(VSOCK_BASE);
    d.negotiate(VERSION_1, false);
    d.write(reg::QUEUE_SEL, 0);
    d.write(reg::QUEUE_NUM, 6);
    d.report(reg::STATUS);
    d.checkpoint();
    // A broken device refuses DRIVER_OK.
    d.driver_ok(true);
    // The driver resets it and starts over, correctly this time.
    d.set_status(0);
    d.report(reg::STATUS);
    d.bring_up(VERSION_1, 3, false);
    d.report(reg::STATUS);
    d.checkpoint();
    let (end, log, rig) = rig.run(d.finish());

    assert_eq!(end.exit, VcpuExit::Hlt, "{:?}", end.reports);
    let broken = TransportState {
        status: negotiated | status::NEEDS_RESET,
        activated: false,
        acked_features: VERSION_1,
        broken: Some("queue 0 size 6 is not a power of two of at most 1024".into()),
    };
    let needs_reset = u32::from(negotiated | status::NEEDS_RESET);
    assert_eq!(
        end.reports,
        vec![
            Report::Word(needs_reset),
            Report::Checkpoint(broken),
            Report::Word(needs_reset),
            Report::Word(0),
            Report::Word(u32::from(live_state().status)),
            Report::Checkpoint(live_state()),
        ]
    );
    assert!(rig.vsock.lock().expect("vsock").is_live());
    assert!(log.errors.is_empty(), "{:?}", log.errors);
}

#[test]
fn queue_moved_after_driver_ok_needs_reset_and_is_no_longer_served() {
    let Some(kvm) = kvm_or_skip("queue_moved_after_driver_ok_needs_reset") else {
        return;
    };
    let rig = VsockRig::new(kvm);
    let listener = rig.listen(HOST_PORT);
    let mut d = Driver::new(VSOCK_BASE);
    d.bring_up(VERSION_1, 3, false);
    d.checkpoint();
    // CVE-2026-5747's pattern: point the tx queue elsewhere once the device is live.
    d.write(reg::QUEUE_SEL, TX);
    d.write(reg::QUEUE_DESC_LOW, rings(TX).desc + 0x100);
    d.report(reg::STATUS);
    d.checkpoint();
    // The guest goes on as if nothing happened: a REQUEST on the old layout, kicked.
    post_rx_buffers(&mut d);
    send_request(&mut d);
    d.report(reg::STATUS);
    let (end, log, rig) = rig.run(d.finish());

    assert_eq!(end.exit, VcpuExit::Hlt, "{:?}", end.reports);
    let needs_reset = live_state().status | status::NEEDS_RESET;
    let broken = TransportState {
        status: needs_reset,
        activated: false,
        acked_features: VERSION_1,
        broken: Some("queue 1 register 0x80 written after driver_ok".into()),
    };
    assert_eq!(
        end.reports,
        vec![
            Report::Checkpoint(live_state()),
            Report::Word(u32::from(needs_reset)),
            Report::Checkpoint(broken.clone()),
            Report::Word(u32::from(needs_reset)),
        ]
    );
    assert_eq!(rig.state(), broken);
    // The device stopped: the kicks never reached it, nothing was used or forwarded.
    assert!(!rig.vsock.lock().expect("vsock").is_live());
    assert_eq!(log.kicks, [0, 0, 0], "{log:?}");
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    assert_eq!((rig.used_idx(RX), rig.used_idx(TX)), (0, 0));
    assert!(
        !readable_within(listener.as_raw_fd(), Duration::ZERO),
        "no connection reached the host"
    );
}

#[test]
fn descriptor_outside_ram_breaks_the_device_and_the_guest_sees_needs_reset() {
    let Some(kvm) = kvm_or_skip("descriptor_outside_ram_breaks_the_device") else {
        return;
    };
    let rig = VsockRig::new(kvm);
    let mut d = Driver::new(VSOCK_BASE);
    d.bring_up(VERSION_1, 3, false);
    // CVE-2019-18960's class: a tx buffer the device must not read.
    d.desc(TX, 0, OUTSIDE_RAM, HDR, 0, 0);
    d.publish(TX, 0, 0);
    d.notify(TX);
    d.wait_status(status::NEEDS_RESET, step::NEEDS_RESET);
    d.report(reg::STATUS);
    d.checkpoint();
    let (end, log, rig) = rig.run(d.finish());

    assert_eq!(end.exit, VcpuExit::Hlt, "{:?}", end.reports);
    let needs_reset = live_state().status | status::NEEDS_RESET;
    let broken = TransportState {
        status: needs_reset,
        activated: false,
        acked_features: VERSION_1,
        broken: Some("device reported an error".into()),
    };
    assert_eq!(
        end.reports,
        vec![
            Report::Word(u32::from(needs_reset)),
            Report::Checkpoint(broken),
        ]
    );
    assert!(
        matches!(
            log.errors.as_slice(),
            [MmioVsockError::Device(VsockError::Packet {
                queue: "tx",
                ..
            })]
        ),
        "{:?}",
        log.errors
    );
    assert_eq!(rig.used_idx(TX), 0);
    assert!(!rig.vsock.lock().expect("vsock").is_live());
}

#[test]
fn a_guest_waiting_in_vain_gives_up_at_its_deadline_and_says_where() {
    let Some(kvm) = kvm_or_skip("a_guest_waiting_in_vain_gives_up") else {
        return;
    };
    let mut rig = VsockRig::new(kvm);
    if let Some(probe) = rig.probe.as_mut() {
        probe.set_poll_deadline(Duration::from_millis(200));
    }
    let mut d = Driver::new(VSOCK_BASE);
    d.bring_up(VERSION_1, 3, false);
    // Nothing will ever be received: no buffers, no host.
    d.wait_used(RX, 1, step::RESPONSE);
    d.report(reg::STATUS);
    let (end, log, _rig) = rig.run(d.finish());
    assert_eq!(end.exit, VcpuExit::Hlt);
    assert_eq!(end.reports, vec![Report::Fail(step::RESPONSE)]);
    assert!(log.errors.is_empty(), "{:?}", log.errors);
}
