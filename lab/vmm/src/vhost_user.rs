//! The vsock device served out of process as a vhost-user-vsock backend (rust-vmm's
//! `vhost-user-backend`), for QEMU's `-device vhost-user-vsock-device`. QEMU keeps the
//! virtio-mmio transport and guest memory (which must be a shared memfd) and hands this
//! process the memory map, the rings and a kick/call eventfd pair per queue; the device, its
//! checks and the host side all run here.
//!
//! [`serve`] runs one VM's device: it binds the hybrid-vsock socket, listens for QEMU's
//! vhost-user connection, and returns when QEMU disconnects (the VM ended) or the device
//! breaks (a hostile or buggy guest), after closing every host connection.

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{
    ShutdownHandle, VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT,
};
use virtio_queue::Queue;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::virtio::vsock::{
    MuxerError, Notify, VsockBackend, VsockDevice, VsockError, VsockMuxer, EVQ, MAX_QUEUE_SIZE,
    NUM_QUEUES, RXQ, TXQ,
};

/// The epoll token of the muxer's fd in the vring worker (0..=3 are the queues and the
/// library's own event).
const BACKEND_EVENT: u16 = NUM_QUEUES as u16 + 1;
/// The epoll token of the eventfd that ends the vring worker. (Not the library's
/// `exit_event`: in vhost-user-backend 0.24 its consumer fd is never closed, one fd per VM.)
const STOP_EVENT: u16 = BACKEND_EVENT + 1;

/// Why serving a VM's vsock device failed.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserVsockError {
    /// The device could not be set up (a reserved guest CID).
    #[error("failed to create the vsock device")]
    Device(#[source] VsockError),
    /// The host side could not be set up.
    #[error("failed to set up the host side of vsock")]
    Muxer(#[source] MuxerError),
    /// The vhost-user daemon could not be set up.
    #[error("failed to set up the vhost-user daemon")]
    Daemon(#[source] DaemonError),
    /// Listening on the vhost-user socket failed.
    #[error("failed to listen on the vhost-user socket {}", path.display())]
    Listen {
        /// The socket's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: vhost::vhost_user::Error,
    },
    /// The vhost-user connection failed (other than by QEMU going away).
    #[error("vhost-user connection failed")]
    Connection(#[source] DaemonError),
    /// Creating the worker's stop event failed.
    #[error("failed to create the stop event")]
    StopEvent(#[source] std::io::Error),
    /// The guest broke the device.
    #[error("vsock device broke: {0}")]
    DeviceBroken(String),
}

/// An error of the `vhost-user-backend` crate, whose type implements no `std::error::Error`.
#[derive(Debug)]
pub struct DaemonError(pub vhost_user_backend::Error);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DaemonError {}

/// The vhost-user face of a [`VsockDevice`] bridged to a [`VsockMuxer`].
pub struct VhostUserVsock {
    device: VsockDevice<VsockMuxer>,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    /// Ends the vhost-user connection when the device breaks.
    shutdown: Arc<Mutex<Option<ShutdownHandle>>>,
}

impl std::fmt::Debug for VhostUserVsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserVsock")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl VhostUserVsock {
    /// A backend for a guest with `guest_cid` whose host side is the socket `uds_path`.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Self, VhostUserVsockError> {
        let muxer = VsockMuxer::new(guest_cid, uds_path).map_err(VhostUserVsockError::Muxer)?;
        let device = VsockDevice::new(guest_cid, muxer).map_err(VhostUserVsockError::Device)?;
        Ok(Self {
            device,
            mem: None,
            shutdown: Arc::new(Mutex::new(None)),
        })
    }

    /// The device.
    pub fn device(&self) -> &VsockDevice<VsockMuxer> {
        &self.device
    }

    /// Once the device broke, ends the vhost-user connection so that [`serve`] returns.
    fn on_error(&self, err: &VsockError) {
        if matches!(err, VsockError::Broken { .. }) || self.device.broken().is_some() {
            let handle = self.shutdown.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(h) = handle.as_ref() {
                h.shutdown();
            }
        }
    }
}

/// Runs `f` on the queues of `vrings` listed in `want`, each write-locked (in index order, so
/// the lock order is fixed), passing `None` for a queue that is not ready and enabled.
fn with_queues<R>(
    vrings: &[VringRwLock],
    f: impl FnOnce([Option<&mut Queue>; NUM_QUEUES]) -> R,
) -> R {
    let mut guards: Vec<_> = vrings
        .iter()
        .take(NUM_QUEUES)
        .map(|v| v.get_mut())
        .collect();
    let mut queues: [Option<&mut Queue>; NUM_QUEUES] = [None, None, None];
    for (slot, guard) in queues.iter_mut().zip(guards.iter_mut()) {
        let enabled = guard.is_enabled();
        let queue = guard.get_queue_mut();
        if enabled && virtio_queue::QueueT::ready(queue) {
            *slot = Some(queue);
        }
    }
    f(queues)
}

impl VhostUserBackendMut for VhostUserVsock {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        usize::from(MAX_QUEUE_SIZE)
    }

    fn features(&self) -> u64 {
        self.device.avail_features() | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&mut self, features: u64) {
        let virtio = features & !VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if let Err(e) = self.device.ack_features(virtio) {
            self.on_error(&e);
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // CONFIG: QEMU reads the guest CID from the backend's config space.
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn reset_device(&mut self) {
        self.device.reset();
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // Follows from the acked features, which the device already has.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut data = vec![0u8; size.min(256) as usize];
        self.device.read_config(u64::from(offset), &mut data);
        data
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn stop_vring(&mut self, queue_index: u32) -> std::io::Result<()> {
        self.device.stop_queue(queue_index as usize);
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if device_event == STOP_EVENT {
            // Ending `VringEpollHandler::run` with an error is how the worker thread stops.
            return Err(std::io::Error::other("vsock backend stopped"));
        }
        if self.device.broken().is_some() {
            return Ok(());
        }
        let Some(mem) = self.mem.as_ref().map(GuestAddressSpace::memory) else {
            if device_event == BACKEND_EVENT {
                if let Err(e) = self.device.handle_backend_event_unmapped(evset) {
                    self.on_error(&e);
                }
            }
            return Ok(());
        };
        let mem = &*mem;
        let device = &mut self.device;
        let result = with_queues(vrings, |[rxq, txq, evq]| -> Result<Notify, VsockError> {
            match usize::from(device_event) {
                RXQ => rxq.map_or(Ok(Notify::default()), |q| device.handle_rxq_event(mem, q)),
                TXQ => txq.map_or(Ok(Notify::default()), |q| {
                    device.handle_txq_event(mem, q, rxq)
                }),
                EVQ => evq.map_or(Ok(Notify::default()), |q| device.handle_evq_event(mem, q)),
                _ if device_event == BACKEND_EVENT => device.handle_backend_event(mem, evset, rxq),
                _ => Ok(Notify::default()),
            }
        });
        match result {
            Ok(notify) => {
                // The call eventfds are signalled with the queues unlocked.
                if notify.rx {
                    vrings[RXQ].signal_used_queue()?;
                }
                if notify.tx {
                    vrings[TXQ].signal_used_queue()?;
                }
            }
            Err(e) => self.on_error(&e),
        }
        Ok(())
    }
}

/// One VM's vsock device, bound and ready for QEMU: [`VsockServer::bind`] creates the host
/// socket and the vhost-user socket at once (so QEMU may start as soon as it returns), and
/// [`VsockServer::run`] serves until QEMU disconnects or the device breaks. The server is
/// `Send`: bind on the launching thread, run on a thread of its own.
pub struct VsockServer {
    // Field order matters: the daemon, whose drop joins the vring worker, goes before the
    // stop event that ends the worker (`Drop` writes it first).
    daemon: VhostUserDaemon<Arc<RwLock<VhostUserVsock>>>,
    listener: Listener,
    backend: Arc<RwLock<VhostUserVsock>>,
    socket: PathBuf,
    uds_path: PathBuf,
    stop: EventFd,
}

impl std::fmt::Debug for VsockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsockServer")
            .field("socket", &self.socket)
            .field("uds_path", &self.uds_path)
            .finish_non_exhaustive()
    }
}

impl VsockServer {
    /// Binds the hybrid-vsock socket `uds_path` (host side, see
    /// [`crate::devices::virtio::vsock`]; it must not exist) and the vhost-user socket `socket`
    /// (a stale file there is replaced) for a guest with `guest_cid`.
    pub fn bind(
        socket: &Path,
        uds_path: &Path,
        guest_cid: u64,
    ) -> Result<Self, VhostUserVsockError> {
        let backend = VhostUserVsock::new(guest_cid, uds_path)?;
        let muxer_fd = backend.device.backend().as_raw_fd();
        // Written when serving is over: the vring worker thread then ends.
        let stop = EventFd::new(EFD_NONBLOCK).map_err(VhostUserVsockError::StopEvent)?;
        let backend = Arc::new(RwLock::new(backend));
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let daemon = VhostUserDaemon::new("lab-vsock".into(), backend.clone(), mem)
            .map_err(|e| VhostUserVsockError::Daemon(DaemonError(e)))?;
        let registered = daemon.get_epoll_handlers().iter().try_for_each(|handler| {
            [(muxer_fd, BACKEND_EVENT), (stop.as_raw_fd(), STOP_EVENT)]
                .into_iter()
                .try_for_each(|(fd, token)| {
                    handler.register_listener(fd, EventSet::IN, u64::from(token))
                })
        });
        let listener = Listener::new(socket, true);
        let stop_worker = |daemon: VhostUserDaemon<_>| {
            // The daemon's drop joins the worker, which only the stop event ends.
            let _ = stop.write(1);
            drop(daemon);
        };
        if let Err(e) = registered {
            stop_worker(daemon);
            let err = DaemonError(vhost_user_backend::Error::StartDaemon(e));
            return Err(VhostUserVsockError::Daemon(err));
        }
        let listener = match listener {
            Ok(l) => l,
            Err(source) => {
                stop_worker(daemon);
                return Err(VhostUserVsockError::Listen {
                    path: socket.to_path_buf(),
                    source,
                });
            }
        };
        Ok(Self {
            daemon,
            listener,
            backend,
            socket: socket.to_path_buf(),
            uds_path: uds_path.to_path_buf(),
            stop,
        })
    }

    /// Waits for QEMU's vhost-user connection and serves it until QEMU disconnects (`Ok`, also
    /// when QEMU is killed) or the device breaks ([`VhostUserVsockError::DeviceBroken`]; the
    /// vhost-user connection is then closed). Either way every host connection is closed, the
    /// worker thread has ended and both socket files are gone when it returns.
    pub fn run(mut self) -> Result<(), VhostUserVsockError> {
        let started = self.daemon.start(&mut self.listener);
        let _ = std::fs::remove_file(&self.socket);
        let result = started.and_then(|()| {
            let shutdown = self
                .backend
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .shutdown
                .clone();
            *shutdown.lock().unwrap_or_else(PoisonError::into_inner) =
                self.daemon.shutdown_handle();
            self.daemon.wait()
        });
        // Ends the worker (joined when `self` drops, after this).
        let _ = self.stop.write(1);
        let mut backend = self.backend.write().unwrap_or_else(PoisonError::into_inner);
        backend.device.backend_mut().close_all();
        let _ = std::fs::remove_file(&self.uds_path);
        if let Some(reason) = backend.device.broken() {
            return Err(VhostUserVsockError::DeviceBroken(reason.to_string()));
        }
        match result {
            Ok(()) => Ok(()),
            Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => Ok(()),
            Err(e) => Err(VhostUserVsockError::Connection(DaemonError(e))),
        }
    }
}

impl Drop for VsockServer {
    fn drop(&mut self) {
        // Before the fields drop: the daemon's drop joins the worker, which this ends.
        let _ = self.stop.write(1);
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

/// Serves one VM's vsock device: [`VsockServer::bind`] then [`VsockServer::run`]. Binds the
/// hybrid-vsock socket `uds_path` and listens on `socket` for QEMU's vhost-user connection
/// (`-chardev socket,path=<socket>` with `-device vhost-user-vsock-device`), and runs until QEMU
/// disconnects (`Ok`) or the device breaks ([`VhostUserVsockError::DeviceBroken`]).
pub fn serve(socket: &Path, uds_path: &Path, guest_cid: u64) -> Result<(), VhostUserVsockError> {
    VsockServer::bind(socket, uds_path, guest_cid)?.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_virtio_1_indirect_event_idx_and_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = VhostUserVsock::new(3, &dir.path().join("v.sock")).expect("backend");
        let f = b.features();
        assert_ne!(f & (1 << 32), 0, "VIRTIO_F_VERSION_1");
        assert_ne!(f & (1 << 29), 0, "EVENT_IDX");
        assert_ne!(f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(), 0);
        assert_ne!(f & (1 << 28), 0, "INDIRECT_DESC");
        assert_eq!(f & (1 << 27), 0, "no ANY_LAYOUT");
        assert!(b
            .protocol_features()
            .contains(VhostUserProtocolFeatures::CONFIG));
        assert_eq!(b.get_config(0, 8), 3u64.to_le_bytes());
        assert_eq!(b.num_queues(), 3);
    }

    #[test]
    fn host_connections_are_taken_before_the_guest_maps_memory() {
        use crate::devices::virtio::vsock::test_utils::poll_readable;
        use std::io::Write;
        use std::os::unix::io::AsRawFd;
        let dir = tempfile::tempdir().expect("tempdir");
        let uds = dir.path().join("v.sock");
        let mut b = VhostUserVsock::new(3, &uds).expect("backend");
        let mut host = std::os::unix::net::UnixStream::connect(&uds).expect("connect");
        host.write_all(b"CONNECT 1234\n").expect("write");
        let fd = b.device().backend().as_raw_fd();
        for _ in 0..3 {
            if poll_readable(fd, 100) {
                b.handle_event(BACKEND_EVENT, EventSet::IN, &[], 0)
                    .expect("handled");
            }
        }
        // Level-triggered: had the events been left, the fd would stay ready and the worker
        // would spin until the guest driver came up.
        assert!(!poll_readable(fd, 0));
        assert!(b.device().backend().has_pending_rx(), "the request waits");
    }

    #[test]
    fn a_server_is_send_and_dropping_it_unbound_cleans_up() {
        fn assert_send<T: Send>() {}
        assert_send::<VsockServer>();
        let dir = tempfile::tempdir().expect("tempdir");
        let (socket, uds) = (dir.path().join("vhost.sock"), dir.path().join("v.sock"));
        let server = VsockServer::bind(&socket, &uds, 3).expect("bound");
        assert!(socket.exists() && uds.exists());
        // Never run: dropping it must end the worker thread (not hang) and remove the files.
        drop(server);
        assert!(!socket.exists() && !uds.exists());
    }

    #[test]
    fn a_reserved_cid_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = VhostUserVsock::new(2, &dir.path().join("v.sock")).expect_err("cid 2");
        assert!(matches!(err, VhostUserVsockError::Device(_)));
    }
}
