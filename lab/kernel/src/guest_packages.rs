//! Extra Debian packages for the guest: resolves their dependency closure with apt (rootless),
//! fetches and extracts each package at its candidate version, keeps what a guest needs, and
//! writes one cpio layer to append to the initramfs, cached by its (package, version) list.
//!
//! # The dependency rule
//!
//! Starting from the requested packages, lab follows `Depends` and `Pre-Depends` (never
//! `Recommends`, `Suggests` or the rest). Each clause `a | b | c` is handled so:
//!
//! 1. A clause naming a packaging-only package ([`PACKAGING_ONLY`]: dpkg, debconf, …, which
//!    exist to run maintainer scripts, and the guest runs none) is dropped.
//! 2. A clause with an alternative already chosen (requested, or picked earlier) is satisfied.
//! 3. Otherwise the first alternative apt has a real (non-virtual) candidate of is picked. A
//!    package marked `Essential: yes` satisfies the clause without being carried: Debian never
//!    lists essential packages as plain dependencies, so such a clause is a version floor for
//!    maintainer scripts, and busybox stands in for the essential user space. Name one with
//!    `--guest-package` to carry it anyway.
//! 4. A clause with only virtual or unknown alternatives is an error naming the package that
//!    needs it; naming a provider as a requested package satisfies it by rule 2.
//!
//! Version constraints are not checked: apt's candidates come from one consistent archive.
//!
//! # The guest's tree
//!
//! Debian bookworm is usr-merged: `/bin`, `/sbin`, `/lib` and `/lib64` are symbolic links into
//! `/usr` (the base image makes them), so files a package ships there land under `/usr`
//! ([`usr_merged`]), and the layer never replaces those links. What a guest never reads is left
//! out ([`DROPPED`]: documentation, manuals, locales, glibc's gconv modules, build-time files).
//!
//! # Caching
//!
//! A resolution is remembered under `<cache>/state/guest-packages/` keyed by the requested
//! names and a fingerprint of apt's package lists, so that a boot asks apt nothing until the
//! lists change. Packages are downloaded to `<cache>/debs` and extracted to
//! `<cache>/pkgs/<name>-<version>` (the layout [`crate::packages`] uses), and the layer is
//! `<cache>/initramfs/pkgs-<key>.cpio`, the key hashing the (package, version) list and
//! [`FILTER_VERSION`]. A layer in the cache needs neither the network nor the `.deb` files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::{Cache, CacheError};
use crate::initramfs::{Compression, InitramfsError, Spec};
use crate::packages::{self, PackageError, PackageVersion};
use crate::Progress;

/// The version of what the layer keeps ([`DROPPED`], [`usr_merged`]); bump it when either
/// changes, so that cached layers are rebuilt.
pub const FILTER_VERSION: u32 = 1;

/// Packages that exist to run maintainer scripts; dependencies on them are dropped unless they
/// were requested.
pub const PACKAGING_ONLY: &[&str] = &[
    "adduser",
    "cdebconf",
    "debconf",
    "debconf-2.0",
    "dpkg",
    "init-system-helpers",
    "install-info",
    "lsb-base",
    "sysvinit-utils",
    "ucf",
    "usr-is-merged",
    "usrmerge",
];

/// Guest paths (after [`usr_merged`]) left out of the layer, with everything under them.
pub const DROPPED: &[&str] = &[
    "/usr/share/doc",
    "/usr/share/doc-base",
    "/usr/share/man",
    "/usr/share/info",
    "/usr/share/locale",
    "/usr/share/lintian",
    "/usr/share/bug",
    "/usr/share/gdb",
    "/usr/share/gcc",
    "/usr/share/bash-completion",
    "/usr/share/zsh",
    "/usr/share/fish",
    "/usr/share/aclocal",
    "/usr/share/pkgconfig",
    "/usr/share/menu",
    "/usr/share/pixmaps",
    "/usr/share/icons",
    "/usr/lib/pkgconfig",
    "/usr/lib/x86_64-linux-gnu/pkgconfig",
    "/usr/lib/x86_64-linux-gnu/gconv",
    "/usr/lib/debug",
];

/// The top-level directories that are links into `/usr` in a usr-merged system.
pub const MERGED_DIRS: &[&str] = &["bin", "sbin", "lib", "lib64"];

/// Errors of preparing guest packages.
#[derive(Debug, thiserror::Error)]
pub enum GuestPackagesError {
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A requested name is no package apt has a candidate of.
    #[error("apt has no package {package} (unknown, or only virtual)")]
    Unknown {
        /// The name.
        package: String,
    },
    /// A dependency names only virtual or unknown packages.
    #[error("{package} depends on '{dependency}', which apt has no real package for: name a provider with --guest-package")]
    Unresolvable {
        /// The package that depends.
        package: String,
        /// The dependency clause.
        dependency: String,
    },
    /// apt has no package lists.
    #[error("failed to resolve {packages}: apt has no package lists (run `apt-get update` as root once)")]
    NoLists {
        /// The requested packages.
        packages: String,
    },
    /// `apt-cache` failed.
    #[error("failed to ask apt about {packages}")]
    Apt {
        /// The packages asked about.
        packages: String,
        /// The cause.
        #[source]
        source: PackageError,
    },
    /// A package could not be downloaded or extracted.
    #[error("failed to fetch {package} {version}")]
    Fetch {
        /// The package.
        package: String,
        /// Its version.
        version: String,
        /// The cause.
        #[source]
        source: PackageError,
    },
    /// An extracted package could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The layer could not be written.
    #[error("failed to write the package layer")]
    Layer(#[from] InitramfsError),
}

/// A package at the version the layer carries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResolvedPackage {
    /// The package name.
    pub package: String,
    /// Its version (apt's candidate when resolved).
    pub version: String,
}

/// A package layer in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The cpio archive, to append to an initramfs.
    pub path: PathBuf,
    /// What it carries, by name.
    pub packages: Vec<ResolvedPackage>,
}

/// Packages a guest gets besides the base image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestPackages {
    names: Vec<String>,
}

impl GuestPackages {
    /// The packages `names` (repeats dropped, order kept).
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out: Vec<String> = Vec::new();
        for name in names {
            let name = name.into();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Self { names: out }
    }

    /// The requested names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether no package is requested.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The dependency closure at apt's candidate versions, sorted by name. Remembered in the
    /// cache until apt's package lists change.
    pub fn resolve(&self, cache: &Cache) -> Result<Vec<ResolvedPackage>, GuestPackagesError> {
        self.resolve_with(cache, lists_fingerprint(), &mut |names| {
            apt_show(names).map_err(|source| GuestPackagesError::Apt {
                packages: names.join(" "),
                source,
            })
        })
    }

    /// [`GuestPackages::resolve`] with apt's lists fingerprinted as `fingerprint` (`None`: no
    /// lists) and candidates looked up with `lookup`. Without lists, the last resolution of
    /// the same names stands (a guest carrying lab's cache has no apt lists).
    fn resolve_with(
        &self,
        cache: &Cache,
        fingerprint: Option<String>,
        lookup: &mut Lookup<'_>,
    ) -> Result<Vec<ResolvedPackage>, GuestPackagesError> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let requested = self.names.join(" ");
        for name in &self.names {
            if !valid_name(name) {
                return Err(GuestPackagesError::Unknown {
                    package: name.clone(),
                });
            }
        }
        let dir = cache.state_dir()?.join("guest-packages");
        let mut sorted = self.names.clone();
        sorted.sort();
        let by_names = dir.join(format!("names-{}.json", names_key(&sorted)));
        let read = |path: &Path| {
            fs::read(path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Vec<ResolvedPackage>>(&b).ok())
        };
        let Some(fingerprint) = fingerprint else {
            // No package lists (a guest with lab in it, a machine that never ran apt update):
            // the last resolution of these names stands, if there is one.
            return read(&by_names).ok_or(GuestPackagesError::NoLists {
                packages: requested,
            });
        };
        let mut h = Sha256::new();
        h.update(b"lab-guest-packages-resolution-v1\0");
        h.update(fingerprint.as_bytes());
        for name in &sorted {
            h.update(name.as_bytes());
            h.update(b"\0");
        }
        let record = dir.join(format!("{}.json", hex(&h.finalize())));
        if let Some(resolved) = read(&record) {
            if !by_names.exists() {
                let _ = save_atomically(&dir, &by_names, &resolved);
            }
            return Ok(resolved);
        }
        let stanzas = closure(&self.names, lookup)?;
        let mut resolved: Vec<ResolvedPackage> = stanzas
            .into_iter()
            .map(|s| ResolvedPackage {
                package: s.package,
                version: s.version,
            })
            .collect();
        resolved.sort();
        // Only a cache: failing to save costs apt queries next time, nothing else.
        let _ = save_atomically(&dir, &record, &resolved);
        let _ = save_atomically(&dir, &by_names, &resolved);
        Ok(resolved)
    }

    /// The layer carrying these packages and their dependencies: from the cache when built
    /// before, else fetched, extracted, filtered and written.
    pub fn layer(
        &self,
        cache: &Cache,
        progress: Progress<'_>,
    ) -> Result<Layer, GuestPackagesError> {
        let packages = self.resolve(cache)?;
        let key = layer_key(&packages);
        let dir = cache.initramfs_dir()?;
        let path = dir.join(format!("pkgs-{key}.cpio"));
        if path.is_file() {
            return Ok(Layer { path, packages });
        }
        let _lock = cache.lock(&format!("layer-{key}"))?;
        if path.is_file() {
            return Ok(Layer { path, packages });
        }
        let mut trees = Vec::new();
        for p in &packages {
            trees.push(extracted(cache, p, progress)?);
        }
        progress(&format!(
            "writing the guest package layer ({} packages)",
            packages.len()
        ));
        let spec = layer_spec(&trees)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(&dir)
            .map_err(InitramfsError::Write)?;
        spec.write_to(tmp.as_file_mut(), Compression::None)?;
        tmp.as_file().sync_all().map_err(InitramfsError::Write)?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(InitramfsError::Write)?;
        tmp.persist(&path)
            .map_err(|e| InitramfsError::Write(e.error))?;
        Ok(Layer { path, packages })
    }
}

/// The key of the offline record of a resolution: the SHA-256 (hex) of the sorted names.
fn names_key(sorted: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"lab-guest-packages-names-v1\0");
    for name in sorted {
        h.update(name.as_bytes());
        h.update(b"\0");
    }
    hex(&h.finalize())
}

/// The layer's cache key: the SHA-256 (hex) of the sorted (package, version) list and
/// [`FILTER_VERSION`].
pub fn layer_key(packages: &[ResolvedPackage]) -> String {
    let mut sorted = packages.to_vec();
    sorted.sort();
    let mut h = Sha256::new();
    h.update(b"lab-guest-packages-layer\0");
    h.update(FILTER_VERSION.to_le_bytes());
    for p in &sorted {
        h.update(p.package.as_bytes());
        h.update(b"\0");
        h.update(p.version.as_bytes());
        h.update(b"\0");
    }
    hex(&h.finalize())
}

/// `path` as it is in a usr-merged system: `/bin/x` is `/usr/bin/x`, and so for `/sbin`,
/// `/lib` and `/lib64`; other paths are unchanged. The merged directories themselves map to
/// their `/usr` twins.
pub fn usr_merged(path: &str) -> String {
    let rest = path.trim_start_matches('/');
    let top = rest.split('/').next().unwrap_or_default();
    if path.starts_with('/') && MERGED_DIRS.contains(&top) {
        format!("/usr/{rest}")
    } else {
        path.to_string()
    }
}

/// Whether `path` (a guest path after [`usr_merged`]) is left out of layers.
pub fn dropped(path: &str) -> bool {
    DROPPED.iter().any(|d| {
        path.strip_prefix(d)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Debian's package name syntax (policy 5.6.1), which also keeps option-like words away from
/// apt's command line.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// A candidate as `apt-cache show` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stanza {
    package: String,
    version: String,
    /// `Pre-Depends` then `Depends`: clauses of alternatives, bare names.
    depends: Vec<Vec<String>>,
    /// The virtual packages it provides.
    provides: Vec<String>,
    essential: bool,
}

/// Parses `apt-cache show` output: one stanza per candidate; for each package the first stanza
/// of this host's architecture (or `all`) counts. Continuation lines are folded.
fn parse_stanzas(text: &str) -> Vec<Stanza> {
    let mut out: Vec<Stanza> = Vec::new();
    for block in text.split("\n\n") {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut last: Option<String> = None;
        for line in block.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = last.as_ref().and_then(|k| fields.get_mut(k)) {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.to_string(), v.trim().to_string());
                last = Some(k.to_string());
            }
        }
        let (Some(package), Some(version)) = (fields.get("Package"), fields.get("Version")) else {
            continue;
        };
        let arch = fields.get("Architecture").map(String::as_str);
        if !matches!(arch, None | Some("amd64" | "all"))
            || out.iter().any(|s| &s.package == package)
        {
            continue;
        }
        let mut depends = Vec::new();
        for key in ["Pre-Depends", "Depends"] {
            if let Some(v) = fields.get(key) {
                depends.extend(parse_relations(v));
            }
        }
        out.push(Stanza {
            package: package.clone(),
            version: version.clone(),
            depends,
            provides: fields
                .get("Provides")
                .map(|v| parse_relations(v).into_iter().flatten().collect())
                .unwrap_or_default(),
            essential: fields.get("Essential").is_some_and(|v| v == "yes"),
        });
    }
    out
}

/// Parses a relation field (`a (>= 1) | b:any [amd64], c`) into clauses of bare names.
fn parse_relations(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|clause| {
            clause
                .split('|')
                .filter_map(|alt| {
                    let name = alt.trim().split([' ', '(', '[', '<']).next()?;
                    let name = name.split(':').next()?;
                    (!name.is_empty()).then(|| name.to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// Asks for the candidates of some names.
type Lookup<'a> = dyn FnMut(&[String]) -> Result<Vec<Stanza>, GuestPackagesError> + 'a;

/// The closure of `requested` by the module's rule; `lookup` returns the candidates of the
/// names it is given (absent: virtual or unknown).
fn closure(
    requested: &[String],
    lookup: &mut Lookup<'_>,
) -> Result<Vec<Stanza>, GuestPackagesError> {
    let mut known: BTreeMap<String, Option<Stanza>> = BTreeMap::new();
    let mut ask = |names: Vec<String>,
                   known: &mut BTreeMap<String, Option<Stanza>>|
     -> Result<(), GuestPackagesError> {
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| !known.contains_key(n))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let found = lookup(&names)?;
        for name in names {
            let stanza = found.iter().find(|s| s.package == name).cloned();
            known.insert(name, stanza);
        }
        Ok(())
    };
    ask(requested.to_vec(), &mut known)?;
    let mut chosen: Vec<Stanza> = Vec::new();
    let mut satisfied: BTreeSet<String> = BTreeSet::new();
    for name in requested {
        match known.get(name) {
            Some(Some(s)) => {
                satisfied.insert(name.clone());
                satisfied.extend(s.provides.iter().cloned());
                chosen.push(s.clone());
            }
            _ => {
                return Err(GuestPackagesError::Unknown {
                    package: name.clone(),
                })
            }
        }
    }
    let mut fresh: Vec<Stanza> = chosen.clone();
    while !fresh.is_empty() {
        let clauses: Vec<(String, Vec<String>)> = fresh
            .iter()
            .flat_map(|s| s.depends.iter().map(|c| (s.package.clone(), c.clone())))
            .filter(|(_, c)| !c.iter().any(|a| PACKAGING_ONLY.contains(&a.as_str())))
            .collect();
        ask(
            clauses
                .iter()
                .filter(|(_, c)| !c.iter().any(|a| satisfied.contains(a)))
                .flat_map(|(_, c)| c.iter().cloned())
                .collect(),
            &mut known,
        )?;
        fresh.clear();
        for (package, clause) in clauses {
            if clause.iter().any(|a| satisfied.contains(a)) {
                continue;
            }
            let pick = clause
                .iter()
                .find_map(|a| known.get(a).and_then(Option::as_ref))
                .ok_or_else(|| GuestPackagesError::Unresolvable {
                    package: package.clone(),
                    dependency: clause.join(" | "),
                })?;
            satisfied.insert(pick.package.clone());
            satisfied.extend(pick.provides.iter().cloned());
            if !pick.essential {
                chosen.push(pick.clone());
                fresh.push(pick.clone());
            }
        }
    }
    Ok(chosen)
}

/// `apt-cache show --no-all-versions NAMES`: the candidates apt has; virtual and unknown names
/// yield nothing.
fn apt_show(names: &[String]) -> Result<Vec<Stanza>, PackageError> {
    let mut cmd = Command::new("apt-cache");
    cmd.args(["show", "--no-all-versions", "--"]).args(names);
    let line = format!("apt-cache show --no-all-versions {}", names.join(" "));
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PackageError::Missing {
                tool: "apt-cache",
                package: "apt",
            }
        } else {
            PackageError::Command {
                command: line.clone(),
                stderr_tail: e.to_string(),
            }
        }
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // apt-cache fails only when none of the names has a candidate.
        if stderr.contains("No packages found") {
            return Ok(Vec::new());
        }
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(PackageError::Command {
            command: line,
            stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
        });
    }
    Ok(parse_stanzas(&String::from_utf8_lossy(&out.stdout)))
}

/// A fingerprint of apt's package lists and preferences (names, sizes, modification times);
/// `None` when there are no lists.
fn lists_fingerprint() -> Option<String> {
    let mut h = Sha256::new();
    let mut any = false;
    let add = |dir: &Path, only_lists: bool, h: &mut Sha256| {
        let Ok(entries) = fs::read_dir(dir) else {
            return false;
        };
        let mut found = false;
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if only_lists && !name.contains("_Packages") {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            h.update(format!("{name}\0{}\0{mtime}\0", meta.len()).as_bytes());
            found = true;
        }
        found
    };
    any |= add(Path::new("/var/lib/apt/lists"), true, &mut h);
    if !any {
        return None;
    }
    add(Path::new("/etc/apt/preferences.d"), false, &mut h);
    if let Ok(meta) = fs::metadata("/etc/apt/preferences") {
        h.update(format!("preferences\0{}\0", meta.len()).as_bytes());
    }
    Some(hex(&h.finalize()))
}

/// Writes `value` as JSON to `path` in `dir` through a temporary file.
fn save_atomically(dir: &Path, path: &Path, value: &[ResolvedPackage]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)?;
    tmp.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// `p` extracted into `<cache>/pkgs/<name>-<version>`, downloaded and extracted if missing.
fn extracted(
    cache: &Cache,
    p: &ResolvedPackage,
    progress: Progress<'_>,
) -> Result<PathBuf, GuestPackagesError> {
    let fetch = |source| GuestPackagesError::Fetch {
        package: p.package.clone(),
        version: p.version.clone(),
        source,
    };
    let name = format!("{}-{}", p.package, p.version.replace(':', "_"));
    let dest = cache.pkgs_dir()?.join(&name);
    if dest.join(".complete").is_file() {
        return Ok(dest);
    }
    let pv = PackageVersion {
        package: p.package.clone(),
        version: p.version.clone(),
        depends: String::new(),
    };
    let deb = packages::download(cache, &pv, progress).map_err(fetch)?;
    let _lock = cache.lock(&format!("pkg-{name}"))?;
    if dest.join(".complete").is_file() {
        return Ok(dest);
    }
    let staging = cache.staging("pkg-")?;
    progress(&format!("extracting {}", p.package));
    packages::extract(&deb, staging.path()).map_err(fetch)?;
    fs::write(staging.path().join(".complete"), &p.version).map_err(|source| {
        GuestPackagesError::Read {
            path: staging.path().to_path_buf(),
            source,
        }
    })?;
    cache.install(staging, &dest)?;
    Ok(dest)
}

/// What one guest path of the layer holds, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir(u32),
    File(PathBuf, u32),
    Symlink(String),
}

/// The layer of the extracted package `trees`, in order: paths usr-merged, [`DROPPED`] ones
/// left out, the merged directories' links left to the base image. Where two entries claim one
/// path, the first wins, except that a file or directory wins over a link (a package that
/// ships both `/bin/x` and a link `/usr/bin/x -> /bin/x` keeps the file).
fn layer_spec(trees: &[PathBuf]) -> Result<Spec, GuestPackagesError> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for tree in trees {
        walk(tree, "", &mut entries)?;
    }
    let mut spec = Spec::new();
    for (path, entry) in &entries {
        match entry {
            Entry::Dir(mode) => spec.dir(path, *mode),
            Entry::File(host, mode) => spec.file(path, host, *mode),
            Entry::Symlink(target) => spec.symlink(path, target),
        };
    }
    Ok(spec)
}

fn walk(
    host_dir: &Path,
    guest_dir: &str,
    entries: &mut BTreeMap<String, Entry>,
) -> Result<(), GuestPackagesError> {
    let read = |path: &Path, source| GuestPackagesError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut children: Vec<_> = fs::read_dir(host_dir)
        .map_err(|e| read(host_dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(host_dir, e))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let Some(name) = child.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if guest_dir.is_empty() && name == ".complete" {
            continue;
        }
        let host = child.path();
        let raw = format!("{guest_dir}/{name}");
        let guest = usr_merged(&raw);
        if dropped(&guest) {
            continue;
        }
        let meta = fs::symlink_metadata(&host).map_err(|e| read(&host, e))?;
        let kind = meta.file_type();
        let top_level_merged = guest_dir.is_empty() && MERGED_DIRS.contains(&name.as_str());
        let entry = if kind.is_dir() {
            Entry::Dir(meta.permissions().mode() & 0o7777)
        } else if kind.is_symlink() {
            if top_level_merged {
                // The base image's link; never replaced.
                continue;
            }
            let target = fs::read_link(&host).map_err(|e| read(&host, e))?;
            let Some(target) = target.to_str() else {
                continue;
            };
            Entry::Symlink(target.to_string())
        } else if kind.is_file() {
            Entry::File(host.clone(), meta.permissions().mode() & 0o7777)
        } else {
            continue;
        };
        match entries.get(&guest) {
            None => {
                entries.insert(guest.clone(), entry.clone());
            }
            Some(Entry::Symlink(_)) if !matches!(entry, Entry::Symlink(_)) => {
                entries.insert(guest.clone(), entry.clone());
            }
            Some(_) => {}
        }
        if kind.is_dir() {
            walk(&host, &raw, entries)?;
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(package: &str, depends: &str, essential: bool) -> Stanza {
        Stanza {
            package: package.into(),
            version: "1.0".into(),
            depends: parse_relations(depends),
            provides: Vec::new(),
            essential,
        }
    }

    #[test]
    fn relations_parse_to_bare_names() {
        let cases: &[(&str, &[&[&str]])] = &[
            ("", &[]),
            ("libc6 (>= 2.14)", &[&["libc6"]]),
            (
                "libatf-c++-2 (>= 0.21), libc6 (>= 2.14)",
                &[&["libatf-c++-2"], &["libc6"]],
            ),
            (
                "debconf (>= 0.5) | debconf-2.0, perl:any",
                &[&["debconf", "debconf-2.0"], &["perl"]],
            ),
            ("foo [amd64] <!nocheck>|bar", &[&["foo", "bar"]]),
        ];
        for (field, want) in cases {
            let got = parse_relations(field);
            let want: Vec<Vec<String>> = want
                .iter()
                .map(|c| c.iter().map(|s| s.to_string()).collect())
                .collect();
            assert_eq!(got, want, "{field}");
        }
    }

    #[test]
    fn apt_cache_show_stanzas_parse() {
        let text = "Package: atf-sh\nVersion: 0.21-6\nArchitecture: amd64\nDepends: libatf-c++-2 (>= 0.21),\n libc6 (>= 2.14)\nDescription: x\n more\n\n\
                    Package: libc6\nVersion: 2.36-9\nArchitecture: i386\n\n\
                    Package: libc6\nVersion: 2.36-9+deb12u14\nArchitecture: amd64\nPre-Depends: dpkg (>= 1.17)\nDepends: libgcc-s1\nProvides: libc6-amd64 (= 2.36)\n\n\
                    Package: libc6\nVersion: 0\nArchitecture: amd64\n\n\
                    Package: dash\nVersion: 0.5.12-2\nArchitecture: amd64\nEssential: yes\n";
        let got = parse_stanzas(text);
        assert_eq!(
            got,
            vec![
                Stanza {
                    package: "atf-sh".into(),
                    version: "0.21-6".into(),
                    depends: vec![vec!["libatf-c++-2".into()], vec!["libc6".into()]],
                    provides: vec![],
                    essential: false,
                },
                Stanza {
                    package: "libc6".into(),
                    version: "2.36-9+deb12u14".into(),
                    depends: vec![vec!["dpkg".into()], vec!["libgcc-s1".into()]],
                    provides: vec!["libc6-amd64".into()],
                    essential: false,
                },
                Stanza {
                    package: "dash".into(),
                    version: "0.5.12-2".into(),
                    depends: vec![],
                    provides: vec![],
                    essential: true,
                },
            ]
        );
    }

    fn archive() -> Vec<Stanza> {
        vec![
            stanza(
                "atf-sh",
                "libatf-c++-2 (>= 0.21), libc6 (>= 2.14), libstdc++6",
                false,
            ),
            stanza("libatf-c++-2", "libc6, libstdc++6", false),
            stanza("libc6", "libgcc-s1", false),
            stanza("libgcc-s1", "gcc-12-base, libc6", false),
            stanza("libstdc++6", "gcc-12-base, libc6, libgcc-s1", false),
            stanza("gcc-12-base", "", false),
            stanza("tool", "dpkg (>= 1.19), debconf | debconf-2.0, dash", false),
            stanza("dash", "libc6", true),
            stanza("dpkg", "", true),
            stanza("debconf", "", false),
            Stanza {
                provides: vec!["awk".into()],
                ..stanza("mawk", "libc6", false)
            },
            stanza("gawk", "libc6", false),
            stanza("awky", "awk", false),
            stanza("awkier", "virtual-one | gawk", false),
        ]
    }

    fn resolve_in(requested: &[&str]) -> (Result<Vec<String>, GuestPackagesError>, usize) {
        let archive = archive();
        let mut calls = 0;
        let requested: Vec<String> = requested.iter().map(|s| s.to_string()).collect();
        let got = closure(&requested, &mut |names| {
            calls += 1;
            Ok(archive
                .iter()
                .filter(|s| names.contains(&s.package))
                .cloned()
                .collect())
        })
        .map(|v| {
            let mut names: Vec<String> = v.into_iter().map(|s| s.package).collect();
            names.sort();
            names
        });
        (got, calls)
    }

    #[test]
    fn without_apt_lists_the_last_resolution_of_the_names_stands() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let archive = archive();
        let calls = std::cell::Cell::new(0);
        let mut lookup = |names: &[String]| -> Result<Vec<Stanza>, GuestPackagesError> {
            calls.set(calls.get() + 1);
            Ok(archive
                .iter()
                .filter(|s| names.contains(&s.package))
                .cloned()
                .collect())
        };
        let pkgs = GuestPackages::new(["atf-sh"]);
        let none = pkgs.resolve_with(&cache, None, &mut lookup);
        assert!(
            matches!(none, Err(GuestPackagesError::NoLists { .. })),
            "{none:?}"
        );
        let online = pkgs
            .resolve_with(&cache, Some("lists-1".into()), &mut lookup)
            .unwrap();
        assert!(!online.is_empty());
        let asked = calls.get();
        // Offline, and in another order: the same packages, apt not asked.
        let offline = GuestPackages::new(["atf-sh"])
            .resolve_with(&cache, None, &mut lookup)
            .unwrap();
        assert_eq!(offline, online);
        assert_eq!(calls.get(), asked);
        assert!(GuestPackages::new(["bash"])
            .resolve_with(&cache, None, &mut lookup)
            .is_err());
    }

    #[test]
    fn closure_follows_depends_by_the_rule() {
        let (got, calls) = resolve_in(&["atf-sh"]);
        assert_eq!(
            got.unwrap(),
            [
                "atf-sh",
                "gcc-12-base",
                "libatf-c++-2",
                "libc6",
                "libgcc-s1",
                "libstdc++6"
            ]
        );
        // One apt query per level of the dependency tree.
        assert_eq!(calls, 3);

        // Packaging-only and essential dependencies are not carried.
        let (got, _) = resolve_in(&["tool"]);
        assert_eq!(got.unwrap(), ["tool"]);
        // ... unless requested.
        let (got, _) = resolve_in(&["tool", "dash"]);
        assert_eq!(
            got.unwrap(),
            ["dash", "gcc-12-base", "libc6", "libgcc-s1", "tool"]
        );

        // A virtual dependency with no real alternative needs a provider named.
        let (got, _) = resolve_in(&["awky"]);
        match got {
            Err(GuestPackagesError::Unresolvable {
                package,
                dependency,
            }) => assert_eq!((package.as_str(), dependency.as_str()), ("awky", "awk")),
            other => panic!("{other:?}"),
        }
        let (got, _) = resolve_in(&["mawk", "awky"]);
        assert_eq!(
            got.unwrap(),
            ["awky", "gcc-12-base", "libc6", "libgcc-s1", "mawk"]
        );
        // The first real alternative is picked.
        let (got, _) = resolve_in(&["awkier"]);
        assert!(got.unwrap().contains(&"gawk".to_string()));

        // Unknown requests are named.
        let (got, _) = resolve_in(&["atf-sh", "nope"]);
        assert!(
            matches!(&got, Err(GuestPackagesError::Unknown { package }) if package == "nope"),
            "{got:?}"
        );
    }

    #[test]
    fn merged_paths_and_drops() {
        let cases = [
            ("/bin/sh", "/usr/bin/sh"),
            ("/sbin", "/usr/sbin"),
            (
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            (
                "/lib64/ld-linux-x86-64.so.2",
                "/usr/lib64/ld-linux-x86-64.so.2",
            ),
            ("/libexec/x", "/libexec/x"),
            ("/usr/bin/atf-sh", "/usr/bin/atf-sh"),
            ("/etc/passwd", "/etc/passwd"),
        ];
        for (path, want) in cases {
            assert_eq!(usr_merged(path), want, "{path}");
        }
        assert!(dropped("/usr/share/doc"));
        assert!(dropped("/usr/share/doc/libc6/copyright"));
        assert!(dropped("/usr/lib/x86_64-linux-gnu/gconv/BIG5.so"));
        assert!(!dropped("/usr/share/docs"));
        assert!(!dropped("/usr/share/atf/libatf-sh.subr"));
    }

    #[test]
    fn names_are_checked_and_deduplicated() {
        for ok in ["atf-sh", "libstdc++6", "g++-12", "0ad"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a", "-o", "Atf", "a b", "a/b", "a=1"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let p = GuestPackages::new(["b", "a", "b"]);
        assert_eq!(p.names(), ["b", "a"]);
        let root = tempfile::tempdir().unwrap();
        let err = GuestPackages::new(["-o"])
            .resolve(&Cache::at(root.path()))
            .unwrap_err();
        assert!(err.to_string().contains("-o"), "{err}");
        assert!(GuestPackages::default()
            .resolve(&Cache::at(root.path()))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn layer_keys_depend_on_versions_not_order() {
        let a = ResolvedPackage {
            package: "a".into(),
            version: "1".into(),
        };
        let b = ResolvedPackage {
            package: "b".into(),
            version: "2".into(),
        };
        let b3 = ResolvedPackage {
            version: "3".into(),
            ..b.clone()
        };
        assert_eq!(
            layer_key(&[a.clone(), b.clone()]),
            layer_key(&[b.clone(), a.clone()])
        );
        assert_ne!(layer_key(&[a.clone(), b]), layer_key(&[a, b3]));
    }

    #[test]
    fn extracted_trees_become_a_usr_merged_filtered_layer() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let libc = dir.path().join("libc6-1");
        let tool = dir.path().join("tool-1");
        for d in [
            "lib/x86_64-linux-gnu",
            "lib64",
            "usr/lib/x86_64-linux-gnu/gconv",
            "usr/share/doc/libc6",
            "etc",
        ] {
            fs::create_dir_all(libc.join(d)).unwrap();
        }
        fs::write(libc.join(".complete"), "1").unwrap();
        fs::write(libc.join("lib/x86_64-linux-gnu/libc.so.6"), "libc").unwrap();
        symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            libc.join("lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        fs::write(libc.join("usr/lib/x86_64-linux-gnu/gconv/BIG5.so"), "x").unwrap();
        fs::write(libc.join("usr/share/doc/libc6/copyright"), "x").unwrap();
        fs::write(libc.join("etc/ld.so.conf"), "x").unwrap();
        fs::create_dir_all(tool.join("usr/bin")).unwrap();
        fs::create_dir_all(tool.join("bin")).unwrap();
        fs::write(tool.join("bin/tool"), "#!").unwrap();
        fs::set_permissions(tool.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("/bin/tool", tool.join("usr/bin/tool")).unwrap();
        // A package that ships the merged link itself (base-files in later releases).
        symlink("usr/sbin", tool.join("sbin")).unwrap();

        let spec = layer_spec(&[libc, tool]).unwrap();
        let mut image = Vec::new();
        spec.write_to(&mut image, Compression::None).unwrap();
        let mut child = Command::new("bsdtar")
            .args(["-tvf", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&image).unwrap();
        let out = child.wait_with_output().unwrap();
        let listing: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                format!("{} {}", &f[0][..1], f[8..].join(" "))
            })
            .collect();
        assert_eq!(
            listing,
            [
                "d etc",
                "- etc/ld.so.conf",
                "d usr",
                "d usr/bin",
                "- usr/bin/tool",
                "d usr/lib",
                "d usr/lib/x86_64-linux-gnu",
                "- usr/lib/x86_64-linux-gnu/libc.so.6",
                "d usr/lib64",
                "l usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "d usr/share",
            ]
        );
    }
}
