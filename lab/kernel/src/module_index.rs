//! A kernel's loadable modules as depmod sees them: every module with its file, dependencies,
//! aliases and soft dependencies, read from the modules' own `.modinfo` (Debian's image
//! packages ship no `modules.dep`; depmod runs when they are installed). From it come the
//! index files a guest's `modprobe` reads (`modules.dep`, `modules.alias`, `modules.softdep`,
//! `modules.builtin`, in kmod's text formats), the load order of modules asked for by name or
//! alias, and the one file a guest may fetch for each module.
//!
//! Paths in the guest's index are the tree's with the compression suffix dropped
//! (`kernel/drivers/net/veth.ko`): lab decompresses on the host, so a guest only ever sees
//! plain `.ko` files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::modules::{modinfo, module_files, normalise, read_module, ModulesError, SUFFIXES};
use lab_proto::glob::glob_match;

/// The format version of the index file; bump it when its meaning changes.
pub const INDEX_VERSION: u32 = 1;

/// How deep module dependencies may nest before lab calls them a cycle.
const MAX_DEPTH: usize = 64;

/// One loadable module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleEntry {
    /// Its file, relative to the module tree (as in the package: `kernel/…/veth.ko.xz`).
    pub path: String,
    /// Modules it needs loaded first (`depends=`), normalised names.
    pub depends: Vec<String>,
    /// Its aliases (`alias=`), glob patterns as modinfo gives them.
    pub aliases: Vec<String>,
    /// Soft dependencies loaded before it (`softdep=pre: …`).
    pub softdep_pre: Vec<String>,
    /// Soft dependencies loaded after it (`softdep=post: …`).
    pub softdep_post: Vec<String>,
}

impl ModuleEntry {
    /// Its path in a guest's tree: the tree path without a compression suffix.
    pub fn guest_path(&self) -> String {
        plain_path(&self.path)
    }
}

/// `kernel/x.ko.xz` → `kernel/x.ko`.
fn plain_path(path: &str) -> String {
    for suffix in SUFFIXES {
        if let Some(stem) = path.strip_suffix(suffix) {
            return format!("{stem}.ko");
        }
    }
    path.to_string()
}

/// A kernel's modules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleIndex {
    /// [`INDEX_VERSION`] when written.
    pub version: u32,
    /// The kernel release the tree belongs to.
    pub release: String,
    /// Loadable modules by normalised name.
    pub modules: BTreeMap<String, ModuleEntry>,
    /// Built-in modules (`modules.builtin`), normalised names.
    pub builtin: BTreeSet<String>,
}

/// What a name given to modprobe stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// These loadable modules (a name gives one; an alias may match several).
    Modules(Vec<String>),
    /// A module built into the kernel: nothing to load.
    Builtin,
    /// Nothing this kernel has.
    Unknown,
}

impl ModuleIndex {
    /// Reads every module under `tree` (`lib/modules/<release>`): names, dependencies,
    /// aliases and soft dependencies from `.modinfo`; built-ins from `builtin`, the text of
    /// `modules.builtin` (empty when there is none).
    pub fn build(tree: &Path, release: &str, builtin: &str) -> Result<Self, ModulesError> {
        let files = module_files(tree)?;
        let mut modules = BTreeMap::new();
        for (name, rel) in files {
            let path = tree.join(&rel);
            let bytes = read_module(&path)?;
            let info = modinfo(&bytes).map_err(|reason| ModulesError::Modinfo {
                path: path.clone(),
                reason,
            })?;
            modules.insert(name, entry_from_modinfo(rel, &info));
        }
        let builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(crate::modules::module_name)
            .collect();
        Ok(Self {
            version: INDEX_VERSION,
            release: release.to_string(),
            modules,
            builtin,
        })
    }

    /// Loads an index written by [`ModuleIndex::save`]; `None` if it is missing, unreadable
    /// or of another version (the caller rebuilds it).
    pub fn load(path: &Path) -> Option<Self> {
        let text = fs::read(path).ok()?;
        let index: Self = serde_json::from_slice(&text).ok()?;
        (index.version == INDEX_VERSION).then_some(index)
    }

    /// Writes the index to `path` (through a temporary file beside it).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.partial");
        fs::write(&tmp, text)?;
        fs::rename(tmp, path)
    }

    /// The entry of module `name` (`-` and `_` alike).
    pub fn get(&self, name: &str) -> Option<&ModuleEntry> {
        self.modules.get(&normalise(name))
    }

    /// The module whose guest path is `guest_path`.
    pub fn by_guest_path(&self, guest_path: &str) -> Option<(&str, &ModuleEntry)> {
        let name = crate::modules::module_name(guest_path);
        let entry = self.modules.get(&name)?;
        (entry.guest_path() == guest_path).then_some((name_key(&self.modules, &name), entry))
    }

    /// What `name` stands for: a module, the modules whose aliases match it, or a built-in
    /// module, in kmod's order (module names first, then aliases, then built-ins).
    pub fn resolve(&self, name: &str) -> Resolved {
        let norm = normalise(name);
        if self.modules.contains_key(&norm) {
            return Resolved::Modules(vec![norm]);
        }
        let matched: Vec<String> = self
            .modules
            .iter()
            .filter(|(_, e)| e.aliases.iter().any(|a| glob_match(a, name)))
            .map(|(n, _)| n.clone())
            .collect();
        if !matched.is_empty() {
            return Resolved::Modules(matched);
        }
        if self.builtin.contains(&norm) {
            return Resolved::Builtin;
        }
        Resolved::Unknown
    }

    /// The modules to load for `names` (module names or aliases), each once, in load order:
    /// for each, its soft pre-dependencies, its dependencies (depth first), itself, then its
    /// soft post-dependencies. Built-in names are skipped; an unknown one is an error.
    pub fn load_order(&self, names: &[&str]) -> Result<Vec<String>, ModulesError> {
        let mut order = Vec::new();
        let mut seen = HashMap::new();
        for name in names {
            match self.resolve(name) {
                Resolved::Modules(mods) => {
                    for m in mods {
                        self.visit(&m, &mut seen, &mut order, 0)?;
                    }
                }
                Resolved::Builtin => {}
                Resolved::Unknown => return Err(ModulesError::Missing(name.to_string())),
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashMap<String, bool>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), ModulesError> {
        match seen.get(name) {
            Some(true) => return Ok(()),
            Some(false) => return Err(ModulesError::Cycle(name.to_string())),
            None if depth > MAX_DEPTH => return Err(ModulesError::Cycle(name.to_string())),
            None => {}
        }
        let Some(entry) = self.modules.get(name) else {
            // A soft dependency or a dependency on a built-in module: nothing to load.
            if self.builtin.contains(name) {
                return Ok(());
            }
            return Err(ModulesError::Missing(name.to_string()));
        };
        seen.insert(name.to_string(), false);
        for pre in &entry.softdep_pre {
            // Soft dependencies are best effort, as in kmod: missing ones are skipped.
            if self.modules.contains_key(&normalise(pre)) && !seen.contains_key(&normalise(pre)) {
                self.visit(&normalise(pre), seen, order, depth + 1)?;
            }
        }
        for dep in &entry.depends {
            self.visit(dep, seen, order, depth + 1)?;
        }
        seen.insert(name.to_string(), true);
        order.push(name.to_string());
        for post in &entry.softdep_post {
            if self.modules.contains_key(&normalise(post)) && !seen.contains_key(&normalise(post)) {
                self.visit(&normalise(post), seen, order, depth + 1)?;
            }
        }
        Ok(())
    }

    /// `modules.dep` in kmod's format for the guest: each module's path, then every module it
    /// needs (transitively), the one to load first last.
    pub fn modules_dep(&self) -> String {
        let mut out = String::new();
        for (name, entry) in &self.modules {
            out.push_str(&entry.guest_path());
            out.push(':');
            let mut deps = Vec::new();
            let mut seen = HashMap::new();
            for dep in &entry.depends {
                // A broken chain leaves the line shorter; modprobe then reports the failure.
                let _ = self.visit_hard(dep, &mut seen, &mut deps, 0);
            }
            for dep in deps.iter().rev().filter(|d| *d != name) {
                if let Some(e) = self.modules.get(dep) {
                    out.push(' ');
                    out.push_str(&e.guest_path());
                }
            }
            out.push('\n');
        }
        out
    }

    /// Depth-first over hard dependencies only (for modules.dep lines).
    fn visit_hard(
        &self,
        name: &str,
        seen: &mut HashMap<String, bool>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), ModulesError> {
        if seen.contains_key(name) {
            return Ok(());
        }
        if depth > MAX_DEPTH {
            return Err(ModulesError::Cycle(name.to_string()));
        }
        seen.insert(name.to_string(), true);
        if let Some(entry) = self.modules.get(name) {
            for dep in &entry.depends {
                self.visit_hard(dep, seen, order, depth + 1)?;
            }
            order.push(name.to_string());
        }
        Ok(())
    }

    /// `modules.alias` in kmod's format: `alias PATTERN MODULE`, one per alias.
    pub fn modules_alias(&self) -> String {
        let mut out = String::from("# Aliases extracted from modules themselves.\n");
        for (name, entry) in &self.modules {
            for alias in &entry.aliases {
                out.push_str(&format!("alias {alias} {name}\n"));
            }
        }
        out
    }

    /// `modules.softdep` in kmod's format.
    pub fn modules_softdep(&self) -> String {
        let mut out = String::from("# Soft dependencies extracted from modules themselves.\n");
        for (name, entry) in &self.modules {
            if entry.softdep_pre.is_empty() && entry.softdep_post.is_empty() {
                continue;
            }
            out.push_str(&format!("softdep {name}"));
            if !entry.softdep_pre.is_empty() {
                out.push_str(&format!(" pre: {}", entry.softdep_pre.join(" ")));
            }
            if !entry.softdep_post.is_empty() {
                out.push_str(&format!(" post: {}", entry.softdep_post.join(" ")));
            }
            out.push('\n');
        }
        out
    }

    /// `modules.builtin`: one line per built-in module (`kernel/<name>.ko`; modprobe only
    /// needs the name).
    pub fn modules_builtin(&self) -> String {
        self.builtin
            .iter()
            .map(|n| format!("kernel/{n}.ko\n"))
            .collect()
    }
}

/// The map's own key for `name` (borrowed from the map, so it outlives the lookup).
fn name_key<'a>(modules: &'a BTreeMap<String, ModuleEntry>, name: &str) -> &'a str {
    modules
        .get_key_value(name)
        .map(|(k, _)| k.as_str())
        .unwrap_or_default()
}

/// A module's entry from its modinfo pairs.
fn entry_from_modinfo(path: String, info: &[(String, String)]) -> ModuleEntry {
    fn values<'a>(
        info: &'a [(String, String)],
        key: &'a str,
    ) -> impl Iterator<Item = &'a String> + 'a {
        info.iter().filter(move |(k, _)| k == key).map(|(_, v)| v)
    }
    let mut depends: Vec<String> = values(info, "depends")
        .flat_map(|v| v.split(','))
        .filter(|d| !d.is_empty())
        .map(normalise)
        .collect();
    depends.sort();
    depends.dedup();
    let aliases = values(info, "alias").cloned().collect();
    let (mut pre, mut post) = (Vec::new(), Vec::new());
    for softdep in values(info, "softdep") {
        parse_softdep(softdep, &mut pre, &mut post);
    }
    ModuleEntry {
        path,
        depends,
        aliases,
        softdep_pre: pre,
        softdep_post: post,
    }
}

/// `pre: a b post: c` (either part optional) into its two lists.
fn parse_softdep(text: &str, pre: &mut Vec<String>, post: &mut Vec<String>) {
    let mut into: Option<&mut Vec<String>> = None;
    for word in text.split_whitespace() {
        match word {
            "pre:" => into = Some(pre),
            "post:" => into = Some(post),
            name => {
                if let Some(list) = into.as_deref_mut() {
                    list.push(normalise(name));
                }
            }
        }
    }
}

/// An installed kernel's module tree with its index: what lab serves guests.
#[derive(Debug, Clone)]
pub struct ModuleSource {
    tree: PathBuf,
    plain: PathBuf,
    index: std::sync::Arc<ModuleIndex>,
}

impl ModuleSource {
    /// The tree at `tree` with `index`; decompressed copies are kept under `plain`.
    pub fn new(tree: PathBuf, plain: PathBuf, index: ModuleIndex) -> Self {
        Self {
            tree,
            plain,
            index: std::sync::Arc::new(index),
        }
    }

    /// The index.
    pub fn index(&self) -> &ModuleIndex {
        &self.index
    }

    /// The decompressed content of the module at `guest_path` (as in the guest's modules.dep).
    /// Only modules of the index are served: a guest cannot name any other host file.
    pub fn read(&self, guest_path: &str) -> Result<Vec<u8>, ModulesError> {
        let (name, entry) = self
            .index
            .by_guest_path(guest_path)
            .ok_or_else(|| ModulesError::Missing(guest_path.to_string()))?;
        let _ = name;
        read_module(&self.tree.join(&entry.path))
    }

    /// A plain `.ko` file of module `name` on the host, for an initramfs: the tree's own file
    /// when it is not compressed, otherwise a decompressed copy made once under the plain
    /// directory.
    pub fn plain_file(&self, name: &str) -> Result<PathBuf, ModulesError> {
        let entry = self
            .index
            .get(name)
            .ok_or_else(|| ModulesError::Missing(name.to_string()))?;
        let src = self.tree.join(&entry.path);
        if entry.path.ends_with(".ko") {
            return Ok(src);
        }
        let dst = self.plain.join(entry.guest_path());
        if dst.is_file() {
            return Ok(dst);
        }
        let io = |source| ModulesError::Unpack {
            path: dst.clone(),
            source,
        };
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = dst.with_extension("ko.partial");
        crate::modules::unpack(&src, &tmp)?;
        fs::rename(&tmp, &dst).map_err(io)?;
        Ok(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::fake_ko;

    fn tree(dir: &Path, modules: &[(&str, &[&str])]) {
        for (path, info) in modules {
            let file = dir.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(&file, fake_ko(info)).unwrap();
        }
    }

    fn sample() -> (tempfile::TempDir, ModuleIndex) {
        let dir = tempfile::tempdir().unwrap();
        tree(
            dir.path(),
            &[
                (
                    "kernel/virt/lib/irqbypass.ko",
                    &["name=irqbypass", "depends="],
                ),
                (
                    "kernel/arch/x86/kvm/kvm.ko",
                    &[
                        "name=kvm",
                        "depends=irqbypass",
                        "alias=devname:kvm",
                        "alias=char-major-10-232",
                    ],
                ),
                (
                    "kernel/arch/x86/kvm/kvm-amd.ko",
                    &[
                        "name=kvm_amd",
                        "depends=kvm",
                        "alias=cpu:type:x86,ven*fam*mod*:feature:*0041*",
                    ],
                ),
                (
                    "kernel/drivers/net/veth.ko",
                    &["name=veth", "depends=", "alias=rtnl-link-veth"],
                ),
                (
                    "kernel/net/sched/sch_ingress.ko",
                    &[
                        "name=sch_ingress",
                        "alias=sch_clsact",
                        "alias=sch_ingress",
                        "softdep=pre: veth",
                    ],
                ),
            ],
        );
        let index =
            ModuleIndex::build(dir.path(), "6.1.0-test", "kernel/net/ipv4/tcp_cubic.ko\n").unwrap();
        (dir, index)
    }

    #[test]
    fn the_index_reads_names_dependencies_aliases_and_softdeps() {
        let (_dir, index) = sample();
        assert_eq!(index.modules.len(), 5);
        let kvm_amd = index.get("kvm-amd").unwrap();
        assert_eq!(kvm_amd.path, "kernel/arch/x86/kvm/kvm-amd.ko");
        assert_eq!(kvm_amd.depends, ["kvm"]);
        assert_eq!(index.get("sch_ingress").unwrap().softdep_pre, ["veth"]);
        assert!(index.builtin.contains("tcp_cubic"));
    }

    #[test]
    fn names_and_aliases_resolve_like_modprobe() {
        let (_dir, index) = sample();
        assert_eq!(
            index.resolve("kvm-amd"),
            Resolved::Modules(vec!["kvm_amd".into()])
        );
        assert_eq!(
            index.resolve("rtnl-link-veth"),
            Resolved::Modules(vec!["veth".into()])
        );
        assert_eq!(
            index.resolve("devname:kvm"),
            Resolved::Modules(vec!["kvm".into()])
        );
        assert_eq!(
            index.resolve("cpu:type:x86,ven0002fam0019mod0001:feature:,0041,0042"),
            Resolved::Modules(vec!["kvm_amd".into()])
        );
        assert_eq!(index.resolve("tcp_cubic"), Resolved::Builtin);
        assert_eq!(index.resolve("no-such-thing"), Resolved::Unknown);
    }

    #[test]
    fn load_order_puts_dependencies_and_pre_softdeps_first() {
        let (_dir, index) = sample();
        assert_eq!(
            index.load_order(&["kvm_amd", "sch_clsact", "kvm"]).unwrap(),
            ["irqbypass", "kvm", "kvm_amd", "veth", "sch_ingress"]
        );
        assert!(index.load_order(&["tcp_cubic"]).unwrap().is_empty());
        assert!(matches!(
            index.load_order(&["nope"]),
            Err(ModulesError::Missing(n)) if n == "nope"
        ));
    }

    #[test]
    fn cycles_are_errors_not_hangs() {
        let dir = tempfile::tempdir().unwrap();
        tree(
            dir.path(),
            &[
                ("kernel/a.ko", &["name=a", "depends=b"]),
                ("kernel/b.ko", &["name=b", "depends=a"]),
            ],
        );
        let index = ModuleIndex::build(dir.path(), "r", "").unwrap();
        assert!(matches!(
            index.load_order(&["a"]),
            Err(ModulesError::Cycle(_))
        ));
        // The index files are still written (a broken chain is modprobe's to report).
        assert!(index.modules_dep().contains("kernel/a.ko:"));
    }

    #[test]
    fn the_guest_index_files_are_in_kmods_formats_with_plain_paths() {
        let dir = tempfile::tempdir().unwrap();
        tree(
            dir.path(),
            &[("kernel/virt/lib/irqbypass.ko", &["name=irqbypass"])],
        );
        let xz_src = dir.path().join("kernel/arch/x86/kvm/kvm.ko");
        fs::create_dir_all(xz_src.parent().unwrap()).unwrap();
        fs::write(
            &xz_src,
            fake_ko(&["name=kvm", "depends=irqbypass", "alias=devname:kvm"]),
        )
        .unwrap();
        let status = std::process::Command::new("xz")
            .arg(&xz_src)
            .status()
            .unwrap();
        assert!(status.success());
        tree(
            dir.path(),
            &[(
                "kernel/arch/x86/kvm/kvm-amd.ko",
                &["name=kvm_amd", "depends=kvm"],
            )],
        );
        let index = ModuleIndex::build(dir.path(), "r", "").unwrap();
        assert_eq!(
            index.get("kvm").unwrap().path,
            "kernel/arch/x86/kvm/kvm.ko.xz"
        );
        let dep = index.modules_dep();
        assert!(
            dep.contains("kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko\n"),
            "{dep}"
        );
        assert!(dep.contains("kernel/virt/lib/irqbypass.ko:\n"), "{dep}");
        assert!(index.modules_alias().contains("alias devname:kvm kvm\n"));

        let plain = tempfile::tempdir().unwrap();
        let source = ModuleSource::new(dir.path().into(), plain.path().into(), index);
        let kvm = source.read("kernel/arch/x86/kvm/kvm.ko").unwrap();
        assert!(kvm.starts_with(b"\x7fELF"));
        // Only indexed modules, by their guest path.
        assert!(source.read("kernel/arch/x86/kvm/kvm.ko.xz").is_err());
        assert!(source.read("../../etc/passwd").is_err());
        let file = source.plain_file("kvm").unwrap();
        assert!(file.starts_with(plain.path()));
        assert_eq!(fs::read(&file).unwrap(), kvm);
        assert_eq!(
            source.plain_file("irqbypass").unwrap(),
            dir.path().join("kernel/virt/lib/irqbypass.ko")
        );
    }

    #[test]
    fn the_index_round_trips_and_refuses_other_versions() {
        let (dir, index) = sample();
        let path = dir.path().join("index.json");
        index.save(&path).unwrap();
        assert_eq!(ModuleIndex::load(&path).unwrap(), index);
        let mut old = index.clone();
        old.version = 0;
        old.save(&path).unwrap();
        assert!(ModuleIndex::load(&path).is_none());
        fs::write(&path, "{").unwrap();
        assert!(ModuleIndex::load(&path).is_none());
    }
}
