//! Kernels and the initramfs images that boot them: where they are cached, how they are fetched
//! from Debian or built from source, which modules they need, and the cpio archives lab writes.
#![forbid(unsafe_code)]

pub mod build;
pub mod cache;
pub mod catalog;
pub mod cpio;
pub mod debian;
pub mod guest_packages;
pub mod image;
pub mod initramfs;
pub mod module_index;
pub mod modules;
pub mod packages;

/// A progress callback: one short line at a time ("downloading linux-image-…").
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);
