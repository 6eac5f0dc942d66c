//! The file systems PID 1 mounts: the essential ones (failure is fatal) and the optional ones
//! the kernel may lack (skipped, with a note).

use crate::sys;

/// One mount.
struct Mount {
    fstype: &'static str,
    target: &'static str,
    flags: libc::c_ulong,
    data: &'static str,
    essential: bool,
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

const MOUNTS: &[Mount] = &[
    Mount {
        fstype: "proc",
        target: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        essential: true,
    },
    Mount {
        fstype: "sysfs",
        target: "/sys",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        essential: true,
    },
    Mount {
        fstype: "devtmpfs",
        target: "/dev",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
        essential: true,
    },
    Mount {
        fstype: "devpts",
        target: "/dev/pts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "gid=5,mode=0620,ptmxmode=0666",
        essential: false,
    },
    Mount {
        fstype: "tmpfs",
        target: "/dev/shm",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
        essential: false,
    },
    Mount {
        fstype: "tmpfs",
        target: "/tmp",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
        essential: true,
    },
    Mount {
        fstype: "tmpfs",
        target: "/run",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
        essential: true,
    },
    Mount {
        fstype: "cgroup2",
        target: "/sys/fs/cgroup",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        essential: false,
    },
    Mount {
        fstype: "bpf",
        target: "/sys/fs/bpf",
        flags: NOSUID_NODEV_NOEXEC,
        data: "mode=0700",
        essential: false,
    },
    Mount {
        fstype: "debugfs",
        target: "/sys/kernel/debug",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        essential: false,
    },
    Mount {
        fstype: "tracefs",
        target: "/sys/kernel/tracing",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        essential: false,
    },
];

/// Why an essential mount failed.
#[derive(Debug)]
pub struct MountError {
    /// The mount point.
    pub target: &'static str,
    /// The cause.
    pub source: std::io::Error,
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot mount {}: {}", self.target, self.source)
    }
}

/// The file system types the kernel supports, from /proc/filesystems.
fn supported() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split_whitespace().last().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Mounts everything; returns notes about skipped optional mounts.
pub fn mount_all() -> Result<Vec<String>, MountError> {
    let mut notes = Vec::new();
    let mut known: Option<Vec<String>> = None;
    for m in MOUNTS {
        if known.is_none() && sys::exists("/proc/filesystems") {
            known = Some(supported());
        }
        if let Some(k) = &known {
            if !m.essential && !k.iter().any(|t| t == m.fstype) {
                notes.push(format!(
                    "{} not supported by this kernel; {} not mounted",
                    m.fstype, m.target
                ));
                continue;
            }
        }
        if let Err(source) = std::fs::create_dir_all(m.target) {
            if m.essential {
                return Err(MountError {
                    target: m.target,
                    source,
                });
            }
            notes.push(format!("cannot create {}: {source}", m.target));
            continue;
        }
        match sys::mount(m.fstype, m.target, m.fstype, m.flags, m.data) {
            Ok(()) => {}
            // devtmpfs may already be mounted by the kernel (CONFIG_DEVTMPFS_MOUNT).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(source) if m.essential => {
                return Err(MountError {
                    target: m.target,
                    source,
                })
            }
            Err(e) => notes.push(format!("cannot mount {} on {}: {e}", m.fstype, m.target)),
        }
    }
    Ok(notes)
}
