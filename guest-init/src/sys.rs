//! Thin, checked wrappers over the system calls guest-init needs that std does not offer.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// `s` as a C string; a NUL inside is an error.
pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in string"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `mount(2)`.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (source, target, fstype, data) = (
        cstring(source)?,
        cstring(target)?,
        cstring(fstype)?,
        cstring(data)?,
    );
    // SAFETY: all four pointers are valid NUL-terminated strings that outlive the call; mount
    // does not keep them.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })?;
    Ok(())
}

/// `finit_module(2)` with module parameters (`name=value …`).
pub fn finit_module_with(file: &std::fs::File, params: &str) -> io::Result<()> {
    let params = cstring(params)?;
    // SAFETY: the fd is open for the duration of the call (borrowed from `file`) and `params`
    // is a valid NUL-terminated string; the syscall takes no other pointers.
    let ret =
        unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `delete_module(2)` of module `name`, without waiting (`O_NONBLOCK`, as rmmod does).
pub fn delete_module(name: &str) -> io::Result<()> {
    let name = cstring(name)?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call; the
    // syscall takes no other pointers.
    let ret = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `reboot(2)` with `cmd` (`RB_POWER_OFF`, `RB_AUTOBOOT`). Returns only on failure.
pub fn reboot(cmd: libc::c_int) -> io::Error {
    // SAFETY: reboot takes no pointers; as PID 1 we hold CAP_SYS_BOOT.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// `sync(2)`.
pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// Whether `fd` is open.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any integer is harmless; it fails with EBADF when not open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Makes `/dev/console` the standard input, output and error.
pub fn reopen_console() -> io::Result<()> {
    let path = cstring("/dev/console")?;
    // SAFETY: `path` is a valid NUL-terminated string; the returned fd is checked.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) })?;
    for target in 0..3 {
        if fd != target {
            // SAFETY: both are valid fds; dup2 replaces `target` atomically.
            check(unsafe { libc::dup2(fd, target) })?;
        }
    }
    if fd > 2 {
        // SAFETY: `fd` is ours and no longer needed (0..3 are duplicates).
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Puts the terminal on `fd` into raw mode: no echo, no line editing, no newline translation,
/// 8-bit clean, so that binary frames pass unchanged.
pub fn make_raw(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: termios is plain old data; zeroed is a valid value that tcgetattr overwrites.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `t` is a valid, writable termios.
    check(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) })?;
    // SAFETY: `t` is a valid termios obtained above.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: `fd` is open and `t` is a valid termios.
    check(unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) })?;
    Ok(())
}

/// A stream connected over AF_VSOCK to `port` on `cid` (2 is the host).
pub fn vsock_connect(cid: u32, port: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers only; the result is checked before use.
    let fd =
        check(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; zeroed is a valid value whose fields are set below.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_vm>())
        .expect("sockaddr_vm is small");
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes that outlives the call; the fd is open.
    check(unsafe { libc::connect(sock.as_raw_fd(), std::ptr::addr_of!(addr).cast(), len) })?;
    Ok(sock)
}

/// `pidfd_open(2)`: an fd that polls readable when `pid` exits.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers; the result is checked before use.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resource usage and status of a reaped child.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// The raw wait status.
    pub status: libc::c_int,
    /// User CPU in microseconds.
    pub user_us: u64,
    /// System CPU in microseconds.
    pub sys_us: u64,
    /// Peak RSS in KiB.
    pub max_rss_kib: u64,
}

fn timeval_us(t: libc::timeval) -> u64 {
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
}

/// `wait4(-1)`: blocks until any child exits and reaps it. `Ok(None)` when there are no children.
pub fn wait_any() -> io::Result<Option<(libc::pid_t, Reaped)>> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; zeroed is valid and wait4 overwrites it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid, writable and outlive the call.
        let ret = unsafe { libc::wait4(-1, &mut status, 0, &mut usage) };
        if ret > 0 {
            let reaped = Reaped {
                status,
                user_us: timeval_us(usage.ru_utime),
                sys_us: timeval_us(usage.ru_stime),
                max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            };
            return Ok(Some((ret, reaped)));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Sends `signal` to process group `pgid`.
pub fn kill_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill takes integers only; a stale group is reported as ESRCH and ignored.
    unsafe { libc::kill(-pgid, signal) };
}

/// Makes the calling process a session (and process group) leader. For `pre_exec`.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments; async-signal-safe, so fine between fork and exec.
    check(unsafe { libc::setsid() })?;
    Ok(())
}

/// The kernel release (`uname -r`).
/// Raises the soft core-size limit to the hard one, as Kyua does for every test it runs
/// (`utils::unlimit_core_size`): the jobs PID 1 starts inherit it, so a test that wants a core
/// dump gets one.
pub fn unlimit_core() -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the kernel to write.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit for the kernel to read.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the system's hostname (the UTS namespace's).
pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: `name` points to `len` valid bytes.
    let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The guest's uptime in milliseconds (CLOCK_BOOTTIME).
pub fn uptime_ms() -> u64 {
    // SAFETY: timespec is plain old data; zeroed is valid and clock_gettime overwrites it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid and writable; CLOCK_BOOTTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000
}

/// Whether a path exists (a tiny helper for mount points).
pub fn exists(path: &str) -> bool {
    Path::new(path).exists()
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two ints that outlives the call.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just returned by the kernel and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fd` moved to a number above 2 (close-on-exec), so that a child can `dup2` it onto its
/// standard streams without one clobbering another.
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: `fd` is open; F_DUPFD_CLOEXEC returns a new fd (checked) and touches no memory.
    let dup = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `dup` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}
