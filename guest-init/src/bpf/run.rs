//! One test of an object, the way Cilium's and Kmesh's runners do it: pktgen on a zeroed
//! buffer, setup (or jump) on its packet, check on the setup's return code (4 bytes, host
//! endianness) followed by the setup's packet (the packet alone when there is no setup), then
//! `suite_result_map[0]` read back. Everything is loaded anew for each run, and the object's
//! tail call targets fill its prog arrays before the first stage runs.

use std::io;
use std::os::fd::AsFd;

use super::elf::{Elf, Stage, TailSection, TestSection};
use super::load::Loaded;
use super::progtype::{prog_kind, ProgKind, RunKind};
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
/// The largest `suite_result_map` value read back.
const MAX_RESULT: usize = 1 << 20;
const RESULT_MAP: &str = "suite_result_map";
const ENOTSUPP: i32 = 524;

/// Runs test `name` of the object `data` and says what happened; never fails.
pub fn run(data: &[u8], name: &str) -> Report {
    let mut report = Report::new(name);
    let elf = match Elf::parse(data) {
        Ok(elf) => elf,
        Err(e) => return report.error(super::chain(&e)),
    };
    let stages = match stages_of(&elf, name) {
        Ok(s) => s,
        Err(why) => return report.error(why),
    };
    let mut kinds = Vec::new();
    for s in &stages {
        match prog_kind(&s.progtype) {
            Some(k) => kinds.push(k),
            None => {
                return report.skipped(format!(
                    "the runner cannot load {} programs (section {})",
                    s.progtype, s.section
                ));
            }
        }
    }
    let targets = match tail_targets(&elf) {
        Ok(t) => t,
        Err(why) => return report.error(why),
    };
    let loaded = match Loaded::new(data, &elf) {
        Ok(l) => l,
        Err(e) => return report.error(format!("cannot load the object: {}", super::chain(&e))),
    };
    let _tail_progs = match tail::fill(&loaded, &targets) {
        Ok(fds) => fds,
        Err(unfilled) => {
            report.verifier_log = unfilled.verifier_log;
            return report.error(unfilled.reason);
        }
    };
    let mut progs = Vec::new();
    for (s, kind) in stages.iter().zip(&kinds) {
        match loaded.load(s.index, kind) {
            Ok(Ok(fd)) => progs.push(fd),
            Ok(Err(rejected)) => {
                let mut reason = format!(
                    "verifier rejected {} ({}): {}",
                    s.stage.as_str(),
                    s.section,
                    rejected.error
                );
                if let Some(note) = &loaded.btf_note {
                    reason.push_str(&format!(" ({note})"));
                }
                report.verifier_log = Some(rejected.log);
                return report.error(reason);
            }
            Err(e) => return report.error(super::chain(&e)),
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
    for ((s, kind), prog) in stages.iter().zip(&kinds).zip(&progs) {
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
                report.result_map = read_result(&loaded).ok().flatten();
                return report.error(format!(
                    "test run of {} ({}) failed: {e}",
                    s.stage.as_str(),
                    s.section
                ));
            }
        }
    }
    match read_result(&loaded) {
        Ok(r) => report.result_map = r,
        Err(why) => return report.error(why),
    }
    report.outcome = Outcome::Ran;
    report
}

/// The object's tail call targets with the kind each loads as.
fn tail_targets(elf: &Elf) -> Result<Vec<(TailSection, ProgKind)>, String> {
    elf.tail_targets()?
        .into_iter()
        .map(|t| match prog_kind(&t.progtype) {
            Some(k) => Ok((t, k)),
            None => Err(format!(
                "the runner cannot load {} programs (tail call target {})",
                t.progtype, t.section
            )),
        })
        .collect()
}

/// The stage sections of test `name`, in run order; a missing check or a stage given twice is
/// an error.
fn stages_of(elf: &Elf, name: &str) -> Result<Vec<TestSection>, String> {
    let tests: Vec<TestSection> = elf.tests().into_iter().filter(|t| t.test == name).collect();
    if tests.is_empty() {
        return Err(format!("no test named {name} in the object"));
    }
    let mut out = Vec::new();
    for stage in [Stage::Pktgen, Stage::Setup, Stage::Check] {
        let mut of_stage = tests.iter().filter(|t| t.stage == stage);
        if let Some(first) = of_stage.next() {
            if let Some(second) = of_stage.next() {
                return Err(format!(
                    "test {name} has two {} programs: {} and {}",
                    stage.as_str(),
                    first.section,
                    second.section
                ));
            }
            out.push(first.clone());
        } else if stage == Stage::Check {
            return Err(format!("test {name} has no check program"));
        }
    }
    Ok(out)
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
