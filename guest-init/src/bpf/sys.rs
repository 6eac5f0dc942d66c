//! The bpf(2) commands the runner needs, as thin checked wrappers: BTF and program loads (with
//! a verifier log), map creation, element access and freezing, and `BPF_PROG_TEST_RUN`.
//! Attribute layouts come from aya-obj's generated kernel bindings.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_insn};

fn zeroed() -> bpf_attr {
    // SAFETY: bpf_attr is a union of plain integer structs and arrays; all zeroes is a valid
    // value of each, and zero is what the kernel requires in every field a command leaves unset.
    unsafe { std::mem::zeroed() }
}

/// `bpf(cmd, attr, sizeof attr)`.
fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid bpf_attr that outlives the call and the size passed is its size;
    // every pointer the callers store in it refers to a buffer they keep alive (and, for
    // output buffers, exclusively borrowed) across this call, with its true length beside it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            std::ptr::from_mut(attr),
            std::mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A command that returns a new file descriptor.
fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: on success these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The kernel's name for an object: at most 15 bytes of `[A-Za-z0-9_.]`.
fn object_name(name: &str) -> [libc::c_char; 16] {
    let mut out = [0 as libc::c_char; 16];
    for (o, b) in out
        .iter_mut()
        .zip(
            name.bytes()
                .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.'),
        )
        .take(15)
    {
        *o = b as libc::c_char;
    }
    out
}

fn ptr(buf: &[u8]) -> u64 {
    buf.as_ptr() as u64
}

fn len32(buf: &[u8]) -> io::Result<u32> {
    u32::try_from(buf.len()).map_err(|_| io::Error::other("buffer too large"))
}

/// `BPF_BTF_LOAD`; `log` (possibly empty) receives the kernel's BTF verifier log.
pub fn btf_load(btf: &[u8], log: &mut [u8]) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    // SAFETY: a union member of plain integers, all valid after zeroed(); written field by
    // field so that padding stays zero, as the kernel checks.
    let b = unsafe { &mut attr.__bindgen_anon_7 };
    b.btf = ptr(btf);
    b.btf_size = len32(btf)?;
    if !log.is_empty() {
        b.btf_log_buf = log.as_mut_ptr() as u64;
        b.btf_log_size = len32(log)?;
        b.btf_log_level = 1;
    }
    bpf_fd(bpf_cmd::BPF_BTF_LOAD, &mut attr)
}

/// What `BPF_MAP_CREATE` needs.
#[derive(Debug)]
pub struct MapSpec<'a> {
    pub name: &'a str,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub map_extra: u64,
    /// The object's BTF and the key and value type ids in it.
    pub btf: Option<(BorrowedFd<'a>, u32, u32)>,
    pub inner_map: Option<BorrowedFd<'a>>,
}

/// `BPF_MAP_CREATE`.
pub fn map_create(spec: &MapSpec<'_>) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    let (btf_fd, key_id, value_id) = spec
        .btf
        .map_or((0, 0, 0), |(fd, k, v)| (fd.as_raw_fd() as u32, k, v));
    // SAFETY: as in btf_load.
    let m = unsafe { &mut attr.__bindgen_anon_1 };
    m.map_type = spec.map_type;
    m.key_size = spec.key_size;
    m.value_size = spec.value_size;
    m.max_entries = spec.max_entries;
    m.map_flags = spec.flags;
    m.inner_map_fd = spec.inner_map.map_or(0, |fd| fd.as_raw_fd() as u32);
    m.map_name = object_name(spec.name);
    m.btf_fd = btf_fd;
    m.btf_key_type_id = key_id;
    m.btf_value_type_id = value_id;
    m.map_extra = spec.map_extra;
    bpf_fd(bpf_cmd::BPF_MAP_CREATE, &mut attr)
}

fn elem_attr(map: BorrowedFd<'_>, key: &[u8], value: u64) -> bpf_attr {
    let mut attr = zeroed();
    // SAFETY: as in btf_load.
    let e = unsafe { &mut attr.__bindgen_anon_2 };
    e.map_fd = map.as_raw_fd() as u32;
    if !key.is_empty() {
        e.key = ptr(key);
    }
    e.__bindgen_anon_1.value = value;
    attr
}

/// `BPF_MAP_UPDATE_ELEM`; `key` and `value` must be the map's key and value sizes.
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = elem_attr(map, key, ptr(value));
    bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_LOOKUP_ELEM`; `key` and `value` must be the map's key and value sizes.
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    let mut attr = elem_attr(map, key, value.as_mut_ptr() as u64);
    bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
}

/// `BPF_OBJ_PIN`: the map or program `fd` at `path` in a bpffs.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &CStr) -> io::Result<()> {
    let mut attr = zeroed();
    // Writing fields of a union is safe; `path` outlives the call.
    attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = fd.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(drop)
}

/// `BPF_MAP_FREEZE`: the map becomes read-only from user space (as libbpf does for `.rodata`).
pub fn map_freeze(map: BorrowedFd<'_>) -> io::Result<()> {
    // Only map_fd: the kernel wants every byte after it zero.
    let mut attr = elem_attr(map, &[], 0);
    bpf(bpf_cmd::BPF_MAP_FREEZE, &mut attr).map(drop)
}

/// The object's BTF and a program's function and line info in it.
#[derive(Debug)]
pub struct ProgBtf<'a> {
    pub fd: BorrowedFd<'a>,
    pub func_info: &'a [u8],
    pub func_info_rec_size: u32,
    pub func_info_cnt: u32,
    pub line_info: &'a [u8],
    pub line_info_rec_size: u32,
    pub line_info_cnt: u32,
}

/// What `BPF_PROG_LOAD` needs.
#[derive(Debug)]
pub struct ProgSpec<'a> {
    pub name: &'a str,
    pub prog_type: u32,
    pub expected_attach_type: u32,
    pub flags: u32,
    pub insns: &'a [bpf_insn],
    pub license: &'a CStr,
    pub kern_version: u32,
    pub btf: Option<ProgBtf<'a>>,
}

/// `BPF_PROG_LOAD`; with a non-empty `log` the verifier writes its log there (level 1).
pub fn prog_load(spec: &ProgSpec<'_>, log: &mut [u8]) -> io::Result<OwnedFd> {
    let mut attr = zeroed();
    let insn_cnt = u32::try_from(spec.insns.len()).map_err(|_| io::Error::other("too long"))?;
    // SAFETY: as in btf_load.
    let p = unsafe { &mut attr.__bindgen_anon_3 };
    p.prog_type = spec.prog_type;
    p.expected_attach_type = spec.expected_attach_type;
    p.prog_flags = spec.flags;
    p.insn_cnt = insn_cnt;
    p.insns = spec.insns.as_ptr() as u64;
    p.license = spec.license.as_ptr() as u64;
    p.kern_version = spec.kern_version;
    p.prog_name = object_name(spec.name);
    if !log.is_empty() {
        p.log_level = 1;
        p.log_buf = log.as_mut_ptr() as u64;
        p.log_size = len32(log)?;
    }
    if let Some(btf) = &spec.btf {
        p.prog_btf_fd = btf.fd.as_raw_fd() as u32;
        if btf.func_info_cnt > 0 {
            p.func_info = ptr(btf.func_info);
            p.func_info_rec_size = btf.func_info_rec_size;
            p.func_info_cnt = btf.func_info_cnt;
        }
        if btf.line_info_cnt > 0 {
            p.line_info = ptr(btf.line_info);
            p.line_info_rec_size = btf.line_info_rec_size;
            p.line_info_cnt = btf.line_info_cnt;
        }
    }
    bpf_fd(bpf_cmd::BPF_PROG_LOAD, &mut attr)
}

/// The inputs of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Default)]
pub struct TestRun<'a> {
    pub data_in: &'a [u8],
    pub data_out: &'a mut [u8],
    pub ctx_in: &'a [u8],
    pub ctx_out: &'a mut [u8],
}

/// What the kernel reports back from a test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRunResult {
    pub retval: u32,
    pub duration_ns: u32,
    pub data_size_out: u32,
    pub ctx_size_out: u32,
}

/// `BPF_PROG_TEST_RUN` once (repeat 1). Empty buffers are passed as absent.
pub fn prog_test_run(prog: BorrowedFd<'_>, run: TestRun<'_>) -> io::Result<TestRunResult> {
    let opt = |b: &[u8]| if b.is_empty() { 0 } else { ptr(b) };
    let mut attr = zeroed();
    // SAFETY: as in btf_load.
    let t = unsafe { &mut attr.test };
    t.prog_fd = prog.as_raw_fd() as u32;
    t.repeat = 1;
    t.data_size_in = len32(run.data_in)?;
    t.data_in = opt(run.data_in);
    t.data_size_out = len32(run.data_out)?;
    if !run.data_out.is_empty() {
        t.data_out = run.data_out.as_mut_ptr() as u64;
    }
    t.ctx_size_in = len32(run.ctx_in)?;
    t.ctx_in = opt(run.ctx_in);
    t.ctx_size_out = len32(run.ctx_out)?;
    if !run.ctx_out.is_empty() {
        t.ctx_out = run.ctx_out.as_mut_ptr() as u64;
    }
    bpf(bpf_cmd::BPF_PROG_TEST_RUN, &mut attr)?;
    // SAFETY: the union's `test` member is the one written above and the one the kernel fills
    // for this command; it is plain integers.
    let t = unsafe { attr.test };
    Ok(TestRunResult {
        retval: t.retval,
        duration_ns: t.duration,
        data_size_out: t.data_size_out,
        ctx_size_out: t.ctx_size_out,
    })
}

/// Lifts the locked-memory limit, which kernels before 5.11 charge BPF maps and programs to.
pub fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads one valid rlimit struct; failure (no privilege) is harmless here.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_short_and_clean() {
        let name = object_name("suite_result_map-x/y");
        let bytes: Vec<u8> = name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        assert_eq!(bytes, b"suite_result_ma");
        assert_eq!(name[15], 0);
    }
}
