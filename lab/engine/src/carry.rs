//! Host files carried into guests as they are on the host: each at its own absolute path (the
//! usr-merged one for `/bin`, `/lib`…), directories with everything under them, and programs
//! with the shared libraries they load (the `ldd` closure), so that a host program runs in a
//! guest that has no package manager and no network. One initramfs layer, content-addressed.
//!
//! [`lab_itself`] builds the carry that puts lab into a guest: its binary and libraries, and
//! the part of its cache an inner `lab boot`/`lab test` uses (kernels with their boot and kvm
//! modules, busybox, guest packages resolved offline), under the guest's `~/.cache/lab`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lab_kernel::cache::Cache;
use lab_kernel::catalog::{Kernel, MODULE_INDEX, MODULE_TREE};
use lab_kernel::guest_packages::usr_merged;
use lab_kernel::initramfs::{self, Compression, InitramfsError, Spec};

/// The most bytes one carry may hold: it lives in guest RAM.
pub const MAX_CARRY_BYTES: u64 = 2 << 30;
/// The most entries one carry may hold.
pub const MAX_CARRY_ENTRIES: usize = 200_000;

/// Where a guest's lab finds its cache (`$HOME/.cache/lab` with guest-init's `HOME=/root`).
pub const GUEST_CACHE: &str = "/root/.cache/lab";
/// Where a carried lab is on the guest's PATH.
pub const GUEST_LAB: &str = "/usr/local/bin/lab";

/// Errors of carrying host files into a guest.
#[derive(Debug, thiserror::Error)]
pub enum CarryError {
    /// A path could not be read.
    #[error("cannot carry {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A carried path is not absolute, or not a file, directory or symbolic link.
    #[error("cannot carry {}: {why}", path.display())]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
    /// `ldd` failed on a program.
    #[error("cannot find the libraries of {}: {why}", path.display())]
    Libraries {
        /// The program.
        path: PathBuf,
        /// What ldd said.
        why: String,
    },
    /// The carry grew past its bounds.
    #[error("the files to carry exceed {limit}")]
    TooBig {
        /// The bound, in words.
        limit: String,
    },
    /// The layer could not be written.
    #[error("failed to write the carried files' layer")]
    Layer(#[from] InitramfsError),
}

/// One carried entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A host file, with its permission bits.
    File(PathBuf, u32),
    /// A symbolic link and its target.
    Symlink(String),
    /// A directory.
    Dir,
}

/// Host files to carry into guests.
#[derive(Debug, Clone, Default)]
pub struct Carry {
    entries: BTreeMap<String, Entry>,
    bytes: u64,
}

impl Carry {
    /// Nothing carried.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is carried.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many bytes of files are carried.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Carries `host` (a file, a directory with everything under it, or a symbolic link) to
    /// the same path in the guest; programs and libraries in it bring their libraries.
    pub fn add_path(&mut self, host: &Path) -> Result<(), CarryError> {
        if !host.is_absolute() {
            return Err(CarryError::Unsupported {
                path: host.to_path_buf(),
                why: "not an absolute path",
            });
        }
        self.add_at(host, &host.to_string_lossy())
    }

    /// Carries `host` to `guest` (files, directories, symbolic links).
    pub fn add_at(&mut self, host: &Path, guest: &str) -> Result<(), CarryError> {
        let read = |source| CarryError::Read {
            path: host.to_path_buf(),
            source,
        };
        let meta = fs::symlink_metadata(host).map_err(read)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = fs::read_link(host).map_err(read)?;
            self.insert(
                guest,
                Entry::Symlink(target.to_string_lossy().into_owned()),
                0,
            )?;
            // What it points at comes along (a library's real file, a program's).
            let resolved = fs::canonicalize(host).map_err(read)?;
            return self.add_at(&resolved, &resolved.to_string_lossy());
        }
        if kind.is_dir() {
            self.insert(guest, Entry::Dir, 0)?;
            let mut children: Vec<_> = fs::read_dir(host)
                .map_err(read)?
                .collect::<Result<_, _>>()
                .map_err(read)?;
            children.sort_by_key(|e| e.file_name());
            for child in children {
                let name = child.file_name();
                let guest_child =
                    format!("{}/{}", guest.trim_end_matches('/'), name.to_string_lossy());
                self.add_at(&child.path(), &guest_child)?;
            }
            return Ok(());
        }
        if !kind.is_file() {
            // Sockets, FIFOs and devices have no content to carry; they are left out.
            return Ok(());
        }
        let mode = meta.permissions().mode() & 0o7777;
        self.insert(guest, Entry::File(host.to_path_buf(), mode), meta.len())?;
        if is_elf(host) {
            for lib in libraries(host)? {
                self.add_at(&lib, &lib.to_string_lossy())?;
            }
        }
        Ok(())
    }

    /// A symbolic link at `guest` pointing at `target`.
    pub fn add_symlink(&mut self, guest: &str, target: &str) -> Result<(), CarryError> {
        self.insert(guest, Entry::Symlink(target.to_string()), 0)
    }

    fn insert(&mut self, guest: &str, entry: Entry, size: u64) -> Result<(), CarryError> {
        let guest = usr_merged(guest);
        if self.entries.contains_key(&guest) {
            return Ok(());
        }
        if self.entries.len() >= MAX_CARRY_ENTRIES {
            return Err(CarryError::TooBig {
                limit: format!("{MAX_CARRY_ENTRIES} entries"),
            });
        }
        self.bytes += size;
        if self.bytes > MAX_CARRY_BYTES {
            return Err(CarryError::TooBig {
                limit: format!("{} MiB", MAX_CARRY_BYTES >> 20),
            });
        }
        self.entries.insert(guest, entry);
        Ok(())
    }

    /// The carry as an initramfs layer in the cache (content-addressed: the same files give
    /// the same layer).
    pub fn layer(&self, cache: &Cache) -> Result<PathBuf, CarryError> {
        let mut spec = Spec::new();
        for (guest, entry) in &self.entries {
            // The base image's usr-merge links stay links.
            if MERGED_LINKS.contains(&guest.as_str()) {
                continue;
            }
            match entry {
                Entry::File(host, mode) => spec.file(guest, host, *mode),
                Entry::Symlink(target) => spec.symlink(guest, target),
                Entry::Dir => spec.dir(guest, 0o755),
            };
        }
        Ok(initramfs::build(cache, &spec, Compression::None)?)
    }
}

/// The directories a guest's own userland (Debian's packages in the initramfs) has libraries
/// in.
const SYSTEM_LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
];

/// The libraries `program` loads on this host from outside the system's library directories
/// (a prefix's `lib/`, through its RUNPATH or RPATH), which a guest with lab's own userland
/// does not have: there the program would load another library of the same name, or none.
/// Empty for programs that are not ELF or load nothing from elsewhere.
pub fn foreign_libraries(program: &Path) -> Vec<PathBuf> {
    if !is_elf(program) {
        return Vec::new();
    }
    libraries(program)
        .unwrap_or_default()
        .into_iter()
        .filter(|lib| {
            let dir = lib.parent().unwrap_or(Path::new("/"));
            !SYSTEM_LIBRARY_DIRS.iter().any(|d| dir == Path::new(d))
        })
        .collect()
}

/// The base image's links into /usr, which a carry never replaces.
const MERGED_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib64"];

/// Whether `path` is an ELF file (ldd then says whether it loads libraries).
fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    use std::io::Read;
    f.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF"
}

/// The shared libraries `program` loads, and its interpreter, as absolute host paths (`ldd`).
fn libraries(program: &Path) -> Result<Vec<PathBuf>, CarryError> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| CarryError::Libraries {
            path: program.to_path_buf(),
            why: format!("cannot run ldd ({e}); it is in Debian's libc-bin"),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Static programs and non-programs (object files, data that happens to be ELF).
        return Ok(Vec::new());
    }
    parse_ldd(&text).map_err(|why| CarryError::Libraries {
        path: program.to_path_buf(),
        why,
    })
}

/// The absolute paths in ldd's output; a library ldd cannot find is an error naming it.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.contains("statically linked") || line.starts_with("linux-vdso") {
            continue;
        }
        if line.contains("=> not found") {
            return Err(format!(
                "{} is not found on this host",
                line.split_whitespace().next().unwrap_or(line)
            ));
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// What puts lab into a guest: the program `exe` (at its own path, and as [`GUEST_LAB`]) with
/// its libraries, and under [`GUEST_CACHE`] the part of `cache` an inner lab uses: each of
/// `kernels` with its record, image, config, module index and the files of its boot modules
/// (the agent channel's, `modules`, and the kvm modules, with their dependencies), busybox,
/// and the guest packages resolved so far with their layers, so that the inner lab needs no
/// network and no apt. Other modules a nested guest asks for are not carried.
pub fn lab_itself(
    cache: &Cache,
    exe: &Path,
    kernels: &[Kernel],
    modules: &[String],
) -> Result<Carry, CarryError> {
    let mut carry = Carry::new();
    carry.add_path(exe)?;
    carry.add_symlink(GUEST_LAB, &exe.to_string_lossy())?;
    let root = cache.root().to_path_buf();
    let in_guest = |host: &Path| -> String {
        let rel = host.strip_prefix(&root).unwrap_or(host);
        format!("{GUEST_CACHE}/{}", rel.to_string_lossy())
    };
    for kernel in kernels {
        add_kernel(&mut carry, kernel, modules, &in_guest)?;
    }
    if let Some(busybox) = newest(&cache_subdir(cache, "pkgs"), "busybox-static-") {
        carry.add_at(&busybox, &in_guest(&busybox))?;
    }
    add_guest_packages(&mut carry, cache, &in_guest)?;
    Ok(carry)
}

fn cache_subdir(cache: &Cache, name: &str) -> PathBuf {
    cache.root().join(name)
}

/// One kernel of the cache: everything but the parts of its module tree no guest boots with.
fn add_kernel(
    carry: &mut Carry,
    kernel: &Kernel,
    modules: &[String],
    in_guest: &dyn Fn(&Path) -> String,
) -> Result<(), CarryError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CarryError::Read { path, source }
    };
    if !kernel.dir.join(lab_kernel::catalog::RECORD).is_file() {
        // A kernel file given by path: that file alone, where it is.
        let image = kernel.image_path();
        return carry.add_at(&image, &image.to_string_lossy());
    }
    for entry in fs::read_dir(&kernel.dir).map_err(read(&kernel.dir))? {
        let entry = entry.map_err(read(&kernel.dir))?;
        if entry.file_type().map_err(read(&entry.path()))?.is_file() {
            carry.add_at(&entry.path(), &in_guest(&entry.path()))?;
        }
    }
    let mod_dir = kernel.dir.join("modules");
    for path in kernel.module_paths() {
        carry.add_at(&path, &in_guest(&path))?;
    }
    let Some(source) = kernel.module_source() else {
        return Ok(());
    };
    let index = mod_dir.join(MODULE_INDEX);
    carry.add_at(&index, &in_guest(&index))?;
    let mut wanted: Vec<String> = kernel
        .info
        .modules
        .iter()
        .map(|m| lab_kernel::modules::module_name(m))
        .collect();
    wanted.extend(modules.iter().cloned());
    wanted.extend(crate::guest::NESTED_MODULES.iter().map(|m| m.to_string()));
    let idx = source.index();
    let names: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|n| idx.resolve(n) != lab_kernel::module_index::Resolved::Unknown)
        .collect();
    let order = idx.load_order(&names).unwrap_or_default();
    let tree = mod_dir.join(MODULE_TREE);
    for name in order {
        if let Some(entry) = idx.modules.get(&name) {
            let file = tree.join(&entry.path);
            carry.add_at(&file, &in_guest(&file))?;
        }
    }
    Ok(())
}

/// The guest packages resolved so far (their offline records) and the layers built of them.
fn add_guest_packages(
    carry: &mut Carry,
    cache: &Cache,
    in_guest: &dyn Fn(&Path) -> String,
) -> Result<(), CarryError> {
    let state = cache_subdir(cache, "state").join("guest-packages");
    let Ok(records) = fs::read_dir(&state) else {
        return Ok(());
    };
    for record in records.flatten() {
        let path = record.path();
        let name = record.file_name().to_string_lossy().into_owned();
        if !name.starts_with("names-") || !name.ends_with(".json") {
            continue;
        }
        let Some(packages) = fs::read(&path).ok().and_then(|b| {
            serde_json::from_slice::<Vec<lab_kernel::guest_packages::ResolvedPackage>>(&b).ok()
        }) else {
            continue;
        };
        let layer = cache_subdir(cache, "initramfs").join(format!(
            "pkgs-{}.cpio",
            lab_kernel::guest_packages::layer_key(&packages)
        ));
        if layer.is_file() {
            carry.add_at(&path, &in_guest(&path))?;
            carry.add_at(&layer, &in_guest(&layer))?;
        }
    }
    Ok(())
}

/// The newest complete extraction in `dir` whose name starts with `prefix`.
fn newest(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .filter(|p| p.join(".complete").is_file())
        .max_by_key(|p| {
            p.join(".complete")
                .metadata()
                .and_then(|m| m.modified())
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_absolute_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.contains("libfoo.so.1"), "{err}");
    }

    #[test]
    fn a_program_brings_its_libraries_at_usr_merged_paths() {
        let sh = fs::canonicalize("/bin/sh").unwrap();
        let mut carry = Carry::new();
        carry.add_path(Path::new("/bin/sh")).unwrap();
        let paths: Vec<&String> = carry.entries.keys().collect();
        assert!(paths.iter().any(|p| p.ends_with("/libc.so.6")), "{paths:?}");
        assert!(paths.iter().any(|p| p.contains("ld-linux")), "{paths:?}");
        assert!(carry
            .entries
            .contains_key(&usr_merged(&sh.to_string_lossy())));
        assert!(paths
            .iter()
            .all(|p| !p.starts_with("/lib/") && !p.starts_with("/bin/")));
        assert!(carry.bytes() > 0);
    }

    #[test]
    fn directories_come_whole_and_relative_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/data.txt"), "x").unwrap();
        std::os::unix::fs::symlink("b/data.txt", dir.path().join("a/link")).unwrap();
        let mut carry = Carry::new();
        carry.add_path(dir.path()).unwrap();
        let base = dir.path().to_string_lossy().into_owned();
        assert_eq!(
            carry.entries.get(&format!("{base}/a/link")),
            Some(&Entry::Symlink("b/data.txt".into()))
        );
        assert!(matches!(
            carry.entries.get(&format!("{base}/a/b/data.txt")),
            Some(Entry::File(_, _))
        ));
        assert!(matches!(
            carry.add_path(Path::new("relative/x")),
            Err(CarryError::Unsupported { .. })
        ));
        assert!(matches!(
            carry.add_path(Path::new("/nonexistent/lab-carry")),
            Err(CarryError::Read { .. })
        ));
        let root = tempfile::tempdir().unwrap();
        let layer = carry.layer(&Cache::at(root.path())).unwrap();
        assert!(layer.is_file());
    }
}
