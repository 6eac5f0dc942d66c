//! Loading a Linux kernel into guest memory and describing the machine to it: a bzImage through
//! the 64-bit boot protocol (zero page with e820 map, command line, initrd), or an ELF vmlinux,
//! through its PVH entry (`hvm_start_info` with a memory map) when it has the PVH note and through
//! the 64-bit entry otherwise. [`load`] turns a [`BootSpec`] into the [`BootEntry`] the vCPUs
//! start at, with the GDT, identity page tables and MP table in place.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use linux_loader::bootparam::{
    boot_e820_entry, boot_params, setup_header, CAN_USE_HEAP, E820_MAX_ENTRIES_ZEROPAGE,
    XLF_KERNEL_64,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{BzImage, KernelLoader, KernelLoaderResult};
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::gdt::{self, GdtError};
use crate::arch::x86_64::layout::{
    low_ram_end, ram_ranges, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START,
    PVH_INFO_START, PVH_MEMMAP_MAX_ENTRIES, PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
};
use crate::arch::x86_64::mptable::{self, MptableError};
use crate::arch::x86_64::paging::{self, PagingError};
pub use crate::arch::x86_64::regs::BootEntry;

/// Errors loading a kernel and its boot data.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A kernel or initrd file could not be opened or read.
    #[error("failed to read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// linux-loader refused or failed to load the kernel image.
    #[error("failed to load kernel {0}")]
    Load(PathBuf, #[source] linux_loader::loader::Error),
    /// The bzImage is too old for the 64-bit boot protocol (needs 2.12 and XLF_KERNEL_64).
    #[error("kernel {0} has no 64-bit entry point (boot protocol {1:#x})")]
    No64BitEntry(PathBuf, u16),
    /// The command line holds a NUL or a non-ASCII byte.
    #[error("kernel command line has a byte the kernel cannot take")]
    CmdlineBytes,
    /// The command line is longer than the kernel (or the space reserved for it) accepts.
    #[error("kernel command line is {len} bytes, the limit is {max}")]
    CmdlineTooLong {
        /// Its length, without the terminating NUL.
        len: usize,
        /// The limit, without the terminating NUL.
        max: usize,
    },
    /// The initrd does not fit between the kernel's end and the top of low RAM.
    #[error("initrd of {size} bytes does not fit in the {room} bytes above the kernel")]
    InitrdTooBig {
        /// The initrd's size.
        size: u64,
        /// Room available.
        room: u64,
    },
    /// The memory map has more entries than the boot structure holds.
    #[error("memory map of {0} entries is too long")]
    MemoryMap(usize),
    /// More vCPUs than supported.
    #[error("unsupported vcpu count {0}")]
    Vcpus(u8),
    /// A boot structure could not be written into guest memory.
    #[error("failed to write the {0} into guest memory")]
    Write(&'static str, #[source] vm_memory::GuestMemoryError),
    /// The GDT could not be written.
    #[error("failed to write the boot gdt")]
    Gdt(#[source] GdtError),
    /// The page tables could not be written.
    #[error("failed to write the boot page tables")]
    Paging(#[source] PagingError),
    /// The MP table could not be written.
    #[error("failed to write the mp table")]
    Mptable(#[source] MptableError),
}

/// What to boot, and on what machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSpec {
    /// A bzImage or an ELF vmlinux.
    pub kernel: PathBuf,
    /// An initramfs, placed at the top of low RAM.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest RAM in bytes (the size guest memory was created with).
    pub mem: u64,
    /// Number of vCPUs (described in the MP table).
    pub vcpus: u8,
}

/// How the kernel was booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage, through the 64-bit boot protocol.
    BzImage,
    /// An ELF vmlinux without a PVH note, through the 64-bit boot protocol.
    Elf,
    /// An ELF vmlinux through its PVH entry.
    ElfPvh,
}

/// What the vCPUs need, and where things landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSetup {
    /// Where the boot vCPU starts, and how.
    pub entry: BootEntry,
    /// How the kernel is booted.
    pub format: KernelFormat,
    /// End (exclusive) of the memory the kernel occupies or will decompress into.
    pub kernel_end: u64,
    /// The initrd's `(address, size)`, when there is one.
    pub initrd: Option<(u64, u64)>,
}

/// Loader type written into the zero page: 0xff, "undefined" (no registered boot loader id).
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// End of the setup heap (`heap_end_ptr`), relative to the real-mode code, as boot loaders set.
pub const HEAP_END: u16 = 0xfe00;
/// Offset of the 64-bit entry point (`startup_64`) in a loaded bzImage payload.
pub const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// The lowest boot protocol with `xloadflags` (2.12).
pub const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
/// The PVH `hvm_start_info` magic.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const PAGE_SIZE: u64 = 0x1000;
/// Kernel alignment written into the header of an ELF kernel's synthetic zero page.
const ELF_KERNEL_ALIGNMENT: u32 = 0x0100_0000;
/// The kernel's own command line limit when the header does not say (`COMMAND_LINE_SIZE`).
const DEFAULT_KERNEL_CMDLINE_SIZE: usize = 2047;

/// Loads the kernel (and initrd) of `spec` into `mem` and writes every boot structure.
pub fn load(spec: &BootSpec, mem: &GuestMemoryMmap) -> Result<BootSetup, BootError> {
    if spec.vcpus == 0 || spec.vcpus > crate::arch::x86_64::cpuid::MAX_VCPUS {
        return Err(BootError::Vcpus(spec.vcpus));
    }
    let mut kernel =
        File::open(&spec.kernel).map_err(|e| BootError::Read(spec.kernel.clone(), e))?;
    let load_error = |e| BootError::Load(spec.kernel.clone(), e);
    let highmem = Some(GuestAddress(HIMEM_START));
    let setup = if is_elf(&mut kernel).map_err(|e| BootError::Read(spec.kernel.clone(), e))? {
        let loaded = Elf::load(mem, None, &mut kernel, highmem).map_err(load_error)?;
        match loaded.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(entry) => boot_pvh(spec, mem, &loaded, entry.0)?,
            _ => boot_linux64(spec, mem, &loaded, None, loaded.kernel_load.0)?,
        }
    } else {
        let loaded = BzImage::load(mem, None, &mut kernel, highmem).map_err(load_error)?;
        let header = loaded.setup_header.unwrap_or_default();
        let (version, xloadflags) = (header.version, header.xloadflags);
        if version < MIN_BOOT_PROTOCOL || xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BootError::No64BitEntry(spec.kernel.clone(), version));
        }
        let entry = loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET;
        boot_linux64(spec, mem, &loaded, Some(header), entry)?
    };
    gdt::write_tables(mem).map_err(BootError::Gdt)?;
    paging::write_identity_tables(mem).map_err(BootError::Paging)?;
    mptable::write_mptable(mem, spec.vcpus).map_err(BootError::Mptable)?;
    Ok(setup)
}

fn is_elf(file: &mut File) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0))?;
    let elf = file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF";
    file.seek(SeekFrom::Start(0))?;
    Ok(elf)
}

/// Everything the kernel is told through the 64-bit boot protocol.
fn boot_linux64(
    spec: &BootSpec,
    mem: &GuestMemoryMmap,
    loaded: &KernelLoaderResult,
    header: Option<setup_header>,
    entry: u64,
) -> Result<BootSetup, BootError> {
    let format = if header.is_some() {
        KernelFormat::BzImage
    } else {
        KernelFormat::Elf
    };
    let mut hdr = header.unwrap_or_else(elf_setup_header);
    let kernel_end = kernel_extent(loaded, &hdr);
    let kernel_limit = match hdr.cmdline_size {
        0 => DEFAULT_KERNEL_CMDLINE_SIZE,
        n => n as usize,
    };
    write_cmdline(mem, &spec.cmdline, kernel_limit)?;
    let initrd_max = match hdr.initrd_addr_max {
        0 => u64::from(u32::MAX),
        n => u64::from(n),
    };
    let initrd = load_initrd(spec, mem, kernel_end, initrd_max)?;
    hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    hdr.cmd_line_ptr = CMDLINE_START as u32;
    hdr.loadflags |= CAN_USE_HEAP;
    hdr.heap_end_ptr = HEAP_END;
    if let Some((addr, size)) = initrd {
        hdr.ramdisk_image = addr as u32;
        hdr.ramdisk_size = size as u32;
    }
    let params = zero_page(hdr, &e820_map(spec.mem))?;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|e| BootError::Write("zero page", e))?;
    Ok(BootSetup {
        entry: BootEntry::Linux64 {
            entry,
            boot_params: ZERO_PAGE_START,
        },
        format,
        kernel_end,
        initrd,
    })
}

/// Everything the kernel is told through the PVH entry.
fn boot_pvh(
    spec: &BootSpec,
    mem: &GuestMemoryMmap,
    loaded: &KernelLoaderResult,
    entry: u64,
) -> Result<BootSetup, BootError> {
    let kernel_end = align_up(loaded.kernel_end);
    write_cmdline(mem, &spec.cmdline, DEFAULT_KERNEL_CMDLINE_SIZE)?;
    let initrd = load_initrd(spec, mem, kernel_end, u64::from(u32::MAX))?;
    let memmap = e820_map(spec.mem);
    let (info, modules, entries) = start_info(&memmap, initrd)?;
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(|e| BootError::Write("pvh start info", e))?;
    for (i, module) in modules.iter().enumerate() {
        mem.write_obj(*module, GuestAddress(PVH_MODLIST_START + 32 * i as u64))
            .map_err(|e| BootError::Write("pvh module list", e))?;
    }
    for (i, entry) in entries.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(PVH_MEMMAP_START + 24 * i as u64))
            .map_err(|e| BootError::Write("pvh memory map", e))?;
    }
    Ok(BootSetup {
        entry: BootEntry::Pvh {
            entry,
            start_info: PVH_INFO_START,
        },
        format: KernelFormat::ElfPvh,
        kernel_end,
        initrd,
    })
}

/// The setup header an ELF kernel gets (it has none of its own): the magic values, and the
/// alignment a relocatable kernel expects.
fn elf_setup_header() -> setup_header {
    setup_header {
        boot_flag: 0xaa55,
        header: 0x5372_6448, // "HdrS"
        kernel_alignment: ELF_KERNEL_ALIGNMENT,
        ..Default::default()
    }
}

/// End of what the kernel occupies: its image, or for a bzImage the `init_size` bytes it
/// decompresses into, whichever is larger, rounded up to a page.
fn kernel_extent(loaded: &KernelLoaderResult, hdr: &setup_header) -> u64 {
    let init_size = hdr.init_size;
    align_up(
        loaded
            .kernel_end
            .max(loaded.kernel_load.0 + u64::from(init_size)),
    )
}

fn align_up(addr: u64) -> u64 {
    addr.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// The e820 map for `mem_size` bytes of RAM laid out by [`ram_ranges`]: the low 640 KiB less
/// the EBDA, the EBDA and BIOS area reserved, RAM from 1 MiB to the MMIO gap, and RAM above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<boot_e820_entry> {
    let entry = |addr: u64, size: u64, r#type: u32| boot_e820_entry { addr, size, r#type };
    let mut map = vec![
        entry(0, EBDA_START.min(mem_size), E820_RAM),
        entry(EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (start, size) in ram_ranges(mem_size) {
        let end = start + size;
        let start = start.max(HIMEM_START);
        if end > start {
            map.push(entry(start, end - start, E820_RAM));
        }
    }
    map
}

/// Checks the command line and writes it, NUL-terminated, at [`CMDLINE_START`]. `kernel_limit`
/// is the longest the kernel accepts (`setup_header.cmdline_size`).
pub fn write_cmdline(
    mem: &GuestMemoryMmap,
    cmdline: &str,
    kernel_limit: usize,
) -> Result<(), BootError> {
    check_cmdline(cmdline, kernel_limit)?;
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|e| BootError::Write("command line", e))
}

/// The command-line checks of [`write_cmdline`].
pub fn check_cmdline(cmdline: &str, kernel_limit: usize) -> Result<(), BootError> {
    if cmdline.bytes().any(|b| b == 0 || !b.is_ascii()) {
        return Err(BootError::CmdlineBytes);
    }
    let max = kernel_limit.min(CMDLINE_MAX_SIZE - 1);
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    Ok(())
}

/// Where an initrd of `size` bytes goes: page-aligned, as high as possible below `top`, the end
/// of low RAM (or the kernel's `initrd_addr_max`), and not below `kernel_end`.
pub fn initrd_address(size: u64, kernel_end: u64, top: u64) -> Result<u64, BootError> {
    let room = top.saturating_sub(kernel_end);
    let too_big = || BootError::InitrdTooBig { size, room };
    let addr = top.checked_sub(size).ok_or_else(too_big)? & !(PAGE_SIZE - 1);
    if addr < kernel_end {
        return Err(too_big());
    }
    Ok(addr)
}

fn load_initrd(
    spec: &BootSpec,
    mem: &GuestMemoryMmap,
    kernel_end: u64,
    initrd_addr_max: u64,
) -> Result<Option<(u64, u64)>, BootError> {
    let Some(path) = &spec.initrd else {
        return Ok(None);
    };
    let read_error = |e| BootError::Read(path.clone(), e);
    let mut file = File::open(path).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    let top = low_ram_end(spec.mem).min(initrd_addr_max.saturating_add(1));
    let addr = initrd_address(size, kernel_end, top)?;
    let len = usize::try_from(size).map_err(|_| BootError::InitrdTooBig {
        size,
        room: top - kernel_end,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|e| BootError::Write("initrd", e))?;
    Ok(Some((addr, size)))
}

/// The zero page: the (adjusted) setup header and the e820 map.
pub fn zero_page(hdr: setup_header, e820: &[boot_e820_entry]) -> Result<boot_params, BootError> {
    if e820.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(BootError::MemoryMap(e820.len()));
    }
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
        *slot = *entry;
    }
    params.e820_entries = e820.len() as u8;
    Ok(params)
}

/// The PVH `hvm_start_info`, module list (the initrd) and memory map.
pub fn start_info(
    e820: &[boot_e820_entry],
    initrd: Option<(u64, u64)>,
) -> Result<
    (
        hvm_start_info,
        Vec<hvm_modlist_entry>,
        Vec<hvm_memmap_table_entry>,
    ),
    BootError,
> {
    if e820.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootError::MemoryMap(e820.len()));
    }
    let modules: Vec<hvm_modlist_entry> = initrd
        .map(|(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .into_iter()
        .collect();
    let memmap: Vec<hvm_memmap_table_entry> = e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.r#type,
            reserved: 0,
        })
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_START
        },
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    Ok((info, modules, memmap))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::arch::x86_64::layout::{MMIO_GAP_START, MPTABLE_START, PML4_START};
    use crate::vstate::memory::{create_guest_memory, MemoryConfig};

    const MIB: u64 = 1 << 20;

    fn put(img: &mut [u8], off: usize, bytes: &[u8]) {
        img[off..off + bytes.len()].copy_from_slice(bytes);
    }

    /// A bzImage with one setup sector and a `payload`-byte protected-mode payload.
    struct FakeBzImage {
        version: u16,
        xloadflags: u16,
        cmdline_size: u32,
        initrd_addr_max: u32,
        init_size: u32,
        payload: usize,
    }

    impl Default for FakeBzImage {
        fn default() -> Self {
            FakeBzImage {
                version: 0x020f,
                xloadflags: XLF_KERNEL_64,
                cmdline_size: 2047,
                initrd_addr_max: 0x7fff_ffff,
                init_size: 0x40_0000,
                payload: 0x2000,
            }
        }
    }

    impl FakeBzImage {
        fn bytes(&self) -> Vec<u8> {
            let mut img = vec![0u8; 2 * 512 + self.payload];
            img[0x1f1] = 1; // setup_sects
            put(&mut img, 0x1fe, &0xaa55u16.to_le_bytes());
            put(&mut img, 0x202, b"HdrS");
            put(&mut img, 0x206, &self.version.to_le_bytes());
            img[0x211] = 1; // loadflags: LOADED_HIGH
            put(&mut img, 0x214, &(HIMEM_START as u32).to_le_bytes());
            put(&mut img, 0x22c, &self.initrd_addr_max.to_le_bytes());
            put(&mut img, 0x230, &0x20_0000u32.to_le_bytes());
            img[0x234] = 1; // relocatable
            put(&mut img, 0x236, &self.xloadflags.to_le_bytes());
            put(&mut img, 0x238, &self.cmdline_size.to_le_bytes());
            put(&mut img, 0x260, &self.init_size.to_le_bytes());
            for (i, b) in img[1024..].iter_mut().enumerate() {
                *b = i as u8;
            }
            img
        }
    }

    /// An ELF vmlinux: one PT_LOAD of 0x1000 bytes at 16 MiB (2 MiB memsz), and with `pvh` a
    /// PT_NOTE carrying XEN_ELFNOTE_PHYS32_ENTRY.
    fn fake_elf(pvh: Option<u32>) -> Vec<u8> {
        let phnum: u16 = if pvh.is_some() { 2 } else { 1 };
        let mut img = vec![0u8; 0x200 + 0x1000];
        put(&mut img, 0, b"\x7fELF\x02\x01\x01");
        put(&mut img, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut img, 18, &0x3eu16.to_le_bytes()); // x86-64
        put(&mut img, 20, &1u32.to_le_bytes());
        put(&mut img, 24, &0x100_0000u64.to_le_bytes()); // e_entry
        put(&mut img, 32, &64u64.to_le_bytes()); // e_phoff
        put(&mut img, 52, &64u16.to_le_bytes());
        put(&mut img, 54, &56u16.to_le_bytes());
        put(&mut img, 56, &phnum.to_le_bytes());
        let phdr = |img: &mut Vec<u8>, at: usize, fields: [u64; 6], p_type: u32| {
            put(img, at, &p_type.to_le_bytes());
            for (i, f) in fields.iter().enumerate() {
                put(img, at + 8 + 8 * i, &f.to_le_bytes());
            }
        };
        // offset, vaddr, paddr, filesz, memsz, align
        phdr(
            &mut img,
            64,
            [0x200, 0x100_0000, 0x100_0000, 0x1000, 0x20_0000, 0x1000],
            1,
        );
        if let Some(entry) = pvh {
            let note_at = 64 + 2 * 56;
            phdr(&mut img, 64 + 56, [note_at as u64, 0, 0, 20, 20, 4], 4);
            put(&mut img, note_at, &4u32.to_le_bytes());
            put(&mut img, note_at + 4, &4u32.to_le_bytes());
            put(&mut img, note_at + 8, &18u32.to_le_bytes());
            put(&mut img, note_at + 12, b"Xen\0");
            put(&mut img, note_at + 16, &entry.to_le_bytes());
        }
        for b in img[0x200..].iter_mut() {
            *b = 0x90;
        }
        img
    }

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("tempfile");
        f.write_all(bytes).expect("write");
        f
    }

    fn memory(size: u64) -> GuestMemoryMmap {
        create_guest_memory(&MemoryConfig {
            size,
            hugepages: false,
        })
        .expect("memory")
    }

    fn spec(
        kernel: &tempfile::NamedTempFile,
        initrd: Option<&tempfile::NamedTempFile>,
        mem: u64,
    ) -> BootSpec {
        BootSpec {
            kernel: kernel.path().to_path_buf(),
            initrd: initrd.map(|f| f.path().to_path_buf()),
            cmdline: "console=ttyS0 reboot=k panic=1".to_string(),
            mem,
            vcpus: 2,
        }
    }

    fn read_cstr(mem: &GuestMemoryMmap, addr: u64) -> String {
        let mut buf = vec![0u8; 256];
        mem.read_slice(&mut buf, GuestAddress(addr)).expect("read");
        let end = buf.iter().position(|&b| b == 0).expect("nul");
        String::from_utf8(buf[..end].to_vec()).expect("utf8")
    }

    #[test]
    fn e820_matches_the_memory_layout() {
        let small = e820_map(128 * MIB);
        let got: Vec<(u64, u64, u32)> = small.iter().map(|e| (e.addr, e.size, e.r#type)).collect();
        assert_eq!(
            got,
            vec![
                (0, EBDA_START, E820_RAM),
                (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
                (HIMEM_START, 128 * MIB - HIMEM_START, E820_RAM),
            ]
        );
        let big = e820_map(6 << 30);
        let got: Vec<(u64, u64, u32)> = big.iter().map(|e| (e.addr, e.size, e.r#type)).collect();
        assert_eq!(
            got[2],
            (HIMEM_START, MMIO_GAP_START - HIMEM_START, E820_RAM)
        );
        assert_eq!(got[3], (1 << 32, (6 << 30) - MMIO_GAP_START, E820_RAM));
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn cmdline_checks() {
        assert!(check_cmdline("console=ttyS0", 2047).is_ok());
        assert!(check_cmdline("", 2047).is_ok());
        assert!(matches!(
            check_cmdline("a\0b", 2047),
            Err(BootError::CmdlineBytes)
        ));
        assert!(matches!(
            check_cmdline("é", 2047),
            Err(BootError::CmdlineBytes)
        ));
        let long = "x".repeat(2048);
        assert!(matches!(
            check_cmdline(&long, 2047),
            Err(BootError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
        assert!(check_cmdline(&long[..2047], 2047).is_ok());
        // The reserved room bounds a kernel that claims more.
        let huge = "x".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            check_cmdline(&huge, usize::MAX),
            Err(BootError::CmdlineTooLong { max, .. }) if max == CMDLINE_MAX_SIZE - 1
        ));
    }

    #[test]
    fn initrd_goes_to_the_top_page_aligned() {
        assert_eq!(
            initrd_address(0x1800, 0x40_0000, 0x100_0000).expect("fits"),
            0xffe000
        );
        assert_eq!(
            initrd_address(0x1000, 0x40_0000, 0x100_0000).expect("fits"),
            0xfff000
        );
        assert_eq!(
            initrd_address(0xc0_0000, 0x40_0000, 0x100_0000).expect("exact"),
            0x40_0000
        );
        assert!(matches!(
            initrd_address(0xc0_0001, 0x40_0000, 0x100_0000),
            Err(BootError::InitrdTooBig {
                size: 0xc0_0001,
                room: 0xc0_0000
            })
        ));
        assert!(matches!(
            initrd_address(0x200_0000, 0x40_0000, 0x100_0000),
            Err(BootError::InitrdTooBig { .. })
        ));
    }

    #[test]
    fn bzimage_gets_a_zero_page() {
        let kernel = file_with(&FakeBzImage::default().bytes());
        let initrd = file_with(&vec![0xab; 0x1234]);
        let mem_size = 64 * MIB;
        let mem = memory(mem_size);
        let setup = load(&spec(&kernel, Some(&initrd), mem_size), &mem).expect("load");
        assert_eq!(setup.format, KernelFormat::BzImage);
        assert_eq!(
            setup.entry,
            BootEntry::Linux64 {
                entry: HIMEM_START + 0x200,
                boot_params: ZERO_PAGE_START
            }
        );
        assert_eq!(
            setup.kernel_end,
            HIMEM_START + 0x40_0000,
            "init_size counts"
        );
        let (initrd_addr, initrd_size) = setup.initrd.expect("initrd");
        assert_eq!((initrd_addr, initrd_size), ((mem_size - 0x2000), 0x1234));

        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).expect("read");
        let hdr = params.hdr;
        let (loader, cmd_ptr, image, size, flags, heap, boot_flag, magic) = (
            hdr.type_of_loader,
            hdr.cmd_line_ptr,
            hdr.ramdisk_image,
            hdr.ramdisk_size,
            hdr.loadflags,
            hdr.heap_end_ptr,
            hdr.boot_flag,
            hdr.header,
        );
        assert_eq!(loader, 0xff);
        assert_eq!(u64::from(cmd_ptr), CMDLINE_START);
        assert_eq!((u64::from(image), size), (initrd_addr, 0x1234));
        assert_eq!(flags & CAN_USE_HEAP, CAN_USE_HEAP);
        assert_eq!(heap, HEAP_END);
        assert_eq!((boot_flag, magic), (0xaa55, 0x5372_6448));
        let entries = params.e820_entries as usize;
        let table = params.e820_table;
        let e820: Vec<(u64, u64, u32)> = table[..entries]
            .iter()
            .map(|e| (e.addr, e.size, e.r#type))
            .collect();
        let want: Vec<(u64, u64, u32)> = e820_map(mem_size)
            .iter()
            .map(|e| (e.addr, e.size, e.r#type))
            .collect();
        assert_eq!(e820, want);
        assert_eq!(
            read_cstr(&mem, CMDLINE_START),
            "console=ttyS0 reboot=k panic=1"
        );
        let mut initrd_bytes = [0u8; 4];
        mem.read_slice(&mut initrd_bytes, GuestAddress(initrd_addr))
            .expect("read");
        assert_eq!(initrd_bytes, [0xab; 4]);
        // The payload landed at code32_start, and the other boot structures exist.
        let first: u8 = mem.read_obj(GuestAddress(HIMEM_START + 5)).expect("read");
        assert_eq!(first, 5);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).expect("read");
        assert_ne!(pml4, 0);
        let mut mp = [0u8; 4];
        mem.read_slice(&mut mp, GuestAddress(MPTABLE_START))
            .expect("read");
        assert_eq!(&mp, b"_MP_");
    }

    #[test]
    fn bzimage_initrd_respects_initrd_addr_max() {
        let kernel = file_with(
            &FakeBzImage {
                initrd_addr_max: 0x1ff_ffff,
                ..Default::default()
            }
            .bytes(),
        );
        let initrd = file_with(&[1u8; 0x3000]);
        let mem = memory(64 * MIB);
        let setup = load(&spec(&kernel, Some(&initrd), 64 * MIB), &mem).expect("load");
        assert_eq!(setup.initrd, Some((32 * MIB - 0x3000, 0x3000)));
    }

    #[test]
    fn too_big_initrd_and_cmdline_are_errors() {
        let kernel = file_with(&FakeBzImage::default().bytes());
        let mem_size = 8 * MIB;
        let mem = memory(mem_size);
        // Kernel occupies 1 MiB .. 5 MiB (init_size): 3 MiB are left.
        let initrd = file_with(&vec![0u8; (3 * MIB + 1) as usize]);
        let err = load(&spec(&kernel, Some(&initrd), mem_size), &mem).expect_err("too big");
        assert!(
            matches!(err, BootError::InitrdTooBig { size, room } if size == 3 * MIB + 1 && room == 3 * MIB),
            "{err:?}"
        );

        let short = file_with(
            &FakeBzImage {
                cmdline_size: 16,
                ..Default::default()
            }
            .bytes(),
        );
        let mut long = spec(&short, None, mem_size);
        long.cmdline = "console=ttyS0 quiet".to_string();
        assert!(matches!(
            load(&long, &mem),
            Err(BootError::CmdlineTooLong { len: 19, max: 16 })
        ));
    }

    #[test]
    fn old_or_32bit_only_bzimages_are_refused() {
        let mem = memory(16 * MIB);
        for fake in [
            FakeBzImage {
                version: 0x020b,
                ..Default::default()
            },
            FakeBzImage {
                xloadflags: 0,
                ..Default::default()
            },
        ] {
            let kernel = file_with(&fake.bytes());
            assert!(matches!(
                load(&spec(&kernel, None, 16 * MIB), &mem),
                Err(BootError::No64BitEntry(..))
            ));
        }
        let garbage = file_with(&[0u8; 4096]);
        assert!(matches!(
            load(&spec(&garbage, None, 16 * MIB), &mem),
            Err(BootError::Load(..))
        ));
    }

    #[test]
    fn elf_without_pvh_note_uses_the_64bit_entry() {
        let kernel = file_with(&fake_elf(None));
        let mem = memory(64 * MIB);
        let setup = load(&spec(&kernel, None, 64 * MIB), &mem).expect("load");
        assert_eq!(setup.format, KernelFormat::Elf);
        assert_eq!(
            setup.entry,
            BootEntry::Linux64 {
                entry: 0x100_0000,
                boot_params: ZERO_PAGE_START
            }
        );
        assert_eq!(setup.kernel_end, 0x120_0000);
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).expect("read");
        let hdr = params.hdr;
        let (magic, loader, cmd_ptr) = (hdr.header, hdr.type_of_loader, hdr.cmd_line_ptr);
        assert_eq!(
            (magic, loader, u64::from(cmd_ptr)),
            (0x5372_6448, 0xff, CMDLINE_START)
        );
        let byte: u8 = mem.read_obj(GuestAddress(0x100_0000)).expect("read");
        assert_eq!(byte, 0x90);
    }

    #[test]
    fn elf_with_pvh_note_gets_start_info() {
        let kernel = file_with(&fake_elf(Some(0x100_0040)));
        let initrd = file_with(&[7u8; 0x800]);
        let mem_size = 64 * MIB;
        let mem = memory(mem_size);
        let setup = load(&spec(&kernel, Some(&initrd), mem_size), &mem).expect("load");
        assert_eq!(setup.format, KernelFormat::ElfPvh);
        assert_eq!(
            setup.entry,
            BootEntry::Pvh {
                entry: 0x100_0040,
                start_info: PVH_INFO_START
            }
        );
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).expect("read");
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        assert_eq!(
            (info.nr_modules, info.modlist_paddr),
            (1, PVH_MODLIST_START)
        );
        assert_eq!(info.memmap_paddr, PVH_MEMMAP_START);
        assert_eq!(info.memmap_entries, 3);
        let module: hvm_modlist_entry =
            mem.read_obj(GuestAddress(PVH_MODLIST_START)).expect("read");
        assert_eq!((module.paddr, module.size), (mem_size - 0x1000, 0x800));
        let last: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(PVH_MEMMAP_START + 2 * 24))
            .expect("read");
        assert_eq!(
            (last.addr, last.size, last.type_),
            (HIMEM_START, mem_size - HIMEM_START, E820_RAM)
        );
        assert_eq!(
            read_cstr(&mem, CMDLINE_START),
            "console=ttyS0 reboot=k panic=1"
        );
    }

    #[test]
    fn start_info_without_initrd_has_no_modules() {
        let (info, modules, memmap) = start_info(&e820_map(32 * MIB), None).expect("info");
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
        assert!(modules.is_empty());
        assert_eq!(memmap[1].type_, E820_RESERVED);
        let too_many = vec![boot_e820_entry::default(); PVH_MEMMAP_MAX_ENTRIES + 1];
        assert!(matches!(
            start_info(&too_many, None),
            Err(BootError::MemoryMap(_))
        ));
    }

    #[test]
    fn vcpu_count_is_checked() {
        let kernel = file_with(&FakeBzImage::default().bytes());
        let mem = memory(16 * MIB);
        let mut none = spec(&kernel, None, 16 * MIB);
        none.vcpus = 0;
        assert!(matches!(load(&none, &mem), Err(BootError::Vcpus(0))));
    }
}
