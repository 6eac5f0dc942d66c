//! The VMM's seccomp policy (rust-vmm `seccompiler`): once the VM is built, every thread of
//! the process may make only the system calls running it needs, each as narrowly as its
//! arguments allow. [`install`] applies it to all threads at once (TSYNC), and threads started
//! afterwards (the vCPUs) inherit it, so no guest instruction runs unfiltered.
//!
//! What the running VMM does, and what it may therefore call:
//! - vCPU threads: `ioctl(KVM_RUN)` only, signals for the kick (`rt_sigaction` of the kick
//!   signal, `rt_sigreturn`, `tgkill` to this process), `futex`, thread start and exit;
//! - the device event loop: `epoll_wait`, eventfd `read`/`write`, the console `write`;
//! - the vsock muxer: `accept4` on its listener, `socket(AF_UNIX)` + `connect` to reach a host
//!   listener, `sendto`/`recvfrom`/`shutdown` on its streams, `ioctl(FIONBIO)`, `fcntl` for fd
//!   flags, `timerfd_settime`, `epoll_ctl`, and `unlink` of its socket file when it ends;
//! - the allocator and the runtime: `mmap`/`mprotect` without `PROT_EXEC`, `munmap`, `madvise`,
//!   `brk`, `mremap`, `sigaltstack`, `rt_sigprocmask`, `prctl(PR_SET_NAME)`, `clone` of threads
//!   only (`CLONE_THREAD`; `clone3` answers ENOSYS, so glibc falls back to `clone`), `getrandom`,
//!   clocks and sleeps.
//!
//! Nothing else: no `open`, no `execve`, no new processes, no sockets but Unix ones, no other
//! KVM ioctl. A call outside the list raises SIGSYS; the handler [`install`] sets up writes
//! `lab-vmm: error: seccomp blocked system call <nr>` to stderr and exits with
//! [`BLOCKED_EXIT_CODE`]. The `lab __vmm --no-seccomp` escape hatch skips all this, to debug.

use std::collections::BTreeMap;

use libc::{c_int, c_void, siginfo_t};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm_sys_util::signal::register_signal_handler;

/// The exit status of a VMM whose filter blocked a call (128 + SIGSYS, as a shell reports a
/// process SIGSYS killed).
pub const BLOCKED_EXIT_CODE: i32 = 128 + libc::SIGSYS;

/// `KVM_RUN`: `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xae80;

/// Why the filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A rule or the filter is malformed (a bug in this module).
    #[error("failed to build the seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("failed to install the seccomp filter")]
    Install(#[source] seccompiler::Error),
    /// The SIGSYS handler could not be installed.
    #[error("failed to install the seccomp violation handler")]
    Handler(#[source] vmm_sys_util::errno::Error),
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// One condition: argument `arg` compared with `op` to `value`.
fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(SeccompError::Build)
}

/// A rule of one condition.
fn rule(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(vec![cond(arg, op, value)?]).map_err(SeccompError::Build)
}

/// The allow-list: system call number → the rules one of which its arguments must meet
/// (none: any arguments). `pid` is this process (the only target `tgkill` may name).
pub fn allowed_syscalls(pid: u32) -> Result<Rules, SeccompError> {
    use SeccompCmpOp::{Eq, MaskedEq};
    let kick = crate::vstate::vcpu::kick_signal();
    let any = |nr: i64| (nr, Vec::new());
    let mut rules: Rules = [
        // Data on fds the VMM already holds: eventfds, the epoll fds, the console, sockets.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_ctl,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_timerfd_settime,
        libc::SYS_timerfd_gettime,
        // The vsock muxer's Unix streams.
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_shutdown,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
        // Threads, signals, memory, time.
        libc::SYS_futex,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_clone3,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_munmap,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_mremap,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_getrandom,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_restart_syscall,
    ]
    .into_iter()
    .map(any)
    .collect();
    let no_exec = || rule(2, MaskedEq(libc::PROT_EXEC as u64), 0);
    let clone_thread = libc::CLONE_THREAD as u64;
    let fd_flags = [libc::F_GETFD, libc::F_SETFD, libc::F_GETFL, libc::F_SETFL];
    let mut fcntl = Vec::new();
    for op in fd_flags {
        fcntl.push(rule(1, Eq, op as u64)?);
    }
    rules.extend([
        (
            libc::SYS_ioctl,
            vec![rule(1, Eq, KVM_RUN)?, rule(1, Eq, libc::FIONBIO)?],
        ),
        (libc::SYS_socket, vec![rule(0, Eq, libc::AF_UNIX as u64)?]),
        (libc::SYS_fcntl, fcntl),
        (libc::SYS_mmap, vec![no_exec()?]),
        (libc::SYS_mprotect, vec![no_exec()?]),
        (
            libc::SYS_clone,
            vec![rule(0, MaskedEq(clone_thread), clone_thread)?],
        ),
        (
            libc::SYS_prctl,
            vec![rule(0, Eq, libc::PR_SET_NAME as u64)?],
        ),
        (libc::SYS_tgkill, vec![rule(0, Eq, u64::from(pid))?]),
        // The vCPU kick handler, installed when the first vCPU starts.
        (libc::SYS_rt_sigaction, vec![rule(0, Eq, kick as u64)?]),
    ]);
    Ok(rules)
}

/// The allow-list filter: listed calls pass, the rest raise SIGSYS.
pub fn allow_list_filter(pid: u32) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        allowed_syscalls(pid)?,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Build)?;
    filter.try_into().map_err(SeccompError::Build)
}

/// The filter stacked under the allow-list: `clone3` fails with ENOSYS (its flags sit in
/// memory a filter cannot read, so threads are made through `clone`, whose flags it can).
/// The kernel takes the strictest answer of all filters, so ENOSYS beats the allow-list's pass.
pub fn clone3_filter() -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(SeccompError::Build)?;
    filter.try_into().map_err(SeccompError::Build)
}

/// Installs the SIGSYS handler and both filters on every thread of the process. Irreversible.
pub fn install() -> Result<(), SeccompError> {
    let clone3 = clone3_filter()?;
    let allow = allow_list_filter(std::process::id())?;
    register_signal_handler(libc::SIGSYS, report_blocked).map_err(SeccompError::Handler)?;
    seccompiler::apply_filter_all_threads(&clone3).map_err(SeccompError::Install)?;
    seccompiler::apply_filter_all_threads(&allow).map_err(SeccompError::Install)
}

/// The blocked-call message for system call `nr`, built without allocating.
fn blocked_message(nr: i64, buf: &mut [u8; 96]) -> usize {
    const PREFIX: &[u8] = b"lab-vmm: error: seccomp blocked system call ";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut at = PREFIX.len();
    let mut digits = [0u8; 20];
    let mut n = nr.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if nr < 0 {
        buf[at] = b'-';
        at += 1;
    }
    for &d in digits[..len].iter().rev() {
        buf[at] = d;
        at += 1;
    }
    buf[at] = b'\n';
    at + 1
}

extern "C" fn report_blocked(_: c_int, _: *mut siginfo_t, context: *mut c_void) {
    let nr = if context.is_null() {
        -1
    } else {
        // SAFETY: with SA_SIGINFO the kernel passes the interrupted thread's `ucontext_t` as
        // the third argument; for SIGSYS from seccomp its RAX holds the blocked call's number.
        unsafe { (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RAX as usize] }
    };
    let mut buf = [0u8; 96];
    let len = blocked_message(nr, &mut buf);
    // SAFETY: `write` and `_exit` are async-signal-safe and both allowed by the filter; `buf`
    // holds `len` initialized bytes.
    unsafe {
        libc::write(libc::STDERR_FILENO, buf.as_ptr().cast(), len);
        libc::_exit(BLOCKED_EXIT_CODE);
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const CHILD_ENV: &str = "LAB_VMM_SECCOMP_CHILD";

    #[test]
    fn both_filters_build() {
        assert!(allow_list_filter(1).expect("allow list").len() > 50);
        assert!(!clone3_filter().expect("clone3").is_empty());
        let rules = allowed_syscalls(1).expect("rules");
        for forbidden in [
            libc::SYS_execve,
            libc::SYS_openat,
            libc::SYS_open,
            libc::SYS_fork,
            libc::SYS_ptrace,
        ] {
            assert!(!rules.contains_key(&forbidden), "{forbidden} allowed");
        }
    }

    #[test]
    fn the_message_names_the_call() {
        let mut buf = [0u8; 96];
        for (nr, want) in [(257, "257"), (0, "0"), (-1, "-1")] {
            let len = blocked_message(nr, &mut buf);
            assert_eq!(
                std::str::from_utf8(&buf[..len]).expect("ascii"),
                format!("lab-vmm: error: seccomp blocked system call {want}\n")
            );
        }
    }

    /// Runs this test binary's `child_under_the_filter` alone in a child process, with the
    /// filter installed there doing `what`.
    fn child(what: &str) -> std::process::Output {
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "seccomp::tests::child_under_the_filter",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, what)
            .output()
            .expect("run the child")
    }

    /// Only does something in the child [`child`] starts.
    #[test]
    fn child_under_the_filter() {
        let Ok(what) = std::env::var(CHILD_ENV) else {
            return;
        };
        install().expect("install the filter");
        // Allowed: threads, Unix sockets.
        let thread = std::thread::spawn(|| 7).join().expect("a thread");
        assert_eq!(thread, 7);
        // SAFETY: plain system calls on no memory of ours.
        let unix = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        assert!(unix >= 0, "a unix socket");
        println!("allowed calls passed");
        match what.as_str() {
            // SAFETY: as above; the filter ends the process at the call.
            "inet" => unsafe {
                libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            },
            "open" => {
                let _ = std::fs::File::open("/etc/hostname");
            }
            other => panic!("unknown child action {other}"),
        }
        println!("survived a forbidden call");
    }

    #[test]
    fn forbidden_calls_end_the_process_with_a_message() {
        for (what, nr) in [("inet", libc::SYS_socket), ("open", libc::SYS_openat)] {
            let out = child(what);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(BLOCKED_EXIT_CODE),
                "{what}: {stdout}\n{stderr}"
            );
            assert!(stdout.contains("allowed calls passed"), "{what}: {stdout}");
            assert!(!stdout.contains("survived"), "{what}: {stdout}");
            assert!(
                stderr.contains(&format!("seccomp blocked system call {nr}\n")),
                "{what}: {stderr}"
            );
        }
    }
}
