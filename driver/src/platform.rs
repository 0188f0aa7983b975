//! `ringmap_core::device::Platform` for the kernel: every method is one or two WDF/WDM calls.

use core::ffi::c_void;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, Ordering};

use ringmap_core::abi::{MAX_GENERATOR_PRODUCERS, QueryReply, Status, Wire};
use ringmap_core::device::{HandleId, NewMapping, Platform, ViewHandles};
use wdk_sys::ntddk::{
    KeDelayExecutionThread, KeGetCurrentIrql, KeLowerIrql, KeQueryPerformanceCounter, KeSetEvent,
    KeStallExecutionProcessor, KeWaitForSingleObject, KfRaiseIrql, ObCloseHandle,
    ObOpenObjectByPointer, ObReferenceObjectByHandle, ObfDereferenceObject, PsCreateSystemThread,
    PsGetCurrentProcessId, PsTerminateSystemThread, ZwClose, ZwWaitForSingleObject,
};
use wdk_sys::{
    _KWAIT_REASON, _MODE, ACCESS_MASK, DISPATCH_LEVEL, EVENT_MODIFY_STATE, ExEventObjectType,
    HANDLE, KIRQL, KPROCESSOR_MODE, LARGE_INTEGER, NTSTATUS, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES,
    PVOID, SECTION_MAP_READ, SECTION_MAP_WRITE, SECTION_QUERY, STATUS_CANCELLED, STATUS_SUCCESS,
    SYNCHRONIZE, ULONG, WDF_NO_OBJECT_ATTRIBUTES, WDFDEVICE, WDFREQUEST, WDFSPINLOCK,
    call_unsafe_wdf_function_binding,
};

use crate::memory::{ConsumerPageSection, Region, RingMemory};
use crate::requests::{complete, output_buffer};

/// A pending QUERY: the WDF request, made cancelable by `WdfRequestMarkCancelableEx`.
pub struct PendingRequest(pub WDFREQUEST);

// SAFETY: a WDFREQUEST handle may be completed from any thread (WDF requests are not tied to
// the thread that received them); the core moves it between the requester and producers.
unsafe impl Send for PendingRequest {}

/// An event object of a client's, referenced by SET_EVENT; the reference goes with it
/// (`ObDereferenceObject`, allowed up to DISPATCH_LEVEL).
pub struct EventObject(PVOID);

// SAFETY: a referenced object pointer, usable from any thread and any process context.
unsafe impl Send for EventObject {}

impl Drop for EventObject {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `reference_event`, dropped once.
        unsafe { ObfDereferenceObject(self.0) };
    }
}

/// One generator thread: the referenced thread object (or, if referencing it failed, its
/// kernel handle, kept open to wait on), and what its start routine needs.
struct Producer {
    thread: AtomicPtr<c_void>,
    handle: AtomicPtr<c_void>,
    device: WDFDEVICE,
    index: u32,
}

/// The kernel host of `ringmap_core::device::Device`.
pub struct KernelPlatform {
    /// The device lock (`WdfSpinLockAcquire` raises to DISPATCH_LEVEL). Its parent is the
    /// driver object; deleted in `drop`.
    lock: WDFSPINLOCK,
    /// The section objects of the producer page and the data (referenced by `RingMemory`,
    /// which outlives the platform).
    sections: [PVOID; 2],
    /// Performance counter ticks per second.
    frequency: u64,
    producers: [Producer; MAX_GENERATOR_PRODUCERS as usize],
}

// SAFETY: the raw handles are WDF/Ob objects usable from any thread; the mutable state
// (thread objects) is atomic; the lock gives `with_lock` its mutual exclusion.
unsafe impl Sync for KernelPlatform {}
// SAFETY: as for `Sync`.
unsafe impl Send for KernelPlatform {}

impl KernelPlatform {
    /// A platform for `device`, whose ring lives in `memory`. PASSIVE_LEVEL.
    pub fn new(device: WDFDEVICE, memory: &RingMemory) -> Result<KernelPlatform, NTSTATUS> {
        let mut lock: WDFSPINLOCK = null_mut();
        // SAFETY: no attributes: the driver object is the parent (so the lock outlives the
        // device's own cleanup; deleted in `drop`); `lock` is an out-parameter.
        let status = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfSpinLockCreate,
                WDF_NO_OBJECT_ATTRIBUTES,
                &raw mut lock
            )
        };
        if !wdk::nt_success(status) {
            return Err(status);
        }
        let mut frequency = LARGE_INTEGER::default();
        // SAFETY: out-parameter; any IRQL.
        let _ = unsafe { KeQueryPerformanceCounter(&raw mut frequency) };
        Ok(KernelPlatform {
            lock,
            sections: [
                memory.section(Region::ProducerPage),
                memory.section(Region::Data),
            ],
            // SAFETY: `QuadPart` covers the whole union.
            frequency: unsafe { frequency.QuadPart }.max(1) as u64,
            producers: core::array::from_fn(|index| Producer {
                thread: AtomicPtr::new(null_mut()),
                handle: AtomicPtr::new(null_mut()),
                device,
                index: index as u32,
            }),
        })
    }

    /// Opens a handle to `section` in the current process (the caller's: MAP runs in
    /// EvtIoInCallerContext), with `access` only.
    fn open_in_caller(section: PVOID, access: u32) -> Result<u64, Status> {
        let mut handle: HANDLE = null_mut();
        // SAFETY: a referenced section object; HandleAttributes 0 (no OBJ_KERNEL_HANDLE) puts
        // the handle in the current process's table, as eBPF for Windows does for its rings.
        let status = unsafe {
            ObOpenObjectByPointer(
                section,
                0,
                null_mut(),
                access as ACCESS_MASK,
                null_mut(),
                _MODE::KernelMode as KPROCESSOR_MODE,
                &raw mut handle,
            )
        };
        if wdk::nt_success(status) {
            Ok(handle as usize as u64)
        } else {
            Err(Status::InsufficientResources)
        }
    }
}

impl Drop for KernelPlatform {
    fn drop(&mut self) {
        // SAFETY: the lock was created in `new`, nothing uses it any more (the device is being
        // dropped), and its parent is the driver, so it was not deleted with the device.
        unsafe { call_unsafe_wdf_function_binding!(WdfObjectDelete, self.lock.cast()) };
    }
}

/// Closes a handle opened by `open_in_caller` (MAP failed after opening it). A handle in the
/// caller's (user-mode) handle table is closed with `ObCloseHandle(.., UserMode)`: `ZwClose`
/// is for kernel handles.
fn close_in_caller(handle: u64) {
    // SAFETY: a handle of the current process that we opened in this same request.
    let _ = unsafe {
        ObCloseHandle(
            handle as usize as HANDLE,
            _MODE::UserMode as KPROCESSOR_MODE,
        )
    };
}

/// The generator thread's start routine.
unsafe extern "C" fn producer_main(context: PVOID) {
    // SAFETY: `context` is a `Producer` of the platform that started this thread; the device
    // joins its generator threads before it is dropped.
    let producer = unsafe { &*context.cast::<Producer>() };
    // SAFETY: the device context is initialised while any generator thread runs.
    if let Some(ring) = unsafe { crate::device::ring(producer.device) } {
        ring.device.run_producer(producer.index);
    }
    // SAFETY: ends this system thread (PASSIVE_LEVEL, our own thread).
    let _ = unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
}

// SAFETY: `with_lock` runs its closure under a WDF spin lock, at DISPATCH_LEVEL.
unsafe impl Platform for KernelPlatform {
    type PendingQuery = PendingRequest;
    type ConsumerPage = ConsumerPageSection;
    type Event = EventObject;

    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: a valid lock; released below (panics abort, so no unwinding past it).
        unsafe { call_unsafe_wdf_function_binding!(WdfSpinLockAcquire, self.lock) };
        let result = f();
        // SAFETY: acquired above by this thread.
        unsafe { call_unsafe_wdf_function_binding!(WdfSpinLockRelease, self.lock) };
        result
    }

    fn take_query(&self, query: PendingRequest) -> Option<PendingRequest> {
        // Under the device lock (DISPATCH_LEVEL; Unmark is allowed up to it), the lock
        // EvtRequestCancel takes: if the cancel routine was invoked it has not completed the
        // request yet (it waits for this lock, then finds nothing pending and completes it).
        // SAFETY: a request we marked cancelable and that nobody has completed.
        let status =
            unsafe { call_unsafe_wdf_function_binding!(WdfRequestUnmarkCancelable, query.0) };
        (status != STATUS_CANCELLED).then_some(query)
    }

    fn complete_query(&self, query: PendingRequest, reply: Result<QueryReply, Status>) {
        // Not cancelable any more (`take_query`), or the cancel path's: ours to complete.
        let request = query.0;
        let (status, information) = match reply {
            // SAFETY: the request is ours and not completed.
            Ok(reply) => match unsafe { output_buffer(request, QueryReply::SIZE as usize) } {
                Some(output) => match reply.write_to(output) {
                    Ok(written) => (STATUS_SUCCESS, written),
                    Err(status) => (status.ntstatus() as NTSTATUS, 0),
                },
                None => (Status::BufferTooSmall.ntstatus() as NTSTATUS, 0),
            },
            Err(status) => (status.ntstatus() as NTSTATUS, 0),
        };
        // SAFETY: no longer cancelable, so nobody else completes it.
        unsafe { complete(request, status, information) };
    }

    fn reference_event(&self, _handle: HandleId, event_handle: u64) -> Result<EventObject, Status> {
        let mut object: PVOID = null_mut();
        // SAFETY: SET_EVENT runs in the caller's context (EvtIoInCallerContext), so the handle
        // is looked up in the caller's handle table; UserMode checks the handle's access
        // (EVENT_MODIFY_STATE) and the object type against what the caller may do;
        // `ExEventObjectType` is the kernel's exported pointer to the event object type.
        let status = unsafe {
            ObReferenceObjectByHandle(
                event_handle as usize as HANDLE,
                EVENT_MODIFY_STATE as ACCESS_MASK,
                *ExEventObjectType,
                _MODE::UserMode as KPROCESSOR_MODE,
                &raw mut object,
                null_mut(),
            )
        };
        if wdk::nt_success(status) {
            Ok(EventObject(object))
        } else {
            Err(Status::InvalidParameter)
        }
    }

    fn signal_event(&self, event: &EventObject) {
        // Under the device lock (DISPATCH_LEVEL): KeSetEvent with Wait FALSE is allowed there.
        // Increment 0 (IO_NO_INCREMENT): the waiter gets no priority boost.
        // SAFETY: a referenced event object (the device lets go of it only outside the lock,
        // after taking it away under it).
        let _ = unsafe { KeSetEvent(event.0.cast(), 0, 0) };
    }

    fn map_view(&self, _handle: HandleId) -> Result<NewMapping<ConsumerPageSection>, Status> {
        let page = ConsumerPageSection::new().map_err(|_| Status::InsufficientResources)?;
        let read = SECTION_MAP_READ | SECTION_QUERY;
        let consumer_page = Self::open_in_caller(page.section(), read | SECTION_MAP_WRITE)?;
        let producer_page =
            match Self::open_in_caller(self.sections[Region::ProducerPage as usize], read) {
                Ok(handle) => handle,
                Err(status) => {
                    close_in_caller(consumer_page);
                    return Err(status);
                }
            };
        let data = match Self::open_in_caller(self.sections[Region::Data as usize], read) {
            Ok(handle) => handle,
            Err(status) => {
                close_in_caller(producer_page);
                close_in_caller(consumer_page);
                return Err(status);
            }
        };
        Ok(NewMapping {
            handles: ViewHandles {
                consumer_page,
                producer_page,
                data,
            },
            page_address: page.address(),
            page,
            // SAFETY: no arguments; MAP runs in the caller's context (EvtIoInCallerContext),
            // so this is the mapping process's id.
            process_id: unsafe { PsGetCurrentProcessId() } as usize as u64,
        })
    }

    fn is_privileged(&self, _handle: HandleId) -> bool {
        // The device's SDDL admits only SYSTEM and Administrators: every handle is elevated.
        true
    }

    fn unmap_view(&self, _handle: HandleId, page: ConsumerPageSection) {
        // The device no longer reads the page: the kernel's side of it goes. The client's
        // views and handles belong to its process (UnmapViewOfFile/CloseHandle in the client
        // library, or process exit); whatever it writes there reaches nobody.
        drop(page);
    }

    fn now_ns(&self) -> u64 {
        // SAFETY: no frequency wanted (null is allowed); any IRQL.
        let ticks = unsafe { KeQueryPerformanceCounter(null_mut()) };
        // SAFETY: `QuadPart` covers the whole union.
        let ticks = unsafe { ticks.QuadPart } as u64;
        (u128::from(ticks) * 1_000_000_000 / u128::from(self.frequency)) as u64
    }

    fn start_producers(&self, producers: u32) -> Result<(), Status> {
        for producer in self.producers.iter().take(producers as usize) {
            let mut handle: HANDLE = null_mut();
            let mut attributes = OBJECT_ATTRIBUTES {
                Length: crate::wdf_size::<OBJECT_ATTRIBUTES>(),
                Attributes: OBJ_KERNEL_HANDLE as ULONG,
                ..OBJECT_ATTRIBUTES::default()
            };
            // SAFETY: a thread in the system process (ProcessHandle null) with a kernel handle
            // (GENERATE may run in the caller's process); `producer` outlives the thread
            // (joined before the platform is dropped).
            let status = unsafe {
                PsCreateSystemThread(
                    &raw mut handle,
                    SYNCHRONIZE as ULONG,
                    &raw mut attributes,
                    null_mut(),
                    null_mut(),
                    Some(producer_main),
                    core::ptr::from_ref(producer).cast_mut().cast(),
                )
            };
            if !wdk::nt_success(status) {
                return Err(Status::InsufficientResources);
            }
            let mut thread: PVOID = null_mut();
            // SAFETY: our kernel handle to the thread just created; the reference is dropped
            // in `join_producers`.
            let status = unsafe {
                ObReferenceObjectByHandle(
                    handle,
                    SYNCHRONIZE as ACCESS_MASK,
                    null_mut(),
                    _MODE::KernelMode as KPROCESSOR_MODE,
                    &raw mut thread,
                    null_mut(),
                )
            };
            if !wdk::nt_success(status) {
                // The thread runs and uses `producer`: keep its handle, so that
                // `join_producers` (which the core calls on this failure) waits for it.
                // Release: pairs with the Acquire swap in `join_producers`.
                producer.handle.store(handle, Ordering::Release);
                return Err(Status::InsufficientResources);
            }
            // SAFETY: our kernel handle; the thread runs on without it (the reference above
            // is what `join_producers` waits on).
            let _ = unsafe { ZwClose(handle) };
            // Release: pairs with the Acquire swap in `join_producers`, which then sees the
            // thread object fully referenced.
            producer.thread.store(thread, Ordering::Release);
        }
        Ok(())
    }

    fn join_producers(&self) {
        for producer in &self.producers {
            // Acquire: pairs with the Release store in `start_producers`.
            let handle = producer.handle.swap(null_mut(), Ordering::Acquire);
            if !handle.is_null() {
                // SAFETY: our kernel handle to a thread whose reference failed; an infinite,
                // non-alertable wait at PASSIVE_LEVEL; then the handle is closed.
                unsafe {
                    let _ = ZwWaitForSingleObject(handle, 0, null_mut());
                    let _ = ZwClose(handle);
                }
            }
            // Acquire: pairs with the Release store in `start_producers`.
            let thread = producer.thread.swap(null_mut(), Ordering::Acquire);
            if thread.is_null() {
                continue;
            }
            // SAFETY: a referenced thread object; an infinite wait at PASSIVE_LEVEL (GENERATE
            // stop and device cleanup run there); the generator threads never wait for us.
            let _ = unsafe {
                KeWaitForSingleObject(
                    thread,
                    _KWAIT_REASON::Executive,
                    _MODE::KernelMode as KPROCESSOR_MODE,
                    0,
                    null_mut(),
                )
            };
            // SAFETY: the reference taken in `start_producers`.
            unsafe { ObfDereferenceObject(thread) };
        }
    }

    fn sleep_ns(&self, ns: u64) {
        // Negative = relative, in 100 ns units; at least one unit.
        let mut interval = LARGE_INTEGER {
            QuadPart: -((ns / 100).clamp(1, i64::MAX as u64) as i64),
        };
        // SAFETY: a generator thread at PASSIVE_LEVEL (outside `as_producer`).
        let _ = unsafe {
            KeDelayExecutionThread(_MODE::KernelMode as KPROCESSOR_MODE, 0, &raw mut interval)
        };
    }

    /// Spins: a producer waits for an earlier one only when their claims meet in the offer
    /// table (`ringmap_core`'s `publish` module); the producer waited for runs on another
    /// processor at DISPATCH_LEVEL and cannot be preempted there, so it publishes within
    /// nanoseconds. After many spins, a 1 µs stall between checks (a hypervisor may have
    /// descheduled that processor).
    fn relax(&self, spins: u32) {
        if spins < 64 {
            core::hint::spin_loop();
        } else {
            // SAFETY: a busy wait of one microsecond, allowed at any IRQL.
            unsafe { KeStallExecutionProcessor(1) };
        }
    }

    fn as_producer<R>(&self, f: impl FnOnce() -> R) -> R {
        // Producers reserve at DISPATCH_LEVEL (design section 3). Requests arrive at or below
        // it, so raising to DISPATCH_LEVEL never lowers the IRQL.
        // SAFETY: reads the IRQL.
        let current: KIRQL = unsafe { KeGetCurrentIrql() };
        if current >= DISPATCH_LEVEL as KIRQL {
            return f();
        }
        // SAFETY: raises from below DISPATCH_LEVEL; lowered back right after `f`.
        let old = unsafe { KfRaiseIrql(DISPATCH_LEVEL as KIRQL) };
        let result = f();
        // SAFETY: restores the IRQL saved by KfRaiseIrql above.
        unsafe { KeLowerIrql(old) };
        result
    }
}
