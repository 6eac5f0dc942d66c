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
    /// A module asked for cannot be loaded from this kernel.
    #[error("kernel {kernel} ({release}) has no module '{module}'")]
    NoSuchModule {
        /// The kernel's name.
        kernel: String,
        /// Its release.
        release: String,
        /// The module or alias asked for.
        module: String,
    },
    /// The kernel's modules could not be read.
    #[error("failed to prepare the modules of kernel {kernel}")]
    Modules {
        /// The kernel's name.
        kernel: String,
        /// The cause.
        #[source]
        source: lab_kernel::modules::ModulesError,
    },
}

/// Where guest-init finds the modules to load at boot, by name or alias, in order (modprobe
/// resolves each); without it, it loads every module of `modules.dep`.
pub const BOOT_MODULES: &str = "/lab/modules.boot";

/// The modules of a guest beyond the agent channel's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestModules {
    /// Loaded at boot (`--module`), by name or alias, in order.
    pub boot: Vec<String>,
    /// Only carried in the image, for the guest to load itself (the kvm modules of a nested
    /// guest: guest-init loads the one its CPU calls for).
    pub carry: Vec<String>,
}

/// The kvm modules a nested guest carries: guest-init loads kvm_amd or kvm_intel, whichever
/// its CPU (SVM or VMX) calls for.
pub const NESTED_MODULES: &[&str] = &["kvm_amd", "kvm_intel"];

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

/// The programs guest-init also is (it looks at the name it was run as).
const GUEST_INIT_APPLETS: &[&str] = &["/usr/sbin/modprobe"];

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
    modules: &GuestModules,
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
        spec.bytes("/usr/bin/busybox", guest_busybox(busybox)?, 0o755);
        for applet in applets(busybox)? {
            let applet = usr_merged(&applet);
            if applet != "/usr/bin/busybox"
                && applet != "/init"
                && !GUEST_INIT_APPLETS.contains(&applet.as_str())
            {
                spec.symlink(&applet, "/usr/bin/busybox");
            }
        }
    }
    // guest-init is the guest's modprobe too: the one the kernel runs for request_module.
    for applet in GUEST_INIT_APPLETS {
        spec.symlink(applet, "/init");
    }
    add_modules(&mut spec, kernel, modules)?;
    for extra in extras {
        spec.file(&usr_merged(&extra.guest), &extra.host, 0o755);
    }
    Ok(initramfs::build(cache, &spec, Compression::None)?)
}

/// The kernel's modules in the image.
///
/// With the kernel's whole module tree ([`Kernel::module_source`]): the index files a modprobe
/// reads (`modules.dep`, `modules.alias`, `modules.softdep`, `modules.builtin`) for every
/// module, the files of those the guest loads at boot (the agent channel's, and `extra`, each
/// with its dependencies), and [`BOOT_MODULES`] naming them; any other module the guest asks
/// for later is fetched from lab over the agent channel, so the image stays small.
///
/// Without a tree (kernels built without loadable modules, files given by path): the modules
/// the entry records, in load order, in a `modules.dep` of their own, and `extra` in
/// [`BOOT_MODULES`] for the guest to find built in.
fn add_modules(spec: &mut Spec, kernel: &Kernel, modules: &GuestModules) -> Result<(), GuestError> {
    let extra = &modules.boot;
    let dir = format!("/usr/lib/modules/{}", kernel.info.release);
    let Some(source) = kernel.module_source() else {
        let modules = kernel.module_paths();
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
        if !modules.is_empty() {
            spec.bytes(&format!("{dir}/modules.dep"), dep.into_bytes(), 0o644);
        }
        if !extra.is_empty() {
            let mut boot: Vec<String> = modules
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            boot.extend(extra.iter().cloned());
            spec.bytes(BOOT_MODULES, lines(&boot), 0o644);
        }
        return Ok(());
    };
    let index = source.index();
    let mut boot: Vec<String> = kernel
        .info
        .modules
        .iter()
        .map(|m| lab_kernel::modules::module_name(m))
        .collect();
    boot.extend(extra.iter().cloned());
    let names: Vec<&str> = boot
        .iter()
        .chain(&modules.carry)
        .map(String::as_str)
        // What the kernel lacks cannot be carried; the guest says so if it needs it.
        .filter(|n| {
            !modules.carry.iter().any(|c| c == n)
                || index.resolve(n) != lab_kernel::module_index::Resolved::Unknown
        })
        .collect();
    let order = index.load_order(&names).map_err(|e| match e {
        lab_kernel::modules::ModulesError::Missing(module) => GuestError::NoSuchModule {
            kernel: kernel.info.name.clone(),
            release: kernel.info.release.clone(),
            module,
        },
        source => GuestError::Modules {
            kernel: kernel.info.name.clone(),
            source,
        },
    })?;
    for name in &order {
        let file = source
            .plain_file(name)
            .map_err(|source| GuestError::Modules {
                kernel: kernel.info.name.clone(),
                source,
            })?;
        let guest = index.modules[name].guest_path();
        spec.file(&format!("{dir}/{guest}"), &file, 0o644);
    }
    for (file, text) in [
        ("modules.dep", index.modules_dep()),
        ("modules.alias", index.modules_alias()),
        ("modules.softdep", index.modules_softdep()),
        ("modules.builtin", index.modules_builtin()),
    ] {
        spec.bytes(&format!("{dir}/{file}"), text.into_bytes(), 0o644);
    }
    spec.bytes(BOOT_MODULES, lines(&boot), 0o644);
    Ok(())
}

/// One name per line.
fn lines(names: &[String]) -> Vec<u8> {
    names
        .iter()
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect()
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

/// The guest's busybox: Debian's, with its `modprobe` applet renamed so that the guest's
/// modprobe is lab's.
///
/// Debian's busybox runs its own applets from its shell without a PATH lookup
/// (FEATURE_SH_STANDALONE), so `sh -c 'modprobe veth'` would reach busybox's modprobe, which
/// loads only files the image carries. Renaming the applet in busybox's sorted table of applet
/// names (`modprobe` → `modprob_`, same length, same place in the order) makes its shell look
/// `modprobe` up in PATH, where guest-init's is. A busybox whose table lacks the expected
/// neighbours (`modinfo`, `modprobe`, `more`) is left as it is.
fn guest_busybox(path: &Path) -> Result<Vec<u8>, GuestError> {
    let mut bytes = fs::read(path).map_err(|source| GuestError::Busybox {
        path: path.to_path_buf(),
        source,
    })?;
    rename_applet(&mut bytes);
    Ok(bytes)
}

/// Renames the `modprobe` applet in a busybox binary's applet name table; returns whether it
/// found exactly one place to do so.
pub fn rename_applet(bytes: &mut [u8]) -> bool {
    const TABLE: &[u8] = b"\0modinfo\0modprobe\0more\0";
    const AT: usize = b"\0modinfo\0".len();
    let found: Vec<usize> = bytes
        .windows(TABLE.len())
        .enumerate()
        .filter(|(_, w)| *w == TABLE)
        .map(|(i, _)| i)
        .collect();
    let [start] = found[..] else {
        return false;
    };
    bytes[start + AT..start + AT + 8].copy_from_slice(b"modprob_");
    true
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
    fn busybox_modprobe_applet_is_renamed_once() {
        let mut table = b"x\0mktemp\0modinfo\0modprobe\0more\0mount\0 text: modprobe\0".to_vec();
        assert!(rename_applet(&mut table));
        assert_eq!(
            table,
            b"x\0mktemp\0modinfo\0modprob_\0more\0mount\0 text: modprobe\0".to_vec()
        );
        // Already renamed, or an unexpected layout: left alone.
        assert!(!rename_applet(&mut table));
        let mut twice = b"\0modinfo\0modprobe\0more\0\0modinfo\0modprobe\0more\0".to_vec();
        let before = twice.clone();
        assert!(!rename_applet(&mut twice));
        assert_eq!(twice, before);
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
