//! One mapping's consumer page: a fresh one-page `memfd` for every MAP.
//!
//! The client gets the descriptor (read-write) with the MAP reply and maps the page as the
//! first page of its view; the host maps it too, and producers read it there while the
//! mapping lasts. When the mapping ends (UNMAP, the connection closed), the device stops
//! reading it first (`Ring::retire_consumer_page`), then the host unmaps and closes its side:
//! whatever the former client writes into its own copy afterwards reaches nobody.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr;

use ringmap_core::PAGE_SIZE;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// A consumer page: the descriptor and the host's mapping of it.
#[derive(Debug)]
pub struct ConsumerPageMemory {
    fd: OwnedFd,
    page: *mut u8,
}

// SAFETY: the pointer is the address of a mapping this value owns; the page is only ever
// accessed atomically (through the ring).
unsafe impl Send for ConsumerPageMemory {}
// SAFETY: as for `Send`.
unsafe impl Sync for ConsumerPageMemory {}

impl ConsumerPageMemory {
    /// A zeroed page, sealed against shrinking, growing and further seals (a client must not
    /// be able to make the host's mapping of it fault or to add seals of its own).
    pub fn new() -> io::Result<ConsumerPageMemory> {
        let fd = rustix::fs::memfd_create(
            "ringmap-consumer",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, PAGE_SIZE as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        // SAFETY: a new shared mapping of our own descriptor at an address the kernel picks.
        let page = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                PAGE_SIZE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        }
        .cast::<u8>();
        Ok(ConsumerPageMemory { fd, page })
    }

    /// The host's address of the page.
    pub fn address(&self) -> *mut u8 {
        self.page
    }

    /// The descriptor the MAP reply carries (read-write).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for ConsumerPageMemory {
    fn drop(&mut self) {
        // SAFETY: mapped in `new`, unmapped once; the device no longer reads the page (it is
        // dropped only once its mapping was retired, or with the device).
        let _ = unsafe { rustix::mm::munmap(self.page.cast(), PAGE_SIZE) };
    }
}
