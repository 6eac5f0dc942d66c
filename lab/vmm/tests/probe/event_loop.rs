//! The vsock device's event loop in miniature, as the builder's will run it: one thread
//! waiting (epoll) on the transport's queue eventfds and the muxer's epoll fd, and calling the
//! adapter's `handle_queue_event` / `handle_backend_event` when one is ready. It keeps going
//! after a device error (which breaks only that device) and hands back what it saw.

use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use lab_vmm::devices::virtio::mmio::vsock::{MmioVsock, MmioVsockError};
use lab_vmm::devices::virtio::vsock::VsockMuxer;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The epoll token of the muxer's fd; queue `i`'s eventfd is token `i`.
const BACKEND: u64 = 100;
/// The epoll token of the stop eventfd.
const STOP: u64 = 101;

/// The device under the loop.
pub type SharedVsock = Arc<Mutex<MmioVsock<VsockMuxer>>>;

/// What the loop did.
#[derive(Debug, Default)]
pub struct LoopLog {
    /// Kicks seen per queue (rx, tx, event).
    pub kicks: [usize; 3],
    /// Times the muxer's fd was ready.
    pub backend_events: usize,
    /// What the handlers returned as errors, in order.
    pub errors: Vec<MmioVsockError>,
}

/// A running event loop.
pub struct EventLoop {
    stop: EventFd,
    thread: Option<JoinHandle<LoopLog>>,
}

impl EventLoop {
    /// Starts the loop for `vsock`, whose transport's queue eventfds are `queue_events`.
    pub fn start(vsock: SharedVsock, queue_events: Vec<EventFd>) -> Self {
        let epoll = Epoll::new().expect("epoll");
        let add = |fd, token| {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .expect("epoll add");
        };
        for (token, event) in (0u64..).zip(&queue_events) {
            add(event.as_raw_fd(), token);
        }
        let backend_fd = vsock
            .lock()
            .expect("vsock lock")
            .device()
            .backend()
            .as_raw_fd();
        add(backend_fd, BACKEND);
        let stop = EventFd::new(EFD_NONBLOCK).expect("stop eventfd");
        add(stop.as_raw_fd(), STOP);
        let thread = std::thread::Builder::new()
            .name("vsock-events".into())
            .spawn(move || run(&epoll, &vsock, &queue_events))
            .expect("event loop thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the loop and returns what it saw.
    pub fn stop(mut self) -> LoopLog {
        self.stop.write(1).expect("stop");
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("event loop thread")
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.stop.write(1);
            let _ = thread.join();
        }
    }
}

fn run(epoll: &Epoll, vsock: &SharedVsock, queue_events: &[EventFd]) -> LoopLog {
    let mut log = LoopLog::default();
    let mut events = [EpollEvent::default(); 8];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("epoll wait: {e}"),
        };
        for event in &events[..n] {
            let result = match event.data() {
                STOP => return log,
                BACKEND => {
                    log.backend_events += 1;
                    vsock
                        .lock()
                        .expect("vsock lock")
                        .handle_backend_event(event.event_set())
                }
                token => {
                    let index = usize::try_from(token).expect("small token");
                    // Reading the counter re-arms the eventfd; several kicks are one event.
                    let _ = queue_events[index].read();
                    log.kicks[index] += 1;
                    vsock.lock().expect("vsock lock").handle_queue_event(index)
                }
            };
            if let Err(err) = result {
                log.errors.push(err);
            }
        }
    }
}
