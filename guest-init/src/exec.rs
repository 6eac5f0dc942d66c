//! Runs one exec: spawns it in its own session with piped output, streams the output to lab as
//! it arrives (tagged with the exec's id), enforces the job's own timeout on its process group,
//! and reports how it ended. Many execs may run at once, each on its own thread.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab_proto::message::MAX_OUTPUT_CHUNK;
use lab_proto::{ExitStatus, GuestMessage, Job, Stream, Usage};

use crate::channel::Sender;
use crate::reaper::Reaper;
use crate::sys;

/// The environment every exec starts from; the job's own entries override it.
pub const BASE_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("TERM", "dumb"),
    ("TZ", "UTC"),
    ("LANG", "C.UTF-8"),
    ("USER", "root"),
];

/// The running execs' process groups, by exec id (for Kill).
#[derive(Debug, Clone, Default)]
pub struct Running {
    groups: Arc<Mutex<HashMap<u32, libc::pid_t>>>,
}

impl Running {
    /// Signals exec `id`'s process group; false if no such exec runs.
    pub fn kill(&self, id: u32, signal: i32) -> bool {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        match groups.get(&id) {
            Some(&pgid) => {
                sys::kill_group(pgid, signal);
                true
            }
            None => false,
        }
    }

    fn insert(&self, id: u32, pgid: libc::pid_t) {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, pgid);
    }

    fn remove(&self, id: u32) {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Runs exec `id`, streaming to `out`; returns how it ended (also sent as Exit).
pub fn run(
    id: u32,
    job: &Job,
    out: &Sender,
    reaper: &Reaper,
    running: &Running,
) -> io::Result<ExitStatus> {
    let started = Instant::now();
    let mut cmd = Command::new(&job.argv[0]);
    cmd.args(&job.argv[1..])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in BASE_ENV {
        cmd.env(k, v);
    }
    for entry in &job.env {
        match entry.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(entry, ""),
        };
    }
    cmd.current_dir(if job.cwd.is_empty() { "/" } else { &job.cwd });
    if let Some((uid, gid)) = job.user {
        // In the child, std sets the group, then (as PID 1 runs as root) drops the supplementary
        // groups, then sets the user.
        cmd.uid(uid).gid(gid);
    }
    if let Some(option) = job.isolation.first() {
        // The suites' execenvs will define these; until then, refuse rather than run
        // unisolated what asked to be isolated.
        let line = format!("lab: isolation option '{option}' is not supported by this guest agent");
        return not_run(id, out, &line, 126);
    }
    // SAFETY: the closure only calls setsid, which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(sys::setsid);
    }
    let guard = reaper.spawning();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            drop(guard);
            // Like a shell: 127 when the program is not found, 126 when it cannot run.
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return not_run(
                id,
                out,
                &format!("lab: cannot run {}: {e}", job.argv[0]),
                code,
            );
        }
    };
    let pid =
        libc::pid_t::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    // Opened while the reaper is held off: once reaped, the pid could no longer be opened (or
    // could name another process).
    let pidfd = sys::pidfd_open(pid);
    let exited_rx = guard.register(pid);
    running.insert(id, pid);
    let result = pidfd.and_then(|pidfd| stream(id, job, pid, &pidfd, &mut child, out, started));
    // The exit status comes from the reaper once the process is gone (after a kill too).
    let reaped = exited_rx
        .recv()
        .map_err(|_| io::Error::other("reaper stopped"));
    running.remove(id);
    result?;
    let reaped = reaped?;
    let std_status = std::process::ExitStatus::from_raw(reaped.status);
    let status = match (std_status.code(), std_status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        (None, None) => ExitStatus::Code(-1),
    };
    let usage = Usage {
        wall_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        user_us: reaped.user_us,
        sys_us: reaped.sys_us,
        max_rss_kib: reaped.max_rss_kib,
    };
    out.send(&GuestMessage::Exit { id, status, usage })?;
    Ok(status)
}

/// Reports an exec that never ran, like a shell would: `line` on its stderr, exit `code`.
fn not_run(id: u32, out: &Sender, line: &str, code: i32) -> io::Result<ExitStatus> {
    out.send(&GuestMessage::Output {
        id,
        stream: Stream::Stderr,
        data: format!("{line}\n").into_bytes(),
    })?;
    let status = ExitStatus::Code(code);
    out.send(&GuestMessage::Exit {
        id,
        status,
        usage: Usage::default(),
    })?;
    Ok(status)
}

/// Streams the child's output until it has exited and its pipes are drained. After the exit,
/// pipes that stay open (a daemon it left behind) are drained only of what is already there.
fn stream(
    id: u32,
    job: &Job,
    pid: libc::pid_t,
    pidfd: &std::os::fd::OwnedFd,
    child: &mut std::process::Child,
    out: &Sender,
    started: Instant,
) -> io::Result<()> {
    out.send(&GuestMessage::Started {
        id,
        pid: pid.unsigned_abs(),
    })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let deadline = (job.timeout_ms > 0).then(|| started + Duration::from_millis(job.timeout_ms));
    let mut buf = vec![0u8; MAX_OUTPUT_CHUNK];
    let mut exited = false;
    let mut timed_out = false;
    loop {
        let mut fds = Vec::with_capacity(3);
        if let Some(s) = &stdout {
            fds.push(libc::pollfd {
                fd: s.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(s) = &stderr {
            fds.push(libc::pollfd {
                fd: s.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if fds.is_empty() && exited {
            return Ok(());
        }
        if !exited {
            fds.push(libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout_ms: libc::c_int = if exited {
            0
        } else {
            match deadline {
                Some(d) => i32::try_from(d.saturating_duration_since(Instant::now()).as_millis())
                    .unwrap_or(i32::MAX),
                None => -1,
            }
        };
        let nfds = libc::nfds_t::try_from(fds.len()).expect("at most three fds");
        // SAFETY: `fds` is a valid array of `nfds` pollfd structs that outlives the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if ready == 0 {
            if exited {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
                timed_out = true;
                let line = format!(
                    "lab: timed out after {} ms; killing the process group\n",
                    job.timeout_ms
                );
                out.send(&GuestMessage::Output {
                    id,
                    stream: Stream::Stderr,
                    data: line.into_bytes(),
                })?;
                sys::kill_group(pid, libc::SIGKILL);
            }
            continue;
        }
        for pfd in &fds {
            if pfd.revents == 0 {
                continue;
            }
            if pfd.fd == pidfd.as_raw_fd() {
                exited = true;
                continue;
            }
            let (slot, stream) = if stdout
                .as_ref()
                .is_some_and(|s| s.as_fd().as_raw_fd() == pfd.fd)
            {
                (&mut stdout as &mut dyn PipeSlot, Stream::Stdout)
            } else {
                (&mut stderr as &mut dyn PipeSlot, Stream::Stderr)
            };
            match slot.read_chunk(&mut buf) {
                Ok(0) => slot.close(),
                Ok(n) => out.send(&GuestMessage::Output {
                    id,
                    stream,
                    data: buf[..n].to_vec(),
                })?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => slot.close(),
            }
        }
    }
}

/// An optional pipe end that can be read and closed.
trait PipeSlot {
    fn read_chunk(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn close(&mut self);
}

impl<R: Read> PipeSlot for Option<R> {
    fn read_chunk(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Some(r) => r.read(buf),
            None => Ok(0),
        }
    }
    fn close(&mut self) {
        *self = None;
    }
}
