//! Recognises kernel images (bzImage, ELF vmlinux) and reads their release string.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Why a file is not a bootable kernel image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// I/O failed.
    #[error("failed to read kernel image")]
    Io(#[from] std::io::Error),
    /// Neither the bzImage header ("HdrS" at 0x202) nor ELF magic.
    #[error("no bzImage header and no ELF magic: not a Linux kernel image")]
    NotAKernel,
    /// A bzImage whose boot protocol predates 2.00 (a zImage lab cannot load).
    #[error("boot protocol {major}.{minor:02} is too old: 2.00 or later is needed")]
    OldProtocol {
        /// The protocol's major version.
        major: u8,
        /// The protocol's minor version.
        minor: u8,
    },
    /// An ELF file that is not a 64-bit executable.
    #[error("ELF file is not a 64-bit executable")]
    NotElf64Executable,
}

/// The kind of image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// x86 bzImage (boot protocol header present).
    BzImage,
    /// ELF vmlinux.
    Elf,
}

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The format.
    pub format: ImageFormat,
    /// The release (`uname -r`) when the image says it (bzImage `kernel_version`, or the
    /// `Linux version X` banner in an ELF image).
    pub release: Option<String>,
}

/// Offset of the boot protocol's "HdrS" magic in a bzImage.
const HDRS_OFFSET: usize = 0x202;
/// Offset of the boot protocol version (u16, little endian).
const VERSION_OFFSET: usize = 0x206;
/// Offset of the `kernel_version` pointer (u16, relative to 0x200).
const KERNEL_VERSION_OFFSET: usize = 0x20e;
/// How much of a file's head is read: the real-mode setup code is at most 64 sectors + 1.
const HEAD_LEN: u64 = 0x200 * 65 + 0x200;
/// The longest `kernel_version` string read.
const MAX_VERSION_LEN: usize = 256;
/// The banner `start_kernel` prints, stored in every vmlinux.
const BANNER: &[u8] = b"Linux version ";

/// Inspects the image at `path`.
pub fn inspect(path: &Path) -> Result<ImageInfo, ImageError> {
    let mut file = File::open(path)?;
    let mut head = Vec::new();
    (&mut file).take(HEAD_LEN).read_to_end(&mut head)?;
    if head.starts_with(b"\x7fELF") {
        check_elf64_executable(&head)?;
        file.seek(SeekFrom::Start(0))?;
        let release = find_banner_release(BufReader::new(file))?;
        return Ok(ImageInfo {
            format: ImageFormat::Elf,
            release,
        });
    }
    inspect_bzimage(&head)
}

/// Reads a bzImage's setup header from the first bytes of the file.
fn inspect_bzimage(head: &[u8]) -> Result<ImageInfo, ImageError> {
    if head.get(HDRS_OFFSET..HDRS_OFFSET + 4) != Some(b"HdrS") {
        return Err(ImageError::NotAKernel);
    }
    let version = le16(head, VERSION_OFFSET).ok_or(ImageError::NotAKernel)?;
    if version < 0x200 {
        return Err(ImageError::OldProtocol {
            major: (version >> 8) as u8,
            minor: (version & 0xff) as u8,
        });
    }
    let release = le16(head, KERNEL_VERSION_OFFSET)
        .filter(|&ptr| ptr != 0)
        .and_then(|ptr| {
            let start = usize::from(ptr) + 0x200;
            let rest = head.get(start..)?;
            let rest = &rest[..rest.len().min(MAX_VERSION_LEN)];
            let end = rest.iter().position(|&b| b == 0)?;
            first_word(&rest[..end])
        });
    Ok(ImageInfo {
        format: ImageFormat::BzImage,
        release,
    })
}

/// Checks the ELF identification: 64-bit class and an executable file type.
fn check_elf64_executable(head: &[u8]) -> Result<(), ImageError> {
    const ELFCLASS64: u8 = 2;
    const ET_EXEC: u16 = 2;
    let class = head.get(4).copied();
    let little_endian = head.get(5) == Some(&1);
    let e_type = head.get(16..18).map(|b| {
        let bytes = [b[0], b[1]];
        if little_endian {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }
    });
    if class == Some(ELFCLASS64) && e_type == Some(ET_EXEC) {
        Ok(())
    } else {
        Err(ImageError::NotElf64Executable)
    }
}

/// Scans `reader` for the `Linux version <release> ` banner and returns the release.
///
/// Occurrences whose next word does not start with a digit (e.g. a format string) are skipped.
fn find_banner_release(mut reader: impl Read) -> io::Result<Option<String>> {
    const CHUNK: usize = 1 << 20;
    // Keep enough of the previous chunk that a banner split across chunks is still seen whole.
    const KEEP: usize = BANNER.len() + MAX_VERSION_LEN;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + KEEP);
    let mut chunk = vec![0u8; CHUNK];
    let mut eof = false;
    while !eof {
        let n = reader.read(&mut chunk)?;
        eof = n == 0;
        buf.extend_from_slice(&chunk[..n]);
        let mut from = 0;
        while let Some(pos) = find(&buf[from..], BANNER) {
            let start = from + pos + BANNER.len();
            let tail = &buf[start..];
            let end = tail
                .iter()
                .position(|b| b.is_ascii_whitespace() || *b == 0)
                .unwrap_or(tail.len());
            if end == tail.len() && !eof && tail.len() < MAX_VERSION_LEN {
                // The release may continue in the next chunk: look again once it is read.
                break;
            }
            if let Some(release) = first_word(&tail[..end.min(MAX_VERSION_LEN)]) {
                if release.starts_with(|c: char| c.is_ascii_digit()) {
                    return Ok(Some(release));
                }
            }
            from = start;
        }
        if buf.len() > KEEP {
            buf.drain(..buf.len() - KEEP);
        }
    }
    Ok(None)
}

/// The first whitespace-separated word of `bytes` when it is printable ASCII.
fn first_word(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let word = text.split_whitespace().next()?;
    word.bytes()
        .all(|b| b.is_ascii_graphic())
        .then(|| word.to_string())
}

/// The little-endian u16 at `offset`.
fn le16(bytes: &[u8], offset: usize) -> Option<u16> {
    let b = bytes.get(offset..offset + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A synthetic bzImage: boot sector, setup header and a version string.
    fn bzimage(protocol: u16, version: Option<&[u8]>) -> Vec<u8> {
        let mut img = vec![0u8; 0x4000];
        img[0x1f1] = 4; // setup_sects
        img[0x1fe] = 0x55;
        img[0x1ff] = 0xaa;
        img[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(b"HdrS");
        img[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&protocol.to_le_bytes());
        if let Some(v) = version {
            let at = 0x3c0usize;
            img[at..at + v.len()].copy_from_slice(v);
            img[KERNEL_VERSION_OFFSET..KERNEL_VERSION_OFFSET + 2]
                .copy_from_slice(&((at - 0x200) as u16).to_le_bytes());
        }
        img
    }

    /// A synthetic ELF64 executable header followed by `body`.
    fn elf(class: u8, body: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 64];
        img[..4].copy_from_slice(b"\x7fELF");
        img[4] = class;
        img[5] = 1;
        img[6] = 1;
        img[16..18].copy_from_slice(&2u16.to_le_bytes());
        img[18..20].copy_from_slice(&0x3eu16.to_le_bytes());
        img.extend_from_slice(body);
        img
    }

    fn inspect_bytes(bytes: &[u8]) -> Result<ImageInfo, ImageError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        fs::write(&path, bytes).unwrap();
        inspect(&path)
    }

    /// What an image is, and what [`inspect`] should find (`None`: not a kernel).
    type Case<'a> = (&'a str, Vec<u8>, Option<(ImageFormat, Option<&'a str>)>);

    #[test]
    fn images_are_recognised() {
        let long_banner = {
            // A banner straddling the scanner's 1 MiB chunk boundary.
            let mut body = vec![0u8; (1 << 20) - 64 - 20];
            body.extend_from_slice(b"Linux version 6.12.0-straddle (gcc) #1\n\0");
            body
        };
        let cases: Vec<Case<'_>> = vec![
            (
                "bzImage with version",
                bzimage(
                    0x20f,
                    Some(b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0"),
                ),
                Some((ImageFormat::BzImage, Some("6.1.0-56-cloud-amd64"))),
            ),
            (
                "bzImage without version pointer",
                bzimage(0x20f, None),
                Some((ImageFormat::BzImage, None)),
            ),
            (
                "bzImage with unterminated version",
                {
                    let mut img = bzimage(0x20f, Some(b"6.1"));
                    img.truncate(0x3c3);
                    img
                },
                Some((ImageFormat::BzImage, None)),
            ),
            (
                "bzImage with version pointer past the end",
                {
                    let mut img = bzimage(0x20f, None);
                    img[KERNEL_VERSION_OFFSET..KERNEL_VERSION_OFFSET + 2]
                        .copy_from_slice(&0xfff0u16.to_le_bytes());
                    img
                },
                Some((ImageFormat::BzImage, None)),
            ),
            (
                "ELF with banner",
                elf(
                    2,
                    b"\0\0Linux version %s\0Linux version 6.1.90-lab (root@x) #1\n\0",
                ),
                Some((ImageFormat::Elf, Some("6.1.90-lab"))),
            ),
            (
                "ELF without banner",
                elf(2, b"code"),
                Some((ImageFormat::Elf, None)),
            ),
            (
                "ELF with a banner across chunks",
                elf(2, &long_banner),
                Some((ImageFormat::Elf, Some("6.12.0-straddle"))),
            ),
            ("empty", Vec::new(), None),
            ("short", b"MZ".to_vec(), None),
            ("just short of the header", vec![0u8; 0x204], None),
            ("garbage", vec![0x5a; 4096], None),
        ];
        for (what, bytes, want) in cases {
            let got = inspect_bytes(&bytes);
            match want {
                Some((format, release)) => {
                    let info = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(info.format, format, "{what}");
                    assert_eq!(info.release.as_deref(), release, "{what}");
                }
                None => assert!(
                    matches!(got, Err(ImageError::NotAKernel)),
                    "{what}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn old_protocols_and_32_bit_elf_are_refused() {
        let err = inspect_bytes(&bzimage(0x1ff, None)).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::OldProtocol {
                    major: 1,
                    minor: 0xff
                }
            ),
            "{err}"
        );
        let err = inspect_bytes(&elf(1, b"Linux version 2.6.0 ")).unwrap_err();
        assert!(matches!(err, ImageError::NotElf64Executable), "{err}");
    }

    /// Real kernels, where this machine has them: `/boot` and the lab cache's Debian entries.
    #[test]
    fn real_debian_kernels_report_their_release() {
        let mut images = Vec::new();
        if let Ok(entries) = fs::read_dir("/boot") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(rel) = name.strip_prefix("vmlinuz-") {
                    images.push((e.path(), rel.to_string()));
                }
            }
        }
        if let Ok(cache) = crate::cache::Cache::from_env() {
            if let Ok(kernels) = crate::catalog::installed(&cache) {
                for k in kernels {
                    images.push((k.image_path(), k.info.release.clone()));
                }
            }
        }
        if images.is_empty() {
            eprintln!("no real kernel image on this machine: skipped");
        }
        for (path, release) in images {
            let info = inspect(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Debian ships bzImages; built kernels boot their ELF vmlinux.
            let want = if path.file_name().is_some_and(|n| n == "vmlinux") {
                ImageFormat::Elf
            } else {
                ImageFormat::BzImage
            };
            assert_eq!(info.format, want, "{}", path.display());
            assert_eq!(
                info.release.as_deref(),
                Some(release.as_str()),
                "{}",
                path.display()
            );
        }
    }
}
