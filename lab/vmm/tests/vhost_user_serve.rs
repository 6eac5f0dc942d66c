//! `serve` end to end without QEMU: this test plays QEMU (a vhost-user frontend with shared,
//! file-backed guest memory) and the guest driver (writing rings and descriptors), and checks
//! that a host CONNECT reaches the guest as a REQUEST, and that a hostile descriptor chain ends
//! `serve` with `DeviceBroken` and closes the host's connection.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{start_frontend, wait_for, NEXT, WRITE};
use lab_vmm::vhost_user::{serve, VhostUserVsockError};
use vm_memory::{Bytes, GuestAddress};

#[test]
fn host_connect_reaches_the_guest_and_a_descriptor_loop_breaks_only_this_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("vhost.sock");
    let uds = dir.path().join("v.sock");
    let server = {
        let (socket, uds) = (socket.clone(), uds.clone());
        std::thread::spawn(move || serve(&socket, &uds, 3))
    };
    let mut driver = start_frontend(&socket, dir.path());

    // The host asks for guest port 1234; the guest driver offers one receive buffer.
    let mut host = UnixStream::connect(&uds).expect("hybrid vsock socket");
    host.write_all(b"CONNECT 1234\n").expect("connect line");
    driver.desc(0, 0, 0x10000, 4096, WRITE, 0);
    driver.publish(0, 0);
    wait_for("the request in the rx queue", || driver.used_idx(0) == 1);
    assert!(driver.calls[0].read().expect("interrupt") > 0);
    let mut hdr = [0u8; 44];
    driver
        .mem
        .read_slice(&mut hdr, GuestAddress(0x10000))
        .expect("in memory");
    let op = u16::from_le_bytes([hdr[30], hdr[31]]);
    let dst_port = u32::from_le_bytes(hdr[20..24].try_into().expect("4 bytes"));
    let dst_cid = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
    assert_eq!((op, dst_port, dst_cid), (1, 1234, 3), "a REQUEST to 3:1234");

    // A hostile transmit chain: descriptor 0 -> 1 -> 0.
    driver.desc(1, 0, 0x20000, 44, NEXT, 1);
    driver.desc(1, 1, 0x21000, 16, NEXT, 0);
    driver.publish(1, 0);

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.join());
    });
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("serve returned")
        .expect("serve did not panic");
    match result {
        Err(VhostUserVsockError::DeviceBroken(reason)) => {
            assert!(reason.contains("loops"), "{reason}");
        }
        other => panic!("expected DeviceBroken, got {other:?}"),
    }
    // The host's pending connection was closed, and the socket files are gone.
    host.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut rest = Vec::new();
    let _ = host.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert!(!uds.exists() && !socket.exists());
}

#[test]
fn serve_returns_ok_when_the_frontend_disconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("vhost.sock");
    let uds = dir.path().join("v.sock");
    let server = {
        let (socket, uds) = (socket.clone(), uds.clone());
        std::thread::spawn(move || serve(&socket, &uds, 3))
    };
    let driver = start_frontend(&socket, dir.path());
    drop(driver);
    let result = server.join().expect("serve did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(!uds.exists() && !socket.exists());
}
