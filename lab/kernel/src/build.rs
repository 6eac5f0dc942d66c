//! Builds kernels from source with the lab's config fragment, cached by hash of source + config.
//!
//! The steps of [`build`], all output of the tools going to `<cache>/build/<key16>/build.log`:
//! unpack a tarball (or use a tree, building with `O=` so the tree is never written to),
//! `make tinyconfig`, merge the fragment (`merge_config.sh -m`), `make olddefconfig`, check that
//! every `=y` of the fragment stuck, `make bzImage`, `make -s kernelrelease`, then install
//! `vmlinuz`, a stripped `vmlinux` (the image booted, through its PVH entry), `config` and
//! `kernel.json` as `kernels/<name>-<key16>`.
//!
//! The cache key hashes the source (a tarball's bytes, or a tree's paths, sizes and mtimes),
//! the fragment's text and whether `pahole` is present (it decides whether BTF is built).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::cache::{Cache, CacheError};
use crate::catalog::{self, Kernel, KernelInfo, Origin, RecordError};
use crate::debian::{sha256_hex, tail};
use crate::module_index::ModuleIndex;
use crate::packages::{self, PackageError};
use crate::Progress;

/// Errors of building a kernel.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Fetching the source package failed.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The source is neither a tree nor a tarball.
    #[error("kernel source {} is neither a directory nor a .tar.xz/.tar.gz tarball", path.display())]
    BadSource {
        /// The source given.
        path: PathBuf,
    },
    /// The source package holds no source tarball.
    #[error("package {package} has no usr/src/{package}.tar.xz")]
    NoTarball {
        /// The package.
        package: String,
    },
    /// A file could not be read or written.
    #[error("failed to access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A command could not be started.
    #[error("failed to run {command}")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A command failed; its output is in the build log.
    #[error("{command} failed ({status}); log {}, last lines:\n{tail}", log.display())]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// The build log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// `make kernelrelease` printed no release.
    #[error("make kernelrelease printed no release")]
    NoRelease,
    /// The kernel record could not be written or read back.
    #[error("failed to record the kernel")]
    Record(#[from] RecordError),
    /// The built modules could not be indexed.
    #[error("failed to index the built modules")]
    Modules(#[source] crate::modules::ModulesError),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// A kernel source tree, or a `linux-source-*.tar.xz` / `.tar.gz` tarball.
    pub source: PathBuf,
    /// The name to install under (default: `lab-<major.minor>`).
    pub name: Option<String>,
    /// The config fragment (default: `kernels/lab.config`, embedded in lab).
    pub fragment: Option<PathBuf>,
    /// Parallel jobs (default: all cores).
    pub jobs: Option<usize>,
}

impl BuildRequest {
    /// A request to build `source` with the defaults.
    pub fn new(source: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            name: None,
            fragment: None,
            jobs: None,
        }
    }
}

/// The lab's config fragment, `kernels/lab.config`.
pub const DEFAULT_FRAGMENT: &str = include_str!("../../../kernels/lab.config");

/// The marker lines around the fragment's BTF section.
const BTF_BEGIN: &str = "# lab:btf-begin";
const BTF_END: &str = "# lab:btf-end";
/// Lines of the build log quoted in an error.
const LOG_TAIL_LINES: usize = 20;
/// Written into an unpacked tarball's tree once it is complete.
const UNPACKED_MARKER: &str = ".lab-unpacked";

/// What kind of source a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Tree,
    Tarball,
}

impl SourceKind {
    fn of(path: &Path) -> Result<Self, BuildError> {
        let name = path.to_string_lossy();
        if path.is_dir() {
            Ok(Self::Tree)
        } else if path.is_file()
            && [".tar.xz", ".tar.gz", ".tgz", ".txz"]
                .iter()
                .any(|s| name.ends_with(s))
        {
            Ok(Self::Tarball)
        } else {
            Err(BuildError::BadSource {
                path: path.to_path_buf(),
            })
        }
    }
}

/// Builds `req`, or returns the cached build of the same source and config.
pub fn build(
    cache: &Cache,
    req: &BuildRequest,
    progress: Progress<'_>,
) -> Result<Kernel, BuildError> {
    let fragment = match &req.fragment {
        Some(path) => fs::read_to_string(path).map_err(|source| BuildError::Io {
            path: path.clone(),
            source,
        })?,
        None => DEFAULT_FRAGMENT.to_string(),
    };
    let pahole = pahole_available();
    let kind = SourceKind::of(&req.source)?;
    progress(&format!("hashing {}", req.source.display()));
    let key = cache_key(&source_digest(&req.source, kind)?, &fragment, pahole);
    let key16 = &key[..16];
    if let Some(kernel) = find_built(cache, &key, req.name.as_deref())? {
        return Ok(kernel);
    }
    let _lock = cache.lock(&format!("build-{key16}"))?;
    if let Some(kernel) = find_built(cache, &key, req.name.as_deref())? {
        return Ok(kernel);
    }

    let work = cache.build_dir()?.join(key16);
    create_dir(&work)?;
    let log_path = work.join("build.log");
    let log = File::create(&log_path).map_err(|source| BuildError::Io {
        path: log_path.clone(),
        source,
    })?;
    let log = Log {
        file: log,
        path: log_path,
    };
    let src = match kind {
        SourceKind::Tarball => {
            let src = work.join("src");
            unpack_tarball(&req.source, &src, &log, progress)?;
            src
        }
        SourceKind::Tree => fs::canonicalize(&req.source).map_err(|source| BuildError::Io {
            path: req.source.clone(),
            source,
        })?,
    };
    let out = work.join("out");
    create_dir(&out)?;
    if !pahole {
        progress("pahole not found: building without BTF");
    }
    let applied = apply_btf_section(&fragment, pahole);
    let applied_path = work.join("lab.config");
    write(&applied_path, applied.as_bytes())?;

    progress("configuring (tinyconfig + fragment + olddefconfig)");
    log.run(make(&src, &out).arg("tinyconfig"))?;
    let merge = src.join("scripts/kconfig/merge_config.sh");
    log.run(
        Command::new(&merge)
            .args(["-m", ".config"])
            .arg(&applied_path)
            .current_dir(&out),
    )?;
    log.run(make(&src, &out).arg("olddefconfig"))?;
    let config_path = out.join(".config");
    let config = fs::read_to_string(&config_path).map_err(|source| BuildError::Io {
        path: config_path.clone(),
        source,
    })?;
    for (option, actual) in unset_options(&applied, &config) {
        progress(&format!(
            "warning: {option}=y did not stick (after olddefconfig: {actual})"
        ));
    }

    let jobs = req
        .jobs
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    progress(&format!(
        "building bzImage with {jobs} jobs (log: {})",
        log.path.display()
    ));
    log.run(make(&src, &out).arg(format!("-j{jobs}")).arg("bzImage"))?;
    let release = kernel_release(&src, &out)?;
    let name = req.name.clone().unwrap_or_else(|| default_name(&release));
    let id = format!("{name}-{key16}");

    let staging = cache.staging("kernel-")?;
    copy(
        &out.join("arch/x86/boot/bzImage"),
        &staging.path().join("vmlinuz"),
    )?;
    copy(&config_path, &staging.path().join("config"))?;
    // With PVH, the ELF vmlinux boots directly at its 32-bit entry, skipping the real-mode
    // setup and the decompressor: about half the boot time under emulation. Debug info is
    // stripped (~110 MB → ~20 MB); .BTF is not debug info and stays.
    let image = if config.lines().any(|l| l == "CONFIG_PVH=y")
        && strip_vmlinux(&out.join("vmlinux"), &staging.path().join("vmlinux"), &log)?
    {
        "vmlinux"
    } else {
        "vmlinuz"
    };
    install_built_modules(
        &src,
        &out,
        &release,
        &config,
        jobs,
        staging.path(),
        &log,
        progress,
    )?;
    let info = KernelInfo {
        id: id.clone(),
        name,
        release: release.clone(),
        origin: Origin::Built {
            source: req.source.display().to_string(),
            key: key.clone(),
        },
        config_hash: Some(sha256_hex(config.as_bytes())),
        image: image.to_string(),
        modules: Vec::new(),
        cmdline_devices: true,
        created_unix: catalog::now_unix(),
    };
    Kernel::save(&info, staging.path())?;
    let dest = cache.kernels_dir()?.join(&id);
    cache.install(staging, &dest)?;
    progress(&format!("installed {id} ({release})"));

    // The entry is complete; the objects (and an unpacked tarball) are only bulk now. The log
    // and the applied fragment stay for reference.
    let _ = fs::remove_dir_all(&out);
    if kind == SourceKind::Tarball {
        let _ = fs::remove_dir_all(&src);
    }
    Ok(Kernel::load(&dest)?)
}

/// The built kernel's modules into the staged entry: with loadable modules (`=m` in the
/// config) `make modules` and `modules_install` give the tree; either way the index records
/// the built-in modules (`modules.builtin`), so that a guest's modprobe knows them.
#[expect(
    clippy::too_many_arguments,
    reason = "one step of build(), given its state"
)]
fn install_built_modules(
    src: &Path,
    out: &Path,
    release: &str,
    config: &str,
    jobs: usize,
    staging: &Path,
    log: &Log,
    progress: Progress<'_>,
) -> Result<(), BuildError> {
    let mod_out = staging.join("modules");
    let tree = mod_out.join(catalog::MODULE_TREE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { path, source }
    };
    fs::create_dir_all(&tree).map_err(io(&tree))?;
    if config.lines().any(|l| l.ends_with("=m")) {
        progress("building and installing loadable modules");
        log.run(make(src, out).arg(format!("-j{jobs}")).arg("modules"))?;
        let inst = staging.join("modinst");
        log.run(
            make(src, out)
                .arg(format!("INSTALL_MOD_PATH={}", inst.display()))
                .arg("INSTALL_MOD_STRIP=1")
                .arg("DEPMOD=true")
                .arg("modules_install"),
        )?;
        let installed = inst.join("lib/modules").join(release);
        fs::remove_dir_all(&tree).map_err(io(&tree))?;
        fs::rename(&installed, &tree).map_err(io(&tree))?;
        let _ = fs::remove_dir_all(&inst);
        // modules_install links the build tree in; the entry must not point into it.
        for link in ["build", "source"] {
            let _ = fs::remove_file(tree.join(link));
        }
    }
    let builtin = fs::read_to_string(out.join("modules.builtin")).unwrap_or_default();
    let index = ModuleIndex::build(&tree, release, &builtin).map_err(BuildError::Modules)?;
    let index_path = mod_out.join(catalog::MODULE_INDEX);
    index.save(&index_path).map_err(io(&index_path))
}

/// Downloads Debian's `source_package` (e.g. `linux-source-6.1`) and builds it as `name`.
pub fn build_from_package(
    cache: &Cache,
    name: &str,
    source_package: &str,
    progress: Progress<'_>,
) -> Result<Kernel, BuildError> {
    let dir = packages::fetch_extracted(cache, source_package, progress)?;
    let tarball = find_tarball(&dir, source_package).ok_or_else(|| BuildError::NoTarball {
        package: source_package.to_string(),
    })?;
    let req = BuildRequest {
        name: Some(name.to_string()),
        ..BuildRequest::new(tarball)
    };
    build(cache, &req, progress)
}

/// `usr/src/<package>.tar.xz` (or `.tar.gz`) in an extracted source package.
fn find_tarball(dir: &Path, package: &str) -> Option<PathBuf> {
    ["tar.xz", "tar.gz"]
        .iter()
        .map(|ext| dir.join("usr/src").join(format!("{package}.{ext}")))
        .find(|p| p.is_file())
}

/// An installed build with this key: `kernels/<name>-<key16>` when a name is given, else any
/// entry whose record carries the key.
fn find_built(cache: &Cache, key: &str, name: Option<&str>) -> Result<Option<Kernel>, BuildError> {
    let kernels = cache.kernels_dir()?;
    let suffix = format!("-{}", &key[..16]);
    let candidates: Vec<PathBuf> = match name {
        Some(name) => vec![kernels.join(format!("{name}{suffix}"))],
        None => {
            let entries = fs::read_dir(&kernels).map_err(|source| BuildError::Io {
                path: kernels.clone(),
                source,
            })?;
            let mut dirs: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(&suffix))
                .collect();
            dirs.sort();
            dirs
        }
    };
    Ok(candidates.into_iter().find_map(|dir| {
        let kernel = Kernel::load(&dir).ok()?;
        matches!(&kernel.info.origin, Origin::Built { key: k, .. } if k == key).then_some(kernel)
    }))
}

/// The build's cache key (hex SHA-256) from the source's digest, the fragment's text and
/// whether pahole is present.
pub fn cache_key(source_digest: &[u8], fragment: &str, pahole: bool) -> String {
    let mut h = Sha256::new();
    // v2: entries carry a stripped vmlinux booted through PVH.
    h.update(b"lab-kernel-build-v2\0");
    for part in [source_digest, fragment.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update([u8::from(pahole)]);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The source's digest: a tarball's SHA-256, or for a tree the SHA-256 of its sorted relative
/// paths with sizes and mtimes (symbolic links with their targets; `.git` is skipped).
fn source_digest(path: &Path, kind: SourceKind) -> Result<Vec<u8>, BuildError> {
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| BuildError::Io { path: p, source }
    };
    let mut h = Sha256::new();
    match kind {
        SourceKind::Tarball => {
            let mut file = File::open(path).map_err(io_err(path))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(io_err(path))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        SourceKind::Tree => {
            let mut entries = Vec::new();
            tree_entries(path, Path::new(""), &mut entries)?;
            entries.sort();
            for line in entries {
                h.update(line.as_bytes());
                h.update(b"\n");
            }
        }
    }
    Ok(h.finalize().to_vec())
}

/// One line per file, link and directory under `root/rel`: path, kind, size or target, mtime.
fn tree_entries(root: &Path, rel: &Path, out: &mut Vec<String>) -> Result<(), BuildError> {
    let dir = root.join(rel);
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| BuildError::Io { path: p, source }
    };
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        if entry.file_name() == ".git" {
            continue;
        }
        let child = rel.join(entry.file_name());
        let abs = root.join(&child);
        let meta = fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| (d.as_secs(), d.subsec_nanos()))
            .unwrap_or_default();
        let kind = meta.file_type();
        let what = if kind.is_symlink() {
            let target = fs::read_link(&abs).map_err(io_err(&abs))?;
            format!("l {}", target.display())
        } else if kind.is_dir() {
            "d".to_string()
        } else {
            format!("f {}", meta.len())
        };
        out.push(format!(
            "{}\0{what}\0{}.{:09}",
            child.display(),
            mtime.0,
            mtime.1
        ));
        if kind.is_dir() {
            tree_entries(root, &child, out)?;
        }
    }
    Ok(())
}

/// Whether `pahole` (needed for BTF) is an executable on `PATH`.
pub fn pahole_available() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join("pahole"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The fragment as applied: without the lines between `# lab:btf-begin` and `# lab:btf-end`
/// unless pahole is present.
pub fn apply_btf_section(fragment: &str, pahole: bool) -> String {
    let mut out = String::new();
    let mut in_btf = false;
    for line in fragment.lines() {
        match line.trim() {
            BTF_BEGIN => in_btf = true,
            BTF_END => in_btf = false,
            _ => {}
        }
        let marker = matches!(line.trim(), BTF_BEGIN | BTF_END);
        if pahole || !(in_btf || marker) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The fragment's `CONFIG_X=y` options that `.config` does not have as `=y`, with what it has
/// instead (`m`, `not set`, or `absent`).
pub fn unset_options(fragment: &str, config: &str) -> Vec<(String, String)> {
    let value = |option: &str| -> String {
        for line in config.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix(option).and_then(|r| r.strip_prefix('=')) {
                return v.to_string();
            }
            if line.strip_prefix("# ").and_then(|r| r.strip_prefix(option)) == Some(" is not set") {
                return "not set".to_string();
            }
        }
        "absent".to_string()
    };
    fragment
        .lines()
        .filter_map(|l| l.trim().strip_suffix("=y"))
        .filter(|opt| opt.starts_with("CONFIG_") && !opt.contains(char::is_whitespace))
        .filter_map(|opt| {
            let actual = value(opt);
            (actual != "y").then(|| (opt.to_string(), actual))
        })
        .collect()
}

/// `lab-<major>.<minor>` from a release such as `6.1.192` or `6.12.0-rc1`.
fn default_name(release: &str) -> String {
    let mut parts = release.split('.');
    let major = parts.next().unwrap_or_default();
    let minor: String = parts
        .next()
        .unwrap_or_default()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if minor.is_empty() {
        format!("lab-{major}")
    } else {
        format!("lab-{major}.{minor}")
    }
}

/// `make -C <src> O=<out>` with a reproducible build identity.
fn make(src: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(src)
        .arg(format!("O={}", out.display()))
        .env("KBUILD_BUILD_USER", "lab")
        .env("KBUILD_BUILD_HOST", "lab");
    cmd
}

/// The kernel release (`make -s kernelrelease`).
fn kernel_release(src: &Path, out: &Path) -> Result<String, BuildError> {
    let mut cmd = make(src, out);
    cmd.args(["-s", "--no-print-directory", "kernelrelease"]);
    let command = describe(&cmd);
    let output = cmd
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(BuildError::Command {
            command,
            status: output.status.to_string(),
            log: PathBuf::from("(stderr)"),
            tail: tail(&String::from_utf8_lossy(&output.stderr), LOG_TAIL_LINES),
        });
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or(BuildError::NoRelease)
}

/// Unpacks `tarball` into `dest` without its top directory, unless an earlier run completed.
fn unpack_tarball(
    tarball: &Path,
    dest: &Path,
    log: &Log,
    progress: Progress<'_>,
) -> Result<(), BuildError> {
    if dest.join(UNPACKED_MARKER).is_file() {
        return Ok(());
    }
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(|source| BuildError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
    }
    create_dir(dest)?;
    progress(&format!("unpacking {}", tarball.display()));
    log.run(
        Command::new("tar")
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(dest)
            .arg("--strip-components=1"),
    )?;
    write(&dest.join(UNPACKED_MARKER), b"")
}

/// Installs `vmlinux` without debug info at `dest`; false (and a note in the log) when there is
/// no vmlinux or objcopy fails, in which case the bzImage is the image.
fn strip_vmlinux(vmlinux: &Path, dest: &Path, log: &Log) -> Result<bool, BuildError> {
    if !vmlinux.is_file() {
        return Ok(false);
    }
    let stripped = log.run(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(vmlinux)
            .arg(dest),
    );
    Ok(stripped.is_ok() && crate::image::inspect(dest).is_ok())
}

/// The build log: every command's output is appended to it.
struct Log {
    file: File,
    path: PathBuf,
}

impl Log {
    /// Runs `cmd` with its output appended to the log; on failure the error quotes the log's
    /// last lines.
    fn run(&self, cmd: &mut Command) -> Result<(), BuildError> {
        let command = describe(cmd);
        let io_err = |source| BuildError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = &self.file;
        writeln!(file, "$ {command}").map_err(io_err)?;
        let stdout = self.file.try_clone().map_err(io_err)?;
        let stderr = self.file.try_clone().map_err(io_err)?;
        let status = cmd
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .map_err(|source| BuildError::Spawn {
                command: command.clone(),
                source,
            })?;
        if status.success() {
            return Ok(());
        }
        let text = fs::read(&self.path).map_err(io_err)?;
        Err(BuildError::Command {
            command,
            status: status.to_string(),
            log: self.path.clone(),
            tail: tail(&String::from_utf8_lossy(&text), LOG_TAIL_LINES),
        })
    }
}

/// A command line for messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

fn create_dir(path: &Path) -> Result<(), BuildError> {
    fs::create_dir_all(path).map_err(|source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, data: &[u8]) -> Result<(), BuildError> {
    fs::write(path, data).map_err(|source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn copy(from: &Path, to: &Path) -> Result<(), BuildError> {
    fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| BuildError::Io {
            path: from.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btf_section_is_kept_only_with_pahole() {
        let fragment =
            "CONFIG_A=y\n# lab:btf-begin\nCONFIG_DEBUG_INFO_BTF=y\n# lab:btf-end\nCONFIG_B=y\n";
        assert_eq!(apply_btf_section(fragment, true), fragment);
        assert_eq!(
            apply_btf_section(fragment, false),
            "CONFIG_A=y\nCONFIG_B=y\n"
        );
        // The real fragment has a BTF section, and nothing else is lost.
        let without = apply_btf_section(DEFAULT_FRAGMENT, false);
        assert!(DEFAULT_FRAGMENT.contains("CONFIG_DEBUG_INFO_BTF=y"));
        assert!(!without.contains("CONFIG_DEBUG_INFO_BTF"));
        assert!(!without.lines().any(|l| l == BTF_BEGIN || l == BTF_END));
        assert!(without.contains("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y"));
        let begin = DEFAULT_FRAGMENT
            .lines()
            .position(|l| l == BTF_BEGIN)
            .unwrap();
        let end = DEFAULT_FRAGMENT.lines().position(|l| l == BTF_END).unwrap();
        assert_eq!(
            without.lines().count(),
            DEFAULT_FRAGMENT.lines().count() - (end - begin + 1),
            "only the section's lines are dropped"
        );
    }

    #[test]
    fn options_that_did_not_stick_are_found() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_D=y\nCONFIG_E=m\nCONFIG_NR=64\nCONFIG_AB=y\n";
        let config = "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_ABC=y\nCONFIG_AB=y\nCONFIG_NR=8\n";
        assert_eq!(
            unset_options(fragment, config),
            [
                ("CONFIG_B".to_string(), "m".to_string()),
                ("CONFIG_C".to_string(), "not set".to_string()),
                ("CONFIG_D".to_string(), "absent".to_string()),
            ]
        );
        assert!(unset_options("", config).is_empty());
    }

    #[test]
    fn keys_depend_on_source_fragment_and_pahole() {
        let base = cache_key(b"src", "CONFIG_A=y\n", true);
        assert_eq!(base.len(), 64);
        assert_eq!(base, cache_key(b"src", "CONFIG_A=y\n", true));
        assert_ne!(base, cache_key(b"src2", "CONFIG_A=y\n", true));
        assert_ne!(base, cache_key(b"src", "CONFIG_A=m\n", true));
        assert_ne!(base, cache_key(b"src", "CONFIG_A=y\n", false));
        // Field boundaries are unambiguous.
        assert_ne!(cache_key(b"ab", "c", true), cache_key(b"a", "bc", true));
    }

    #[test]
    fn tree_digests_follow_paths_sizes_and_mtimes() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path();
        fs::create_dir_all(tree.join("arch/x86")).unwrap();
        fs::write(tree.join("Makefile"), "VERSION = 6\n").unwrap();
        fs::write(tree.join("arch/x86/Kconfig"), "x").unwrap();
        let digest = || source_digest(tree, SourceKind::Tree).unwrap();
        let first = digest();
        assert_eq!(first, digest());
        // .git does not count.
        fs::create_dir_all(tree.join(".git")).unwrap();
        fs::write(tree.join(".git/HEAD"), "ref").unwrap();
        assert_eq!(first, digest());
        // Sizes, new files and mtimes do.
        fs::write(tree.join("arch/x86/Kconfig"), "xy").unwrap();
        let second = digest();
        assert_ne!(first, second);
        let f = File::options()
            .write(true)
            .open(tree.join("Makefile"))
            .unwrap();
        f.set_modified(UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        assert_ne!(second, digest());
        fs::write(tree.join("new"), "").unwrap();
        assert_ne!(second, digest());
    }

    #[test]
    fn tarball_digests_hash_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("linux-source-6.1.tar.xz");
        fs::write(&tarball, b"not really xz").unwrap();
        assert_eq!(SourceKind::of(&tarball).unwrap(), SourceKind::Tarball);
        let digest = source_digest(&tarball, SourceKind::Tarball).unwrap();
        assert_eq!(digest, Sha256::digest(b"not really xz").to_vec());
        let other = dir.path().join("notes.txt");
        fs::write(&other, b"").unwrap();
        assert!(matches!(
            SourceKind::of(&other),
            Err(BuildError::BadSource { .. })
        ));
        assert!(matches!(
            SourceKind::of(&dir.path().join("missing.tar.xz")),
            Err(BuildError::BadSource { .. })
        ));
    }

    #[test]
    fn default_names_come_from_the_release() {
        let cases = [
            ("6.1.192", "lab-6.1"),
            ("6.12.0-rc1", "lab-6.12"),
            ("6.12-rc1", "lab-6.12"),
            ("7", "lab-7"),
        ];
        for (release, want) in cases {
            assert_eq!(default_name(release), want, "{release}");
        }
    }

    #[test]
    fn installed_builds_are_found_by_key() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let key = cache_key(b"s", "f", false);
        let id = format!("lab-6.1-{}", &key[..16]);
        let dir = cache.kernels_dir().unwrap().join(&id);
        fs::create_dir_all(&dir).unwrap();
        let info = KernelInfo {
            id: id.clone(),
            name: "lab-6.1".into(),
            release: "6.1.192".into(),
            origin: Origin::Built {
                source: "/src".into(),
                key: key.clone(),
            },
            config_hash: None,
            image: "vmlinuz".into(),
            modules: Vec::new(),
            cmdline_devices: true,
            created_unix: 1,
        };
        Kernel::save(&info, &dir).unwrap();
        assert_eq!(find_built(&cache, &key, None).unwrap().unwrap().info.id, id);
        assert_eq!(
            find_built(&cache, &key, Some("lab-6.1"))
                .unwrap()
                .unwrap()
                .info
                .id,
            id
        );
        assert!(find_built(&cache, &key, Some("other")).unwrap().is_none());
        let other_key = cache_key(b"t", "f", false);
        assert!(find_built(&cache, &other_key, None).unwrap().is_none());
    }

    /// A failing step names its command, the log and the log's last lines; a tree source is
    /// never written to.
    #[test]
    fn failed_builds_report_the_log() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path().join("cache"));
        let tree = root.path().join("linux");
        fs::create_dir_all(&tree).unwrap();
        fs::write(
            tree.join("Makefile"),
            "tinyconfig:\n\t@echo configuring for $(O)\n\t@false\n",
        )
        .unwrap();
        let before = source_digest(&tree, SourceKind::Tree).unwrap();
        let err = build(&cache, &BuildRequest::new(&tree), &|_| {}).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("make -C") && text.contains("tinyconfig"),
            "{text}"
        );
        assert!(
            text.contains("build.log") && text.contains("configuring for"),
            "{text}"
        );
        assert_eq!(source_digest(&tree, SourceKind::Tree).unwrap(), before);
    }

    /// Builds `linux-source-6.1` into the real cache (`LAB_BUILD_TESTS=1`; takes many minutes).
    #[test]
    fn real_build_from_package() {
        if std::env::var("LAB_BUILD_TESTS").as_deref() != Ok("1") {
            eprintln!("LAB_BUILD_TESTS is not 1: skipped");
            return;
        }
        let cache = Cache::from_env().unwrap();
        let progress = |l: &str| eprintln!("{l}");
        let started = std::time::Instant::now();
        let kernel = build_from_package(&cache, "lab-6.1", "linux-source-6.1", &progress).unwrap();
        eprintln!(
            "{} ({}) in {:?}",
            kernel.info.id,
            kernel.info.release,
            started.elapsed()
        );
        assert!(kernel.info.release.starts_with("6.1."));
        assert!(kernel.info.cmdline_devices);
        let config = fs::read_to_string(kernel.dir.join("config")).unwrap();
        assert!(crate::debian::config_enabled(
            &config,
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"
        ));
        let found = crate::image::inspect(&kernel.image_path()).unwrap();
        assert_eq!(found.release.as_deref(), Some(kernel.info.release.as_str()));
        // A second call finds the installed build without building.
        let again = build_from_package(&cache, "lab-6.1", "linux-source-6.1", &progress).unwrap();
        assert_eq!(again.info.id, kernel.info.id);
    }
}
