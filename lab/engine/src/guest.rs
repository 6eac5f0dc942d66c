//! Assembles what a guest boots with: the initramfs (guest-init as /init, busybox, the kernel's
//! modules, extra files), cached by content. Jobs and files travel over the agent channel.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lab_kernel::cache::Cache;
use lab_kernel::catalog::Kernel;
use lab_kernel::guest_packages::{usr_merged, MERGED_DIRS};
use lab_kernel::initramfs::{self, Compression, InitramfsError, Spec};
use sha2::{Digest, Sha256};

/// The Debian packages the test command puts in every guest (with their dependencies): the
/// atf-sh interpreter and atf-check for ATF shell test programs, and bash, which Debian's
/// atf-sh runs test programs with (`/bin/bash`; essential, so no declared dependency), and
/// libbpf1, which test programs in C (built by `suite::c_build`) are linked against.
pub const DEFAULT_TEST_PACKAGES: &[&str] = &["atf-sh", "bash", "libbpf1"];

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
    /// Layers could not be stacked onto the base image.
    #[error("failed to stack initramfs layers into {}", path.display())]
    Stack {
        /// The image being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
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
///
/// The tree is usr-merged as Debian's is: `/bin`, `/sbin`, `/lib` and `/lib64` are links to
/// their twins in `/usr`, where busybox, its applets and the modules live, so that files of
/// Debian packages layered on top land beside them. Extras given under a merged directory are
/// placed under `/usr` and resolve through the link.
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
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
        "/usr/lib64",
    ] {
        spec.dir(dir, if dir == "/tmp" { 0o1777 } else { 0o755 });
    }
    for dir in MERGED_DIRS {
        spec.symlink(&format!("/{dir}"), &format!("usr/{dir}"));
    }
    spec.bytes("/init", guest_init.to_vec(), 0o755);
    for (path, text) in ETC {
        spec.bytes(path, text.as_bytes().to_vec(), 0o644);
    }
    if let Some(busybox) = &userland.busybox {
        spec.file("/usr/bin/busybox", busybox, 0o755);
        for applet in applets(busybox)? {
            let applet = usr_merged(&applet);
            if applet != "/usr/bin/busybox" && applet != "/init" {
                spec.symlink(&applet, "/usr/bin/busybox");
            }
        }
    }
    let modules = kernel.module_paths();
    if !modules.is_empty() {
        let dir = format!("/usr/lib/modules/{}", kernel.info.release);
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
        spec.file(&usr_merged(&extra.guest), &extra.host, 0o755);
    }
    Ok(initramfs::build(cache, &spec, Compression::None)?)
}

/// `base` with `layers` appended (the kernel unpacks concatenated cpio archives in order, a
/// later entry replacing an earlier one), as `<cache>/initramfs/stack-<sha>.cpio`. Base and
/// layers are content-addressed, so the stack is keyed by their file names and reused; with no
/// layers it is `base` itself.
pub fn stacked_image(
    cache: &Cache,
    base: &Path,
    layers: &[PathBuf],
) -> Result<PathBuf, GuestError> {
    if layers.is_empty() {
        return Ok(base.to_path_buf());
    }
    let mut h = Sha256::new();
    h.update(b"lab-initramfs-stack-v1\0");
    for part in std::iter::once(base).chain(layers.iter().map(PathBuf::as_path)) {
        let name = part.file_name().unwrap_or_default();
        h.update(name.as_encoded_bytes());
        h.update(b"\0");
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let dir = cache.initramfs_dir().map_err(InitramfsError::from)?;
    let path = dir.join(format!("stack-{digest}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    let err = |source| GuestError::Stack {
        path: path.clone(),
        source,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(&dir)
        .map_err(err)?;
    for part in std::iter::once(base).chain(layers.iter().map(PathBuf::as_path)) {
        let mut file = fs::File::open(part).map_err(err)?;
        io::copy(&mut file, tmp.as_file_mut()).map_err(err)?;
    }
    tmp.as_file_mut().flush().map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    Ok(path)
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

    #[test]
    fn layers_stack_after_the_base_and_are_reused() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let base = root.path().join("base.cpio");
        let layer = root.path().join("pkgs-1.cpio");
        fs::write(&base, b"base").unwrap();
        fs::write(&layer, b"layer").unwrap();
        assert_eq!(stacked_image(&cache, &base, &[]).unwrap(), base);
        let stack = stacked_image(&cache, &base, std::slice::from_ref(&layer)).unwrap();
        assert_eq!(fs::read(&stack).unwrap(), b"baselayer");
        assert_eq!(
            stacked_image(&cache, &base, std::slice::from_ref(&layer)).unwrap(),
            stack
        );
        let other = root.path().join("pkgs-2.cpio");
        fs::write(&other, b"other").unwrap();
        assert_ne!(stacked_image(&cache, &base, &[other]).unwrap(), stack);
    }
}
