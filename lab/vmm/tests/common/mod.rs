//! Shared by the integration tests: a vhost-user frontend with shared, file-backed guest
//! memory (what QEMU is to the backend), and a guest driver writing rings and descriptors.

#![allow(dead_code)]

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

pub const MEM_SIZE: usize = 1 << 20;
pub const QSIZE: u16 = 16;
pub const NEXT: u16 = 1;
pub const WRITE: u16 = 2;

/// Where queue `q`'s rings lie in guest memory.
pub fn ring_base(q: usize) -> u64 {
    0x1000 * (q as u64 + 1)
}

/// The guest driver's view of the three queues, and the frontend connection.
pub struct Driver {
    pub mem: GuestMemoryMmap,
    kicks: Vec<EventFd>,
    pub calls: Vec<EventFd>,
    avail: [u16; 3],
    _frontend: Frontend,
}

impl Driver {
    /// Writes descriptor `index` of queue `q`.
    pub fn desc(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(ring_base(q) + 16 * u64::from(index));
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.mem.write_slice(&d, at).expect("in memory");
    }

    /// Publishes `head` on queue `q` and kicks it.
    pub fn publish(&mut self, q: usize, head: u16) {
        let avail = ring_base(q) + 0x100;
        let slot = avail + 4 + 2 * u64::from(self.avail[q] % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(slot))
            .expect("in memory");
        self.avail[q] = self.avail[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail[q], GuestAddress(avail + 2))
            .expect("in memory");
        self.kicks[q].write(1).expect("kick");
    }

    /// Queue `q`'s used index.
    pub fn used_idx(&self, q: usize) -> u16 {
        self.mem
            .read_obj(GuestAddress(ring_base(q) + 0x200 + 2))
            .expect("in memory")
    }
}

/// Connects to the backend as QEMU would and sets up the three queues.
pub fn start_frontend(socket: &Path, dir: &Path) -> Driver {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("guest-ram"))
        .expect("guest ram file");
    file.set_len(MEM_SIZE as u64).expect("size");
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
        GuestAddress(0),
        MEM_SIZE,
        Some(FileOffset::new(file, 0)),
    )])
    .expect("shared guest memory");
    let region = mem.iter().next().expect("one region");
    let info = VhostUserMemoryRegionInfo::from_guest_region(region).expect("file backed");
    let host_base = info.userspace_addr;

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut frontend = loop {
        match Frontend::connect(socket, 3) {
            Ok(f) => break f,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot connect to the backend: {e}"),
        }
    };
    frontend.set_owner().expect("owner");
    let features = frontend.get_features().expect("features");
    assert_ne!(
        features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
        0
    );
    // virtio 1.x and protocol features; no event index, no indirect descriptors.
    frontend
        .set_features((1 << 32) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits())
        .expect("set features");
    let proto = frontend.get_protocol_features().expect("protocol features");
    assert!(proto.contains(VhostUserProtocolFeatures::CONFIG));
    frontend
        .set_protocol_features(VhostUserProtocolFeatures::CONFIG)
        .expect("set protocol features");
    frontend.set_mem_table(&[info]).expect("memory table");

    let mut kicks = Vec::new();
    let mut calls = Vec::new();
    for q in 0..3 {
        let base = ring_base(q);
        let config = VringConfigData {
            queue_max_size: QSIZE,
            queue_size: QSIZE,
            flags: 0,
            desc_table_addr: host_base + base,
            used_ring_addr: host_base + base + 0x200,
            avail_ring_addr: host_base + base + 0x100,
            log_addr: None,
        };
        frontend.set_vring_num(q, QSIZE).expect("num");
        frontend.set_vring_addr(q, &config).expect("addr");
        frontend.set_vring_base(q, 0).expect("base");
        let call = EventFd::new(0).expect("eventfd");
        let kick = EventFd::new(0).expect("eventfd");
        frontend.set_vring_call(q, &call).expect("call");
        frontend.set_vring_kick(q, &kick).expect("kick");
        frontend.set_vring_enable(q, true).expect("enable");
        kicks.push(kick);
        calls.push(call);
    }
    Driver {
        mem,
        kicks,
        calls,
        avail: [0; 3],
        _frontend: frontend,
    }
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
