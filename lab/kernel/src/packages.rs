//! Debian packages fetched without root: `apt-get download` into the cache, `dpkg-deb -x` into
//! a cache directory. Used for kernel images, kernel sources and the guests' user space.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{Cache, CacheError};
use crate::Progress;

/// Errors of fetching a package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A tool is missing.
    #[error("{tool} not found (Debian: apt-get install {package})")]
    Missing {
        /// The tool.
        tool: &'static str,
        /// Where it comes from.
        package: &'static str,
    },
    /// apt knows no such package.
    #[error("apt knows no package {package}")]
    Unknown {
        /// The package.
        package: String,
    },
    /// apt has no package lists at all.
    #[error("apt has no package lists: run `apt-get update` (as root) once")]
    NoLists,
    /// A command failed.
    #[error("`{command}` failed: {stderr_tail}")]
    Command {
        /// The command line.
        command: String,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// I/O on the cache failed.
    #[error("failed to prepare {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A package version as apt knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageVersion {
    /// The package name.
    pub package: String,
    /// Its candidate version.
    pub version: String,
    /// Its Depends field, unparsed.
    pub depends: String,
}

fn run(
    cmd: &mut Command,
    tool: &'static str,
    package: &'static str,
) -> Result<String, PackageError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PackageError::Missing { tool, package }
        } else {
            PackageError::Command {
                command: line.clone(),
                stderr_tail: e.to_string(),
            }
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(PackageError::Command {
            command: line,
            stderr_tail: tail.join(" / "),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether apt has any package lists (`apt-cache show` finds nothing before `apt-get update`).
fn apt_has_lists() -> bool {
    std::fs::read_dir("/var/lib/apt/lists")
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false)
}

/// The candidate version of `package` (`apt-cache show --no-all-versions`).
pub fn candidate(package: &str) -> Result<PackageVersion, PackageError> {
    if !apt_has_lists() {
        return Err(PackageError::NoLists);
    }
    let text = run(
        Command::new("apt-cache").args(["show", "--no-all-versions", package]),
        "apt-cache",
        "apt",
    )
    .map_err(|e| match e {
        PackageError::Command { .. } => PackageError::Unknown {
            package: package.to_string(),
        },
        other => other,
    })?;
    parse_show(&text).ok_or_else(|| PackageError::Unknown {
        package: package.to_string(),
    })
}

/// Parses the first stanza of `apt-cache show`.
fn parse_show(text: &str) -> Option<PackageVersion> {
    let mut package = None;
    let mut version = None;
    let mut depends = String::new();
    for line in text.lines() {
        if line.is_empty() && package.is_some() {
            break;
        }
        if let Some(v) = line.strip_prefix("Package: ") {
            package = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Version: ") {
            version = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Depends: ") {
            depends = v.trim().to_string();
        }
    }
    Some(PackageVersion {
        package: package?,
        version: version?,
        depends,
    })
}

/// The `.deb` file name apt-get download writes for `pv` (epoch colon escaped as `%3a`).
pub fn deb_file_name(pv: &PackageVersion) -> String {
    format!(
        "{}_{}_amd64.deb",
        pv.package,
        pv.version.replace(':', "%3a")
    )
}

/// Downloads `pv` into the cache (reused when present) and returns the `.deb`. The download
/// lands in a staging directory first, so an interrupted one is never mistaken for a package.
pub fn download(
    cache: &Cache,
    pv: &PackageVersion,
    progress: Progress<'_>,
) -> Result<PathBuf, PackageError> {
    let dir = cache.debs_dir()?;
    let _lock = cache.lock(&format!("deb-{}", pv.package))?;
    let names = [
        deb_file_name(pv),
        // Architecture-independent packages (linux-source) are `_all.deb`.
        deb_file_name(pv).replace("_amd64.deb", "_all.deb"),
    ];
    if let Some(found) = names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
        return Ok(found);
    }
    progress(&format!("downloading {} {}", pv.package, pv.version));
    let staging = cache.staging("deb-")?;
    run(
        Command::new("apt-get")
            .args(["download", "-q"])
            .arg(format!("{}={}", pv.package, pv.version))
            .current_dir(staging.path()),
        "apt-get",
        "apt",
    )?;
    for name in &names {
        let got = staging.path().join(name);
        if got.is_file() {
            let dest = dir.join(name);
            std::fs::rename(&got, &dest).map_err(|source| PackageError::Io {
                path: dest.clone(),
                source,
            })?;
            return Ok(dest);
        }
    }
    Err(PackageError::Command {
        command: format!("apt-get download {}={}", pv.package, pv.version),
        stderr_tail: format!("no {} after download", names[0]),
    })
}

/// Extracts `deb` into `dest` (`dpkg-deb -x`).
pub fn extract(deb: &Path, dest: &Path) -> Result<(), PackageError> {
    std::fs::create_dir_all(dest).map_err(|source| PackageError::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest),
        "dpkg-deb",
        "dpkg",
    )?;
    Ok(())
}

/// The newest complete extraction of `package` already in the cache.
fn extracted(cache: &Cache, package: &str) -> Result<Option<PathBuf>, PackageError> {
    let dir = cache.pkgs_dir()?;
    let prefix = format!("{package}-");
    let newest = std::fs::read_dir(&dir)
        .map_err(|source| PackageError::Io {
            path: dir.clone(),
            source,
        })?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .filter(|p| p.join(".complete").is_file())
        .max_by_key(|p| {
            p.join(".complete")
                .metadata()
                .and_then(|m| m.modified())
                .ok()
        });
    Ok(newest)
}

/// `package` extracted into `<cache>/pkgs/<package>-<version>`: an extraction already in the
/// cache is used as is (no apt query, works offline); otherwise apt's candidate is downloaded
/// and extracted. Returns that directory.
pub fn fetch_extracted(
    cache: &Cache,
    package: &str,
    progress: Progress<'_>,
) -> Result<PathBuf, PackageError> {
    if let Some(dir) = extracted(cache, package)? {
        return Ok(dir);
    }
    let pv = candidate(package)?;
    let name = format!("{}-{}", pv.package, pv.version.replace(':', "_"));
    let dest = cache.pkgs_dir()?.join(&name);
    if dest.join(".complete").is_file() {
        return Ok(dest);
    }
    let deb = download(cache, &pv, progress)?;
    let _lock = cache.lock(&format!("pkg-{name}"))?;
    if dest.join(".complete").is_file() {
        return Ok(dest);
    }
    let staging = cache.staging("pkg-")?;
    progress(&format!("extracting {}", pv.package));
    extract(&deb, staging.path())?;
    std::fs::write(staging.path().join(".complete"), &pv.version).map_err(|source| {
        PackageError::Io {
            path: staging.path().to_path_buf(),
            source,
        }
    })?;
    cache.install(staging, &dest)?;
    Ok(dest)
}

/// A static busybox from Debian's `busybox-static`, for the guests' user space.
pub fn busybox(cache: &Cache, progress: Progress<'_>) -> Result<PathBuf, PackageError> {
    let dir = fetch_extracted(cache, "busybox-static", progress)?;
    Ok(dir.join("bin/busybox"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_cache_show_is_parsed_from_the_first_stanza() {
        let text = "Package: linux-image-cloud-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n\nPackage: other\nVersion: 1\n";
        let pv = parse_show(text).unwrap();
        assert_eq!(pv.package, "linux-image-cloud-amd64");
        assert_eq!(pv.version, "6.1.192-2");
        assert_eq!(pv.depends, "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)");
        assert!(parse_show("Package: x\n").is_none());
    }

    #[test]
    fn deb_names_escape_the_epoch() {
        let pv = PackageVersion {
            package: "busybox-static".into(),
            version: "1:1.35.0-4+deb12u1+b1".into(),
            depends: String::new(),
        };
        assert_eq!(
            deb_file_name(&pv),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
    }
}
