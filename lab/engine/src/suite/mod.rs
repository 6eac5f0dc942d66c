//! Loading suites: Kyuafile trees (Lua) into test programs.

pub mod kyuafile;

pub use kyuafile::{load, KyuafileError, Suite};
