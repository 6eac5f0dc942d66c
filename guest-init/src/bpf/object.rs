//! An eBPF test object as the field's loaders see it (cilium/ebpf's `elf_reader.go`, Cilium's
//! iproute2 compatibility, libbpf): its programs with their types, its test groups, and the
//! prog-array and map-in-map slots it fills itself:
//!
//! - **static initialisers** of BTF maps, `.values = { [i] = &prog }` (prog arrays) or
//!   `= { [i] = &inner_map }` (map-in-map): relocations of `.maps` at
//!   `var offset + values offset + 8 * i` naming a function or a map;
//! - **iproute2 tail sections** `<id>/<slot>`: every function in such a section goes to
//!   `<slot>` of the legacy map (`struct bpf_elf_map` in section `maps`) whose `id` is
//!   `<id>`; `<slot>` is read as Cilium reads it (decimal, or `0x` hex);
//! - lab's own `<progtype>/tail/<map>/<index>` sections, kept as an alias.
//!
//! A program whose section has no type of its own (iproute2 tail sections) takes the type of
//! the object's first typed program, as Cilium's loader did (`classifyProgramTypes`).
//!
//! aya-obj cannot parse a prog array's `__array(values, int ())` member (a pointer to a
//! function prototype): [`Object::hidden_members`] lists those members, which the copy of the
//! object aya-obj parses leaves unnamed, and the loader gives such maps their 4-byte values.

use std::collections::BTreeMap;

use super::btf::Btf;
use super::elf::{Elf, Stage, Symbol, TailSection, TestSection, STT_FUNC, STT_OBJECT};
use super::progtype::{section_kind, ProgKind};
use super::BpfError;

/// One program: a function in a program section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Its symbol name (aya-obj's key).
    pub name: String,
    /// Its section.
    pub section: usize,
    pub section_name: String,
    /// Its type: its section's, or inherited; None if the object has no typed program.
    pub kind: Option<ProgKind>,
}

/// What a slot of a prog array or map-in-map holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotTarget {
    /// A program, by name.
    Program(String),
    /// A map, by name.
    Map(String),
}

/// A slot the object (or the Kyuafile) fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub map: String,
    pub slot: u32,
    pub target: SlotTarget,
    /// Where it comes from, for messages (`static initialiser of calls`, `section 2/1`).
    pub origin: String,
}

/// A global variable of a data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// Its section (`.data`, `.bss`, `.rodata.config`).
    pub section: String,
    pub offset: u32,
    pub size: u32,
    /// Not `static`.
    pub global: bool,
}

/// The object.
#[derive(Debug)]
pub struct Object {
    pub elf: Elf,
    pub programs: Vec<Program>,
    pub tests: Vec<TestSection>,
    pub slots: Vec<Slot>,
    /// BTF-defined prog arrays (their `values` member hidden from aya-obj).
    pub btf_prog_arrays: Vec<String>,
    /// Offsets in `.BTF` of the `name_off` of members to hide from aya-obj.
    pub hidden_members: Vec<usize>,
    /// Global variables by name.
    pub globals: BTreeMap<String, Global>,
}

impl Object {
    /// Whether the map of data section `section` is created mmapable, as libbpf and
    /// cilium/ebpf create it: when it holds a variable that is not `static`.
    pub fn mmapable(&self, section: &str) -> bool {
        self.globals
            .values()
            .any(|g| g.section == section && g.global)
    }

    /// Reads everything the runner needs from the object's ELF and BTF.
    pub fn parse(data: &[u8]) -> Result<Self, BpfError> {
        let elf = Elf::parse(data)?;
        let symbols = elf.symbols(data)?;
        let btf = match elf.section(".BTF") {
            Some(s) => Some(
                Btf::parse(elf.data(data, s.index).unwrap_or_default()).map_err(BpfError::Elf)?,
            ),
            None => None,
        };
        if let Some(btf) = &btf {
            refuse_externs(btf)?;
        }
        let programs = programs(&elf, &symbols);
        let tests = elf.tests();
        let legacy_maps = legacy_maps(&elf, data, &symbols);
        let mut slots = Vec::new();
        let mut btf_prog_arrays = Vec::new();
        let mut hidden_members = Vec::new();
        if let Some(btf) = &btf {
            static_slots(
                &elf,
                data,
                &symbols,
                btf,
                &mut slots,
                &mut btf_prog_arrays,
                &mut hidden_members,
            )?;
        }
        iproute2_slots(&programs, &legacy_maps, &mut slots)?;
        for t in elf.tail_targets().map_err(BpfError::Elf)? {
            alias_slot(&t, &programs, &mut slots)?;
        }
        let globals = btf
            .as_ref()
            .map(|b| globals(&elf, b, &symbols))
            .unwrap_or_default();
        Ok(Self {
            elf,
            programs,
            tests,
            slots,
            btf_prog_arrays,
            hidden_members,
            globals,
        })
    }

    /// The program called `name`.
    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The one program in section `index`; an error if it holds none or several.
    pub fn program_in(&self, index: usize) -> Result<&Program, String> {
        let mut found = self.programs.iter().filter(|p| p.section == index);
        let first = found
            .next()
            .ok_or_else(|| format!("section {index} holds no program"))?;
        if let Some(second) = found.next() {
            return Err(format!(
                "section {} holds several programs ({} and {}): a test stage must be one",
                first.section_name, first.name, second.name
            ));
        }
        Ok(first)
    }

    /// The stages of test `name`, in run order, each with its program; a missing check or a
    /// stage given twice is an error.
    pub fn stages_of(&self, name: &str) -> Result<Vec<(TestSection, Program)>, String> {
        let tests: Vec<&TestSection> = self.tests.iter().filter(|t| t.test == name).collect();
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
                let program = self.program_in(first.index)?.clone();
                out.push(((*first).clone(), program));
            } else if stage == Stage::Check {
                return Err(format!("test {name} has no check program"));
            }
        }
        Ok(out)
    }
}

/// Every function of every program section, typed by its section (or by inheritance).
fn programs(elf: &Elf, symbols: &[Symbol]) -> Vec<Program> {
    let mut out: Vec<Program> = symbols
        .iter()
        .filter(|s| s.kind == STT_FUNC && s.size > 0 && elf.is_program(s.section))
        .map(|s| {
            let section_name = elf.sections[s.section].name.clone();
            let kind = match TestSection::parse(s.section, &section_name) {
                Some(t) => super::progtype::prog_kind(&t.progtype),
                None => match TailSection::parse(s.section, &section_name) {
                    Some(Ok(t)) => super::progtype::prog_kind(&t.progtype),
                    _ => section_kind(&section_name),
                },
            };
            Program {
                name: s.name.clone(),
                section: s.section,
                section_name,
                kind,
            }
        })
        .collect();
    out.sort_by_key(|p| (p.section, p.name.clone()));
    // Untyped programs (iproute2 tail sections) take the first typed program's type.
    if let Some(first) = out.iter().find_map(|p| p.kind) {
        for p in &mut out {
            if p.kind.is_none() && iproute2_section(&p.section_name).is_some() {
                p.kind = Some(first);
            }
        }
    }
    out
}

/// Legacy maps: symbols in `maps*` sections, with the iproute2 `id` (the sixth u32 of
/// `struct bpf_elf_map`) where the record is long enough to have one.
fn legacy_maps(elf: &Elf, data: &[u8], symbols: &[Symbol]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for s in symbols.iter().filter(|s| s.kind == STT_OBJECT) {
        let Some(section) = elf.sections.get(s.section) else {
            continue;
        };
        if !section.name.starts_with("maps") {
            continue;
        }
        let Some(bytes) = elf.data(data, s.section) else {
            continue;
        };
        let at = s.value as usize + 20;
        if s.size >= 24 {
            if let Some(id) = bytes.get(at..at + 4) {
                out.insert(
                    s.name.clone(),
                    u32::from_le_bytes(id.try_into().expect("4 bytes")),
                );
            }
        }
    }
    out
}

/// `<id>/<slot>`: Cilium's `Sscanf("%d/%v")` (the slot decimal or `0x` hex).
pub fn iproute2_section(name: &str) -> Option<(u32, u32)> {
    let (id, slot) = name.split_once('/')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = id.parse().ok()?;
    let slot = match slot.strip_prefix("0x").or_else(|| slot.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => slot.parse().ok()?,
    };
    Some((id, slot))
}

fn iproute2_slots(
    programs: &[Program],
    legacy: &BTreeMap<String, u32>,
    slots: &mut Vec<Slot>,
) -> Result<(), BpfError> {
    for p in programs {
        let Some((id, slot)) = iproute2_section(&p.section_name) else {
            continue;
        };
        let map = legacy
            .iter()
            .find(|(_, &map_id)| map_id == id)
            .map(|(name, _)| name.clone())
            .ok_or_else(|| {
                BpfError::Elf(format!(
                    "tail call section {} names map id {id}, and no legacy map (struct \
                     bpf_elf_map in section maps) has that id",
                    p.section_name
                ))
            })?;
        slots.push(Slot {
            map,
            slot,
            target: SlotTarget::Program(p.name.clone()),
            origin: format!("section {}", p.section_name),
        });
    }
    Ok(())
}

fn alias_slot(
    t: &TailSection,
    programs: &[Program],
    slots: &mut Vec<Slot>,
) -> Result<(), BpfError> {
    let mut found = programs.iter().filter(|p| p.section == t.index);
    let (Some(p), None) = (found.next(), found.next()) else {
        return Err(BpfError::Elf(format!(
            "tail call section {} must hold exactly one program",
            t.section
        )));
    };
    slots.push(Slot {
        map: t.map.clone(),
        slot: t.key,
        target: SlotTarget::Program(p.name.clone()),
        origin: format!("section {}", t.section),
    });
    Ok(())
}

/// The slots of `.maps` static initialisers, and the prog arrays whose `values` aya-obj must
/// not see.
fn static_slots(
    elf: &Elf,
    data: &[u8],
    symbols: &[Symbol],
    btf: &Btf,
    slots: &mut Vec<Slot>,
    prog_arrays: &mut Vec<String>,
    hidden: &mut Vec<usize>,
) -> Result<(), BpfError> {
    let Some(maps_section) = elf.section(".maps") else {
        return Ok(());
    };
    let Some(mut vars) = btf.datasec(".maps") else {
        return Ok(());
    };
    fix_offsets(&mut vars, symbols, maps_section.index);
    // (var, `values` member offset in bytes, whether its slots are programs)
    let mut with_values: Vec<(&super::btf::SecVar, u32, bool)> = Vec::new();
    for var in &vars {
        let members = btf
            .var_type(var.var_type)
            .and_then(|t| btf.members(t))
            .ok_or_else(|| {
                BpfError::Elf(format!(
                    "map {}: its BTF definition is not a struct",
                    var.name
                ))
            })?;
        for m in members.iter().filter(|m| m.name == "values") {
            let programs = btf.values_are_programs(m.type_id).ok_or_else(|| {
                BpfError::Elf(format!(
                    "map {}: member values is not __array(values, ...) (a zero-length array \
                     of pointers)",
                    var.name
                ))
            })?;
            if programs {
                hidden.push(m.name_at);
                prog_arrays.push(var.name.clone());
            }
            with_values.push((var, m.bit_offset / 8, programs));
        }
    }
    let bytes_of = |name: &str| format!("map {name}: static initialiser");
    for (offset, sym) in elf.relocations(data, maps_section.index) {
        let Some((var, values_at, programs)) = with_values.iter().find(|(v, _, _)| {
            offset >= u64::from(v.offset) && offset < u64::from(v.offset + v.size)
        }) else {
            return Err(BpfError::Elf(format!(
                "a relocation at offset {offset} of .maps is in no map with a values member"
            )));
        };
        let rel = offset - u64::from(var.offset) - u64::from(*values_at);
        if rel % 8 != 0 {
            return Err(BpfError::Elf(format!(
                "{}: relocation at offset {offset} is not at a slot",
                bytes_of(&var.name)
            )));
        }
        let symbol = symbols.get(sym).ok_or_else(|| {
            BpfError::Elf(format!("{}: unknown symbol {sym}", bytes_of(&var.name)))
        })?;
        let target = match (symbol.kind, programs) {
            (STT_FUNC, true) => SlotTarget::Program(symbol.name.clone()),
            (STT_OBJECT, false) => SlotTarget::Map(symbol.name.clone()),
            (_, true) => {
                return Err(BpfError::Elf(format!(
                    "{}: slot {} names {}, which is no program",
                    bytes_of(&var.name),
                    rel / 8,
                    symbol.name
                )))
            }
            (_, false) => {
                return Err(BpfError::Elf(format!(
                    "{}: slot {} names {}, which is no map",
                    bytes_of(&var.name),
                    rel / 8,
                    symbol.name
                )))
            }
        };
        slots.push(Slot {
            map: var.name.clone(),
            slot: u32::try_from(rel / 8).unwrap_or(u32::MAX),
            target,
            origin: format!("static initialiser of {}", var.name),
        });
    }
    Ok(())
}

/// Gives data-section variables their offsets from the symbol table: clang leaves a
/// DATASEC's offsets at zero in an object, and libbpf fills them in from the symbols the same
/// way (`btf_fixup_datasec`).
fn fix_offsets(vars: &mut [super::btf::SecVar], symbols: &[Symbol], section: usize) {
    for v in vars.iter_mut() {
        if let Some(sym) = symbols
            .iter()
            .find(|s| s.section == section && s.name == v.name && s.kind == STT_OBJECT)
        {
            v.offset = u32::try_from(sym.value).unwrap_or(v.offset);
            if v.size == 0 {
                v.size = u32::try_from(sym.size).unwrap_or(0);
            }
        }
    }
}

/// libbpf's extern sections, which the loader does not resolve: `.kconfig` (values from the
/// kernel's configuration) and `.ksyms` (kernel symbols). Named, rather than failing later as
/// an unresolved relocation.
fn refuse_externs(btf: &Btf) -> Result<(), BpfError> {
    for (section, what) in [
        (".kconfig", "libbpf's __kconfig externs"),
        (".ksyms", "libbpf's __ksym externs"),
    ] {
        if let Some(vars) = btf.datasec(section).filter(|v| !v.is_empty()) {
            let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
            return Err(BpfError::Unsupported(format!(
                "{what} ({}), in section {section}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// The variables of the object's data sections.
fn globals(elf: &Elf, btf: &Btf, symbols: &[Symbol]) -> BTreeMap<String, Global> {
    let mut out = BTreeMap::new();
    for s in &elf.sections {
        let n = &s.name;
        let data_section = n == ".data"
            || n == ".bss"
            || n == ".rodata"
            || n.starts_with(".data.")
            || n.starts_with(".rodata.")
            || n.starts_with(".bss.");
        if !data_section {
            continue;
        }
        let mut vars = btf.datasec(n).unwrap_or_default();
        fix_offsets(&mut vars, symbols, s.index);
        for v in vars {
            out.entry(v.name.clone()).or_insert(Global {
                section: n.clone(),
                offset: v.offset,
                size: v.size,
                global: v.global,
            });
        }
    }
    out
}

/// Parses a global's value for a variable of `size` bytes: a decimal or `0x` hex integer
/// (negative ones in two's complement), `true` or `false`; little-endian bytes.
pub fn global_bytes(value: &str, size: u32) -> Result<Vec<u8>, String> {
    let v = value.trim();
    let n: i128 = match v {
        "true" => 1,
        "false" => 0,
        _ => {
            let (neg, digits) = match v.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, v),
            };
            let magnitude = match digits
                .strip_prefix("0x")
                .or_else(|| digits.strip_prefix("0X"))
            {
                Some(hex) => i128::from_str_radix(hex, 16),
                None => digits.parse::<i128>(),
            }
            .map_err(|_| format!("'{value}' is not an integer, true or false"))?;
            if neg {
                -magnitude
            } else {
                magnitude
            }
        }
    };
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(format!("a {size}-byte variable takes no integer"));
    }
    let bits = size * 8;
    let min = -(1i128 << (bits - 1));
    let max = (1i128 << bits) - 1;
    if n < min || n > max {
        return Err(format!("{value} does not fit in {size} bytes"));
    }
    let bytes = (n as u128).to_le_bytes();
    Ok(bytes[..size as usize].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iproute2_sections_read_like_cilium() {
        assert_eq!(iproute2_section("2/1"), Some((2, 1)));
        assert_eq!(iproute2_section("2/0x1f"), Some((2, 31)));
        assert_eq!(iproute2_section("17/300"), Some((17, 300)));
        for bad in ["xdp/1", "2/", "/1", "2/x", "tc/test/a/check", "2"] {
            assert_eq!(iproute2_section(bad), None, "{bad}");
        }
    }

    #[test]
    fn libbpf_externs_are_named_unsupported() {
        use crate::bpf::btf::tests::Builder;
        let mut b = Builder::new();
        let int = b.int("unsigned int", 4);
        let v = b.var("LINUX_KERNEL_VERSION", int);
        b.datasec(".kconfig", 4, &[(v, 0, 4)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(
            refuse_externs(&btf).unwrap_err().to_string(),
            "unsupported: libbpf's __kconfig externs (LINUX_KERNEL_VERSION), in section .kconfig"
        );
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let v = b.var("x", int);
        b.datasec(".data", 4, &[(v, 0, 4)]);
        assert!(refuse_externs(&Btf::parse(&b.build()).unwrap()).is_ok());
    }

    #[test]
    fn globals_take_integers_and_booleans_of_their_size() {
        assert_eq!(global_bytes("3", 4).unwrap(), [3, 0, 0, 0]);
        assert_eq!(global_bytes("0x1234", 2).unwrap(), [0x34, 0x12]);
        assert_eq!(global_bytes("-1", 2).unwrap(), [0xff, 0xff]);
        assert_eq!(global_bytes("true", 1).unwrap(), [1]);
        assert_eq!(global_bytes("false", 8).unwrap(), [0; 8]);
        assert!(global_bytes("256", 1).is_err());
        assert!(global_bytes("nope", 4).is_err());
        assert!(global_bytes("1", 3).is_err());
    }
}
