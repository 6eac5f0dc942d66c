//! A shared root: the host tree lab serves over virtio-fs (`lab.root=virtiofs:TAG`), read-only,
//! under a tmpfs overlay for writes, which PID 1 then chroots into, so that every job runs in
//! it: test programs find the libraries, data files and programs they were installed with at
//! their own paths.
//!
//! What the guest's own kernel interfaces are stays the guest's: its /proc, /sys, /dev and /run
//! are bound over the host's. /tmp is the host's under the overlay, so that a suite installed
//! under the host's /tmp is there too; what the guest writes there stays in the overlay. What guest-init itself provides stays reachable at the
//! paths its users know: /init (the eBPF runner), /sbin/modprobe (the guest's modprobe, which
//! fetches modules from lab) and /lib/modules/RELEASE (where fetched modules land, for the
//! kernel's own modprobe calls, which run in the initramfs).

use std::fs;
use std::io;
use std::path::Path;

use crate::sys;

/// Where the layers are mounted.
const BASE: &str = "/lab/root";

/// The guest's own mounts, bound into the root (recursively: cgroup2, bpffs, devpts ride
/// along).
const GUEST_MOUNTS: &[&str] = &["/proc", "/sys", "/dev", "/run"];

/// The value of `lab.root=` this guest-init understands: `virtiofs:TAG`.
pub fn tag_of(spec: &str) -> Result<&str, String> {
    spec.strip_prefix("virtiofs:")
        .filter(|t| !t.is_empty() && t.len() <= 36)
        .ok_or_else(|| format!("unknown lab.root '{spec}' (this agent knows virtiofs:TAG)"))
}

/// Mounts the shared root `tag` with its overlay and the guest's mounts, then makes it this
/// process's root (children inherit it). One line on failure.
pub fn enter(tag: &str, release: &str) -> Result<(), String> {
    let lower = format!("{BASE}/lower");
    let rw = format!("{BASE}/rw");
    let merged = format!("{BASE}/merged");
    for dir in [&lower, &rw, &merged] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
    }
    mount_lower(tag, &lower)?;
    mount_overlay(&lower, &rw, &merged)?;
    bind_guest_mounts(&merged)?;
    bind_own_tools(&merged, release)?;
    chroot(&merged)
}

fn mount_lower(tag: &str, lower: &str) -> Result<(), String> {
    sys::mount(tag, lower, "virtiofs", libc::MS_RDONLY, "").map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::ENODEV) {
            " (the kernel has no virtio-fs: CONFIG_VIRTIO_FS)"
        } else {
            ""
        };
        format!("cannot mount the shared root (virtio-fs tag {tag}): {e}{hint}")
    })
}

fn mount_overlay(lower: &str, rw: &str, merged: &str) -> Result<(), String> {
    sys::mount("tmpfs", rw, "tmpfs", 0, "mode=0755")
        .map_err(|e| format!("cannot mount the overlay's tmpfs: {e}"))?;
    let (upper, work) = (format!("{rw}/upper"), format!("{rw}/work"));
    for dir in [&upper, &work] {
        fs::create_dir(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
    }
    let data = format!("lowerdir={lower},upperdir={upper},workdir={work}");
    sys::mount("overlay", merged, "overlay", 0, &data).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::ENODEV) {
            " (the kernel has no overlayfs: CONFIG_OVERLAY_FS)"
        } else {
            ""
        };
        format!("cannot mount the overlay over the shared root: {e}{hint}")
    })
}

fn bind_guest_mounts(merged: &str) -> Result<(), String> {
    for dir in GUEST_MOUNTS {
        let target = format!("{merged}{dir}");
        fs::create_dir_all(&target).map_err(|e| format!("cannot create {target}: {e}"))?;
        sys::mount(dir, &target, "", libc::MS_BIND | libc::MS_REC, "")
            .map_err(|e| format!("cannot bind {dir} into the shared root: {e}"))?;
    }
    Ok(())
}

/// Binds `source` (a file) at `target` in the overlay, replacing whatever is there (the host's
/// `/sbin/modprobe` is a symlink to kmod: the overlay takes it away first).
fn bind_file(source: &str, target: &str) -> Result<(), String> {
    let path = Path::new(target);
    if path.symlink_metadata().is_ok() {
        let _ = fs::remove_file(path);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    fs::write(path, b"").map_err(|e| format!("cannot create {target}: {e}"))?;
    sys::mount(source, target, "", libc::MS_BIND, "")
        .map_err(|e| format!("cannot bind {source} at {target}: {e}"))
}

fn bind_own_tools(merged: &str, release: &str) -> Result<(), String> {
    bind_file("/init", &format!("{merged}/init"))?;
    if sys::exists("/sbin/modprobe") {
        bind_file("/sbin/modprobe", &format!("{merged}/sbin/modprobe"))?;
    }
    let modules = format!("/lib/modules/{release}");
    fs::create_dir_all(&modules).map_err(|e| format!("cannot create {modules}: {e}"))?;
    let target = format!("{merged}{modules}");
    fs::create_dir_all(&target).map_err(|e| format!("cannot create {target}: {e}"))?;
    sys::mount(&modules, &target, "", libc::MS_BIND, "")
        .map_err(|e| format!("cannot bind {modules} into the shared root: {e}"))
}

fn chroot(merged: &str) -> Result<(), String> {
    let path = sys::cstring(merged).map_err(|e| e.to_string())?;
    std::env::set_current_dir(merged).map_err(|e| format!("cannot enter {merged}: {e}"))?;
    // SAFETY: chroot with a valid NUL-terminated path that outlives the call.
    if unsafe { libc::chroot(path.as_ptr()) } != 0 {
        return Err(format!(
            "cannot chroot into the shared root: {}",
            io::Error::last_os_error()
        ));
    }
    std::env::set_current_dir("/").map_err(|e| format!("cannot enter /: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_spec_names_a_virtio_fs_tag() {
        assert_eq!(tag_of("virtiofs:labroot"), Ok("labroot"));
        assert!(tag_of("9p:labroot").is_err());
        assert!(tag_of("virtiofs:").is_err());
    }
}
