//! Running tests of an object the way Cilium's and Kmesh's harnesses do: pktgen on a zeroed
//! buffer, setup (or jump) on its packet, check on the setup's return code (4 bytes, host
//! endianness) followed by the setup's packet (the packet alone when there is no setup), then
//! `suite_result_map[0]` read back; the check's return code is the verdict (the host judges).
//!
//! Two ways, as the harnesses differ:
//! - [`run_test`] (Kmesh, `state = 'test'`): a fresh load of the object for one test;
//! - [`run_object`] (Cilium, `state = 'object'`): one load for every test, run in name order,
//!   maps shared, only `suite_result_map` and `mock_skb_meta_map` cleared after each test.
//!
//! Either way, before the stages run, the globals asked for are set, the object's slots
//! (static initialisers, iproute2 tail sections) and the Kyuafile's `tail_calls` are filled
//! with what the run's programs reach ([`super::tail`]), and an optional `maps_setup` program
//! runs with the maps pinned.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use super::elf::Stage;
use super::load::Loaded;
use super::object::{Object, Program, Slot};
use super::progtype::{ProgKind, RunKind};
use super::report::{Outcome, Report, StageRun};
use super::sys;
use super::tail;

/// The zeroed input of pktgen: a page less XDP's headroom and the shared info tailroom, the
/// largest packet every packet program type takes (Cilium's size).
pub const PACKET_SIZE: usize = 4096 - 256 - 320;
/// Room for a program to grow the packet, past its input size.
const GROWTH: usize = 4096;
/// No packet ever gets larger than this.
const MAX_PACKET: usize = 1 << 20;
/// Cilium's tc context: a zeroed `__sk_buff` padded to 256 bytes.
const SKB_CTX_SIZE: usize = 256;
/// `struct bpf_flow_keys` is 56 bytes; leave room for newer kernels.
const FLOW_KEYS_SIZE: usize = 256;
/// Raw tracepoints take at most 12 u64 arguments.
const RAW_TP_ARGS: usize = 12 * 8;
/// The largest map value read back or cleared.
const MAX_RESULT: usize = 1 << 20;
const RESULT_MAP: &str = "suite_result_map";
/// The maps Cilium's harness clears after each test of a shared object.
const CLEARED_MAPS: [&str; 2] = [RESULT_MAP, "mock_skb_meta_map"];
const ENOTSUPP: i32 = 524;
/// Where `maps_setup` finds the object's maps pinned.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lab";

/// What a run is given besides the object.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Globals to set before load: (name, value).
    pub globals: Vec<(String, String)>,
    /// Slots to fill by program name (the Kyuafile's `tail_calls`).
    pub tail_calls: Vec<Slot>,
    /// A program to run once the maps exist, with them pinned under [`PIN_ROOT`].
    pub maps_setup: Option<String>,
}

/// An object loaded for a run, with its slots filled.
struct Prepared {
    object: Object,
    loaded: Loaded,
    _slot_progs: Vec<OwnedFd>,
}

/// Parses and loads `data`, fills its slots for the programs of `tests`, and runs the maps
/// setup; an error names what failed (and the verifier log where one rejected a program).
fn prepare(
    data: &[u8],
    tests: &[String],
    opts: &Options,
) -> Result<Prepared, (String, Option<String>)> {
    let object = Object::parse(data).map_err(|e| (super::chain(&e), None))?;
    let loaded = Loaded::new(data, &object, &opts.globals).map_err(|e| {
        (
            format!("cannot load the object: {}", super::chain(&e)),
            None,
        )
    })?;
    let mut entries = Vec::new();
    for t in tests {
        if let Ok(stages) = object.stages_of(t) {
            entries.extend(stages.into_iter().map(|(_, p)| p.name));
        }
    }
    let slot_progs = tail::fill(&loaded, &object, &opts.tail_calls, &entries)
        .map_err(|u| (u.reason, u.verifier_log))?;
    if let Some(program) = &opts.maps_setup {
        maps_setup(&loaded, program).map_err(|why| (why, None))?;
    }
    Ok(Prepared {
        object,
        loaded,
        _slot_progs: slot_progs,
    })
}

/// Runs test `name` of the object `data` with a load of its own; never fails.
pub fn run_test(data: &[u8], name: &str, opts: &Options) -> Report {
    let report = Report::new(name);
    match prepare(data, std::slice::from_ref(&name.to_string()), opts) {
        Ok(p) => run_one(&p, name),
        Err((why, log)) => {
            let mut r = report.error(why);
            r.verifier_log = log;
            r
        }
    }
}

/// Runs tests `names` of the object `data` in name order with one load; one report each.
pub fn run_object(data: &[u8], names: &[String], opts: &Options) -> Vec<Report> {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    let p = match prepare(data, &names, opts) {
        Ok(p) => p,
        Err((why, log)) => {
            return names
                .iter()
                .map(|n| {
                    let mut r = Report::new(n).error(why.clone());
                    r.verifier_log = log.clone();
                    r
                })
                .collect();
        }
    };
    let mut out = Vec::with_capacity(names.len());
    for name in &names {
        let started = Instant::now();
        let mut report = run_one(&p, name);
        report.wall_ns = Some(started.elapsed().as_nanos() as u64);
        if let Err(why) = clear_maps(&p.loaded) {
            report = report.error(why);
        }
        out.push(report);
    }
    out
}

/// Zeroes key 0 of the maps Cilium's harness clears between tests.
fn clear_maps(loaded: &Loaded) -> Result<(), String> {
    for name in CLEARED_MAPS {
        let Some((fd, map)) = loaded.map(name) else {
            continue;
        };
        let size = map.value_size() as usize;
        if map.key_size() != 4 || size == 0 || size > MAX_RESULT {
            continue;
        }
        sys::map_update(fd, &0u32.to_ne_bytes(), &vec![0u8; size])
            .map_err(|e| format!("cannot clear {name}[0]: {e}"))?;
    }
    Ok(())
}

/// Pins every map under `PIN_ROOT/<pid>/` and runs `program` there with `LAB_BPF_MAPS` naming
/// the directory; the pins are removed afterwards.
fn maps_setup(loaded: &Loaded, program: &str) -> Result<(), String> {
    let dir = format!("{PIN_ROOT}/{}", std::process::id());
    std::fs::create_dir_all(&dir).map_err(|e| format!("maps_setup: cannot create {dir}: {e}"))?;
    let result = (|| {
        for name in loaded.map_names() {
            let fd = loaded.map_fd(&name).expect("listed");
            let path = CString::new(format!("{dir}/{name}"))
                .map_err(|_| format!("maps_setup: map name {name} holds a NUL"))?;
            sys::obj_pin(fd, &path).map_err(|e| format!("maps_setup: cannot pin {name}: {e}"))?;
        }
        let out = std::process::Command::new(program)
            .env("LAB_BPF_MAPS", &dir)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("maps_setup: cannot run {program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            Err(format!(
                "maps_setup {program} {}: {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ))
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One test on a prepared object.
fn run_one(p: &Prepared, name: &str) -> Report {
    let mut report = Report::new(name);
    let stages = match p.object.stages_of(name) {
        Ok(s) => s,
        Err(why) => return report.error(why),
    };
    let mut kinds: Vec<ProgKind> = Vec::new();
    for (s, program) in &stages {
        match program.kind {
            Some(k) => kinds.push(k),
            // An unknown type is the object's error (a typo must not pass as a skip).
            None => {
                return report.error(format!(
                    "unsupported: section {} names no program type the runner knows \
                     (cilium/ebpf's section names)",
                    s.section
                ));
            }
        }
    }
    let mut progs = Vec::new();
    for ((s, program), kind) in stages.iter().zip(&kinds) {
        match load(&p.loaded, program, kind) {
            Ok(fd) => progs.push(fd),
            Err((reason, log)) => {
                report.verifier_log = log;
                return report.error(format!("{} ({}): {reason}", s.stage.as_str(), s.section));
            }
        }
    }
    if let Some(k) = kinds.iter().find(|k| k.run == RunKind::LoadOnly) {
        return report.skipped(format!(
            "kernel cannot test-run {} programs (loaded and verified only)",
            k.name
        ));
    }

    let mut packet = vec![0u8; PACKET_SIZE];
    let mut ctx: Vec<u8> = Vec::new();
    let mut setup_retval = None;
    for (((s, _), kind), prog) in stages.iter().zip(&kinds).zip(&progs) {
        let input = match (s.stage, setup_retval) {
            (Stage::Check, Some(rc)) => {
                let mut with_rc = u32::to_ne_bytes(rc).to_vec();
                with_rc.extend_from_slice(&packet);
                with_rc
            }
            _ => packet.clone(),
        };
        if kind.run == (RunKind::Packet { ctx: true }) && ctx.is_empty() {
            ctx = vec![0u8; SKB_CTX_SIZE];
        }
        let ran = run_stage(prog.as_fd(), kind, &input, &ctx);
        match ran {
            Ok(out) => {
                report.stages.push(StageRun {
                    stage: s.stage,
                    section: s.section.clone(),
                    retval: out.result.retval,
                    duration_ns: u64::from(out.result.duration_ns),
                });
                if let Some(p) = out.packet {
                    packet = p;
                }
                if let Some(c) = out.ctx {
                    ctx = c;
                }
                if s.stage == Stage::Setup {
                    setup_retval = Some(out.result.retval);
                }
            }
            Err(e) if matches!(e.raw_os_error(), Some(ENOTSUPP | libc::EOPNOTSUPP)) => {
                return report.skipped(format!(
                    "kernel cannot test-run {} programs ({} of {}: {e})",
                    kind.name,
                    s.stage.as_str(),
                    s.section
                ));
            }
            Err(e) => {
                report.result_map = read_result(&p.loaded).ok().flatten();
                let hint = if e.raw_os_error() == Some(libc::EINVAL)
                    && s.stage == Stage::Check
                    && setup_retval.is_some()
                    && kind.run == (RunKind::Packet { ctx: true })
                {
                    " (the check's packet, the setup's status and its packet, is longer than \
                     the wire_len the setup's context holds; Cilium's harness fails the same: \
                     a pktgen that shortens the packet avoids it)"
                } else {
                    ""
                };
                return report.error(format!(
                    "test run of {} ({}) failed: {e}{hint}",
                    s.stage.as_str(),
                    s.section
                ));
            }
        }
    }
    match read_result(&p.loaded) {
        Ok(r) => report.result_map = r,
        Err(why) => return report.error(why),
    }
    report.outcome = Outcome::Ran;
    report
}

/// Loads one stage's program; on a rejection, the reason and the verifier's log.
fn load(
    loaded: &Loaded,
    program: &Program,
    kind: &ProgKind,
) -> Result<OwnedFd, (String, Option<String>)> {
    match loaded.load(&program.name, kind) {
        Ok(Ok(fd)) => Ok(fd),
        Ok(Err(rejected)) => {
            let mut reason = format!("verifier rejected {}: {}", program.name, rejected.error);
            if let Some(note) = &loaded.btf_note {
                reason.push_str(&format!(" ({note})"));
            }
            Err((reason, Some(rejected.log)))
        }
        Err(e) => Err((super::chain(&e), None)),
    }
}

/// What one stage left behind.
struct StageOut {
    result: sys::TestRunResult,
    /// The packet it produced, where its type produces one.
    packet: Option<Vec<u8>>,
    ctx: Option<Vec<u8>>,
}

fn run_stage(
    prog: std::os::fd::BorrowedFd<'_>,
    kind: &ProgKind,
    input: &[u8],
    ctx: &[u8],
) -> io::Result<StageOut> {
    match kind.run {
        RunKind::Packet { ctx: with_ctx } => {
            let mut data_out = vec![0u8; (input.len() + GROWTH).min(MAX_PACKET)];
            let ctx_in = if with_ctx { ctx } else { &[] };
            let mut ctx_out = vec![0u8; ctx_in.len()];
            let result = sys::prog_test_run(
                prog,
                sys::TestRun {
                    data_in: input,
                    data_out: &mut data_out,
                    ctx_in,
                    ctx_out: &mut ctx_out,
                },
            )?;
            data_out.truncate(result.data_size_out as usize);
            Ok(StageOut {
                result,
                packet: Some(data_out),
                ctx: with_ctx.then_some(ctx_out),
            })
        }
        RunKind::FlowDissector => {
            let mut keys = vec![0u8; FLOW_KEYS_SIZE];
            let result = sys::prog_test_run(
                prog,
                sys::TestRun {
                    data_in: input,
                    data_out: &mut keys,
                    ..Default::default()
                },
            )?;
            Ok(StageOut {
                result,
                packet: None,
                ctx: None,
            })
        }
        RunKind::RawTracepoint => {
            let args = [0u8; RAW_TP_ARGS];
            let result = sys::prog_test_run(
                prog,
                sys::TestRun {
                    ctx_in: &args,
                    ..Default::default()
                },
            )?;
            Ok(StageOut {
                result,
                packet: None,
                ctx: None,
            })
        }
        RunKind::LoadOnly => Err(io::Error::from_raw_os_error(ENOTSUPP)),
    }
}

/// `suite_result_map[0]` as lowercase hex; None where the object has no such map.
fn read_result(loaded: &Loaded) -> Result<Option<String>, String> {
    let Some((fd, map)) = loaded.map(RESULT_MAP) else {
        return Ok(None);
    };
    if map.key_size() != 4 {
        return Err(format!(
            "{RESULT_MAP} has {}-byte keys, not 4",
            map.key_size()
        ));
    }
    let size = map.value_size() as usize;
    if size == 0 || size > MAX_RESULT {
        return Err(format!("{RESULT_MAP} has {size}-byte values"));
    }
    let mut value = vec![0u8; size];
    sys::map_lookup(fd, &0u32.to_ne_bytes(), &mut value)
        .map_err(|e| format!("cannot read {RESULT_MAP}[0]: {e}"))?;
    Ok(Some(value.iter().map(|b| format!("{b:02x}")).collect()))
}
