//! Compiling eBPF test programs (`bpf_test_program{name='x.c'}`) with clang into objects,
//! cached by content.
//!
//! The command is `clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I… -c SRC -o OBJ`. The
//! include directories, searched in this order:
//! 1. every `include/` directory from the source's own directory up to the suite root, nearest
//!    first (`root/a/b/x.c` sees `root/a/b/include`, `root/a/include`, `root/include`), those
//!    that exist; a source outside the root sees its own directory's `include/` and the root's;
//! 2. the lab's own headers, for `#include <lab/test.h>`: the copy built into this binary,
//!    written under the cache, or a directory given with [`BpfBuilder::lab_include`];
//! 3. Debian's multiarch directory `/usr/include/x86_64-linux-gnu`, when it exists, which
//!    `-target bpf` does not search but `<linux/types.h>` needs (for `<asm/types.h>`).
//!
//! libbpf's headers (`<bpf/bpf_helpers.h>`) come from /usr/include (Debian's libbpf-dev).
//!
//! # Cache
//! Objects live in `CACHE/bpf/OBJ_KEY.o`. A first key hashes (SHA-256) the build's recipe:
//! clang's `--version`, the flags, the include directories that exist, the source's path and
//! contents. Under it, `CACHE/bpf/deps-KEY.txt` records the files the last build read (from
//! clang's `-MD` depfile: the source and every header, system ones included), and the object's
//! key hashes the first key with the contents of each of those files: an edit to any of them
//! builds anew. Objects and records are written to a temporary name and renamed into place,
//! so a reader never sees half a file and concurrent builds of the same key agree. A header
//! that newly shadows another of the same name in a directory already searched is not noticed
//! until the source or a recorded header changes.

use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::suite::build_cache::{self, content_key, head, hex, parse_depfile};

use sha2::{Digest, Sha256};

/// `lab/test.h`, the header suite authors include, as this binary was built with it.
pub const LAB_TEST_H: &str = include_str!("../../../../suites/ebpf/include/lab/test.h");

/// The flags before the include directories, unless the Kyuafile's `cflags` replace them.
pub const DEFAULT_FLAGS: &[&str] = &["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86"];
/// Debian's multiarch include directory for x86-64.
const MULTIARCH_INCLUDE: &str = "/usr/include/x86_64-linux-gnu";
/// The most bytes of clang's error output kept.
const MAX_STDERR_BYTES: usize = 16 << 10;
/// Changes when the cache's layout or the recipe's meaning does.
const RECIPE_VERSION: &str = "lab-bpf-build 1";
/// The depfile target name, so the path of the object does not need escaping.
const DEP_TARGET: &str = "lab-bpf-object";

/// Why an eBPF test program could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BpfBuildError {
    /// clang is not installed.
    #[error("clang is not installed; eBPF test programs need it (apt-get install clang)")]
    NoClang,
    /// clang could not be run.
    #[error("failed to run clang")]
    Spawn(#[source] io::Error),
    /// `clang --version` failed.
    #[error("clang --version failed: {0}")]
    Version(String),
    /// The program does not compile; `stderr` holds clang's `file:line:` messages.
    #[error("clang could not compile {}:\n{stderr}", .path.display())]
    Compile {
        /// The source.
        path: PathBuf,
        /// What clang said (at most 16 KiB of it).
        stderr: String,
    },
    /// The source or a file it includes could not be read.
    #[error("failed to read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The cache could not be written.
    #[error("failed to write the build cache at {}", .path.display())]
    Cache {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// How eBPF test programs are compiled: which clang, where `<lab/test.h>` comes from, and the
/// program's own flags and include directories (the Kyuafile's `cflags` and `include`).
#[derive(Debug, Clone)]
pub struct BpfBuilder {
    clang: PathBuf,
    lab_include: Option<PathBuf>,
    cflags: Option<Vec<String>>,
    extra_includes: Vec<PathBuf>,
}

impl Default for BpfBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds `source` with the default [`BpfBuilder`]: clang from PATH, the built-in lab header.
pub fn build(source: &Path, suite_root: &Path, cache_dir: &Path) -> Result<PathBuf, BpfBuildError> {
    BpfBuilder::new().build(source, suite_root, cache_dir)
}

/// The `include/` directories a source sees, nearest first (see the module's documentation).
pub fn include_dirs(source: &Path, suite_root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let Some(start) = source.parent() else {
        return dirs;
    };
    if start.starts_with(suite_root) {
        for dir in start.ancestors() {
            dirs.push(dir.join("include"));
            if dir == suite_root {
                break;
            }
        }
    } else {
        dirs.push(start.join("include"));
        dirs.push(suite_root.join("include"));
    }
    dirs.dedup();
    dirs.retain(|d| d.is_dir());
    dirs
}

impl BpfBuilder {
    /// clang from PATH; `<lab/test.h>` from this binary.
    pub fn new() -> Self {
        Self {
            clang: PathBuf::from("clang"),
            lab_include: None,
            cflags: None,
            extra_includes: Vec::new(),
        }
    }

    /// Compiles with `flags` instead of lab's (`-O2 -g -target bpf -D__TARGET_ARCH_x86`), as a
    /// project's Makefile would (`-O2 -g --target=bpf -mcpu=v3 -nostdinc -Werror`…); a target
    /// is added when the flags name none. The include directories still follow them.
    pub fn cflags(mut self, flags: Vec<String>) -> Self {
        self.cflags = Some(flags);
        self
    }

    /// Searches `dirs` before the `include/` directories lab finds itself.
    pub fn includes(mut self, dirs: Vec<PathBuf>) -> Self {
        self.extra_includes = dirs;
        self
    }

    /// Uses this clang.
    pub fn clang(mut self, clang: impl Into<PathBuf>) -> Self {
        self.clang = clang.into();
        self
    }

    /// Takes `<lab/test.h>` from `dir` (e.g. the repository's `suites/ebpf/include`) instead
    /// of the copy built into this binary.
    pub fn lab_include(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lab_include = Some(dir.into());
        self
    }

    /// Compiles `source` (a suite file under `suite_root`) into an object under `cache_dir`,
    /// or finds it built already; returns the object's path.
    pub fn build(
        &self,
        source: &Path,
        suite_root: &Path,
        cache_dir: &Path,
    ) -> Result<PathBuf, BpfBuildError> {
        let source = fs::canonicalize(source).map_err(|e| BpfBuildError::Read {
            path: source.to_path_buf(),
            source: e,
        })?;
        let suite_root = fs::canonicalize(suite_root).unwrap_or_else(|_| suite_root.to_path_buf());
        let dir = cache_dir.join("bpf");
        create_dir(&dir)?;
        let lab_include = match &self.lab_include {
            Some(d) => d.clone(),
            None => builtin_include(&dir)?,
        };

        let mut includes: Vec<PathBuf> = self.extra_includes.clone();
        includes.extend(include_dirs(&source, &suite_root));
        includes.push(lab_include);
        let multiarch = Path::new(MULTIARCH_INCLUDE);
        if multiarch.is_dir() {
            includes.push(multiarch.to_path_buf());
        }
        let mut args: Vec<String> = match &self.cflags {
            Some(flags) => {
                let mut v = flags.clone();
                let has_target = v.iter().any(|f| {
                    f == "-target" || f.starts_with("--target=") || f.starts_with("-target=")
                });
                if !has_target {
                    v.push("--target=bpf".into());
                }
                v
            }
            None => DEFAULT_FLAGS.iter().map(|s| s.to_string()).collect(),
        };
        args.extend(includes.iter().map(|d| format!("-I{}", d.display())));

        let version = self.version()?;
        let mut recipe = Sha256::new();
        for part in [RECIPE_VERSION, &version, &args.join("\0")] {
            recipe.update(part.as_bytes());
            recipe.update([0]);
        }
        recipe.update(source.as_os_str().as_encoded_bytes());
        recipe.update([0]);
        recipe.update(read(&source)?);
        let recipe = hex(&recipe.finalize());
        let deps_file = dir.join(format!("deps-{recipe}.txt"));

        // A recorded build whose inputs are all unchanged.
        if let Ok(list) = fs::read_to_string(&deps_file) {
            let deps: Vec<PathBuf> = list.lines().map(PathBuf::from).collect();
            if let Some(key) = content_key(&recipe, &deps) {
                let object = dir.join(format!("{key}.o"));
                if object.is_file() {
                    return Ok(object);
                }
            }
        }

        let work = tempfile::Builder::new()
            .prefix(".build-")
            .tempdir_in(&dir)
            .map_err(|e| cache_error(&dir, e))?;
        let out = work.path().join("out.o");
        let depfile = work.path().join("out.d");
        let output = Command::new(&self.clang)
            .args(&args)
            .args(["-MD", "-MT", DEP_TARGET, "-MF"])
            .arg(&depfile)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&out)
            .output()
            .map_err(spawn_error)?;
        if !output.status.success() {
            return Err(BpfBuildError::Compile {
                path: source,
                stderr: head(
                    &String::from_utf8_lossy(&output.stderr),
                    MAX_STDERR_BYTES,
                    "clang's",
                ),
            });
        }
        let deps_text = fs::read_to_string(&depfile).map_err(|e| BpfBuildError::Read {
            path: depfile.clone(),
            source: e,
        })?;
        let mut deps = parse_depfile(&deps_text);
        if !deps.contains(&source) {
            deps.insert(0, source.clone());
        }
        let key = content_key(&recipe, &deps).ok_or_else(|| BpfBuildError::Read {
            path: source.clone(),
            source: io::Error::new(ErrorKind::NotFound, "an included file vanished"),
        })?;
        let object = dir.join(format!("{key}.o"));
        fs::rename(&out, &object).map_err(|e| cache_error(&object, e))?;
        let list: String = deps.iter().map(|d| format!("{}\n", d.display())).collect();
        write_atomically(&deps_file, list.as_bytes())?;
        Ok(object)
    }

    /// clang's `--version` output.
    fn version(&self) -> Result<String, BpfBuildError> {
        let out = Command::new(&self.clang)
            .arg("--version")
            .output()
            .map_err(spawn_error)?;
        if !out.status.success() {
            return Err(BpfBuildError::Version(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn spawn_error(e: io::Error) -> BpfBuildError {
    if e.kind() == ErrorKind::NotFound {
        BpfBuildError::NoClang
    } else {
        BpfBuildError::Spawn(e)
    }
}

fn cache_error(path: &Path, source: io::Error) -> BpfBuildError {
    BpfBuildError::Cache {
        path: path.to_path_buf(),
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), BpfBuildError> {
    fs::create_dir_all(dir).map_err(|e| cache_error(dir, e))
}

fn read(path: &Path) -> Result<Vec<u8>, BpfBuildError> {
    fs::read(path).map_err(|e| BpfBuildError::Read {
        path: path.to_path_buf(),
        source: e,
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BpfBuildError> {
    build_cache::write_atomically(path, bytes).map_err(|(p, e)| cache_error(&p, e))
}

/// The directory holding the built-in `lab/test.h`, written under the cache when missing or
/// different.
fn builtin_include(dir: &Path) -> Result<PathBuf, BpfBuildError> {
    let include = dir.join("include");
    let header = include.join("lab").join("test.h");
    if fs::read(&header).ok().as_deref() != Some(LAB_TEST_H.as_bytes()) {
        create_dir(&include.join("lab"))?;
        write_atomically(&header, LAB_TEST_H.as_bytes())?;
    }
    Ok(include)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_clang() -> bool {
        let ok = Command::new("clang")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("SKIPPED: clang is not on PATH (apt-get install clang)");
        }
        ok
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(path, text).expect("writes");
    }

    fn objects(cache: &Path) -> usize {
        fs::read_dir(cache.join("bpf"))
            .expect("cache dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "o"))
            })
            .count()
    }

    #[test]
    fn parses_depfiles() {
        let table: &[(&str, &[&str])] = &[
            ("lab-bpf-object: a.c b.h\n", &["a.c", "b.h"]),
            (
                "lab-bpf-object: /s/a.c \\\n  /usr/include/x.h \\\n  /s/my\\ dir/c.h\n",
                &["/s/a.c", "/usr/include/x.h", "/s/my dir/c.h"],
            ),
            ("t: a$$b.h c\\#d.h e\\f.h", &["a$b.h", "c#d.h", "e\\f.h"]),
            ("t: a.c \\\r\n b.h\r\n", &["a.c", "b.h"]),
            ("t:", &[]),
            ("", &[]),
        ];
        for (text, want) in table {
            let want: Vec<PathBuf> = want.iter().map(PathBuf::from).collect();
            assert_eq!(parse_depfile(text), want, "{text:?}");
        }
    }

    #[test]
    fn finds_include_dirs_up_to_the_root() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path();
        for d in ["include", "a/include", "a/b/include", "other/include"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        fs::create_dir_all(root.join("a/b/c")).expect("mkdir");
        let table: &[(&str, &[&str])] = &[
            ("a/b/x.c", &["a/b/include", "a/include", "include"]),
            ("a/b/c/x.c", &["a/b/include", "a/include", "include"]),
            ("x.c", &["include"]),
            ("other/x.c", &["other/include", "include"]),
        ];
        for (source, want) in table {
            let want: Vec<PathBuf> = want.iter().map(|d| root.join(d)).collect();
            assert_eq!(include_dirs(&root.join(source), root), want, "{source}");
        }
        let outside = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(outside.path().join("include")).expect("mkdir");
        assert_eq!(
            include_dirs(&outside.path().join("y.c"), root),
            [outside.path().join("include"), root.join("include")]
        );
    }

    #[test]
    fn builds_and_caches_by_content() {
        if !have_clang() {
            return;
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("suite");
        let cache = tmp.path().join("cache");
        let source = root.join("net/t.c");
        write(&root.join("include/mine.h"), "#define MINE 1\n");
        write(&root.join("net/include/near.h"), "#define NEAR 2\n");
        write(
            &source,
            "#include <lab/test.h>\n#include <mine.h>\n#include <near.h>\n\
             CHECK(\"tc\", \"t\")\nint t_check(struct __sk_buff *ctx)\n{\n\ttest_init();\n\
             \tassert(MINE + NEAR == 3);\n\ttest_finish();\n}\n",
        );
        let first = build(&source, &root, &cache).expect("builds");
        assert!(fs::read(&first).expect("object").starts_with(b"\x7fELF"));
        assert_eq!(objects(&cache), 1);

        // Unchanged: the same object, nothing compiled.
        let stamp = fs::metadata(&first)
            .and_then(|m| m.modified())
            .expect("mtime");
        let again = build(&source, &root, &cache).expect("builds");
        assert_eq!(again, first);
        assert_eq!(
            fs::metadata(&again)
                .and_then(|m| m.modified())
                .expect("mtime"),
            stamp
        );

        // An included header changes: a new object.
        write(
            &root.join("include/mine.h"),
            "#define MINE 1 /* edited */\n",
        );
        let edited = build(&source, &root, &cache).expect("builds");
        assert_ne!(edited, first);
        assert_eq!(objects(&cache), 2);

        // The source changes back and forth: the old object is found again.
        write(&root.join("include/mine.h"), "#define MINE 1\n");
        assert_eq!(build(&source, &root, &cache).expect("builds"), first);

        // A given lab include directory is used instead of the built-in header.
        let lab = tmp.path().join("lab-include");
        write(&lab.join("lab/test.h"), LAB_TEST_H);
        let with_dir = BpfBuilder::new()
            .lab_include(&lab)
            .build(&source, &root, &cache)
            .expect("builds");
        assert_ne!(with_dir, first, "the flags are part of the key");
        assert!(!fs::read_dir(cache.join("bpf"))
            .expect("cache dir")
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".build-"))));
    }

    #[test]
    fn compile_errors_carry_clangs_lines() {
        if !have_clang() {
            return;
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let source = tmp.path().join("bad.c");
        write(&source, "int ok;\nint broken(void) { return nope; }\n");
        let err = build(&source, tmp.path(), &tmp.path().join("cache")).expect_err("fails");
        match &err {
            BpfBuildError::Compile { stderr, .. } => {
                assert!(stderr.contains("bad.c:2:"), "{stderr}");
                assert!(stderr.contains("nope"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("clang could not compile "));
    }

    #[test]
    fn missing_clang_names_the_package() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let source = tmp.path().join("x.c");
        write(&source, "int x;\n");
        let err = BpfBuilder::new()
            .clang("/nonexistent/clang")
            .build(&source, tmp.path(), &tmp.path().join("cache"))
            .expect_err("no clang");
        assert!(matches!(err, BpfBuildError::NoClang), "{err:?}");
        assert!(err.to_string().contains("apt-get install clang"));
        let missing = build(&tmp.path().join("none.c"), tmp.path(), tmp.path());
        assert!(matches!(missing, Err(BpfBuildError::Read { .. })));
    }

    #[test]
    fn cuts_long_stderr_at_a_character() {
        assert_eq!(head("abc", 5, "clang's"), "abc");
        assert_eq!(
            head("ééé", 3, "clang's"),
            "é\n[clang's output cut at 3 bytes]"
        );
    }
}
