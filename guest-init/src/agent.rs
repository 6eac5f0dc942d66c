//! The agent's request loop: reads lab's requests from the channel and serves them — execs on
//! threads of their own, kills, puts (written beside the target and renamed into place once the
//! hash checks out), gets (streamed with their hash) — until lab asks for a shutdown. A
//! heartbeat goes out every [`HEARTBEAT`] so that lab can tell a live agent from a wedged VM.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_proto::message::MAX_FILE_CHUNK;
use lab_proto::{read_frame, GuestMessage, HostMessage};
use sha2::{Digest, Sha256};

use crate::channel::Sender;
use crate::exec::{self, Running};
use crate::fetch::Fetches;
use crate::reaper::Reaper;
use crate::sys;

/// How often the agent says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Why the loop ended.
#[derive(Debug)]
pub enum End {
    /// lab asked for it.
    Shutdown,
    /// The channel closed or broke.
    ChannelClosed(String),
}

/// A file being written from lab's chunks: a put, or a module fetched on demand.
pub(crate) struct Put {
    path: PathBuf,
    partial: PathBuf,
    file: File,
    mode: u32,
    size: u64,
    written: u64,
    hash: Sha256,
    sha256: [u8; 32],
}

impl Put {
    /// Appends `data`; fails (and the caller drops the put) when it is more than announced or
    /// the write fails.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), String> {
        if self.written + data.len() as u64 > self.size {
            return Err(format!("{}: more data than announced", self.path.display()));
        }
        self.file.write_all(data).map_err(|e| {
            // The guest's files live in its RAM: a full tmpfs means too little memory.
            let hint = if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::ENOMEM)) {
                " (files put in the guest live in its RAM: raise --memory, or run with --root \
                 host so that a suite the host has is not copied)"
            } else {
                ""
            };
            format!("{}: write failed: {e}{hint}", self.path.display())
        })?;
        self.written += data.len() as u64;
        self.hash.update(data);
        Ok(())
    }

    /// Abandons the put, removing its partial file.
    pub(crate) fn discard(self) {
        let _ = fs::remove_file(&self.partial);
    }
}

/// Serves requests from `input` until shutdown or the channel ends; module files lab sends for
/// the guest's modprobe go to `fetches`.
pub fn serve(mut input: File, out: &Sender, reaper: &Reaper, fetches: Option<&Fetches>) -> End {
    let beat = out.clone();
    let _ = std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || loop {
            std::thread::sleep(HEARTBEAT);
            if beat
                .send(&GuestMessage::Heartbeat {
                    uptime_ms: sys::uptime_ms(),
                })
                .is_err()
            {
                return;
            }
        });
    let running = Running::default();
    let mut puts: HashMap<u32, Put> = HashMap::new();
    loop {
        let payload = match read_frame(&mut input) {
            Ok(Some(p)) => p,
            Ok(None) => return End::ChannelClosed("end of stream".into()),
            Err(e) => return End::ChannelClosed(e.to_string()),
        };
        let msg = match HostMessage::decode(&payload) {
            Ok(m) => m,
            Err(e) => {
                let _ = out.send(&GuestMessage::Log {
                    line: format!("ignored a malformed request: {e}"),
                });
                continue;
            }
        };
        match msg {
            HostMessage::Exec { id, job } => {
                let (sender, reaper, running) = (out.clone(), reaper.clone(), running.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("exec-{id}"))
                    .spawn(move || {
                        if let Err(e) = exec::run(id, &job, &sender, &reaper, &running) {
                            let _ = sender.send(&GuestMessage::Error {
                                id,
                                message: format!("exec failed: {e}"),
                            });
                        }
                    });
                if let Err(e) = spawned {
                    let _ = out.send(&GuestMessage::Error {
                        id,
                        message: format!("cannot start a thread: {e}"),
                    });
                }
            }
            HostMessage::Kill { id, signal } => {
                running.kill(id, signal);
            }
            HostMessage::PutStart {
                id,
                path,
                mode,
                size,
                sha256,
            } => match start_put(&path, mode, size, sha256) {
                Ok(put) => {
                    puts.insert(id, put);
                }
                Err(e) => {
                    let _ = out.send(&GuestMessage::Error {
                        id,
                        message: format!("cannot write {path}: {e}"),
                    });
                }
            },
            HostMessage::PutData { id, data } => {
                if let Some(put) = puts.get_mut(&id) {
                    if let Err(why) = put.write(&data) {
                        if let Some(put) = puts.remove(&id) {
                            put.discard();
                        }
                        let _ = out.send(&GuestMessage::Error {
                            id,
                            message: format!("put {why}"),
                        });
                    }
                }
            }
            HostMessage::PutEnd { id } => {
                if let Some(put) = puts.remove(&id) {
                    let reply = match finish_put(put) {
                        Ok(()) => GuestMessage::Done { id },
                        Err(message) => GuestMessage::Error { id, message },
                    };
                    let _ = out.send(&reply);
                }
            }
            HostMessage::Get { id, path } => {
                let sender = out.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name(format!("get-{id}"))
                        .spawn(move || {
                            if let Err(e) = send_file(id, Path::new(&path), &sender) {
                                let _ = sender.send(&GuestMessage::Error {
                                    id,
                                    message: format!("cannot read {path}: {e}"),
                                });
                            }
                        });
                if let Err(e) = spawned {
                    let _ = out.send(&GuestMessage::Error {
                        id,
                        message: format!("cannot start a thread: {e}"),
                    });
                }
            }
            HostMessage::ModuleStart { id, size, sha256 } => {
                if let Some(f) = fetches {
                    f.on_start(id, size, sha256);
                }
            }
            HostMessage::ModuleData { id, data } => {
                if let Some(f) = fetches {
                    f.on_data(id, &data);
                }
            }
            HostMessage::ModuleEnd { id } => {
                if let Some(f) = fetches {
                    f.on_end(id);
                }
            }
            HostMessage::ModuleUnavailable { id, message } => {
                if let Some(f) = fetches {
                    f.on_unavailable(id, message);
                }
            }
            HostMessage::Shutdown => {
                for put in puts.into_values() {
                    put.discard();
                }
                return End::Shutdown;
            }
        }
    }
}

pub(crate) fn start_put(path: &str, mode: u32, size: u64, sha256: [u8; 32]) -> io::Result<Put> {
    let target = Path::new(path);
    if !target.is_absolute()
        || target
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path without ..",
        ));
    }
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    let partial = target.with_file_name(format!(".{}.lab-partial", name.to_string_lossy()));
    let file = File::create(&partial)?;
    Ok(Put {
        path: target.to_path_buf(),
        partial,
        file,
        mode,
        size,
        written: 0,
        hash: Sha256::new(),
        sha256,
    })
}

pub(crate) fn finish_put(put: Put) -> Result<(), String> {
    let Put {
        path,
        partial,
        file,
        mode,
        size,
        written,
        hash,
        sha256,
    } = put;
    let fail = |message: String| {
        let _ = fs::remove_file(&partial);
        Err(message)
    };
    if written != size {
        return fail(format!(
            "put {}: {written} of {size} bytes arrived",
            path.display()
        ));
    }
    if hash.finalize().as_slice() != sha256 {
        return fail(format!("put {}: sha256 mismatch", path.display()));
    }
    if let Err(e) = file
        .sync_all()
        .and_then(|()| fs::set_permissions(&partial, fs::Permissions::from_mode(mode & 0o7777)))
    {
        return fail(format!("put {}: {e}", path.display()));
    }
    fs::rename(&partial, &path).or_else(|e| fail(format!("put {}: {e}", path.display())))
}

fn send_file(id: u32, path: &Path, out: &Sender) -> io::Result<()> {
    let mut file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    out.send(&GuestMessage::FileStart {
        id,
        size: meta.len(),
        mode: meta.permissions().mode() & 0o7777,
    })?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; MAX_FILE_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        out.send(&GuestMessage::FileData {
            id,
            data: buf[..n].to_vec(),
        })?;
    }
    out.send(&GuestMessage::FileEnd {
        id,
        sha256: hash.finalize().into(),
    })
}
