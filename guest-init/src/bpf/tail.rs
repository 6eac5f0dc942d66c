//! Filling the object's prog arrays and maps of maps before the stages run: the slots its
//! static initialisers, iproute2 tail sections and lab's `<progtype>/tail/<map>/<index>`
//! sections name, and those the Kyuafile's `tail_calls` names (Kmesh's `registerTailCall`).
//!
//! Like Cilium's loader, only **reachable** tail-call programs are loaded: from the programs a
//! run starts with, every `bpf_tail_call(ctx, map, slot)` whose map and slot are constants
//! (the `tail_call_static` shape: `r2 = map ll; r3 = slot; call 12`) marks that slot, one whose
//! slot is not constant marks every slot of its map, and one whose map is not known marks
//! every prog array; the programs of marked slots are loaded, and followed in turn. A program
//! in a slot nothing reaches is never loaded, so it cannot break a test by failing the
//! verifier. Slots the Kyuafile names are always filled.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};

use aya_obj::generated::{bpf_insn, bpf_map_type};

use super::load::Loaded;
use super::object::{Object, Slot, SlotTarget};
use super::sys;

/// Why the slots could not be filled.
#[derive(Debug, PartialEq, Eq)]
pub struct Unfilled {
    pub reason: String,
    /// The verifier's log where it rejected a target.
    pub verifier_log: Option<String>,
}

impl Unfilled {
    fn new(reason: String) -> Self {
        Self {
            reason,
            verifier_log: None,
        }
    }
}

/// A tail call site: its map (None: not known) and slot (None: not constant).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TailCall {
    pub map: Option<String>,
    pub slot: Option<u32>,
}

const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;
/// `BPF_ALU64 | BPF_MOV | BPF_K` and `BPF_ALU | BPF_MOV | BPF_K`.
const MOV64_IMM: u8 = 0xb7;
const MOV32_IMM: u8 = 0xb4;
/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
const TAIL_CALL_HELPER: i32 = 12;

/// The tail calls of `insns` (a relocated program, with its subprograms); `map_of` names the
/// map behind an fd.
pub fn tail_calls(
    insns: &[bpf_insn],
    map_of: &dyn Fn(i32) -> Option<String>,
) -> BTreeSet<TailCall> {
    // Straight-line facts only: at a jump target, what r2 and r3 hold is not known.
    let mut targets = HashSet::new();
    for (pc, insn) in insns.iter().enumerate() {
        let class = insn.code & 0x07;
        let op = insn.code & 0xf0;
        if (class == 0x05 || class == 0x06) && op != 0x80 && op != 0x90 {
            let target = pc as i64 + 1 + i64::from(insn.off);
            if target >= 0 {
                targets.insert(target as usize);
            }
        }
    }
    let mut out = BTreeSet::new();
    let (mut r2, mut r3): (Option<String>, Option<u32>) = (None, None);
    let mut pc = 0;
    while pc < insns.len() {
        if targets.contains(&pc) {
            r2 = None;
            r3 = None;
        }
        let insn = &insns[pc];
        let dst = insn.dst_reg();
        if insn.code == LD_IMM64 {
            if dst == 2 {
                r2 = (insn.src_reg() == PSEUDO_MAP_FD)
                    .then(|| map_of(insn.imm))
                    .flatten();
            } else if dst == 3 {
                r3 = None;
            }
            pc += 2;
            continue;
        }
        if insn.code == CALL && insn.src_reg() == 0 {
            if insn.imm == TAIL_CALL_HELPER {
                out.insert(TailCall {
                    map: r2.clone(),
                    slot: r3,
                });
            }
            // Calls clobber r1-r5.
            r2 = None;
            r3 = None;
        } else if (insn.code == MOV64_IMM || insn.code == MOV32_IMM) && dst == 3 {
            r3 = u32::try_from(insn.imm).ok();
        } else if writes(insn) && (dst == 2 || dst == 3) {
            if dst == 2 {
                r2 = None;
            } else {
                r3 = None;
            }
        }
        pc += 1;
    }
    out
}

/// Whether `insn` writes its destination register.
fn writes(insn: &bpf_insn) -> bool {
    matches!(insn.code & 0x07, 0x00 | 0x01 | 0x04 | 0x07)
}

/// Fills the slots of `object` (and `extra`, the Kyuafile's) that the programs `entries`
/// reach. Returns the fds of the programs loaded into slots (the maps hold them too).
pub fn fill(
    loaded: &Loaded,
    object: &Object,
    extra: &[Slot],
    entries: &[String],
) -> Result<Vec<OwnedFd>, Unfilled> {
    // The Kyuafile's slots replace the object's for the same (map, slot).
    let mut slots: Vec<Slot> = object
        .slots
        .iter()
        .filter(|s| !extra.iter().any(|e| e.map == s.map && e.slot == s.slot))
        .cloned()
        .collect();
    slots.extend(extra.iter().cloned());
    for s in &slots {
        check_slot(loaded, s)?;
    }
    for s in slots
        .iter()
        .filter(|s| matches!(s.target, SlotTarget::Map(_)))
    {
        put_map(loaded, s)?;
    }
    let map_of = |fd: i32| loaded.map_by_fd(fd).map(str::to_string);
    let mut calls: BTreeSet<TailCall> = BTreeSet::new();
    let mut queue: VecDeque<String> = entries.iter().cloned().collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut filled: HashMap<(String, u32), OwnedFd> = HashMap::new();
    // Explicit slots first: the Kyuafile asked for them.
    for s in extra {
        let SlotTarget::Program(p) = &s.target else {
            continue;
        };
        let fd = load_target(loaded, object, s, p)?;
        queue.push_back(p.clone());
        filled.insert((s.map.clone(), s.slot), fd);
    }
    loop {
        while let Some(p) = queue.pop_front() {
            if !seen.insert(p.clone()) {
                continue;
            }
            if let Some(insns) = loaded.instructions(&p) {
                calls.extend(tail_calls(insns, &map_of));
            }
        }
        let mut grew = false;
        for s in &slots {
            let SlotTarget::Program(p) = &s.target else {
                continue;
            };
            let key = (s.map.clone(), s.slot);
            if filled.contains_key(&key) || !reached(&calls, loaded, s) {
                continue;
            }
            let fd = load_target(loaded, object, s, p)?;
            filled.insert(key, fd);
            queue.push_back(p.clone());
            grew = true;
        }
        if !grew {
            break;
        }
    }
    let mut fds = Vec::new();
    for ((map, slot), prog) in filled {
        let map_fd = loaded.map_fd(&map).expect("checked by check_slot");
        let value = u32::try_from(prog.as_raw_fd()).expect("file descriptors are not negative");
        sys::map_update(map_fd, &slot.to_ne_bytes(), &value.to_ne_bytes())
            .map_err(|e| Unfilled::new(format!("cannot put a program at {map}[{slot}]: {e}")))?;
        fds.push(prog);
    }
    Ok(fds)
}

/// Whether a tail call in `calls` can reach slot `s`.
fn reached(calls: &BTreeSet<TailCall>, loaded: &Loaded, s: &Slot) -> bool {
    calls.iter().any(|c| match (&c.map, c.slot) {
        (None, _) => loaded
            .map(&s.map)
            .is_some_and(|(_, m)| m.map_type() == bpf_map_type::BPF_MAP_TYPE_PROG_ARRAY as u32),
        (Some(m), None) => *m == s.map,
        (Some(m), Some(slot)) => *m == s.map && slot == s.slot,
    })
}

/// The slot's map exists, has the right type and room for the slot.
fn check_slot(loaded: &Loaded, s: &Slot) -> Result<(), Unfilled> {
    let (_, map) = loaded.map(&s.map).ok_or_else(|| {
        Unfilled::new(format!(
            "{} fills {}[{}], and the object has no map named {}",
            s.origin, s.map, s.slot, s.map
        ))
    })?;
    let t = map.map_type();
    let want_programs = matches!(s.target, SlotTarget::Program(_));
    let ok = if want_programs {
        t == bpf_map_type::BPF_MAP_TYPE_PROG_ARRAY as u32
    } else {
        t == bpf_map_type::BPF_MAP_TYPE_ARRAY_OF_MAPS as u32
            || t == bpf_map_type::BPF_MAP_TYPE_HASH_OF_MAPS as u32
    };
    if !ok {
        return Err(Unfilled::new(format!(
            "{} fills {}[{}], which is no {} (its map type is {t})",
            s.origin,
            s.map,
            s.slot,
            if want_programs {
                "prog array"
            } else {
                "map of maps"
            }
        )));
    }
    if t != bpf_map_type::BPF_MAP_TYPE_HASH_OF_MAPS as u32 && s.slot >= map.max_entries() {
        return Err(Unfilled::new(format!(
            "{} fills {}[{}], past its {} entries",
            s.origin,
            s.map,
            s.slot,
            map.max_entries()
        )));
    }
    Ok(())
}

fn put_map(loaded: &Loaded, s: &Slot) -> Result<(), Unfilled> {
    let SlotTarget::Map(inner) = &s.target else {
        return Ok(());
    };
    let inner_fd = loaded.map_fd(inner).ok_or_else(|| {
        Unfilled::new(format!(
            "{} puts map {inner} at {}[{}], and the object has no such map",
            s.origin, s.map, s.slot
        ))
    })?;
    let outer = loaded.map_fd(&s.map).expect("checked by check_slot");
    let value = u32::try_from(inner_fd.as_raw_fd()).expect("file descriptors are not negative");
    sys::map_update(outer, &s.slot.to_ne_bytes(), &value.to_ne_bytes()).map_err(|e| {
        Unfilled::new(format!(
            "cannot put map {inner} at {}[{}]: {e}",
            s.map, s.slot
        ))
    })
}

fn load_target(
    loaded: &Loaded,
    object: &Object,
    s: &Slot,
    name: &str,
) -> Result<OwnedFd, Unfilled> {
    let program = object.program(name).ok_or_else(|| {
        Unfilled::new(format!(
            "{} puts program {name} at {}[{}], and the object has no such program",
            s.origin, s.map, s.slot
        ))
    })?;
    let kind = program.kind.ok_or_else(|| {
        Unfilled::new(format!(
            "tail call target {name} (section {}) has no program type, and no other program \
             of the object has one to give it",
            program.section_name
        ))
    })?;
    match loaded.load(name, &kind) {
        Ok(Ok(fd)) => Ok(fd),
        Ok(Err(rejected)) => {
            let mut reason = format!(
                "verifier rejected tail call target {name} ({}, for {}[{}]): {}",
                program.section_name, s.map, s.slot, rejected.error
            );
            if let Some(note) = &loaded.btf_note {
                reason.push_str(&format!(" ({note})"));
            }
            Err(Unfilled {
                reason,
                verifier_log: Some(rejected.log),
            })
        }
        Err(e) => Err(Unfilled::new(format!(
            "tail call target {name}: {}",
            super::chain(&e)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> bpf_insn {
        // SAFETY: bpf_insn is plain integers and bit fields; all zeroes is a valid value.
        let mut i: bpf_insn = unsafe { std::mem::zeroed() };
        i.code = code;
        i.off = off;
        i.imm = imm;
        i.set_dst_reg(dst);
        i.set_src_reg(src);
        i
    }

    fn calls_of(insns: &[bpf_insn]) -> Vec<TailCall> {
        let map_of = |fd: i32| (fd == 7).then(|| "calls".to_string());
        tail_calls(insns, &map_of).into_iter().collect()
    }

    #[test]
    fn constant_tail_calls_name_their_map_and_slot() {
        let program = [
            insn(LD_IMM64, 2, PSEUDO_MAP_FD, 0, 7),
            insn(0, 0, 0, 0, 0),
            insn(MOV64_IMM, 3, 0, 0, 1),
            insn(CALL, 0, 0, 0, TAIL_CALL_HELPER),
            // After a call, nothing is known: a second call with r3 from elsewhere.
            insn(LD_IMM64, 2, PSEUDO_MAP_FD, 0, 7),
            insn(0, 0, 0, 0, 0),
            insn(0xbf, 3, 6, 0, 0), // r3 = r6
            insn(CALL, 0, 0, 0, TAIL_CALL_HELPER),
            insn(0x95, 0, 0, 0, 0),
        ];
        assert_eq!(
            calls_of(&program),
            [
                TailCall {
                    map: Some("calls".into()),
                    slot: None
                },
                TailCall {
                    map: Some("calls".into()),
                    slot: Some(1)
                },
            ]
        );
    }

    #[test]
    fn a_jump_target_forgets_what_registers_held() {
        let program = [
            insn(LD_IMM64, 2, PSEUDO_MAP_FD, 0, 7),
            insn(0, 0, 0, 0, 0),
            insn(MOV32_IMM, 3, 0, 0, 2),
            insn(0x15, 1, 0, 1, 0), // if r1 == 0 goto +1
            insn(MOV32_IMM, 0, 0, 0, 0),
            insn(CALL, 0, 0, 0, TAIL_CALL_HELPER), // a jump target
            insn(0x95, 0, 0, 0, 0),
        ];
        assert_eq!(
            calls_of(&program),
            [TailCall {
                map: None,
                slot: None
            }]
        );
    }
}
