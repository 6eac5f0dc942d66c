//! Loading an eBPF object into the kernel the way the field's loaders do: aya-obj parses the
//! copy [`Elf::prepare_for_aya`] makes, fixes up its BTF and applies CO-RE relocations against
//! the kernel's BTF; the runner gives BTF prog arrays their 4-byte values, writes the globals
//! asked for into their data sections, loads the BTF, creates every map fresh (pinning
//! ignored; initial data for `.data`/`.rodata*`, every `.rodata*` frozen before any program
//! loads), lets aya-obj relocate map references and calls, inlines asm-style `.rodata.config`
//! constants ([`inline_config`]), and loads programs by name with the type the object gives
//! them, capturing the verifier log when the kernel rejects one.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use aya_obj::btf::{Btf, BtfFeatures};
use aya_obj::generated::{bpf_insn, bpf_map_type};
use aya_obj::{EbpfSectionKind, Features, Map, Object as AyaObject};

use super::object::{global_bytes, Object};
use super::progtype::ProgKind;
use super::sys;
use super::BpfError;

/// The verifier log kept on a failed load.
pub const LOG_TAIL: usize = 8 * 1024;
/// Verifier log buffers tried in turn (kernels before 6.4 keep the head of a log that does not
/// fit and fail with ENOSPC; later ones keep its tail).
const LOG_SIZES: [usize; 2] = [1 << 20, 16 << 20];
const ENOSPC: i32 = 28;

/// The section whose asm-style constants are inlined (Cilium's `CONFIG()`).
pub const CONFIG_SECTION: &str = ".rodata.config";

/// The features of the kernels the lab runs (6.1 and later): everything aya-obj can sanitise
/// away is supported there, so nothing is.
fn features() -> Features {
    Features::new(
        true,
        true,
        true,
        true,
        true,
        true,
        true,
        Some(BtfFeatures::new(
            true, true, true, true, true, true, true, true,
        )),
    )
}

/// An object whose maps exist in the kernel and whose programs are relocated, ready to load.
#[derive(Debug)]
pub struct Loaded {
    obj: AyaObject,
    btf: Option<OwnedFd>,
    /// Why the object's BTF is not in the kernel, if it is not.
    pub btf_note: Option<String>,
    maps: HashMap<String, (OwnedFd, Map)>,
}

/// A program the kernel rejected: the error and the tail of the verifier's log.
#[derive(Debug)]
pub struct Rejected {
    pub error: io::Error,
    pub log: String,
}

impl Loaded {
    /// Parses `data` (read before as `object`), sets `globals` (name, value), creates its maps
    /// and relocates its programs.
    pub fn new(
        data: &[u8],
        object: &Object,
        globals: &[(String, String)],
    ) -> Result<Self, BpfError> {
        let prepared = object.elf.prepare_for_aya(data, &object.hidden_members)?;
        let mut obj = AyaObject::parse(&prepared).map_err(BpfError::Parse)?;
        fix_prog_arrays(&mut obj, &object.btf_prog_arrays);
        set_globals(&mut obj, object, globals)?;
        let features = features();
        let btf_features = features.btf().expect("set above");
        let mut btf_note = None;
        let btf = match obj.fixup_and_sanitize_btf(btf_features) {
            Ok(Some(btf)) => match sys::btf_load(&btf.to_bytes(), &mut []) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    btf_note = Some(format!("the kernel rejected the object's BTF: {e}"));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                btf_note = Some(format!(
                    "cannot fix up the object's BTF: {}",
                    super::chain(&e)
                ));
                None
            }
        };
        if obj.has_btf_relocations() {
            let kernel = Btf::from_sys_fs().map_err(BpfError::KernelBtf)?;
            obj.relocate_btf(&kernel).map_err(BpfError::CoRe)?;
        }
        let mut maps = HashMap::new();
        for (name, map) in obj.maps.drain() {
            let flags = map_flags(object, &name, &map);
            let fd = create_map(&name, &map, flags, btf.as_ref().map(AsFd::as_fd))?;
            maps.insert(name, (fd, map));
        }
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        obj.relocate_maps(
            maps.iter()
                .map(|(name, (fd, map))| (name.as_str(), fd.as_raw_fd(), map)),
            &text_sections,
        )
        .map_err(BpfError::Relocate)?;
        obj.relocate_calls(&text_sections)
            .map_err(BpfError::Relocate)?;
        obj.sanitize_functions(&features);
        let mut loaded = Self {
            obj,
            btf,
            btf_note,
            maps,
        };
        let sizes: HashMap<usize, usize> = object
            .globals
            .values()
            .filter(|g| g.section == CONFIG_SECTION)
            .map(|g| (g.offset as usize, g.size as usize))
            .collect();
        loaded.inline_config(&sizes);
        Ok(loaded)
    }

    /// The fd of map `name`.
    pub fn map_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.maps.get(name).map(|(fd, _)| fd.as_fd())
    }

    /// Every map's name.
    pub fn map_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.maps.keys().cloned().collect();
        names.sort();
        names
    }

    /// The relocated instructions of program `name` (with the functions it calls).
    pub fn instructions(&self, name: &str) -> Option<&[bpf_insn]> {
        let program = self.obj.programs.get(name)?;
        self.obj
            .functions
            .get(&program.function_key())
            .map(|f| f.instructions.as_slice())
    }

    /// Map name by fd, for the tail call analysis.
    pub fn map_by_fd(&self, fd: i32) -> Option<&str> {
        self.maps
            .iter()
            .find(|(_, (f, _))| f.as_raw_fd() == fd)
            .map(|(n, _)| n.as_str())
    }

    /// Turns the asm-style constants of `.rodata.config` into immediates, the way Cilium's
    /// loader inlined global data: an `ld_imm64` of an address in that section whose register
    /// is next read other than as the base of a memory load (Cilium's old `CONFIG()`, inline
    /// asm that wanted the value) becomes an `ld_imm64` of the variable's value (zero-extended,
    /// at most 8 bytes). An address that is dereferenced (the `volatile const` form) stays: the
    /// map is frozen, so the verifier knows what it reads.
    fn inline_config(&mut self, sizes: &HashMap<usize, usize>) {
        let Some((fd, map)) = self.maps.get(CONFIG_SECTION) else {
            return;
        };
        let fd = fd.as_raw_fd();
        let data = map.data().to_vec();
        for function in self.obj.functions.values_mut() {
            inline_in(&mut function.instructions, fd, &data, sizes);
        }
    }

    /// The map called `name` and its definition.
    pub fn map(&self, name: &str) -> Option<(BorrowedFd<'_>, &Map)> {
        self.maps.get(name).map(|(fd, map)| (fd.as_fd(), map))
    }

    /// Loads program `name` as `kind`. `Err(Ok(_))`: the object has no such program;
    /// `Err(Err(_))`: the kernel rejected it.
    pub fn load(&self, name: &str, kind: &ProgKind) -> Result<Result<OwnedFd, Rejected>, BpfError> {
        let program = self
            .obj
            .programs
            .get(name)
            .ok_or_else(|| BpfError::NoProgram(name.to_string()))?;
        let function = self
            .obj
            .functions
            .get(&program.function_key())
            .ok_or_else(|| BpfError::NoProgram(name.to_string()))?;
        let func_info = function.func_info.func_info_bytes();
        let line_info = function.line_info.line_info_bytes();
        let license: CString = program.license.clone();
        let btf = self.btf.as_ref().map(|fd| sys::ProgBtf {
            fd: fd.as_fd(),
            func_info: &func_info,
            func_info_rec_size: function.func_info_rec_size as u32,
            func_info_cnt: function.func_info.len() as u32,
            line_info: &line_info,
            line_info_rec_size: function.line_info_rec_size as u32,
            line_info_cnt: function.line_info.len() as u32,
        });
        let spec = sys::ProgSpec {
            name: name_of(name),
            prog_type: kind.prog_type,
            expected_attach_type: kind.expected_attach_type,
            flags: kind.flags,
            insns: &function.instructions,
            license: &license,
            kern_version: program.kernel_version.unwrap_or(0),
            btf,
        };
        let first = match sys::prog_load(&spec, &mut []) {
            Ok(fd) => return Ok(Ok(fd)),
            Err(e) => e,
        };
        // Load again with a log, only to say why.
        let mut log = String::new();
        for size in LOG_SIZES {
            let mut buf = vec![0u8; size];
            let again = sys::prog_load(&spec, &mut buf);
            log = log_tail(&buf, LOG_TAIL);
            match again {
                Err(e) if e.raw_os_error() == Some(ENOSPC) => continue,
                _ => break,
            }
        }
        Ok(Err(Rejected { error: first, log }))
    }
}

/// What the runner makes of an object without the kernel: its maps as they would be created
/// and its programs with their types, one JSON object (`/init bpf describe`).
pub fn describe(data: &[u8]) -> Result<String, BpfError> {
    let object = Object::parse(data)?;
    let prepared = object.elf.prepare_for_aya(data, &object.hidden_members)?;
    let mut obj = AyaObject::parse(&prepared).map_err(BpfError::Parse)?;
    fix_prog_arrays(&mut obj, &object.btf_prog_arrays);
    let mut maps: Vec<(&String, &Map)> = obj.maps.iter().collect();
    maps.sort_by_key(|(n, _)| n.as_str());
    let mut out = String::from("{\"maps\":[");
    for (i, (name, map)) in maps.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"name\":\"{}\",\"type\":{},\"key_size\":{},\"value_size\":{},\"max_entries\":{},\"flags\":{}}}",
            json_text(name),
            map.map_type(),
            map.key_size(),
            map.value_size(),
            map.max_entries(),
            map_flags(&object, name, map)
        ));
    }
    out.push_str("],\"programs\":[");
    for (i, p) in object.programs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let (kind, type_) = p.kind.map_or(("none", 0), |k| (k.name, k.prog_type));
        out.push_str(&format!(
            "{{\"name\":\"{}\",\"section\":\"{}\",\"type\":{type_},\"kind\":\"{kind}\"}}",
            json_text(&p.name),
            json_text(&p.section_name)
        ));
    }
    out.push_str("],\"slots\":[");
    for (i, slot) in object.slots.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let target = match &slot.target {
            super::object::SlotTarget::Program(p) | super::object::SlotTarget::Map(p) => p,
        };
        out.push_str(&format!(
            "{{\"map\":\"{}\",\"slot\":{},\"target\":\"{}\"}}",
            json_text(&slot.map),
            slot.slot,
            json_text(target)
        ));
    }
    out.push_str("]}");
    Ok(out)
}

/// `s` with JSON's special characters escaped (names are ASCII in practice).
fn json_text(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

/// A program's name as the kernel keeps it: at most 15 bytes.
fn name_of(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// BTF prog arrays whose `values` member aya-obj did not see get their 4-byte values (libbpf
/// and cilium/ebpf force the value size of a map with `values`).
fn fix_prog_arrays(obj: &mut AyaObject, names: &[String]) {
    for name in names {
        if let Some(map) = obj.maps.get_mut(name) {
            if map.value_size() == 0 {
                map.set_value_size(4);
            }
        }
    }
}

/// Writes each global's value into its data section's initial contents (before the maps are
/// created, so a `.rodata*` global is frozen with it).
fn set_globals(
    obj: &mut AyaObject,
    object: &Object,
    globals: &[(String, String)],
) -> Result<(), BpfError> {
    for (name, value) in globals {
        let global = object.globals.get(name).ok_or_else(|| {
            let known: Vec<&str> = object.globals.keys().map(String::as_str).collect();
            BpfError::Global(format!(
                "the object has no global variable {name} (it has: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        let bytes = global_bytes(value, global.size)
            .map_err(|why| BpfError::Global(format!("global {name}: {why}")))?;
        let map = obj.maps.get_mut(&global.section).ok_or_else(|| {
            BpfError::Global(format!(
                "global {name}: no map for section {}",
                global.section
            ))
        })?;
        let data = map.data_mut();
        let start = global.offset as usize;
        if data.len() < start + bytes.len() {
            data.resize(start + bytes.len(), 0);
        }
        data[start..start + bytes.len()].copy_from_slice(&bytes);
    }
    Ok(())
}

/// `BPF_LD | BPF_IMM | BPF_DW`: the first half of an `ld_imm64`.
const LD_IMM64: u8 = 0x18;
/// `src_reg` of an `ld_imm64` of a map value's address.
const PSEUDO_MAP_VALUE: u8 = 2;
/// `BPF_LDX | BPF_MEM` with any size.
const LDX_MEM_MASK: u8 = 0x07 | 0xe0;
const LDX_MEM: u8 = 0x01 | 0x60;
/// Instruction classes.
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;

/// How register `reg` is next used after instruction `from` in straight-line code.
#[derive(Debug, PartialEq, Eq)]
enum NextUse {
    /// As the base address of a memory load.
    Address,
    /// Some other way (arithmetic, a comparison, a store of its value, a call argument).
    Value,
    /// Overwritten, or control flow reached first.
    Unknown,
}

fn next_use(insns: &[bpf_insn], from: usize, reg: u8) -> NextUse {
    let mut i = from;
    while i < insns.len() {
        let insn = &insns[i];
        let (dst, src) = (insn.dst_reg(), insn.src_reg());
        let class = insn.code & 0x07;
        if insn.code & LDX_MEM_MASK == LDX_MEM {
            if src == reg {
                return NextUse::Address;
            }
            if dst == reg {
                return NextUse::Unknown;
            }
        } else if insn.code == LD_IMM64 {
            if dst == reg {
                return NextUse::Unknown;
            }
            i += 2;
            continue;
        } else if class == CLASS_JMP || class == CLASS_JMP32 {
            let op = insn.code & 0xf0;
            if op == OP_CALL {
                // r1-r5 are arguments: a pointer handed to a helper or a function.
                return if (1..=5).contains(&reg) {
                    NextUse::Address
                } else {
                    NextUse::Unknown
                };
            }
            if op == OP_EXIT {
                return NextUse::Unknown;
            }
            let uses = dst == reg || (insn.code & 0x08 != 0 && src == reg);
            return if uses {
                NextUse::Value
            } else {
                NextUse::Unknown
            };
        } else {
            // ALU, stores: a read of `reg` as a source or as an ALU destination is a value
            // use; a store through it is an address use.
            let reads_src = insn.code & 0x08 != 0 && src == reg;
            match class {
                0x03 /* STX */ => {
                    if dst == reg {
                        return NextUse::Address;
                    }
                    if src == reg {
                        return NextUse::Value;
                    }
                }
                0x02 /* ST */ if dst == reg => return NextUse::Address,
                0x04 | 0x07 /* ALU, ALU64 */ => {
                    let op = insn.code & 0xf0;
                    let is_mov = op == 0xb0;
                    if reads_src || (dst == reg && !is_mov) {
                        return NextUse::Value;
                    }
                    if dst == reg {
                        return NextUse::Unknown;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    NextUse::Unknown
}

/// Inlines, in `insns`, the `ld_imm64`s of addresses in the config map `fd` (contents `data`,
/// variables of `sizes` by offset) that are used as values; see [`Loaded::inline_config`].
fn inline_in(insns: &mut [bpf_insn], fd: i32, data: &[u8], sizes: &HashMap<usize, usize>) {
    let mut i = 0;
    while i + 1 < insns.len() {
        let is_config = insns[i].code == LD_IMM64
            && insns[i].src_reg() == PSEUDO_MAP_VALUE
            && insns[i].imm == fd;
        if !is_config {
            i += if insns[i].code == LD_IMM64 { 2 } else { 1 };
            continue;
        }
        let reg = insns[i].dst_reg();
        let offset = insns[i + 1].imm as u32 as usize;
        let size = sizes.get(&offset).copied().filter(|&s| s <= 8);
        if let (Some(size), false) = (size, next_use(insns, i + 2, reg) == NextUse::Address) {
            let mut value = [0u8; 8];
            if let Some(bytes) = data.get(offset..offset + size) {
                value[..size].copy_from_slice(bytes);
            }
            let v = u64::from_le_bytes(value);
            insns[i].set_src_reg(0);
            insns[i].imm = v as u32 as i32;
            insns[i + 1].imm = (v >> 32) as u32 as i32;
        }
        i += 2;
    }
}

/// `BPF_F_MMAPABLE`.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The flags map `name` is created with: the object's, and mmapable for a data section map
/// that holds a global variable (libbpf's rule; cilium/ebpf's `Variable`s need it too).
fn map_flags(object: &Object, name: &str, map: &Map) -> u32 {
    let data_section = matches!(
        map.section_kind(),
        EbpfSectionKind::Data | EbpfSectionKind::Bss | EbpfSectionKind::Rodata
    );
    if data_section && object.mmapable(name) {
        map.map_flags() | BPF_F_MMAPABLE
    } else {
        map.map_flags()
    }
}

/// Creates one map as the object declares it (pinning ignored: maps are fresh per run), with
/// its BTF types where the kernel takes them, and its initial data.
fn create_map(
    name: &str,
    map: &Map,
    flags: u32,
    btf: Option<BorrowedFd<'_>>,
) -> Result<OwnedFd, BpfError> {
    let map_type = map.map_type();
    let no_btf_types = [
        bpf_map_type::BPF_MAP_TYPE_PERF_EVENT_ARRAY,
        bpf_map_type::BPF_MAP_TYPE_CGROUP_ARRAY,
        bpf_map_type::BPF_MAP_TYPE_STACK_TRACE,
        bpf_map_type::BPF_MAP_TYPE_ARRAY_OF_MAPS,
        bpf_map_type::BPF_MAP_TYPE_HASH_OF_MAPS,
        bpf_map_type::BPF_MAP_TYPE_DEVMAP,
        bpf_map_type::BPF_MAP_TYPE_DEVMAP_HASH,
        bpf_map_type::BPF_MAP_TYPE_CPUMAP,
        bpf_map_type::BPF_MAP_TYPE_XSKMAP,
        bpf_map_type::BPF_MAP_TYPE_SOCKMAP,
        bpf_map_type::BPF_MAP_TYPE_SOCKHASH,
        bpf_map_type::BPF_MAP_TYPE_QUEUE,
        bpf_map_type::BPF_MAP_TYPE_STACK,
        bpf_map_type::BPF_MAP_TYPE_RINGBUF,
    ]
    .iter()
    .any(|t| *t as u32 == map_type);
    let btf_types = match (map, btf) {
        (Map::Btf(m), Some(fd)) if !no_btf_types => {
            Some((fd, m.def.btf_key_type_id, m.def.btf_value_type_id))
        }
        _ => None,
    };
    let mut max_entries = map.max_entries();
    if map_type == bpf_map_type::BPF_MAP_TYPE_PERF_EVENT_ARRAY as u32 && max_entries == 0 {
        // SAFETY: sysconf reads no memory of ours.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
        max_entries = u32::try_from(cpus).unwrap_or(1).max(1);
    }
    let inner = match map.inner() {
        Some(inner) => Some(create_map(
            &format!("{name}.inner"),
            &inner,
            inner.map_flags(),
            btf,
        )?),
        None => None,
    };
    let mut spec = sys::MapSpec {
        name,
        map_type,
        key_size: map.key_size(),
        value_size: map.value_size(),
        max_entries,
        flags,
        map_extra: map.map_extra(),
        btf: btf_types,
        inner_map: inner.as_ref().map(AsFd::as_fd),
    };
    let created = match sys::map_create(&spec) {
        // Like libbpf: a kernel that refuses the BTF types may take the map without them.
        Err(_) if spec.btf.is_some() => {
            spec.btf = None;
            sys::map_create(&spec)
        }
        other => other,
    };
    let fd = created.map_err(|e| BpfError::MapCreate(name.to_string(), e))?;
    if !map.data().is_empty() {
        sys::map_update(fd.as_fd(), &0u32.to_ne_bytes(), map.data())
            .map_err(|e| BpfError::MapCreate(name.to_string(), e))?;
    }
    if map.section_kind() == EbpfSectionKind::Rodata {
        sys::map_freeze(fd.as_fd()).map_err(|e| BpfError::MapCreate(name.to_string(), e))?;
    }
    Ok(fd)
}

/// The last `max` bytes of the NUL-terminated log in `buf`, starting at a line where it can.
pub fn log_tail(buf: &[u8], max: usize) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let log = &buf[..end];
    if log.len() <= max {
        return String::from_utf8_lossy(log).trim_end().to_string();
    }
    let mut tail = &log[log.len() - max..];
    if let Some(nl) = tail.iter().position(|&b| b == b'\n') {
        tail = &tail[nl + 1..];
    }
    format!("...\n{}", String::from_utf8_lossy(tail).trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails_start_at_a_line() {
        assert_eq!(log_tail(b"short log\n\0garbage", 100), "short log");
        let long = b"line one\nline two\nline three\n";
        assert_eq!(log_tail(long, 15), "...\nline three");
        assert_eq!(log_tail(b"", 10), "");
    }
}
