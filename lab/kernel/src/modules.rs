//! Kernel modules: `modules.dep` parsing, dependency closure in load order, decompression.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Errors of module handling.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// A line of modules.dep is malformed.
    #[error("modules.dep line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A wanted module (or a dependency) is not in modules.dep.
    #[error("module {0} is not in modules.dep")]
    Missing(String),
    /// Dependencies form a cycle.
    #[error("dependency cycle through module {0}")]
    Cycle(String),
    /// Reading, decompressing or writing a module failed.
    #[error("failed to unpack module {}", path.display())]
    Unpack {
        /// The module file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A module's `.modinfo` section could not be read.
    #[error("bad module {}: {reason}", path.display())]
    Modinfo {
        /// The module file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A module tree could not be listed.
    #[error("failed to list modules under {}", path.display())]
    Walk {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One module of `modules.dep`.
#[derive(Debug, Clone)]
struct Entry {
    /// Its path as written, relative to `/lib/modules/<release>`.
    path: String,
    /// Its dependencies' normalised names, in the order listed (depmod lists them so that
    /// loading from last to first works).
    deps: Vec<String>,
}

/// A parsed `modules.dep`.
#[derive(Debug, Clone, Default)]
pub struct ModulesDep {
    /// Modules by normalised name.
    modules: HashMap<String, Entry>,
}

impl ModulesDep {
    /// Parses the text of a `modules.dep`.
    pub fn parse(text: &str) -> Result<Self, ModulesError> {
        let mut modules = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |reason: &str| ModulesError::Parse {
                line,
                reason: reason.to_string(),
            };
            if raw.trim().is_empty() {
                continue;
            }
            let (path, deps) = raw
                .split_once(':')
                .ok_or_else(|| err("missing ':' after the module path"))?;
            if path.is_empty() || path.contains(char::is_whitespace) {
                return Err(err("malformed module path"));
            }
            if !is_module_path(path) {
                return Err(err(&format!("'{path}' is not a module file")));
            }
            let mut dep_names = Vec::new();
            for dep in deps.split_whitespace() {
                if !is_module_path(dep) {
                    return Err(err(&format!("dependency '{dep}' is not a module file")));
                }
                dep_names.push(module_name(dep));
            }
            let name = module_name(path);
            let entry = Entry {
                path: path.to_string(),
                deps: dep_names,
            };
            if modules.insert(name.clone(), entry).is_some() {
                return Err(err(&format!("module {name} listed twice")));
            }
        }
        Ok(Self { modules })
    }

    /// The dependency graph of `wanted` and everything they need, read from the modules' own
    /// `.modinfo` (`depends=`) under `dir` (`/lib/modules/<release>`).
    ///
    /// This is what `depmod` would compute, for a module tree that ships without modules.dep, as
    /// Debian's image packages do (depmod runs when they are installed). Wanted names not found
    /// in the tree are left out, so that [`ModulesDep::load_order`] reports them missing.
    pub fn from_tree(dir: &Path, wanted: &[&str]) -> Result<Self, ModulesError> {
        let files = module_files(dir)?;
        let mut modules = HashMap::new();
        let mut queue: Vec<String> = wanted.iter().map(|n| normalise(n)).collect();
        while let Some(name) = queue.pop() {
            if modules.contains_key(&name) {
                continue;
            }
            let Some(rel) = files.get(&name) else {
                continue;
            };
            let path = dir.join(rel);
            let bytes = read_module(&path)?;
            let info = modinfo(&bytes).map_err(|reason| ModulesError::Modinfo {
                path: path.clone(),
                reason,
            })?;
            let mut deps: Vec<String> = info
                .iter()
                .filter(|(k, _)| k == "depends")
                .flat_map(|(_, v)| v.split(','))
                .filter(|d| !d.is_empty())
                .map(normalise)
                .collect();
            deps.sort();
            deps.dedup();
            queue.extend(deps.iter().cloned());
            modules.insert(
                name,
                Entry {
                    path: rel.clone(),
                    deps,
                },
            );
        }
        Ok(Self { modules })
    }

    /// The text of a modules.dep listing these modules (each with its direct dependencies), in
    /// path order.
    pub fn to_text(&self) -> String {
        let mut entries: Vec<&Entry> = self.modules.values().collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut out = String::new();
        for e in entries {
            out.push_str(&e.path);
            out.push(':');
            for d in e.deps.iter() {
                out.push(' ');
                out.push_str(self.modules.get(d).map_or(d.as_str(), |m| m.path.as_str()));
            }
            out.push('\n');
        }
        out
    }

    /// Whether `name` (with `-` and `_` as equal) is listed.
    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&normalise(name))
    }

    /// The path of module `name` as written in modules.dep.
    pub fn path(&self, name: &str) -> Option<&str> {
        self.modules.get(&normalise(name)).map(|e| e.path.as_str())
    }

    /// How many modules are listed.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether no module is listed.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The relative paths (as in modules.dep) of `wanted` modules and all their dependencies,
    /// dependencies first, each once. Names compare with `-` and `_` as equal.
    ///
    /// The order is deterministic: wanted modules in the order given, each preceded by its
    /// not-yet-listed dependencies in the order `modprobe` loads them.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>, ModulesError> {
        let mut state: HashMap<&str, Visit> = HashMap::new();
        let mut order = Vec::new();
        for name in wanted {
            let name = normalise(name);
            let (key, _) = self
                .modules
                .get_key_value(&name)
                .ok_or_else(|| ModulesError::Missing(name.clone()))?;
            self.visit(key, &mut state, &mut order)?;
        }
        Ok(order)
    }

    /// Depth-first visit: dependencies (last listed first, as modprobe does), then `name`.
    fn visit<'a>(
        &'a self,
        name: &'a str,
        state: &mut HashMap<&'a str, Visit>,
        order: &mut Vec<String>,
    ) -> Result<(), ModulesError> {
        match state.get(name) {
            Some(Visit::Done) => return Ok(()),
            Some(Visit::InProgress) => return Err(ModulesError::Cycle(name.to_string())),
            None => {}
        }
        state.insert(name, Visit::InProgress);
        let entry = &self.modules[name];
        for dep in entry.deps.iter().rev() {
            let (key, _) = self
                .modules
                .get_key_value(dep)
                .ok_or_else(|| ModulesError::Missing(dep.clone()))?;
            self.visit(key, state, order)?;
        }
        state.insert(name, Visit::Done);
        order.push(entry.path.clone());
        Ok(())
    }
}

/// Where a depth-first visit stands with a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    InProgress,
    Done,
}

/// A parsed `modules.builtin`: the modules compiled into the kernel image.
#[derive(Debug, Clone, Default)]
pub struct ModulesBuiltin {
    names: BTreeSet<String>,
}

impl ModulesBuiltin {
    /// Parses the text of a `modules.builtin` (one module path per line).
    pub fn parse(text: &str) -> Self {
        let names = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Self { names }
    }

    /// Whether module `name` (with `-` and `_` as equal) is built in.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(&normalise(name))
    }

    /// The built-in modules' normalised names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// Where a wanted module is, given a kernel's `modules.dep` and `modules.builtin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    /// Loadable modules, as in modules.dep.
    pub loadable: Vec<String>,
    /// Built into the image: nothing to load.
    pub builtin: Vec<String>,
    /// Neither loadable nor built in.
    pub missing: Vec<String>,
}

/// Sorts `wanted` module names into loadable, built in and missing (normalised names).
pub fn classify(dep: &ModulesDep, builtin: &ModulesBuiltin, wanted: &[&str]) -> Availability {
    let mut out = Availability::default();
    let mut seen = BTreeSet::new();
    for name in wanted {
        let name = normalise(name);
        if !seen.insert(name.clone()) {
            continue;
        }
        if builtin.contains(&name) {
            out.builtin.push(name);
        } else if dep.contains(&name) {
            out.loadable.push(name);
        } else {
            out.missing.push(name);
        }
    }
    out
}

/// The file name suffixes of modules, longest first.
pub const SUFFIXES: &[&str] = &[".ko.xz", ".ko.gz", ".ko.zst", ".ko"];

/// Whether `path` names a module file (`.ko`, possibly compressed).
pub fn is_module_path(path: &str) -> bool {
    SUFFIXES
        .iter()
        .any(|s| path.ends_with(s) && path.len() > s.len())
}

/// `-` and `_` are the same in module names; the kernel uses `_`.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// A module's name from its path: `kernel/net/vmw_vsock/vsock.ko.xz` -> `vsock`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = SUFFIXES
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    normalise(stem)
}

/// The largest module lab decompresses (the largest in Debian's kernels is a few MiB): a
/// corrupt or hostile file cannot make lab allocate without bound.
pub const MAX_MODULE_SIZE: u64 = 256 << 20;

/// Copies the module at `src` to `dst` as a plain `.ko`, decompressing `.ko.xz`, `.ko.zst`
/// and `.ko.gz` by the file name's suffix.
pub fn unpack(src: &Path, dst: &Path) -> Result<(), ModulesError> {
    let err = |source| ModulesError::Unpack {
        path: src.to_path_buf(),
        source,
    };
    let output = File::create(dst).map_err(err)?;
    let mut writer = BufWriter::new(output);
    decompress(src, &mut writer)?;
    writer.flush().map_err(err)?;
    Ok(())
}

/// The module at `path`, decompressed, in memory.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModulesError> {
    let mut out = Vec::new();
    decompress(path, &mut out)?;
    Ok(out)
}

/// A writer that refuses to take more than [`MAX_MODULE_SIZE`] bytes.
struct Bounded<'a> {
    out: &'a mut dyn Write,
    written: u64,
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > MAX_MODULE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("decompresses to more than {MAX_MODULE_SIZE} bytes"),
            ));
        }
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes the module at `src`, decompressed by its file name's suffix, to `out`.
fn decompress(src: &Path, out: &mut dyn Write) -> Result<(), ModulesError> {
    let name = src.to_string_lossy();
    let err = |source| ModulesError::Unpack {
        path: src.to_path_buf(),
        source,
    };
    let input = File::open(src).map_err(err)?;
    let mut reader = BufReader::new(input);
    let mut out = Bounded { out, written: 0 };
    if name.ends_with(".xz") {
        lzma_rs::xz_decompress(&mut reader, &mut out)
            .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    } else if name.ends_with(".zst") {
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
        io::copy(&mut decoder, &mut out).map_err(err)?;
    } else if name.ends_with(".gz") {
        let mut decoder = flate2::bufread::GzDecoder::new(reader);
        io::copy(&mut decoder, &mut out).map_err(err)?;
    } else {
        io::copy(&mut reader, &mut out).map_err(err)?;
    }
    Ok(())
}

/// Every module file under `dir`, by name, as paths relative to `dir`. Directories are walked
/// in name order; where two files give the same module name, the first found is kept.
pub(crate) fn module_files(dir: &Path) -> Result<HashMap<String, String>, ModulesError> {
    let mut files = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let walk = |source| ModulesError::Walk {
            path: abs.clone(),
            source,
        };
        let mut entries: Vec<_> = fs::read_dir(&abs)
            .map_err(walk)?
            .collect::<Result<_, _>>()
            .map_err(walk)?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let kind = e.file_type().map_err(walk)?;
            let child = rel.join(e.file_name());
            let Some(child_str) = child.to_str() else {
                continue;
            };
            if kind.is_dir() {
                subdirs.push(child);
            } else if is_module_path(child_str) {
                files
                    .entry(module_name(child_str))
                    .or_insert_with(|| child_str.to_string());
            }
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(files)
}

/// The `key=value` strings of an ELF64 module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 file".to_string());
    }
    let truncated = || "truncated ELF headers".to_string();
    let shoff = usize::try_from(u64_at(0x28).ok_or_else(truncated)?).map_err(|_| truncated())?;
    let shentsize = usize::from(u16_at(0x3a).ok_or_else(truncated)?);
    let shnum = usize::from(u16_at(0x3c).ok_or_else(truncated)?);
    let shstrndx = usize::from(u16_at(0x3e).ok_or_else(truncated)?);
    if shentsize < 0x40 {
        return Err("bad section header size".to_string());
    }
    // (name offset, file offset, size) of section `i`.
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let base = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = u32_at(base)? as usize;
        let offset = usize::try_from(u64_at(base + 24)?).ok()?;
        let size = usize::try_from(u64_at(base + 32)?).ok()?;
        Some((name, offset, size))
    };
    let bytes_of = |offset: usize, size: usize| elf.get(offset..offset.checked_add(size)?);
    let (_, str_off, str_size) = section(shstrndx).ok_or_else(truncated)?;
    let names = bytes_of(str_off, str_size).ok_or_else(truncated)?;
    for i in 0..shnum {
        let (name_off, offset, size) = section(i).ok_or_else(truncated)?;
        let name = names
            .get(name_off..)
            .and_then(|n| n.split(|&b| b == 0).next())
            .unwrap_or_default();
        if name != b".modinfo" {
            continue;
        }
        let data = bytes_of(offset, size).ok_or_else(truncated)?;
        return Ok(data
            .split(|&b| b == 0)
            .filter_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect());
    }
    Err("no .modinfo section".to_string())
}

/// A minimal ELF64 relocatable module whose `.modinfo` holds `info`.
#[cfg(test)]
pub(crate) fn fake_ko(info: &[&str]) -> Vec<u8> {
    let mut modinfo = Vec::new();
    for kv in info {
        modinfo.extend_from_slice(kv.as_bytes());
        modinfo.push(0);
    }
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[6] = 1;
    elf[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    let modinfo_off = elf.len();
    elf.extend_from_slice(&modinfo);
    let str_off = elf.len();
    elf.extend_from_slice(shstrtab);
    while !elf.len().is_multiple_of(8) {
        elf.push(0);
    }
    let shoff = elf.len();
    let mut sh = |name: u32, offset: usize, size: usize| {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[24..32].copy_from_slice(&(offset as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        elf.extend_from_slice(&h);
    };
    sh(0, 0, 0);
    sh(1, modinfo_off, modinfo.len());
    sh(10, str_off, shstrtab.len());
    elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    elf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::process::Command;

    /// The shape of Debian 6.1's modules.dep for the modules lab loads.
    const DEBIAN_61: &str = "\
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:

kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/net/vmw_vsock/vsock.ko
kernel/fs/fuse/virtio-fs.ko.xz: kernel/drivers/virtio/virtio.ko
";

    #[test]
    fn load_order_puts_dependencies_first_once() {
        let dep = ModulesDep::parse(DEBIAN_61).unwrap();
        assert_eq!(dep.len(), 7);
        let wanted = [
            "virtio_mmio",
            "vsock",
            "vmw_vsock_virtio_transport_common",
            "vmw-vsock-virtio-transport",
        ];
        let order: Vec<String> = dep
            .load_order(&wanted)
            .unwrap()
            .iter()
            .map(|p| module_name(p))
            .collect();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio",
                "virtio_mmio",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport"
            ]
        );
        // Asking for the last one alone yields the same closure.
        let alone = dep.load_order(&["vmw_vsock_virtio_transport"]).unwrap();
        assert_eq!(alone.len(), 5);
        assert_eq!(
            alone.last().unwrap(),
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko"
        );
        assert_eq!(
            dep.path("virtio_fs"),
            Some("kernel/fs/fuse/virtio-fs.ko.xz")
        );
        assert_eq!(
            dep.load_order(&["virtio-fs", "virtio_fs"]).unwrap(),
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/fs/fuse/virtio-fs.ko.xz"
            ]
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases = [
            ("a.ko:\nno colon here\n", 2, "missing ':'"),
            ("a.ko:\n\n: b.ko\n", 3, "malformed module path"),
            ("a b.ko: c.ko\n", 1, "malformed module path"),
            ("a.txt:\n", 1, "not a module file"),
            ("a.ko: b.txt\n", 1, "dependency 'b.txt'"),
            ("x/a.ko:\ny/a.ko:\n", 2, "listed twice"),
            ("x/a-b.ko:\ny/a_b.ko.xz:\n", 2, "listed twice"),
        ];
        for (text, want_line, want_reason) in cases {
            match ModulesDep::parse(text) {
                Err(ModulesError::Parse { line, reason }) => {
                    assert_eq!(line, want_line, "{text:?}");
                    assert!(reason.contains(want_reason), "{text:?}: {reason}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(ModulesDep::parse("").unwrap().is_empty());
        assert!(ModulesDep::parse("\n  \n").unwrap().is_empty());
    }

    #[test]
    fn missing_modules_and_cycles_are_errors() {
        let dep = ModulesDep::parse("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\nd.ko: e.ko\n").unwrap();
        assert!(matches!(
            dep.load_order(&["a"]),
            Err(ModulesError::Cycle(_))
        ));
        assert!(matches!(dep.load_order(&["d"]), Err(ModulesError::Missing(m)) if m == "e"));
        assert!(matches!(dep.load_order(&["zz"]), Err(ModulesError::Missing(m)) if m == "zz"));
        let self_loop = ModulesDep::parse("a.ko: a.ko\n").unwrap();
        assert!(matches!(self_loop.load_order(&["a"]), Err(ModulesError::Cycle(m)) if m == "a"));
    }

    #[test]
    fn module_names_drop_dirs_and_suffixes() {
        let cases = [
            ("kernel/net/vmw_vsock/vsock.ko.xz", "vsock"),
            ("kernel/fs/fuse/virtio-fs.ko", "virtio_fs"),
            ("a/b/c-d.ko.gz", "c_d"),
            ("x.ko.zst", "x"),
            ("plain", "plain"),
            ("/abs/virtio_ring.ko", "virtio_ring"),
        ];
        for (path, want) in cases {
            assert_eq!(module_name(path), want, "{path}");
        }
    }

    #[test]
    fn builtin_modules_are_told_from_missing_ones() {
        let builtin = ModulesBuiltin::parse(
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n\n",
        );
        let dep = ModulesDep::parse(DEBIAN_61).unwrap();
        assert!(builtin.contains("virtio"));
        assert_eq!(
            builtin.names().collect::<Vec<_>>(),
            ["virtio", "virtio_ring"]
        );
        let got = classify(
            &dep,
            &builtin,
            &["virtio_ring", "virtio", "vsock", "nope", "vsock"],
        );
        assert_eq!(got.builtin, ["virtio_ring", "virtio"]);
        assert_eq!(got.loadable, ["vsock"]);
        assert_eq!(got.missing, ["nope"]);
    }

    #[test]
    fn unpack_copies_and_decompresses() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let plain = dir.path().join("m.ko");
        fs::write(&plain, &content).unwrap();

        // xz as the kernel's build compresses modules.
        let xz_src = dir.path().join("x.ko");
        fs::write(&xz_src, &content).unwrap();
        let status = Command::new("xz")
            .args(["--check=crc32", "--lzma2=dict=1MiB", "-k"])
            .arg(&xz_src)
            .status()
            .unwrap();
        assert!(status.success());
        let xz = dir.path().join("x.ko.xz");

        let gz = dir.path().join("g.ko.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&content).unwrap();
        enc.finish().unwrap();

        for src in [&plain, &xz, &gz] {
            let dst = dir.path().join("out.ko");
            unpack(src, &dst).unwrap();
            assert_eq!(fs::read(&dst).unwrap(), content, "{}", src.display());
        }

        // zstd as the kernel's build compresses modules (CONFIG_MODULE_COMPRESS_ZSTD).
        let zst_src = dir.path().join("z.ko");
        fs::write(&zst_src, &content).unwrap();
        let status = Command::new("zstd")
            .args(["-T0", "-q", "-k"])
            .arg(&zst_src)
            .status()
            .unwrap();
        assert!(status.success());
        let zst = dir.path().join("z.ko.zst");
        let dst = dir.path().join("out.ko");
        unpack(&zst, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), content);
        let bad = dir.path().join("bad.ko.zst");
        fs::write(&bad, b"whatever").unwrap();
        let err = unpack(&bad, &dir.path().join("bad.ko")).unwrap_err();
        assert!(err.to_string().contains("bad.ko.zst"), "{err}");

        let bad = dir.path().join("bad.ko.xz");
        fs::write(&bad, b"not xz at all").unwrap();
        let err = unpack(&bad, &dir.path().join("bad.ko")).unwrap_err();
        assert!(matches!(err, ModulesError::Unpack { .. }), "{err}");

        let err = unpack(&dir.path().join("missing.ko"), &dir.path().join("o.ko")).unwrap_err();
        assert!(err.to_string().contains("missing.ko"), "{err}");
    }

    #[test]
    fn modinfo_is_read_from_elf() {
        let ko = fake_ko(&[
            "license=GPL",
            "depends=virtio,virtio_ring",
            "name=virtio_mmio",
        ]);
        let info = modinfo(&ko).unwrap();
        assert_eq!(
            info,
            [
                ("license".to_string(), "GPL".to_string()),
                ("depends".to_string(), "virtio,virtio_ring".to_string()),
                ("name".to_string(), "virtio_mmio".to_string()),
            ]
        );
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("empty", Vec::new(), "not a little-endian ELF64"),
            (
                "32-bit",
                {
                    let mut k = ko.clone();
                    k[4] = 1;
                    k
                },
                "not a little-endian ELF64",
            ),
            ("truncated", ko[..ko.len() - 40].to_vec(), "truncated"),
            (
                "no modinfo",
                {
                    let mut k = ko.clone();
                    let i = k.windows(8).position(|w| w == b".modinfo").unwrap();
                    k[i + 1] = b'X';
                    k
                },
                "no .modinfo",
            ),
        ];
        for (what, bytes, want) in cases {
            let err = modinfo(&bytes).unwrap_err();
            assert!(err.contains(want), "{what}: {err}");
        }
    }

    #[test]
    fn dependencies_come_from_modinfo_when_there_is_no_modules_dep() {
        let dir = tempfile::tempdir().unwrap();
        let put = |rel: &str, info: &[&str]| {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            let ko = fake_ko(info);
            if rel.ends_with(".xz") {
                let mut out = Vec::new();
                lzma_rs::xz_compress(&mut &ko[..], &mut out).unwrap();
                fs::write(&path, out).unwrap();
            } else {
                fs::write(&path, ko).unwrap();
            }
        };
        put("kernel/drivers/virtio/virtio_ring.ko.xz", &["depends="]);
        put(
            "kernel/drivers/virtio/virtio.ko.xz",
            &["depends=virtio_ring"],
        );
        put(
            "kernel/drivers/virtio/virtio_mmio.ko.xz",
            &["depends=virtio_ring,virtio"],
        );
        put("kernel/net/vmw_vsock/vsock.ko.xz", &["depends="]);
        put(
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz",
            &["depends=vsock"],
        );
        put(
            "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.xz",
            &["depends=virtio,vmw_vsock_virtio_transport_common,virtio_ring,vsock"],
        );
        put("kernel/fs/unrelated.ko", &["depends=nothing_here"]);
        fs::write(dir.path().join("modules.order"), "whatever\n").unwrap();
        let wanted = [
            "virtio_mmio",
            "vsock",
            "vmw_vsock_virtio_transport_common",
            "vmw_vsock_virtio_transport",
            "absent",
        ];
        let dep = ModulesDep::from_tree(dir.path(), &wanted).unwrap();
        assert_eq!(dep.len(), 6, "only the closure is read");
        let order: Vec<String> = dep
            .load_order(&wanted[..4])
            .unwrap()
            .iter()
            .map(|p| module_name(p))
            .collect();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio",
                "virtio_mmio",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport"
            ]
        );
        assert!(matches!(
            dep.load_order(&["absent"]),
            Err(ModulesError::Missing(_))
        ));
        // Its text form parses back to the same graph.
        let again = ModulesDep::parse(&dep.to_text()).unwrap();
        assert_eq!(
            again.load_order(&wanted[..4]).unwrap(),
            dep.load_order(&wanted[..4]).unwrap()
        );
        assert!(dep.to_text().starts_with(
            "kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz\n"
        ));

        // A module that is not ELF is named.
        fs::write(dir.path().join("kernel/bad.ko"), b"junk").unwrap();
        let err = ModulesDep::from_tree(dir.path(), &["bad"]).unwrap_err();
        assert!(err.to_string().contains("bad.ko"), "{err}");
    }
}
