//! The host side of a guest's shared root: a read-only view of a host tree, made without root,
//! that a virtio-fs server (virtiofsd) then serves to the guest.
//!
//! A guest is untrusted, and a guest that is root in its own kernel can remount a virtio-fs
//! mount read-write: the server must not be able to write. So the server runs in a user and
//! mount namespace of its own (the caller mapped to root there, nothing else mapped), where the
//! tree is bind-mounted, submounts included, and made read-only recursively with
//! `mount_setattr(MOUNT_ATTR_RDONLY, AT_RECURSIVE)`: every write through the view fails with
//! EROFS in the host kernel, whatever the guest or the server asks. Nothing outside the
//! namespace changes, and it dies with the server.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const AT_RECURSIVE: libc::c_int = 0x8000;

/// Why the view could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SharedRootError {
    /// A step failed; `step` says which.
    #[error("{step}")]
    Step {
        /// The step, in words.
        step: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

fn step(step: impl Into<String>) -> impl FnOnce(io::Error) -> SharedRootError {
    let step = step.into();
    move |source| SharedRootError::Step { step, source }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// Enters a user and mount namespace of this process's own (the caller is root there) and
/// bind-mounts `source` read-only, recursively, at `view` (an existing empty directory). Must
/// be called while the process is single-threaded (unshare of a user namespace requires it).
pub fn make_view(source: &Path, view: &Path) -> Result<(), SharedRootError> {
    let uid = current_uid();
    let gid = current_gid();
    // SAFETY: unshare takes flags only; the process is single-threaded (the caller's contract).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) };
    if rc != 0 {
        return Err(step(
            "cannot enter a user namespace (are unprivileged user namespaces \
                         enabled? sysctl kernel.unprivileged_userns_clone)",
        )(io::Error::last_os_error()));
    }
    map_ids(uid, gid)?;
    let root = c_path(Path::new("/")).map_err(step("/"))?;
    // SAFETY: mount with valid C strings and null type/data pointers; changes only the
    // propagation of this (new, private) mount namespace.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(step("cannot make the mount namespace private")(
            io::Error::last_os_error(),
        ));
    }
    let src = c_path(source).map_err(step(source.display().to_string()))?;
    let dst = c_path(view).map_err(step(view.display().to_string()))?;
    // SAFETY: mount with valid C strings; a recursive bind in this namespace only.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(step(format!(
            "cannot bind {} at {}",
            source.display(),
            view.display()
        ))(io::Error::last_os_error()));
    }
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (a live, correctly sized struct) and the path string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            dst.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(step(format!(
            "cannot make {} read-only (mount_setattr needs Linux 5.12)",
            view.display()
        ))(io::Error::last_os_error()));
    }
    private_run()
}

/// A tmpfs of this namespace's own on /run: QEMU's virtiofsd writes its pid file under
/// /run/virtiofsd, which only the host's root may write; the view keeps the host's /run.
fn private_run() -> Result<(), SharedRootError> {
    let (src, dst, fstype, data) = (
        CString::new("tmpfs").map_err(|e| step("tmpfs")(io::Error::other(e)))?,
        CString::new("/run").map_err(|e| step("/run")(io::Error::other(e)))?,
        CString::new("tmpfs").map_err(|e| step("tmpfs")(io::Error::other(e)))?,
        CString::new("mode=0755").map_err(|e| step("tmpfs")(io::Error::other(e)))?,
    );
    // SAFETY: mount with valid C strings; a tmpfs in this process's own mount namespace.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(step("cannot mount a private /run")(
            io::Error::last_os_error(),
        ));
    }
    std::fs::create_dir_all("/run/virtiofsd").map_err(step("/run/virtiofsd"))
}

fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

fn current_gid() -> u32 {
    // SAFETY: getgid cannot fail and touches no memory.
    unsafe { libc::getgid() }
}

/// Maps the caller to root in the new user namespace (and nothing else).
fn map_ids(uid: u32, gid: u32) -> Result<(), SharedRootError> {
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1\n")).map_err(step("uid_map"))?;
    std::fs::write("/proc/self/setgroups", "deny\n").map_err(step("setgroups"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1\n")).map_err(step("gid_map"))?;
    Ok(())
}

/// Where virtiofsd is looked for: `$LAB_VIRTIOFSD`, Debian's Rust virtiofsd (the `virtiofsd`
/// package), QEMU's own (Debian 12's qemu-system-common), then `PATH`.
pub fn find_virtiofsd() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("LAB_VIRTIOFSD").filter(|p| !p.is_empty()) {
        let p = std::path::PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let known = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"]
        .into_iter()
        .map(std::path::PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("virtiofsd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    known.chain(on_path).find(|p| p.is_file())
}

/// virtiofsd's arguments to serve `view` on `socket`, for the Rust virtiofsd (`rust`: it
/// takes `--shared-dir`) or QEMU's C one: its own sandbox (a mount namespace with the view as
/// its root), the guest's page cache trusted for a while (`cache=auto`), only errors logged.
pub fn virtiofsd_args(rust: bool, socket: &Path, view: &Path) -> Vec<OsString> {
    if rust {
        let mut shared = OsString::from("--shared-dir=");
        shared.push(view.as_os_str());
        let mut socket_arg = OsString::from("--socket-path=");
        socket_arg.push(socket.as_os_str());
        return vec![
            socket_arg,
            shared,
            "--cache=always".into(),
            "--sandbox=namespace".into(),
            "--log-level=error".into(),
        ];
    }
    let mut source = OsString::from("source=");
    source.push(view.as_os_str());
    let mut socket_arg = OsString::from("--socket-path=");
    socket_arg.push(socket.as_os_str());
    vec![
        socket_arg,
        OsStr::new("-o").into(),
        source,
        OsStr::new("-o").into(),
        "cache=always".into(),
        OsStr::new("-o").into(),
        "sandbox=namespace".into(),
        OsStr::new("-o").into(),
        "log_level=err".into(),
    ]
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod tests {
    use super::*;

    /// In a child process (the test runner is multithreaded): the view shows the tree and
    /// refuses writes, submounts included.
    #[test]
    fn the_view_shows_the_tree_and_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let view = dir.path().join("view");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/file"), "hello").unwrap();
        std::fs::create_dir(&view).unwrap();
        // SAFETY: fork in a test; the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match make_view(&tree, &view) {
                Err(SharedRootError::Step { source, .. })
                    if source.raw_os_error() == Some(libc::EPERM)
                        || source.raw_os_error() == Some(libc::ENOSYS)
                        || source.raw_os_error() == Some(libc::EINVAL) =>
                {
                    // User namespaces are not allowed here (a container): nothing to check.
                    3
                }
                Err(_) => 1,
                Ok(()) => {
                    let read = std::fs::read_to_string(view.join("sub/file")).ok();
                    let write = std::fs::write(view.join("sub/file"), "x");
                    let create = std::fs::write(view.join("new"), "x");
                    let refused = |r: &io::Result<()>| {
                        r.as_ref().err().and_then(io::Error::raw_os_error) == Some(libc::EROFS)
                    };
                    if read.as_deref() == Some("hello") && refused(&write) && refused(&create) {
                        0
                    } else {
                        2
                    }
                }
            };
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let code = libc::WEXITSTATUS(status);
        assert!(code == 0 || code == 3, "view check failed: {code}");
        assert_eq!(
            std::fs::read_to_string(tree.join("sub/file")).unwrap(),
            "hello"
        );
    }
}
