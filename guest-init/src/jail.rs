//! Kyua's jail execenv on Linux: starts an exec's process with `clone(2)` in a fresh set of
//! namespaces, so that it is PID 1 of its own pid namespace (killing it ends everything in the
//! jail, and the reaper reaps it like any other exec), with its own `/proc`, hostname and — with
//! a vnet — a network of only `lo`, up.
//!
//! guest-init is multi-threaded, so between the clone and the exec the child makes only
//! async-signal-safe system calls: everything it needs (paths, argv, environment, the interface
//! request) is allocated before the clone. A step that fails writes its number and errno to a
//! close-on-exec pipe and exits 126; the parent names the step, so a jail that cannot be set up
//! is a clear error and never a hang.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;

use lab_proto::message::{NS_IPC, NS_MOUNT, NS_NET, NS_PID, NS_UTS};
use lab_proto::{Isolation, Job};

use crate::exec::{Spawn, Spawned};
use crate::reaper::Reaper;
use crate::sys;

/// The clone flags for a set of `NS_*` bits (unknown bits were refused before).
fn clone_flags(namespaces: u32) -> libc::c_ulong {
    [
        (NS_MOUNT, libc::CLONE_NEWNS),
        (NS_PID, libc::CLONE_NEWPID),
        (NS_UTS, libc::CLONE_NEWUTS),
        (NS_IPC, libc::CLONE_NEWIPC),
        (NS_NET, libc::CLONE_NEWNET),
    ]
    .into_iter()
    .filter(|(bit, _)| namespaces & bit != 0)
    .fold(0, |flags, (_, flag)| flags | flag as libc::c_ulong)
}

/// The child's steps between clone and exec, in order; the number is what the child reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    Signals = 1,
    Private,
    Proc,
    Hostname,
    Loopback,
    Session,
    Stdio,
    Chdir,
    Groups,
    Gid,
    Uid,
    Exec,
}

impl Step {
    const ALL: [Step; 12] = [
        Step::Signals,
        Step::Private,
        Step::Proc,
        Step::Hostname,
        Step::Loopback,
        Step::Session,
        Step::Stdio,
        Step::Chdir,
        Step::Groups,
        Step::Gid,
        Step::Uid,
        Step::Exec,
    ];

    fn from_u8(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u8 == n)
    }

    fn describe(self) -> &'static str {
        match self {
            Step::Signals => "cannot reset signals",
            Step::Private => "cannot make / private in the new mount namespace",
            Step::Proc => "cannot mount a fresh /proc",
            Step::Hostname => "cannot set the hostname",
            Step::Loopback => "cannot bring lo up",
            Step::Session => "cannot start a session",
            Step::Stdio => "cannot set up stdin, stdout and stderr",
            Step::Chdir => "cannot change to the working directory",
            Step::Groups => "cannot drop the supplementary groups",
            Step::Gid => "cannot set the group",
            Step::Uid => "cannot set the user",
            Step::Exec => "cannot exec",
        }
    }
}

/// Everything the child needs, allocated before the clone (the child may not allocate).
struct Plan {
    namespaces: u32,
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: CString,
    hostname: Option<CString>,
    user: Option<(u32, u32)>,
    root: CString,
    proc_dir: CString,
    proc_fs: CString,
    /// The request for `lo`, name filled in.
    lo: libc::ifreq,
}

/// The fds the child puts in place; all above 2 and close-on-exec.
#[derive(Debug, Clone, Copy)]
struct ChildFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    status: RawFd,
}

/// A null-terminated array of pointers into `strings` (which must outlive its use).
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

impl Plan {
    fn new(
        job: &Job,
        iso: &Isolation,
        program: &Path,
        env: &[(String, String)],
    ) -> io::Result<Self> {
        let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in string");
        // SAFETY: ifreq is plain old data (a name and a union of integers and arrays); zeroed
        // is a valid value.
        let mut lo: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in lo.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as libc::c_char;
        }
        Ok(Self {
            namespaces: iso.namespaces,
            program: CString::new(program.as_os_str().as_bytes()).map_err(nul)?,
            argv: job
                .argv
                .iter()
                .map(|a| sys::cstring(a))
                .collect::<io::Result<_>>()?,
            env: env
                .iter()
                .map(|(k, v)| sys::cstring(&format!("{k}={v}")))
                .collect::<io::Result<_>>()?,
            cwd: sys::cstring(if job.cwd.is_empty() { "/" } else { &job.cwd })?,
            hostname: (!iso.hostname.is_empty())
                .then(|| sys::cstring(&iso.hostname))
                .transpose()?,
            user: job.user,
            root: sys::cstring("/")?,
            proc_dir: sys::cstring("/proc")?,
            proc_fs: sys::cstring("proc")?,
            lo,
        })
    }
}

/// Where `program` is: itself when it has a slash, else the first executable file of that
/// name in the environment's `PATH` (looked up here: the child may not allocate).
pub fn resolve(program: &str, env: &[(String, String)]) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/bin:/bin", |(_, v)| v.as_str());
    if !program.is_empty() {
        for dir in path.split(':') {
            let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(program);
            let executable = std::fs::metadata(&candidate).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            });
            if executable {
                return Ok(candidate);
            }
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

/// Starts `job` in the namespaces of `iso` with the environment `env`. The reaper learns of
/// the process before it can exit; a jail that could not be set up is [`Spawn::NotRun`].
pub fn spawn(
    job: &Job,
    iso: &Isolation,
    env: &[(String, String)],
    reaper: &Reaper,
) -> io::Result<Spawn> {
    let program = match resolve(&job.argv[0], env) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Spawn::NotRun {
                line: format!("lab: cannot run {}: {e}", job.argv[0]),
                code: 127,
            })
        }
    };
    let plan = Plan::new(job, iso, &program, env)?;
    let stdin = sys::above_stdio(File::open("/dev/null")?.into())?;
    let (stdout_r, stdout_w) = sys::pipe()?;
    let (stderr_r, stderr_w) = sys::pipe()?;
    let (status_r, status_w) = sys::pipe()?;
    let (stdout_w, stderr_w, status_w) = (
        sys::above_stdio(stdout_w)?,
        sys::above_stdio(stderr_w)?,
        sys::above_stdio(status_w)?,
    );
    let fds = ChildFds {
        stdin: stdin.as_raw_fd(),
        stdout: stdout_w.as_raw_fd(),
        stderr: stderr_w.as_raw_fd(),
        status: status_w.as_raw_fd(),
    };
    let argv = pointers(&plan.argv);
    let envp = pointers(&plan.env);
    let flags = clone_flags(plan.namespaces) | libc::SIGCHLD as libc::c_ulong;
    let guard = reaper.spawning();
    // SAFETY: clone without CLONE_VM and with a null stack is fork with namespaces: the child
    // runs on a copy-on-write copy of this thread's stack and memory. It only runs `child`,
    // which makes async-signal-safe system calls on memory prepared above, and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret == 0 {
        child(&plan, &argv, &envp, fds);
    }
    if ret < 0 {
        let e = io::Error::last_os_error();
        drop(guard);
        return Ok(Spawn::NotRun {
            line: format!(
                "lab: cannot create the jail's namespaces ({e}); does the kernel have them?"
            ),
            code: 126,
        });
    }
    let pid = libc::pid_t::try_from(ret).map_err(|_| io::Error::other("pid out of range"))?;
    // Opened while the reaper is held off, like a plain exec's.
    let pidfd = sys::pidfd_open(pid);
    let exited = guard.register(pid);
    drop((stdin, stdout_w, stderr_w, status_w));
    let failed = match read_status(status_r) {
        Ok(failed) => failed,
        Err(e) => {
            // SAFETY: kill takes integers only; the pid is ours until the reaper delivers it.
            // Killing the jail's init ends its whole pid namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = exited.recv();
            return Err(e);
        }
    };
    match failed {
        None => Ok(Spawn::Started(Spawned {
            pid,
            pidfd,
            exited,
            stdout: File::from(stdout_r),
            stderr: File::from(stderr_r),
        })),
        Some((step, errno)) => {
            // The child exits 126 right after reporting; its status says nothing more.
            let _ = exited.recv();
            let err = io::Error::from_raw_os_error(errno);
            let (line, code) = match step {
                Some(Step::Exec) => (
                    crate::exec::cannot_run(&job.argv[0], &err),
                    if errno == libc::ENOENT { 127 } else { 126 },
                ),
                Some(step) => (format!("lab: jail: {}: {err}", step.describe()), 126),
                None => (
                    "lab: jail: the child failed an unknown step".to_string(),
                    126,
                ),
            };
            Ok(Spawn::NotRun { line, code })
        }
    }
}

/// Reads the child's report: nothing (EOF at its exec) or the step that failed and its errno.
fn read_status(status: OwnedFd) -> io::Result<Option<(Option<Step>, i32)>> {
    let mut file = File::from(status);
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    match got {
        0 => Ok(None),
        5 => Ok(Some((
            Step::from_u8(buf[0]),
            i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]),
        ))),
        n => Err(io::Error::other(format!(
            "short report of {n} bytes from the jail"
        ))),
    }
}

/// The child: sets the jail up and execs; on failure reports the step and exits 126.
fn child(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: ChildFds,
) -> ! {
    let step = match setup(plan, argv, envp, fds) {
        Ok(never) => match never {},
        Err(step) => step,
    };
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let e = errno.to_le_bytes();
    let report = [step as u8, e[0], e[1], e[2], e[3]];
    // SAFETY: write and _exit are async-signal-safe; `report` outlives the write.
    unsafe {
        libc::write(fds.status, report.as_ptr().cast(), report.len());
        libc::_exit(126)
    }
}

/// `Err(step)` when a system call's result says it failed (errno is left as it set it).
fn check(ret: libc::c_long, step: Step) -> Result<(), Step> {
    if ret < 0 {
        Err(step)
    } else {
        Ok(())
    }
}

/// The steps between clone and exec. Only async-signal-safe system calls: no allocation, no
/// locks, no libc wrappers that assume they know every thread (set*id go straight to the
/// kernel, for this one thread).
fn setup(
    plan: &Plan,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    fds: ChildFds,
) -> Result<Infallible, Step> {
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset; sigprocmask and signal
    // change only this process's signal state (std's spawn does the same: libstd ignores
    // SIGPIPE, which must not leak into the job).
    let ret = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        let masked = libc::sigprocmask(libc::SIG_SETMASK, &set, ptr::null_mut());
        if masked < 0 || libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
            -1
        } else {
            0
        }
    };
    check(ret, Step::Signals)?;
    if plan.namespaces & NS_MOUNT != 0 {
        // SAFETY: `root` is a valid C string in `plan`; a propagation change takes no source,
        // type or data.
        let ret = unsafe {
            libc::mount(
                ptr::null(),
                plan.root.as_ptr(),
                ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                ptr::null(),
            )
        };
        check(ret.into(), Step::Private)?;
        if plan.namespaces & NS_PID != 0 {
            // SAFETY: the strings are valid C strings in `plan`; no data.
            let ret = unsafe {
                libc::mount(
                    plan.proc_fs.as_ptr(),
                    plan.proc_dir.as_ptr(),
                    plan.proc_fs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    ptr::null(),
                )
            };
            check(ret.into(), Step::Proc)?;
        }
    }
    if let Some(name) = &plan.hostname {
        // SAFETY: `name` points to `len` valid bytes in `plan`.
        let ret = unsafe { libc::sethostname(name.as_ptr(), name.as_bytes().len()) };
        check(ret.into(), Step::Hostname)?;
    }
    if plan.namespaces & NS_NET != 0 {
        loopback_up(plan.lo)?;
    }
    // SAFETY: setsid takes no arguments.
    let ret = unsafe { libc::setsid() };
    check(ret.into(), Step::Session)?;
    for (from, to) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
        // SAFETY: both are fds; `from` is above 2 (so no earlier dup2 replaced it) and dup2
        // clears close-on-exec on `to`.
        let ret = unsafe { libc::dup2(from, to) };
        check(ret.into(), Step::Stdio)?;
    }
    // SAFETY: `cwd` is a valid C string in `plan`.
    let ret = unsafe { libc::chdir(plan.cwd.as_ptr()) };
    check(ret.into(), Step::Chdir)?;
    if let Some((uid, gid)) = plan.user {
        // Raw set*id system calls: they change this thread's credentials only, which in the
        // child is the whole process. libc's wrappers would try to signal guest-init's other
        // threads, which do not exist here.
        let none: *const libc::gid_t = ptr::null();
        // SAFETY: an empty group list; the null pointer is not read.
        let ret = unsafe { libc::syscall(libc::SYS_setgroups, 0 as libc::c_ulong, none) };
        check(ret, Step::Groups)?;
        // SAFETY: an integer argument only.
        let ret = unsafe { libc::syscall(libc::SYS_setgid, libc::c_ulong::from(gid)) };
        check(ret, Step::Gid)?;
        // SAFETY: an integer argument only.
        let ret = unsafe { libc::syscall(libc::SYS_setuid, libc::c_ulong::from(uid)) };
        check(ret, Step::Uid)?;
    }
    // SAFETY: `program` is a valid C string and `argv`/`envp` are null-terminated arrays of
    // pointers into `plan`'s strings, all alive until the exec replaces this image.
    unsafe { libc::execve(plan.program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(Step::Exec)
}

/// Brings `lo` up in the (new) network namespace: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP.
fn loopback_up(mut lo: libc::ifreq) -> Result<(), Step> {
    // SAFETY: socket takes integers only; the result is checked.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(sock.into(), Step::Loopback)?;
    // SAFETY: `sock` is open and `lo` is a valid ifreq naming "lo" that the kernel fills in.
    let got = unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut lo) };
    let set = if got < 0 {
        got
    } else {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { lo.ifr_ifru.ifru_flags };
        lo.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: `sock` is open and `lo` is a valid ifreq.
        unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &lo) }
    };
    // Read errno before close can change it.
    let result = check(set.into(), Step::Loopback);
    if result.is_ok() {
        // SAFETY: `sock` is ours; a failed close changes nothing for the job.
        unsafe { libc::close(sock) };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_bits_become_clone_flags() {
        assert_eq!(clone_flags(0), 0);
        assert_eq!(
            clone_flags(NS_MOUNT | NS_PID),
            (libc::CLONE_NEWNS | libc::CLONE_NEWPID) as libc::c_ulong
        );
        assert_eq!(
            clone_flags(lab_proto::message::NS_ALL),
            (libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWNET) as libc::c_ulong
        );
    }

    #[test]
    fn steps_survive_the_report() {
        for step in Step::ALL {
            assert_eq!(Step::from_u8(step as u8), Some(step));
        }
        assert_eq!(Step::from_u8(0), None);
        assert_eq!(Step::from_u8(200), None);
    }

    #[test]
    fn programs_are_found_like_a_shell_finds_them() {
        let env = |path: &str| vec![("PATH".to_string(), path.to_string())];
        assert_eq!(
            resolve("sh", &env("/nonexistent:/bin")).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            resolve("./x", &env("/bin")).unwrap(),
            PathBuf::from("./x"),
            "a slash means no lookup"
        );
        let missing = resolve("no-such-program-anywhere", &env("/bin:/usr/bin")).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        assert!(resolve("", &env("/bin")).is_err());
        // A directory of that name is not a program.
        assert!(resolve("tmp", &env("/")).is_err());
    }

    #[test]
    fn a_plan_holds_c_strings_and_refuses_nul() {
        let job = Job {
            cwd: String::new(),
            ..Job::new(["sh", "-c", "true"])
        };
        let iso = Isolation::jail("j1", true);
        let env = vec![("A".to_string(), "b".to_string())];
        let plan = Plan::new(&job, &iso, Path::new("/bin/sh"), &env).unwrap();
        assert_eq!(plan.cwd.as_bytes(), b"/");
        assert_eq!(plan.env[0].as_bytes(), b"A=b");
        assert_eq!(plan.hostname.as_ref().unwrap().as_bytes(), b"j1");
        assert_eq!(pointers(&plan.argv).len(), 4);
        assert!(pointers(&plan.argv)[3].is_null());
        assert_eq!(
            plan.lo.ifr_name[..3],
            [b'l' as libc::c_char, b'o' as libc::c_char, 0]
        );
        let bad = Job::new(["sh", "a\0b"]);
        assert!(Plan::new(&bad, &iso, Path::new("/bin/sh"), &env).is_err());
    }
}
