//! The consumer's view of the ring, mapped from the descriptors a MAP reply carries: what
//! a client does with the section handles the driver opened in its process (on Windows,
//! `MapViewOfFile3` of each, the data twice back to back).

use std::ffi::c_void;
use std::io;
use std::os::fd::BorrowedFd;
use std::ptr;

use ringmap_core::{Capacity, PAGE_SIZE};
use rustix::mm::{MapFlags, ProtFlags};

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
/// `consumer_page`), `[producer page | data | data]` without — from the descriptors, with the
/// given protections. Returns the base and the length of the mapping.
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
