//! Compiling test programs written in C (a `name` ending in `.c` under a non-bpf interface)
//! into executables, with the eBPF objects beside them that they load, cached by content.
//!
//! A program `dir/x_test.c` builds into an output directory holding:
//! - `x_test`: `cc -O2 -g -Wall -D_GNU_SOURCE -I… SRC -o x_test -lbpf`, dynamically linked
//!   against the host's libbpf (Debian's libbpf-dev; the guest gets libbpf1);
//! - `NAME.bpf.o` for every `dir/NAME.bpf.c`: built by [`super::bpf_build`] (clang
//!   `-target bpf`, its include rules and cache) and copied here.
//!
//! The include directories of `cc` are those [`super::bpf_build::include_dirs`] finds: every
//! `include/` from the source's directory up to the suite root, nearest first.
//!
//! # Cache
//! Output directories live in `CACHE/c/OUT_KEY/`. As for eBPF objects, a first key hashes the
//! recipe: `cc --version`, the flags, the include directories, the source's path and contents,
//! and each eBPF object's name and key (which covers its sources, headers and clang). Under it,
//! `CACHE/c/deps-KEY.txt` records the files the last compile read (from `cc -MD`: the source
//! and every header), and the output's key hashes the first key with their contents. The
//! directory is assembled under a temporary name and renamed into place whole, so a reader
//! never sees half of it; when two builds race, the first rename wins and both use it.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::suite::build_cache::{self, content_key, head, hex, parse_depfile};

use sha2::{Digest, Sha256};

use super::bpf_build::{self, BpfBuildError, BpfBuilder};

/// The flags before the include directories.
const FLAGS: &[&str] = &["-O2", "-g", "-Wall", "-D_GNU_SOURCE"];
/// The libraries after the source.
const LIBS: &[&str] = &["-lbpf"];
/// What the sources of a program's eBPF objects end with.
const BPF_SUFFIX: &str = ".bpf.c";
/// The most bytes of the compiler's error output kept.
const MAX_STDERR_BYTES: usize = 16 << 10;
/// Changes when the cache's layout or the recipe's meaning does.
const RECIPE_VERSION: &str = "lab-c-build 1";
/// The depfile target name, so the output's path does not need escaping.
const DEP_TARGET: &str = "lab-c-program";
/// What to install, in every message about a missing tool.
const PACKAGES: &str = "apt-get install gcc libbpf-dev clang";

/// Why a test program in C could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CBuildError {
    /// No C compiler.
    #[error("cc is not installed; test programs in C need it ({PACKAGES})")]
    NoCc,
    /// No clang for the program's eBPF objects.
    #[error("clang is not installed; the eBPF objects of test programs in C need it ({PACKAGES})")]
    NoClang,
    /// libbpf's headers or library are missing.
    #[error("libbpf-dev is not installed; test programs in C use libbpf ({PACKAGES}):\n{stderr}")]
    NoLibbpf {
        /// What the compiler said.
        stderr: String,
    },
    /// cc could not be run.
    #[error("failed to run cc")]
    Spawn(#[source] io::Error),
    /// `cc --version` failed.
    #[error("cc --version failed: {0}")]
    Version(String),
    /// The program does not compile or link; `stderr` holds the compiler's `file:line:` lines.
    #[error("cc could not compile {}:\n{stderr}", .path.display())]
    Compile {
        /// The source.
        path: PathBuf,
        /// What the compiler said (at most 16 KiB of it).
        stderr: String,
    },
    /// One of the program's eBPF objects does not build.
    #[error("failed to build the eBPF object {}", .path.display())]
    Bpf {
        /// Its source.
        path: PathBuf,
        /// Why.
        #[source]
        source: BpfBuildError,
    },
    /// A source, a header or the source's directory could not be read.
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

/// How test programs in C are compiled: which cc, and how their eBPF objects are.
#[derive(Debug, Clone)]
pub struct CBuilder {
    cc: PathBuf,
    bpf: BpfBuilder,
}

impl Default for CBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds `source` with the default [`CBuilder`]; returns the executable inside its output
/// directory, whose other files are the eBPF objects to put beside it.
pub fn build(source: &Path, suite_root: &Path, cache_dir: &Path) -> Result<PathBuf, CBuildError> {
    CBuilder::new().build(source, suite_root, cache_dir)
}

/// The `*.bpf.c` files beside `source`, sorted by name.
pub fn bpf_sources(source: &Path) -> Result<Vec<PathBuf>, CBuildError> {
    let dir = source.parent().unwrap_or(Path::new("."));
    let entries = fs::read_dir(dir).map_err(|e| read_error(dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let name = entry.file_name();
        let is_bpf = name.to_str().is_some_and(|n| bpf_name(n).is_some());
        if is_bpf && entry.path().is_file() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// `NAME` of a file named `NAME.bpf.c` (not empty).
fn bpf_name(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix(BPF_SUFFIX)
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
}

impl CBuilder {
    /// cc from PATH; eBPF objects with the default [`BpfBuilder`].
    pub fn new() -> Self {
        Self {
            cc: PathBuf::from("cc"),
            bpf: BpfBuilder::new(),
        }
    }

    /// Uses this C compiler.
    pub fn cc(mut self, cc: impl Into<PathBuf>) -> Self {
        self.cc = cc.into();
        self
    }

    /// Builds the eBPF objects with this builder.
    pub fn bpf(mut self, bpf: BpfBuilder) -> Self {
        self.bpf = bpf;
        self
    }

    /// Compiles `source` (a suite file under `suite_root`) and the `*.bpf.c` beside it into
    /// an output directory under `cache_dir`, or finds it built already; returns the
    /// executable's path in it.
    pub fn build(
        &self,
        source: &Path,
        suite_root: &Path,
        cache_dir: &Path,
    ) -> Result<PathBuf, CBuildError> {
        let source = fs::canonicalize(source).map_err(|e| read_error(source, e))?;
        let suite_root = fs::canonicalize(suite_root).unwrap_or_else(|_| suite_root.to_path_buf());
        let exe_name = source
            .file_stem()
            .filter(|s| !s.is_empty())
            .map(OsStr::to_os_string)
            .ok_or_else(|| {
                read_error(
                    &source,
                    io::Error::new(ErrorKind::InvalidInput, "no file name"),
                )
            })?;
        let dir = cache_dir.join("c");
        fs::create_dir_all(&dir).map_err(|e| cache_error(&dir, e))?;

        // The eBPF objects first: their keys are part of the recipe.
        let mut objects = Vec::new();
        for bpf_source in bpf_sources(&source)? {
            let file_name = bpf_source.file_name().and_then(OsStr::to_str);
            let name = file_name
                .and_then(bpf_name)
                .expect("bpf_sources keeps NAME.bpf.c");
            let object = self
                .bpf
                .build(&bpf_source, &suite_root, cache_dir)
                .map_err(|e| match e {
                    BpfBuildError::NoClang => CBuildError::NoClang,
                    e => CBuildError::Bpf {
                        path: bpf_source.clone(),
                        source: e,
                    },
                })?;
            objects.push((format!("{name}.bpf.o"), object));
        }

        let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
        args.extend(
            bpf_build::include_dirs(&source, &suite_root)
                .iter()
                .map(|d| format!("-I{}", d.display())),
        );

        let version = self.version()?;
        let mut recipe = Sha256::new();
        for part in [RECIPE_VERSION, &version, &args.join("\0"), &LIBS.join("\0")] {
            recipe.update(part.as_bytes());
            recipe.update([0]);
        }
        recipe.update(source.as_os_str().as_encoded_bytes());
        recipe.update([0]);
        recipe.update(fs::read(&source).map_err(|e| read_error(&source, e))?);
        for (name, object) in &objects {
            recipe.update([0]);
            recipe.update(name.as_bytes());
            recipe.update([0]);
            // The object's file name is its content key.
            recipe.update(object.as_os_str().as_encoded_bytes());
        }
        let recipe = hex(&recipe.finalize());
        let deps_file = dir.join(format!("deps-{recipe}.txt"));

        // A recorded build whose inputs are all unchanged.
        if let Ok(list) = fs::read_to_string(&deps_file) {
            let deps: Vec<PathBuf> = list.lines().map(PathBuf::from).collect();
            if let Some(key) = content_key(&recipe, &deps) {
                let exe = dir.join(key).join(&exe_name);
                if exe.is_file() {
                    return Ok(exe);
                }
            }
        }

        let work = tempfile::Builder::new()
            .prefix(".build-")
            .tempdir_in(&dir)
            .map_err(|e| cache_error(&dir, e))?;
        let out = work.path().join("out");
        fs::create_dir(&out).map_err(|e| cache_error(&out, e))?;
        let depfile = work.path().join("out.d");
        let output = Command::new(&self.cc)
            .args(&args)
            .args(["-MD", "-MT", DEP_TARGET, "-MF"])
            .arg(&depfile)
            .arg(&source)
            .arg("-o")
            .arg(out.join(&exe_name))
            .args(LIBS)
            .output()
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => CBuildError::NoCc,
                _ => CBuildError::Spawn(e),
            })?;
        if !output.status.success() {
            let stderr = head(
                &String::from_utf8_lossy(&output.stderr),
                MAX_STDERR_BYTES,
                "the compiler's",
            );
            return Err(if libbpf_missing(&stderr) {
                CBuildError::NoLibbpf { stderr }
            } else {
                CBuildError::Compile {
                    path: source,
                    stderr,
                }
            });
        }
        for (name, object) in &objects {
            let to = out.join(name);
            fs::copy(object, &to).map_err(|e| cache_error(&to, e))?;
        }

        let deps_text = fs::read_to_string(&depfile).map_err(|e| read_error(&depfile, e))?;
        let mut deps = parse_depfile(&deps_text);
        if !deps.contains(&source) {
            deps.insert(0, source.clone());
        }
        let key = content_key(&recipe, &deps).ok_or_else(|| {
            read_error(
                &source,
                io::Error::new(ErrorKind::NotFound, "an included file vanished"),
            )
        })?;
        let final_dir = dir.join(&key);
        if let Err(e) = fs::rename(&out, &final_dir) {
            // Another build of the same key won the race: use its directory.
            if !final_dir.join(&exe_name).is_file() {
                return Err(cache_error(&final_dir, e));
            }
        }
        let list: String = deps.iter().map(|d| format!("{}\n", d.display())).collect();
        write_atomically(&deps_file, list.as_bytes())?;
        Ok(final_dir.join(exe_name))
    }

    /// cc's `--version` output.
    fn version(&self) -> Result<String, CBuildError> {
        let out = Command::new(&self.cc)
            .arg("--version")
            .output()
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => CBuildError::NoCc,
                _ => CBuildError::Spawn(e),
            })?;
        if !out.status.success() {
            return Err(CBuildError::Version(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Whether the compiler's complaint is that libbpf's headers or library are missing.
fn libbpf_missing(stderr: &str) -> bool {
    stderr.contains("cannot find -lbpf")
        || stderr.lines().any(|l| {
            [" bpf/", "'bpf/"].iter().any(|p| l.contains(p))
                && (l.contains("No such file") || l.contains("file not found"))
        })
}

fn read_error(path: &Path, source: io::Error) -> CBuildError {
    CBuildError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn cache_error(path: &Path, source: io::Error) -> CBuildError {
    CBuildError::Cache {
        path: path.to_path_buf(),
        source,
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CBuildError> {
    build_cache::write_atomically(path, bytes).map_err(|(p, e)| cache_error(&p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether cc, clang and libbpf-dev are here; says loudly why not.
    fn have_tools() -> bool {
        let runs = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let missing: Vec<&str> = [
            ("cc", runs("cc")),
            ("clang", runs("clang")),
            (
                "libbpf-dev",
                Path::new("/usr/include/bpf/libbpf.h").is_file(),
            ),
        ]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
        if !missing.is_empty() {
            eprintln!("SKIPPED: {} missing ({PACKAGES})", missing.join(", "));
        }
        missing.is_empty()
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(path, text).expect("writes");
    }

    fn mtime(path: &Path) -> std::time::SystemTime {
        fs::metadata(path)
            .and_then(|m| m.modified())
            .expect("mtime")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    const PROGRAM: &str = "#include <stdio.h>\n#include <bpf/libbpf.h>\n#include <answer.h>\n\
        int main(void)\n{\n\tprintf(\"libbpf %u answer %d\\n\", libbpf_major_version(), ANSWER);\n\
        \treturn 0;\n}\n";
    const BPF: &str = "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n\
        SEC(\"cgroup_skb/egress\")\nint allow(struct __sk_buff *skb)\n{\n\treturn 1;\n}\n\
        char LICENSE[] SEC(\"license\") = \"GPL\";\n";

    #[test]
    fn parses_depfiles() {
        let table: &[(&str, &[&str])] = &[
            ("lab-c-program: a.c b.h\n", &["a.c", "b.h"]),
            (
                "t: /s/a.c \\\n  /usr/include/x.h \\\n  /s/my\\ dir/c.h\n",
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
    fn names_bpf_sources() {
        let table: &[(&str, Option<&str>)] = &[
            ("x.bpf.c", Some("x")),
            ("connect_v4.bpf.c", Some("connect_v4")),
            (".bpf.c", None),
            (".hidden.bpf.c", None),
            ("x.c", None),
            ("x.bpf.h", None),
            ("x.bpf.c.orig", None),
        ];
        for (file, want) in table {
            assert_eq!(bpf_name(file), *want, "{file}");
        }
    }

    #[test]
    fn knows_libbpf_is_missing() {
        let table: &[(&str, bool)] = &[
            (
                "/usr/bin/ld: cannot find -lbpf: No such file or directory",
                true,
            ),
            (
                "t.c:1:10: fatal error: bpf/libbpf.h: No such file or directory",
                true,
            ),
            ("t.c:1:10: fatal error: 'bpf/bpf.h' file not found", true),
            ("t.c:3:2: error: 'nope' undeclared", false),
            (
                "t.c:1:10: fatal error: mine.h: No such file or directory",
                false,
            ),
        ];
        for (stderr, want) in table {
            assert_eq!(libbpf_missing(stderr), *want, "{stderr}");
        }
    }

    #[test]
    fn builds_the_program_and_its_objects_and_caches_by_content() {
        if !have_tools() {
            return;
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("suite");
        let cache = tmp.path().join("cache");
        let source = root.join("attach/x_test.c");
        write(&root.join("include/answer.h"), "#define ANSWER 42\n");
        write(&source, PROGRAM);
        write(&root.join("attach/egress.bpf.c"), BPF);
        write(&root.join("attach/ingress.bpf.c"), BPF);
        write(
            &root.join("attach/other_test.c"),
            "int main(void) { return 1; }\n",
        );

        let exe = build(&source, &root, &cache).expect("builds");
        assert_eq!(exe.file_name(), Some(OsStr::new("x_test")));
        let out = exe.parent().expect("in a directory");
        assert_eq!(
            names(out),
            ["egress.bpf.o", "ingress.bpf.o", "x_test"],
            "the program and every sibling object, nothing else"
        );
        assert!(fs::read(out.join("egress.bpf.o"))
            .expect("object")
            .starts_with(b"\x7fELF"));
        let ran = Command::new(&exe).output().expect("runs");
        assert!(ran.status.success(), "{ran:?}");
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "libbpf 1 answer 42\n");

        // Unchanged: the same directory, nothing compiled.
        let stamp = mtime(&exe);
        let again = build(&source, &root, &cache).expect("builds");
        assert_eq!(again, exe);
        assert_eq!(mtime(&again), stamp);

        // A header changes: a new directory.
        write(&root.join("include/answer.h"), "#define ANSWER 43\n");
        let edited = build(&source, &root, &cache).expect("builds");
        assert_ne!(edited, exe);
        let ran = Command::new(&edited).output().expect("runs");
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "libbpf 1 answer 43\n");

        // Back as it was: the first directory again.
        write(&root.join("include/answer.h"), "#define ANSWER 42\n");
        assert_eq!(build(&source, &root, &cache).expect("builds"), exe);

        // An eBPF source changes: a new directory; a new one appears: it comes along.
        write(
            &root.join("attach/egress.bpf.c"),
            &BPF.replace("return 1", "return 0"),
        );
        let bpf_edited = build(&source, &root, &cache).expect("builds");
        assert_ne!(bpf_edited, exe);
        write(&root.join("attach/sockops.bpf.c"), BPF);
        let added = build(&source, &root, &cache).expect("builds");
        assert_eq!(
            names(added.parent().expect("dir")),
            ["egress.bpf.o", "ingress.bpf.o", "sockops.bpf.o", "x_test"]
        );
        assert!(!names(&cache.join("c"))
            .iter()
            .any(|n| n.starts_with(".build-")));
    }

    #[test]
    fn builds_the_bundled_attach_tests() {
        if !have_tools() {
            return;
        }
        let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../suites/ebpf");
        let tmp = tempfile::tempdir().expect("temp dir");
        for program in ["connect", "udp_msg", "cgroup_skb", "sockops"] {
            let source = suite.join(format!("attach/{program}_test.c"));
            let exe = build(&source, &suite, tmp.path()).expect("the bundled test builds");
            let files = names(exe.parent().expect("dir"));
            for want in [format!("{program}_test"), format!("{program}.bpf.o")] {
                assert!(files.contains(&want), "{want} in {files:?}");
            }
        }
    }

    #[test]
    fn compile_errors_carry_the_compilers_lines() {
        if !have_tools() {
            return;
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let source = tmp.path().join("bad_test.c");
        write(&source, "int main(void)\n{\n\treturn nope;\n}\n");
        let err = build(&source, tmp.path(), &tmp.path().join("cache")).expect_err("fails");
        match &err {
            CBuildError::Compile { stderr, .. } => {
                assert!(stderr.contains("bad_test.c:3:"), "{stderr}");
                assert!(stderr.contains("nope"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("cc could not compile "));

        // A broken eBPF object beside a good program: that object's error, with clang's lines.
        write(&source, "int main(void) { return 0; }\n");
        write(
            &tmp.path().join("bad.bpf.c"),
            "int x(void) { return nope; }\n",
        );
        let err = build(&source, tmp.path(), &tmp.path().join("cache")).expect_err("fails");
        match &err {
            CBuildError::Bpf {
                source: BpfBuildError::Compile { stderr, .. },
                ..
            } => assert!(stderr.contains("bad.bpf.c:1:"), "{stderr}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_tools_name_the_packages() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let source = tmp.path().join("x_test.c");
        write(&source, "int main(void) { return 0; }\n");
        let cache = tmp.path().join("cache");
        let err = CBuilder::new()
            .cc("/nonexistent/cc")
            .build(&source, tmp.path(), &cache)
            .expect_err("no cc");
        assert!(matches!(err, CBuildError::NoCc), "{err:?}");
        assert!(err.to_string().contains(PACKAGES), "{err}");

        write(&tmp.path().join("x.bpf.c"), BPF);
        let err = CBuilder::new()
            .bpf(BpfBuilder::new().clang("/nonexistent/clang"))
            .build(&source, tmp.path(), &cache)
            .expect_err("no clang");
        assert!(matches!(err, CBuildError::NoClang), "{err:?}");
        assert!(err.to_string().contains(PACKAGES), "{err}");

        let missing = build(&tmp.path().join("none.c"), tmp.path(), &cache);
        assert!(
            matches!(missing, Err(CBuildError::Read { .. })),
            "{missing:?}"
        );
    }

    #[test]
    fn cuts_long_stderr_at_a_character() {
        assert_eq!(head("abc", 5, "the compiler's"), "abc");
        assert_eq!(
            head("ééé", 3, "the compiler's"),
            "é\n[the compiler's output cut at 3 bytes]"
        );
    }
}
