//! The WDF functions the driver calls through `call_unsafe_wdf_function_binding!`, KMDF 1.33
//! semantics for what ringmap uses. Maximum IRQLs are those of Microsoft's documentation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crate::kernel::{
    Cancel, Device, DeviceInit, Object, SpinLock, check_irql, irql, kernel, set_irql, set_spinning,
    violate,
};
use crate::types::*;

const PASSIVE: u32 = PASSIVE_LEVEL;
const DISPATCH: u32 = DISPATCH_LEVEL;

pub unsafe fn WdfDriverCreate(
    _driver: PDRIVER_OBJECT,
    _registry_path: PCUNICODE_STRING,
    _attributes: PWDF_OBJECT_ATTRIBUTES,
    config: *mut WDF_DRIVER_CONFIG,
    driver: *mut WDFDRIVER,
) -> NTSTATUS {
    check_irql("WdfDriverCreate", PASSIVE);
    // SAFETY: the caller's config.
    let (add, unload) = unsafe { ((*config).EvtDriverDeviceAdd, (*config).EvtDriverUnload) };
    let mut k = kernel();
    let id = k.insert(Object::Driver { add, unload });
    k.driver = id;
    if !driver.is_null() {
        // SAFETY: the caller's out-parameter.
        unsafe { *driver = id as WDFDRIVER };
    }
    STATUS_SUCCESS
}

fn with_init<R>(
    init: PWDFDEVICE_INIT,
    function: &str,
    f: impl FnOnce(&mut DeviceInit) -> R,
) -> Option<R> {
    check_irql(function, PASSIVE);
    let mut k = kernel();
    match k.objects.get_mut(&(init as u64)) {
        Some(Object::DeviceInit(init)) => Some(f(init)),
        _ => {
            k.violate(
                "WDF",
                format!("{function}: {init:p} is no WDFDEVICE_INIT (used after WdfDeviceCreate?)"),
            );
            None
        }
    }
}

pub unsafe fn WdfDeviceInitAssignName(init: PWDFDEVICE_INIT, _name: PCUNICODE_STRING) -> NTSTATUS {
    with_init(init, "WdfDeviceInitAssignName", |init| init.named = true);
    STATUS_SUCCESS
}

pub unsafe fn WdfDeviceInitAssignSDDLString(
    init: PWDFDEVICE_INIT,
    _sddl: PCUNICODE_STRING,
) -> NTSTATUS {
    if with_init(init, "WdfDeviceInitAssignSDDLString", |init| init.named) == Some(false) {
        violate(
            "WDF",
            "WdfDeviceInitAssignSDDLString before WdfDeviceInitAssignName".into(),
        );
    }
    STATUS_SUCCESS
}

pub unsafe fn WdfDeviceInitSetDeviceType(init: PWDFDEVICE_INIT, _device_type: u32) {
    with_init(init, "WdfDeviceInitSetDeviceType", |_| ());
}

pub unsafe fn WdfDeviceInitSetCharacteristics(
    init: PWDFDEVICE_INIT,
    _characteristics: ULONG,
    _or_in: BOOLEAN,
) {
    with_init(init, "WdfDeviceInitSetCharacteristics", |_| ());
}

pub unsafe fn WdfDeviceInitSetFileObjectConfig(
    init: PWDFDEVICE_INIT,
    config: *mut WDF_FILEOBJECT_CONFIG,
    attributes: PWDF_OBJECT_ATTRIBUTES,
) {
    // SAFETY: the caller's config.
    let (cleanup, close) = unsafe { ((*config).EvtFileCleanup, (*config).EvtFileClose) };
    let context = if attributes.is_null() {
        (0, 0)
    } else {
        // SAFETY: the caller's attributes and their context type info, if any.
        unsafe {
            let info = (*attributes).ContextTypeInfo;
            if info.is_null() {
                (0, 0)
            } else {
                (info as usize, (*info).ContextSize)
            }
        }
    };
    with_init(init, "WdfDeviceInitSetFileObjectConfig", |init| {
        init.file_cleanup = cleanup;
        init.file_close = close;
        init.file_context = context;
    });
}

pub unsafe fn WdfDeviceInitSetIoInCallerContextCallback(
    init: PWDFDEVICE_INIT,
    callback: PFN_WDF_IO_IN_CALLER_CONTEXT,
) {
    with_init(init, "WdfDeviceInitSetIoInCallerContextCallback", |init| {
        init.in_caller_context = callback;
    });
}

pub unsafe fn WdfDeviceCreate(
    init: *mut PWDFDEVICE_INIT,
    attributes: PWDF_OBJECT_ATTRIBUTES,
    device: *mut WDFDEVICE,
) -> NTSTATUS {
    check_irql("WdfDeviceCreate", PASSIVE);
    let mut k = kernel();
    // SAFETY: the caller's in/out-parameter.
    let init_id = unsafe { *init } as u64;
    let Some(Object::DeviceInit(device_init)) = k.objects.remove(&init_id) else {
        k.violate("WDF", "WdfDeviceCreate without a WDFDEVICE_INIT".into());
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the caller's attributes and their context type info.
    let (cleanup, type_info) = unsafe {
        (
            (*attributes).EvtCleanupCallback,
            (*attributes).ContextTypeInfo,
        )
    };
    let size = if type_info.is_null() {
        0
    } else {
        // SAFETY: a context type info of the driver.
        unsafe { (*type_info).ContextSize }
    };
    // WDF aligns context memory to MEMORY_ALLOCATION_ALIGNMENT (16 bytes on x64), no more.
    let layout = std::alloc::Layout::from_size_align(size.max(1), 16).expect("a context layout");
    // SAFETY: a non-zero size; WDF zeroes context memory.
    let context = unsafe { std::alloc::alloc_zeroed(layout) };
    let id = k.insert(Object::Device(Device {
        init: device_init,
        context,
        context_layout: layout,
        context_type: type_info as usize,
        cleanup,
        queue: 0,
    }));
    k.devices.push(id);
    // SAFETY: the caller's out-parameters; WDF frees the init on success.
    unsafe {
        *init = core::ptr::null_mut();
        *device = id as WDFDEVICE;
    }
    STATUS_SUCCESS
}

pub unsafe fn WdfObjectGetTypedContextWorker(
    object: WDFOBJECT,
    type_info: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
) -> PVOID {
    check_irql("WdfObjectGetTypedContextWorker", DISPATCH);
    let mut k = kernel();
    match k.objects.get(&(object as u64)) {
        Some(Object::Device(device)) if device.context_type == type_info as usize => {
            device.context.cast()
        }
        Some(Object::File {
            context,
            context_type,
            ..
        }) if *context_type == type_info as usize => context.cast(),
        _ => {
            k.violate("WDF", format!("WdfObjectGetTypedContextWorker: {object:p} has no context of that type (deleted?)"));
            core::ptr::null_mut()
        }
    }
}

pub unsafe fn WdfDeviceOpenRegistryKey(
    _device: WDFDEVICE,
    _key_type: ULONG,
    _access: ULONG,
    _attributes: PWDF_OBJECT_ATTRIBUTES,
    key: *mut WDFKEY,
) -> NTSTATUS {
    check_irql("WdfDeviceOpenRegistryKey", PASSIVE);
    let id = kernel().insert(Object::Key);
    // SAFETY: the caller's out-parameter.
    unsafe { *key = id as WDFKEY };
    STATUS_SUCCESS
}

pub unsafe fn WdfRegistryQueryULong(
    key: WDFKEY,
    name: PCUNICODE_STRING,
    value: *mut ULONG,
) -> NTSTATUS {
    check_irql("WdfRegistryQueryULong", PASSIVE);
    // SAFETY: the caller's counted string.
    let name = unsafe {
        String::from_utf16_lossy(core::slice::from_raw_parts(
            (*name).Buffer,
            usize::from((*name).Length) / 2,
        ))
    };
    let k = kernel();
    if !matches!(k.objects.get(&(key as u64)), Some(Object::Key)) {
        return STATUS_INVALID_HANDLE;
    }
    match (name.as_str(), k.registry_capacity) {
        ("RingCapacity", Some(capacity)) => {
            // SAFETY: the caller's out-parameter.
            unsafe { *value = capacity };
            STATUS_SUCCESS
        }
        _ => STATUS_OBJECT_NAME_NOT_FOUND,
    }
}

pub unsafe fn WdfRegistryClose(key: WDFKEY) {
    check_irql("WdfRegistryClose", PASSIVE);
    let mut k = kernel();
    if !matches!(k.objects.remove(&(key as u64)), Some(Object::Key)) {
        k.violate("WDF", "WdfRegistryClose of no open key".into());
    }
}

pub unsafe fn WdfDeviceCreateSymbolicLink(_device: WDFDEVICE, _name: PCUNICODE_STRING) -> NTSTATUS {
    check_irql("WdfDeviceCreateSymbolicLink", PASSIVE);
    STATUS_SUCCESS
}

pub unsafe fn WdfDeviceCreateDeviceInterface(
    _device: WDFDEVICE,
    _guid: *const GUID,
    _reference: PCUNICODE_STRING,
) -> NTSTATUS {
    check_irql("WdfDeviceCreateDeviceInterface", PASSIVE);
    STATUS_SUCCESS
}

pub unsafe fn WdfIoQueueCreate(
    device: WDFDEVICE,
    config: *mut WDF_IO_QUEUE_CONFIG,
    _attributes: PWDF_OBJECT_ATTRIBUTES,
    queue: *mut WDFQUEUE,
) -> NTSTATUS {
    check_irql("WdfIoQueueCreate", DISPATCH);
    // SAFETY: the caller's config.
    let (device_control, parallel) = unsafe {
        (
            (*config).EvtIoDeviceControl,
            (*config).DispatchType == _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
        )
    };
    let mut k = kernel();
    if !parallel {
        k.violate("WDF", "only parallel queues are simulated".into());
    }
    let id = k.insert(Object::Queue {
        device: device as u64,
        device_control,
    });
    match k.objects.get_mut(&(device as u64)) {
        Some(Object::Device(device)) => device.queue = id,
        _ => k.violate("WDF", "WdfIoQueueCreate on no device".into()),
    }
    // SAFETY: the caller's out-parameter.
    unsafe { *queue = id as WDFQUEUE };
    STATUS_SUCCESS
}

pub unsafe fn WdfIoQueueGetDevice(queue: WDFQUEUE) -> WDFDEVICE {
    check_irql("WdfIoQueueGetDevice", DISPATCH);
    let mut k = kernel();
    match k.objects.get(&(queue as u64)) {
        Some(Object::Queue { device, .. }) => *device as WDFDEVICE,
        _ => {
            k.violate("WDF", format!("WdfIoQueueGetDevice: {queue:p} is no queue"));
            core::ptr::null_mut()
        }
    }
}

pub unsafe fn WdfFileObjectGetDevice(file: WDFFILEOBJECT) -> WDFDEVICE {
    check_irql("WdfFileObjectGetDevice", DISPATCH);
    let mut k = kernel();
    match k.objects.get(&(file as u64)) {
        Some(Object::File { device, .. }) => *device as WDFDEVICE,
        _ => {
            k.violate(
                "WDF",
                format!("WdfFileObjectGetDevice: {file:p} is no file object"),
            );
            core::ptr::null_mut()
        }
    }
}

pub unsafe fn WdfSpinLockCreate(
    _attributes: PWDF_OBJECT_ATTRIBUTES,
    lock: *mut WDFSPINLOCK,
) -> NTSTATUS {
    check_irql("WdfSpinLockCreate", DISPATCH);
    let id = kernel().insert(Object::SpinLock(Arc::new(SpinLock {
        locked: AtomicBool::new(false),
        old_irql: AtomicU8::new(0),
        owner: AtomicU64::new(0),
    })));
    // SAFETY: the caller's out-parameter.
    unsafe { *lock = id as WDFSPINLOCK };
    STATUS_SUCCESS
}

fn spin_lock(lock: WDFSPINLOCK, function: &str) -> Option<Arc<SpinLock>> {
    let mut k = kernel();
    match k.objects.get(&(lock as u64)) {
        Some(Object::SpinLock(spin)) => Some(spin.clone()),
        _ => {
            k.violate(
                "WDF",
                format!("{function}: {lock:p} is no spin lock (deleted?)"),
            );
            None
        }
    }
}

pub unsafe fn WdfSpinLockAcquire(lock: WDFSPINLOCK) {
    check_irql("WdfSpinLockAcquire", DISPATCH);
    let Some(spin) = spin_lock(lock, "WdfSpinLockAcquire") else {
        return;
    };
    let me = crate::kernel::thread_number();
    // Relaxed: only this thread stores its own number there, so a load that sees it is
    // this thread's own earlier store (it holds the lock); any other value means it does not.
    if spin.owner.load(Ordering::Relaxed) == me {
        violate(
            "IRQL",
            "WdfSpinLockAcquire of a spin lock this thread holds (a deadlock on Windows)".into(),
        );
        return;
    }
    let old = irql();
    set_irql(DISPATCH_LEVEL as u8);
    set_spinning(true);
    // Acquire: pairs with the Release store in WdfSpinLockRelease, so that what the previous
    // holder wrote under the lock is seen by this one.
    while spin
        .locked
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
    set_spinning(false);
    // Relaxed: read by this thread (its own store) or, to find that they do not hold it,
    // by others; the lock's own Acquire and Release order holders.
    spin.owner.store(me, Ordering::Relaxed);
    // Relaxed: only the holder reads it, and the lock orders holders.
    spin.old_irql.store(old, Ordering::Relaxed);
}

pub unsafe fn WdfSpinLockRelease(lock: WDFSPINLOCK) {
    let Some(spin) = spin_lock(lock, "WdfSpinLockRelease") else {
        return;
    };
    if irql() != DISPATCH_LEVEL as u8 {
        violate(
            "IRQL",
            format!(
                "WdfSpinLockRelease at IRQL {}: a spin lock is released at DISPATCH_LEVEL",
                irql()
            ),
        );
    }
    // Relaxed: as in WdfSpinLockAcquire, only this thread's own store can show its number.
    if spin.owner.load(Ordering::Relaxed) != crate::kernel::thread_number() {
        violate(
            "IRQL",
            "WdfSpinLockRelease of a spin lock this thread does not hold".into(),
        );
        return;
    }
    // Relaxed: before the Release store below, which hands the lock on.
    spin.owner.store(0, Ordering::Relaxed);
    // Relaxed: written by this holder in WdfSpinLockAcquire.
    set_irql(spin.old_irql.load(Ordering::Relaxed));
    // Release: pairs with the Acquire in WdfSpinLockAcquire.
    spin.locked.store(false, Ordering::Release);
}

pub unsafe fn WdfObjectDelete(object: WDFOBJECT) {
    check_irql("WdfObjectDelete", DISPATCH);
    let mut k = kernel();
    match k.objects.remove(&(object as u64)) {
        Some(Object::SpinLock(spin)) => {
            // Relaxed: a check only; a held lock being deleted is the bug reported.
            if spin.locked.load(Ordering::Relaxed) {
                k.violate("WDF", "WdfObjectDelete of a spin lock that is held".into());
            }
        }
        Some(other) => {
            k.objects.insert(object as u64, other);
            k.violate(
                "WDF",
                "WdfObjectDelete of an object other than a spin lock is not simulated".into(),
            );
        }
        None => k.violate(
            "WDF",
            format!("WdfObjectDelete of {object:p}, which is no object (deleted twice?)"),
        ),
    }
}

/// The request, if `request` is one and not completed; a `Request` violation otherwise.
fn live_request(request: WDFREQUEST, function: &str) -> Option<Arc<crate::kernel::Request>> {
    check_irql(function, DISPATCH);
    crate::kernel::jitter();
    let r = kernel().request(request as u64, function)?;
    if r.state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .completed
        .is_some()
    {
        violate(
            "Request",
            format!(
                "{function} on request {request:p} after it was completed: a completed request belongs to nobody"
            ),
        );
        return None;
    }
    Some(r)
}

pub unsafe fn WdfRequestGetParameters(
    request: WDFREQUEST,
    parameters: *mut WDF_REQUEST_PARAMETERS,
) {
    let Some(r) = live_request(request, "WdfRequestGetParameters") else {
        return;
    };
    let s = r.state.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the caller's out-parameter.
    unsafe {
        if usize::from((*parameters).Size) != size_of::<WDF_REQUEST_PARAMETERS>() {
            violate(
                "WDF",
                "WdfRequestGetParameters: Size is not set as WDF_REQUEST_PARAMETERS_INIT sets it"
                    .into(),
            );
        }
        (*parameters).Type = _WDF_REQUEST_TYPE::WdfRequestTypeDeviceControl;
        (*parameters).Parameters.DeviceIoControl =
            _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_5 {
                OutputBufferLength: s.output_len,
                InputBufferLength: s.input_len,
                IoControlCode: s.code,
                Type3InputBuffer: core::ptr::null_mut(),
            };
    }
}

pub unsafe fn WdfRequestGetRequestorMode(request: WDFREQUEST) -> KPROCESSOR_MODE {
    let _ = live_request(request, "WdfRequestGetRequestorMode");
    _MODE::UserMode as KPROCESSOR_MODE
}

pub unsafe fn WdfRequestGetFileObject(request: WDFREQUEST) -> WDFFILEOBJECT {
    match live_request(request, "WdfRequestGetFileObject") {
        Some(r) => r.state.lock().unwrap_or_else(|e| e.into_inner()).file as WDFFILEOBJECT,
        None => core::ptr::null_mut(),
    }
}

pub unsafe fn WdfRequestGetIoQueue(request: WDFREQUEST) -> WDFQUEUE {
    match live_request(request, "WdfRequestGetIoQueue") {
        Some(r) => r.state.lock().unwrap_or_else(|e| e.into_inner()).queue as WDFQUEUE,
        None => core::ptr::null_mut(),
    }
}

unsafe fn retrieve(
    request: WDFREQUEST,
    minimum: usize,
    buffer: *mut PVOID,
    length: *mut usize,
    output: bool,
    function: &str,
) -> NTSTATUS {
    let Some(r) = live_request(request, function) else {
        return STATUS_INVALID_PARAMETER;
    };
    let mut s = r.state.lock().unwrap_or_else(|e| e.into_inner());
    let available = if output { s.output_len } else { s.input_len };
    if available == 0 || available < minimum {
        return STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: the caller's out-parameters; the system buffer lives as long as the request.
    unsafe {
        *buffer = s.buffer.as_mut_ptr().cast();
        if !length.is_null() {
            *length = available;
        }
    }
    STATUS_SUCCESS
}

pub unsafe fn WdfRequestRetrieveInputBuffer(
    request: WDFREQUEST,
    minimum: usize,
    buffer: *mut PVOID,
    length: *mut usize,
) -> NTSTATUS {
    // SAFETY: the caller's out-parameters.
    unsafe {
        retrieve(
            request,
            minimum,
            buffer,
            length,
            false,
            "WdfRequestRetrieveInputBuffer",
        )
    }
}

pub unsafe fn WdfRequestRetrieveOutputBuffer(
    request: WDFREQUEST,
    minimum: usize,
    buffer: *mut PVOID,
    length: *mut usize,
) -> NTSTATUS {
    // SAFETY: the caller's out-parameters.
    unsafe {
        retrieve(
            request,
            minimum,
            buffer,
            length,
            true,
            "WdfRequestRetrieveOutputBuffer",
        )
    }
}

pub unsafe fn WdfRequestCompleteWithInformation(
    request: WDFREQUEST,
    status: NTSTATUS,
    information: ULONG_PTR,
) {
    let Some(r) = live_request(request, "WdfRequestCompleteWithInformation") else {
        return;
    };
    let mut s = r.state.lock().unwrap_or_else(|e| e.into_inner());
    if let Cancel::Cancelable(_) = s.cancel {
        violate(
            "Request",
            format!(
                "WdfRequestCompleteWithInformation of request {request:p} while it is cancelable (WdfRequestUnmarkCancelable first)"
            ),
        );
    }
    let information = information as usize;
    if information > s.output_len {
        violate(
            "Request",
            format!(
                "request {request:p} completed with {information} bytes of output; its output buffer has {}",
                s.output_len
            ),
        );
    }
    let output = s.buffer[..information.min(s.output_len)].to_vec();
    // What the driver writes after completion lands in a poisoned buffer nobody reads.
    s.buffer.fill(0xdd);
    let on_complete = s.on_complete.take();
    s.completed = Some((status, output.clone()));
    s.cancel = Cancel::NotCancelable;
    // Looked at under the lock: a waiter counts itself under it before it sleeps.
    let waiters = s.waiters;
    drop(s);
    if waiters != 0 {
        r.done.notify_all();
    }
    if let Some(on_complete) = on_complete {
        on_complete(status, &output);
    }
}

pub unsafe fn WdfRequestMarkCancelableEx(
    request: WDFREQUEST,
    routine: PFN_WDF_REQUEST_CANCEL,
) -> NTSTATUS {
    let Some(r) = live_request(request, "WdfRequestMarkCancelableEx") else {
        return STATUS_INVALID_PARAMETER;
    };
    let mut s = r.state.lock().unwrap_or_else(|e| e.into_inner());
    if !matches!(s.cancel, Cancel::NotCancelable) {
        violate(
            "Request",
            format!(
                "WdfRequestMarkCancelableEx of request {request:p}, which is already cancelable or cancelled"
            ),
        );
        return STATUS_INVALID_PARAMETER;
    }
    if s.cancel_requested {
        s.refused_cancelable = true;
        return STATUS_CANCELLED;
    }
    s.cancel = Cancel::Cancelable(routine);
    STATUS_SUCCESS
}

pub unsafe fn WdfRequestUnmarkCancelable(request: WDFREQUEST) -> NTSTATUS {
    check_irql("WdfRequestUnmarkCancelable", DISPATCH);
    crate::kernel::jitter();
    // A schedule the test picked: the request is cancelled, and its cancel routine runs on
    // another thread, right before this Unmark.
    // One look at the kernel's table when no schedule is set (Relaxed: see
    // `SCHEDULED_UNMARK_CANCELS`): this runs on a producer's wake-up path, under the device's
    // lock.
    let scheduled = crate::kernel::SCHEDULED_UNMARK_CANCELS.load(Ordering::Relaxed) != 0 && {
        let removed = kernel().cancel_before_unmark.remove(&(request as u64));
        if removed {
            crate::kernel::SCHEDULED_UNMARK_CANCELS.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    };
    if scheduled {
        crate::sim::cancel_now_and_wait(request as u64);
    }
    let Some(r) = kernel().request(request as u64, "WdfRequestUnmarkCancelable") else {
        return STATUS_INVALID_PARAMETER;
    };
    let mut s = r.state.lock().unwrap_or_else(|e| e.into_inner());
    if s.completed.is_some() {
        violate(
            "Request",
            format!(
                "WdfRequestUnmarkCancelable on request {request:p} after EvtRequestCancel completed it: Unmark must not follow the cancel routine's completion (take and unmark under the lock the cancel routine takes)"
            ),
        );
        return STATUS_CANCELLED;
    }
    match s.cancel {
        Cancel::Cancelable(_) => {
            s.cancel = Cancel::NotCancelable;
            STATUS_SUCCESS
        }
        Cancel::RoutineOwns => STATUS_CANCELLED,
        Cancel::NotCancelable => {
            violate(
                "Request",
                format!(
                    "WdfRequestUnmarkCancelable on request {request:p}, which is not cancelable"
                ),
            );
            STATUS_INVALID_DEVICE_REQUEST
        }
    }
}

pub unsafe fn WdfDeviceEnqueueRequest(device: WDFDEVICE, request: WDFREQUEST) -> NTSTATUS {
    let Some(r) = live_request(request, "WdfDeviceEnqueueRequest") else {
        return STATUS_INVALID_PARAMETER;
    };
    let (queue, callback) = {
        let mut k = kernel();
        let queue = match k.objects.get(&(device as u64)) {
            Some(Object::Device(device)) => device.queue,
            _ => 0,
        };
        match k.objects.get(&queue) {
            Some(Object::Queue { device_control, .. }) => (queue, *device_control),
            _ => {
                k.violate(
                    "WDF",
                    "WdfDeviceEnqueueRequest on a device with no default queue".into(),
                );
                return STATUS_INVALID_DEVICE_REQUEST;
            }
        }
    };
    let (output, input, code) = {
        let mut s = r.state.lock().unwrap_or_else(|e| e.into_inner());
        s.queue = queue;
        (s.output_len, s.input_len, s.code)
    };
    crate::sim::present(queue, request, callback, output, input, code);
    STATUS_SUCCESS
}
