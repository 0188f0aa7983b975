//! The ring's memory: `[kernel page | producer page | data | data]` in system space, as
//! `ringmap_core::layout::RingLayout` places it, and one consumer page per mapping.
//!
//! The producer page and the data are each a pagefile-backed section
//! (`ZwCreateSection(SEC_COMMIT)`), so that MAP can give the caller section handles with the
//! right access (API_CHECKS.md section 4). Every MAP makes a fresh one-page section for its
//! consumer page ([`ConsumerPageSection`]): a former consumer keeps its own view of its old
//! page (a view outlives its handle), but nothing reads that page once its mapping is retired. Each section is mapped in system space and its pages
//! are locked with `MmProbeAndLockPages`, which raises on failure: it is called through the C
//! shim in `seh.c` (`__try`). The kernel page is a non-paged pool page of its own and never
//! gets a handle. One composite MDL lists the physical pages of all of them, the data pages
//! twice, and is mapped once with `MmMapLockedPagesSpecifyCache(KernelMode, ...)` (no raise in
//! kernel mode; null on failure): producers see the ring contiguous, non-paged and
//! non-executable at DISPATCH_LEVEL.
//!
//! A zeroed field means "not made yet"; `Drop` undoes whatever was made, in reverse order, so a
//! failed `RingMemory::new` leaves nothing behind.

use core::ptr::null_mut;

use ringmap_core::layout::{Capacity, PAGE_SIZE, RingLayout};
use ringmap_core::placement::{DataView, PlacementError, RingPlacement};
use wdk_sys::ntddk::{
    ExAllocatePool2, ExFreePoolWithTag, IoAllocateMdl, IoFreeMdl, MmBuildMdlForNonPagedPool,
    MmMapLockedPagesSpecifyCache, MmMapViewInSystemSpace, MmUnlockPages, MmUnmapLockedPages,
    MmUnmapViewInSystemSpace, ObReferenceObjectByHandle, ObfDereferenceObject, ZwClose,
    ZwCreateSection,
};
use wdk_sys::{
    _LOCK_OPERATION, _MEMORY_CACHING_TYPE, _MM_PAGE_PRIORITY, _MODE, ACCESS_MASK, CSHORT, HANDLE,
    KPROCESSOR_MODE, LARGE_INTEGER, LOCK_OPERATION, MDL_PAGES_LOCKED, MdlMappingNoExecute,
    NTSTATUS, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, PAGE_READWRITE, PFN_NUMBER, PMDL,
    POOL_FLAG_NON_PAGED, PVOID, SEC_COMMIT, SECTION_MAP_READ, SECTION_MAP_WRITE, SECTION_QUERY,
    SIZE_T, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, ULONG,
};

use crate::POOL_TAG;

unsafe extern "C" {
    /// `MmProbeAndLockPages(mdl, access_mode, operation)` inside `__try`; the exception code
    /// if it raised, else `STATUS_SUCCESS` (driver/src/seh.c).
    fn ringmap_probe_and_lock_pages(
        mdl: PMDL,
        access_mode: KPROCESSOR_MODE,
        operation: LOCK_OPERATION,
    ) -> NTSTATUS;
}

/// Every right on a section that the kernel needs.
const SECTION_ALL_WE_USE: ACCESS_MASK =
    (SECTION_MAP_READ | SECTION_MAP_WRITE | SECTION_QUERY) as ACCESS_MASK;

/// The two regions of the ring with a section, in layout order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The producer page (read-only to the consumer).
    ProducerPage = 0,
    /// The data (read-only to the consumer, mapped twice by it).
    Data = 1,
}

/// One section: the object (referenced), its system-space view, the MDL locking the view.
struct Section {
    object: PVOID,
    view: PVOID,
    locked_mdl: PMDL,
}

impl Section {
    const EMPTY: Section = Section {
        object: null_mut(),
        view: null_mut(),
        locked_mdl: null_mut(),
    };
}

/// The ring's pages; see the module comment.
pub struct RingMemory {
    capacity: Capacity,
    kernel_page: PVOID,
    kernel_mdl: PMDL,
    sections: [Section; 2],
    composite: PMDL,
    base: PVOID,
}

fn check(status: NTSTATUS) -> Result<(), NTSTATUS> {
    if wdk::nt_success(status) {
        Ok(())
    } else {
        Err(status)
    }
}

fn non_null<T>(pointer: *mut T) -> Result<*mut T, NTSTATUS> {
    if pointer.is_null() {
        Err(STATUS_INSUFFICIENT_RESOURCES)
    } else {
        Ok(pointer)
    }
}

impl RingMemory {
    /// Allocates, locks and maps a ring of `capacity`. PASSIVE_LEVEL.
    pub fn new(capacity: Capacity) -> Result<RingMemory, NTSTATUS> {
        let mut memory = RingMemory {
            capacity,
            kernel_page: null_mut(),
            kernel_mdl: null_mut(),
            sections: [Section::EMPTY, Section::EMPTY],
            composite: null_mut(),
            base: null_mut(),
        };
        memory.make_kernel_page()?;
        for (index, bytes) in [PAGE_SIZE, capacity.bytes()].into_iter().enumerate() {
            make_section(&mut memory.sections[index], bytes)?;
        }
        memory.map_composite()?;
        Ok(memory)
    }

    fn make_kernel_page(&mut self) -> Result<(), NTSTATUS> {
        // SAFETY: plain allocation; zeroed (no POOL_FLAG_UNINITIALIZED), page-aligned since it
        // is one page; freed in `drop` with the same tag.
        self.kernel_page = non_null(unsafe {
            ExAllocatePool2(POOL_FLAG_NON_PAGED, PAGE_SIZE as SIZE_T, POOL_TAG)
        })?;
        // SAFETY: describes the page just allocated; freed in `drop` before the page.
        self.kernel_mdl = non_null(unsafe {
            IoAllocateMdl(self.kernel_page, PAGE_SIZE as ULONG, 0, 0, null_mut())
        })?;
        // SAFETY: the MDL describes non-paged pool (MmBuildMdlForNonPagedPool's requirement).
        unsafe { MmBuildMdlForNonPagedPool(self.kernel_mdl) };
        Ok(())
    }

    /// One MDL over `[kernel | producer | data | data]`, mapped in system space.
    fn map_composite(&mut self) -> Result<(), NTSTATUS> {
        let layout: RingLayout = self.capacity.layout();
        let bytes = ULONG::try_from(layout.region_bytes()).map_err(|_| STATUS_INVALID_PARAMETER)?;
        // SAFETY: an MDL with no virtual address (its PFN array is filled below, as eBPF for
        // Windows builds its composite ring MDL); freed in `drop`.
        self.composite = non_null(unsafe { IoAllocateMdl(null_mut(), bytes, 0, 0, null_mut()) })?;
        let mut pfns = PfnWriter::new(self.composite);
        pfns.extend(self.kernel_mdl, 1);
        pfns.extend(self.sections[Region::ProducerPage as usize].locked_mdl, 1);
        let data_pages = self.capacity.bytes() / PAGE_SIZE;
        pfns.extend(self.sections[Region::Data as usize].locked_mdl, data_pages);
        pfns.extend(self.sections[Region::Data as usize].locked_mdl, data_pages);
        // SAFETY: every page listed is locked (pool, or MmProbeAndLockPages) for as long as the
        // composite MDL lives; drivers may set MDL_PAGES_LOCKED on an MDL they built (wdm.h).
        unsafe { (*self.composite).MdlFlags |= MDL_PAGES_LOCKED as CSHORT };
        // SAFETY: a locked MDL mapped in kernel mode (no exception: null on failure); unmapped
        // in `drop` before the MDL is freed.
        self.base = non_null(unsafe {
            MmMapLockedPagesSpecifyCache(
                self.composite,
                _MODE::KernelMode as KPROCESSOR_MODE,
                _MEMORY_CACHING_TYPE::MmCached,
                null_mut(),
                0,
                _MM_PAGE_PRIORITY::NormalPagePriority as ULONG | MdlMappingNoExecute as ULONG,
            )
        })?;
        Ok(())
    }

    /// The placement `ringmap_core::device::Device::new` wants.
    pub fn placement(&self) -> Result<RingPlacement, PlacementError> {
        let base = self.base.cast::<u8>();
        // SAFETY: `base` maps `region_bytes()` bytes laid out as RingLayout says (the data twice,
        // back to back, over the same pages), valid until `drop`, which runs after the device
        // that uses the placement is dropped (`device::Ring` field order); the kernel page is in
        // no section, so no handle to it is ever opened for user mode.
        unsafe {
            let data = DataView::new(
                base.add(RingLayout::PRODUCER_PAGE),
                base.add(RingLayout::DATA),
                self.capacity,
            )?;
            RingPlacement::new(base.add(RingLayout::KERNEL_PAGE), data)
        }
    }

    /// The section object of `region` (referenced until `drop`), for MAP.
    pub fn section(&self, region: Region) -> PVOID {
        self.sections[region as usize].object
    }
}

/// One mapping's consumer page: a one-page section of its own, locked, and mapped once more
/// through its MDL so that producers read it non-paged at DISPATCH_LEVEL. Made at MAP
/// (PASSIVE_LEVEL, in the caller's context), dropped once the mapping is retired.
pub struct ConsumerPageSection {
    section: Section,
    address: PVOID,
}

// SAFETY: the pointers are a referenced section object, its system view, its MDL and a
// system-space mapping of it: usable and freed from any thread at PASSIVE_LEVEL.
unsafe impl Send for ConsumerPageSection {}

impl ConsumerPageSection {
    /// A fresh, zeroed consumer page. PASSIVE_LEVEL.
    pub fn new() -> Result<ConsumerPageSection, NTSTATUS> {
        let mut page = ConsumerPageSection {
            section: Section::EMPTY,
            address: null_mut(),
        };
        make_section(&mut page.section, PAGE_SIZE)?;
        // SAFETY: the MDL is locked (make_section); kernel mode: null on failure, no raise;
        // unmapped in `drop` before the MDL is unlocked and freed.
        page.address = non_null(unsafe {
            MmMapLockedPagesSpecifyCache(
                page.section.locked_mdl,
                _MODE::KernelMode as KPROCESSOR_MODE,
                _MEMORY_CACHING_TYPE::MmCached,
                null_mut(),
                0,
                _MM_PAGE_PRIORITY::NormalPagePriority as ULONG | MdlMappingNoExecute as ULONG,
            )
        })?;
        Ok(page)
    }

    /// The page's non-paged system address (what producers read).
    pub fn address(&self) -> *mut u8 {
        self.address.cast()
    }

    /// The section object (referenced until `drop`), for MAP's handle in the caller.
    pub fn section(&self) -> PVOID {
        self.section.object
    }
}

impl Drop for ConsumerPageSection {
    fn drop(&mut self) {
        // SAFETY: undoes `new` in reverse order; nothing reads the page any more (the device
        // retired its mapping first). The caller's own view keeps the section object alive
        // for the caller alone.
        unsafe {
            if !self.address.is_null() {
                MmUnmapLockedPages(self.address, self.section.locked_mdl);
            }
            free_section(&self.section);
        }
    }
}

/// Undoes `make_section`, whatever part of it succeeded.
///
/// # Safety
///
/// Nothing uses the section's view or its locked pages any more.
unsafe fn free_section(section: &Section) {
    // SAFETY: the caller's contract; each step undoes one that succeeded (non-null).
    unsafe {
        if !section.locked_mdl.is_null() {
            MmUnlockPages(section.locked_mdl);
            IoFreeMdl(section.locked_mdl);
        }
        if !section.view.is_null() {
            let _ = MmUnmapViewInSystemSpace(section.view);
        }
        if !section.object.is_null() {
            ObfDereferenceObject(section.object);
        }
    }
}

/// Creates a pagefile-backed section of `bytes`, maps it in system space and locks its pages.
fn make_section(section: &mut Section, bytes: usize) -> Result<(), NTSTATUS> {
    let mut handle: HANDLE = null_mut();
    let mut attributes = OBJECT_ATTRIBUTES {
        Length: crate::wdf_size::<OBJECT_ATTRIBUTES>(),
        Attributes: OBJ_KERNEL_HANDLE as ULONG,
        ..OBJECT_ATTRIBUTES::default()
    };
    let mut size = LARGE_INTEGER {
        QuadPart: bytes as i64,
    };
    // SAFETY: out-parameters and attributes live across the call; a kernel handle (not in the
    // caller's handle table) to an unnamed section backed by the paging file.
    check(unsafe {
        ZwCreateSection(
            &raw mut handle,
            SECTION_ALL_WE_USE,
            &raw mut attributes,
            &raw mut size,
            PAGE_READWRITE as ULONG,
            SEC_COMMIT as ULONG,
            null_mut(),
        )
    })?;
    // SAFETY: `handle` is the kernel handle just created; the reference is released in `drop`.
    let status = unsafe {
        ObReferenceObjectByHandle(
            handle,
            SECTION_ALL_WE_USE,
            null_mut(),
            _MODE::KernelMode as KPROCESSOR_MODE,
            &raw mut section.object,
            null_mut(),
        )
    };
    // SAFETY: our own kernel handle; the object stays alive through the reference.
    let _ = unsafe { ZwClose(handle) };
    check(status)?;
    let mut view_size = bytes as SIZE_T;
    // SAFETY: a referenced section object; unmapped in `drop`.
    check(unsafe {
        MmMapViewInSystemSpace(section.object, &raw mut section.view, &raw mut view_size)
    })?;
    // SAFETY: describes the view just made (`bytes` fit in a ULONG: at most 1 GiB).
    let mdl = non_null(unsafe { IoAllocateMdl(section.view, bytes as ULONG, 0, 0, null_mut()) })?;
    // SAFETY: the MDL describes a system-space view of our own section; the shim catches the
    // exception MmProbeAndLockPages raises on failure.
    let status = unsafe {
        ringmap_probe_and_lock_pages(
            mdl,
            _MODE::KernelMode as KPROCESSOR_MODE,
            _LOCK_OPERATION::IoWriteAccess,
        )
    };
    if let Err(status) = check(status) {
        // SAFETY: not locked, not used anywhere else.
        unsafe { IoFreeMdl(mdl) };
        return Err(status);
    }
    section.locked_mdl = mdl;
    Ok(())
}

/// Appends physical page numbers to a composite MDL's PFN array.
struct PfnWriter {
    next: *mut PFN_NUMBER,
}

impl PfnWriter {
    fn new(mdl: PMDL) -> PfnWriter {
        // MmGetMdlPfnArray(Mdl) is `(PPFN_NUMBER)(Mdl + 1)` (wdm.h): the array follows the MDL.
        PfnWriter {
            // SAFETY: IoAllocateMdl sized the MDL for its PFN array.
            next: unsafe { mdl.add(1).cast::<PFN_NUMBER>() },
        }
    }

    /// Copies the first `pages` PFNs of `source`.
    fn extend(&mut self, source: PMDL, pages: usize) {
        // SAFETY: `source` is a locked MDL of at least `pages` pages, and the composite MDL was
        // allocated for exactly the pages appended by `map_composite`.
        unsafe {
            let from = source.add(1).cast::<PFN_NUMBER>();
            core::ptr::copy_nonoverlapping(from, self.next, pages);
            self.next = self.next.add(pages);
        }
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        // SAFETY: each step undoes one that succeeded (non-null), in reverse order; nothing uses
        // the ring any more (the device was dropped first).
        unsafe {
            if !self.base.is_null() {
                MmUnmapLockedPages(self.base, self.composite);
            }
            if !self.composite.is_null() {
                IoFreeMdl(self.composite);
            }
            for section in self.sections.iter().rev() {
                free_section(section);
            }
            if !self.kernel_mdl.is_null() {
                IoFreeMdl(self.kernel_mdl);
            }
            if !self.kernel_page.is_null() {
                ExFreePoolWithTag(self.kernel_page, POOL_TAG);
            }
        }
    }
}
