//! Loading suites: Kyuafile trees (Lua) into test programs.

pub mod bpf_build;
pub(crate) mod build_cache;
pub mod c_build;
pub mod kselftest;
pub mod kyuafile;

pub use kyuafile::{load, KyuafileError, Suite};
