//! Installed kselftest trees: what `make -C tools/testing/selftests install` lays out
//! (`kselftest-list.txt`, one directory per collection with its programs and `settings`), read
//! into test programs the way the kernel's `kselftest/runner.sh` sees them.
//!
//! Each `COLLECTION:PROGRAM` line of `kselftest-list.txt` is one test program,
//! `COLLECTION/PROGRAM` relative to the tree, of the kselftest interface, in test suite
//! `kselftest`. Its timeout is the collection's `settings` `timeout=N` (lines `field=value`,
//! `#` comments), else the runner's default of 45 s; `timeout=0`, which the runner takes as
//! no limit at all, becomes [`NO_LIMIT_CAP`], so that a hung program still ends.
//!
//! Input is bounded: the list and each settings file are read up to [`MAX_FILE`] bytes, and a
//! malformed line is an error naming `FILE:LINE`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_model::{Interface, Metadata, TestProgram};

use super::Suite;

/// The file that marks an installed kselftest tree.
pub const LIST: &str = "kselftest-list.txt";

/// kselftest/runner.sh's `kselftest_default_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45);

/// What `timeout=0` (no limit, to the runner) becomes.
pub const NO_LIMIT_CAP: Duration = Duration::from_secs(3600);

/// The largest list or settings file read.
const MAX_FILE: u64 = 1 << 20;

/// The test suite kselftest programs belong to.
pub const TEST_SUITE: &str = "kselftest";

/// Why a kselftest tree could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KselftestError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not what the runner reads.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line number (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Whether `dir` is an installed kselftest tree.
pub fn is_tree(dir: &Path) -> bool {
    dir.join(LIST).is_file()
}

/// Loads the installed kselftest tree at `dir`.
pub fn load(dir: &Path) -> Result<Suite, KselftestError> {
    let root = dir.canonicalize().map_err(|source| KselftestError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let list_path = root.join(LIST);
    let list = read_bounded(&list_path)?;
    let mut programs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in list.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let invalid = |message: String| KselftestError::Invalid {
            path: list_path.clone(),
            line: n + 1,
            message,
        };
        let (collection, program) = entry(line).map_err(invalid)?;
        let path = format!("{collection}/{program}");
        if !seen.insert(path.clone()) {
            continue;
        }
        let metadata = Metadata {
            timeout: collection_timeout(&root, collection)?,
            description: format!("kselftest {collection}: {program}"),
            ..Metadata::default()
        };
        programs.push(TestProgram::new(
            Interface::Kselftest,
            &root,
            &path,
            TEST_SUITE,
            metadata,
        ));
    }
    Ok(Suite { root, programs })
}

/// `COLLECTION:PROGRAM`, both relative, neither leaving the tree.
fn entry(line: &str) -> Result<(&str, &str), String> {
    let (collection, program) = line
        .split_once(':')
        .ok_or_else(|| format!("expected COLLECTION:PROGRAM, got '{line}'"))?;
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('/')
            && s.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
    };
    if !plain(collection) || !plain(program) {
        return Err(format!(
            "'{line}' names a path outside the tree (COLLECTION:PROGRAM, both relative)"
        ));
    }
    Ok((collection, program))
}

/// The collection's timeout from its `settings`, as runner.sh reads it.
fn collection_timeout(root: &Path, collection: &str) -> Result<Duration, KselftestError> {
    let path = root.join(collection).join("settings");
    if !path.is_file() {
        return Ok(DEFAULT_TIMEOUT);
    }
    let text = read_bounded(&path)?;
    let mut timeout = DEFAULT_TIMEOUT;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((field, value)) = line.split_once('=') else {
            continue;
        };
        if field.trim() != "timeout" {
            continue;
        }
        let secs: u64 = value.trim().parse().map_err(|_| KselftestError::Invalid {
            path: path.clone(),
            line: n + 1,
            message: format!("timeout '{}' is not a number of seconds", value.trim()),
        })?;
        timeout = if secs == 0 {
            NO_LIMIT_CAP
        } else {
            Duration::from_secs(secs).min(NO_LIMIT_CAP)
        };
    }
    Ok(timeout)
}

fn read_bounded(path: &Path) -> Result<String, KselftestError> {
    let bytes = super::read_limited(path, MAX_FILE).map_err(|source| KselftestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_tree_has_each_listed_program_with_its_collections_timeout() {
        let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites/kselftest");
        assert!(is_tree(&tree));
        let suite = load(&tree).unwrap();
        let got: Vec<(String, u64)> = suite
            .programs
            .iter()
            .map(|p| (p.path.clone(), p.metadata.timeout.as_secs()))
            .collect();
        assert_eq!(got.len(), 7, "{got:?}");
        assert!(
            got.contains(&("basic/pass_points.sh".into(), 30)),
            "{got:?}"
        );
        assert!(got.contains(&("timeouts/hang.sh".into(), 5)), "{got:?}");
        // timeout=0: no limit to the runner, capped here.
        assert!(
            got.contains(&("nested/directives.sh".into(), 3600)),
            "{got:?}"
        );
        let p = &suite.programs[0];
        assert_eq!(p.interface, Interface::Kselftest);
        assert_eq!(p.test_suite, "kselftest");
        assert_eq!(p.cases.len(), 1);
    }

    #[test]
    fn bad_lines_are_named_and_paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LIST), "a:ok\n\n# c\nbroken\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("kselftest-list.txt:4: expected COLLECTION:PROGRAM, got 'broken'"),
            "{err}"
        );
        std::fs::write(dir.path().join(LIST), "../up:x\n").unwrap();
        assert!(load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("outside the tree"));
        std::fs::write(dir.path().join(LIST), "a:/etc/passwd\n").unwrap();
        assert!(load(dir.path()).is_err());
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/settings"), "timeout=soon\n").unwrap();
        std::fs::write(dir.path().join(LIST), "a:t\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("settings:1: timeout 'soon'"), "{err}");
        std::fs::write(dir.path().join("a/settings"), "# x\ntimeout = 120\n").unwrap();
        let suite = load(dir.path()).unwrap();
        assert_eq!(suite.programs[0].metadata.timeout, Duration::from_secs(120));
    }
}
