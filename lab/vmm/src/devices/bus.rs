//! The buses a vCPU's I/O exits are dispatched on: one for port I/O ([`PioBus`]) and one for
//! memory-mapped I/O ([`MmioBus`]). Each maps non-overlapping address ranges to devices
//! (`Arc<Mutex<dyn BusDevice>>`); an access goes to the device whose range holds all of it,
//! with the offset from the range's start.
//!
//! Buses are built before the vCPUs start (`insert` takes `&mut self`) and then shared
//! read-only between vCPU threads (`Arc<PioBus>`): a lookup takes no lock, only the device's
//! own mutex is taken for the access. The guest chooses the addresses it touches: an access no
//! device claims is an error the caller decides about, never a panic. [`DeviceBuses`] holds
//! both buses and is what the vCPUs get ([`crate::vstate::Bus`]): unclaimed reads see all
//! ones, unclaimed writes are dropped, and both are counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A device on a bus. `offset` is the access's distance from the start of the range the
/// device was inserted at; `data.len()` is the access width (1, 2, 4 or 8 bytes for the
/// accesses a vCPU makes, but devices must not rely on it).
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`; the device fills `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);

    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between a bus and whoever else drives it (an event loop, the VMM).
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

/// Why a bus refused a device or an access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// A range of length zero, or one that runs past the end of the address space.
    #[error("invalid {bus} range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Which bus.
        bus: &'static str,
        /// The range's start.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// The new range overlaps one already on the bus.
    #[error("{bus} range {base:#x}+{len:#x} overlaps {other_base:#x}+{other_len:#x}")]
    Overlap {
        /// Which bus.
        bus: &'static str,
        /// The new range's start.
        base: u64,
        /// Its length.
        len: u64,
        /// The existing range's start.
        other_base: u64,
        /// Its length.
        other_len: u64,
    },
    /// No device's range holds the whole access.
    #[error("no device at {bus} {addr:#x} (access of {len} bytes)")]
    NoDevice {
        /// Which bus.
        bus: &'static str,
        /// The access's address.
        addr: u64,
        /// Its width.
        len: usize,
    },
}

/// One device's place on a bus.
#[derive(Clone)]
struct BusRange {
    len: u64,
    device: SharedBusDevice,
}

/// The address map both buses share; `name` is for messages.
#[derive(Clone)]
struct Bus {
    name: &'static str,
    /// Ranges by their start address.
    ranges: BTreeMap<u64, BusRange>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (base, range) in &self.ranges {
            map.entry(
                &format_args!("{base:#x}"),
                &format_args!("{:#x} bytes", range.len),
            );
        }
        map.finish()
    }
}

impl Bus {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            ranges: BTreeMap::new(),
        }
    }

    fn insert(&mut self, device: SharedBusDevice, base: u64, len: u64) -> Result<(), BusError> {
        let invalid = BusError::InvalidRange {
            bus: self.name,
            base,
            len,
        };
        // The last address of the new range (inclusive), which must exist.
        let last = match len.checked_sub(1).map(|l| base.checked_add(l)) {
            Some(Some(last)) => last,
            _ => return Err(invalid),
        };
        // The only ranges that can overlap: the last one starting at or before `last`.
        if let Some((&other_base, other)) = self.ranges.range(..=last).next_back() {
            // `other_base <= last`; they overlap unless `other` ends before `base`.
            let other_last = other_base.saturating_add(other.len - 1);
            if other_last >= base {
                return Err(BusError::Overlap {
                    bus: self.name,
                    base,
                    len,
                    other_base,
                    other_len: other.len,
                });
            }
        }
        self.ranges.insert(base, BusRange { len, device });
        Ok(())
    }

    fn remove(&mut self, base: u64) -> Option<SharedBusDevice> {
        self.ranges.remove(&base).map(|range| range.device)
    }

    /// The device whose range holds `addr..addr + len`, and the offset of `addr` in it.
    fn resolve(&self, addr: u64, len: usize) -> Result<(&SharedBusDevice, u64), BusError> {
        let no_device = BusError::NoDevice {
            bus: self.name,
            addr,
            len,
        };
        let (&base, range) = self
            .ranges
            .range(..=addr)
            .next_back()
            .ok_or(no_device.clone())?;
        let offset = addr - base;
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .ok_or(no_device.clone())?;
        if end > range.len {
            return Err(no_device);
        }
        Ok((&range.device, offset))
    }

    fn read(&self, addr: u64, data: &mut [u8]) -> Result<(), BusError> {
        let (device, offset) = self.resolve(addr, data.len())?;
        device
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(offset, data);
        Ok(())
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), BusError> {
        let (device, offset) = self.resolve(addr, data.len())?;
        device
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(offset, data);
        Ok(())
    }
}

/// The port I/O bus (x86 `in`/`out`, KVM's `KVM_EXIT_IO`): 16-bit port numbers.
#[derive(Debug, Clone)]
pub struct PioBus(Bus);

impl Default for PioBus {
    fn default() -> Self {
        Self(Bus::new("pio"))
    }
}

impl PioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at ports `base..base + len`; refuses a range that overlaps another or
    /// runs past port 0xffff.
    pub fn insert(&mut self, device: SharedBusDevice, base: u16, len: u16) -> Result<(), BusError> {
        let (base, len) = (u64::from(base), u64::from(len));
        if base + len > 0x1_0000 {
            return Err(BusError::InvalidRange {
                bus: self.0.name,
                base,
                len,
            });
        }
        self.0.insert(device, base, len)
    }

    /// Takes the device at `base` off the bus.
    pub fn remove(&mut self, base: u16) -> Option<SharedBusDevice> {
        self.0.remove(u64::from(base))
    }

    /// The guest reads `data.len()` bytes from `port`.
    pub fn read(&self, port: u16, data: &mut [u8]) -> Result<(), BusError> {
        self.0.read(u64::from(port), data)
    }

    /// The guest writes `data` to `port`.
    pub fn write(&self, port: u16, data: &[u8]) -> Result<(), BusError> {
        self.0.write(u64::from(port), data)
    }
}

/// The memory-mapped I/O bus (KVM's `KVM_EXIT_MMIO`): guest physical addresses that are not
/// RAM.
#[derive(Debug, Clone)]
pub struct MmioBus(Bus);

impl Default for MmioBus {
    fn default() -> Self {
        Self(Bus::new("mmio"))
    }
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `base..base + len`; refuses a range that overlaps another or wraps.
    pub fn insert(&mut self, device: SharedBusDevice, base: u64, len: u64) -> Result<(), BusError> {
        self.0.insert(device, base, len)
    }

    /// Takes the device at `base` off the bus.
    pub fn remove(&mut self, base: u64) -> Option<SharedBusDevice> {
        self.0.remove(base)
    }

    /// The guest reads `data.len()` bytes at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Result<(), BusError> {
        self.0.read(addr, data)
    }

    /// The guest writes `data` at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), BusError> {
        self.0.write(addr, data)
    }
}

/// Both buses of a VM, as its vCPUs see them.
#[derive(Debug, Default)]
pub struct DeviceBuses {
    /// Port I/O.
    pub pio: PioBus,
    /// Memory-mapped I/O.
    pub mmio: MmioBus,
    /// Accesses no device claimed.
    unclaimed: AtomicU64,
}

impl DeviceBuses {
    /// The VM's buses, built beforehand.
    pub fn new(pio: PioBus, mmio: MmioBus) -> Self {
        Self {
            pio,
            mmio,
            unclaimed: AtomicU64::new(0),
        }
    }

    /// How many guest accesses no device claimed.
    pub fn unclaimed(&self) -> u64 {
        self.unclaimed.load(Ordering::Relaxed)
    }

    fn count(&self, result: Result<(), BusError>) -> bool {
        let claimed = result.is_ok();
        if !claimed {
            self.unclaimed.fetch_add(1, Ordering::Relaxed);
        }
        claimed
    }
}

impl crate::vstate::Bus for DeviceBuses {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        if !self.count(self.pio.read(port, data)) {
            data.fill(0xff);
        }
    }

    fn pio_write(&self, port: u16, data: &[u8]) {
        self.count(self.pio.write(port, data));
    }

    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.count(self.mmio.read(addr, data)) {
            data.fill(0xff);
        }
    }

    fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.count(self.mmio.write(addr, data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last write; reads return the offset's low byte, then the device's tag.
    struct Probe {
        tag: u8,
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.tag);
            if let Some(first) = data.first_mut() {
                *first = offset as u8;
            }
        }

        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    fn probe(tag: u8) -> Arc<Mutex<Probe>> {
        Arc::new(Mutex::new(Probe {
            tag,
            writes: Vec::new(),
        }))
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = MmioBus::new();
        bus.insert(probe(1), 0x1000, 0x100).expect("first");
        // (base, len, accepted)
        let table: &[(u64, u64, bool)] = &[
            (0x1000, 0x100, false),  // same
            (0x0f00, 0x101, false),  // ends on the first byte
            (0x0f00, 0x100, true),   // ends just before
            (0x10ff, 0x1, false),    // last byte
            (0x1080, 0x10, false),   // inside
            (0x0800, 0x1000, false), // covers it
            (0x1100, 0x10, true),    // just after
            (0x0, 0x0, false),       // empty
            (u64::MAX, 2, false),    // wraps
            (u64::MAX, 1, true),     // the very last byte
        ];
        for &(base, len, accepted) in table {
            let got = bus.insert(probe(2), base, len);
            assert_eq!(got.is_ok(), accepted, "{base:#x}+{len:#x}: {got:?}");
            if let Err(err) = got {
                assert!(matches!(
                    err,
                    BusError::Overlap { .. } | BusError::InvalidRange { .. }
                ));
            }
        }
    }

    #[test]
    fn pio_ranges_stay_below_port_0x10000() {
        let mut bus = PioBus::new();
        assert!(bus.insert(probe(1), 0xfff0, 0x10).is_ok());
        assert!(matches!(
            bus.insert(probe(1), 0xfff0, 0x11),
            Err(BusError::InvalidRange { .. })
        ));
    }

    #[test]
    fn accesses_reach_the_device_with_their_offset() {
        let a = probe(0xaa);
        let b = probe(0xbb);
        let mut bus = PioBus::new();
        bus.insert(a.clone(), 0x3f8, 8).expect("a");
        bus.insert(b.clone(), 0x60, 5).expect("b");

        let mut data = [0u8; 2];
        bus.read(0x3fa, &mut data).expect("read a");
        assert_eq!(data, [2, 0xaa]);
        bus.read(0x64, &mut data[..1]).expect("read b");
        assert_eq!(data[0], 4);

        bus.write(0x3f8, &[0x41]).expect("write a");
        bus.write(0x64, &[0xfe]).expect("write b");
        assert_eq!(a.lock().expect("a").writes, vec![(0, vec![0x41])]);
        assert_eq!(b.lock().expect("b").writes, vec![(4, vec![0xfe])]);
    }

    #[test]
    fn accesses_outside_every_range_fail() {
        let mut bus = MmioBus::new();
        bus.insert(probe(1), 0x1000, 0x100).expect("insert");
        let mut data = [0u8; 4];
        // (address, width)
        for (addr, len) in [(0xfff, 1), (0x1100, 1), (0x10fe, 4), (0, 4), (u64::MAX, 4)] {
            let err = bus.read(addr, &mut data[..len]).expect_err("no device");
            assert_eq!(
                err,
                BusError::NoDevice {
                    bus: "mmio",
                    addr,
                    len
                }
            );
            assert!(bus.write(addr, &data[..len]).is_err());
        }
        assert!(bus.read(0x10fc, &mut data).is_ok());
    }

    #[test]
    fn a_removed_device_gets_no_more_accesses() {
        let mut bus = MmioBus::new();
        bus.insert(probe(1), 0x1000, 0x100).expect("insert");
        assert!(bus.remove(0x1000).is_some());
        assert!(bus.remove(0x1000).is_none());
        assert!(bus.write(0x1000, &[1]).is_err());
        // The range is free again.
        bus.insert(probe(1), 0x1000, 0x100).expect("reinsert");
    }

    #[test]
    fn vcpus_see_all_ones_where_no_device_is() {
        use crate::vstate::Bus;
        let dev = probe(0x5a);
        let mut pio = PioBus::new();
        pio.insert(dev.clone(), 0x3f8, 8).expect("insert");
        let mut mmio = MmioBus::new();
        mmio.insert(dev.clone(), 0xd000_0000, 0x1000)
            .expect("insert");
        let buses = DeviceBuses::new(pio, mmio);
        let mut data = [0u8; 4];
        buses.pio_read(0x80, &mut data[..1]);
        assert_eq!(data[0], 0xff);
        buses.mmio_read(0xc000_0000, &mut data);
        assert_eq!(data, [0xff; 4]);
        buses.pio_write(0x80, &[1]);
        buses.mmio_write(0, &[1]);
        assert_eq!(buses.unclaimed(), 4);
        buses.pio_read(0x3f9, &mut data[..2]);
        assert_eq!(data[..2], [1, 0x5a]);
        buses.mmio_write(0xd000_0070, &[1, 0, 0, 0]);
        assert_eq!(
            dev.lock().expect("dev").writes,
            vec![(0x70, vec![1, 0, 0, 0])]
        );
        assert_eq!(buses.unclaimed(), 4);
    }

    #[test]
    fn a_poisoned_device_still_serves() {
        let dev = probe(7);
        let mut bus = MmioBus::new();
        bus.insert(dev.clone(), 0, 16).expect("insert");
        let _ = std::thread::spawn(move || {
            let _guard = dev.lock().expect("lock");
            panic!("poison it");
        })
        .join();
        let mut data = [0u8; 1];
        bus.read(3, &mut data).expect("read");
        assert_eq!(data, [3]);
    }
}
