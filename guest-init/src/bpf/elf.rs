//! The ELF side of an eBPF test object: its section table, symbols and relocations, which
//! sections are test programs (`<progtype>/test/<name>/<stage>`) and lab's own tail call
//! sections (`<progtype>/tail/<map>/<index>`), and the copy of the object that aya-obj parses.
//!
//! aya-obj's section parser rejects the names the field's objects use (`xdp/test/...`, `tc/...`,
//! iproute2's `2/1`, Kmesh's `xdp_auth`), and reads types from them that the runner does not
//! want: [`Elf::prepare_for_aya`] gives every program section a name of its own that aya-obj
//! accepts, in the section headers, the `.BTF` strings and the `.BTF.ext` records alike, without
//! moving a byte of the original (new tables go at the end of the file). The runner takes each
//! program's type from its original section name ([`super::progtype`]).

use std::collections::HashMap;

use super::BpfError;

const EM_BPF: u16 = 247;
const SHT_SYMTAB: u32 = 2;
const SHT_REL: u32 = 9;
const SHF_EXECINSTR: u64 = 4;
/// More sections than any real object has; bounds the work on a hostile file.
const MAX_SECTIONS: usize = 1 << 16;

/// One section header, as far as the runner needs it.
#[derive(Debug, Clone)]
pub struct Section {
    pub index: usize,
    pub name: String,
    name_off: u32,
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
}

/// `STT_OBJECT`, `STT_FUNC`, `STT_SECTION` symbol types.
pub const STT_OBJECT: u8 = 1;
pub const STT_FUNC: u8 = 2;

/// A symbol of the object's symbol table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub value: u64,
    pub size: u64,
    /// The section it is defined in (`st_shndx`).
    pub section: usize,
    /// `STT_*`.
    pub kind: u8,
}

impl Section {
    /// Whether aya-obj treats this section as a program (executable, not `.text`).
    fn is_program(&self) -> bool {
        self.flags & SHF_EXECINSTR != 0 && self.size > 0 && !self.name.starts_with(".text")
    }

    fn range(&self, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(self.offset).ok()?;
        let end = start.checked_add(usize::try_from(self.size).ok()?)?;
        (end <= len).then_some(start..end)
    }
}

/// The section table of a little-endian 64-bit BPF ELF object.
#[derive(Debug)]
pub struct Elf {
    pub sections: Vec<Section>,
    shstrndx: usize,
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// The NUL-terminated string at `at` in `table` (bounded by the table).
fn str_at(table: &[u8], at: usize) -> Option<&[u8]> {
    let rest = table.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

impl Elf {
    /// Reads the section table; anything out of bounds or not an eBPF object is an error.
    pub fn parse(data: &[u8]) -> Result<Self, BpfError> {
        let bad = |why: &str| BpfError::Elf(why.to_string());
        if data.get(..4) != Some(b"\x7fELF") {
            return Err(bad("not an ELF file"));
        }
        if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
            return Err(bad("not a little-endian 64-bit ELF file"));
        }
        let machine = u16_at(data, 0x12).ok_or_else(|| bad("truncated header"))?;
        if machine != EM_BPF {
            return Err(bad(&format!("not an eBPF object (machine {machine})")));
        }
        let shoff = u64_at(data, 0x28).ok_or_else(|| bad("truncated header"))?;
        let shentsize = u16_at(data, 0x3a).ok_or_else(|| bad("truncated header"))?;
        let shnum = usize::from(u16_at(data, 0x3c).ok_or_else(|| bad("truncated header"))?);
        let shstrndx = usize::from(u16_at(data, 0x3e).ok_or_else(|| bad("truncated header"))?);
        if shentsize != 64 {
            return Err(bad("unexpected section header size"));
        }
        if shnum == 0 || shnum > MAX_SECTIONS || shstrndx >= shnum {
            return Err(bad("unsupported section count or string table index"));
        }
        let shoff = usize::try_from(shoff).map_err(|_| bad("section table out of bounds"))?;
        let mut sections = Vec::with_capacity(shnum);
        for index in 0..shnum {
            let at = shoff
                .checked_add(index * 64)
                .filter(|at| at + 64 <= data.len())
                .ok_or_else(|| bad("section table out of bounds"))?;
            let h = &data[at..at + 64];
            let field = |o| u64_at(h, o).expect("a header is 64 bytes");
            sections.push(Section {
                index,
                name: String::new(),
                name_off: u32_at(h, 0).expect("a header is 64 bytes"),
                kind: u32_at(h, 4).expect("a header is 64 bytes"),
                flags: field(8),
                offset: field(0x18),
                size: field(0x20),
                link: u32_at(h, 0x28).expect("a header is 64 bytes"),
                info: u32_at(h, 0x2c).expect("a header is 64 bytes"),
            });
        }
        let strtab = sections[shstrndx]
            .range(data.len())
            .map(|r| &data[r])
            .ok_or_else(|| bad("section name table out of bounds"))?;
        for s in &mut sections {
            let name = str_at(strtab, s.name_off as usize)
                .ok_or_else(|| bad("section name out of bounds"))?;
            s.name = String::from_utf8_lossy(name).into_owned();
        }
        Ok(Self { sections, shstrndx })
    }

    /// The bytes of section `index`.
    pub fn data<'d>(&self, data: &'d [u8], index: usize) -> Option<&'d [u8]> {
        let s = self.sections.get(index)?;
        s.range(data.len()).map(|r| &data[r])
    }

    /// The section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Whether section `index` holds programs.
    pub fn is_program(&self, index: usize) -> bool {
        self.sections.get(index).is_some_and(Section::is_program)
    }

    /// Every symbol of the symbol table, with names from its string table.
    pub fn symbols(&self, data: &[u8]) -> Result<Vec<Symbol>, BpfError> {
        let bad = |why: &str| BpfError::Elf(why.to_string());
        let Some(symtab) = self.sections.iter().find(|s| s.kind == SHT_SYMTAB) else {
            return Ok(Vec::new());
        };
        let table = symtab
            .range(data.len())
            .map(|r| &data[r])
            .ok_or_else(|| bad("symbol table out of bounds"))?;
        let names = self
            .data(data, symtab.link as usize)
            .ok_or_else(|| bad("symbol names out of bounds"))?;
        let mut out = Vec::with_capacity(table.len() / 24);
        for sym in table.chunks_exact(24) {
            let name = str_at(names, u32_at(sym, 0).expect("24 bytes") as usize)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            out.push(Symbol {
                name,
                kind: sym[4] & 0xf,
                section: usize::from(u16_at(sym, 6).expect("24 bytes")),
                value: u64_at(sym, 8).expect("24 bytes"),
                size: u64_at(sym, 16).expect("24 bytes"),
            });
        }
        Ok(out)
    }

    /// The relocations of section `target` (its `SHT_REL` section): (offset, symbol index).
    pub fn relocations(&self, data: &[u8], target: usize) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        for rel in self
            .sections
            .iter()
            .filter(|s| s.kind == SHT_REL && s.info as usize == target)
        {
            let Some(range) = rel.range(data.len()) else {
                continue;
            };
            for r in data[range].chunks_exact(16) {
                let offset = u64_at(r, 0).expect("16 bytes");
                let info = u64_at(r, 8).expect("16 bytes");
                out.push((offset, (info >> 32) as usize));
            }
        }
        out
    }

    /// The test-program sections, in section order.
    pub fn tests(&self) -> Vec<TestSection> {
        self.sections
            .iter()
            .filter(|s| s.is_program())
            .filter_map(|s| TestSection::parse(s.index, &s.name))
            .collect()
    }

    /// The tail call targets, in section order; a section that looks like one (it has a
    /// `/tail/` component and is no test section) but is malformed, or two targets for one
    /// slot, are an error.
    pub fn tail_targets(&self) -> Result<Vec<TailSection>, String> {
        let mut out: Vec<TailSection> = Vec::new();
        for s in self.sections.iter().filter(|s| s.is_program()) {
            let Some(target) = TailSection::parse(s.index, &s.name) else {
                continue;
            };
            let target = target?;
            if let Some(other) = out
                .iter()
                .find(|o| o.map == target.map && o.key == target.key)
            {
                return Err(format!(
                    "two tail call targets for {}[{}]: {} and {}",
                    target.map, target.key, other.section, target.section
                ));
            }
            out.push(target);
        }
        Ok(out)
    }

    /// Test names in order of first appearance.
    pub fn test_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for t in self.tests() {
            if !names.contains(&t.test) {
                names.push(t.test);
            }
        }
        names
    }

    /// A copy of `data` that aya-obj parses: every program section renamed to
    /// `tp/lab/s<index>` (a name aya-obj's section parser accepts, unique per section, so
    /// that the `.BTF.ext` records keyed by section name stay apart), the same names in the
    /// `.BTF` strings and `.BTF.ext` records, and the `.BTF` members at `hidden_members` (offsets
    /// of their `name_off` in the original `.BTF`) renamed to the empty name, which aya-obj
    /// skips (the `values` of a prog array: see `object`). Nothing moves: the new section name
    /// table and the new `.BTF` go at the end of the file, and the section headers point there.
    pub fn prepare_for_aya(
        &self,
        data: &[u8],
        hidden_members: &[usize],
    ) -> Result<Vec<u8>, BpfError> {
        let bad = |why: String| BpfError::Rename(why);
        let mut out = data.to_vec();
        let programs: Vec<&Section> = self.sections.iter().filter(|s| s.is_program()).collect();
        let mut renames: HashMap<String, String> = HashMap::new();
        for s in &programs {
            if renames.insert(s.name.clone(), aya_name(s.index)).is_some() {
                return Err(bad(format!("two program sections are named {}", s.name)));
            }
        }
        // 1. The section name table, copied with the new names appended.
        let shstr = &self.sections[self.shstrndx];
        let old = shstr
            .range(data.len())
            .map(|r| data[r].to_vec())
            .ok_or_else(|| bad("section name table out of bounds".into()))?;
        let mut table = old;
        let mut new_name_off = HashMap::new();
        for s in &programs {
            new_name_off.insert(s.index, table.len() as u32);
            table.extend_from_slice(renames[&s.name].as_bytes());
            table.push(0);
        }
        let table_at = append(&mut out, &table);
        let header = |index: usize| -> Result<usize, BpfError> {
            let shoff = u64_at(data, 0x28).expect("checked by parse") as usize;
            Ok(shoff + index * 64)
        };
        set_u64(&mut out, header(self.shstrndx)? + 0x18, table_at as u64);
        set_u64(&mut out, header(self.shstrndx)? + 0x20, table.len() as u64);
        for s in &programs {
            set_u32(&mut out, header(s.index)?, new_name_off[&s.index]);
        }
        // 2. `.BTF`, with the new names appended to its strings and the hidden members.
        let Some(btf_section) = self.sections.iter().find(|s| s.name == ".BTF") else {
            return Ok(out);
        };
        let btf_range = btf_section
            .range(data.len())
            .ok_or_else(|| bad(".BTF out of bounds".into()))?;
        let btf = super::btf::Btf::parse(&data[btf_range.clone()]).map_err(bad)?;
        let mut blob = btf.blob().to_vec();
        for &at in hidden_members {
            if at + 4 > blob.len() || !btf.types_range().contains(&at) {
                return Err(bad(format!("no BTF member at {at}")));
            }
            set_u32(&mut blob, at, 0);
        }
        let strings = btf.strings_range();
        if strings.end != blob.len() {
            return Err(bad(".BTF strings are not its last part".into()));
        }
        let by_content = btf.string_offsets();
        let mut name_map: HashMap<u32, u32> = HashMap::new();
        for (old_name, new_name) in &renames {
            let Some(&old_off) = by_content.get(old_name) else {
                continue;
            };
            let new_off = (blob.len() - strings.start) as u32;
            blob.extend_from_slice(new_name.as_bytes());
            blob.push(0);
            name_map.insert(old_off, new_off);
        }
        let str_len = (blob.len() - strings.start) as u32;
        set_u32(&mut blob, 20, str_len);
        let btf_at = append(&mut out, &blob);
        set_u64(&mut out, header(btf_section.index)? + 0x18, btf_at as u64);
        set_u64(
            &mut out,
            header(btf_section.index)? + 0x20,
            blob.len() as u64,
        );
        // 3. `.BTF.ext`, in place: each record block names its section by a `.BTF` string.
        if let Some(ext) = self.sections.iter().find(|s| s.name == ".BTF.ext") {
            let range = ext
                .range(data.len())
                .ok_or_else(|| bad(".BTF.ext out of bounds".into()))?;
            rename_ext_sections(&mut out[range], &name_map).map_err(bad)?;
        }
        Ok(out)
    }
}

/// The name aya-obj parses program section `index` under.
pub fn aya_name(index: usize) -> String {
    format!("tp/lab/s{index}")
}

/// Appends `bytes` to `out` at an 8-byte boundary; returns where they start.
fn append(out: &mut Vec<u8>, bytes: &[u8]) -> usize {
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let at = out.len();
    out.extend_from_slice(bytes);
    at
}

fn set_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn set_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Rewrites the section-name offsets of a `.BTF.ext`'s func, line and CO-RE info blocks
/// through `name_map` (old `.BTF` string offset → new).
fn rename_ext_sections(ext: &mut [u8], name_map: &HashMap<u32, u32>) -> Result<(), String> {
    let bad = |why: &str| format!("malformed .BTF.ext: {why}");
    if u16_at(ext, 0) != Some(0xeb9f) {
        return Err(bad("no magic"));
    }
    let hdr_len = u32_at(ext, 4).ok_or_else(|| bad("truncated"))? as usize;
    // (offset, length) of func_info, line_info and (newer headers) core_relo.
    let mut parts = vec![(8usize, 12usize), (16, 20)];
    if hdr_len >= 32 {
        parts.push((24, 28));
    }
    for (off_at, len_at) in parts {
        let off = u32_at(ext, off_at).ok_or_else(|| bad("truncated"))? as usize;
        let len = u32_at(ext, len_at).ok_or_else(|| bad("truncated"))? as usize;
        if len == 0 {
            continue;
        }
        let start = hdr_len.checked_add(off).ok_or_else(|| bad("overflow"))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= ext.len())
            .ok_or_else(|| bad("out of bounds"))?;
        let rec_size = u32_at(ext, start).ok_or_else(|| bad("truncated"))? as usize;
        if rec_size == 0 {
            return Err(bad("zero record size"));
        }
        let mut at = start + 4;
        while at + 8 <= end {
            let name = u32_at(ext, at).expect("bounded");
            let n = u32_at(ext, at + 4).expect("bounded") as usize;
            if let Some(&new) = name_map.get(&name) {
                set_u32(ext, at, new);
            }
            at = n
                .checked_mul(rec_size)
                .and_then(|b| at.checked_add(8 + b))
                .ok_or_else(|| bad("overflow"))?;
        }
    }
    Ok(())
}

/// The stage a test program plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Pktgen,
    /// `setup` (Cilium) or `jump` (Kmesh).
    Setup,
    Check,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pktgen => "pktgen",
            Stage::Setup => "setup",
            Stage::Check => "check",
        }
    }
}

/// A section named `<progtype>/test/<name>/<stage>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSection {
    pub index: usize,
    pub section: String,
    pub progtype: String,
    pub test: String,
    pub stage: Stage,
}

impl TestSection {
    /// Splits a section name at the last `/test/`; None if it is no test section.
    pub fn parse(index: usize, name: &str) -> Option<Self> {
        let at = name.rfind("/test/")?;
        let progtype = &name[..at];
        let (test, stage) = name[at + "/test/".len()..].rsplit_once('/')?;
        let stage = match stage {
            "pktgen" => Stage::Pktgen,
            "setup" | "jump" => Stage::Setup,
            "check" => Stage::Check,
            _ => return None,
        };
        if progtype.is_empty() || test.is_empty() {
            return None;
        }
        Some(Self {
            index,
            section: name.to_string(),
            progtype: progtype.to_string(),
            test: test.to_string(),
            stage,
        })
    }
}

/// A tail call target: the program in section `<progtype>/tail/<map>/<index>`, which the
/// runner loads for every test and puts at key `<index>` of the prog array `<map>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailSection {
    pub index: usize,
    pub section: String,
    pub progtype: String,
    pub map: String,
    pub key: u32,
}

impl TailSection {
    /// None if `name` has no `/tail/` component or is a test section; an error if it has one
    /// but is not `<progtype>/tail/<map>/<index>` with a decimal index. `<progtype>` may
    /// contain `/`: the last two components are the map and the index.
    pub fn parse(index: usize, name: &str) -> Option<Result<Self, String>> {
        if !name.contains("/tail/") || TestSection::parse(index, name).is_some() {
            return None;
        }
        let bad = || {
            format!(
                "section {name} is no tail call target <progtype>/tail/<map>/<index> \
                 (index a decimal number)"
            )
        };
        let mut parts = name.rsplitn(3, '/');
        let (Some(key), Some(map), Some(head)) = (parts.next(), parts.next(), parts.next()) else {
            return Some(Err(bad()));
        };
        let progtype = head.strip_suffix("/tail").unwrap_or_default();
        if progtype.is_empty()
            || map.is_empty()
            || key.is_empty()
            || !key.bytes().all(|b| b.is_ascii_digit())
        {
            return Some(Err(bad()));
        }
        let Ok(key) = key.parse::<u32>() else {
            return Some(Err(bad()));
        };
        Some(Ok(Self {
            index,
            section: name.to_string(),
            progtype: progtype.to_string(),
            map: map.to_string(),
            key,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A section name and what it is: no target (None), a malformed one (Some(None)), or a
    /// target's (progtype, map, key).
    type TailCase = (
        &'static str,
        Option<Option<(&'static str, &'static str, u32)>>,
    );

    #[test]
    fn tail_sections_name_a_map_and_a_decimal_index() {
        let table: &[TailCase] = &[
            ("tc/tail/calls/0", Some(Some(("tc", "calls", 0)))),
            ("xdp/tail/jumps/17", Some(Some(("xdp", "jumps", 17)))),
            (
                "cgroup/connect4/tail/m/3",
                Some(Some(("cgroup/connect4", "m", 3))),
            ),
            ("tc/tail/tail/1", Some(Some(("tc", "tail", 1)))),
            ("tc/tail/m/4294967295", Some(Some(("tc", "m", u32::MAX)))),
            // Looks like a target, is not one: an error, not silence.
            ("tc/tail/m/x", Some(None)),
            ("tc/tail/m/4294967296", Some(None)),
            ("tc/tail/m/-1", Some(None)),
            ("tc/tail/m/", Some(None)),
            ("tc/tail//0", Some(None)),
            ("/tail/m/0", Some(None)),
            ("tc/tail/m", Some(None)),
            ("tc/tail/a/b/0", Some(None)),
            // No target at all.
            ("tc", None),
            ("tc/tailcall/m/0", None),
            ("tail/m/0", None),
            ("tc/test/tail/x/check", None),
        ];
        for (name, want) in table {
            let got = TailSection::parse(5, name)
                .map(|r| r.ok().map(|t| (t.progtype, t.map, t.key, t.index)));
            let want = want.map(|w| w.map(|(p, m, k)| (p.to_string(), m.to_string(), k, 5)));
            assert_eq!(got, want, "{name}");
        }
    }

    /// A section name and the (progtype, test, stage) it names, if any.
    type Case = (&'static str, Option<(&'static str, &'static str, Stage)>);

    #[test]
    fn test_sections_split_at_the_last_test() {
        let table: &[Case] = &[
            ("xdp/test/a/check", Some(("xdp", "a", Stage::Check))),
            ("tc/test/a_b/pktgen", Some(("tc", "a_b", Stage::Pktgen))),
            ("tc/test/x/jump", Some(("tc", "x", Stage::Setup))),
            ("tc/test/x/setup", Some(("tc", "x", Stage::Setup))),
            (
                "cgroup/connect4/test/c/check",
                Some(("cgroup/connect4", "c", Stage::Check)),
            ),
            (
                "cgroup_skb/egress/test/n/m/check",
                Some(("cgroup_skb/egress", "n/m", Stage::Check)),
            ),
            ("tc/test/x/other", None),
            ("tc/test//check", None),
            ("/test/x/check", None),
            ("xdp", None),
            ("tc/test/check", None),
        ];
        for (name, want) in table {
            let got = TestSection::parse(3, name).map(|t| (t.progtype, t.test, t.stage));
            let want = want.map(|(p, t, s)| (p.to_string(), t.to_string(), s));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn garbage_is_not_an_object() {
        for data in [
            &b""[..],
            b"\x7fELF",
            b"hello world, this is not an ELF file at all......",
        ] {
            assert!(Elf::parse(data).is_err());
        }
    }
}
