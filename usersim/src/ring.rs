//! The ring's memory in the host process.
//!
//! Two `memfd`s — the producer page and the data — sealed against shrinking, growing,
//! further seals and (once the host has mapped them) new writers, mapped here as `[producer
//! page | data | data]` (a `PROT_NONE` reservation, then `MAP_FIXED | MAP_SHARED` maps of
//! each part, the data twice back to back so a record across the wrap reads contiguously). The kernel page is private anonymous memory: it is
//! never shared with a client. Each mapping's consumer page is a memfd of its own
//! ([`crate::consumer_page`]).
//!
//! The client gets read-only descriptors of the producer page and the data, opened again
//! through `/proc/self/fd/N` with `O_RDONLY`, with the MAP reply, besides its consumer page.
//! Once the host has mapped them, the producer page and the data are sealed with
//! `F_SEAL_FUTURE_WRITE` and their mode is cleared: no descriptor of them — reopened with
//! `O_RDWR` by root, say — can make a writable mapping, `mprotect` one, or `write(2)`.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr;

use ringmap_core::{Capacity, DataView, PAGE_SIZE, RingPlacement};
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// The ring's memory: the memfds, the read-only descriptors handed to clients, the host's
/// mapping of the shared view, and the private kernel page.
pub struct RingMemory {
    capacity: Capacity,
    producer_page: OwnedFd,
    data: OwnedFd,
    producer_page_ro: OwnedFd,
    data_ro: OwnedFd,
    view: *mut u8,
    view_len: usize,
    kernel_page: *mut u8,
}

// SAFETY: the pointers are addresses of mappings this value owns; who reads and writes the
// memory behind them, and how, is the ring's business (atomics and its protocol).
unsafe impl Send for RingMemory {}
// SAFETY: as for `Send`; `&RingMemory` only hands out addresses and descriptors.
unsafe impl Sync for RingMemory {}

/// A memfd of `len` bytes sealed against shrinking and growing, that only its owner may open
/// again by path (`/proc/<pid>/fd/N`; memfds start with mode 0777).
fn unsealed_memfd(name: &str, len: u64) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len)?;
    rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW)?;
    Ok(fd)
}

/// Seals `fd` against any new writable mapping or `write(2)` through any descriptor of it,
/// however opened: only mappings made before (the host's) can write it. F_SEAL_SEAL too (a
/// client must not add or remove seals), and its mode cleared: no one but root may open it
/// again by path (and root gets no write access through the reopened descriptor either).
fn seal_writes(fd: &OwnedFd) -> io::Result<()> {
    rustix::fs::fcntl_add_seals(fd, SealFlags::FUTURE_WRITE | SealFlags::SEAL)?;
    rustix::fs::fchmod(fd, Mode::empty())?;
    Ok(())
}

fn read_only(fd: &OwnedFd) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Maps `len` bytes of `fd` at `at`, replacing what is there.
///
/// # Safety
///
/// `at .. at + len` lies in a reservation the caller owns and nothing references.
unsafe fn map_fixed(
    at: *mut u8,
    len: usize,
    prot: ProtFlags,
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    // SAFETY: forwarded from the caller: the range is ours to replace.
    let got = unsafe {
        rustix::mm::mmap(
            at.cast::<c_void>(),
            len,
            prot,
            MapFlags::SHARED | MapFlags::FIXED,
            fd,
            0,
        )?
    };
    if got.cast::<u8>() != at {
        return Err(io::Error::other("MAP_FIXED mapped elsewhere"));
    }
    Ok(())
}

/// Maps a view — `[consumer page | producer page | data | data]` for a consumer (with
/// `consumer_page`), `[producer page | data | data]` for the host (without) — from the
/// descriptors, with the given protections. Returns the base and the length of the mapping.
///
/// # Safety
///
/// None beyond what `mmap` needs: a new reservation is made, so nothing existing is replaced.
pub unsafe fn map_view(
    capacity: Capacity,
    consumer_page: Option<(BorrowedFd<'_>, ProtFlags)>,
    producer_page: BorrowedFd<'_>,
    data: BorrowedFd<'_>,
    shared_prot: ProtFlags,
) -> io::Result<(*mut u8, usize)> {
    let cap = capacity.bytes();
    let first = usize::from(consumer_page.is_some()) * PAGE_SIZE;
    let len = first + PAGE_SIZE + 2 * cap;
    // SAFETY: a new anonymous reservation at an address the kernel picks replaces nothing.
    let base = unsafe {
        rustix::mm::mmap_anonymous(
            ptr::null_mut(),
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )?
    }
    .cast::<u8>();
    let result = (|| {
        // SAFETY: each range lies in the reservation just made, which nothing references.
        unsafe {
            if let Some((fd, prot)) = consumer_page {
                map_fixed(base, PAGE_SIZE, prot, fd)?;
            }
            map_fixed(base.add(first), PAGE_SIZE, shared_prot, producer_page)?;
            map_fixed(base.add(first + PAGE_SIZE), cap, shared_prot, data)?;
            map_fixed(base.add(first + PAGE_SIZE + cap), cap, shared_prot, data)?;
        }
        Ok(())
    })();
    if let Err(error) = result {
        // SAFETY: the reservation is ours and nothing references it.
        let _ = unsafe { rustix::mm::munmap(base.cast(), len) };
        return Err(error);
    }
    Ok((base, len))
}

impl RingMemory {
    /// Allocates and maps an empty ring of `capacity` bytes.
    pub fn new(capacity: Capacity) -> io::Result<RingMemory> {
        let producer_page = unsealed_memfd("ringmap-producer", PAGE_SIZE as u64)?;
        let data = unsealed_memfd("ringmap-data", capacity.as_u64())?;
        let producer_page_ro = read_only(&producer_page)?;
        let data_ro = read_only(&data)?;
        let rw = ProtFlags::READ | ProtFlags::WRITE;
        // SAFETY: `map_view` makes a new reservation.
        let (view, view_len) =
            unsafe { map_view(capacity, None, producer_page.as_fd(), data.as_fd(), rw)? };
        // After the host's writable mapping: from now on nobody can write the producer page
        // or the data except through it (not a client reopening its read-only descriptor
        // with O_RDWR, not `mprotect`, not `write(2)`).
        let sealed = seal_writes(&producer_page).and_then(|()| seal_writes(&data));
        if let Err(error) = sealed {
            // SAFETY: the view was mapped above and nothing references it yet.
            let _ = unsafe { rustix::mm::munmap(view.cast(), view_len) };
            return Err(error);
        }
        // SAFETY: a new private anonymous page at an address the kernel picks.
        let kernel_page = match unsafe {
            rustix::mm::mmap_anonymous(ptr::null_mut(), PAGE_SIZE, rw, MapFlags::PRIVATE)
        } {
            Ok(page) => page.cast::<u8>(),
            Err(error) => {
                // SAFETY: the view was mapped above and nothing references it yet.
                let _ = unsafe { rustix::mm::munmap(view.cast(), view_len) };
                return Err(error.into());
            }
        };
        Ok(RingMemory {
            capacity,
            producer_page,
            data,
            producer_page_ro,
            data_ro,
            view,
            view_len,
            kernel_page,
        })
    }

    /// The capacity.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// The placement of a device over this memory.
    ///
    /// # Safety
    ///
    /// As [`RingPlacement::new`]: at most one ring at a time uses it, and it does not outlive
    /// `self`.
    pub unsafe fn placement(&self) -> RingPlacement {
        // SAFETY: the view's parts are page-aligned mappings of the right sizes that live as
        // long as `self` (the caller's contract keeps the ring within that); the data is
        // mapped twice back to back; the kernel page is private to this process.
        unsafe {
            let data = DataView::new(self.view, self.view.add(PAGE_SIZE), self.capacity)
                .expect("mappings are page-aligned and non-null");
            RingPlacement::new(self.kernel_page, data).expect("mappings are page-aligned")
        }
    }

    /// The read-only descriptors a MAP reply carries after the consumer page's: the producer
    /// page and the data.
    pub fn client_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.producer_page_ro.as_fd(), self.data_ro.as_fd()]
    }

    /// The writable descriptors (tests).
    pub fn writable_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.producer_page.as_fd(), self.data.as_fd()]
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        // SAFETY: both mappings were made in `new` and are unmapped once; the device that
        // used them is gone (the placement's contract).
        unsafe {
            let _ = rustix::mm::munmap(self.view.cast(), self.view_len);
            let _ = rustix::mm::munmap(self.kernel_page.cast(), PAGE_SIZE);
        }
    }
}
