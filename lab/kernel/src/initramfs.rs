//! Builds the lab's initramfs images, content-addressed and cached: guest-init as /init, the
//! kernel's modules, user-space packages (busybox) and given files.
//!
//! A [`Spec`] is a set of entries keyed by guest path. Entries are written in path order
//! (component-wise, so a directory precedes everything under it); parents that were not given
//! are written implicitly with mode 0755 just before their first child. Giving the same path
//! twice with different contents is an error ([`InitramfsError::BadPath`]); giving it twice
//! identically is allowed. Paths are checked when added, but errors surface when the image is
//! written, so that the builder methods can chain.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::{Cache, CacheError};
use crate::cpio;

/// Errors of building an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A source file could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A guest path is not absolute, or has `..`, or repeats.
    #[error("bad guest path '{0}'")]
    BadPath(String),
    /// Writing the image failed.
    #[error("failed to write initramfs")]
    Write(#[source] std::io::Error),
}

/// Compression of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain cpio (fastest to unpack under emulation).
    #[default]
    None,
    /// gzip.
    Gzip,
}

impl Compression {
    /// The image file's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "cpio",
            Compression::Gzip => "cpio.gz",
        }
    }
}

/// What one guest path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    HostFile { host: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// What goes into an image; parent directories are created implicitly.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Entries by guest path components (so that a parent sorts before its children).
    entries: BTreeMap<Vec<String>, Node>,
    /// The first bad path given, reported when the image is written.
    error: Option<String>,
}

impl Spec {
    /// An empty image.
    pub fn new() -> Self {
        Self::default()
    }
    /// A file from the host, at `guest_path` with `mode`.
    pub fn file(&mut self, guest_path: &str, host_path: &Path, mode: u32) -> &mut Self {
        self.add(
            guest_path,
            Node::HostFile {
                host: host_path.to_path_buf(),
                mode: mode & 0o7777,
            },
        )
    }
    /// A file with the given contents.
    pub fn bytes(&mut self, guest_path: &str, data: Vec<u8>, mode: u32) -> &mut Self {
        self.add(
            guest_path,
            Node::Bytes {
                data,
                mode: mode & 0o7777,
            },
        )
    }
    /// A symbolic link.
    pub fn symlink(&mut self, guest_path: &str, target: &str) -> &mut Self {
        if target.is_empty() || target.contains('\0') {
            self.fail(guest_path);
            return self;
        }
        self.add(
            guest_path,
            Node::Symlink {
                target: target.to_string(),
            },
        )
    }
    /// An (empty) directory.
    pub fn dir(&mut self, guest_path: &str, mode: u32) -> &mut Self {
        self.add(
            guest_path,
            Node::Dir {
                mode: mode & 0o7777,
            },
        )
    }

    /// The host directory `host_dir` (files, directories, symbolic links, with their modes) at
    /// `guest_path`. The tree is read now; other file types (devices, sockets) are skipped.
    pub fn tree(&mut self, guest_path: &str, host_dir: &Path) -> Result<&mut Self, InitramfsError> {
        let read = |path: &Path, source| InitramfsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(host_dir).map_err(|e| read(host_dir, e))?;
        if !guest_path.trim_matches('/').is_empty() {
            self.dir(guest_path, meta.permissions().mode());
        }
        let mut children: Vec<_> = fs::read_dir(host_dir)
            .map_err(|e| read(host_dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| read(host_dir, e))?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let Some(name) = child.file_name().to_str().map(str::to_string) else {
                self.fail(&format!(
                    "{guest_path}/{}",
                    child.file_name().to_string_lossy()
                ));
                continue;
            };
            let guest = format!("{}/{name}", guest_path.trim_end_matches('/'));
            let host = child.path();
            let meta = fs::symlink_metadata(&host).map_err(|e| read(&host, e))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                self.tree(&guest, &host)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&host).map_err(|e| read(&host, e))?;
                match target.to_str() {
                    Some(t) => {
                        self.symlink(&guest, t);
                    }
                    None => self.fail(&guest),
                }
            } else if kind.is_file() {
                self.file(&guest, &host, meta.permissions().mode());
            }
        }
        Ok(self)
    }

    /// Writes the image to `out` (not cached).
    pub fn write_to(
        &self,
        out: &mut dyn std::io::Write,
        compression: Compression,
    ) -> Result<(), InitramfsError> {
        self.check()?;
        match compression {
            Compression::None => self.write_cpio(out),
            Compression::Gzip => {
                // The gzip header carries no name and mtime 0, so images stay reproducible.
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                self.write_cpio(&mut gz)?;
                gz.finish().map_err(InitramfsError::Write)?;
                Ok(())
            }
        }
    }

    /// The SHA-256 (hex) of the image's contents: paths, kinds, modes, link targets and file
    /// contents. Equal digests mean equal images.
    pub fn digest(&self) -> Result<String, InitramfsError> {
        self.check()?;
        let mut h = Sha256::new();
        h.update(b"lab-initramfs-v1\0");
        let field = |h: &mut Sha256, bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        for (parts, node) in &self.entries {
            field(&mut h, join(parts).as_bytes());
            match node {
                Node::Dir { mode } => {
                    field(&mut h, b"dir");
                    field(&mut h, &mode.to_le_bytes());
                }
                Node::Symlink { target } => {
                    field(&mut h, b"symlink");
                    field(&mut h, target.as_bytes());
                }
                Node::Bytes { data, mode } => {
                    field(&mut h, b"file");
                    field(&mut h, &mode.to_le_bytes());
                    field(&mut h, data);
                }
                Node::HostFile { host, mode } => {
                    field(&mut h, b"file");
                    field(&mut h, &mode.to_le_bytes());
                    let (mut file, size) = open_host(host)?;
                    h.update(size.to_le_bytes());
                    let copied =
                        io::copy(&mut file, &mut h).map_err(|source| InitramfsError::Read {
                            path: host.clone(),
                            source,
                        })?;
                    if copied != size {
                        return Err(InitramfsError::Read {
                            path: host.clone(),
                            source: io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "file changed while being read",
                            ),
                        });
                    }
                }
            }
        }
        Ok(hex(&h.finalize()))
    }

    fn add(&mut self, guest_path: &str, node: Node) -> &mut Self {
        let Some(parts) = normalise(guest_path) else {
            self.fail(guest_path);
            return self;
        };
        match self.entries.get(&parts) {
            Some(old) if *old != node => self.fail(guest_path),
            Some(_) => {}
            None => {
                self.entries.insert(parts, node);
            }
        }
        self
    }

    fn fail(&mut self, guest_path: &str) {
        self.error.get_or_insert_with(|| guest_path.to_string());
    }

    /// Reports the first bad path, and any entry placed under a non-directory.
    fn check(&self) -> Result<(), InitramfsError> {
        if let Some(path) = &self.error {
            return Err(InitramfsError::BadPath(path.clone()));
        }
        for parts in self.entries.keys() {
            for n in 1..parts.len() {
                match self.entries.get(&parts[..n]) {
                    None | Some(Node::Dir { .. }) => {}
                    Some(_) => return Err(InitramfsError::BadPath(join(parts))),
                }
            }
        }
        Ok(())
    }

    fn write_cpio(&self, out: &mut dyn Write) -> Result<(), InitramfsError> {
        let mut w = cpio::Writer::new(BufWriter::new(out));
        let mut dirs: BTreeSet<&[String]> = BTreeSet::new();
        for (parts, node) in &self.entries {
            for n in 1..parts.len() {
                if dirs.insert(&parts[..n]) && !self.entries.contains_key(&parts[..n]) {
                    w.dir(&join(&parts[..n]), 0o755)
                        .map_err(InitramfsError::Write)?;
                }
            }
            let path = join(parts);
            match node {
                Node::Dir { mode } => {
                    dirs.insert(parts);
                    w.dir(&path, *mode)
                }
                Node::Symlink { target } => w.symlink(&path, target),
                Node::Bytes { data, mode } => w.file(&path, *mode, data),
                Node::HostFile { host, mode } => {
                    let (file, size) = open_host(host)?;
                    let mut reader = BufReader::new(file);
                    w.file_from(&path, *mode, size, &mut reader)
                        .map_err(|source| match source.kind() {
                            // A short read means the host file shrank; name it.
                            io::ErrorKind::UnexpectedEof => InitramfsError::Read {
                                path: host.clone(),
                                source,
                            },
                            _ => InitramfsError::Write(source),
                        })?;
                    Ok(())
                }
            }
            .map_err(InitramfsError::Write)?;
        }
        let mut out = w.finish().map_err(InitramfsError::Write)?;
        out.flush().map_err(InitramfsError::Write)?;
        Ok(())
    }
}

/// Opens a host file and returns it with its size; directories and the like are refused.
fn open_host(path: &Path) -> Result<(File, u64), InitramfsError> {
    let err = |source| InitramfsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok((file, meta.len()))
}

/// The components of an absolute guest path; `None` when it is relative, has `..`, a NUL, or
/// names the root itself. `.` and repeated slashes are dropped.
fn normalise(path: &str) -> Option<Vec<String>> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p.to_string()),
        }
    }
    (!parts.is_empty()).then_some(parts)
}

fn join(parts: &[String]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push('/');
        s.push_str(p);
    }
    s
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds `spec` into `<cache>/initramfs/<sha256>.cpio[.gz]`, reusing an identical image.
///
/// The image is written to a temporary file beside its final name and renamed into place, so
/// a concurrent builder or reader never sees a partial image.
pub fn build(
    cache: &Cache,
    spec: &Spec,
    compression: Compression,
) -> Result<PathBuf, InitramfsError> {
    let digest = spec.digest()?;
    let dir = cache.initramfs_dir()?;
    let path = dir.join(format!("{digest}.{}", compression.extension()));
    if path.is_file() {
        return Ok(path);
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(&dir)
        .map_err(InitramfsError::Write)?;
    spec.write_to(tmp.as_file_mut(), compression)?;
    tmp.as_file().sync_all().map_err(InitramfsError::Write)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(InitramfsError::Write)?;
    tmp.persist(&path)
        .map_err(|e| InitramfsError::Write(e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};

    fn listing(image: &[u8]) -> Vec<String> {
        let mut child = Command::new("bsdtar")
            .args(["-tvf", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(image).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                // "mode links uid gid size date name": keep the mode and what follows the date.
                let fields: Vec<_> = l.split_whitespace().collect();
                format!("{} {}", fields[0], fields[8..].join(" "))
            })
            .collect()
    }

    #[test]
    fn parents_are_implicit_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("guest-init");
        fs::write(&host, b"\x7fELF...").unwrap();
        let mut spec = Spec::new();
        spec.bytes("/lib/modules/vsock.ko", b"ko".to_vec(), 0o644)
            .file("/init", &host, 0o755)
            .symlink("/bin/sh", "busybox")
            .dir("/lib", 0o700)
            .dir("//tmp/./", 0o1777);
        let mut image = Vec::new();
        spec.write_to(&mut image, Compression::None).unwrap();
        assert_eq!(
            listing(&image),
            [
                "drwxr-xr-x bin",
                "lrwxrwxrwx bin/sh -> busybox",
                "-rwxr-xr-x init",
                "drwx------ lib",
                "drwxr-xr-x lib/modules",
                "-rw-r--r-- lib/modules/vsock.ko",
                "drwxrwxrwt tmp",
            ]
        );
        let mut gz = Vec::new();
        spec.write_to(&mut gz, Compression::Gzip).unwrap();
        assert_eq!(&gz[..2], b"\x1f\x8b");
        assert_eq!(listing(&gz), listing(&image));
    }

    /// Adds entries to a spec.
    type AddEntries = Box<dyn Fn(&mut Spec)>;

    #[test]
    fn bad_paths_are_reported() {
        let cases: Vec<(&str, AddEntries)> = vec![
            (
                "relative",
                Box::new(|s| {
                    s.dir("etc", 0o755);
                }),
            ),
            (
                "dot-dot",
                Box::new(|s| {
                    s.bytes("/a/../b", vec![], 0o644);
                }),
            ),
            (
                "root",
                Box::new(|s| {
                    s.dir("/", 0o755);
                }),
            ),
            (
                "nul",
                Box::new(|s| {
                    s.bytes("/a\0", vec![], 0o644);
                }),
            ),
            (
                "empty target",
                Box::new(|s| {
                    s.symlink("/l", "");
                }),
            ),
            (
                "different duplicate",
                Box::new(|s| {
                    s.bytes("/a", b"1".to_vec(), 0o644)
                        .bytes("//a", b"2".to_vec(), 0o644);
                }),
            ),
            (
                "file as a parent",
                Box::new(|s| {
                    s.bytes("/a", b"1".to_vec(), 0o644)
                        .bytes("/a/b", b"2".to_vec(), 0o644);
                }),
            ),
        ];
        for (what, add) in cases {
            let mut spec = Spec::new();
            add(&mut spec);
            let err = spec
                .write_to(&mut Vec::new(), Compression::None)
                .unwrap_err();
            assert!(matches!(err, InitramfsError::BadPath(_)), "{what}: {err}");
            assert!(spec.digest().is_err(), "{what}");
        }
        // The same entry twice is fine.
        let mut spec = Spec::new();
        spec.dir("/d", 0o755).dir("/d/", 0o755);
        spec.write_to(&mut Vec::new(), Compression::None).unwrap();
    }

    #[test]
    fn unreadable_host_files_are_named() {
        let mut spec = Spec::new();
        spec.file("/init", Path::new("/nonexistent/guest-init"), 0o755);
        let err = spec.digest().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/guest-init"), "{err}");
        let err = spec
            .write_to(&mut Vec::new(), Compression::None)
            .unwrap_err();
        assert!(matches!(err, InitramfsError::Read { .. }), "{err}");
    }

    #[test]
    fn build_is_content_addressed_and_reused() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let host = root.path().join("payload");
        fs::write(&host, b"one").unwrap();
        let mut spec = Spec::new();
        spec.file("/payload", &host, 0o644)
            .symlink("/init", "payload");

        let a = build(&cache, &spec, Compression::None).unwrap();
        let name = a.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.ends_with(".cpio") && name.len() == 64 + 5, "{name}");
        let mtime = fs::metadata(&a).unwrap().modified().unwrap();
        let again = build(&cache, &spec, Compression::None).unwrap();
        assert_eq!(a, again);
        assert_eq!(
            fs::metadata(&again).unwrap().modified().unwrap(),
            mtime,
            "reused"
        );

        // Insertion order does not matter.
        let mut other = Spec::new();
        other
            .symlink("/init", "payload")
            .file("/payload", &host, 0o644);
        assert_eq!(build(&cache, &other, Compression::None).unwrap(), a);

        let gz = build(&cache, &spec, Compression::Gzip).unwrap();
        assert!(gz.to_str().unwrap().ends_with(".cpio.gz"));
        assert_eq!(fs::metadata(&gz).unwrap().mode() & 0o777, 0o644);

        // Contents, modes and targets all change the address.
        fs::write(&host, b"two").unwrap();
        let changed = build(&cache, &spec, Compression::None).unwrap();
        assert_ne!(changed, a);
        let mut moded = Spec::new();
        moded
            .file("/payload", &host, 0o600)
            .symlink("/init", "payload");
        assert_ne!(moded.digest().unwrap(), spec.digest().unwrap());
        let mut relinked = Spec::new();
        relinked
            .file("/payload", &host, 0o644)
            .symlink("/init", "/payload");
        assert_ne!(relinked.digest().unwrap(), spec.digest().unwrap());

        // No partial files are left behind.
        let leftovers: Vec<_> = fs::read_dir(cache.initramfs_dir().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn concurrent_builders_agree() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let mut spec = Spec::new();
        spec.bytes("/big", vec![7u8; 4 << 20], 0o644);
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| build(&cache, &spec, Compression::Gzip).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(paths.windows(2).all(|w| w[0] == w[1]));
        let mut expected = Vec::new();
        spec.write_to(&mut expected, Compression::Gzip).unwrap();
        assert_eq!(fs::read(&paths[0]).unwrap(), expected);
    }

    #[test]
    fn host_trees_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("busybox");
        fs::create_dir_all(pkg.join("bin")).unwrap();
        fs::write(pkg.join("bin/busybox"), b"bb").unwrap();
        fs::set_permissions(pkg.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("busybox", pkg.join("bin/sh")).unwrap();
        fs::set_permissions(&pkg, fs::Permissions::from_mode(0o755)).unwrap();
        let mut spec = Spec::new();
        spec.tree("/usr", &pkg).unwrap();
        let mut image = Vec::new();
        spec.write_to(&mut image, Compression::None).unwrap();
        assert_eq!(
            listing(&image),
            [
                "drwxr-xr-x usr",
                "drwxr-xr-x usr/bin",
                "-rwxr-xr-x usr/bin/busybox",
                "lrwxrwxrwx usr/bin/sh -> busybox",
            ]
        );
        assert!(spec.tree("/x", &dir.path().join("missing")).is_err());
    }
}
