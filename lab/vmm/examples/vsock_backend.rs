//! Serves one VM's vsock device to QEMU as a vhost-user-vsock backend:
//! `vsock_backend <vhost-user socket> <hybrid-vsock uds path> [guest cid]`. Exits 0 when QEMU
//! disconnects, 1 when serving failed or the guest broke the device.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (socket, uds, cid) = match args.as_slice() {
        [s, u] => (PathBuf::from(s), PathBuf::from(u), Ok(3)),
        [s, u, c] => (PathBuf::from(s), PathBuf::from(u), c.parse::<u64>()),
        _ => {
            eprintln!("usage: vsock_backend <vhost-user socket> <uds path> [guest cid]");
            return ExitCode::from(2);
        }
    };
    let Ok(cid) = cid else {
        eprintln!("vsock_backend: the guest cid must be a number");
        return ExitCode::from(2);
    };
    match lab_vmm::vhost_user::serve(&socket, &uds, cid) {
        Ok(()) => {
            eprintln!("vsock_backend: the VM disconnected");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            eprintln!("vsock_backend: {text}");
            ExitCode::FAILURE
        }
    }
}
