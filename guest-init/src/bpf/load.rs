//! Loading an eBPF object into the kernel the way libbpf would: aya-obj parses it (after
//! [`Elf::renamed_for_aya`]), fixes up its BTF, applies CO-RE relocations against the kernel's
//! BTF; the runner loads the BTF, creates every map fresh (initial data for `.data`/`.rodata`,
//! `.rodata` frozen), lets aya-obj relocate map references and calls, and loads single programs
//! with the type it chooses, capturing the verifier log when the kernel rejects one.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use aya_obj::btf::{Btf, BtfFeatures};
use aya_obj::generated::bpf_map_type;
use aya_obj::{EbpfSectionKind, Features, Map, Object};

use super::elf::Elf;
use super::progtype::ProgKind;
use super::sys;
use super::BpfError;

/// The verifier log kept on a failed load.
pub const LOG_TAIL: usize = 8 * 1024;
/// Verifier log buffers tried in turn (kernels before 6.4 keep the head of a log that does not
/// fit and fail with ENOSPC; later ones keep its tail).
const LOG_SIZES: [usize; 2] = [1 << 20, 16 << 20];
const ENOSPC: i32 = 28;

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
    obj: Object,
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
    /// Parses `data`, creates its maps and relocates its programs.
    pub fn new(data: &[u8], elf: &Elf) -> Result<Self, BpfError> {
        let renamed = elf.renamed_for_aya(data)?;
        let mut obj = Object::parse(&renamed).map_err(BpfError::Parse)?;
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
            let fd = create_map(&name, &map, btf.as_ref().map(AsFd::as_fd))?;
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
        Ok(Self {
            obj,
            btf,
            btf_note,
            maps,
        })
    }

    /// The map called `name` and its value size.
    pub fn map(&self, name: &str) -> Option<(BorrowedFd<'_>, &Map)> {
        self.maps.get(name).map(|(fd, map)| (fd.as_fd(), map))
    }

    /// Loads the one program in ELF section `section` as `kind`. `Err(Ok(_))`: the object has
    /// no such single program; `Err(Err(_))`: the kernel rejected it.
    pub fn load(
        &self,
        section: usize,
        kind: &ProgKind,
    ) -> Result<Result<OwnedFd, Rejected>, BpfError> {
        let mut found = self
            .obj
            .programs
            .iter()
            .filter(|(_, p)| p.section_index == section);
        let (name, program) = found.next().ok_or(BpfError::NoProgram(section))?;
        if found.next().is_some() {
            return Err(BpfError::SeveralPrograms(section));
        }
        let function = self
            .obj
            .functions
            .get(&program.function_key())
            .ok_or(BpfError::NoProgram(section))?;
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
            name,
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

/// Creates one map as the object declares it (pinning ignored: maps are fresh per run), with
/// its BTF types where the kernel takes them, and its initial data.
fn create_map(name: &str, map: &Map, btf: Option<BorrowedFd<'_>>) -> Result<OwnedFd, BpfError> {
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
        Some(inner) => Some(create_map(&format!("{name}.inner"), &inner, btf)?),
        None => None,
    };
    let mut spec = sys::MapSpec {
        name,
        map_type,
        key_size: map.key_size(),
        value_size: map.value_size(),
        max_entries,
        flags: map.map_flags(),
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
