//! EvtDriverDeviceAdd, the device context and its cleanup.

use core::mem::MaybeUninit;
use core::ptr::null_mut;
use core::sync::atomic::AtomicBool;

use ringmap_core::abi::{self, DEVICE_INTERFACE_GUID};
use ringmap_core::device::Device;
use ringmap_core::layout::Capacity;
use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_FILEOBJECT_CLASS, _WDF_IO_QUEUE_DISPATCH_TYPE,
    _WDF_SYNCHRONIZATION_SCOPE, _WDF_TRI_STATE, FILE_DEVICE_SECURE_OPEN, GUID, KEY_READ, NTSTATUS,
    PLUGPLAY_REGKEY_DEVICE, PWDFDEVICE_INIT, STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS, ULONG, UNICODE_STRING, WDF_FILEOBJECT_CONFIG,
    WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE, WDF_NO_OBJECT_ATTRIBUTES, WDF_OBJECT_ATTRIBUTES,
    WDF_OBJECT_CONTEXT_TYPE_INFO, WDFDEVICE, WDFDRIVER, WDFFILEOBJECT, WDFKEY, WDFOBJECT, WDFQUEUE,
    call_unsafe_wdf_function_binding,
};

use crate::memory::RingMemory;
use crate::platform::KernelPlatform;
use crate::requests;

/// The registry value (device hardware key, "Device Parameters") with the ring capacity in
/// bytes; set by the INX, validated with `Capacity::new`; absent means 1 MiB.
const RING_CAPACITY_VALUE: &str = "RingCapacity";

/// SYSTEM and Administrators only: the string of `SDDL_DEVOBJ_SYS_ALL_ADM_ALL` (wdmsec.h),
/// which lives in wdmsec.lib, not linked by wdk-build. The INX sets the same string.
const SDDL: &str = "D:P(A;;GA;;;SY)(A;;GA;;;BA)";

/// An ASCII string as UTF-16, at compile time (the names come from `ringmap_core::abi`).
const fn utf16<const N: usize>(text: &str) -> [u16; N] {
    let bytes = text.as_bytes();
    assert!(bytes.len() == N);
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        assert!(bytes[i].is_ascii());
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

static NT_DEVICE_NAME: [u16; abi::NT_DEVICE_NAME.len()] = utf16(abi::NT_DEVICE_NAME);
static DOS_DEVICE_NAME: [u16; abi::DOS_DEVICE_NAME.len()] = utf16(abi::DOS_DEVICE_NAME);
static SDDL_STRING: [u16; SDDL.len()] = utf16(SDDL);
static RING_CAPACITY_NAME: [u16; RING_CAPACITY_VALUE.len()] = utf16(RING_CAPACITY_VALUE);

/// A counted string over a static UTF-16 array (WDF copies what it keeps).
fn unicode(text: &'static [u16]) -> UNICODE_STRING {
    let bytes = (text.len() * 2) as u16;
    UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: text.as_ptr().cast_mut(),
    }
}

/// What the device context holds once initialised. Fields drop in order: the device (and its
/// platform's lock) before the memory it points into.
pub struct Ring {
    /// The device logic (ringmap-core).
    pub device: Device<KernelPlatform>,
    /// Owned for its `Drop` (the pages the device points into).
    #[allow(dead_code)]
    memory: RingMemory,
}

/// The device context. WDF zeroes it: `ready == false` until `ring` is written.
struct DeviceContext {
    ready: bool,
    ring: MaybeUninit<Ring>,
}

/// `WDF_DECLARE_CONTEXT_TYPE` by hand: a static type info whose `UniqueType` is itself.
#[repr(transparent)]
pub(crate) struct ContextTypeInfo(pub(crate) WDF_OBJECT_CONTEXT_TYPE_INFO);

// SAFETY: immutable after initialisation; only its address is handed to WDF.
unsafe impl Sync for ContextTypeInfo {}

// In `.data`, as WDF_DECLARE_TYPE_AND_GLOBALS places it (wdfobject.h, WDF_TYPE_DEFAULT_SECTION_NAME).
#[unsafe(link_section = ".data")]
static DEVICE_CONTEXT_TYPE: ContextTypeInfo = ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO {
    Size: crate::wdf_size::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
    ContextName: c"RingMapDeviceContext".as_ptr(),
    // Room to align it: WDF aligns a context to MEMORY_ALLOCATION_ALIGNMENT (16 bytes on
    // x64) only, and the device's counters sit on cache lines of their own (align 128).
    ContextSize: core::mem::size_of::<DeviceContext>() + core::mem::align_of::<DeviceContext>(),
    UniqueType: core::ptr::addr_of!(DEVICE_CONTEXT_TYPE).cast(),
    EvtDriverGetUniqueContextType: None,
});

/// A file object's context. WDF zeroes it: `cleaned_up == false` until EvtFileCleanup.
pub(crate) struct FileContext {
    /// Set by EvtFileCleanup: requests that still arrive through the handle are refused.
    pub(crate) cleaned_up: AtomicBool,
}

#[unsafe(link_section = ".data")]
static FILE_CONTEXT_TYPE: ContextTypeInfo = ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO {
    Size: crate::wdf_size::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
    ContextName: c"RingMapFileContext".as_ptr(),
    ContextSize: core::mem::size_of::<FileContext>(),
    UniqueType: core::ptr::addr_of!(FILE_CONTEXT_TYPE).cast(),
    EvtDriverGetUniqueContextType: None,
});

/// The context of one of this driver's file objects.
pub(crate) fn file_context<'a>(file: WDFFILEOBJECT) -> &'a FileContext {
    // SAFETY: every file object of this driver's device has FILE_CONTEXT_TYPE (set in
    // `init_device`); WDF's zeroed memory is a valid `FileContext` (an `AtomicBool` false),
    // alive as long as the file object, which outlives its requests and callbacks.
    unsafe {
        &*call_unsafe_wdf_function_binding!(
            WdfObjectGetTypedContextWorker,
            file as WDFOBJECT,
            FILE_CONTEXT_TYPE.0.UniqueType
        )
        .cast::<FileContext>()
    }
}

/// The device context: the first suitably aligned address in WDF's context memory (sized with
/// room for that in DEVICE_CONTEXT_TYPE).
fn context(device: WDFDEVICE) -> *mut DeviceContext {
    // SAFETY: every device of this driver is created with DEVICE_CONTEXT_TYPE.
    let raw: *mut u8 = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfObjectGetTypedContextWorker,
            device as WDFOBJECT,
            DEVICE_CONTEXT_TYPE.0.UniqueType
        )
    }
    .cast();
    let offset = raw.align_offset(core::mem::align_of::<DeviceContext>());
    // SAFETY: the context is `size_of + align_of` bytes, so the aligned `DeviceContext`
    // (offset < align_of) lies inside it.
    unsafe { raw.add(offset) }.cast()
}

/// The device's ring, if its context is initialised.
///
/// # Safety
///
/// `device` is a device of this driver, and the reference is not used after its cleanup.
pub unsafe fn ring<'a>(device: WDFDEVICE) -> Option<&'a Ring> {
    let context = context(device);
    // SAFETY: WDF's context memory, initialised (`ready`) before any request can arrive, and
    // only read through shared references until cleanup.
    unsafe { (*context).ready.then(|| (*context).ring.assume_init_ref()) }
}

fn check(status: NTSTATUS) -> Result<(), NTSTATUS> {
    if wdk::nt_success(status) {
        Ok(())
    } else {
        Err(status)
    }
}

/// EvtDriverDeviceAdd: the device, its ring, its names and its queue.
pub unsafe extern "C" fn evt_driver_device_add(
    _driver: WDFDRIVER,
    device_init: PWDFDEVICE_INIT,
) -> NTSTATUS {
    match add_device(device_init) {
        Ok(()) => STATUS_SUCCESS,
        Err(status) => status,
    }
}

fn add_device(mut device_init: PWDFDEVICE_INIT) -> Result<(), NTSTATUS> {
    init_device(device_init)?;
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        Size: crate::wdf_size::<WDF_OBJECT_ATTRIBUTES>(),
        EvtCleanupCallback: Some(evt_device_cleanup),
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ContextTypeInfo: DEVICE_CONTEXT_TYPE.0.UniqueType,
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    let mut device: WDFDEVICE = WDF_NO_HANDLE.cast();
    // SAFETY: `device_init` from WDF, configured above; WDF frees it on success.
    check(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &raw mut device_init,
            &raw mut attributes,
            &raw mut device
        )
    })?;
    // From here on a failure makes WDF delete the device, which runs `evt_device_cleanup`.
    let capacity = ring_capacity(device)?;
    let memory = RingMemory::new(capacity)?;
    let placement = memory.placement().map_err(|_| STATUS_INVALID_PARAMETER)?;
    let platform = KernelPlatform::new(device, &memory)?;
    // SAFETY: the placement's memory is owned by `memory`, which lives next to the device in
    // the context and is dropped after it.
    let device_logic = unsafe { Device::new(placement, platform) };
    let context = context(device);
    // SAFETY: WDF's zeroed context memory of the right size, not yet read by anyone.
    unsafe {
        (*context).ring.write(Ring {
            device: device_logic,
            memory,
        });
        (*context).ready = true;
    }
    publish(device)?;
    create_queue(device)
}

/// Everything set on WDFDEVICE_INIT before WdfDeviceCreate.
fn init_device(device_init: PWDFDEVICE_INIT) -> Result<(), NTSTATUS> {
    let name = unicode(&NT_DEVICE_NAME);
    let sddl = unicode(&SDDL_STRING);
    // SAFETY: `device_init` is WDF's, before WdfDeviceCreate; the strings and
    // the config live across the calls (WDF copies them).
    unsafe {
        check(call_unsafe_wdf_function_binding!(
            WdfDeviceInitAssignName,
            device_init,
            &name
        ))?;
        // Must follow WdfDeviceInitAssignName (docs of WdfDeviceInitAssignSDDLString).
        check(call_unsafe_wdf_function_binding!(
            WdfDeviceInitAssignSDDLString,
            device_init,
            &sddl
        ))?;
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetDeviceType,
            device_init,
            abi::FILE_DEVICE_UNKNOWN
        );
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetCharacteristics,
            device_init,
            FILE_DEVICE_SECURE_OPEN as ULONG,
            1
        );
        let mut file_config = WDF_FILEOBJECT_CONFIG {
            Size: crate::wdf_size::<WDF_FILEOBJECT_CONFIG>(),
            EvtDeviceFileCreate: None,
            EvtFileClose: Some(requests::evt_file_close),
            EvtFileCleanup: Some(requests::evt_file_cleanup),
            // As WDF_FILEOBJECT_CONFIG_INIT sets them (zero would be invalid).
            AutoForwardCleanupClose: _WDF_TRI_STATE::WdfUseDefault,
            FileObjectClass: _WDF_FILEOBJECT_CLASS::WdfFileObjectWdfCannotUseFsContexts,
        };
        let mut file_attributes = WDF_OBJECT_ATTRIBUTES {
            Size: crate::wdf_size::<WDF_OBJECT_ATTRIBUTES>(),
            ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
            SynchronizationScope:
                _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
            ContextTypeInfo: FILE_CONTEXT_TYPE.0.UniqueType,
            ..WDF_OBJECT_ATTRIBUTES::default()
        };
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetFileObjectConfig,
            device_init,
            &raw mut file_config,
            &raw mut file_attributes
        );
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetIoInCallerContextCallback,
            device_init,
            Some(requests::evt_io_in_caller_context)
        );
    }
    Ok(())
}

/// The ring capacity from the registry, validated; 1 MiB when the value is absent.
fn ring_capacity(device: WDFDEVICE) -> Result<Capacity, NTSTATUS> {
    let mut key: WDFKEY = null_mut();
    // SAFETY: a created device at PASSIVE_LEVEL; `key` is an out-parameter, closed below.
    check(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceOpenRegistryKey,
            device,
            PLUGPLAY_REGKEY_DEVICE as ULONG,
            KEY_READ as ULONG,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut key
        )
    })?;
    let name = unicode(&RING_CAPACITY_NAME);
    let mut value: ULONG = 0;
    // SAFETY: an open key; `name` and `value` live across the call.
    let status = unsafe {
        call_unsafe_wdf_function_binding!(WdfRegistryQueryULong, key, &name, &raw mut value)
    };
    // SAFETY: the key opened above.
    unsafe { call_unsafe_wdf_function_binding!(WdfRegistryClose, key) };
    if status == STATUS_OBJECT_NAME_NOT_FOUND {
        return Ok(Capacity::DEFAULT);
    }
    check(status)?;
    Capacity::new(u64::from(value)).map_err(|error| {
        wdk::println!("ringmap: registry value {RING_CAPACITY_VALUE}: {error}");
        STATUS_INVALID_PARAMETER
    })
}

/// The symbolic link and the device interface.
fn publish(device: WDFDEVICE) -> Result<(), NTSTATUS> {
    let link = unicode(&DOS_DEVICE_NAME);
    let guid = GUID {
        Data1: DEVICE_INTERFACE_GUID.data1,
        Data2: DEVICE_INTERFACE_GUID.data2,
        Data3: DEVICE_INTERFACE_GUID.data3,
        Data4: DEVICE_INTERFACE_GUID.data4,
    };
    // SAFETY: a created device; `link` and `guid` live across the calls (WDF copies them).
    unsafe {
        check(call_unsafe_wdf_function_binding!(
            WdfDeviceCreateSymbolicLink,
            device,
            &link
        ))?;
        check(call_unsafe_wdf_function_binding!(
            WdfDeviceCreateDeviceInterface,
            device,
            &guid,
            core::ptr::null()
        ))
    }
}

/// The default queue: parallel, not power-managed (a pending QUERY must not hold up a system
/// sleep transition: a power-managed queue would wait for it to be acknowledged), callbacks at
/// PASSIVE_LEVEL (GENERATE creates and joins system threads).
fn create_queue(device: WDFDEVICE) -> Result<(), NTSTATUS> {
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: crate::wdf_size::<WDF_IO_QUEUE_CONFIG>(),
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
        PowerManaged: _WDF_TRI_STATE::WdfFalse,
        DefaultQueue: 1,
        EvtIoDeviceControl: Some(requests::evt_io_device_control),
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    // As WDF_IO_QUEUE_CONFIG_INIT_DEFAULT_QUEUE sets it for a parallel queue: no limit.
    config.Settings.Parallel.NumberOfPresentedRequests = ULONG::MAX;
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        Size: crate::wdf_size::<WDF_OBJECT_ATTRIBUTES>(),
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelPassive,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    let mut queue: WDFQUEUE = WDF_NO_HANDLE.cast();
    // SAFETY: a created device; the config and attributes live across the call; the queue's
    // parent is the device.
    check(unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &raw mut config,
            &raw mut attributes,
            &raw mut queue
        )
    })
}

/// The device's EvtCleanupCallback (PASSIVE_LEVEL): stop the generator, drop the device, then
/// its memory.
unsafe extern "C" fn evt_device_cleanup(object: WDFOBJECT) {
    let context = context(object.cast());
    // SAFETY: WDF's context memory; no request, file or generator thread uses the ring after
    // this point (queues are purged and files closed before the device is cleaned up, and the
    // generator is joined first).
    unsafe {
        if !(*context).ready {
            return;
        }
        (*context).ring.assume_init_ref().device.stop_generator();
        (*context).ready = false;
        (*context).ring.assume_init_drop();
    }
}
