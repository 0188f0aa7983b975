//! The WDM functions of `wdk_sys::ntddk` that the driver calls. Maximum IRQLs are those of
//! Microsoft's documentation of each function.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::kernel::{
    self, MdlInfo, Object, PAGE, Region, RegionKind, ThreadRecord, UserHandle, check_irql, irql,
    kernel, set_irql, violate,
};
use crate::types::*;

const PASSIVE: u32 = PASSIVE_LEVEL;
const APC: u32 = APC_LEVEL;
const DISPATCH: u32 = DISPATCH_LEVEL;

pub unsafe fn KeGetCurrentIrql() -> KIRQL {
    irql()
}

pub unsafe fn KfRaiseIrql(new: KIRQL) -> KIRQL {
    let old = irql();
    if new < old {
        violate(
            "IRQL",
            format!("KeRaiseIrql to {new} from the higher IRQL {old}"),
        );
    }
    set_irql(new);
    old
}

pub unsafe fn KeLowerIrql(new: KIRQL) {
    let old = irql();
    if new > old {
        violate(
            "IRQL",
            format!("KeLowerIrql to {new} from the lower IRQL {old}"),
        );
    }
    set_irql(new);
}

/// `CLOCK_MONOTONIC` in nanoseconds (the frequency is 10^9): the clock a client process on
/// the same machine reads too, so that it can tell how long ago a record was stamped.
pub unsafe fn KeQueryPerformanceCounter(frequency: PLARGE_INTEGER) -> LARGE_INTEGER {
    if !frequency.is_null() {
        // SAFETY: the caller's out-parameter.
        unsafe { (*frequency).QuadPart = 1_000_000_000 };
    }
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    LARGE_INTEGER {
        QuadPart: now.tv_sec * 1_000_000_000 + now.tv_nsec,
    }
}

/// A busy wait, allowed at any IRQL. Here it yields the processor: a simulated thread "at
/// DISPATCH_LEVEL" can be preempted, which a real processor at DISPATCH_LEVEL cannot, so the
/// producer a stalling one waits for may be the preempted one, and must get to run.
pub unsafe fn KeStallExecutionProcessor(microseconds: ULONG) {
    std::thread::yield_now();
    if microseconds > 50 {
        std::thread::sleep(Duration::from_micros(microseconds.into()));
    }
}

pub unsafe fn KeDelayExecutionThread(
    _mode: KPROCESSOR_MODE,
    _alertable: BOOLEAN,
    interval: PLARGE_INTEGER,
) -> NTSTATUS {
    check_irql("KeDelayExecutionThread", APC);
    // SAFETY: the caller's interval.
    let ticks = unsafe { (*interval).QuadPart };
    if ticks < 0 {
        std::thread::sleep(Duration::from_nanos(ticks.unsigned_abs() * 100));
    }
    STATUS_SUCCESS
}

pub unsafe fn ExAllocatePool2(flags: POOL_FLAGS, bytes: SIZE_T, tag: ULONG) -> PVOID {
    check_irql("ExAllocatePool2", DISPATCH);
    if flags & POOL_FLAG_NON_PAGED == 0 {
        violate(
            "Pool",
            "ExAllocatePool2 without POOL_FLAG_NON_PAGED: ringmap allocates non-paged pool only"
                .into(),
        );
    }
    let len = (bytes as usize).div_ceil(PAGE).max(1) * PAGE;
    let mut k = kernel();
    let Ok(backing) = k.backing(len, false) else {
        return core::ptr::null_mut();
    };
    let pages: Vec<(u32, u64)> = (0..(len / PAGE) as u64).map(|p| (backing, p)).collect();
    // SAFETY: the memfd just made has these pages.
    let Some(base) = (unsafe { kernel::map_pages(&k, &pages) }) else {
        return core::ptr::null_mut();
    };
    k.regions.insert(
        base,
        Region {
            len,
            pages,
            kind: RegionKind::Pool { tag },
        },
    );
    base as PVOID
}

pub unsafe fn ExFreePoolWithTag(pointer: PVOID, tag: ULONG) {
    check_irql("ExFreePoolWithTag", DISPATCH);
    let mut k = kernel();
    match k.regions.get(&(pointer as usize)).map(|r| r.kind) {
        Some(RegionKind::Pool { tag: allocated }) => {
            if allocated != tag {
                k.violate(
                    "Pool",
                    format!("ExFreePoolWithTag with tag {tag:#x}; allocated with {allocated:#x}"),
                );
            }
            let region = k.regions.remove(&(pointer as usize)).expect("present");
            // SAFETY: the pool block's own mapping.
            let _ = unsafe { rustix::mm::munmap(pointer, region.len) };
        }
        _ => k.violate(
            "Pool",
            format!("ExFreePoolWithTag of {pointer:p}, which is not an allocation (freed twice?)"),
        ),
    }
}

fn mdl_pages(va: usize, bytes: usize) -> usize {
    ((va % PAGE) + bytes).div_ceil(PAGE)
}

pub unsafe fn IoAllocateMdl(
    va: PVOID,
    length: ULONG,
    _secondary: BOOLEAN,
    _charge_quota: BOOLEAN,
    _irp: PVOID,
) -> PMDL {
    check_irql("IoAllocateMdl", DISPATCH);
    let pages = mdl_pages(va as usize, length as usize);
    let bytes = size_of::<MDL>() + pages * size_of::<PFN_NUMBER>();
    let layout = std::alloc::Layout::from_size_align(bytes, 8).expect("an MDL's layout");
    // SAFETY: a non-zero size.
    let mdl = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<MDL>();
    if mdl.is_null() {
        return mdl;
    }
    // SAFETY: the allocation just made, sized for the header.
    unsafe {
        (*mdl).Size = bytes as CSHORT;
        (*mdl).StartVa = (va as usize & !(PAGE - 1)) as PVOID;
        (*mdl).ByteOffset = (va as usize % PAGE) as ULONG;
        (*mdl).ByteCount = length;
    }
    kernel().mdls.insert(
        mdl as usize,
        MdlInfo {
            layout,
            pages,
            probe_locked: false,
        },
    );
    mdl
}

fn pfn(page: (u32, u64)) -> PFN_NUMBER {
    (u64::from(page.0) << 32) | page.1
}

fn unpfn(pfn: PFN_NUMBER) -> (u32, u64) {
    ((pfn >> 32) as u32, pfn & 0xffff_ffff)
}

/// Fills the PFN array of `mdl` from its virtual range; `pool_only`: every page must be
/// non-paged pool.
fn fill_pfns(mdl: PMDL, function: &str, pool_only: bool) -> bool {
    let mut k = kernel();
    let Some(pages) = k.mdls.get(&(mdl as usize)).map(|m| m.pages) else {
        k.violate("MDL", format!("{function} of {mdl:p}, which is not an MDL"));
        return false;
    };
    // SAFETY: a live MDL of ours.
    let start = unsafe { (*mdl).StartVa } as usize;
    for index in 0..pages {
        match k.resolve(start + index * PAGE) {
            Some((page, kind)) if !pool_only || matches!(kind, RegionKind::Pool { .. }) => {
                // SAFETY: the PFN array follows the header, sized for `pages`.
                unsafe { *mdl.add(1).cast::<PFN_NUMBER>().add(index) = pfn(page) };
            }
            _ => {
                if pool_only {
                    k.violate(
                        "MDL",
                        format!("{function}: the MDL describes memory that is not non-paged pool"),
                    );
                }
                return false;
            }
        }
    }
    true
}

pub unsafe fn MmBuildMdlForNonPagedPool(mdl: PMDL) {
    check_irql("MmBuildMdlForNonPagedPool", DISPATCH);
    if fill_pfns(mdl, "MmBuildMdlForNonPagedPool", true) {
        // SAFETY: a live MDL.
        unsafe {
            (*mdl).MdlFlags |= MDL_SOURCE_IS_NONPAGED_POOL as CSHORT;
            (*mdl).MappedSystemVa = (*mdl).StartVa.byte_add((*mdl).ByteOffset as usize);
        }
    }
}

/// The C shim of driver/src/seh.c on Windows: `MmProbeAndLockPages` inside `__try`. Here the
/// "exception" is STATUS_ACCESS_VIOLATION for pages that are not mapped.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ringmap_probe_and_lock_pages(
    mdl: PMDL,
    _access_mode: KPROCESSOR_MODE,
    _operation: LOCK_OPERATION,
) -> NTSTATUS {
    check_irql("MmProbeAndLockPages", APC);
    if !fill_pfns(mdl, "MmProbeAndLockPages", false) {
        return STATUS_ACCESS_VIOLATION;
    }
    let mut k = kernel();
    if let Some(info) = k.mdls.get_mut(&(mdl as usize)) {
        info.probe_locked = true;
    }
    // SAFETY: a live MDL.
    unsafe { (*mdl).MdlFlags |= MDL_PAGES_LOCKED as CSHORT };
    STATUS_SUCCESS
}

pub unsafe fn MmUnlockPages(mdl: PMDL) {
    check_irql("MmUnlockPages", DISPATCH);
    let mut k = kernel();
    match k.mdls.get_mut(&(mdl as usize)) {
        Some(info) if info.probe_locked => {
            info.probe_locked = false;
            // SAFETY: a live MDL.
            unsafe { (*mdl).MdlFlags &= !(MDL_PAGES_LOCKED as CSHORT) };
        }
        _ => k.violate(
            "MDL",
            format!("MmUnlockPages of {mdl:p}, whose pages MmProbeAndLockPages did not lock"),
        ),
    }
}

pub unsafe fn IoFreeMdl(mdl: PMDL) {
    check_irql("IoFreeMdl", DISPATCH);
    let mut k = kernel();
    let Some(info) = k.mdls.remove(&(mdl as usize)) else {
        k.violate(
            "MDL",
            format!("IoFreeMdl of {mdl:p}, which is not an MDL (freed twice?)"),
        );
        return;
    };
    if info.probe_locked {
        k.violate(
            "MDL",
            "IoFreeMdl of an MDL whose pages are still locked (MmUnlockPages first)".into(),
        );
    }
    if k.regions
        .values()
        .any(|r| r.kind == RegionKind::Locked { mdl: mdl as usize })
    {
        k.violate(
            "MDL",
            "IoFreeMdl of an MDL that is still mapped (MmUnmapLockedPages first)".into(),
        );
    }
    // SAFETY: allocated by IoAllocateMdl with this layout.
    unsafe { std::alloc::dealloc(mdl.cast(), info.layout) };
}

pub unsafe fn MmMapLockedPagesSpecifyCache(
    mdl: PMDL,
    mode: KPROCESSOR_MODE,
    _cache: MEMORY_CACHING_TYPE,
    _requested: PVOID,
    _bug_check: ULONG,
    _priority: ULONG,
) -> PVOID {
    check_irql("MmMapLockedPagesSpecifyCache", DISPATCH);
    let mut k = kernel();
    let Some(pages) = k.mdls.get(&(mdl as usize)).map(|m| m.pages) else {
        k.violate(
            "MDL",
            format!("MmMapLockedPagesSpecifyCache of {mdl:p}, which is not an MDL"),
        );
        return core::ptr::null_mut();
    };
    if i32::from(mode) != _MODE::KernelMode {
        k.violate(
            "MDL",
            "MmMapLockedPagesSpecifyCache(UserMode) is not simulated".into(),
        );
        return core::ptr::null_mut();
    }
    // SAFETY: a live MDL.
    let flags = unsafe { (*mdl).MdlFlags } as u32;
    if flags & (MDL_PAGES_LOCKED | MDL_SOURCE_IS_NONPAGED_POOL) == 0 {
        k.violate(
            "MDL",
            "MmMapLockedPagesSpecifyCache of an MDL whose pages are not locked".into(),
        );
        return core::ptr::null_mut();
    }
    // SAFETY: the PFN array follows the header.
    let pfns: Vec<(u32, u64)> = (0..pages)
        .map(|i| unpfn(unsafe { *mdl.add(1).cast::<PFN_NUMBER>().add(i) }))
        .collect();
    if pfns.iter().any(|p| !k.backings.contains_key(&p.0)) {
        k.violate(
            "MDL",
            "MmMapLockedPagesSpecifyCache: a PFN of the MDL names no physical page".into(),
        );
        return core::ptr::null_mut();
    }
    // SAFETY: every backing exists (checked above).
    let Some(base) = (unsafe { kernel::map_pages(&k, &pfns) }) else {
        return core::ptr::null_mut();
    };
    k.regions.insert(
        base,
        Region {
            len: pages * PAGE,
            pages: pfns,
            kind: RegionKind::Locked { mdl: mdl as usize },
        },
    );
    // SAFETY: a live MDL; its byte offset is within the first page.
    (base + unsafe { (*mdl).ByteOffset } as usize) as PVOID
}

pub unsafe fn MmUnmapLockedPages(base: PVOID, mdl: PMDL) {
    check_irql("MmUnmapLockedPages", DISPATCH);
    let mut k = kernel();
    let start = base as usize & !(PAGE - 1);
    match k.regions.get(&start).map(|r| r.kind) {
        Some(RegionKind::Locked { mdl: mapped }) if mapped == mdl as usize => {
            let region = k.regions.remove(&start).expect("present");
            // SAFETY: the mapping made by MmMapLockedPagesSpecifyCache.
            let _ = unsafe { rustix::mm::munmap(start as *mut _, region.len) };
        }
        _ => k.violate(
            "MDL",
            format!("MmUnmapLockedPages of {base:p}, which is no mapping of that MDL"),
        ),
    }
}

pub unsafe fn ZwCreateSection(
    handle: *mut HANDLE,
    _access: ACCESS_MASK,
    attributes: *mut OBJECT_ATTRIBUTES,
    size: PLARGE_INTEGER,
    _protection: ULONG,
    allocation: ULONG,
    file: HANDLE,
) -> NTSTATUS {
    check_irql("ZwCreateSection", PASSIVE);
    // SAFETY: the caller's arguments.
    let (bytes, kernel_handle) = unsafe {
        (
            (*size).QuadPart as usize,
            !attributes.is_null() && (*attributes).Attributes & OBJ_KERNEL_HANDLE != 0,
        )
    };
    let mut k = kernel();
    if !file.is_null() || allocation & SEC_COMMIT == 0 {
        k.violate(
            "Section",
            "only pagefile-backed SEC_COMMIT sections are simulated".into(),
        );
        return STATUS_INVALID_PARAMETER;
    }
    if !kernel_handle {
        k.violate(
            "Handle",
            "ZwCreateSection without OBJ_KERNEL_HANDLE puts the handle in the caller's process"
                .into(),
        );
    }
    let Ok(backing) = k.backing(bytes.div_ceil(PAGE) * PAGE, true) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let object = k.insert(Object::Section {
        backing,
        bytes,
        refs: 1,
    });
    let h = k.id();
    k.kernel_handles.insert(h, object);
    // SAFETY: the caller's out-parameter.
    unsafe { *handle = h as HANDLE };
    STATUS_SUCCESS
}

pub unsafe fn MmMapViewInSystemSpace(
    section: PVOID,
    base: *mut PVOID,
    view_size: *mut SIZE_T,
) -> NTSTATUS {
    check_irql("MmMapViewInSystemSpace", PASSIVE);
    let mut k = kernel();
    let Some(&Object::Section { backing, bytes, .. }) = k.objects.get(&(section as u64)) else {
        k.violate(
            "Reference",
            format!("MmMapViewInSystemSpace of {section:p}, which is no referenced section"),
        );
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the caller's in/out-parameter.
    let wanted = unsafe { *view_size } as usize;
    let len = if wanted == 0 {
        bytes
    } else {
        wanted.min(bytes)
    }
    .div_ceil(PAGE)
        * PAGE;
    let pages: Vec<(u32, u64)> = (0..(len / PAGE) as u64).map(|p| (backing, p)).collect();
    // SAFETY: the section's memfd has these pages.
    let Some(address) = (unsafe { kernel::map_pages(&k, &pages) }) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    k.reference(section as u64);
    k.regions.insert(
        address,
        Region {
            len,
            pages,
            kind: RegionKind::View {
                section: section as u64,
            },
        },
    );
    // SAFETY: the caller's out-parameters.
    unsafe {
        *base = address as PVOID;
        *view_size = len as SIZE_T;
    }
    STATUS_SUCCESS
}

pub unsafe fn MmUnmapViewInSystemSpace(base: PVOID) -> NTSTATUS {
    check_irql("MmUnmapViewInSystemSpace", PASSIVE);
    let mut k = kernel();
    match k.regions.get(&(base as usize)).map(|r| r.kind) {
        Some(RegionKind::View { section }) => {
            let region = k.regions.remove(&(base as usize)).expect("present");
            // SAFETY: the view made by MmMapViewInSystemSpace.
            let _ = unsafe { rustix::mm::munmap(base, region.len) };
            k.dereference(section, "MmUnmapViewInSystemSpace");
            STATUS_SUCCESS
        }
        _ => {
            k.violate(
                "Section",
                format!("MmUnmapViewInSystemSpace of {base:p}, which is no view"),
            );
            STATUS_INVALID_PARAMETER
        }
    }
}

pub unsafe fn ObReferenceObjectByHandle(
    handle: HANDLE,
    _access: ACCESS_MASK,
    object_type: POBJECT_TYPE,
    mode: KPROCESSOR_MODE,
    object: *mut PVOID,
    _information: PVOID,
) -> NTSTATUS {
    check_irql("ObReferenceObjectByHandle", PASSIVE);
    let mut k = kernel();
    let target = if i32::from(mode) == _MODE::KernelMode {
        k.kernel_handles.get(&(handle as u64)).copied()
    } else {
        // A user handle is looked up in the current process's table: a handle of another
        // process (or a number the caller made up) is no handle here.
        let process = kernel::PROCESS.with(std::cell::Cell::get);
        if process.is_none() {
            k.violate("Handle", "ObReferenceObjectByHandle(UserMode) outside any user process's context (a queue callback or a system thread): the handle would be looked up in an arbitrary process".into());
        }
        k.user_handles
            .get(&(handle as i32))
            .filter(|h| Some(h.process) == process)
            .map(|h| h.object)
    };
    let Some(target) = target else {
        return STATUS_INVALID_HANDLE;
    };
    if object_type == crate::types::event_object_type()
        && !matches!(k.objects.get(&target), Some(Object::Event { .. }))
    {
        return STATUS_OBJECT_TYPE_MISMATCH;
    }
    if matches!(k.objects.get(&target), Some(Object::Thread { .. })) && k.fail_thread_references > 0
    {
        k.fail_thread_references -= 1;
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    k.reference(target);
    // SAFETY: the caller's out-parameter.
    unsafe { *object = target as PVOID };
    STATUS_SUCCESS
}

/// Sets an event (here: writes 1 to its eventfd, which wakes whoever polls it). Up to
/// DISPATCH_LEVEL with `Wait` FALSE.
pub unsafe fn KeSetEvent(event: PRKEVENT, _increment: KPRIORITY, wait: BOOLEAN) -> LONG {
    check_irql("KeSetEvent", DISPATCH);
    let k = kernel();
    if wait != 0 {
        drop(k);
        violate(
            "IRQL",
            "KeSetEvent with Wait TRUE: the caller must wait next, which is not simulated".into(),
        );
        return 0;
    }
    let fd = match k.objects.get(&(event as u64)) {
        Some(Object::Event { fd, .. }) => fd.clone(),
        _ => {
            drop(k);
            violate(
                "Reference",
                format!("KeSetEvent of {event:p}, which is no referenced event"),
            );
            return 0;
        }
    };
    drop(k);
    // Non-blocking: a counter that is somehow full is set already.
    let _ = rustix::io::write(&*fd, &1u64.to_ne_bytes());
    0
}

pub unsafe fn ObfDereferenceObject(object: PVOID) -> isize {
    check_irql("ObDereferenceObject", DISPATCH);
    kernel().dereference(object as u64, "ObDereferenceObject");
    0
}

pub unsafe fn ZwClose(handle: HANDLE) -> NTSTATUS {
    check_irql("ZwClose", PASSIVE);
    let mut k = kernel();
    if let Some(object) = k.kernel_handles.remove(&(handle as u64)) {
        k.dereference(object, "ZwClose");
        return STATUS_SUCCESS;
    }
    if k.user_handles.contains_key(&(handle as i32)) {
        k.violate("Handle", format!("ZwClose of the user-mode handle {handle:p}: ZwClose closes kernel handles; ObCloseHandle(handle, UserMode) closes this one"));
    } else {
        k.violate(
            "Handle",
            format!("ZwClose of {handle:p}, which is no open handle (closed twice?)"),
        );
    }
    STATUS_INVALID_HANDLE
}

pub unsafe fn ObCloseHandle(handle: HANDLE, mode: KPROCESSOR_MODE) -> NTSTATUS {
    check_irql("ObCloseHandle", PASSIVE);
    let mut k = kernel();
    let user = i32::from(mode) == _MODE::UserMode;
    if user {
        let process = kernel::PROCESS.with(std::cell::Cell::get);
        match k.user_handles.get(&(handle as i32)) {
            Some(h) if Some(h.process) == process => {
                let h = k.user_handles.remove(&(handle as i32)).expect("present");
                k.dereference(h.object, "ObCloseHandle");
                return STATUS_SUCCESS;
            }
            Some(_) => k.violate(
                "Handle",
                "ObCloseHandle(UserMode) outside the handle's process".into(),
            ),
            None if k.kernel_handles.contains_key(&(handle as u64)) => k.violate(
                "Handle",
                "ObCloseHandle(UserMode) of a kernel handle: KernelMode closes it".into(),
            ),
            None => k.violate(
                "Handle",
                format!("ObCloseHandle of {handle:p}, which is no open handle"),
            ),
        }
    } else if let Some(object) = k.kernel_handles.remove(&(handle as u64)) {
        k.dereference(object, "ObCloseHandle");
        return STATUS_SUCCESS;
    } else if k.user_handles.contains_key(&(handle as i32)) {
        k.violate(
            "Handle",
            "ObCloseHandle(KernelMode) of a user-mode handle: UserMode closes it".into(),
        );
    } else {
        k.violate(
            "Handle",
            format!("ObCloseHandle of {handle:p}, which is no open handle"),
        );
    }
    STATUS_INVALID_HANDLE
}

pub unsafe fn ObOpenObjectByPointer(
    object: PVOID,
    attributes: ULONG,
    _access_state: PVOID,
    access: ACCESS_MASK,
    _object_type: PVOID,
    _mode: KPROCESSOR_MODE,
    handle: *mut HANDLE,
) -> NTSTATUS {
    check_irql("ObOpenObjectByPointer", PASSIVE);
    let mut k = kernel();
    let Some(&Object::Section { backing, .. }) = k.objects.get(&(object as u64)) else {
        k.violate(
            "Reference",
            format!("ObOpenObjectByPointer of {object:p}, which is no referenced section"),
        );
        return STATUS_INVALID_PARAMETER;
    };
    if attributes & OBJ_KERNEL_HANDLE != 0 {
        let h = k.id();
        k.kernel_handles.insert(h, object as u64);
        k.reference(object as u64);
        // SAFETY: the caller's out-parameter.
        unsafe { *handle = h as HANDLE };
        return STATUS_SUCCESS;
    }
    let Some(process) = kernel::PROCESS.with(std::cell::Cell::get) else {
        k.violate("Handle", "ObOpenObjectByPointer for a user handle outside any user process's context (a queue callback or a system thread)".into());
        return STATUS_INVALID_PARAMETER;
    };
    let Some(memory) = k.backing_fd(backing) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let Ok(fd) = kernel::user_descriptor(&memory, access & SECTION_MAP_WRITE != 0) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let number = fd.as_raw_fd();
    k.user_handles.insert(
        number,
        UserHandle {
            fd,
            object: object as u64,
            process,
        },
    );
    k.reference(object as u64);
    // SAFETY: the caller's out-parameter.
    unsafe { *handle = number as usize as HANDLE };
    STATUS_SUCCESS
}

struct SendPtr(PVOID);
// SAFETY: the start context is the driver's to share with its thread.
unsafe impl Send for SendPtr {}

pub unsafe fn PsCreateSystemThread(
    handle: *mut HANDLE,
    _access: ULONG,
    attributes: *mut OBJECT_ATTRIBUTES,
    process: HANDLE,
    _client_id: PVOID,
    start: PKSTART_ROUTINE,
    context: PVOID,
) -> NTSTATUS {
    check_irql("PsCreateSystemThread", PASSIVE);
    // SAFETY: the caller's attributes.
    let kernel_handle =
        !attributes.is_null() && unsafe { (*attributes).Attributes } & OBJ_KERNEL_HANDLE != 0;
    let Some(start) = start else {
        violate(
            "Thread",
            "PsCreateSystemThread without a start routine".into(),
        );
        return STATUS_INVALID_PARAMETER;
    };
    if !process.is_null() {
        violate(
            "Thread",
            "only threads of the system process are simulated".into(),
        );
        return STATUS_INVALID_PARAMETER;
    }
    let record = Arc::new(ThreadRecord {
        context: context as usize,
        ended: Mutex::new(false),
        ended_cv: Condvar::new(),
        waited: Default::default(),
    });
    let mut k = kernel();
    if !kernel_handle {
        k.violate(
            "Handle",
            "PsCreateSystemThread without OBJ_KERNEL_HANDLE".into(),
        );
    }
    let object = k.insert(Object::Thread {
        record: record.clone(),
        refs: 1,
    });
    let h = k.id();
    k.kernel_handles.insert(h, object);
    // Threads that ended and were waited for are checked no more (the device's removal
    // looks for ended threads nobody waited for): let them go, so that a client starting
    // and stopping the generator for ever does not grow the kernel's tables.
    k.threads.retain(|t| {
        // Relaxed: see KeWaitForSingleObject.
        !(*t.ended.lock().unwrap_or_else(|e| e.into_inner()) && t.waited.load(Ordering::Relaxed))
    });
    k.joins.retain(|join| !join.is_finished());
    k.threads.push(record.clone());
    k.running_threads += 1;
    let context = SendPtr(context);
    let join = kernel::spawn_in_kernel(move || {
        let context = context;
        kernel::SYSTEM_THREAD.with(|s| s.set(true));
        kernel::schedule_as_system_thread();
        set_irql(0);
        // SAFETY: the driver's start routine and context.
        unsafe { start(context.0) };
        if irql() != 0 {
            violate(
                "IRQL",
                format!(
                    "a system thread's start routine returned at IRQL {}",
                    irql()
                ),
            );
        }
        kernel().running_threads -= 1;
        *record.ended.lock().unwrap_or_else(|e| e.into_inner()) = true;
        record.ended_cv.notify_all();
    });
    k.joins.push(join);
    // SAFETY: the caller's out-parameter.
    unsafe { *handle = h as HANDLE };
    STATUS_SUCCESS
}

/// Ends the calling system thread: here the thread ends when its start routine returns,
/// which the driver's does right after this call.
pub unsafe fn PsTerminateSystemThread(_status: NTSTATUS) -> NTSTATUS {
    check_irql("PsTerminateSystemThread", PASSIVE);
    if !kernel::SYSTEM_THREAD.with(std::cell::Cell::get) {
        violate(
            "Thread",
            "PsTerminateSystemThread on a thread that is not a system thread".into(),
        );
    }
    STATUS_SUCCESS
}

pub unsafe fn ZwWaitForSingleObject(
    handle: HANDLE,
    _alertable: BOOLEAN,
    timeout: PLARGE_INTEGER,
) -> NTSTATUS {
    check_irql("ZwWaitForSingleObject", PASSIVE);
    let object = kernel().kernel_handles.get(&(handle as u64)).copied();
    let Some(object) = object else {
        violate(
            "Handle",
            format!("ZwWaitForSingleObject on {handle:p}, which is no kernel handle"),
        );
        return STATUS_INVALID_HANDLE;
    };
    // SAFETY: the caller's timeout, passed on; the object is a thread or reported as not one.
    unsafe { wait_thread(object as PVOID, timeout, "ZwWaitForSingleObject") }
}

pub unsafe fn KeWaitForSingleObject(
    object: PVOID,
    _reason: KWAIT_REASON,
    _mode: KPROCESSOR_MODE,
    _alertable: BOOLEAN,
    timeout: PLARGE_INTEGER,
) -> NTSTATUS {
    // A zero timeout may be used at DISPATCH_LEVEL; any other wait at APC_LEVEL at most.
    // SAFETY: the caller's timeout, if any.
    let zero = !timeout.is_null() && unsafe { (*timeout).QuadPart } == 0;
    check_irql("KeWaitForSingleObject", if zero { DISPATCH } else { APC });
    // SAFETY: the caller's timeout.
    unsafe { wait_thread(object, timeout, "KeWaitForSingleObject") }
}

unsafe fn wait_thread(object: PVOID, timeout: PLARGE_INTEGER, function: &str) -> NTSTATUS {
    // SAFETY: the caller's timeout, if any.
    let zero = !timeout.is_null() && unsafe { (*timeout).QuadPart } == 0;
    let record = match kernel().objects.get(&(object as u64)) {
        Some(Object::Thread { record, .. }) => record.clone(),
        _ => {
            violate(
                "Reference",
                format!("{function} on {object:p}, which is no referenced thread object"),
            );
            return STATUS_INVALID_PARAMETER;
        }
    };
    let mut ended = record.ended.lock().unwrap_or_else(|e| e.into_inner());
    while !*ended {
        if zero {
            return 0x102; // STATUS_TIMEOUT
        }
        ended = record
            .ended_cv
            .wait(ended)
            .unwrap_or_else(|e| e.into_inner());
    }
    // Relaxed: read under the kernel lock at unload, after every thread was joined.
    record.waited.store(true, Ordering::Relaxed);
    STATUS_SUCCESS
}

/// The current process's id: the user process's in its context (a client's real process id
/// when the socket front end runs the driver), the System process's (4) anywhere else.
pub unsafe fn PsGetCurrentProcessId() -> HANDLE {
    check_irql("PsGetCurrentProcessId", DISPATCH);
    match kernel::PROCESS.with(std::cell::Cell::get) {
        Some(process) => process as usize as HANDLE,
        None => 4 as HANDLE,
    }
}
