//! Fetches Debian kernel packages without root (`apt-get download`, `dpkg-deb -x`) and installs
//! their image and the modules the lab needs into the cache.
//!
//! The steps of [`fetch`]: resolve the meta-package to its concrete `linux-image-…` package and
//! version (`apt-cache show`); if `kernels/<name>-<version>` is installed, return it; otherwise
//! download the `.deb` into `debs/` (reused), extract it into a staging directory, work out the
//! module load order (Debian's packages ship no modules.dep — depmod runs on install — so the
//! order comes from the modules' own `.modinfo`, or from modules.dep where a package has one),
//! and install `vmlinuz`, `config`, `modules/<name>.ko` (decompressed) and `kernel.json`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::{Cache, CacheError};
use crate::catalog::{self, Kernel, KernelInfo, Origin, RecordError};
use crate::image::{self, ImageError};
use crate::module_index::ModuleIndex;
use crate::modules::{self, ModulesBuiltin, ModulesDep, ModulesError};
use crate::packages::{self, PackageError, PackageVersion};
use crate::Progress;

/// Errors of fetching a Debian kernel.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Resolving, downloading or extracting the package failed.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The meta-package depends on no image package.
    #[error("{0} is not a linux-image package and depends on none")]
    NoImagePackage(String),
    /// The package lacks a file the lab needs.
    #[error("package {package} has no {what}")]
    NotInPackage {
        /// The package.
        package: String,
        /// What is missing.
        what: String,
    },
    /// A file could not be read, written or copied.
    #[error("failed to access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel's modules could not be read or unpacked.
    #[error("failed to prepare modules of {package}")]
    Modules {
        /// The package.
        package: String,
        /// The cause.
        #[source]
        source: ModulesError,
    },
    /// Modules the lab needs are neither loadable nor built in.
    #[error("{package} lacks modules the lab needs: {}", missing.join(", "))]
    MissingModules {
        /// The package.
        package: String,
        /// The modules.
        missing: Vec<String>,
    },
    /// The package's image is not a kernel lab can boot.
    #[error("bad kernel image {}", path.display())]
    Image {
        /// The image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ImageError,
    },
    /// The kernel record could not be written or read back.
    #[error("failed to record the kernel")]
    Record(#[from] RecordError),
}

/// The modules a guest needs for vsock over virtio-mmio, in load order. Those built into the
/// image are skipped; `virtio` and `virtio_ring` are listed for kernels where they are modular.
pub const WANTED_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// Fetches the image package `meta_package` currently points at and installs it under `name`.
pub fn fetch(
    cache: &Cache,
    name: &str,
    meta_package: &str,
    progress: Progress<'_>,
) -> Result<Kernel, DebianError> {
    progress(&format!("resolving {meta_package}"));
    let pv = resolve_image(meta_package)?;
    let (package, version) = (pv.package.clone(), pv.version.clone());
    let id = format!("{name}-{}", sanitize_version(&version));
    let dest = cache.kernels_dir()?.join(&id);
    if let Ok(kernel) = Kernel::load(&dest) {
        return Ok(kernel);
    }
    let _lock = cache.lock(&format!("kernel-{id}"))?;
    // Another lab process may have installed it while this one waited for the lock.
    if let Ok(kernel) = Kernel::load(&dest) {
        return Ok(kernel);
    }
    let deb = packages::download(cache, &pv, progress)?;
    progress(&format!("extracting {package}"));
    let unpacked = cache.staging("deb-")?;
    packages::extract(&deb, unpacked.path())?;

    let staging = cache.staging("kernel-")?;
    let info = stage_kernel(
        unpacked.path(),
        staging.path(),
        &package,
        &version,
        progress,
    )?;
    let info = KernelInfo {
        id: id.clone(),
        name: name.to_string(),
        ..info
    };
    catalog::Kernel::save(&info, staging.path())?;
    cache.install(staging, &dest)?;
    progress(&format!("installed {id} ({})", info.release));
    Ok(Kernel::load(&dest)?)
}

/// Copies the kernel of the package extracted at `root` into `out`: `vmlinuz`, `config` and
/// `modules/<name>.ko` in load order. Returns the record, with `id` and `name` left empty.
fn stage_kernel(
    root: &Path,
    out: &Path,
    package: &str,
    version: &str,
    progress: Progress<'_>,
) -> Result<KernelInfo, DebianError> {
    let not_in = |what: String| DebianError::NotInPackage {
        package: package.to_string(),
        what,
    };
    let (release, moddir) = find_release(root).ok_or_else(|| {
        not_in("boot/vmlinuz-<release> with a matching lib/modules/<release>".to_string())
    })?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    let config = root.join("boot").join(format!("config-{release}"));
    if !config.is_file() {
        return Err(not_in(format!("boot/config-{release}")));
    }
    let found = image::inspect(&vmlinuz).map_err(|source| DebianError::Image {
        path: vmlinuz.clone(),
        source,
    })?;
    if let Some(inner) = found.release.as_deref().filter(|r| *r != release) {
        progress(&format!(
            "warning: {package}'s image says release {inner}, its file name {release}"
        ));
    }
    let config_text = read_to_string(&config)?;

    let mods_err = |source| DebianError::Modules {
        package: package.to_string(),
        source,
    };
    let builtin = match fs::read_to_string(moddir.join("modules.builtin")) {
        Ok(text) => ModulesBuiltin::parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_in(format!("lib/modules/{release}/modules.builtin")))
        }
        Err(source) => {
            return Err(DebianError::Io {
                path: moddir.join("modules.builtin"),
                source,
            })
        }
    };
    let dep = match fs::read_to_string(moddir.join("modules.dep")) {
        Ok(text) => ModulesDep::parse(&text).map_err(mods_err)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ModulesDep::from_tree(&moddir, WANTED_MODULES).map_err(mods_err)?
        }
        Err(source) => {
            return Err(DebianError::Io {
                path: moddir.join("modules.dep"),
                source,
            })
        }
    };
    let avail = modules::classify(&dep, &builtin, WANTED_MODULES);
    if !avail.missing.is_empty() {
        return Err(DebianError::MissingModules {
            package: package.to_string(),
            missing: avail.missing,
        });
    }
    if !avail.builtin.is_empty() {
        progress(&format!("built in: {}", avail.builtin.join(", ")));
    }
    let loadable: Vec<&str> = avail.loadable.iter().map(String::as_str).collect();
    let order = dep.load_order(&loadable).map_err(mods_err)?;

    copy(&vmlinuz, &out.join("vmlinuz"))?;
    copy(&config, &out.join("config"))?;
    let mod_out = out.join("modules");
    fs::create_dir_all(&mod_out).map_err(|source| DebianError::Io {
        path: mod_out.clone(),
        source,
    })?;
    let mut files = Vec::new();
    for rel in &order {
        let file = format!("{}.ko", modules::module_name(rel));
        modules::unpack(&moddir.join(rel), &mod_out.join(&file)).map_err(mods_err)?;
        files.push(file);
    }
    install_module_tree(&moddir, &mod_out, &release, package, progress)?;
    Ok(KernelInfo {
        id: String::new(),
        name: String::new(),
        release,
        origin: Origin::Debian {
            package: package.to_string(),
            version: version.to_string(),
        },
        config_hash: Some(sha256_hex(config_text.as_bytes())),
        image: "vmlinuz".to_string(),
        modules: files,
        cmdline_devices: config_enabled(&config_text, "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"),
        created_unix: catalog::now_unix(),
    })
}

/// Moves the package's module tree `moddir` to `<mod_out>/tree` and writes its index beside
/// it ([`crate::catalog::Kernel::module_source`] reads both), so that guests can load any
/// module of the kernel on demand.
fn install_module_tree(
    moddir: &Path,
    mod_out: &Path,
    release: &str,
    package: &str,
    progress: Progress<'_>,
) -> Result<(), DebianError> {
    let mods_err = |source| DebianError::Modules {
        package: package.to_string(),
        source,
    };
    let builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    progress(&format!("indexing the modules of {package}"));
    let index = ModuleIndex::build(moddir, release, &builtin).map_err(mods_err)?;
    let tree = mod_out.join(catalog::MODULE_TREE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DebianError::Io { path, source }
    };
    fs::create_dir_all(mod_out).map_err(io(mod_out))?;
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(io(&tree))?;
    }
    fs::rename(moddir, &tree).map_err(io(&tree))?;
    let index_path = mod_out.join(catalog::MODULE_INDEX);
    index.save(&index_path).map_err(io(&index_path))
}

/// Adds the module tree and its index to an installed Debian kernel that lacks them (one
/// installed by an older lab), from its package (downloaded again if the cache lost it).
pub fn add_module_tree(
    cache: &Cache,
    kernel: &Kernel,
    progress: Progress<'_>,
) -> Result<(), DebianError> {
    let Origin::Debian { package, version } = &kernel.info.origin else {
        return Ok(());
    };
    let _lock = cache.lock(&format!("kernel-{}", kernel.info.id))?;
    if kernel.module_source().is_some() {
        return Ok(());
    }
    progress(&format!(
        "adding the module tree of {} (once; kernels installed by an older lab lack it)",
        kernel.info.name
    ));
    let pv = PackageVersion {
        package: package.clone(),
        version: version.clone(),
        depends: String::new(),
    };
    let deb = packages::download(cache, &pv, progress)?;
    let unpacked = cache.staging("deb-")?;
    packages::extract(&deb, unpacked.path())?;
    let (release, moddir) =
        find_release(unpacked.path()).ok_or_else(|| DebianError::NotInPackage {
            package: package.clone(),
            what: "lib/modules/<release>".into(),
        })?;
    install_module_tree(
        &moddir,
        &kernel.dir.join("modules"),
        &release,
        package,
        progress,
    )
}

/// The release of the extracted package at `root`: the `boot/vmlinuz-<release>` that has a
/// module directory (`lib/modules/<release>`, or `usr/lib/modules/<release>` after the /usr
/// merge), and that directory.
fn find_release(root: &Path) -> Option<(String, PathBuf)> {
    let mut releases: Vec<String> = fs::read_dir(root.join("boot"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .collect();
    releases.sort();
    releases.into_iter().find_map(|rel| {
        ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| root.join(d).join(&rel))
            .find(|d| d.is_dir())
            .map(|d| (rel, d))
    })
}

/// Whether `.config` text sets `option=y`.
pub(crate) fn config_enabled(config: &str, option: &str) -> bool {
    config
        .lines()
        .any(|l| l.trim().strip_prefix(option) == Some("=y"))
}

/// The package and version the meta-package `meta` points at; a concrete `linux-image-…`
/// package resolves to itself.
pub fn resolve_image(meta: &str) -> Result<PackageVersion, DebianError> {
    let pv = packages::candidate(meta)?;
    match image_dependency(meta, &pv.depends) {
        Some((package, Some(version))) => Ok(PackageVersion {
            package,
            version,
            depends: String::new(),
        }),
        Some((package, None)) => Ok(packages::candidate(&package)?),
        None if meta.starts_with("linux-image-") => Ok(pv),
        None => Err(DebianError::NoImagePackage(meta.to_string())),
    }
}

/// The first `linux-image-…` package in a `Depends` field (other than `meta` itself), with the
/// version an `(= version)` constraint pins.
fn image_dependency(meta: &str, depends: &str) -> Option<(String, Option<String>)> {
    depends
        .split(',')
        .flat_map(|alt| alt.split('|'))
        .find_map(|dep| {
            let dep = dep.trim();
            let (name, constraint) = match dep.split_once('(') {
                Some((n, c)) => (n.trim(), Some(c.trim_end_matches(')').trim())),
                None => (dep, None),
            };
            let name = name.split(':').next().unwrap_or(name);
            if !name.starts_with("linux-image-") || name == meta {
                return None;
            }
            let version = constraint
                .and_then(|c| c.strip_prefix('='))
                .map(|v| v.trim().to_string());
            Some((name.to_string(), version))
        })
}

/// A version fit for a directory name: characters other than `[A-Za-z0-9.-]` become `_`.
pub fn sanitize_version(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The last `n` non-empty lines of `text`, joined with "\n".
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Lower-case hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_to_string(path: &Path) -> Result<String, DebianError> {
    fs::read_to_string(path).map_err(|source| DebianError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn copy(from: &Path, to: &Path) -> Result<(), DebianError> {
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| DebianError::Io {
            path: from.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_dependencies_are_found() {
        let cases = [
            (
                "linux-image-cloud-amd64",
                "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)",
                Some(("linux-image-6.1.0-56-cloud-amd64", Some("6.1.192-2"))),
            ),
            (
                "linux-image-6.12-cloud-amd64",
                "linux-image-6.12.117+deb12-cloud-amd64 (= 6.12.117-1~deb12u1)",
                Some(("linux-image-6.12.117+deb12-cloud-amd64", Some("6.12.117-1~deb12u1"))),
            ),
            (
                "meta",
                "kmod, linux-base (>= 4.3~), linux-image-6.1.0-1-amd64-unsigned (>= 1) | linux-image-6.1.0-1-amd64",
                Some(("linux-image-6.1.0-1-amd64-unsigned", None)),
            ),
            ("meta", "foo | linux-image-x:amd64", Some(("linux-image-x", None))),
            ("linux-image-6.1.0-56-cloud-amd64", "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool", None),
            ("linux-image-a", "linux-image-a", None),
            ("meta", "", None),
        ];
        for (meta, depends, want) in cases {
            let got = image_dependency(meta, depends);
            let want = want.map(|(p, v)| (p.to_string(), v.map(str::to_string)));
            assert_eq!(got, want, "{depends}");
        }
    }

    #[test]
    fn versions_become_directory_names() {
        assert_eq!(sanitize_version("6.12.117-1~deb12u1"), "6.12.117-1_deb12u1");
        assert_eq!(sanitize_version("1:2.3+b1"), "1_2.3_b1");
    }

    #[test]
    fn config_options_and_tails() {
        let config = "# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\nCONFIG_VIRTIO_MMIO=m\n";
        assert!(!config_enabled(
            config,
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"
        ));
        assert!(!config_enabled(config, "CONFIG_VIRTIO_MMIO"));
        assert!(config_enabled(
            "CONFIG_VIRTIO_MMIO=y\n",
            "CONFIG_VIRTIO_MMIO"
        ));
        assert!(!config_enabled(
            "CONFIG_VIRTIO_MMIO_X=y\n",
            "CONFIG_VIRTIO_MMIO"
        ));
        assert_eq!(tail("a\n\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("x\n", 3), "x");
    }

    /// A fake extracted image package: boot files, modules as Debian 6.12 ships them (.ko.xz,
    /// no modules.dep, virtio built in).
    fn fake_package(root: &Path, release: &str) {
        let boot = root.join("boot");
        fs::create_dir_all(&boot).unwrap();
        let mut img = vec![0u8; 0x1000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let v = format!("{release} (x) #1\0");
        img[0x300..0x300 + v.len()].copy_from_slice(v.as_bytes());
        fs::write(boot.join(format!("vmlinuz-{release}")), img).unwrap();
        fs::write(
            boot.join(format!("config-{release}")),
            "CONFIG_VIRTIO_MMIO=m\n",
        )
        .unwrap();
        let moddir = root.join("lib/modules").join(release);
        let put = |rel: &str, deps: &str| {
            let path = moddir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            let ko = modules::fake_ko(&[&format!("depends={deps}")]);
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut &ko[..], &mut out).unwrap();
            fs::write(path, out).unwrap();
        };
        put("kernel/drivers/virtio/virtio_mmio.ko.xz", "");
        put("kernel/net/vmw_vsock/vsock.ko.xz", "");
        put(
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz",
            "vsock",
        );
        put(
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.xz",
            "vmw_vsock_virtio_transport_common,vsock",
        );
        fs::write(
            moddir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n",
        )
        .unwrap();
    }

    #[test]
    fn packages_are_staged_with_modules_in_load_order() {
        let root = tempfile::tempdir().unwrap();
        let pkg = root.path().join("pkg");
        fake_package(&pkg, "6.12.9-cloud-amd64");
        let out = root.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let lines = std::sync::Mutex::new(Vec::new());
        let progress = |l: &str| lines.lock().unwrap().push(l.to_string());
        let info = stage_kernel(&pkg, &out, "linux-image-x", "1~a", &progress).unwrap();
        assert_eq!(info.release, "6.12.9-cloud-amd64");
        assert_eq!(
            info.modules,
            [
                "virtio_mmio.ko",
                "vsock.ko",
                "vmw_vsock_virtio_transport_common.ko",
                "vmw_vsock_virtio_transport.ko"
            ]
        );
        assert!(!info.cmdline_devices);
        assert_eq!(
            info.config_hash.as_deref(),
            Some(sha256_hex(b"CONFIG_VIRTIO_MMIO=m\n").as_str())
        );
        let ko = fs::read(out.join("modules/vsock.ko")).unwrap();
        assert!(ko.starts_with(b"\x7fELF"), "decompressed");
        assert!(out.join("vmlinuz").is_file() && out.join("config").is_file());
        assert_eq!(
            lines.lock().unwrap().as_slice(),
            [
                "built in: virtio_ring, virtio",
                "indexing the modules of linux-image-x"
            ]
        );
        // The whole tree, as the package ships it, with its index.
        assert!(out
            .join("modules/tree/kernel/net/vmw_vsock/vsock.ko.xz")
            .is_file());
        let index =
            crate::module_index::ModuleIndex::load(&out.join("modules/index.json")).unwrap();
        assert_eq!(index.release, "6.12.9-cloud-amd64");
        assert_eq!(
            index.load_order(&["vmw_vsock_virtio_transport"]).unwrap(),
            [
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport"
            ]
        );
        assert!(index.builtin.contains("virtio_ring"));

        // A module that is neither loadable nor built in is an error naming it.
        fs::remove_dir_all(&pkg).unwrap();
        fake_package(&pkg, "6.12.9-cloud-amd64");
        fs::remove_file(
            pkg.join("lib/modules/6.12.9-cloud-amd64/kernel/drivers/virtio/virtio_mmio.ko.xz"),
        )
        .unwrap();
        let out2 = root.path().join("out2");
        fs::create_dir_all(&out2).unwrap();
        let err = stage_kernel(&pkg, &out2, "linux-image-x", "1", &|_| {}).unwrap_err();
        assert!(err.to_string().contains("virtio_mmio"), "{err}");

        // No image at all.
        let err = stage_kernel(&out2, &out2, "linux-image-x", "1", &|_| {}).unwrap_err();
        assert!(matches!(err, DebianError::NotInPackage { .. }), "{err}");
    }

    /// The order read from `.modinfo` agrees with depmod's modules.dep, on the real Debian
    /// package when it has been downloaded into the lab cache and depmod is installed.
    #[test]
    fn modinfo_order_matches_depmod_on_a_real_package() {
        let depmod = ["/usr/sbin/depmod", "/sbin/depmod"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let debs = Cache::from_env().ok().and_then(|c| c.debs_dir().ok());
        let deb = debs.and_then(|d| {
            fs::read_dir(d).ok()?.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("linux-image-6.1.0-") && n.ends_with(".deb"))
            })
        });
        let (Some(depmod), Some(deb)) = (depmod, deb) else {
            eprintln!("no depmod or no Debian 6.1 image package in the cache: skipped");
            return;
        };
        let root = tempfile::tempdir().unwrap();
        packages::extract(&deb, root.path()).unwrap();
        let (release, moddir) = find_release(root.path()).unwrap();
        let from_tree = ModulesDep::from_tree(&moddir, WANTED_MODULES).unwrap();
        let status = std::process::Command::new(depmod)
            .arg("-b")
            .arg(root.path())
            .arg(&release)
            .status()
            .unwrap();
        assert!(status.success());
        let text = fs::read_to_string(moddir.join("modules.dep")).unwrap();
        let from_depmod = ModulesDep::parse(&text).unwrap();
        let a = from_tree.load_order(WANTED_MODULES).unwrap();
        let b = from_depmod.load_order(WANTED_MODULES).unwrap();
        assert_eq!(a, b);
        let names: Vec<String> = a.iter().map(|p| modules::module_name(p)).collect();
        assert_eq!(names, WANTED_MODULES);
    }

    /// Fetches the catalog's Debian kernels into the real cache (`LAB_NET_TESTS=1`).
    #[test]
    fn real_fetch_of_debian_kernels() {
        if std::env::var("LAB_NET_TESTS").as_deref() != Ok("1") {
            eprintln!("LAB_NET_TESTS is not 1: skipped");
            return;
        }
        let cache = Cache::from_env().unwrap();
        let progress = |l: &str| eprintln!("{l}");
        let k61 = fetch(&cache, "debian-6.1", "linux-image-cloud-amd64", &progress).unwrap();
        assert_eq!(
            k61.info.modules,
            [
                "virtio_ring.ko",
                "virtio.ko",
                "virtio_mmio.ko",
                "vsock.ko",
                "vmw_vsock_virtio_transport_common.ko",
                "vmw_vsock_virtio_transport.ko"
            ]
        );
        let k612 = fetch(
            &cache,
            "debian-6.12",
            "linux-image-6.12-cloud-amd64",
            &progress,
        )
        .unwrap();
        assert!(
            k612.info.release.starts_with("6.12."),
            "{}",
            k612.info.release
        );
        assert!(
            !k612.info.modules.iter().any(|m| m == "virtio.ko"),
            "virtio is built in"
        );
        for k in [&k61, &k612] {
            assert!(!k.info.cmdline_devices);
            let found = image::inspect(&k.image_path()).unwrap();
            assert_eq!(found.release.as_deref(), Some(k.info.release.as_str()));
            for m in k.module_paths() {
                assert!(
                    fs::read(&m).unwrap().starts_with(b"\x7fELF"),
                    "{}",
                    m.display()
                );
            }
        }
    }
}
