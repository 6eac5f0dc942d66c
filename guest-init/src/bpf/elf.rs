//! The ELF side of an eBPF test object: its section table, which sections are test programs
//! (`<progtype>/test/<name>/<stage>`) and tail call targets (`<progtype>/tail/<map>/<index>`,
//! the lab's convention for filling prog arrays), and the in-place section renaming that lets aya-obj parse
//! sections whose names its own parser rejects (`xdp/test/...`, `tc/...`).
//!
//! Renaming keeps every offset in the file: only the first path component of a program
//! section's name changes, to `tp` padded with `/` to the same length (`xdp/test/a/check` →
//! `tp//test/a/check`), which aya-obj reads as a program of some type while the rest of the name
//! keeps each section distinct. The same bytes change in the `.BTF` string table, so `.BTF.ext`
//! records (function, line and CO-RE info, keyed by section name) still match their sections.
//! The runner never uses the type aya-obj infers; it takes the type from the original name.

use std::collections::HashMap;

use super::BpfError;

const EM_BPF: u16 = 247;
const SHT_SYMTAB: u32 = 2;
const SHT_RELA: u32 = 4;
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

    /// A copy of `data` whose program sections (and their `.BTF` strings) are renamed so that
    /// aya-obj's section parser accepts them; see the module docs.
    pub fn renamed_for_aya(&self, data: &[u8]) -> Result<Vec<u8>, BpfError> {
        let mut out = data.to_vec();
        let strtab = self.sections[self.shstrndx]
            .range(data.len())
            .expect("checked by parse");
        // (offset in the name table, original name, new name) per renamed section.
        let mut renames: Vec<(usize, &str, String)> = Vec::new();
        let mut seen: HashMap<String, &str> = HashMap::new();
        for s in self.sections.iter().filter(|s| s.is_program()) {
            let Some(new) = aya_name(&s.name) else {
                continue;
            };
            if let Some(other) = seen.insert(new.clone(), &s.name) {
                if other != s.name {
                    return Err(BpfError::Rename(format!(
                        "sections {other} and {} cannot be told apart",
                        s.name
                    )));
                }
            }
            if new != s.name {
                renames.push((s.name_off as usize, &s.name, new));
            }
        }
        self.check_unshared(data, &renames)?;
        for (off, _, new) in &renames {
            let at = strtab.start + off;
            out[at..at + new.len()].copy_from_slice(new.as_bytes());
        }
        if let Some(btf) = self.sections.iter().find(|s| s.name == ".BTF") {
            let range = btf
                .range(data.len())
                .ok_or_else(|| BpfError::Elf(".BTF out of bounds".into()))?;
            rename_btf_strings(&mut out[range], &renames)?;
        }
        Ok(out)
    }

    /// Fails if a renamed name's bytes are also part of another name (string tables may share
    /// tails), other than a relocation section's, which nobody reads by name.
    fn check_unshared(
        &self,
        data: &[u8],
        renames: &[(usize, &str, String)],
    ) -> Result<(), BpfError> {
        let strtab = &data[self.sections[self.shstrndx]
            .range(data.len())
            .expect("checked by parse")];
        let renamed: Vec<usize> = renames.iter().map(|r| r.0).collect();
        let mut refs: Vec<usize> = self
            .sections
            .iter()
            .filter(|s| s.kind != SHT_REL && s.kind != SHT_RELA)
            .map(|s| s.name_off as usize)
            .filter(|o| !renamed.contains(o))
            .collect();
        for symtab in self.sections.iter().filter(|s| s.kind == SHT_SYMTAB) {
            if symtab.link as usize != self.shstrndx {
                continue;
            }
            let Some(range) = symtab.range(data.len()) else {
                continue;
            };
            refs.extend(
                data[range]
                    .chunks_exact(24)
                    .map(|sym| u32_at(sym, 0).expect("a symbol is 24 bytes") as usize),
            );
        }
        for (off, name, _) in renames {
            for &r in &refs {
                let len = str_at(strtab, r).map_or(0, <[u8]>::len);
                let first = name.split('/').next().unwrap_or_default().len();
                if len > 0 && r < off + first && r + len > *off {
                    return Err(BpfError::Rename(format!(
                        "the name of section {name} shares bytes with another name"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The name aya-obj gets for program section `name`: its first path component replaced by `tp`
/// and `/` padding of the same length; None where that component is shorter than `tp`.
fn aya_name(name: &str) -> Option<String> {
    let first = name.split('/').next().unwrap_or_default();
    if first.len() < 2 {
        return None;
    }
    Some(format!(
        "tp{}{}",
        "/".repeat(first.len() - 2),
        &name[first.len()..]
    ))
}

/// Applies `renames` to the strings of a `.BTF` section, in place.
fn rename_btf_strings(btf: &mut [u8], renames: &[(usize, &str, String)]) -> Result<(), BpfError> {
    let bad = || BpfError::Elf("malformed .BTF header".into());
    if u16_at(btf, 0) != Some(0xeb9f) {
        return Err(bad());
    }
    let hdr_len = u32_at(btf, 4).ok_or_else(bad)? as usize;
    let str_off = u32_at(btf, 16).ok_or_else(bad)? as usize;
    let str_len = u32_at(btf, 20).ok_or_else(bad)? as usize;
    let start = hdr_len.checked_add(str_off).ok_or_else(bad)?;
    let end = start.checked_add(str_len).ok_or_else(bad)?;
    let strings = btf.get_mut(start..end).ok_or_else(bad)?;
    let mut at = 0;
    while at < strings.len() {
        let len = strings[at..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(strings.len() - at);
        if let Some((_, _, new)) = renames
            .iter()
            .find(|(_, old, _)| old.as_bytes() == &strings[at..at + len])
        {
            strings[at..at + len].copy_from_slice(new.as_bytes());
        }
        at += len + 1;
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
    fn aya_names_keep_the_length_and_the_rest() {
        let table = [
            ("xdp/test/a/check", Some("tp//test/a/check")),
            ("tc/test/a/check", Some("tp/test/a/check")),
            ("classifier", Some("tp////////")),
            (
                "cgroup_skb/egress/test/a/check",
                Some("tp/////////egress/test/a/check"),
            ),
            ("x/test/a/check", None),
        ];
        for (name, want) in table {
            let got = aya_name(name);
            assert_eq!(got.as_deref(), want, "{name}");
            if let Some(got) = got {
                assert_eq!(got.len(), name.len());
            }
        }
    }

    #[test]
    fn btf_strings_are_renamed_in_place() {
        let strings = b"\0int\0xdp/test/a/check\0xdp/test/a/checker\0";
        let mut btf = vec![0u8; 24];
        btf[0..2].copy_from_slice(&0xeb9fu16.to_le_bytes());
        btf[4..8].copy_from_slice(&24u32.to_le_bytes());
        btf[20..24].copy_from_slice(&(strings.len() as u32).to_le_bytes());
        btf.extend_from_slice(strings);
        let renames = [(0, "xdp/test/a/check", "tp//test/a/check".to_string())];
        rename_btf_strings(&mut btf, &renames).expect("well formed");
        assert_eq!(&btf[24..], b"\0int\0tp//test/a/check\0xdp/test/a/checker\0");
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
