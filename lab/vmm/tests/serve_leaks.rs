//! Serving one VM after another leaves the process's fd and thread counts where they started:
//! each `serve` closes its sockets, epoll and timer fds, and its threads end. (Alone in its
//! test binary, so no other test's fds or threads blur the counts.)

mod common;

use std::time::Duration;

use common::{start_frontend, wait_for};
use lab_vmm::vhost_user::serve;

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn twenty_vms_in_a_row_leak_no_fds_or_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |i: usize| {
        let socket = dir.path().join(format!("vhost{i}.sock"));
        let uds = dir.path().join(format!("v{i}.sock"));
        let server = {
            let (socket, uds) = (socket.clone(), uds.clone());
            std::thread::spawn(move || serve(&socket, &uds, 3))
        };
        let driver = start_frontend(&socket, dir.path());
        let host = std::os::unix::net::UnixStream::connect(&uds).expect("host connection");
        drop(driver);
        server
            .join()
            .expect("serve did not panic")
            .expect("serve ended cleanly");
        drop(host);
    };
    // One run first, so that lazily created process state is in the baseline.
    run(0);
    std::thread::sleep(Duration::from_millis(100));
    let (fds, threads) = (count("/proc/self/fd"), count("/proc/self/task"));
    for i in 1..=20 {
        run(i);
    }
    wait_for("fd and thread counts back at the baseline", || {
        count("/proc/self/task") <= threads && count("/proc/self/fd") <= fds
    });
}
