//! Scratch directories for VMs and jobs. Their names carry the owning lab process's pid, so
//! that what a killed lab (SIGKILL runs no cleanup) left behind is swept by the next run.

use std::path::{Path, PathBuf};

/// Where scratch directories go: `$XDG_RUNTIME_DIR` (short paths for Unix sockets), else the
/// system temp dir.
pub fn base_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// A new scratch directory `lab-<kind>-<pid>-XXXXXX` in `base`, removed on drop.
pub fn create(base: &Path, kind: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("lab-{kind}-{}-", std::process::id()))
        .tempdir_in(base)
}

/// The pid in a scratch directory's name, if it is one of ours.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("lab-")?;
    let (_kind, rest) = rest.split_once('-')?;
    let (pid, _random) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Removes scratch directories in `base` whose owning process no longer exists. A pid that was
/// reused by another process keeps its directory until that process is gone too.
pub fn sweep(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner(&name) else { continue };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_owner() {
        assert_eq!(owner("lab-vm-1234-abc"), Some(1234));
        assert_eq!(owner("lab-job-77-x-y"), Some(77));
        assert_eq!(owner("lab-vm-abc"), None);
        assert_eq!(owner("other-vm-1-x"), None);
    }

    #[test]
    fn only_directories_of_dead_owners_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let mine = create(base.path(), "vm").unwrap();
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        let dead = base.path().join("lab-vm-99999999-gone");
        std::fs::create_dir_all(dead.join("inner")).unwrap();
        let alive = base.path().join("lab-job-1-init");
        std::fs::create_dir(&alive).unwrap();
        let unrelated = base.path().join("lab-notes");
        std::fs::create_dir(&unrelated).unwrap();
        assert_eq!(sweep(base.path()), 1);
        assert!(!dead.exists());
        assert!(mine.path().exists() && alive.exists() && unrelated.exists());
    }
}
