//! Assembles what a guest boots with: the initramfs (guest-init as /init, busybox, the kernel's
//! modules, extra files), cached by content. Jobs and files travel over the agent channel.

use std::path::{Path, PathBuf};
use std::process::Command;

use lab_kernel::cache::Cache;
use lab_kernel::catalog::Kernel;
use lab_kernel::initramfs::{self, Compression, InitramfsError, Spec};

/// Errors of assembling a guest image.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// Building the base image failed.
    #[error("failed to build the initramfs")]
    Initramfs(#[from] InitramfsError),
    /// busybox could not list its applets.
    #[error("failed to list busybox applets of {}", path.display())]
    Busybox {
        /// The busybox binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `--initrd-extra` argument is malformed.
    #[error("bad extra file '{0}': expected HOST_PATH or HOST_PATH:GUEST_PATH with an absolute guest path")]
    BadExtra(String),
}

/// A host file to carry into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// Where it is on the host.
    pub host: PathBuf,
    /// Where it goes in the guest (absolute).
    pub guest: String,
}

impl ExtraFile {
    /// Parses `HOST` (lands in `/extra/<file name>`) or `HOST:GUEST`.
    pub fn parse(arg: &str) -> Result<Self, GuestError> {
        let bad = || GuestError::BadExtra(arg.to_string());
        let (host, guest) = match arg.split_once(':') {
            Some((h, g)) => (h, g.to_string()),
            None => {
                let name = Path::new(arg).file_name().ok_or_else(bad)?;
                (arg, format!("/extra/{}", name.to_string_lossy()))
            }
        };
        if host.is_empty() || !guest.starts_with('/') || guest.split('/').any(|c| c == "..") {
            return Err(bad());
        }
        Ok(Self {
            host: host.into(),
            guest,
        })
    }
}

/// The user space every guest gets besides guest-init.
#[derive(Debug, Clone, Default)]
pub struct Userland {
    /// A static busybox, installed as /bin/busybox with its applets linked.
    pub busybox: Option<PathBuf>,
}

/// The minimal files a POSIX user space expects.
const ETC: &[(&str, &str)] = &[
    (
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("/etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
    ("/etc/hostname", "lab\n"),
    (
        "/etc/hosts",
        "127.0.0.1 localhost lab\n::1 localhost ip6-localhost\n",
    ),
    (
        "/etc/nsswitch.conf",
        "passwd: files\ngroup: files\nhosts: files\n",
    ),
];

/// The base image for `kernel`: content-addressed, so a second boot of the same kernel with the
/// same guest-init, userland and extras reuses it.
pub fn base_image(
    cache: &Cache,
    kernel: &Kernel,
    guest_init: &[u8],
    userland: &Userland,
    extras: &[ExtraFile],
) -> Result<PathBuf, GuestError> {
    let mut spec = Spec::new();
    for dir in [
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/run",
        "/root",
        "/lab",
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
    ] {
        spec.dir(dir, if dir == "/tmp" { 0o1777 } else { 0o755 });
    }
    spec.bytes("/init", guest_init.to_vec(), 0o755);
    for (path, text) in ETC {
        spec.bytes(path, text.as_bytes().to_vec(), 0o644);
    }
    if let Some(busybox) = &userland.busybox {
        spec.file("/bin/busybox", busybox, 0o755);
        for applet in applets(busybox)? {
            if applet != "/bin/busybox" && applet != "/init" {
                spec.symlink(&applet, "/bin/busybox");
            }
        }
    }
    let modules = kernel.module_paths();
    if !modules.is_empty() {
        let dir = format!("/lib/modules/{}", kernel.info.release);
        let mut dep = String::new();
        for path in &modules {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            spec.file(&format!("{dir}/{name}"), path, 0o644);
            // Already in load order: one line each, no dependencies left to resolve.
            dep.push_str(&format!("{name}:\n"));
        }
        spec.bytes(&format!("{dir}/modules.dep"), dep.into_bytes(), 0o644);
    }
    for extra in extras {
        spec.file(&extra.guest, &extra.host, 0o755);
    }
    Ok(initramfs::build(cache, &spec, Compression::None)?)
}

/// The absolute paths busybox installs its applets at (`busybox --list-full`).
fn applets(busybox: &Path) -> Result<Vec<String>, GuestError> {
    let err = |source| GuestError::Busybox {
        path: busybox.to_path_buf(),
        source,
    };
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(err)?;
    if !out.status.success() {
        return Err(err(std::io::Error::other(format!(
            "exited with {}",
            out.status
        ))));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("/{}", l.trim()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_parse_with_and_without_a_guest_path() {
        assert_eq!(
            ExtraFile::parse("/a/b/run.sh").unwrap(),
            ExtraFile {
                host: "/a/b/run.sh".into(),
                guest: "/extra/run.sh".into()
            }
        );
        assert_eq!(
            ExtraFile::parse("x:/usr/bin/x").unwrap(),
            ExtraFile {
                host: "x".into(),
                guest: "/usr/bin/x".into()
            }
        );
        for bad in ["x:rel", ":/a", "x:/a/../b", "/"] {
            assert!(ExtraFile::parse(bad).is_err(), "{bad}");
        }
    }
}
