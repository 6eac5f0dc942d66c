//! Kyuafile loading: evaluates a tree of Kyuafiles (Lua) into the test programs they declare, the
//! way Kyua 0.13 does.
//!
//! A Kyuafile calls `syntax(2)` first (Kyua's older `syntax('kyuafile', 1)` is accepted too), may
//! set the default test suite of its programs with `test_suite('name')`, declares programs with
//! `atf_test_program{}`, `plain_test_program{}`, `tap_test_program{}` and lab's own
//! `bpf_test_program{}`, and pulls in other Kyuafiles with `include('sub/Kyuafile')`. Kyua's
//! helpers are there too: `current_kyuafile()` (the absolute path of the file being evaluated) and
//! the `fs` module (`basename`, `dirname`, `exists`, `files`, `is_absolute`, `join`), whose
//! relative paths are relative to the directory of the file being evaluated.
//!
//! Each file runs in a Lua state of its own, so an included file starts from a fresh environment
//! and inherits nothing, not even the test suite, as in Kyua. A program's `name` is relative to
//! its Kyuafile; its path in the [`Suite`] is relative to the suite root (the directory of the
//! top Kyuafile), `/`-separated. Programs come in declaration order, includes expanded in place.
//! Every key of a program's table other than `name` and `test_suite` is a metadata property set
//! through [`Metadata::set`]; values may be strings, numbers or booleans, and the list-valued
//! properties also take a Lua array of strings.
//!
//! # Where lab differs from Kyua
//!
//! - A program whose file does not exist is not a load error: the run reports it as a broken
//!   result, so the other programs of the suite still run. Kyua refuses the whole Kyuafile.
//! - A program name may hold directories (`name = 'sub/t'`, even `'../t'` from an included
//!   file) as long as it stays inside the suite root; Kyua takes plain file names only.
//! - Our functions (`test_suite`, `include`, `*_test_program`) fail when called before
//!   `syntax()`; Kyua only notices a missing `syntax()` at the end of the file.
//! - Booleans and arrays of strings are accepted as property values; Kyua wants strings or
//!   numbers. An empty test suite name is refused.
//! - Include cycles are an error (Kyua recurses until it crashes); an include must stay inside
//!   the suite root.
//! - The environment is hermetic: Lua's base library without `dofile`, `loadfile` and `warn`,
//!   `print` does nothing, `load` takes text chunks only; then `string`, `table` and `math`. No
//!   `io`, `os`, `require` or `debug`. `fs.files` yields its entries sorted (`.` and `..`
//!   included) where Kyua yields them in directory order.
//! - Evaluation is bounded: a budget of Lua instructions and of memory shared by the whole tree,
//!   a limit on include depth, and a wall-clock limit as the last resort for time spent inside
//!   the Lua library itself (a pathological `string.find`). Past the wall-clock limit the
//!   evaluating thread is abandoned, still running, to the end of the process.
//!
//! Every error renders as `Load of 'PATH' failed: MESSAGE`, PATH being the Kyuafile that failed
//! (the included one when the error lies in it) and MESSAGE starting with `PATH:LINE:` for Lua
//! syntax and runtime errors and for errors raised by the functions above.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use lab_model::{BpfOptions, BpfState, Interface, Metadata, TailCallSlot, TestProgram};
use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};

/// The largest Kyuafile read.
const MAX_KYUAFILE: u64 = 4 << 20;

/// The file name `load` looks for in a directory.
pub const KYUAFILE: &str = "Kyuafile";

/// A loaded suite: its root and the programs its Kyuafiles declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// The directory of the top Kyuafile, absolute and canonical.
    pub root: PathBuf,
    /// The programs, in declaration order with includes expanded in place.
    pub programs: Vec<TestProgram>,
}

/// A Kyuafile tree that could not be loaded. `path` is the Kyuafile at fault, as the user named
/// it (an included file's path starts with the top file's directory).
#[derive(Debug, thiserror::Error)]
pub enum KyuafileError {
    /// The Kyuafile does not exist.
    #[error("Load of '{}' failed: file not found", path.display())]
    NotFound {
        /// The Kyuafile.
        path: PathBuf,
    },
    /// The Kyuafile exists but could not be read.
    #[error("Load of '{}' failed: cannot read it", path.display())]
    Read {
        /// The Kyuafile.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The evaluating thread could not be started.
    #[error("Load of '{}' failed: cannot start the evaluator", path.display())]
    Evaluator {
        /// The Kyuafile.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The Kyuafile is not valid: a Lua error, a bad call, a limit reached.
    #[error("Load of '{}' failed: {message}", path.display())]
    Invalid {
        /// The Kyuafile.
        path: PathBuf,
        /// What is wrong, starting with `PATH:LINE:` where a line is known.
        message: String,
    },
}

impl KyuafileError {
    /// The Kyuafile at fault.
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path }
            | Self::Read { path, .. }
            | Self::Evaluator { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }
}

/// Loads the Kyuafile `kyuafile` (or `kyuafile/Kyuafile` when it is a directory) and every file
/// it includes.
pub fn load(kyuafile: &Path) -> Result<Suite, KyuafileError> {
    load_with(kyuafile, Limits::default())
}

/// The bounds on one evaluation of a Kyuafile tree.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Lua VM instructions, all files together.
    instructions: u64,
    /// Bytes of Lua memory, all files together.
    memory: usize,
    /// How deep includes may nest (the top file is depth 1).
    depth: usize,
    /// Wall-clock time for the whole tree.
    wall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Real Kyuafiles take thousands; this is seconds of a busy loop.
            instructions: 200_000_000,
            memory: 256 << 20,
            depth: 64,
            wall: Duration::from_secs(60),
        }
    }
}

/// How often (in VM instructions) the instruction budget is checked.
const HOOK_STEP: u32 = 1000;

/// The properties whose value is a list, which take a Lua array of strings too.
const LIST_PROPERTIES: &[&str] = &[
    "allowed_architectures",
    "allowed_platforms",
    "required_configs",
    "required_files",
    "required_kmods",
    "required_programs",
];

/// The program declaring functions and their interfaces.
const PROGRAM_FUNCTIONS: &[(&str, Interface)] = &[
    ("atf_test_program", Interface::Atf),
    ("bpf_test_program", Interface::Bpf),
    ("plain_test_program", Interface::Plain),
    ("tap_test_program", Interface::Tap),
];

fn load_with(kyuafile: &Path, limits: Limits) -> Result<Suite, KyuafileError> {
    let top = if kyuafile.is_dir() {
        kyuafile.join(KYUAFILE)
    } else {
        kyuafile.to_path_buf()
    };
    match std::fs::metadata(&top) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KyuafileError::NotFound { path: top });
        }
        Err(source) => return Err(KyuafileError::Read { path: top, source }),
        Ok(_) => {}
    }
    let mut root_display = top.parent().map(Path::to_path_buf).unwrap_or_default();
    if root_display == Path::new(".") {
        root_display = PathBuf::new();
    }
    let root_dir = if root_display.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root_display.as_path()
    };
    let root = std::fs::canonicalize(root_dir).map_err(|source| KyuafileError::Read {
        path: top.clone(),
        source,
    })?;
    let Some(rel) = top.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
        return Err(KyuafileError::Invalid {
            path: top.clone(),
            message: "its name is not valid UTF-8".into(),
        });
    };

    // Evaluate on a thread of our own: a big enough stack for deep includes, and a way to give
    // up on an evaluation stuck inside the Lua library where no hook runs.
    let (tx, rx) = mpsc::channel();
    let thread_root = root.clone();
    let handle = std::thread::Builder::new()
        .name("kyuafile".into())
        .stack_size(32 << 20)
        .spawn(move || {
            let programs = Evaluator::new(thread_root, root_display, limits).run(rel);
            // The receiver is gone only when it gave up waiting.
            let _ = tx.send(programs);
        })
        .map_err(|source| KyuafileError::Evaluator {
            path: top.clone(),
            source,
        })?;
    match rx.recv_timeout(limits.wall) {
        Ok(programs) => Ok(Suite {
            root,
            programs: programs?,
        }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(KyuafileError::Invalid {
            path: top,
            message: format!("evaluation did not finish within {:?}", limits.wall),
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => Err(KyuafileError::Invalid {
                path: top,
                message: "the evaluator stopped without an answer".into(),
            }),
        },
    }
}

/// The state of one evaluation of a tree, shared by the files being evaluated.
struct Evaluator {
    /// The suite root, absolute.
    root: PathBuf,
    /// The suite root as the user named it (empty for the current directory).
    root_display: PathBuf,
    limits: Limits,
    /// Instructions spent so far.
    instructions: Cell<u64>,
    /// An error that ends the evaluation whatever the Lua code does about it (an included
    /// file's failure, the instruction budget), so `pcall` cannot swallow it.
    fatal: RefCell<Option<KyuafileError>>,
    /// The programs declared so far.
    programs: RefCell<Vec<TestProgram>>,
    /// The files being evaluated, outermost first: canonical path and display path.
    stack: RefCell<Vec<(PathBuf, String)>>,
}

/// One Kyuafile being evaluated.
struct File {
    /// Its path relative to the root, `/`-separated.
    rel: String,
    /// Its path as shown to the user.
    display: String,
    /// The Lua memory it may use.
    memory: usize,
    /// The version `syntax()` asked for.
    version: Cell<Option<i64>>,
    /// The default test suite of its programs.
    test_suite: RefCell<Option<String>>,
}

impl File {
    /// Its directory relative to the root (empty for the root).
    fn dir_rel(&self) -> &str {
        self.rel.rsplit_once('/').map_or("", |(dir, _)| dir)
    }
}

impl Evaluator {
    fn new(root: PathBuf, root_display: PathBuf, limits: Limits) -> Rc<Self> {
        Rc::new(Self {
            root,
            root_display,
            limits,
            instructions: Cell::new(0),
            fatal: RefCell::new(None),
            programs: RefCell::new(Vec::new()),
            stack: RefCell::new(Vec::new()),
        })
    }

    fn run(self: Rc<Self>, rel: String) -> Result<Vec<TestProgram>, KyuafileError> {
        let path = self.root.join(&rel);
        let canonical = std::fs::canonicalize(&path).unwrap_or(path);
        self.eval_file(rel, canonical, self.limits.memory)?;
        Ok(self.programs.take())
    }

    /// The path of a root-relative file as the user sees it.
    fn display(&self, rel: &str) -> String {
        if self.root_display.as_os_str().is_empty() {
            rel.to_string()
        } else {
            self.root_display.join(rel).to_string_lossy().into_owned()
        }
    }

    /// Evaluates the file at root-relative `rel` with at most `memory` bytes of Lua memory.
    fn eval_file(
        self: &Rc<Self>,
        rel: String,
        canonical: PathBuf,
        memory: usize,
    ) -> Result<(), KyuafileError> {
        let display = self.display(&rel);
        let path = PathBuf::from(&display);
        let source =
            super::read_limited(&self.root.join(&rel), MAX_KYUAFILE).map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    KyuafileError::NotFound { path: path.clone() }
                } else {
                    KyuafileError::Read {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        let file = Rc::new(File {
            rel,
            display: display.clone(),
            memory,
            version: Cell::new(None),
            test_suite: RefCell::new(None),
        });
        self.stack.borrow_mut().push((canonical, display.clone()));
        let outcome = self.eval_source(&file, &source);
        self.stack.borrow_mut().pop();
        if let Some(fatal) = self.fatal.borrow_mut().take() {
            return Err(fatal);
        }
        let invalid = |message| KyuafileError::Invalid {
            path: path.clone(),
            message,
        };
        match outcome {
            Err(e) => Err(invalid(self.describe(&file, &e))),
            Ok(()) if file.version.get().is_none() => Err(invalid("syntax() never called".into())),
            Ok(()) => Ok(()),
        }
    }

    fn eval_source(self: &Rc<Self>, file: &Rc<File>, source: &[u8]) -> mlua::Result<()> {
        let lua = Lua::new_with(
            StdLib::STRING | StdLib::TABLE | StdLib::MATH,
            LuaOptions::new(),
        )?;
        lua.set_memory_limit(file.memory)?;
        self.install(&lua, file)?;
        let me = Rc::clone(self);
        let hook_file = Rc::clone(file);
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_STEP),
            move |lua, _| me.count_instructions(lua, &hook_file),
        )?;
        lua.load(source)
            .set_name(format!("={}", file.display))
            .set_mode(ChunkMode::Text)
            .exec()
    }

    /// The instruction hook: fails, for good, once the budget is spent.
    fn count_instructions(&self, lua: &Lua, file: &File) -> mlua::Result<VmState> {
        let spent = self.instructions.get() + u64::from(HOOK_STEP);
        self.instructions.set(spent);
        if spent <= self.limits.instructions {
            return Ok(VmState::Continue);
        }
        let message = at(
            lua,
            format!(
                "evaluation took more than {} Lua instructions (an endless loop?)",
                self.limits.instructions
            ),
        );
        let mut fatal = self.fatal.borrow_mut();
        if fatal.is_none() {
            *fatal = Some(KyuafileError::Invalid {
                path: PathBuf::from(&file.display),
                message: message.clone(),
            });
        }
        Err(mlua::Error::RuntimeError(message))
    }

    /// The message of a Lua error raised while evaluating `file`.
    fn describe(&self, file: &File, error: &mlua::Error) -> String {
        match error {
            mlua::Error::CallbackError { cause, .. } => self.describe(file, cause),
            mlua::Error::MemoryError(_) => format!(
                "{}: evaluation needed more than {} bytes of Lua memory",
                file.display, file.memory
            ),
            mlua::Error::SyntaxError { message, .. } | mlua::Error::RuntimeError(message) => {
                // mlua appends a traceback to runtime errors; the first line says it all.
                let message = message
                    .split_once("\nstack traceback:")
                    .map_or(message.as_str(), |(m, _)| m);
                full_chunk_name(&file.display, message)
            }
            other => full_chunk_name(&file.display, &other.to_string()),
        }
    }

    /// Sets up the globals of a file's Lua state.
    fn install(self: &Rc<Self>, lua: &Lua, file: &Rc<File>) -> mlua::Result<()> {
        let g = lua.globals();
        for name in ["dofile", "loadfile", "require", "warn"] {
            g.raw_set(name, Value::Nil)?;
        }
        g.raw_set("print", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
        let raw_load: Function = g.raw_get("load")?;
        g.raw_set(
            "load",
            lua.create_function(move |lua, args: MultiValue| {
                // load(chunk, name, mode, env): force text mode, keep an explicit env (even nil).
                let mut args: Vec<Value> = args.into_iter().collect();
                if args.len() < 3 {
                    args.resize(3, Value::Nil);
                }
                args[2] = Value::String(lua.create_string("t")?);
                raw_load.call::<MultiValue>(MultiValue::from_iter(args))
            })?,
        )?;

        let f = Rc::clone(file);
        g.raw_set(
            "syntax",
            lua.create_function(move |lua, args: MultiValue| syntax(lua, &f, &args))?,
        )?;

        let f = Rc::clone(file);
        g.raw_set(
            "test_suite",
            lua.create_function(move |lua, args: MultiValue| {
                require_syntax(lua, &f, "test_suite")?;
                if f.test_suite.borrow().is_some() {
                    return Err(fail(lua, "can only call test_suite() once"));
                }
                let name = match args.front().and_then(stringish) {
                    Some(Ok(name)) => name,
                    _ => return Err(fail(lua, "test_suite() expects a string")),
                };
                if name.is_empty() {
                    return Err(fail(lua, "test suite name cannot be empty"));
                }
                *f.test_suite.borrow_mut() = Some(name);
                Ok(())
            })?,
        )?;

        let (me, f) = (Rc::clone(self), Rc::clone(file));
        g.raw_set(
            "include",
            lua.create_function(move |lua, args: MultiValue| me.include(lua, &f, &args))?,
        )?;

        for &(name, interface) in PROGRAM_FUNCTIONS {
            let (me, f) = (Rc::clone(self), Rc::clone(file));
            g.raw_set(
                name,
                lua.create_function(move |lua, args: MultiValue| {
                    me.test_program(lua, &f, interface, &args)
                })?,
            )?;
        }

        let current = self.root.join(&file.rel).to_string_lossy().into_owned();
        g.raw_set(
            "current_kyuafile",
            lua.create_function(move |_, ()| Ok(current.clone()))?,
        )?;
        g.raw_set("fs", fs_module(lua, self.root.join(file.dir_rel()))?)?;
        Ok(())
    }

    /// `include(path)`: evaluates another Kyuafile in place.
    fn include(self: &Rc<Self>, lua: &Lua, file: &File, args: &MultiValue) -> mlua::Result<()> {
        require_syntax(lua, file, "include")?;
        let raw = match args.front().and_then(stringish) {
            Some(Ok(raw)) if !raw.is_empty() => raw,
            _ => return Err(fail(lua, "include() expects a path")),
        };
        let rel = if raw.starts_with('/') {
            Path::new(&raw)
                .strip_prefix(&self.root)
                .ok()
                .and_then(|p| p.to_str())
                .and_then(|p| normalize("", p))
        } else {
            normalize(file.dir_rel(), &raw)
        };
        let Some(rel) = rel.filter(|r| !r.is_empty()) else {
            return Err(fail(
                lua,
                format!("included file '{raw}' is outside the suite root"),
            ));
        };
        let display = self.display(&rel);
        let canonical = match std::fs::canonicalize(self.root.join(&rel)) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(fail(lua, format!("file '{display}' not found")));
            }
            Err(e) => return Err(fail(lua, format!("cannot open '{display}': {e}"))),
        };
        {
            let stack = self.stack.borrow();
            if let Some(start) = stack.iter().position(|(c, _)| *c == canonical) {
                let chain: Vec<&str> = stack[start..].iter().map(|(_, d)| d.as_str()).collect();
                return Err(fail(
                    lua,
                    format!("include cycle: {} -> {display}", chain.join(" -> ")),
                ));
            }
            if stack.len() >= self.limits.depth {
                return Err(fail(
                    lua,
                    format!("includes nest more than {} deep", self.limits.depth),
                ));
            }
        }
        let memory = file.memory.saturating_sub(lua.used_memory());
        if let Err(e) = self.eval_file(rel, canonical, memory) {
            *self.fatal.borrow_mut() = Some(e);
            return Err(fail(lua, format!("load of '{display}' failed")));
        }
        Ok(())
    }

    /// `*_test_program{name=..., ...}`: declares a program.
    fn test_program(
        &self,
        lua: &Lua,
        file: &File,
        interface: Interface,
        args: &MultiValue,
    ) -> mlua::Result<()> {
        let function = format!("{}_test_program", interface.name());
        require_syntax(lua, file, &function)?;
        let table = match (args.len(), args.front()) {
            (1, Some(Value::Table(t))) => t.clone(),
            _ => {
                return Err(fail(
                    lua,
                    format!("{function} expects a table of properties as its single argument"),
                ));
            }
        };
        let name = match table.raw_get::<Value>("name")? {
            Value::String(s) => s.to_str()?.to_string(),
            _ => return Err(fail(lua, "test program name not defined or not a string")),
        };
        let suite_override = match table.raw_get::<Value>("test_suite")? {
            Value::Nil => String::new(),
            v => match stringish(&v) {
                Some(Ok(s)) => s,
                _ => {
                    return Err(fail(
                        lua,
                        format!(
                            "found non-string value in the test_suite property of test program \
                             '{name}'"
                        ),
                    ));
                }
            },
        };

        let mut properties = Vec::new();
        for pair in table.pairs::<Value, Value>() {
            let (key, value) = pair?;
            let key = match &key {
                Value::String(s) => s.to_str()?.to_string(),
                Value::Integer(i) => i.to_string(),
                _ => {
                    return Err(fail(
                        lua,
                        format!("found non-string metadata property name in test program '{name}'"),
                    ));
                }
            };
            if key != "name" && key != "test_suite" {
                properties.push((key, value));
            }
        }
        // Lua's table order is arbitrary: sort, so the same file always fails the same way.
        properties.sort_by(|a, b| a.0.cmp(&b.0));
        let (bpf_properties, properties): (Vec<_>, Vec<_>) = properties
            .into_iter()
            .partition(|(k, _)| BPF_PROPERTIES.contains(&k.as_str()));
        if interface != Interface::Bpf {
            if let Some((key, _)) = bpf_properties.first() {
                return Err(fail(
                    lua,
                    format!(
                        "metadata property '{key}' in test program '{name}' is only for \
                         bpf_test_program"
                    ),
                ));
            }
        }
        let bpf = bpf_options(file.dir_rel(), &bpf_properties)
            .map_err(|why| fail(lua, format!("test program '{name}': {why}")))?;
        let mut metadata = Metadata::default();
        for (key, value) in &properties {
            let value = property_value(key, value).map_err(|why| {
                fail(
                    lua,
                    format!("metadata property '{key}' in test program '{name}' {why}"),
                )
            })?;
            metadata
                .set(key, &value)
                .map_err(|e| fail(lua, format!("test program '{name}': {e}")))?;
        }

        if name.starts_with('/') {
            return Err(fail(
                lua,
                format!("got unexpected absolute path for test program '{name}'"),
            ));
        }
        let path = match normalize(file.dir_rel(), &name) {
            None => {
                return Err(fail(
                    lua,
                    format!("test program '{name}' is outside the suite root"),
                ));
            }
            Some(p) if p.is_empty() || name.is_empty() => {
                return Err(fail(lua, format!("test program '{name}' names no file")));
            }
            Some(p) => p,
        };
        let test_suite = if suite_override.is_empty() {
            match file.test_suite.borrow().clone() {
                Some(s) => s,
                None => {
                    return Err(fail(
                        lua,
                        "no test suite defined in the Kyuafile and no override provided in the \
                         test_program definition",
                    ));
                }
            }
        } else {
            suite_override
        };
        let mut program = TestProgram::new(interface, &self.root, &path, &test_suite, metadata);
        program.bpf = bpf;
        self.programs.borrow_mut().push(program);
        Ok(())
    }
}

/// The `bpf_test_program` properties beyond Kyua's metadata (docs/ebpf.md).
pub const BPF_PROPERTIES: &[&str] = &[
    "cflags",
    "globals",
    "include",
    "maps_setup",
    "state",
    "tail_calls",
];

/// The bpf options of a program declared in directory `dir` (root-relative) from its bpf
/// properties; the error completes "test program 'NAME': ...".
fn bpf_options(dir: &str, properties: &[(String, Value)]) -> Result<BpfOptions, String> {
    let mut out = BpfOptions::default();
    for (key, value) in properties {
        let bad = |what: &str| format!("property '{key}' {what}");
        match key.as_str() {
            "globals" => {
                let Value::Table(t) = value else {
                    return Err(bad("must be a table {name = value, ...}"));
                };
                for pair in t.clone().pairs::<Value, Value>() {
                    let (k, v) = pair.map_err(|e| bad(&e.to_string()))?;
                    let Value::String(k) = k else {
                        return Err(bad("has a key that is not a variable name"));
                    };
                    let k = k
                        .to_str()
                        .map_err(|_| bad("has a key that is not UTF-8"))?
                        .to_string();
                    let v = match &v {
                        Value::Boolean(b) => b.to_string(),
                        other => match stringish(other) {
                            Some(Ok(s)) => s,
                            _ => {
                                return Err(bad(&format!(
                                    "gives {k} a value that is no number, string or boolean"
                                )))
                            }
                        },
                    };
                    out.globals.insert(k, v);
                }
            }
            "tail_calls" => {
                let Value::Table(t) = value else {
                    return Err(bad(
                        "must be a table {map = {[slot] = 'program', ...}, ...}",
                    ));
                };
                for pair in t.clone().pairs::<Value, Value>() {
                    let (map, slots) = pair.map_err(|e| bad(&e.to_string()))?;
                    let (Value::String(map), Value::Table(slots)) = (map, slots) else {
                        return Err(bad("must map map names to tables {[slot] = 'program'}"));
                    };
                    let map = map
                        .to_str()
                        .map_err(|_| bad("has a map name that is not UTF-8"))?
                        .to_string();
                    for pair in slots.pairs::<Value, Value>() {
                        let (slot, program) = pair.map_err(|e| bad(&e.to_string()))?;
                        let slot = match slot {
                            Value::Integer(i) => u32::try_from(i).ok(),
                            Value::Number(n) if n.fract() == 0.0 && n >= 0.0 => Some(n as u32),
                            _ => None,
                        }
                        .ok_or_else(|| bad(&format!("has a slot of {map} that is no number")))?;
                        let Value::String(program) = program else {
                            return Err(bad(&format!(
                                "puts something other than a program name at {map}[{slot}]"
                            )));
                        };
                        let program = program
                            .to_str()
                            .map_err(|_| bad("has a program name that is not UTF-8"))?
                            .to_string();
                        out.tail_calls.push(TailCallSlot {
                            map: map.clone(),
                            slot,
                            program,
                        });
                    }
                }
                out.tail_calls
                    .sort_by(|a, b| (&a.map, a.slot).cmp(&(&b.map, b.slot)));
            }
            "state" => {
                out.state = Some(match stringish(value).and_then(Result::ok).as_deref() {
                    Some("object") => BpfState::Object,
                    Some("test") => BpfState::Test,
                    _ => return Err(bad("must be 'object' or 'test'")),
                });
            }
            "maps_setup" => {
                let Some(Ok(p)) = stringish(value) else {
                    return Err(bad("must be a program's path"));
                };
                let rel = normalize(dir, &p).filter(|r| !r.is_empty() && !p.starts_with('/'));
                out.maps_setup =
                    Some(rel.ok_or_else(|| bad("must be a path inside the suite root"))?);
            }
            "cflags" | "include" => {
                let words: Vec<String> = match value {
                    Value::Table(t) => {
                        let mut v = Vec::new();
                        for i in 1..=t.raw_len() {
                            match t.raw_get::<Value>(i) {
                                Ok(Value::String(s)) => v.push(
                                    s.to_str()
                                        .map_err(|_| bad("holds a string that is not UTF-8"))?
                                        .to_string(),
                                ),
                                _ => return Err(bad("must be an array of strings")),
                            }
                        }
                        v
                    }
                    other => match stringish(other) {
                        Some(Ok(s)) => s.split_whitespace().map(str::to_string).collect(),
                        _ => return Err(bad("must be a string or an array of strings")),
                    },
                };
                if key == "cflags" {
                    out.cflags = Some(words);
                } else {
                    for w in words {
                        let rel = normalize(dir, &w).filter(|_| !w.starts_with('/'));
                        out.include.push(
                            rel.ok_or_else(|| bad(&format!("names {w}, outside the suite root")))?,
                        );
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `syntax(2)`, or Kyua's version-1 form `syntax('kyuafile', 1)`.
fn syntax(lua: &Lua, file: &File, args: &MultiValue) -> mlua::Result<()> {
    let version = match args.back() {
        Some(Value::Integer(v)) => Some(*v),
        Some(Value::Number(v)) if v.fract() == 0.0 && v.abs() < 1e15 => Some(*v as i64),
        Some(Value::String(s)) => s.to_str().ok().and_then(|s| s.trim().parse().ok()),
        _ => None,
    };
    let Some(version) = version else {
        return Err(fail(lua, "last argument to syntax must be an integer"));
    };
    if version == 1 {
        let first_ok = match args.front() {
            Some(Value::String(s)) => s.as_bytes().as_ref() == b"kyuafile",
            _ => false,
        };
        if args.len() != 2 {
            return Err(fail(lua, "version 1 files need two arguments to syntax()"));
        }
        if !first_ok {
            return Err(fail(
                lua,
                "first argument to syntax must be 'kyuafile' for version 1 files",
            ));
        }
    } else if args.len() != 1 {
        return Err(fail(lua, "syntax() only takes one argument"));
    }
    if file.version.get().is_some() {
        return Err(fail(lua, "can only call syntax() once"));
    }
    if !(1..=2).contains(&version) {
        return Err(fail(lua, format!("unsupported file version {version}")));
    }
    file.version.set(Some(version));
    Ok(())
}

/// Fails unless `syntax()` was called.
fn require_syntax(lua: &Lua, file: &File, function: &str) -> mlua::Result<()> {
    if file.version.get().is_none() {
        return Err(fail(
            lua,
            format!("syntax() must be called before {function}()"),
        ));
    }
    Ok(())
}

/// A string argument, numbers converted as Lua converts them.
fn stringish(value: &Value) -> Option<mlua::Result<String>> {
    match value {
        Value::String(s) => Some(s.to_str().map(|s| s.to_string())),
        Value::Integer(i) => Some(Ok(i.to_string())),
        Value::Number(n) => Some(Ok(number_string(*n))),
        _ => None,
    }
}

/// A float as a property value: integral ones without a fraction.
fn number_string(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{n:.0}")
    } else {
        n.to_string()
    }
}

/// The string form of a property's value, for `Metadata::set`; the error completes
/// "metadata property 'KEY' in test program 'NAME' ...".
fn property_value(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::Boolean(b) => Ok(b.to_string()),
        Value::Table(t) if LIST_PROPERTIES.contains(&key) => list_value(t),
        Value::Table(_) => Err("cannot be converted to a string".into()),
        v => match stringish(v) {
            Some(Ok(s)) => Ok(s),
            Some(Err(_)) => Err("is not valid UTF-8".into()),
            None => Err("cannot be converted to a string".into()),
        },
    }
}

/// A Lua array of words as a whitespace-separated list.
fn list_value(table: &Table) -> Result<String, String> {
    let bad = || "must be a string or an array of strings without whitespace".to_string();
    // Only an array: as many entries as keys 1..n.
    let len = table.raw_len();
    if table.pairs::<Value, Value>().count() != len {
        return Err(bad());
    }
    let mut words = Vec::with_capacity(len);
    for i in 1..=len {
        let Ok(Value::String(s)) = table.raw_get::<Value>(i) else {
            return Err(bad());
        };
        let s = s.to_str().map_err(|_| bad())?.to_string();
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad());
        }
        words.push(s);
    }
    Ok(words.join(" "))
}

/// Joins `name` to root-relative directory `dir` and resolves `.` and `..` lexically: the
/// root-relative, `/`-separated result, or `None` when it leaves the root.
fn normalize(dir: &str, name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in dir.split('/').chain(name.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// An error raised by one of our functions, located at the Lua line that called it.
fn fail(lua: &Lua, message: impl Display) -> mlua::Error {
    mlua::Error::RuntimeError(at(lua, message))
}

/// `message` prefixed with `FILE:LINE: ` of the innermost Lua code running, if any.
pub(crate) fn at(lua: &Lua, message: impl Display) -> String {
    for level in 0.. {
        let Some(found) = lua.inspect_stack(level, |d| {
            let line = d.current_line()?;
            let source = d.source().source?.into_owned();
            let name = source
                .strip_prefix('=')
                .or_else(|| source.strip_prefix('@'))
                .unwrap_or(&source)
                .to_string();
            Some((name, line))
        }) else {
            break;
        };
        if let Some((name, line)) = found {
            return format!("{name}:{line}: {message}");
        }
    }
    message.to_string()
}

/// Undoes Lua's truncation of long chunk names (60 bytes) at the start of its own messages.
pub(crate) fn full_chunk_name(display: &str, message: &str) -> String {
    const ID_SIZE: usize = 60;
    if display.len() < ID_SIZE {
        return message.to_string();
    }
    let mut cut = ID_SIZE - 1;
    while !display.is_char_boundary(cut) {
        cut -= 1;
    }
    match message.strip_prefix(&display[..cut]) {
        Some(rest) if rest.starts_with(':') => format!("{display}{rest}"),
        _ => message.to_string(),
    }
}

/// Kyua's `fs` module, relative paths taken from `dir`.
fn fs_module(lua: &Lua, dir: PathBuf) -> mlua::Result<Table> {
    let fs = lua.create_table()?;
    fs.raw_set(
        "basename",
        lua.create_function(|lua, path: Value| {
            let p = fs_path(lua, &path)?;
            Ok(p.rsplit_once('/').map_or(p.clone(), |(_, b)| b.to_string()))
        })?,
    )?;
    fs.raw_set(
        "dirname",
        lua.create_function(|lua, path: Value| {
            let p = fs_path(lua, &path)?;
            Ok(match p.rsplit_once('/') {
                None => ".".to_string(),
                Some(("", _)) => "/".to_string(),
                Some((d, _)) => d.to_string(),
            })
        })?,
    )?;
    let d = dir.clone();
    fs.raw_set(
        "exists",
        lua.create_function(move |lua, path: Value| Ok(d.join(fs_path(lua, &path)?).exists()))?,
    )?;
    fs.raw_set(
        "files",
        lua.create_function(move |lua, path: Value| {
            let p = dir.join(fs_path(lua, &path)?);
            let mut names = vec![".".to_string(), "..".to_string()];
            let entries = std::fs::read_dir(&p)
                .map_err(|e| fail(lua, format!("failed to open directory: {e}")))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| fail(lua, format!("failed to read directory: {e}")))?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            let names = RefCell::new(names.into_iter());
            lua.create_function(move |_, ()| Ok(names.borrow_mut().next()))
        })?,
    )?;
    fs.raw_set(
        "is_absolute",
        lua.create_function(|lua, path: Value| Ok(fs_path(lua, &path)?.starts_with('/')))?,
    )?;
    fs.raw_set(
        "join",
        lua.create_function(|lua, (a, b): (Value, Value)| {
            let (a, b) = (fs_path(lua, &a)?, fs_path(lua, &b)?);
            if b.starts_with('/') {
                return Err(fail(
                    lua,
                    format!(
                        "cannot join paths '{a}' and '{b}': cannot concatenate a path to an \
                         absolute path"
                    ),
                ));
            }
            Ok(if a == "/" {
                format!("/{b}")
            } else {
                format!("{a}/{b}")
            })
        })?,
    )?;
    Ok(fs)
}

/// A path argument of the `fs` module, as Kyua reads it: repeated and trailing slashes dropped,
/// empty refused.
fn fs_path(lua: &Lua, value: &Value) -> mlua::Result<String> {
    let raw = match stringish(value) {
        Some(Ok(s)) => s,
        Some(Err(_)) => return Err(fail(lua, "path is not valid UTF-8")),
        None => return Err(fail(lua, "need a string parameter")),
    };
    if raw.is_empty() {
        return Err(fail(lua, "invalid path '': cannot be empty"));
    }
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
    let joined = parts.join("/");
    Ok(if raw.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use lab_model::{Execenv, RequiredUser};
    use tempfile::TempDir;

    use super::*;

    /// A directory holding `files` (path, content).
    fn tree(files: &[(&str, &str)]) -> TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(path, content).expect("write");
        }
        dir
    }

    fn load_ok(dir: &TempDir) -> Suite {
        load(dir.path()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (path, suite, interface) of each program.
    fn summary(suite: &Suite) -> Vec<(String, String, Interface)> {
        suite
            .programs
            .iter()
            .map(|p| (p.path.clone(), p.test_suite.clone(), p.interface))
            .collect()
    }

    #[test]
    fn every_kind_and_property() {
        let dir = tree(&[(
            "Kyuafile",
            r#"syntax(2)
test_suite('lab')
atf_test_program{name='a'}
plain_test_program{name='p'}
tap_test_program{name='t', test_suite='other'}
bpf_test_program{name='b.bpf.o'}
plain_test_program{
    name = 'all',
    description = 'does it all',
    timeout = 12,
    required_programs = {'/bin/sh', 'ip'},
    required_files = '/etc/passwd /etc/group',
    required_user = 'unprivileged',
    required_memory = '64m',
    required_disk_space = 1024,
    required_configs = {'a', 'b'},
    allowed_architectures = 'x86_64',
    allowed_platforms = {'lab'},
    is_exclusive = true,
    has_cleanup = 'false',
    execenv = 'jail',
    execenv_jail_params = 'vnet',
    ['custom.owner'] = 'net team',
    ['custom.n'] = 1.0,
}
"#,
        )]);
        let suite = load_ok(&dir);
        assert_eq!(
            suite.root,
            std::fs::canonicalize(dir.path()).expect("canonical")
        );
        let s = |p: &str, t: &str, i| (p.to_string(), t.to_string(), i);
        assert_eq!(
            summary(&suite),
            vec![
                s("a", "lab", Interface::Atf),
                s("p", "lab", Interface::Plain),
                s("t", "other", Interface::Tap),
                s("b.bpf.o", "lab", Interface::Bpf),
                s("all", "lab", Interface::Plain),
            ]
        );
        assert!(suite.programs.iter().all(|p| p.root == suite.root));
        assert_eq!(suite.programs[0].metadata, Metadata::default());
        let md = &suite.programs[4].metadata;
        assert_eq!(md.description, "does it all");
        assert_eq!(md.timeout, Duration::from_secs(12));
        assert_eq!(
            md.required_programs.iter().collect::<Vec<_>>(),
            ["/bin/sh", "ip"]
        );
        assert_eq!(md.required_files.len(), 2);
        assert_eq!(md.required_user, RequiredUser::Unprivileged);
        assert_eq!(md.required_memory, 64 << 20);
        assert_eq!(md.required_disk_space, 1024);
        assert_eq!(md.required_configs.len(), 2);
        assert!(md.allowed_architectures.contains("x86_64"));
        assert!(md.allowed_platforms.contains("lab"));
        assert!(md.is_exclusive && !md.has_cleanup);
        assert_eq!(md.execenv, Execenv::Jail);
        assert!(md.jail_vnet());
        assert_eq!(md.custom["owner"], "net team");
        assert_eq!(md.custom["n"], "1");
        // Plain programs carry their metadata to their single case.
        assert_eq!(&suite.programs[4].cases[0].metadata, md);
    }

    #[test]
    fn include_trees() {
        let dir = tree(&[
            (
                "Kyuafile",
                "syntax(2)\ntest_suite('top')\nplain_test_program{name='a'}\n\
                 include('sub/Kyuafile')\nplain_test_program{name='b'}\n\
                 include('./other/../other/Kyuafile')\n",
            ),
            (
                "sub/Kyuafile",
                "syntax(2)\ntest_suite('sub')\ntap_test_program{name='t'}\n\
                 include('deeper/Kyuafile')\n\
                 atf_test_program{name='../up', test_suite='override'}\n\
                 plain_test_program{name='in/dir'}\n",
            ),
            (
                "sub/deeper/Kyuafile",
                "syntax(2)\ntest_suite('deep')\nplain_test_program{name='x'}\n\
                 include('../../other/Kyuafile')\n",
            ),
            (
                "other/Kyuafile",
                "syntax('kyuafile', 1)\ntest_suite('other')\nplain_test_program{name='o'}\n",
            ),
        ]);
        let suite = load_ok(&dir);
        let s = |p: &str, t: &str, i| (p.to_string(), t.to_string(), i);
        assert_eq!(
            summary(&suite),
            vec![
                s("a", "top", Interface::Plain),
                s("sub/t", "sub", Interface::Tap),
                s("sub/deeper/x", "deep", Interface::Plain),
                s("other/o", "other", Interface::Plain),
                s("up", "override", Interface::Atf),
                s("sub/in/dir", "sub", Interface::Plain),
                s("b", "top", Interface::Plain),
                s("other/o", "other", Interface::Plain),
            ]
        );
        assert_eq!(
            suite.programs[2].host_path(),
            suite.root.join("sub/deeper/x")
        );
        // The file itself, not its directory, loads the same.
        assert_eq!(load(&dir.path().join("Kyuafile")).expect("loads"), suite);
    }

    #[test]
    fn kyua_helpers() {
        let dir = tree(&[
            (
                "Kyuafile",
                "syntax(2)\ntest_suite('top')\n\
                 assert(fs.is_absolute(current_kyuafile()))\n\
                 assert(fs.basename(current_kyuafile()) == 'Kyuafile')\n\
                 include(fs.join(fs.dirname(current_kyuafile()), 'sub/Kyuafile'))\n",
            ),
            (
                "sub/Kyuafile",
                r#"syntax(2)
test_suite('sub')
assert(fs.basename(fs.dirname(current_kyuafile())) == 'sub')
assert(fs.exists('test_b') and fs.exists('Kyuafile') and not fs.exists('nope'))
assert(fs.join('a/', 'b//c') == 'a/b/c' and fs.join('.', 'x') == './x')
assert(fs.dirname('a') == '.' and fs.dirname('/a') == '/' and fs.dirname('a/b/') == 'a')
assert(fs.basename('a//b/') == 'b' and fs.basename('/') == '')
assert(not fs.is_absolute('a/b'))
local seen = {}
for f in fs.files('.') do
    seen[#seen + 1] = f
    if f:match('^test_') then plain_test_program{name=f} end
end
assert(table.concat(seen, ' ') == '. .. Kyuafile test_a test_b', table.concat(seen, ' '))
"#,
            ),
            ("sub/test_b", ""),
            ("sub/test_a", ""),
        ]);
        let suite = load_ok(&dir);
        let paths: Vec<&str> = suite.programs.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["sub/test_a", "sub/test_b"]);
    }

    #[test]
    fn hermetic_environment() {
        let dir = tree(&[(
            "Kyuafile",
            r#"syntax(2)
for _, name in ipairs({'io', 'os', 'require', 'dofile', 'loadfile', 'debug', 'package',
                       'coroutine', 'utf8', 'warn'}) do
    assert(_G[name] == nil, name .. ' is reachable')
end
print('nothing comes out')
assert(load(string.dump(function() end)) == nil, 'binary chunks load')
assert(load('return 1 + 1')() == 2)
assert(load('return x', 'chunk', 'b', {x = 3})() == 3)
assert(load('return x', 'chunk', 't', nil) ~= nil)
assert(math.max(1, 2) == 2 and string.upper('a') == 'A' and table.concat({'a'}) == 'a')
"#,
        )]);
        assert!(load_ok(&dir).programs.is_empty());
    }

    #[test]
    fn missing_program_files_load() {
        // The run reports them as broken; loading does not look.
        let dir = tree(&[(
            "Kyuafile",
            "syntax(2)\ntest_suite('s')\natf_test_program{name='gone'}\n",
        )]);
        let suite = load_ok(&dir);
        assert!(!suite.programs[0].host_path().exists());
    }

    #[test]
    fn bpf_properties() {
        let dir = tree(&[
            (
                "Kyuafile",
                "syntax(2)\ntest_suite('s')\ninclude('k/Kyuafile')\n",
            ),
            (
                "k/Kyuafile",
                r#"syntax(2)
test_suite('s')
bpf_test_program{
    name = 'workload_test.c',
    cflags = {'-O2', '-g', '--target=bpf', '-mcpu=v3', '-nostdinc', '-Werror'},
    include = {'include', '../common/include'},
    globals = {bpf_log_level = 3, authz_offload = false, name = 'x'},
    tail_calls = {km_xdp_tailcall = {[0] = 'policies_check', [2] = 'xdp_shutdown'},
                  other = {[1] = 'p'}},
    state = 'test',
    maps_setup = 'setup.sh',
    timeout = 30,
}
bpf_test_program{name = 'plain.o', cflags = '-O2 -g'}
"#,
            ),
        ]);
        let suite = load_ok(&dir);
        let bpf = &suite.programs[0].bpf;
        assert_eq!(
            bpf.cflags.as_deref(),
            Some(
                &[
                    "-O2",
                    "-g",
                    "--target=bpf",
                    "-mcpu=v3",
                    "-nostdinc",
                    "-Werror"
                ]
                .map(String::from)[..]
            )
        );
        assert_eq!(bpf.include, ["k/include", "common/include"]);
        let globals: Vec<(&str, &str)> = bpf
            .globals
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            globals,
            [
                ("authz_offload", "false"),
                ("bpf_log_level", "3"),
                ("name", "x")
            ]
        );
        let slots: Vec<(&str, u32, &str)> = bpf
            .tail_calls
            .iter()
            .map(|t| (t.map.as_str(), t.slot, t.program.as_str()))
            .collect();
        assert_eq!(
            slots,
            [
                ("km_xdp_tailcall", 0, "policies_check"),
                ("km_xdp_tailcall", 2, "xdp_shutdown"),
                ("other", 1, "p")
            ]
        );
        assert_eq!(bpf.state, Some(BpfState::Test));
        assert_eq!(bpf.maps_setup.as_deref(), Some("k/setup.sh"));
        assert_eq!(suite.programs[0].metadata.timeout, Duration::from_secs(30));
        assert_eq!(
            suite.programs[1].bpf.cflags.as_deref(),
            Some(&["-O2", "-g"].map(String::from)[..])
        );
        assert!(suite.programs[1].bpf.globals.is_empty());
        assert_eq!(
            suite.programs[1].bpf.effective_state(false),
            BpfState::Object
        );
        assert_eq!(suite.programs[1].bpf.effective_state(true), BpfState::Test);

        let k = "Load of '{D}/Kyuafile' failed: {D}/Kyuafile:3:";
        let bad = |body: &str| {
            load_err(
                &[("Kyuafile", &format!("{PROLOGUE}{body}\n"))],
                Limits::default(),
            )
        };
        for (body, want) in [
            (
                "bpf_test_program{name='a.o', state='shared'}",
                "test program 'a.o': property 'state' must be 'object' or 'test'",
            ),
            (
                "bpf_test_program{name='a.o', globals={1}}",
                "test program 'a.o': property 'globals' has a key that is not a variable name",
            ),
            (
                "bpf_test_program{name='a.o', tail_calls={m={[-1]='p'}}}",
                "test program 'a.o': property 'tail_calls' has a slot of m that is no number",
            ),
            (
                "bpf_test_program{name='a.o', tail_calls={m='p'}}",
                "test program 'a.o': property 'tail_calls' must map map names to tables {[slot] = 'program'}",
            ),
            (
                "bpf_test_program{name='a.o', include={'../x'}}",
                "test program 'a.o': property 'include' names ../x, outside the suite root",
            ),
            (
                "bpf_test_program{name='a.o', maps_setup='/bin/true'}",
                "test program 'a.o': property 'maps_setup' must be a path inside the suite root",
            ),
            (
                "plain_test_program{name='a', globals={x=1}}",
                "metadata property 'globals' in test program 'a' is only for bpf_test_program",
            ),
        ] {
            assert_eq!(bad(body), format!("{k} {want}"), "{body}");
        }
    }

    /// Loads a tree under `limits` and returns its error, `{D}` standing for the tree's root.
    fn load_err(files: &[(&str, &str)], limits: Limits) -> String {
        let dir = tree(files);
        let root = dir.path().to_string_lossy().into_owned();
        match load_with(&dir.path().join("Kyuafile"), limits) {
            Ok(suite) => panic!("loaded: {:?}", summary(&suite)),
            Err(e) => e.to_string().replace(&root, "{D}"),
        }
    }

    /// A tree's files: path and content.
    type Files<'a> = Vec<(&'a str, String)>;

    /// A program as `kyua list -v` shows it: path, suite, properties.
    type Listed = (String, String, Vec<(String, String)>);

    const PROLOGUE: &str = "syntax(2)\ntest_suite('s')\n";

    #[test]
    fn malformed_kyuafiles() {
        let top = |body: &str| vec![("Kyuafile", format!("{PROLOGUE}{body}"))];
        let raw = |body: &str| vec![("Kyuafile", body.to_string())];
        let with_sub = |body: &str, sub: &str| {
            vec![
                ("Kyuafile", format!("{PROLOGUE}{body}")),
                ("sub/Kyuafile", format!("{PROLOGUE}{sub}")),
            ]
        };
        let k = "Load of '{D}/Kyuafile' failed: {D}/Kyuafile";
        let sub = "Load of '{D}/sub/Kyuafile' failed: {D}/sub/Kyuafile";
        let table: Vec<(&str, Files<'_>, String)> = vec![
            (
                "lua syntax error",
                top("plain_test_program{name='a'\n"),
                format!("{k}:4: '}}' expected (to close '{{' at line 3) near <eof>"),
            ),
            (
                "no syntax() at all",
                raw("local x = 1\n"),
                "Load of '{D}/Kyuafile' failed: syntax() never called".into(),
            ),
            (
                "syntax() not first",
                raw("\ntest_suite('s')\nsyntax(2)\n"),
                format!("{k}:2: syntax() must be called before test_suite()"),
            ),
            (
                "program before syntax()",
                raw("plain_test_program{name='a'}\n"),
                format!("{k}:1: syntax() must be called before plain_test_program()"),
            ),
            (
                "wrong syntax version",
                raw("syntax(3)\n"),
                format!("{k}:1: unsupported file version 3"),
            ),
            (
                "version 1 without its word",
                raw("syntax(1)\n"),
                format!("{k}:1: version 1 files need two arguments to syntax()"),
            ),
            (
                "syntax() twice",
                top("syntax(2)\n"),
                format!("{k}:3: can only call syntax() once"),
            ),
            (
                "test_suite() twice",
                top("test_suite('t')\n"),
                format!("{k}:3: can only call test_suite() once"),
            ),
            (
                "unknown property",
                top("atf_test_program{name='a', colour='red'}\n"),
                format!("{k}:3: test program 'a': unknown metadata property 'colour'"),
            ),
            (
                "bad value",
                top("\natf_test_program{name='a', timeout='soon'}\n"),
                format!(
                    "{k}:4: test program 'a': invalid value 'soon' for metadata property \
                     'timeout': expected a whole number of seconds"
                ),
            ),
            (
                "bad boolean",
                top("atf_test_program{name='a', is_exclusive=1}\n"),
                format!(
                    "{k}:3: test program 'a': invalid value '1' for metadata property \
                     'is_exclusive': expected a boolean"
                ),
            ),
            (
                "list with spaces",
                top("atf_test_program{name='a', required_files={'a b'}}\n"),
                format!(
                    "{k}:3: metadata property 'required_files' in test program 'a' must be a \
                     string or an array of strings without whitespace"
                ),
            ),
            (
                "table for a scalar",
                top("atf_test_program{name='a', timeout={1}}\n"),
                format!(
                    "{k}:3: metadata property 'timeout' in test program 'a' cannot be \
                     converted to a string"
                ),
            ),
            (
                "positional property",
                top("atf_test_program{'a', name='a'}\n"),
                format!("{k}:3: test program 'a': unknown metadata property '1'"),
            ),
            (
                "missing name",
                top("tap_test_program{timeout=1}\n"),
                format!("{k}:3: test program name not defined or not a string"),
            ),
            (
                "not a table",
                top("tap_test_program('a')\n"),
                format!(
                    "{k}:3: tap_test_program expects a table of properties as its single argument"
                ),
            ),
            (
                "absolute name",
                top("plain_test_program{name='/bin/true'}\n"),
                format!("{k}:3: got unexpected absolute path for test program '/bin/true'"),
            ),
            (
                "empty name",
                top("plain_test_program{name=''}\n"),
                format!("{k}:3: test program '' names no file"),
            ),
            (
                "name escaping the root",
                with_sub(
                    "include('sub/Kyuafile')\n",
                    "\nplain_test_program{name='../../x'}\n",
                ),
                format!("{sub}:4: test program '../../x' is outside the suite root"),
            ),
            (
                "no test suite",
                raw("syntax(2)\nplain_test_program{name='a'}\n"),
                format!(
                    "{k}:2: no test suite defined in the Kyuafile and no override provided in \
                     the test_program definition"
                ),
            ),
            (
                "test suite not inherited by includes",
                vec![
                    ("Kyuafile", format!("{PROLOGUE}include('sub/Kyuafile')\n")),
                    (
                        "sub/Kyuafile",
                        "syntax(2)\nplain_test_program{name='a'}\n".into(),
                    ),
                ],
                format!(
                    "{sub}:2: no test suite defined in the Kyuafile and no override provided \
                     in the test_program definition"
                ),
            ),
            (
                "include missing",
                top("include('nope/Kyuafile')\n"),
                format!("{k}:3: file '{{D}}/nope/Kyuafile' not found"),
            ),
            (
                "include escaping the root",
                top("include('../Kyuafile')\n"),
                format!("{k}:3: included file '../Kyuafile' is outside the suite root"),
            ),
            (
                "include cycle",
                with_sub("include('sub/Kyuafile')\n", "\n\ninclude('../Kyuafile')\n"),
                format!(
                    "{sub}:5: include cycle: {{D}}/Kyuafile -> {{D}}/sub/Kyuafile -> \
                     {{D}}/Kyuafile"
                ),
            ),
            (
                "self include",
                top("include('Kyuafile')\n"),
                format!("{k}:3: include cycle: {{D}}/Kyuafile -> {{D}}/Kyuafile"),
            ),
            (
                "error() in the file",
                top("\nerror('boom')\n"),
                format!("{k}:4: boom"),
            ),
            (
                "error() in an included file",
                with_sub("include('sub/Kyuafile')\n", "local x = nil\nx.y = 1\n"),
                format!("{sub}:4: attempt to index a nil value (local 'x')"),
            ),
            (
                "included failure survives pcall",
                with_sub("pcall(include, 'sub/Kyuafile')\n", "error('deep')\n"),
                format!("{sub}:3: deep"),
            ),
            (
                "our error located at the calling line",
                top("local function t(n)\n  atf_test_program{name=n, bad=1}\nend\nt('a')\n"),
                format!("{k}:4: test program 'a': unknown metadata property 'bad'"),
            ),
            (
                "call through pcall located at the caller",
                top("local ok, e = pcall(include, 'x')\nerror(e, 0)\n"),
                format!("{k}:3: file '{{D}}/x' not found"),
            ),
        ];
        for (what, files, want) in table {
            let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
            assert_eq!(load_err(&files, Limits::default()), want, "{what}");
        }
    }

    #[test]
    fn runaway_evaluation_is_bounded() {
        let small = Limits {
            instructions: 1_000_000,
            ..Limits::default()
        };
        let msg = "evaluation took more than 1000000 Lua instructions (an endless loop?)";
        let loops = [
            (
                "Kyuafile",
                format!("{PROLOGUE}\nwhile true do end\n"),
                4,
                "",
            ),
            (
                "Kyuafile",
                format!("{PROLOGUE}pcall(function()\n  while true do end\nend)\n"),
                4,
                "",
            ),
            (
                "sub/Kyuafile",
                format!("{PROLOGUE}local i = 0\nrepeat i = i + 1 until false\n"),
                4,
                "sub/",
            ),
        ];
        for (file, body, line, prefix) in loops {
            let mut files = vec![(file, body.as_str())];
            if file != "Kyuafile" {
                files.push(("Kyuafile", "syntax(2)\ninclude('sub/Kyuafile')\n"));
            }
            assert_eq!(
                load_err(&files, small),
                format!(
                    "Load of '{{D}}/{prefix}Kyuafile' failed: {{D}}/{prefix}Kyuafile:{line}: {msg}"
                ),
                "{body}"
            );
        }

        let tight = Limits {
            memory: 4 << 20,
            ..Limits::default()
        };
        let hog = format!(
            "{PROLOGUE}local t = {{}}\nfor i = 1, 1e9 do t[i] = string.rep('x', 100) .. i end\n"
        );
        assert_eq!(
            load_err(&[("Kyuafile", &hog)], tight),
            "Load of '{D}/Kyuafile' failed: {D}/Kyuafile: evaluation needed more than 4194304 \
             bytes of Lua memory"
        );

        let shallow = Limits {
            depth: 2,
            ..Limits::default()
        };
        let inc = "syntax(2)\ninclude('a/Kyuafile')\n";
        assert_eq!(
            load_err(
                &[
                    ("Kyuafile", inc),
                    ("a/Kyuafile", inc),
                    ("a/a/Kyuafile", inc)
                ],
                shallow
            ),
            "Load of '{D}/a/Kyuafile' failed: {D}/a/Kyuafile:2: includes nest more than 2 deep"
        );
    }

    #[test]
    fn wall_clock_backstop() {
        // Time spent inside one C function sees no instruction hook.
        let quick = Limits {
            wall: Duration::from_millis(100),
            ..Limits::default()
        };
        let slow = format!("{PROLOGUE}string.rep('a', 300):find('.-.-.-b')\n");
        assert_eq!(
            load_err(&[("Kyuafile", &slow)], quick),
            "Load of '{D}/Kyuafile' failed: evaluation did not finish within 100ms"
        );
    }

    #[test]
    fn top_file_errors() {
        let dir = tree(&[]);
        let e = load(dir.path()).expect_err("no Kyuafile");
        assert!(matches!(e, KyuafileError::NotFound { .. }), "{e}");
        assert_eq!(e.path(), dir.path().join("Kyuafile"));
        let e = load(&dir.path().join("x")).expect_err("no file");
        assert_eq!(
            e.to_string(),
            format!(
                "Load of '{}' failed: file not found",
                dir.path().join("x").display()
            )
        );
    }

    #[test]
    fn long_paths_keep_their_name() {
        let long = format!("{}/Kyuafile", "d".repeat(80));
        let dir = tree(&[
            (
                "Kyuafile",
                format!("syntax(2)\ninclude('{long}')\n").as_str(),
            ),
            (long.as_str(), "syntax(2)\n\nerror('x')\n"),
        ]);
        let e = load(dir.path()).expect_err("fails").to_string();
        let file = dir.path().join(&long);
        assert_eq!(e, format!("Load of '{0}' failed: {0}:3: x", file.display()));
        std::fs::write(&file, "syntax(2)\n\nerror(\n").expect("write");
        let e = load(dir.path()).expect_err("fails").to_string();
        assert!(e.contains(&format!("{}:4:", file.display())), "{e}");
    }

    #[test]
    fn paths_normalize() {
        assert_eq!(normalize("", "a").as_deref(), Some("a"));
        assert_eq!(normalize("sub", "../a/./b//c").as_deref(), Some("a/b/c"));
        assert_eq!(normalize("sub", "..").as_deref(), Some(""));
        assert_eq!(normalize("sub", "../.."), None);
        assert_eq!(normalize("", "../a"), None);
    }

    /// Compares what `kyua list` finds in a small tree with what `load` finds.
    #[test]
    fn matches_kyua() {
        if Command::new("kyua").arg("help").output().is_err() {
            eprintln!("skipping matches_kyua: kyua is not on PATH");
            return;
        }
        let dir = tree(&[
            (
                "Kyuafile",
                "syntax(2)\ntest_suite('top')\nplain_test_program{name='zeta', timeout=5}\n\
                 include('sub/Kyuafile')\n\
                 tap_test_program{name='alpha', test_suite='own', description='first letter'}\n",
            ),
            (
                "sub/Kyuafile",
                "syntax(2)\ntest_suite('sub')\n\
                 plain_test_program{name='mid', is_exclusive='true', ['custom.x']='y'}\n\
                 for f in fs.files('.') do\n\
                   if f:match('^t_') then plain_test_program{name=f} end\n\
                 end\n",
            ),
            ("zeta", ""),
            ("alpha", ""),
            ("sub/mid", ""),
            ("sub/t_1", ""),
        ]);
        let out = Command::new("kyua")
            .arg("list")
            .arg("-v")
            .arg("-k")
            .arg(dir.path().join("Kyuafile"))
            .current_dir(dir.path())
            .output()
            .expect("kyua runs");
        assert!(
            out.status.success(),
            "kyua list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "path:case (suite)" lines, then "    key = value" lines.
        let mut kyua: Vec<Listed> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(prop) = line.strip_prefix("    ") {
                let (k, v) = prop.split_once(" = ").expect("key = value");
                let last = kyua.last_mut().expect("a program first");
                last.2.push((k.to_string(), v.to_string()));
            } else {
                let (id, suite) = line.split_once(" (").expect("path:case (suite)");
                let (path, _case) = id.rsplit_once(':').expect("path:case");
                let suite = suite.trim_end_matches(')');
                kyua.push((path.to_string(), suite.to_string(), Vec::new()));
            }
        }
        let suite = load_ok(&dir);
        let ours: Vec<(String, String)> = suite
            .programs
            .iter()
            .map(|p| (p.path.clone(), p.test_suite.clone()))
            .collect();
        let theirs: Vec<(String, String)> = kyua
            .iter()
            .map(|(p, s, _)| (p.clone(), s.clone()))
            .collect();
        assert_eq!(ours, theirs);
        for (program, (_, _, props)) in suite.programs.iter().zip(&kyua) {
            let all = program.metadata.properties();
            for (k, v) in props {
                assert!(
                    all.contains(&(k.clone(), v.clone())),
                    "{}: kyua has {k} = {v}, we have {all:?}",
                    program.path
                );
            }
        }
    }
}
