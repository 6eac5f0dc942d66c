//! A writer of cpio "newc" archives, the format the kernel unpacks as its initramfs.
//!
//! Archives are reproducible: inode numbers count up from 1 in write order and every entry has
//! mtime, uid and gid 0. Paths are stored in relative form (`init`, `lib/modules`), as the
//! kernel and `cpio -i` expect; a leading `/` is dropped.

use std::io::{self, Read, Write};

/// The newc magic.
const MAGIC: &[u8; 6] = b"070701";
/// The header length: magic and 13 eight-digit hex fields.
const HEADER_LEN: usize = 110;
/// Archives end on a multiple of this many bytes.
const BLOCK: u64 = 512;
/// The name of the last entry.
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
/// The permission bits (with setuid, setgid and sticky).
const PERM_MASK: u32 = 0o7777;

/// Writes newc entries to `W`; call [`Writer::finish`] to write the trailer.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    /// The next inode number.
    next_ino: u32,
    /// Bytes written so far, for padding.
    offset: u64,
}

impl<W: Write> Writer<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            offset: 0,
        }
    }

    /// A directory (`mode` is the permission bits, e.g. 0o755).
    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        let name = archive_name(path)?;
        self.header(name, S_IFDIR | (mode & PERM_MASK), 2, 0)
    }

    /// A regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.file_from(path, mode, data.len() as u64, &mut &data[..])
    }

    /// A regular file of `size` bytes read from `data`, which must yield exactly that many.
    pub fn file_from(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let name = archive_name(path)?;
        let size32 = u32::try_from(size).map_err(|_| {
            invalid(format!(
                "{path}: {size} bytes is too large for a cpio entry"
            ))
        })?;
        self.header(name, S_IFREG | (mode & PERM_MASK), 1, size32)?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {size} bytes, got {copied}"),
            ));
        }
        self.offset += size;
        self.pad()
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let name = archive_name(path)?;
        if target.is_empty() || target.contains('\0') {
            return Err(invalid(format!("{path}: bad symlink target {target:?}")));
        }
        let size = u32::try_from(target.len())
            .map_err(|_| invalid(format!("{path}: symlink target too long")))?;
        self.header(name, S_IFLNK | 0o777, 1, size)?;
        self.out.write_all(target.as_bytes())?;
        self.offset += u64::from(size);
        self.pad()
    }

    /// Writes the `TRAILER!!!` entry, pads the archive to a multiple of 512 bytes (as `cpio -o`
    /// does, so that archives concatenate cleanly for GNU cpio as well as for the kernel) and
    /// returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.raw_header(TRAILER, 0, 0, 1, 0)?;
        let n = (BLOCK - (self.offset % BLOCK)) % BLOCK;
        io::copy(&mut io::repeat(0).take(n), &mut self.out)?;
        self.offset += n;
        self.out.flush()?;
        Ok(self.out)
    }

    /// The header and name of an entry, giving it the next inode number.
    fn header(&mut self, name: &str, mode: u32, nlink: u32, size: u32) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino = self
            .next_ino
            .checked_add(1)
            .ok_or_else(|| invalid("too many cpio entries".to_string()))?;
        self.raw_header(name, ino, mode, nlink, size)
    }

    fn raw_header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
    ) -> io::Result<()> {
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| invalid("cpio entry name too long".to_string()))?;
        let fields = [
            ino, mode, 0, // uid
            0, // gid
            nlink, 0, // mtime
            size, 0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            namesize, 0, // check
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        debug_assert_eq!(header.len(), HEADER_LEN);
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        self.out.write_all(&header)?;
        self.offset += header.len() as u64;
        self.pad()
    }

    /// Pads with NULs to the next multiple of four.
    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.offset % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..n])?;
        self.offset += n as u64;
        Ok(())
    }
}

/// The archive's form of `path`: no leading `/`, non-empty, no NUL, no `.`/`..`/empty parts.
fn archive_name(path: &str) -> io::Result<&str> {
    let name = path.trim_start_matches('/');
    let bad = name.is_empty()
        || name == TRAILER
        || name.contains('\0')
        || name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        Err(invalid(format!("bad cpio path {path:?}")))
    } else {
        Ok(name)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.dir("/bin", 0o755).unwrap();
        w.file("/bin/tool", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.dir("etc", 0o700).unwrap();
        w.file("etc/empty", 0o600, b"").unwrap();
        w.file("etc/odd", 0o644, b"12345").unwrap();
        w.symlink("/init", "bin/tool").unwrap();
        w.symlink("etc/abs", "/etc/odd").unwrap();
        w.finish().unwrap()
    }

    /// A newc reader as the kernel's unpacker reads: entries until each trailer, NUL padding
    /// between concatenated archives skipped.
    fn parse(mut bytes: &[u8]) -> Vec<(String, u32, u32, Vec<u8>)> {
        let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            while bytes.first() == Some(&0) {
                bytes = &bytes[1..];
                offset += 1;
            }
            if bytes.is_empty() {
                return out;
            }
            assert_eq!(offset % 4, 0);
            assert_eq!(&bytes[..6], MAGIC);
            let field = |i: usize| hex(&bytes[6 + i * 8..14 + i * 8]);
            let (ino, mode, size, namesize) = (field(0), field(1), field(6) as usize, field(11));
            assert_eq!((field(2), field(3), field(5)), (0, 0, 0), "uid, gid, mtime");
            let name_end = HEADER_LEN + namesize as usize;
            let name = std::str::from_utf8(&bytes[HEADER_LEN..name_end - 1])
                .unwrap()
                .to_string();
            assert_eq!(bytes[name_end - 1], 0);
            let data_start = name_end.div_ceil(4) * 4;
            let data = bytes[data_start..data_start + size].to_vec();
            let next = (data_start + size).div_ceil(4) * 4;
            bytes = &bytes[next..];
            offset += next;
            if name != TRAILER {
                out.push((name, ino, mode, data));
            }
        }
    }

    #[test]
    fn layout_is_newc() {
        let bytes = sample();
        let entries = parse(&bytes);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/tool",
                "etc",
                "etc/empty",
                "etc/odd",
                "init",
                "etc/abs"
            ]
        );
        let inos: Vec<_> = entries.iter().map(|e| e.1).collect();
        assert_eq!(inos, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(entries[0].2, 0o040_755);
        assert_eq!(entries[2].2, 0o040_700);
        assert_eq!(entries[3].2, 0o100_600);
        assert_eq!(entries[5].2, 0o120_777);
        assert_eq!(entries[5].3, b"bin/tool");
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(sample(), bytes, "archives are reproducible");
    }

    #[test]
    fn bad_paths_are_refused() {
        let mut w = Writer::new(Vec::new());
        for path in [
            "",
            "/",
            "a/../b",
            "a//b",
            "./a",
            "a\0b",
            "TRAILER!!!",
            "a/.",
        ] {
            let err = w.file(path, 0o644, b"x").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{path:?}");
        }
        assert!(w.symlink("l", "").is_err());
        assert!(w.symlink("l", "a\0").is_err());
        let err = w
            .file_from("short", 0o644, 10, &mut &b"abc"[..])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> String {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn check_tree(root: &Path) {
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode();
        assert_eq!(mode("bin") & 0o7777, 0o755);
        assert_eq!(mode("etc") & 0o7777, 0o700);
        assert_eq!(mode("bin/tool"), 0o100_755);
        assert_eq!(mode("etc/empty"), 0o100_600);
        assert_eq!(
            fs::read(root.join("bin/tool")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(fs::read(root.join("etc/odd")).unwrap(), b"12345");
        assert_eq!(fs::read(root.join("etc/empty")).unwrap(), b"");
        assert_eq!(
            fs::read_link(root.join("init")).unwrap(),
            Path::new("bin/tool")
        );
        assert_eq!(
            fs::read_link(root.join("etc/abs")).unwrap(),
            Path::new("/etc/odd")
        );
        assert_eq!(fs::metadata(root.join("etc/odd")).unwrap().mtime(), 0);
    }

    #[test]
    fn gnu_cpio_lists_and_extracts() {
        let bytes = sample();
        let listing = run_with_stdin(Command::new("cpio").args(["-t", "--quiet"]), &bytes);
        assert_eq!(
            listing.lines().collect::<Vec<_>>(),
            [
                "bin",
                "bin/tool",
                "etc",
                "etc/empty",
                "etc/odd",
                "init",
                "etc/abs"
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        run_with_stdin(
            Command::new("cpio")
                .args(["-idm", "--quiet", "--no-absolute-filenames"])
                .current_dir(dir.path()),
            &bytes,
        );
        check_tree(dir.path());
    }

    #[test]
    fn bsdtar_lists_and_extracts() {
        let bytes = sample();
        let listing = run_with_stdin(Command::new("bsdtar").args(["-tvf", "-"]), &bytes);
        let lines: Vec<_> = listing.lines().collect();
        assert_eq!(lines.len(), 7, "{listing}");
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" bin"),
            "{listing}"
        );
        assert!(
            lines[1].starts_with("-rwxr-xr-x") && lines[1].contains(" bin/tool"),
            "{listing}"
        );
        assert!(
            lines[5].starts_with("lrwxrwxrwx") && lines[5].ends_with("init -> bin/tool"),
            "{listing}"
        );
        let dir = tempfile::tempdir().unwrap();
        run_with_stdin(
            Command::new("bsdtar")
                .args(["-xpf", "-"])
                .current_dir(dir.path()),
            &bytes,
        );
        check_tree(dir.path());
    }

    #[test]
    fn concatenated_archives_extract_in_turn() {
        let mut second = Writer::new(Vec::new());
        second.dir("more", 0o755).unwrap();
        second.file("more/x", 0o644, b"second").unwrap();
        second.file("etc/odd", 0o644, b"replaced").unwrap();
        let mut both = sample();
        both.extend_from_slice(&second.finish().unwrap());
        // As the kernel reads it: both archives, the later entry winning.
        let entries = parse(&both);
        assert_eq!(entries.len(), 10);
        // GNU cpio reads one archive per run from a shared stdin, as a concatenation is read.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("both.cpio");
        fs::write(&file, &both).unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg("cpio -idm --quiet && cpio -idmu --quiet")
            .stdin(fs::File::open(&file).unwrap())
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "no junk between archives"
        );
        assert_eq!(
            fs::metadata(root.join("more")).unwrap().mode() & 0o7777,
            0o755
        );
        assert_eq!(fs::read(root.join("more/x")).unwrap(), b"second");
        assert_eq!(fs::read(root.join("etc/odd")).unwrap(), b"replaced");
        assert_eq!(
            fs::read_link(root.join("init")).unwrap(),
            Path::new("bin/tool")
        );
    }
}
