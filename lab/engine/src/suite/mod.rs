//! Loading suites: Kyuafile trees (Lua) into test programs.

pub mod bpf_build;
pub(crate) mod build_cache;
pub mod c_build;
pub mod kselftest;
pub mod kyuafile;

pub use kyuafile::{load, KyuafileError, Suite};

/// Reads a suite's or a configuration's file of at most `max` bytes: a larger one is an error
/// (`InvalidData`, saying the limit), never a huge allocation or a silently cut file.
pub(crate) fn read_limited(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}
