//! Tail calls in test objects, by the lab's convention: every program in a section
//! `<progtype>/tail/<map>/<index>` is loaded (its type from `<progtype>`, as for test stages)
//! and put at key `<index>` of the object's prog array `<map>` before a test's stages run, on
//! every run. libbpf's static `.values = { [i] = &prog }` initialisation, which aya-obj cannot
//! parse, is not used; `lab/test.h`'s `TAIL_CALL(progtype, map, index)` names such sections.

use std::os::fd::{AsRawFd, OwnedFd};

use aya_obj::generated::bpf_map_type;

use super::elf::TailSection;
use super::load::Loaded;
use super::progtype::ProgKind;
use super::sys;

/// Why the prog arrays could not be filled.
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

/// Loads each target (with its kind) and inserts it into its slot. The fds returned keep the
/// targets loaded for the run (the prog arrays hold them as well, while their maps are open).
pub fn fill(
    loaded: &Loaded,
    targets: &[(TailSection, ProgKind)],
) -> Result<Vec<OwnedFd>, Unfilled> {
    let mut progs = Vec::with_capacity(targets.len());
    for (t, kind) in targets {
        let (map_fd, map) = loaded.map(&t.map).ok_or_else(|| {
            Unfilled::new(format!(
                "tail call target {}: the object has no map named {}",
                t.section, t.map
            ))
        })?;
        let map_type = map.map_type();
        if map_type != bpf_map_type::BPF_MAP_TYPE_PROG_ARRAY as u32 {
            return Err(Unfilled::new(format!(
                "tail call target {}: map {} is not a prog array (its type is {}, \
                 BPF_MAP_TYPE_PROG_ARRAY is {})",
                t.section,
                t.map,
                map_type,
                bpf_map_type::BPF_MAP_TYPE_PROG_ARRAY as u32
            )));
        }
        if t.key >= map.max_entries() {
            return Err(Unfilled::new(format!(
                "tail call target {}: index {} is past the end of {} ({} entries)",
                t.section,
                t.key,
                t.map,
                map.max_entries()
            )));
        }
        let prog = match loaded.load(t.index, kind) {
            Ok(Ok(fd)) => fd,
            Ok(Err(rejected)) => {
                let mut reason = format!(
                    "verifier rejected tail call target ({}): {}",
                    t.section, rejected.error
                );
                if let Some(note) = &loaded.btf_note {
                    reason.push_str(&format!(" ({note})"));
                }
                return Err(Unfilled {
                    reason,
                    verifier_log: Some(rejected.log),
                });
            }
            Err(e) => {
                return Err(Unfilled::new(format!(
                    "tail call target {}: {}",
                    t.section,
                    super::chain(&e)
                )))
            }
        };
        let fd = u32::try_from(prog.as_raw_fd()).expect("file descriptors are not negative");
        sys::map_update(map_fd, &t.key.to_ne_bytes(), &fd.to_ne_bytes()).map_err(|e| {
            Unfilled::new(format!(
                "cannot put tail call target {} at {}[{}]: {e}",
                t.section, t.map, t.key
            ))
        })?;
        progs.push(prog);
    }
    Ok(progs)
}
