//! PID 1's side of modules on demand: a Unix socket ([`crate::modprobe::FETCH_SOCKET`]) where
//! the guest's modprobe asks for a module file the image lacks. PID 1 asks lab for it over the
//! agent channel ([`GuestMessage::FetchModule`]), writes what comes back under the module
//! directory (checked by size and SHA-256, renamed into place), and tells every modprobe
//! waiting for that file. Two modprobes asking for the same file share one fetch.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use lab_proto::GuestMessage;

use crate::agent::{finish_put, start_put, Put};
use crate::channel::Sender;
use crate::modprobe::{FETCH_SOCKET, FETCH_TIMEOUT};

/// Fetch ids are the guest's own: the high bit keeps them apart from lab's request ids.
const FETCH_ID_BASE: u32 = 0x8000_0000;

/// At most this many fetches in flight; more are refused rather than queued without bound.
const MAX_PENDING: usize = 64;

/// The longest request line a client may send.
const MAX_REQUEST: u64 = 1024;

type Reply = mpsc::Sender<Result<(), String>>;

/// One fetch in flight.
struct Pending {
    /// Its path under the module directory.
    path: String,
    /// Clients waiting for it.
    waiters: Vec<Reply>,
    /// The file being written, once lab started sending it.
    put: Option<Put>,
}

#[derive(Default)]
struct State {
    next: u32,
    by_path: HashMap<String, u32>,
    pending: HashMap<u32, Pending>,
}

/// The fetch service.
#[derive(Clone)]
pub struct Fetches {
    state: Arc<Mutex<State>>,
    out: Sender,
    dir: String,
}

impl Fetches {
    /// Binds the socket and serves clients on threads of their own; files land under `dir`
    /// (`/lib/modules/<release>`).
    pub fn start(out: &Sender, dir: String) -> io::Result<Self> {
        if let Some(parent) = std::path::Path::new(FETCH_SOCKET).parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(FETCH_SOCKET);
        let listener = UnixListener::bind(FETCH_SOCKET)?;
        std::fs::set_permissions(FETCH_SOCKET, std::fs::Permissions::from_mode(0o600))?;
        let fetches = Self {
            state: Arc::new(Mutex::new(State::default())),
            out: out.clone(),
            dir,
        };
        let server = fetches.clone();
        std::thread::Builder::new()
            .name("module-fetches".into())
            .spawn(move || {
                for client in listener.incoming().flatten() {
                    let handler = server.clone();
                    let _ = std::thread::Builder::new()
                        .name("module-fetch".into())
                        .spawn(move || handler.serve(client));
                }
            })?;
        Ok(fetches)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One client: a path on a line; the answer `ok` or `error WHY`.
    fn serve(&self, client: UnixStream) {
        let _ = client.set_read_timeout(Some(FETCH_TIMEOUT));
        let mut line = String::new();
        let read = client
            .try_clone()
            .map(|c| BufReader::new(c.take(MAX_REQUEST)).read_line(&mut line));
        let answer = match read {
            Ok(Ok(_)) => self.fetch(line.trim_end()),
            _ => Err("bad request".to_string()),
        };
        let mut client = client;
        let _ = match answer {
            Ok(()) => writeln!(client, "ok"),
            Err(why) => writeln!(client, "error {}", why.replace('\n', " ")),
        };
    }

    /// Asks lab for the module at `path` (or joins a fetch of it in flight) and waits.
    fn fetch(&self, path: &str) -> Result<(), String> {
        if !valid_path(path) {
            return Err(format!("'{path}' is not a module path"));
        }
        let (tx, rx) = mpsc::channel();
        let new_id = {
            let mut state = self.lock();
            if let Some(&id) = state.by_path.get(path) {
                if let Some(p) = state.pending.get_mut(&id) {
                    p.waiters.push(tx);
                }
                None
            } else if state.pending.len() >= MAX_PENDING {
                return Err(format!("more than {MAX_PENDING} module fetches in flight"));
            } else {
                let id = FETCH_ID_BASE | (state.next & !FETCH_ID_BASE);
                state.next = state.next.wrapping_add(1);
                state.by_path.insert(path.to_string(), id);
                state.pending.insert(
                    id,
                    Pending {
                        path: path.to_string(),
                        waiters: vec![tx],
                        put: None,
                    },
                );
                Some(id)
            }
        };
        if let Some(id) = new_id {
            let sent = self.out.send(&GuestMessage::FetchModule {
                id,
                path: path.to_string(),
            });
            if let Err(e) = sent {
                self.complete(id, Err(format!("cannot reach lab: {e}")));
            }
        }
        rx.recv_timeout(FETCH_TIMEOUT)
            .unwrap_or_else(|_| Err(format!("lab did not send {path} within {FETCH_TIMEOUT:?}")))
    }

    /// Lab starts sending fetch `id`.
    pub fn on_start(&self, id: u32, size: u64, sha256: [u8; 32]) {
        let started = {
            let mut state = self.lock();
            let Some(p) = state.pending.get_mut(&id) else {
                return;
            };
            let target = format!("{}/{}", self.dir, p.path);
            match start_put(&target, 0o644, size, sha256) {
                Ok(put) => {
                    p.put = Some(put);
                    Ok(())
                }
                Err(e) => Err(format!("cannot write {target}: {e}")),
            }
        };
        if let Err(why) = started {
            self.complete(id, Err(why));
        }
    }

    /// A chunk of fetch `id`.
    pub fn on_data(&self, id: u32, data: &[u8]) {
        let failed = {
            let mut state = self.lock();
            let Some(put) = state.pending.get_mut(&id).and_then(|p| p.put.as_mut()) else {
                return;
            };
            put.write(data).err()
        };
        if let Some(why) = failed {
            self.complete(id, Err(why));
        }
    }

    /// Fetch `id` is complete: the file is checked and moved into place.
    pub fn on_end(&self, id: u32) {
        let put = self.lock().pending.get_mut(&id).and_then(|p| p.put.take());
        let result = match put {
            Some(put) => finish_put(put),
            None => Err("module end before its start".to_string()),
        };
        self.complete(id, result);
    }

    /// Lab has no such module.
    pub fn on_unavailable(&self, id: u32, message: String) {
        self.complete(id, Err(message));
    }

    /// Ends fetch `id` and tells its waiters.
    fn complete(&self, id: u32, result: Result<(), String>) {
        let pending = {
            let mut state = self.lock();
            let pending = state.pending.remove(&id);
            if let Some(p) = &pending {
                state.by_path.remove(&p.path);
            }
            pending
        };
        if let Some(p) = pending {
            if let Some(put) = p.put {
                put.discard();
            }
            for w in p.waiters {
                let _ = w.send(result.clone());
            }
        }
    }
}

/// A relative module path without `..`: `kernel/…/name.ko`.
fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.ends_with(".ko")
        && !path.contains('\0')
        && path.split('/').all(|c| !c.is_empty() && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_module_paths_are_asked_for() {
        assert!(valid_path("kernel/drivers/net/veth.ko"));
        for bad in [
            "",
            "/etc/passwd",
            "kernel/../../x.ko",
            "kernel/x.ko.xz",
            "a//b.ko",
            "x",
        ] {
            assert!(!valid_path(bad), "{bad}");
        }
    }
}
