//! The guest's `modprobe`: guest-init run as `/sbin/modprobe` (the program the kernel runs for
//! `request_module`, and the one users call). It reads the module index lab puts in the image
//! (`modules.dep`, `modules.alias`, `modules.softdep`, `modules.builtin` in kmod's text
//! formats), resolves a name or an alias, and loads the module after its dependencies. A module
//! whose file the image does not carry is fetched from lab over the agent channel (through
//! PID 1's [`FETCH_SOCKET`]), so a guest can load any module of its kernel without the whole
//! tree in its initramfs.
//!
//! The command line and messages follow kmod's modprobe where they overlap: `-q`, `-v`, `-n`,
//! `-a`, `-r`, `-D`/`--show-depends`, `-b`, `-s`, `--first-time`, module parameters after the
//! name; exit status 1 on failure.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use lab_proto::glob::glob_match;
use std::path::Path;
use std::time::Duration;

use crate::sys;

/// Where PID 1 takes module fetches from local modprobe processes.
pub const FETCH_SOCKET: &str = "/run/lab/modprobe.sock";

/// How long a fetch through PID 1 may take (a module of a few MiB over the agent channel of a
/// guest under emulation on a loaded host).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// How deep dependencies may nest before the chain counts as a cycle.
const MAX_DEPTH: usize = 64;

/// The module index of one kernel release, as the image carries it.
#[derive(Debug, Default)]
pub struct ModDb {
    /// `/lib/modules/<release>`.
    pub dir: String,
    /// Module name → (its path, the paths it needs) from modules.dep.
    deps: HashMap<String, (String, Vec<String>)>,
    /// Module names in modules.dep order.
    order: Vec<String>,
    /// (pattern, module) from modules.alias.
    aliases: Vec<(String, String)>,
    /// Module → (pre, post) soft dependencies.
    softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
    /// Built-in module names.
    builtin: HashSet<String>,
}

/// What a name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// These modules.
    Modules(Vec<String>),
    /// A built-in module.
    Builtin,
    /// Nothing known.
    Unknown,
}

/// `-` and `_` are the same in module names.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// A module's name from its path (`kernel/drivers/net/veth.ko` → `veth`).
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    normalise(stem)
}

impl ModDb {
    /// Reads the index of `release` (missing files leave their part empty).
    pub fn load(release: &str) -> Self {
        let dir = format!("/lib/modules/{release}");
        let read =
            |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).unwrap_or_default();
        Self::parse(
            &dir,
            &read("modules.dep"),
            &read("modules.alias"),
            &read("modules.softdep"),
            &read("modules.builtin"),
        )
    }

    /// Parses the four index files' texts.
    pub fn parse(dir: &str, dep: &str, alias: &str, softdep: &str, builtin: &str) -> Self {
        let mut db = Self {
            dir: dir.to_string(),
            ..Self::default()
        };
        for line in dep.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let name = name_of(path);
            let needs = rest.split_whitespace().map(str::to_string).collect();
            if db
                .deps
                .insert(name.clone(), (path.to_string(), needs))
                .is_none()
            {
                db.order.push(name);
            }
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                db.aliases.push((pattern.to_string(), normalise(module)));
            }
        }
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let (mut pre, mut post) = (Vec::new(), Vec::new());
            let mut into: Option<&mut Vec<String>> = None;
            for w in words {
                match w {
                    "pre:" => into = Some(&mut pre),
                    "post:" => into = Some(&mut post),
                    m => {
                        if let Some(list) = into.as_deref_mut() {
                            list.push(normalise(m));
                        }
                    }
                }
            }
            db.softdeps.insert(normalise(module), (pre, post));
        }
        db.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(name_of)
            .collect();
        db
    }

    /// Every module of modules.dep, in its order.
    pub fn all(&self) -> &[String] {
        &self.order
    }

    /// What `name` stands for: a module, modules whose aliases match, or a built-in one.
    pub fn resolve(&self, name: &str) -> Resolved {
        let norm = normalise(name);
        if self.deps.contains_key(&norm) {
            return Resolved::Modules(vec![norm]);
        }
        let mut matched = Vec::new();
        for (pattern, module) in &self.aliases {
            if glob_match(pattern, name) && !matched.contains(module) {
                matched.push(module.clone());
            }
        }
        if !matched.is_empty() {
            return Resolved::Modules(matched);
        }
        if self.builtin.contains(&norm) {
            return Resolved::Builtin;
        }
        Resolved::Unknown
    }

    /// The modules to load for `module`, in order (soft pre-dependencies, dependencies, the
    /// module, soft post-dependencies), each once; unknown soft dependencies are skipped as
    /// kmod skips them.
    pub fn plan(&self, module: &str) -> Result<Vec<String>, String> {
        let mut order = Vec::new();
        let mut seen = HashMap::new();
        self.visit(module, &mut seen, &mut order, 0)?;
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashMap<String, bool>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), String> {
        match seen.get(name) {
            Some(true) => return Ok(()),
            Some(false) => return Err(format!("dependency cycle through {name}")),
            None if depth > MAX_DEPTH => return Err(format!("dependency cycle through {name}")),
            None => {}
        }
        let Some((_, needs)) = self.deps.get(name) else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            return Err(format!("module {name} not found in {}", self.dir));
        };
        seen.insert(name.to_string(), false);
        let (pre, post) = self.softdeps.get(name).cloned().unwrap_or_default();
        for soft in &pre {
            if self.deps.contains_key(soft) && !seen.contains_key(soft) {
                self.visit(soft, seen, order, depth + 1)?;
            }
        }
        // modules.dep lists what to load first last.
        for dep in needs.iter().rev() {
            self.visit(&name_of(dep), seen, order, depth + 1)?;
        }
        seen.insert(name.to_string(), true);
        order.push(name.to_string());
        for soft in &post {
            if self.deps.contains_key(soft) && !seen.contains_key(soft) {
                self.visit(soft, seen, order, depth + 1)?;
            }
        }
        Ok(())
    }

    /// The file of module `name` under the module directory.
    pub fn path(&self, name: &str) -> Option<String> {
        self.deps
            .get(name)
            .map(|(path, _)| format!("{}/{path}", self.dir))
    }

    /// Its path as in modules.dep (what a fetch asks lab for).
    pub fn rel_path(&self, name: &str) -> Option<&str> {
        self.deps.get(name).map(|(path, _)| path.as_str())
    }
}

/// Whether module `name` is loaded (or being loaded).
pub fn is_loaded(name: &str) -> bool {
    Path::new(&format!("/sys/module/{name}/initstate")).exists()
}

/// Where a module file the image lacks comes from.
pub trait Fetch {
    /// Makes the file of the module at `rel` (as in modules.dep) exist under the module
    /// directory.
    fn fetch(&self, rel: &str) -> io::Result<()>;
}

/// No fetching: only what the image carries (at boot, before the agent channel is up).
#[derive(Debug)]
pub struct LocalOnly;

impl Fetch for LocalOnly {
    fn fetch(&self, rel: &str) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{rel} is not in the image"),
        ))
    }
}

/// Fetches through PID 1, which asks lab over the agent channel.
#[derive(Debug)]
pub struct FromLab;

impl Fetch for FromLab {
    fn fetch(&self, rel: &str) -> io::Result<()> {
        let mut stream = UnixStream::connect(FETCH_SOCKET).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{rel} is not in the image and lab's agent cannot be reached ({e})"),
            )
        })?;
        stream.set_read_timeout(Some(FETCH_TIMEOUT))?;
        writeln!(stream, "{rel}")?;
        let mut reply = String::new();
        BufReader::new(io::Read::take(stream, 4096)).read_line(&mut reply)?;
        match reply.trim_end().split_once(' ') {
            _ if reply.trim_end() == "ok" => Ok(()),
            Some(("error", why)) => Err(io::Error::other(why.to_string())),
            _ => Err(io::Error::other(format!(
                "no answer from lab's agent for {rel}"
            ))),
        }
    }
}

/// Loads module `name` (already resolved to a module) with its dependencies; `params` go to
/// `name` itself. Returns the modules loaded.
pub fn load(
    db: &ModDb,
    name: &str,
    params: &str,
    fetch: &dyn Fetch,
) -> Result<Vec<String>, String> {
    let mut loaded = Vec::new();
    for module in db.plan(name)? {
        if is_loaded(&module) {
            continue;
        }
        let Some(path) = db.path(&module) else {
            // Built in: nothing to load.
            continue;
        };
        if !Path::new(&path).exists() {
            let rel = db.rel_path(&module).unwrap_or_default().to_string();
            fetch
                .fetch(&rel)
                .map_err(|e| format!("could not fetch '{module}': {e}"))?;
        }
        let args = if module == name { params } else { "" };
        let file = File::open(&path).map_err(|e| format!("could not open '{path}': {e}"))?;
        match sys::finit_module_with(&file, args) {
            Ok(()) => loaded.push(module),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(format!("could not insert '{module}': {e}")),
        }
    }
    Ok(loaded)
}

/// What the command line asks.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request {
    quiet: bool,
    verbose: bool,
    dry_run: bool,
    remove: bool,
    show_depends: bool,
    first_time: bool,
    all: bool,
    names: Vec<String>,
    params: Vec<String>,
}

fn parse_args(args: &[String]) -> Result<Request, String> {
    let mut req = Request::default();
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--" => {
                rest.extend(iter.by_ref().cloned());
                break;
            }
            "-q" | "--quiet" => req.quiet = true,
            "-v" | "--verbose" => req.verbose = true,
            "-n" | "--dry-run" | "--show" => req.dry_run = true,
            "-r" | "--remove" => req.remove = true,
            "-a" | "--all" => req.all = true,
            "-D" | "--show-depends" => req.show_depends = true,
            "--first-time" => req.first_time = true,
            // Accepted and meaningless here: blacklists, syslog, config files, module dirs.
            "-b" | "--use-blacklist" | "-s" | "--syslog" | "-i" | "--ignore-install"
            | "--ignore-remove" => {}
            "-C" | "--config" | "-d" | "--dirname" | "-S" | "--set-version" => {
                iter.next();
            }
            a if a.starts_with("--config=") || a.starts_with("--dirname=") => {}
            a if a.starts_with('-') && a.len() > 1 && !a.starts_with("--") => {
                // Bundled short options: -qa, -rv …
                for c in a[1..].chars() {
                    match c {
                        'q' => req.quiet = true,
                        'v' => req.verbose = true,
                        'n' => req.dry_run = true,
                        'r' => req.remove = true,
                        'a' => req.all = true,
                        'D' => req.show_depends = true,
                        'b' | 's' | 'i' => {}
                        other => return Err(format!("unknown option -{other}")),
                    }
                }
            }
            a if a.starts_with("--") => return Err(format!("unknown option {a}")),
            a => rest.push(a.to_string()),
        }
    }
    if rest.is_empty() {
        return Err("missing module name".into());
    }
    if req.all || req.remove {
        req.names = rest;
    } else {
        req.names = vec![rest[0].clone()];
        req.params = rest[1..].to_vec();
    }
    Ok(req)
}

/// `modprobe ARGS`: returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let req = match parse_args(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("modprobe: ERROR: {e}");
            return 1;
        }
    };
    let release = sys::kernel_release();
    let db = ModDb::load(&release);
    let mut status = 0;
    for name in &req.names {
        if let Err(e) = one(&db, &req, name) {
            if !e.is_empty() {
                eprintln!("modprobe: {e}");
            }
            status = 1;
        }
    }
    status
}

/// Handles one name of the request; an empty error is a quiet failure.
fn one(db: &ModDb, req: &Request, name: &str) -> Result<(), String> {
    let modules = match db.resolve(name) {
        Resolved::Modules(m) => m,
        Resolved::Builtin if req.remove => {
            return Err(format!("FATAL: Module {name} is builtin."));
        }
        Resolved::Builtin => {
            if req.first_time {
                return Err(format!(
                    "ERROR: could not insert '{name}': Module already in kernel (builtin)"
                ));
            }
            return Ok(());
        }
        Resolved::Unknown if req.quiet => return Err(String::new()),
        Resolved::Unknown => {
            return Err(format!(
                "FATAL: Module {name} not found in directory {}",
                db.dir
            ));
        }
    };
    for module in modules {
        if req.remove {
            remove(&module, req)?;
            continue;
        }
        if req.show_depends || req.dry_run {
            for m in db.plan(&module).map_err(|e| format!("FATAL: {e}"))? {
                let line = match db.path(&m) {
                    Some(p) => format!("insmod {p}"),
                    None => format!("builtin {m}"),
                };
                if req.show_depends || req.verbose {
                    println!("{line}");
                }
            }
            continue;
        }
        if req.first_time && is_loaded(&module) {
            return Err(format!(
                "ERROR: could not insert '{module}': Module already in kernel"
            ));
        }
        let loaded = load(db, &module, &req.params.join(" "), &FromLab)
            .map_err(|e| format!("ERROR: {e}"))?;
        if req.verbose {
            for m in loaded {
                println!("insmod {}", db.path(&m).unwrap_or(m));
            }
        }
    }
    Ok(())
}

fn remove(module: &str, req: &Request) -> Result<(), String> {
    if !is_loaded(module) {
        if req.quiet {
            return Ok(());
        }
        return Err(format!("FATAL: Module {module} is not currently loaded"));
    }
    if req.dry_run {
        return Ok(());
    }
    sys::delete_module(module).map_err(|e| match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EBUSY) => format!("FATAL: Module {module} is in use."),
        _ => format!("FATAL: could not remove '{module}': {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> ModDb {
        ModDb::parse(
            "/lib/modules/r",
            "kernel/virt/lib/irqbypass.ko:\n\
             kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko\n\
             kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko\n\
             kernel/drivers/net/veth.ko:\n\
             kernel/net/sched/sch_ingress.ko:\n",
            "# Aliases\nalias rtnl-link-veth veth\nalias devname:kvm kvm\nalias sch_clsact sch_ingress\n\
             alias cpu:type:x86,ven*fam*mod*:feature:*0041* kvm_amd\n",
            "softdep sch_ingress pre: veth\n",
            "kernel/net/ipv4/tcp_cubic.ko\n",
        )
    }

    #[test]
    fn names_and_aliases_resolve() {
        let db = db();
        assert_eq!(
            db.resolve("kvm-amd"),
            Resolved::Modules(vec!["kvm_amd".into()])
        );
        assert_eq!(
            db.resolve("rtnl-link-veth"),
            Resolved::Modules(vec!["veth".into()])
        );
        assert_eq!(db.resolve("tcp_cubic"), Resolved::Builtin);
        assert_eq!(db.resolve("net-pf-99"), Resolved::Unknown);
        assert_eq!(db.all().len(), 5);
    }

    #[test]
    fn plans_load_dependencies_first() {
        let db = db();
        assert_eq!(db.plan("kvm_amd").unwrap(), ["irqbypass", "kvm", "kvm_amd"]);
        assert_eq!(db.plan("sch_ingress").unwrap(), ["veth", "sch_ingress"]);
        assert!(db.plan("nope").is_err());
        let cyclic = ModDb::parse("/d", "a.ko: b.ko\nb.ko: a.ko\n", "", "", "");
        assert!(cyclic.plan("a").unwrap_err().contains("cycle"));
        assert_eq!(
            db.path("veth").unwrap(),
            "/lib/modules/r/kernel/drivers/net/veth.ko"
        );
    }

    #[test]
    fn the_command_line_reads_like_kmods() {
        let args = |a: &[&str]| parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // The kernel's own request_module call.
        let r = args(&["-q", "--", "net-pf-40"]).unwrap();
        assert!(r.quiet);
        assert_eq!(r.names, ["net-pf-40"]);
        let r = args(&["veth", "debug=1", "x=y"]).unwrap();
        assert_eq!(
            (r.names.clone(), r.params.clone()),
            (vec!["veth".into()], vec!["debug=1".into(), "x=y".into()])
        );
        let r = args(&["-qa", "kvm", "veth"]).unwrap();
        assert!(r.all && r.quiet);
        assert_eq!(r.names, ["kvm", "veth"]);
        assert!(args(&["-r", "veth"]).unwrap().remove);
        assert!(args(&[]).is_err());
        assert!(args(&["-Z", "x"]).is_err());
        assert!(args(&["--bogus", "x"]).is_err());
    }
}
