//! Installed kernels and the catalog of kernels lab knows how to get: an installed kernel's
//! record (`kernel.json`), listing, and resolving a `-k` argument (a name, an id or a file) to a
//! bootable kernel, fetching or building it on first use.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::{Cache, CacheError};
use crate::module_index::{ModuleIndex, ModuleSource};
use crate::{build, debian, image, Progress};

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// `-k` named neither a file, an installed kernel nor a catalog entry.
    #[error("unknown kernel '{name}': not a file, not installed, and not one of {known}")]
    Unknown {
        /// What was asked for.
        name: String,
        /// The catalog's names, comma-separated.
        known: String,
    },
    /// A kernel file given by path is missing.
    #[error("kernel file {} not found", path.display())]
    MissingFile {
        /// The path.
        path: PathBuf,
    },
    /// A kernel file given by path is not a kernel.
    #[error("{} is not a bootable kernel", path.display())]
    BadImage {
        /// The path.
        path: PathBuf,
        /// Why not.
        #[source]
        source: image::ImageError,
    },
    /// An installed kernel's record is unreadable.
    #[error("broken cache entry {}", path.display())]
    Record {
        /// The record's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: RecordError,
    },
    /// Fetching a Debian kernel failed.
    #[error("failed to fetch {name}")]
    Fetch {
        /// The catalog name.
        name: String,
        /// The cause.
        #[source]
        source: debian::DebianError,
    },
    /// The module tree given for a kernel file could not be used.
    #[error("cannot use the modules in {} for kernel {release}", dir.display())]
    HostModules {
        /// The module tree.
        dir: PathBuf,
        /// The kernel's release.
        release: String,
        /// Why not.
        #[source]
        source: crate::modules::ModulesError,
    },
    /// Building a kernel failed.
    #[error("failed to build {name}")]
    Build {
        /// The catalog name.
        name: String,
        /// The cause.
        #[source]
        source: build::BuildError,
    },
}

/// Why a `kernel.json` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// I/O failed.
    #[error("i/o failed")]
    Io(#[from] std::io::Error),
    /// The JSON is malformed.
    #[error("malformed kernel.json")]
    Json(#[from] serde_json::Error),
}

/// Where an installed kernel came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A Debian binary package.
    Debian {
        /// The concrete package, e.g. `linux-image-6.1.0-56-cloud-amd64`.
        package: String,
        /// Its version.
        version: String,
    },
    /// Built by `lab kernel build`.
    Built {
        /// The source tree or tarball it was built from.
        source: String,
        /// The cache key: hash of source and config fragment.
        key: String,
    },
    /// A kernel image file given by path.
    File {
        /// The path.
        path: String,
    },
}

/// The record of an installed kernel, `kernels/<id>/kernel.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// The entry's directory name.
    pub id: String,
    /// The catalog name it answers to (`debian-6.1`), or the id.
    pub name: String,
    /// The kernel release (`uname -r`).
    pub release: String,
    /// Where it came from.
    pub origin: Origin,
    /// SHA-256 of the kernel's `.config`, when known.
    pub config_hash: Option<String>,
    /// The image's file name inside the entry.
    pub image: String,
    /// Module files under `modules/`, in load order.
    pub modules: Vec<String>,
    /// Whether virtio-mmio devices can be described on the command line
    /// (`CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y`); otherwise they need ACPI.
    pub cmdline_devices: bool,
    /// When it was installed (seconds since the epoch).
    pub created_unix: u64,
}

/// A bootable kernel: its record and where its files are.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The entry's directory (for a file kernel: the file's directory).
    pub dir: PathBuf,
    /// The record.
    pub info: KernelInfo,
    /// For a kernel file: the host's module tree of its release, read in place, and the cache
    /// directory holding its index (see [`attach_host_modules`]).
    pub host_modules: Option<(PathBuf, PathBuf)>,
}

/// The file name of an entry's record.
pub const RECORD: &str = "kernel.json";

/// The kernel's whole module tree, under an entry's `modules/` (as its package ships it).
pub const MODULE_TREE: &str = "tree";
/// The tree's index ([`ModuleIndex`]), under an entry's `modules/`.
pub const MODULE_INDEX: &str = "index.json";
/// Decompressed copies of compressed modules, made on first use, under an entry's `modules/`.
pub const MODULE_PLAIN: &str = "plain";

impl Kernel {
    /// Loads the kernel installed in `dir`.
    pub fn load(dir: &Path) -> Result<Self, RecordError> {
        let text = fs::read_to_string(dir.join(RECORD))?;
        let info = serde_json::from_str(&text)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            info,
            host_modules: None,
        })
    }

    /// Writes the record into `dir` (used while staging an entry).
    pub fn save(info: &KernelInfo, dir: &Path) -> Result<(), RecordError> {
        let text = serde_json::to_string_pretty(info)?;
        fs::write(dir.join(RECORD), text + "\n")?;
        Ok(())
    }

    /// The kernel image.
    pub fn image_path(&self) -> PathBuf {
        self.dir.join(&self.info.image)
    }

    /// The module files, in load order.
    pub fn module_paths(&self) -> Vec<PathBuf> {
        let dir = self.dir.join("modules");
        self.info.modules.iter().map(|m| dir.join(m)).collect()
    }

    /// The kernel's whole module tree with its index, when the entry has them (Debian kernels
    /// installed by this lab; kernels built without loadable modules and kernel files given by
    /// path have none).
    pub fn module_source(&self) -> Option<ModuleSource> {
        if let Some((tree, cached)) = &self.host_modules {
            let index = ModuleIndex::load(&cached.join(MODULE_INDEX))?;
            return Some(ModuleSource::new(
                tree.clone(),
                cached.join(MODULE_PLAIN),
                index,
            ));
        }
        let dir = self.dir.join("modules");
        let tree = dir.join(MODULE_TREE);
        if !tree.is_dir() {
            return None;
        }
        let index = ModuleIndex::load(&dir.join(MODULE_INDEX))?;
        Some(ModuleSource::new(tree, dir.join(MODULE_PLAIN), index))
    }
}

/// Seconds since the epoch, for records.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How a catalog kernel is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// Download a Debian image package (through the given meta-package) and extract it.
    Debian {
        /// The meta-package that depends on the current concrete image package.
        meta_package: &'static str,
    },
    /// Build Debian's kernel source package with `kernels/lab.config`.
    Build {
        /// The source package, e.g. `linux-source-6.1`.
        source_package: &'static str,
    },
}

/// A kernel lab knows how to get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Its name, as given to `-k`.
    pub name: &'static str,
    /// One line for `lab kernel list`.
    pub description: &'static str,
    /// How to get it.
    pub recipe: Recipe,
}

/// The catalog. The first entry is the default kernel.
pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "debian-6.1",
        description: "Debian 12 cloud kernel 6.1 (linux-image-cloud-amd64)",
        recipe: Recipe::Debian {
            meta_package: "linux-image-cloud-amd64",
        },
    },
    CatalogEntry {
        name: "debian-6.12",
        description: "Debian 12 backported cloud kernel 6.12 (linux-image-6.12-cloud-amd64)",
        recipe: Recipe::Debian {
            meta_package: "linux-image-6.12-cloud-amd64",
        },
    },
    CatalogEntry {
        name: "lab-6.1",
        description: "linux-source-6.1 built with kernels/lab.config",
        recipe: Recipe::Build {
            source_package: "linux-source-6.1",
        },
    },
    CatalogEntry {
        name: "lab-6.12",
        description: "linux-source-6.12 built with kernels/lab.config",
        recipe: Recipe::Build {
            source_package: "linux-source-6.12",
        },
    },
];

/// The default kernel's name.
pub const DEFAULT_KERNEL: &str = "debian-6.1";

/// Looks `name` up in the catalog.
pub fn entry(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|e| e.name == name)
}

/// Every installed kernel, newest first.
pub fn installed(cache: &Cache) -> Result<Vec<Kernel>, CatalogError> {
    let dir = cache.kernels_dir()?;
    let mut out = Vec::new();
    let entries = fs::read_dir(&dir).map_err(|source| CatalogError::Record {
        path: dir.clone(),
        source: source.into(),
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.join(RECORD).is_file() {
            continue;
        }
        let kernel = Kernel::load(&path).map_err(|source| CatalogError::Record {
            path: path.join(RECORD),
            source,
        })?;
        out.push(kernel);
    }
    out.sort_by(|a, b| {
        b.info
            .created_unix
            .cmp(&a.info.created_unix)
            .then_with(|| a.info.id.cmp(&b.info.id))
    });
    Ok(out)
}

/// The newest installed kernel answering to `name` (a catalog name or an id).
pub fn find_installed(cache: &Cache, name: &str) -> Result<Option<Kernel>, CatalogError> {
    Ok(installed(cache)?
        .into_iter()
        .find(|k| k.info.id == name || k.info.name == name))
}

/// Whether `arg` is meant as a path rather than a name.
fn looks_like_path(arg: &str) -> bool {
    arg.contains('/') || arg.starts_with('.') || Path::new(arg).exists()
}

/// Resolves a `-k` argument: a kernel image path, an installed kernel's name or id, or a catalog
/// name, which is fetched or built on first use.
pub fn resolve(cache: &Cache, arg: &str, progress: Progress<'_>) -> Result<Kernel, CatalogError> {
    if looks_like_path(arg) {
        return from_file(Path::new(arg));
    }
    if let Some(kernel) = find_installed(cache, arg)? {
        return Ok(kernel);
    }
    match entry(arg) {
        Some(entry) => obtain(cache, entry, progress),
        None => Err(CatalogError::Unknown {
            name: arg.to_string(),
            known: CATALOG
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Makes sure an installed kernel has its module tree when it can have one: a Debian kernel
/// installed by an older lab gets it added from its package. Others are left as they are.
pub fn ensure_module_tree(
    cache: &Cache,
    kernel: &Kernel,
    progress: Progress<'_>,
) -> Result<(), CatalogError> {
    if kernel.module_source().is_some() || !matches!(kernel.info.origin, Origin::Debian { .. }) {
        return Ok(());
    }
    debian::add_module_tree(cache, kernel, progress).map_err(|source| CatalogError::Fetch {
        name: kernel.info.name.clone(),
        source,
    })
}

/// Fetches or builds a catalog kernel, replacing what is installed under its name.
pub fn obtain(
    cache: &Cache,
    entry: &CatalogEntry,
    progress: Progress<'_>,
) -> Result<Kernel, CatalogError> {
    match entry.recipe {
        Recipe::Debian { meta_package } => debian::fetch(cache, entry.name, meta_package, progress)
            .map_err(|source| CatalogError::Fetch {
                name: entry.name.to_string(),
                source,
            }),
        Recipe::Build { source_package } => {
            build::build_from_package(cache, entry.name, source_package, progress).map_err(
                |source| CatalogError::Build {
                    name: entry.name.to_string(),
                    source,
                },
            )
        }
    }
}

/// Gives a kernel file the host's modules of its release: `dir` when given (`--modules DIR`,
/// a `lib/modules/RELEASE` tree), else `/lib/modules/RELEASE` where this machine has it (a
/// kernel installed here, or a build's `make modules_install`). The tree is read in place; its
/// index is built once into the cache, keyed by the kernel file's id and the tree. Nothing
/// happens for other kernels or where no tree is found (the guest then loads no modules).
pub fn attach_host_modules(
    cache: &Cache,
    kernel: &mut Kernel,
    dir: Option<&Path>,
    progress: Progress<'_>,
) -> Result<(), CatalogError> {
    if !matches!(kernel.info.origin, Origin::File { .. }) {
        return Ok(());
    }
    let release = kernel.info.release.clone();
    let tree = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            let d = Path::new("/lib/modules").join(&release);
            if release == "unknown" || !d.join("modules.dep").is_file() {
                return Ok(());
            }
            d
        }
    };
    let tree = fs::canonicalize(&tree).unwrap_or(tree);
    let mut h = Sha256::new();
    h.update(kernel.info.id.as_bytes());
    h.update(tree.as_os_str().as_encoded_bytes());
    let key: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let cached = cache.dir("host-modules")?.join(key);
    let index_path = cached.join(MODULE_INDEX);
    let index = match ModuleIndex::load(&index_path) {
        Some(index) => index,
        None => {
            let failed = |source| CatalogError::HostModules {
                dir: tree.clone(),
                release: release.clone(),
                source,
            };
            progress(&format!("indexing the modules in {}", tree.display()));
            let builtin = fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default();
            let index = ModuleIndex::build(&tree, &release, &builtin).map_err(failed)?;
            fs::create_dir_all(&cached)
                .and_then(|()| index.save(&index_path))
                .map_err(|source| {
                    failed(crate::modules::ModulesError::Walk {
                        path: cached.clone(),
                        source,
                    })
                })?;
            index
        }
    };
    // The agent's channel needs vsock: the modules of it the tree has load at boot, as a
    // Debian kernel's recorded ones do.
    let present: Vec<&str> = debian::WANTED_MODULES
        .iter()
        .copied()
        .filter(|m| index.get(m).is_some())
        .collect();
    kernel.info.modules = index.load_order(&present).unwrap_or_default();
    kernel.host_modules = Some((tree, cached));
    Ok(())
}

/// A kernel image given by path: checked, not copied; it carries no modules.
pub fn from_file(path: &Path) -> Result<Kernel, CatalogError> {
    if !path.is_file() {
        return Err(CatalogError::MissingFile {
            path: path.to_path_buf(),
        });
    }
    let found = image::inspect(path).map_err(|source| CatalogError::BadImage {
        path: path.to_path_buf(),
        source,
    })?;
    let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let file_name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The id names this very file (path, size, mtime), so verdicts cached per kernel id never
    // carry over to another file of the same name or to a rebuilt one.
    let meta = fs::metadata(&abs).ok();
    let mut h = Sha256::new();
    h.update(abs.as_os_str().as_encoded_bytes());
    if let Some(m) = &meta {
        h.update(m.len().to_le_bytes());
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.update(mtime.to_le_bytes());
    }
    let digest = h.finalize();
    let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Ok(Kernel {
        dir,
        host_modules: None,
        info: KernelInfo {
            id: format!("file-{file_name}-{short}"),
            name: abs.display().to_string(),
            release: found.release.unwrap_or_else(|| "unknown".to_string()),
            origin: Origin::File {
                path: abs.display().to_string(),
            },
            config_hash: None,
            image: file_name,
            modules: Vec::new(),
            cmdline_devices: true,
            created_unix: now_unix(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, name: &str, created: u64) -> KernelInfo {
        KernelInfo {
            id: id.into(),
            name: name.into(),
            release: "6.1.0-test".into(),
            origin: Origin::Debian {
                package: "p".into(),
                version: "1".into(),
            },
            config_hash: None,
            image: "vmlinuz".into(),
            modules: vec!["virtio_mmio.ko".into()],
            cmdline_devices: false,
            created_unix: created,
        }
    }

    #[test]
    fn newest_installed_kernel_wins_for_a_name() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        for (id, created) in [("debian-6.1-a", 10), ("debian-6.1-b", 20)] {
            let dir = cache.kernels_dir().unwrap().join(id);
            fs::create_dir_all(&dir).unwrap();
            Kernel::save(&info(id, "debian-6.1", created), &dir).unwrap();
        }
        let k = find_installed(&cache, "debian-6.1").unwrap().unwrap();
        assert_eq!(k.info.id, "debian-6.1-b");
        let k = find_installed(&cache, "debian-6.1-a").unwrap().unwrap();
        assert_eq!(k.info.id, "debian-6.1-a");
        assert_eq!(
            k.module_paths(),
            vec![k.dir.join("modules").join("virtio_mmio.ko")]
        );
    }

    #[test]
    fn unknown_names_list_the_catalog() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let err = resolve(&cache, "debian-9", &|_| {}).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("debian-9") && text.contains("debian-6.1, debian-6.12"));
    }

    #[test]
    fn missing_and_garbage_files_are_named() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("nope/bzImage");
        let err = from_file(&missing).unwrap_err();
        assert!(matches!(err, CatalogError::MissingFile { .. }), "{err}");
        let garbage = root.path().join("garbage");
        fs::write(&garbage, vec![0x5a; 4096]).unwrap();
        let err = from_file(&garbage).unwrap_err();
        assert!(matches!(err, CatalogError::BadImage { .. }), "{err}");
    }

    #[test]
    fn broken_records_name_their_file() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let dir = cache.kernels_dir().unwrap().join("x");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(RECORD), "{").unwrap();
        let err = installed(&cache).unwrap_err();
        assert!(err.to_string().contains("kernel.json"), "{err}");
    }
}
