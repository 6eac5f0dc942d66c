//! The `bpf` multi-call entry: argument handling and exit codes. `list` exits 2 on an
//! unreadable or invalid object; `run` always prints one JSON line per test and exits 0 unless
//! it could not even write them, or its arguments are wrong (2).
//!
//! ```text
//! /init bpf list OBJ
//! /init bpf run OBJ [--object] [--global NAME=VALUE]… [--tail-call MAP:SLOT=PROGRAM]…
//!                   [--maps-setup PATH] NAME…
//! /init bpf describe OBJ
//! ```
//!
//! Without `--object`, `run` takes one NAME and loads the object for it alone; with it, one
//! load serves every NAME, run in name order with shared maps (see `run`).

use std::ffi::OsString;
use std::io::{Read, Write};

use super::elf::Elf;
use super::object::{Slot, SlotTarget};
use super::run::Options;

/// Objects larger than this are refused.
const MAX_OBJECT: u64 = 64 << 20;

const USAGE: &str = "usage: /init bpf list OBJ | /init bpf run OBJ [--object] \
[--global NAME=VALUE]... [--tail-call MAP:SLOT=PROGRAM]... [--maps-setup PATH] NAME... | \
/init bpf describe OBJ";

/// Runs `/init bpf ARGS...` (ARGS without the `bpf`) and returns the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["list", _] => list(&args[1]),
        ["describe", _] => describe(&args[1]),
        ["run", _, ..] => match parse_run(&words[2..]) {
            Ok(run) => self::run(&args[1], run),
            Err(why) => {
                eprintln!("guest-init bpf: {why}\n{USAGE}");
                2
            }
        },
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

/// A parsed `run`.
#[derive(Debug, Default, PartialEq)]
struct Run {
    object: bool,
    names: Vec<String>,
    options: OptionsArgs,
}

#[derive(Debug, Default, PartialEq)]
struct OptionsArgs {
    globals: Vec<(String, String)>,
    tail_calls: Vec<(String, u32, String)>,
    maps_setup: Option<String>,
}

fn parse_run(args: &[String]) -> Result<Run, String> {
    let mut run = Run::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} wants a value"))
        };
        match a.as_str() {
            "--object" => run.object = true,
            "--global" => {
                let v = value("--global")?;
                let (k, val) = v
                    .split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("--global {v}: expected NAME=VALUE"))?;
                run.options.globals.push((k.to_string(), val.to_string()));
            }
            "--tail-call" => {
                let v = value("--tail-call")?;
                let bad = || format!("--tail-call {v}: expected MAP:SLOT=PROGRAM");
                let (target, program) = v.split_once('=').ok_or_else(bad)?;
                let (map, slot) = target.rsplit_once(':').ok_or_else(bad)?;
                let slot = slot.parse().map_err(|_| bad())?;
                if map.is_empty() || program.is_empty() {
                    return Err(bad());
                }
                run.options
                    .tail_calls
                    .push((map.to_string(), slot, program.to_string()));
            }
            "--maps-setup" => run.options.maps_setup = Some(value("--maps-setup")?),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            name => run.names.push(name.to_string()),
        }
    }
    match (run.object, run.names.len()) {
        (_, 0) => Err("no test named".into()),
        (false, n) if n > 1 => Err("several tests need --object".into()),
        _ => Ok(run),
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

/// Prints the object's test names, one a line, after `# stages: jump` when its tests use
/// Kmesh's `jump` stage (the host chooses Kmesh's harness for them: a load per test).
fn list(path: &OsString) -> i32 {
    let names = read_object(path).and_then(|data| {
        Elf::parse(&data)
            .map(|elf| {
                let jump = elf.tests().iter().any(|t| t.section.ends_with("/jump"));
                (elf.test_names(), jump)
            })
            .map_err(|e| format!("{}: {e}", path.to_string_lossy()))
    });
    match names {
        Ok((names, jump)) => {
            let mut out = std::io::stdout().lock();
            if jump && writeln!(out, "# stages: jump").is_err() {
                return 1;
            }
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

fn run(path: &OsString, run: Run) -> i32 {
    super::sys::raise_memlock();
    let opts = Options {
        globals: run.options.globals,
        tail_calls: run
            .options
            .tail_calls
            .into_iter()
            .map(|(map, slot, program)| Slot {
                origin: format!("tail_calls {map}[{slot}] = '{program}'"),
                map,
                slot,
                target: SlotTarget::Program(program),
            })
            .collect(),
        maps_setup: run.options.maps_setup,
    };
    let reports = match read_object(path) {
        Ok(data) if run.object => super::run::run_object(&data, &run.names, &opts),
        Ok(data) => vec![super::run::run_test(&data, &run.names[0], &opts)],
        Err(why) => run
            .names
            .iter()
            .map(|n| super::report::Report::new(n).error(why.clone()))
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    for report in reports {
        if writeln!(out, "{}", report.to_json()).is_err() {
            return 1;
        }
    }
    i32::from(out.flush().is_err())
}

/// What the object holds, as the runner reads it, without the kernel: its maps (as aya-obj
/// defines them for creation) and programs (name, section, type), one JSON object.
fn describe(path: &OsString) -> i32 {
    let data = match read_object(path) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("guest-init bpf: {why}");
            return 2;
        }
    };
    match super::load::describe(&data) {
        Ok(json) => {
            println!("{json}");
            0
        }
        Err(e) => {
            eprintln!(
                "guest-init bpf: {}: {}",
                path.to_string_lossy(),
                super::chain(&e)
            );
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn run_arguments_parse() {
        let r = parse_run(&words(&[
            "--object",
            "--global",
            "bpf_log_level=3",
            "--tail-call",
            "km_xdp_tailcall:0=policy_check",
            "b",
            "a",
        ]))
        .unwrap();
        assert!(r.object);
        assert_eq!(r.names, ["b", "a"]);
        assert_eq!(r.options.globals, [("bpf_log_level".into(), "3".into())]);
        assert_eq!(
            r.options.tail_calls,
            [("km_xdp_tailcall".into(), 0, "policy_check".into())]
        );
        assert!(parse_run(&words(&["a", "b"])).is_err());
        assert!(parse_run(&words(&[])).is_err());
        assert!(parse_run(&words(&["--global", "x", "a"])).is_err());
        assert!(parse_run(&words(&["--tail-call", "m:x=p", "a"])).is_err());
        assert!(parse_run(&words(&["--bogus", "a"])).is_err());
    }
}
