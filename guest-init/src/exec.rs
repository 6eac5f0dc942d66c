//! Runs one exec: spawns it in its own session with piped output (in a jail of its own when the
//! job asks for namespaces, in a fresh work directory when it asks for one), streams the output
//! to lab as it arrives (tagged with the exec's id), enforces the job's own timeout on its
//! process group, and reports how it ended. Many execs may run at once, each on its own thread.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab_proto::message::{MAX_HOSTNAME, MAX_OUTPUT_CHUNK, NS_UTS};
use lab_proto::{ExitStatus, GuestMessage, Isolation, Job, Stream, Usage};

use crate::channel::Sender;
use crate::jail;
use crate::reaper::Reaper;
use crate::sys::{self, Reaped};

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

/// A started process: its pid (and process group), what tells of its exit, and the read ends
/// of its output pipes.
#[derive(Debug)]
pub struct Spawned {
    /// The pid, which is also its process group.
    pub pid: libc::pid_t,
    /// Polls readable when it exits (opened before the reaper could reap it).
    pub pidfd: io::Result<OwnedFd>,
    /// Its exit status, from the reaper.
    pub exited: Receiver<Reaped>,
    /// Its standard output.
    pub stdout: File,
    /// Its standard error.
    pub stderr: File,
}

/// A process that started, or why none did (reported like a shell would).
#[derive(Debug)]
pub enum Spawn {
    /// It runs.
    Started(Spawned),
    /// It never ran: `line` goes to its stderr, `code` is its exit status.
    NotRun {
        /// The message.
        line: String,
        /// 127 when the program was not found, else 126.
        code: i32,
    },
}

/// A request that cannot be run as asked (refused with an Error, not an exit status).
fn refused(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message.into())
}

/// The job's isolation when it asks for namespaces; an error when it asks for what this agent
/// does not know or for a hostname without a UTS namespace.
fn jail_of(job: &Job) -> io::Result<Option<&Isolation>> {
    let Some(iso) = &job.isolation else {
        return Ok(None);
    };
    let unknown = iso.unknown_namespaces();
    if unknown != 0 {
        return Err(refused(format!(
            "isolation asks for namespaces this agent does not know (bits {unknown:#x})"
        )));
    }
    if !iso.hostname.is_empty() && iso.namespaces & NS_UTS == 0 {
        return Err(refused("isolation sets a hostname without a UTS namespace"));
    }
    if iso.hostname.len() > MAX_HOSTNAME {
        return Err(refused("isolation hostname is too long"));
    }
    Ok((iso.namespaces != 0).then_some(iso))
}

/// The exec's environment: [`BASE_ENV`] with the job's entries on top, in order (`KEY=VALUE`
/// sets, a bare `KEY` removes).
fn environment(job: &Job) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = BASE_ENV
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    for entry in &job.env {
        let Some((k, v)) = entry.split_once('=') else {
            // A bare name removes the variable.
            env.retain(|(key, _)| key != entry);
            continue;
        };
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
    }
    env
}

/// An exec's own work directory: created fresh before it runs, removed once it has exited
/// (when dropped, too, so that no early return leaves it behind).
#[derive(Debug)]
struct WorkDir {
    path: Option<PathBuf>,
}

impl WorkDir {
    /// Creates the job's `cwd` (parents as needed) with mode 0755, owned by the job's user.
    /// It must not exist yet: what is removed afterwards is only what was created here.
    fn create(job: &Job) -> io::Result<Option<Self>> {
        if !job.workdir {
            return Ok(None);
        }
        let path = Path::new(&job.cwd);
        let plain = path.components().all(|c| c != Component::ParentDir);
        if !path.is_absolute() || !plain || path.parent().is_none() {
            return Err(refused(format!(
                "a work directory needs an absolute cwd without .., other than /; got '{}'",
                job.cwd
            )));
        }
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot create the work directory {}: {e}", path.display()),
            )
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(named)?;
        }
        // 0755, as Kyua creates its work directories: a case that drops privileges must still
        // enter its own directory and the tree above it.
        fs::DirBuilder::new()
            .mode(0o755)
            .create(path)
            .map_err(named)?;
        let dir = Self {
            path: Some(path.to_path_buf()),
        };
        // The umask may have taken bits away; the mode is exact, then the owner is the job's.
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(named)?;
        if let Some((uid, gid)) = job.user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(named)?;
        }
        Ok(Some(dir))
    }

    /// Removes the directory; a failure goes to lab as a log line (the exec itself is done).
    fn remove(mut self, out: &Sender) {
        if let Some(path) = self.path.take() {
            if let Err(e) = fs::remove_dir_all(&path) {
                let _ = out.send(&GuestMessage::Log {
                    line: format!("cannot remove the work directory {}: {e}", path.display()),
                });
            }
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_dir_all(path);
        }
    }
}

/// Runs exec `id`, streaming to `out`; returns how it ended (also sent as Exit). A request
/// this agent cannot honour (unknown isolation, a bad work directory) is an error, sent by the
/// caller as the exec's Error.
pub fn run(
    id: u32,
    job: &Job,
    out: &Sender,
    reaper: &Reaper,
    running: &Running,
) -> io::Result<ExitStatus> {
    let started = Instant::now();
    let jail = jail_of(job)?;
    let env = environment(job);
    let workdir = WorkDir::create(job)?;
    let spawn = match jail {
        Some(iso) => jail::spawn(job, iso, &env, reaper)?,
        None => spawn_plain(job, &env, reaper)?,
    };
    let spawned = match spawn {
        Spawn::Started(spawned) => spawned,
        Spawn::NotRun { line, code } => {
            if let Some(dir) = workdir {
                dir.remove(out);
            }
            return not_run(id, out, &line, code);
        }
    };
    let Spawned {
        pid,
        pidfd,
        exited,
        stdout,
        stderr,
    } = spawned;
    running.insert(id, pid);
    let result = pidfd.and_then(|pidfd| stream(id, job, pid, &pidfd, stdout, stderr, out, started));
    // The exit status comes from the reaper once the process is gone (after a kill too; a
    // jail's init is reaped only once every process in its namespace is gone).
    let reaped = exited
        .recv()
        .map_err(|_| io::Error::other("reaper stopped"));
    running.remove(id);
    if let Some(dir) = workdir {
        dir.remove(out);
    }
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

/// Why `program` could not be run, as one line. ENOENT for a file that exists means its
/// interpreter is missing (the `#!` line's, or the dynamic loader); say which.
pub(crate) fn cannot_run(program: &str, e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENOENT) && Path::new(program).is_file() {
        if let Some(interpreter) = shebang(Path::new(program)) {
            return format!(
                "lab: cannot run {program}: its interpreter {interpreter} (its #! line) is not \
                 in the guest"
            );
        }
        return format!(
            "lab: cannot run {program}: {e} (the file exists: its dynamic loader or \
             interpreter is not in the guest)"
        );
    }
    format!("lab: cannot run {program}: {e}")
}

/// The interpreter a script's `#!` line names, if it has one (the first 256 bytes read).
fn shebang(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(str::to_string)
}

/// Starts `job` as a plain process in its own session, through std.
fn spawn_plain(job: &Job, env: &[(String, String)], reaper: &Reaper) -> io::Result<Spawn> {
    let mut cmd = Command::new(&job.argv[0]);
    cmd.args(&job.argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.current_dir(if job.cwd.is_empty() { "/" } else { &job.cwd });
    if let Some((uid, gid)) = job.user {
        // In the child, std sets the group, then (as PID 1 runs as root) drops the supplementary
        // groups, then sets the user.
        cmd.uid(uid).gid(gid);
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
            return Ok(Spawn::NotRun {
                line: cannot_run(&job.argv[0], &e),
                code,
            });
        }
    };
    let pid =
        libc::pid_t::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
    // Opened while the reaper is held off: once reaped, the pid could no longer be opened (or
    // could name another process).
    let pidfd = sys::pidfd_open(pid);
    let exited = guard.register(pid);
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        return Err(io::Error::other("spawned without its pipes"));
    };
    Ok(Spawn::Started(Spawned {
        pid,
        pidfd,
        exited,
        stdout: File::from(stdout),
        stderr: File::from(stderr),
    }))
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
#[expect(clippy::too_many_arguments, reason = "one exec's parts, used once")]
fn stream(
    id: u32,
    job: &Job,
    pid: libc::pid_t,
    pidfd: &OwnedFd,
    stdout: File,
    stderr: File,
    out: &Sender,
    started: Instant,
) -> io::Result<()> {
    out.send(&GuestMessage::Started {
        id,
        pid: pid.unsigned_abs(),
    })?;
    let mut stdout = Some(stdout);
    let mut stderr = Some(stderr);
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

#[cfg(test)]
mod tests {
    use super::*;
    use lab_proto::message::{NS_NET, NS_PID};

    #[test]
    fn the_jobs_environment_overrides_the_base_in_place() {
        let job = Job {
            env: vec![
                "HOME=/tmp".into(),
                "EMPTY=".into(),
                "NEW=a=b".into(),
                "LANG".into(),
                "NEVER_SET".into(),
            ],
            ..Job::new(["true"])
        };
        let env = environment(&job);
        // Two added, LANG removed (a bare name), NEVER_SET nothing to remove.
        assert_eq!(env.len(), BASE_ENV.len() + 1);
        assert_eq!(env[1], ("HOME".to_string(), "/tmp".to_string()));
        assert!(env.contains(&("EMPTY".to_string(), String::new())));
        assert!(env.contains(&("NEW".to_string(), "a=b".to_string())));
        assert!(!env.iter().any(|(k, _)| k == "LANG" || k == "NEVER_SET"));
    }

    #[test]
    fn isolation_is_checked_before_anything_runs() {
        let with = |namespaces, hostname: &str| Job {
            isolation: Some(Isolation {
                namespaces,
                hostname: hostname.into(),
            }),
            ..Job::new(["true"])
        };
        assert!(jail_of(&Job::new(["true"])).unwrap().is_none());
        assert!(
            jail_of(&with(0, "")).unwrap().is_none(),
            "no namespaces: plain"
        );
        assert!(jail_of(&with(NS_PID | NS_NET, "")).unwrap().is_some());
        assert!(jail_of(&with(NS_UTS, "j")).unwrap().is_some());
        let unknown = jail_of(&with(NS_PID | 1 << 20, "")).unwrap_err();
        assert!(unknown.to_string().contains("bits 0x100000"), "{unknown}");
        let renames_the_vm = jail_of(&with(NS_PID, "j")).unwrap_err();
        assert!(renames_the_vm
            .to_string()
            .contains("without a UTS namespace"));
        assert!(jail_of(&with(NS_UTS, &"h".repeat(MAX_HOSTNAME + 1))).is_err());
    }

    #[test]
    fn a_missing_interpreter_is_named() {
        let dir = std::env::temp_dir().join(format!("guest-init-shebang-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let script = dir.join("t.sh");
        fs::write(&script, "#!/usr/bin/no-such-shell -e\necho hi\n").unwrap();
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        let path = script.display().to_string();
        assert_eq!(
            cannot_run(&path, &enoent),
            format!(
                "lab: cannot run {path}: its interpreter /usr/bin/no-such-shell (its #! line) is \
                 not in the guest"
            )
        );
        fs::write(&script, b"\x7fELF").unwrap();
        assert!(cannot_run(&path, &enoent).contains("its dynamic loader or interpreter"));
        let gone = dir.join("gone").display().to_string();
        assert_eq!(
            cannot_run(&gone, &enoent),
            format!("lab: cannot run {gone}: {enoent}")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn work_directories_are_fresh_kyuas_mode_and_removed() {
        let base = std::env::temp_dir().join(format!("guest-init-test-{}", std::process::id()));
        let cwd = base.join("a/work");
        let job = Job {
            cwd: cwd.display().to_string(),
            workdir: true,
            ..Job::new(["true"])
        };
        let dir = WorkDir::create(&job).unwrap().unwrap();
        let meta = fs::metadata(&cwd).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
        fs::write(cwd.join("left-behind"), b"x").unwrap();
        // One that exists is refused, and left as it was.
        let again = WorkDir::create(&job).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert!(cwd.join("left-behind").exists());
        drop(dir);
        assert!(!cwd.exists(), "removed, contents and all");
        for bad in ["", "work", "/", "/tmp/../etc"] {
            let job = Job {
                cwd: bad.into(),
                workdir: true,
                ..Job::new(["true"])
            };
            let err = WorkDir::create(&job).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(WorkDir::create(&Job::new(["true"])).unwrap().is_none());
        let _ = fs::remove_dir_all(base);
    }
}
