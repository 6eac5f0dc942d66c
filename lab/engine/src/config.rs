//! The user's configuration of a run, as Kyua's engine has it: `kyua.conf` files and
//! `-v KEY=VALUE` overrides, the variables test programs are given and `required_configs`
//! checks against.
//!
//! A configuration file is Kyua's: Lua that calls `syntax(2)` (or `syntax(1)`) and then sets
//! `unprivileged_user` (a name or a numeric UID), `parallelism`, `architecture`, `platform`,
//! `execenvs`, and per-suite variables `test_suites.SUITE.NAME = 'value'` (strings or numbers;
//! the suite's table springs up on first use). Other globals are ignored, as Kyua ignores
//! them. `-v` takes the same keys (`-v test_suites.SUITE.NAME=VALUE`,
//! `-v unprivileged_user=nobody`) and overrides the file.
//!
//! What a test program sees follows Kyua's `scheduler::generate_config`: the variables of its
//! own test suite, and `unprivileged_user` under both spellings (`unprivileged-user`,
//! `unprivileged_user`) when it is set. `required_configs` names are looked up the same way
//! (`unprivileged-user`/`unprivileged_user` are the top-level variable; others the suite's).
//!
//! Evaluation is hermetic and bounded like a Kyuafile's: no `io`, `os` or `require`, a size
//! limit on the file, and budgets of Lua memory and instructions.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use mlua::chunk::ChunkMode;
use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};

use crate::suite::kyuafile::{at, full_chunk_name};

/// The largest configuration file lab reads.
const MAX_FILE: u64 = 1 << 20;
/// Lua memory one file may use.
const MAX_MEMORY: usize = 16 << 20;
/// Lua instructions one file may run.
const MAX_INSTRUCTIONS: u64 = 50_000_000;
/// How often the instruction hook runs.
const HOOK_STEP: u32 = 10_000;

/// Why a configuration could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("load of '{path}' failed: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, starting with `PATH:LINE:` where Lua knows the line.
        message: String,
    },
    /// A `-v KEY=VALUE` override is not valid.
    #[error("bad variable '{text}': {message}")]
    Variable {
        /// The override as given.
        text: String,
        /// What is wrong.
        message: String,
    },
}

/// A run's configuration: Kyua's configuration tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserConfig {
    /// `unprivileged_user`: who `required_user = 'unprivileged'` cases run as (a name of the
    /// guest's or a numeric `UID[:GID]`); unset, such cases are skipped, as Kyua run as root
    /// skips them.
    pub unprivileged_user: Option<String>,
    /// `parallelism`, where set.
    pub parallelism: Option<usize>,
    /// `architecture`, where set: what `allowed_architectures` is checked against.
    pub architecture: Option<String>,
    /// `platform`, where set: what `allowed_platforms` is checked against.
    pub platform: Option<String>,
    /// `test_suites.SUITE.NAME`: each suite's variables.
    pub test_suites: BTreeMap<String, BTreeMap<String, String>>,
}

impl UserConfig {
    /// Loads a Kyua configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = read_bounded(path)?;
        let mut config = UserConfig::default();
        eval(path, &source, &mut config).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// The file Kyua reads when given none: `~/.kyua/kyua.conf`, else `/etc/kyua/kyua.conf`,
    /// where it exists.
    pub fn default_file() -> Option<PathBuf> {
        let user = std::env::var_os("HOME").map(|h| Path::new(&h).join(".kyua/kyua.conf"));
        user.into_iter()
            .chain([PathBuf::from("/etc/kyua/kyua.conf")])
            .find(|p| p.is_file())
    }

    /// Applies one `-v KEY=VALUE` override. Returns a warning for a key Kyua ignores (it
    /// knows no such property), so a typo does not pass unnoticed.
    pub fn set(&mut self, text: &str) -> Result<Option<String>, ConfigError> {
        let bad = |message: String| ConfigError::Variable {
            text: text.to_string(),
            message,
        };
        let (key, value) = text
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| bad("expected KEY=VALUE".into()))?;
        match key {
            "unprivileged_user" | "unprivileged-user" => {
                self.unprivileged_user = Some(user(value).map_err(bad)?);
            }
            "parallelism" => self.parallelism = Some(parallelism(value).map_err(bad)?),
            "architecture" => self.architecture = Some(value.to_string()),
            "platform" => self.platform = Some(value.to_string()),
            "execenvs" => {}
            _ => {
                let Some(rest) = key.strip_prefix("test_suites.") else {
                    return Ok(Some(format!(
                        "variable '{key}' is no configuration property (Kyua ignores it); a \
                         test suite's variable is test_suites.SUITE.{key}"
                    )));
                };
                let (suite, name) = rest
                    .split_once('.')
                    .filter(|(s, n)| !s.is_empty() && !n.is_empty())
                    .ok_or_else(|| bad("expected test_suites.SUITE.NAME=VALUE".into()))?;
                self.test_suites
                    .entry(suite.to_string())
                    .or_default()
                    .insert(name.to_string(), value.to_string());
            }
        }
        Ok(None)
    }

    /// The variables a program of `test_suite` is given (Kyua's `generate_config`).
    pub fn program_vars(&self, test_suite: &str) -> BTreeMap<String, String> {
        let mut vars = self
            .test_suites
            .get(test_suite)
            .cloned()
            .unwrap_or_default();
        if let Some(user) = &self.unprivileged_user {
            vars.insert("unprivileged-user".into(), user.clone());
            vars.insert("unprivileged_user".into(), user.clone());
        }
        vars
    }

    /// Whether `required_configs` name `name` is defined for a program of `test_suite`.
    pub fn is_defined(&self, test_suite: &str, name: &str) -> bool {
        match name {
            "unprivileged-user" | "unprivileged_user" => self.unprivileged_user.is_some(),
            _ => self
                .test_suites
                .get(test_suite)
                .is_some_and(|vars| vars.contains_key(name)),
        }
    }

    /// The configuration as `kyua config` prints it: `KEY = VALUE` lines, sorted.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let top = [
            ("architecture", self.architecture.clone()),
            ("parallelism", self.parallelism.map(|p| p.to_string())),
            ("platform", self.platform.clone()),
        ];
        for (k, v) in top {
            if let Some(v) = v {
                lines.push(format!("{k} = {v}"));
            }
        }
        for (suite, vars) in &self.test_suites {
            for (name, value) in vars {
                lines.push(format!("test_suites.{suite}.{name} = {value}"));
            }
        }
        if let Some(user) = &self.unprivileged_user {
            lines.push(format!("unprivileged_user = {user}"));
        }
        lines
    }
}

/// A user of the guest: `nobody`, `root`, or a numeric `UID[:GID]` (UIDs 0 and 65534 become
/// their names, as Kyua passes names on).
fn user(value: &str) -> Result<String, String> {
    match value {
        "nobody" | "65534" => Ok("nobody".into()),
        "root" | "0" => Ok("root".into()),
        _ => {
            let (uid, gid) = value.split_once(':').unwrap_or((value, value));
            if uid.parse::<u32>().is_ok() && gid.parse::<u32>().is_ok() {
                Ok(value.to_string())
            } else {
                Err(format!(
                    "cannot find user with name '{value}' in the guest (its users are nobody \
                     and root; others by numeric UID[:GID])"
                ))
            }
        }
    }
}

fn parallelism(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| "parallelism must be a positive integer".to_string())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    crate::suite::read_limited(path, MAX_FILE).map_err(|source| {
        if source.kind() == std::io::ErrorKind::InvalidData {
            ConfigError::Invalid {
                path: path.to_path_buf(),
                message: source.to_string(),
            }
        } else {
            ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Evaluates a configuration file into `config`; the error is a one-line message.
fn eval(path: &Path, source: &[u8], config: &mut UserConfig) -> Result<(), String> {
    let display = path.display().to_string();
    let state = Rc::new(State::default());
    let outcome = run(&display, source, &state);
    if let Err(e) = outcome {
        return Err(describe(&display, &e));
    }
    if state.version.borrow().is_none() {
        return Err(format!("{display}: syntax() never called"));
    }
    let globals = state.globals.borrow();
    let at = |key: &str| format!("{display}: invalid value for property '{key}'");
    if let Some(v) = globals.get("unprivileged_user") {
        config.unprivileged_user =
            Some(user(v).map_err(|e| format!("{}: {e}", at("unprivileged_user")))?);
    }
    if let Some(v) = globals.get("parallelism") {
        config.parallelism =
            Some(parallelism(v).map_err(|e| format!("{}: {e}", at("parallelism")))?);
    }
    config.architecture = globals.get("architecture").cloned();
    config.platform = globals.get("platform").cloned();
    config.test_suites = state.suites.borrow().clone();
    Ok(())
}

/// What a file's evaluation gathers.
#[derive(Default)]
struct State {
    version: RefCell<Option<i64>>,
    /// The known top-level properties set, as strings.
    globals: RefCell<BTreeMap<String, String>>,
    suites: RefCell<BTreeMap<String, BTreeMap<String, String>>>,
    instructions: RefCell<u64>,
}

/// The properties Kyua's configuration knows at the top level.
const KNOWN: &[&str] = &[
    "architecture",
    "execenvs",
    "parallelism",
    "platform",
    "unprivileged_user",
];

fn run(display: &str, source: &[u8], state: &Rc<State>) -> mlua::Result<()> {
    let lua = Lua::new_with(
        StdLib::STRING | StdLib::TABLE | StdLib::MATH,
        LuaOptions::new(),
    )?;
    lua.set_memory_limit(MAX_MEMORY)?;
    install(&lua, state)?;
    let counter = Rc::clone(state);
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_STEP),
        move |_, _| {
            let mut spent = counter.instructions.borrow_mut();
            *spent += u64::from(HOOK_STEP);
            if *spent > MAX_INSTRUCTIONS {
                return Err(mlua::Error::RuntimeError(format!(
                    "evaluation took more than {MAX_INSTRUCTIONS} Lua instructions (an endless \
                     loop?)"
                )));
            }
            Ok(VmState::Continue)
        },
    )?;
    lua.load(source)
        .set_name(format!("={display}"))
        .set_mode(ChunkMode::Text)
        .exec()
}

/// The globals: `syntax`, the known properties (checked as set), and `test_suites`.
fn install(lua: &Lua, state: &Rc<State>) -> mlua::Result<()> {
    let g = lua.globals();
    for name in ["dofile", "loadfile", "require", "warn", "load"] {
        g.raw_set(name, Value::Nil)?;
    }
    g.raw_set(
        "print",
        lua.create_function(|_, _: mlua::MultiValue| Ok(()))?,
    )?;
    let s = Rc::clone(state);
    g.raw_set(
        "syntax",
        lua.create_function(move |lua, (a, b): (Value, Value)| {
            // syntax(2), or the older syntax('config', 1).
            let version = match (&a, &b) {
                (Value::Integer(n), Value::Nil) => *n,
                (Value::String(f), Value::Integer(n)) if f.to_str()? == "config" => *n,
                _ => return Err(fail(lua, "syntax() expects a version")),
            };
            if !(1..=2).contains(&version) {
                return Err(fail(lua, format!("Unsupported config version {version}")));
            }
            *s.version.borrow_mut() = Some(version);
            Ok(())
        })?,
    )?;
    g.raw_set("test_suites", test_suites(lua, state)?)?;
    let meta = lua.create_table()?;
    let s = Rc::clone(state);
    meta.raw_set(
        "__newindex",
        lua.create_function(move |lua, (t, key, value): (Table, Value, Value)| {
            let name = match &key {
                Value::String(k) => k.to_str()?.to_string(),
                _ => return t.raw_set(key, value),
            };
            if name == "test_suites" {
                return Err(fail(
                    lua,
                    "Invalid value for property 'test_suites': Not a table of suites",
                ));
            }
            if !KNOWN.contains(&name.as_str()) {
                // Kyua ignores what it does not know.
                return t.raw_set(key, value);
            }
            let text = leaf(&value).ok_or_else(|| {
                fail(
                    lua,
                    format!("Invalid value for property '{name}': Not a string"),
                )
            })?;
            s.globals.borrow_mut().insert(name, text);
            Ok(())
        })?,
    )?;
    g.set_metatable(Some(meta))?;
    Ok(())
}

/// `test_suites`: indexing it by a suite's name yields that suite's table, whose assignments
/// (strings or numbers) are recorded.
fn test_suites(lua: &Lua, state: &Rc<State>) -> mlua::Result<Table> {
    let root = lua.create_table()?;
    let meta = lua.create_table()?;
    let s = Rc::clone(state);
    meta.raw_set(
        "__index",
        lua.create_function(move |lua, (t, suite): (Table, String)| {
            let table = lua.create_table()?;
            let vars = lua.create_table()?;
            let s2 = Rc::clone(&s);
            let s = Rc::clone(&s);
            let name = suite.clone();
            vars.raw_set(
                "__newindex",
                lua.create_function(move |lua, (_, key, value): (Table, String, Value)| {
                    let text = leaf(&value).ok_or_else(|| {
                        fail(
                            lua,
                            format!(
                            "Invalid value for property 'test_suites.{name}.{key}': Not a string"
                        ),
                        )
                    })?;
                    s.suites
                        .borrow_mut()
                        .entry(name.clone())
                        .or_default()
                        .insert(key, text);
                    Ok(())
                })?,
            )?;
            let name2 = suite.clone();
            vars.raw_set(
                "__index",
                lua.create_function(move |_, (_, key): (Table, String)| {
                    Ok(s2
                        .suites
                        .borrow()
                        .get(&name2)
                        .and_then(|v| v.get(&key))
                        .cloned())
                })?,
            )?;
            table.set_metatable(Some(vars))?;
            t.raw_set(suite, table.clone())?;
            Ok(table)
        })?,
    )?;
    meta.raw_set(
        "__newindex",
        lua.create_function(|lua, (_, suite): (Table, String)| -> mlua::Result<()> {
            Err(fail(
                lua,
                format!("Invalid value for property 'test_suites.{suite}': Not a string"),
            ))
        })?,
    )?;
    root.set_metatable(Some(meta))?;
    Ok(root)
}

/// An error located at the Lua line that caused it.
fn fail(lua: &Lua, message: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::RuntimeError(at(lua, message))
}

/// A property's value as text: strings as they are, numbers as Lua prints them.
fn leaf(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_str().ok()?.to_string()),
        Value::Integer(n) => Some(n.to_string()),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => Some(format!("{n:.1}")),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One line for a Lua error, with the file and line where Lua gives them.
fn describe(display: &str, error: &mlua::Error) -> String {
    match error {
        mlua::Error::CallbackError { cause, .. } => describe(display, cause),
        mlua::Error::MemoryError(_) => {
            format!("{display}: evaluation needed more than {MAX_MEMORY} bytes of Lua memory")
        }
        mlua::Error::SyntaxError { message, .. } | mlua::Error::RuntimeError(message) => {
            let message = message
                .split_once("\nstack traceback:")
                .map_or(message.as_str(), |(m, _)| m);
            full_chunk_name(display, message)
        }
        other => format!("{display}: {other}"),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<UserConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kyua.conf");
        std::fs::write(&path, text).unwrap();
        UserConfig::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn a_kyua_conf_sets_the_user_and_each_suites_variables() {
        let config = load(
            "syntax(2)\n\
             unprivileged_user = 'nobody'\n\
             parallelism = 4\n\
             test_suites.kyua.iterations = 1000\n\
             test_suites.kyua.name = 'x'\n\
             test_suites['other'].flag = 'y'\n\
             local scratch = 3\n\
             ignored_by_kyua = 2\n",
        )
        .unwrap();
        assert_eq!(
            config.lines(),
            [
                "parallelism = 4",
                "test_suites.kyua.iterations = 1000",
                "test_suites.kyua.name = x",
                "test_suites.other.flag = y",
                "unprivileged_user = nobody",
            ]
        );
        // What a program is given: its suite's variables and the user, both spellings.
        let vars = config.program_vars("kyua");
        assert_eq!(vars.len(), 4, "{vars:?}");
        assert_eq!(vars["unprivileged-user"], "nobody");
        assert_eq!(vars["iterations"], "1000");
        assert!(!config.program_vars("none").contains_key("iterations"));
        assert!(config.is_defined("kyua", "name"));
        assert!(!config.is_defined("other", "name"));
        assert!(config.is_defined("x", "unprivileged-user"));
    }

    #[test]
    fn what_kyua_refuses_is_refused_with_the_line() {
        let err = load("syntax(2)\ntest_suites.a.b = true\n").unwrap_err();
        assert!(err.contains("kyua.conf:2:"), "{err}");
        assert!(err.contains("'test_suites.a.b': Not a string"), "{err}");
        let err = load("syntax(2)\ntest_suites.x = {a='b'}\n").unwrap_err();
        assert!(err.contains("'test_suites.x'"), "{err}");
        let err = load("syntax(3)\n").unwrap_err();
        assert!(err.contains("Unsupported config version 3"), "{err}");
        let err = load("unprivileged_user = 'nobody'\n").unwrap_err();
        assert!(err.contains("syntax() never called"), "{err}");
        let err = load("syntax(2)\nparallelism = 0\n").unwrap_err();
        assert!(err.contains("positive integer"), "{err}");
        let err = load("syntax(2)\nunprivileged_user = 'alice'\n").unwrap_err();
        assert!(err.contains("'alice'"), "{err}");
        let err = load("syntax(2)\nwhile true do end\n").unwrap_err();
        assert!(err.contains("instructions"), "{err}");
        let err = load("syntax(2)\nlocal t = {} for i = 1, 1e8 do t[i] = i end\n").unwrap_err();
        assert!(
            err.contains("memory") || err.contains("instructions"),
            "{err}"
        );
        let err = load("syntax(2)\nos.exit(1)\n").unwrap_err();
        assert!(err.contains("kyua.conf:2:"), "{err}");
    }

    #[test]
    fn variables_on_the_command_line_take_kyuas_keys() {
        let mut config = UserConfig::default();
        assert_eq!(config.set("test_suites.s.v=a=b").unwrap(), None);
        assert_eq!(config.set("unprivileged_user=65534").unwrap(), None);
        assert_eq!(config.program_vars("s")["v"], "a=b");
        assert_eq!(config.unprivileged_user.as_deref(), Some("nobody"));
        config.set("unprivileged_user=1000:100").unwrap();
        assert_eq!(config.unprivileged_user.as_deref(), Some("1000:100"));
        let warning = config.set("myvar=1").unwrap().unwrap();
        assert!(warning.contains("test_suites.SUITE.myvar"), "{warning}");
        assert!(config.set("novalue").is_err());
        assert!(config.set("test_suites.nosuite=1").is_err());
        assert!(config.set("unprivileged_user=alice").is_err());
        assert!(config.set("parallelism=x").is_err());
    }
}
