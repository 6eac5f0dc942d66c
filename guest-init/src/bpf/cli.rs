//! The `bpf` multi-call entry: argument handling and exit codes. `list` exits 2 on an
//! unreadable or invalid object; `run` always prints its JSON line and exits 0 unless it could
//! not even write that.

use std::ffi::OsString;
use std::io::{Read, Write};

use super::elf::Elf;

/// Objects larger than this are refused.
const MAX_OBJECT: u64 = 64 << 20;

const USAGE: &str = "usage: /init bpf list OBJ | /init bpf run OBJ NAME";

/// Runs `/init bpf ARGS...` (ARGS without the `bpf`) and returns the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["list", _] => list(&args[1]),
        ["run", _, name] => run(&args[1], name),
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

fn read_object(path: &OsString) -> Result<Vec<u8>, String> {
    let shown = path.to_string_lossy();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let mut data = Vec::new();
    file.take(MAX_OBJECT + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if data.len() as u64 > MAX_OBJECT {
        return Err(format!("{shown} is larger than {} MiB", MAX_OBJECT >> 20));
    }
    Ok(data)
}

fn list(path: &OsString) -> i32 {
    let names = read_object(path).and_then(|data| {
        Elf::parse(&data)
            .map(|elf| elf.test_names())
            .map_err(|e| format!("{}: {e}", path.to_string_lossy()))
    });
    match names {
        Ok(names) => {
            let mut out = std::io::stdout().lock();
            for n in names {
                if writeln!(out, "{n}").is_err() {
                    return 1;
                }
            }
            i32::from(out.flush().is_err())
        }
        Err(why) => {
            eprintln!("guest-init bpf: {why}");
            2
        }
    }
}

fn run(path: &OsString, name: &str) -> i32 {
    super::sys::raise_memlock();
    let report = match read_object(path) {
        Ok(data) => super::run::run(&data, name),
        Err(why) => super::report::Report::new(name).error(why),
    };
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{}", report.to_json()).and_then(|()| out.flush());
    i32::from(written.is_err())
}
