//! The lab's on-disk cache (`~/.cache/lab`): where kernels, packages, builds and images live, and
//! how entries are installed atomically and guarded against concurrent lab processes.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Neither `LAB_CACHE_DIR`, `XDG_CACHE_HOME` nor `HOME` is set.
    #[error("cannot find a cache directory: set LAB_CACHE_DIR or HOME")]
    NoHome,
    /// A directory of the cache could not be created.
    #[error("failed to create cache directory {}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A lock file could not be opened or locked.
    #[error("failed to lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A finished entry could not be moved into place.
    #[error("failed to install cache entry {}", path.display())]
    Install {
        /// The entry's final path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The cache root and its layout.
///
/// ```text
/// <root>/kernels/<id>/        one installed kernel: kernel.json, vmlinuz, modules/*.ko
/// <root>/debs/                downloaded Debian packages (apt-get download)
/// <root>/pkgs/<name>/         extracted user-space packages carried into guests (busybox, ...)
/// <root>/build/<key>/         kernel source trees and their build output
/// <root>/initramfs/<sha>.cpio content-addressed initramfs images
/// <root>/state/               verdicts (e.g. whether KVM boots a given kernel)
/// <root>/tmp/                 staging area; entries are renamed into place when complete
/// <root>/locks/               lock files serialising work on one entry across processes
/// ```
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// The cache at `$LAB_CACHE_DIR`, else `$XDG_CACHE_HOME/lab`, else `$HOME/.cache/lab`.
    pub fn from_env() -> Result<Self, CacheError> {
        let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let root = if let Some(dir) = non_empty("LAB_CACHE_DIR") {
            PathBuf::from(dir)
        } else if let Some(xdg) = non_empty("XDG_CACHE_HOME") {
            PathBuf::from(xdg).join("lab")
        } else if let Some(home) = non_empty("HOME") {
            PathBuf::from(home).join(".cache").join("lab")
        } else {
            return Err(CacheError::NoHome);
        };
        Ok(Self::at(root))
    }

    /// The cache rooted at `root` (created lazily).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<name>`, created if missing.
    pub fn dir(&self, name: &str) -> Result<PathBuf, CacheError> {
        let path = self.root.join(name);
        fs::create_dir_all(&path).map_err(|source| CacheError::Create {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Where installed kernels live.
    pub fn kernels_dir(&self) -> Result<PathBuf, CacheError> {
        self.dir("kernels")
    }

    /// Where downloaded `.deb` files live.
    pub fn debs_dir(&self) -> Result<PathBuf, CacheError> {
        self.dir("debs")
    }

    /// Where extracted user-space packages live.
    pub fn pkgs_dir(&self) -> Result<PathBuf, CacheError> {
        self.dir("pkgs")
    }

    /// Where kernel sources are unpacked and built.
    pub fn build_dir(&self) -> Result<PathBuf, CacheError> {
        self.dir("build")
    }

    /// Where initramfs images live.
    pub fn initramfs_dir(&self) -> Result<PathBuf, CacheError> {
        self.dir("initramfs")
    }

    /// Where verdicts and other small state live.
    pub fn state_dir(&self) -> Result<PathBuf, CacheError> {
        self.dir("state")
    }

    /// A fresh staging directory under `<root>/tmp`, removed on drop unless persisted by
    /// [`Cache::install`]. Staging inside the cache keeps the final rename on one file system.
    pub fn staging(&self, prefix: &str) -> Result<tempfile::TempDir, CacheError> {
        let tmp = self.dir("tmp")?;
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(|source| CacheError::Create { path: tmp, source })
    }

    /// Moves a complete staging directory to `dest`, replacing an older entry there.
    pub fn install(&self, staging: tempfile::TempDir, dest: &Path) -> Result<(), CacheError> {
        let err = |source| CacheError::Install {
            path: dest.to_path_buf(),
            source,
        };
        if dest.exists() {
            // Move the old entry aside first so that `dest` is never half-replaced.
            let old = self.staging("old-")?;
            let aside = old.path().join("entry");
            fs::rename(dest, &aside).map_err(err)?;
        }
        let src = staging.keep();
        fs::rename(&src, dest).map_err(|source| {
            let _ = fs::remove_dir_all(&src);
            err(source)
        })
    }

    /// Takes an exclusive lock named `name`, held until the guard drops. Two lab processes that
    /// fetch or build the same entry wait for each other instead of racing.
    pub fn lock(&self, name: &str) -> Result<CacheLock, CacheError> {
        let dir = self.dir("locks")?;
        let path = dir.join(format!("{name}.lock"));
        let err = |source| CacheError::Lock {
            path: path.clone(),
            source,
        };
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        file.lock().map_err(err)?;
        Ok(CacheLock { _file: file })
    }
}

/// An exclusive lock on one cache entry; released on drop.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_replaces_an_old_entry_whole() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let dest = cache.dir("kernels").unwrap().join("k");
        for content in ["one", "two"] {
            let staging = cache.staging("k-").unwrap();
            fs::write(staging.path().join("f"), content).unwrap();
            cache.install(staging, &dest).unwrap();
            assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), content);
        }
        // Nothing is left behind in the staging area.
        assert_eq!(fs::read_dir(root.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn lock_is_exclusive_within_a_process_too() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::at(root.path());
        let guard = cache.lock("entry").unwrap();
        let path = root.path().join("locks/entry.lock");
        let other = File::options().write(true).open(&path).unwrap();
        assert!(other.try_lock().is_err());
        drop(guard);
        assert!(other.try_lock().is_ok());
    }
}
