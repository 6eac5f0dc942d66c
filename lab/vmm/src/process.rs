//! Child processes that must not outlive the process that started them: the kernel's
//! parent-death signal, set in the child between fork and exec.
//!
//! This is what util-linux's `setpriv --pdeathsig` does, done by lab itself, so that a VM process
//! (QEMU, the lab VMM, the vsock backend) dies with lab even when lab is killed with SIGKILL, on
//! hosts (and guests) whose `setpriv` lacks the option, as busybox's does.
//!
//! Two properties of the signal matter to callers: it is delivered when the *thread* that
//! spawned the child ends, not only the process, so spawn from a thread that lives as long as
//! the child is needed; and it survives `execve` (except into set-uid programs).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Arranges for the child `command` will spawn to get SIGKILL when its parent dies. If the
/// parent is already gone by the time the child sets the signal (it died between fork and
/// prctl), the spawn fails instead of leaving an orphan behind.
pub fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    let set = move || {
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid are async-signal-safe system calls that
        // touch no memory of the process; this closure allocates nothing and takes no locks, as
        // code between fork and exec must.
        let (rc, ppid) = unsafe {
            (
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0),
                libc::getppid(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The parent died before the signal was armed: the child was reparented already.
        if u32::try_from(ppid).ok() != Some(parent) {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the closure only makes the async-signal-safe calls described above.
    unsafe {
        command.pre_exec(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::Stdio;

    /// A child spawned with the signal from a thread that then ends is killed by the kernel:
    /// the signal follows the spawning thread, which is what lab's VM processes rely on.
    #[test]
    fn the_child_dies_with_its_parent() {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut cmd = Command::new("sleep");
            cmd.arg("30").stdout(Stdio::null());
            die_with_parent(&mut cmd);
            let child = cmd.spawn().expect("spawns sleep");
            tx.send(child).expect("sends the child");
        });
        let mut child = rx.recv().expect("gets the child");
        thread.join().expect("thread ends");
        // The spawning thread is gone: the kernel delivers SIGKILL to the child.
        let status = child.wait().expect("waits");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }

    #[test]
    fn a_child_with_the_signal_runs_normally() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo ok"]).stdout(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawns sh");
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut out)
            .expect("reads");
        assert!(child.wait().expect("waits").success());
        assert_eq!(out, "ok\n");
    }
}
