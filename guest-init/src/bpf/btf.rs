//! Just enough of an object's `.BTF` to read what the field's loaders read from it: the data
//! sections' variables (`.maps`, `.data`, `.rodata*`, `.bss`: name, offset, size), the members of
//! a BTF map definition, and where a member's name lives (so a copy of the BTF can be patched).
//! Every offset and count is checked against the blob: a hostile object is an error, never a
//! panic or a large allocation.

use std::collections::HashMap;

/// BTF kinds this reader tells apart (the rest are skipped by size).
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// The most types an object may declare.
const MAX_TYPES: usize = 1 << 20;

/// One type, as far as this reader needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Type {
    pub kind: u32,
    pub name_off: u32,
    /// `size` for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT, `type` for the others.
    pub size_or_type: u32,
    pub vlen: u32,
    /// Where the type's record starts in the blob.
    pub at: usize,
}

/// A struct member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    /// Bit offset in the struct.
    pub bit_offset: u32,
    /// Where the member's `name_off` is in the blob.
    pub name_at: usize,
}

/// A variable of a data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecVar {
    pub name: String,
    /// The VAR type's id.
    pub var_type: u32,
    pub offset: u32,
    pub size: u32,
    /// Whether it is a global (not `static`, not `__hidden`): libbpf's test for making its
    /// section's map mmapable.
    pub global: bool,
}

/// A parsed `.BTF` blob.
#[derive(Debug)]
pub struct Btf {
    /// Type id → type (index 0 is `void`).
    pub types: Vec<Type>,
    strings: std::ops::Range<usize>,
    types_at: std::ops::Range<usize>,
    blob: Vec<u8>,
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// Parses a `.BTF` section.
    pub fn parse(blob: &[u8]) -> Result<Self, String> {
        let bad = |why: &str| format!("malformed .BTF: {why}");
        if u16_at(blob, 0) != Some(0xeb9f) {
            return Err(bad("no magic"));
        }
        let hdr_len = u32_at(blob, 4).ok_or_else(|| bad("truncated header"))? as usize;
        let field = |at| {
            u32_at(blob, at)
                .map(|v| v as usize)
                .ok_or_else(|| bad("truncated header"))
        };
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let range = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            let end = start.checked_add(len)?;
            (end <= blob.len()).then_some(start..end)
        };
        let types_at = range(type_off, type_len).ok_or_else(|| bad("types out of bounds"))?;
        let strings = range(str_off, str_len).ok_or_else(|| bad("strings out of bounds"))?;
        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            size_or_type: 0,
            vlen: 0,
            at: 0,
        }];
        let mut at = types_at.start;
        while at < types_at.end {
            if types.len() > MAX_TYPES {
                return Err(bad("too many types"));
            }
            let name_off = u32_at(blob, at).ok_or_else(|| bad("truncated type"))?;
            let info = u32_at(blob, at + 4).ok_or_else(|| bad("truncated type"))?;
            let size_or_type = u32_at(blob, at + 8).ok_or_else(|| bad("truncated type"))?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = match kind {
                kind::INT | kind::VAR | kind::DECL_TAG => 4,
                kind::ARRAY => 12,
                kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen as usize,
                kind::ENUM | kind::FUNC_PROTO => 8 * vlen as usize,
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => 0,
                other => return Err(bad(&format!("unknown kind {other}"))),
            };
            types.push(Type {
                kind,
                name_off,
                size_or_type,
                vlen,
                at,
            });
            at = at
                .checked_add(12 + extra)
                .filter(|&a| a <= types_at.end)
                .ok_or_else(|| bad("type runs past the types"))?;
        }
        Ok(Self {
            types,
            strings,
            types_at,
            blob: blob.to_vec(),
        })
    }

    /// The string at `off` in the string section.
    pub fn string(&self, off: u32) -> Option<String> {
        let table = &self.blob[self.strings.clone()];
        let rest = table.get(off as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    /// The type `id`.
    pub fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// `id` with typedefs and qualifiers (const, volatile, restrict, type tags) taken off.
    pub fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..64 {
            let t = self.get(id)?;
            match t.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// The members of struct (or union) `id`.
    pub fn members(&self, id: u32) -> Option<Vec<Member>> {
        let t = self.get(self.resolve(id)?)?;
        if t.kind != kind::STRUCT && t.kind != kind::UNION {
            return None;
        }
        let mut out = Vec::with_capacity(t.vlen as usize);
        for i in 0..t.vlen as usize {
            let at = t.at + 12 + 12 * i;
            let name_off = u32_at(&self.blob, at)?;
            out.push(Member {
                name: self.string(name_off)?,
                type_id: u32_at(&self.blob, at + 4)?,
                bit_offset: u32_at(&self.blob, at + 8)?,
                name_at: at,
            });
        }
        Some(out)
    }

    /// The variables of the data section named `section`, in order; None if there is none.
    pub fn datasec(&self, section: &str) -> Option<Vec<SecVar>> {
        let t = self.types.iter().find(|t| {
            t.kind == kind::DATASEC && self.string(t.name_off).as_deref() == Some(section)
        })?;
        let mut out = Vec::with_capacity(t.vlen as usize);
        for i in 0..t.vlen as usize {
            let at = t.at + 12 + 12 * i;
            let var_type = u32_at(&self.blob, at)?;
            let var = self.get(var_type)?;
            // A VAR's linkage follows its header: 0 static, 1 global, 2 extern.
            let linkage = if var.kind == kind::VAR {
                u32_at(&self.blob, var.at + 12)?
            } else {
                0
            };
            out.push(SecVar {
                name: self.string(var.name_off)?,
                var_type,
                offset: u32_at(&self.blob, at + 4)?,
                size: u32_at(&self.blob, at + 8)?,
                global: linkage != 0,
            });
        }
        Some(out)
    }

    /// The type a VAR declares.
    pub fn var_type(&self, var: u32) -> Option<u32> {
        let t = self.get(var)?;
        (t.kind == kind::VAR).then_some(t.size_or_type)
    }

    /// For a map definition member `values` of type `__array(values, T)`: whether T is a
    /// function (a prog array's slots) rather than a map definition (map-in-map).
    pub fn values_are_programs(&self, member_type: u32) -> Option<bool> {
        let arr = self.get(self.resolve(member_type)?)?;
        if arr.kind != kind::ARRAY {
            return None;
        }
        let elem = u32_at(&self.blob, arr.at + 12)?;
        let ptr = self.get(self.resolve(elem)?)?;
        if ptr.kind != kind::PTR {
            return None;
        }
        let target = self.get(self.resolve(ptr.size_or_type)?)?;
        Some(target.kind == kind::FUNC_PROTO)
    }

    /// The raw blob.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Where the string section is in the blob.
    pub fn strings_range(&self) -> std::ops::Range<usize> {
        self.strings.clone()
    }

    /// Where the types are in the blob.
    pub fn types_range(&self) -> std::ops::Range<usize> {
        self.types_at.clone()
    }

    /// Offsets of every string in the string section, by content (the first of equal ones).
    pub fn string_offsets(&self) -> HashMap<String, u32> {
        let table = &self.blob[self.strings.clone()];
        let mut out = HashMap::new();
        let mut at = 0usize;
        while at < table.len() {
            let len = table[at..]
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(table.len() - at);
            out.entry(String::from_utf8_lossy(&table[at..at + len]).into_owned())
                .or_insert(at as u32);
            at += len + 1;
        }
        out
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A BTF blob builder for tests.
    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next: u32,
    }

    impl Builder {
        pub fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next: 1,
            }
        }
        pub fn str(&mut self, s: &str) -> u32 {
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            at
        }
        fn push(&mut self, name: u32, kind: u32, vlen: u32, st: u32, extra: &[u32]) -> u32 {
            for w in [name, (kind << 24) | vlen, st].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next += 1;
            self.next - 1
        }
        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            let n = self.str(name);
            self.push(n, kind::INT, 0, size, &[size * 8])
        }
        pub fn ptr(&mut self, to: u32) -> u32 {
            self.push(0, kind::PTR, 0, to, &[])
        }
        pub fn array(&mut self, elem: u32, n: u32, index: u32) -> u32 {
            self.push(0, kind::ARRAY, 0, 0, &[elem, index, n])
        }
        pub fn func_proto(&mut self, ret: u32) -> u32 {
            self.push(0, kind::FUNC_PROTO, 0, ret, &[])
        }
        pub fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let n = self.str(name);
            let mut extra = Vec::new();
            for (m, ty, bits) in members {
                extra.push(self.str(m));
                extra.push(*ty);
                extra.push(*bits);
            }
            self.push(n, kind::STRUCT, members.len() as u32, size, &extra)
        }
        pub fn var(&mut self, name: &str, ty: u32) -> u32 {
            let n = self.str(name);
            self.push(n, kind::VAR, 0, ty, &[1])
        }
        pub fn datasec(&mut self, name: &str, size: u32, vars: &[(u32, u32, u32)]) -> u32 {
            let n = self.str(name);
            let extra: Vec<u32> = vars.iter().flat_map(|(v, o, s)| [*v, *o, *s]).collect();
            self.push(n, kind::DATASEC, vars.len() as u32, size, &extra)
        }
        pub fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9fu16.to_le_bytes());
            out.push(1);
            out.push(0);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    #[test]
    fn data_sections_and_map_members_are_read() {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let three = b.array(int, 3, int);
        let type_ptr = b.ptr(three);
        let proto = b.func_proto(int);
        let fptr = b.ptr(proto);
        let values = b.array(fptr, 0, int);
        let def = b.strukt("", 16, &[("type", type_ptr, 0), ("values", values, 64)]);
        let var = b.var("calls", def);
        b.datasec(".maps", 16, &[(var, 0, 16)]);
        let level = b.var("bpf_log_level", int);
        b.datasec(".data", 4, &[(level, 0, 4)]);
        let btf = Btf::parse(&b.build()).unwrap();
        let maps = btf.datasec(".maps").unwrap();
        assert_eq!(maps[0].name, "calls");
        let members = btf
            .members(btf.var_type(maps[0].var_type).unwrap())
            .unwrap();
        assert_eq!(members[0].name, "type");
        assert_eq!(members[1].bit_offset, 64);
        assert_eq!(btf.values_are_programs(members[1].type_id), Some(true));
        let data = btf.datasec(".data").unwrap();
        assert_eq!(
            (data[0].name.as_str(), data[0].offset, data[0].size),
            ("bpf_log_level", 0, 4)
        );
        assert!(btf.datasec(".bss").is_none());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Btf::parse(b"").is_err());
        let mut b = Builder::new().build();
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Btf::parse(&b).is_err());
        let mut b = Builder::new();
        b.int("x", 4);
        let mut blob = b.build();
        blob[24 + 4..24 + 8].copy_from_slice(&(31u32 << 24).to_le_bytes());
        assert!(Btf::parse(&blob).is_err());
    }
}
