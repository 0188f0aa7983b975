//! The types and constants of `wdk-sys` that the driver uses, with the Windows (LLP64) sizes:
//! `ULONG` is 32 bits here as on Windows, not `c_ulong`.

#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_docs
)]

use core::ffi::{c_char, c_void};

pub type UCHAR = u8;
pub type USHORT = u16;
pub type ULONG = u32;
pub type LONG = i32;
pub type ULONG64 = u64;
pub type ULONG_PTR = u64;
pub type SIZE_T = ULONG_PTR;
pub type CSHORT = i16;
pub type CCHAR = c_char;
pub type BOOLEAN = UCHAR;
pub type PVOID = *mut c_void;
pub type HANDLE = *mut c_void;
pub type NTSTATUS = LONG;
pub type KIRQL = UCHAR;
pub type ACCESS_MASK = ULONG;
pub type KPROCESSOR_MODE = CCHAR;
pub type PFN_NUMBER = ULONG64;
pub type POOL_FLAGS = ULONG64;
pub type LPCSTR = *const c_char;
pub type KPRIORITY = LONG;
/// An object type (opaque here; compared by address).
pub type POBJECT_TYPE = *mut c_void;
/// A kernel event object (here: an object number, shaped like a pointer).
pub type PRKEVENT = *mut c_void;

macro_rules! enum_module {
    ($name:ident { $($variant:ident = $value:expr),* $(,)? }) => {
        pub mod $name {
            pub type Type = ::core::ffi::c_int;
            $(pub const $variant: Type = $value;)*
        }
    };
}

enum_module!(_MODE { KernelMode = 0, UserMode = 1 });
enum_module!(_KWAIT_REASON { Executive = 0 });
enum_module!(_LOCK_OPERATION { IoReadAccess = 0, IoWriteAccess = 1, IoModifyAccess = 2 });
enum_module!(_MEMORY_CACHING_TYPE { MmNonCached = 0, MmCached = 1 });
enum_module!(_MM_PAGE_PRIORITY { LowPagePriority = 0, NormalPagePriority = 16, HighPagePriority = 32 });
enum_module!(_WDF_EXECUTION_LEVEL {
    WdfExecutionLevelInvalid = 0, WdfExecutionLevelInheritFromParent = 1,
    WdfExecutionLevelPassive = 2, WdfExecutionLevelDispatch = 3,
});
enum_module!(_WDF_SYNCHRONIZATION_SCOPE {
    WdfSynchronizationScopeInvalid = 0, WdfSynchronizationScopeInheritFromParent = 1,
    WdfSynchronizationScopeDevice = 2, WdfSynchronizationScopeQueue = 3,
    WdfSynchronizationScopeNone = 4,
});
enum_module!(_WDF_TRI_STATE { WdfFalse = 0, WdfTrue = 1, WdfUseDefault = 2 });
enum_module!(_WDF_FILEOBJECT_CLASS {
    WdfFileObjectInvalid = 0, WdfFileObjectNotRequired = 1, WdfFileObjectWdfCanUseFsContext = 2,
    WdfFileObjectWdfCanUseFsContext2 = 3, WdfFileObjectWdfCannotUseFsContexts = 4,
});
enum_module!(_WDF_IO_QUEUE_DISPATCH_TYPE {
    WdfIoQueueDispatchInvalid = 0, WdfIoQueueDispatchSequential = 1,
    WdfIoQueueDispatchParallel = 2, WdfIoQueueDispatchManual = 3,
});
enum_module!(_WDF_REQUEST_TYPE { WdfRequestTypeCreate = 0, WdfRequestTypeDeviceControl = 14 });

pub type KWAIT_REASON = _KWAIT_REASON::Type;
pub type LOCK_OPERATION = _LOCK_OPERATION::Type;
pub type MEMORY_CACHING_TYPE = _MEMORY_CACHING_TYPE::Type;
pub type WDF_EXECUTION_LEVEL = _WDF_EXECUTION_LEVEL::Type;
pub type WDF_SYNCHRONIZATION_SCOPE = _WDF_SYNCHRONIZATION_SCOPE::Type;
pub type WDF_TRI_STATE = _WDF_TRI_STATE::Type;
pub type WDF_FILEOBJECT_CLASS = _WDF_FILEOBJECT_CLASS::Type;
pub type WDF_IO_QUEUE_DISPATCH_TYPE = _WDF_IO_QUEUE_DISPATCH_TYPE::Type;
pub type WDF_REQUEST_TYPE = _WDF_REQUEST_TYPE::Type;

macro_rules! opaque_handles {
    ($($inner:ident => $handle:ident),* $(,)?) => {
        $(
            #[repr(C)]
            pub struct $inner {
                _unused: [u8; 0],
            }
            pub type $handle = *mut $inner;
        )*
    };
}

opaque_handles!(
    WDFDRIVER__ => WDFDRIVER,
    WDFDEVICE__ => WDFDEVICE,
    WDFQUEUE__ => WDFQUEUE,
    WDFREQUEST__ => WDFREQUEST,
    WDFFILEOBJECT__ => WDFFILEOBJECT,
    WDFSPINLOCK__ => WDFSPINLOCK,
    WDFKEY__ => WDFKEY,
    WDFDEVICE_INIT => PWDFDEVICE_INIT,
    _EPROCESS => PEPROCESS,
);
pub type WDFOBJECT = *mut c_void;

/// Zero is a valid value of every field (integers, raw pointers, `Option<fn>`).
macro_rules! zeroed_default {
    ($($t:ty),*) => {
        $(impl Default for $t {
            fn default() -> Self {
                // SAFETY: every field of the type is valid when all bits are zero.
                unsafe { core::mem::zeroed() }
            }
        })*
    };
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UNICODE_STRING {
    pub Length: USHORT,
    pub MaximumLength: USHORT,
    pub Buffer: *mut u16,
}
pub type PCUNICODE_STRING = *const UNICODE_STRING;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct GUID {
    pub Data1: ULONG,
    pub Data2: USHORT,
    pub Data3: USHORT,
    pub Data4: [UCHAR; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union LARGE_INTEGER {
    pub QuadPart: i64,
}
pub type PLARGE_INTEGER = *mut LARGE_INTEGER;

/// Only what a driver reads or writes of it in ringmap: nothing.
#[repr(C)]
pub struct DRIVER_OBJECT {
    pub Type: CSHORT,
    pub Size: CSHORT,
    pub DriverExtension: PVOID,
}
pub type PDRIVER_OBJECT = *mut DRIVER_OBJECT;

#[repr(C)]
pub struct OBJECT_ATTRIBUTES {
    pub Length: ULONG,
    pub RootDirectory: HANDLE,
    pub ObjectName: *mut UNICODE_STRING,
    pub Attributes: ULONG,
    pub SecurityDescriptor: PVOID,
    pub SecurityQualityOfService: PVOID,
}

#[repr(C)]
pub struct _MDL {
    pub Next: *mut _MDL,
    pub Size: CSHORT,
    pub MdlFlags: CSHORT,
    pub Process: PEPROCESS,
    pub MappedSystemVa: PVOID,
    pub StartVa: PVOID,
    pub ByteCount: ULONG,
    pub ByteOffset: ULONG,
}
pub type MDL = _MDL;
pub type PMDL = *mut _MDL;

pub type PFN_WDF_DRIVER_DEVICE_ADD =
    Option<unsafe extern "C" fn(driver: WDFDRIVER, init: PWDFDEVICE_INIT) -> NTSTATUS>;
pub type PFN_WDF_DRIVER_UNLOAD = Option<unsafe extern "C" fn(driver: WDFDRIVER)>;
pub type PFN_WDF_OBJECT_CONTEXT_CLEANUP = Option<unsafe extern "C" fn(object: WDFOBJECT)>;
pub type PFN_WDF_OBJECT_CONTEXT_DESTROY = Option<unsafe extern "C" fn(object: WDFOBJECT)>;
pub type PFN_WDF_DEVICE_FILE_CREATE =
    Option<unsafe extern "C" fn(device: WDFDEVICE, request: WDFREQUEST, file: WDFFILEOBJECT)>;
pub type PFN_WDF_FILE_CLOSE = Option<unsafe extern "C" fn(file: WDFFILEOBJECT)>;
pub type PFN_WDF_FILE_CLEANUP = Option<unsafe extern "C" fn(file: WDFFILEOBJECT)>;
pub type PFN_WDF_IO_IN_CALLER_CONTEXT =
    Option<unsafe extern "C" fn(device: WDFDEVICE, request: WDFREQUEST)>;
pub type PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL = Option<
    unsafe extern "C" fn(
        queue: WDFQUEUE,
        request: WDFREQUEST,
        output_buffer_length: usize,
        input_buffer_length: usize,
        io_control_code: ULONG,
    ),
>;
pub type PFN_WDF_IO_QUEUE_IO_DEFAULT =
    Option<unsafe extern "C" fn(queue: WDFQUEUE, request: WDFREQUEST)>;
pub type PFN_WDF_REQUEST_CANCEL = Option<unsafe extern "C" fn(request: WDFREQUEST)>;
pub type PFN_GET_UNIQUE_CONTEXT_TYPE =
    Option<unsafe extern "C" fn() -> PCWDF_OBJECT_CONTEXT_TYPE_INFO>;
pub type PKSTART_ROUTINE = Option<unsafe extern "C" fn(context: PVOID)>;

#[repr(C)]
pub struct WDF_DRIVER_CONFIG {
    pub Size: ULONG,
    pub EvtDriverDeviceAdd: PFN_WDF_DRIVER_DEVICE_ADD,
    pub EvtDriverUnload: PFN_WDF_DRIVER_UNLOAD,
    pub DriverInitFlags: ULONG,
    pub DriverPoolTag: ULONG,
}

#[repr(C)]
pub struct WDF_OBJECT_CONTEXT_TYPE_INFO {
    pub Size: ULONG,
    pub ContextName: LPCSTR,
    pub ContextSize: usize,
    pub UniqueType: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
    pub EvtDriverGetUniqueContextType: PFN_GET_UNIQUE_CONTEXT_TYPE,
}
pub type PCWDF_OBJECT_CONTEXT_TYPE_INFO = *const WDF_OBJECT_CONTEXT_TYPE_INFO;

#[repr(C)]
pub struct WDF_OBJECT_ATTRIBUTES {
    pub Size: ULONG,
    pub EvtCleanupCallback: PFN_WDF_OBJECT_CONTEXT_CLEANUP,
    pub EvtDestroyCallback: PFN_WDF_OBJECT_CONTEXT_DESTROY,
    pub ExecutionLevel: WDF_EXECUTION_LEVEL,
    pub SynchronizationScope: WDF_SYNCHRONIZATION_SCOPE,
    pub ParentObject: WDFOBJECT,
    pub ContextSizeOverride: usize,
    pub ContextTypeInfo: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
}
pub type PWDF_OBJECT_ATTRIBUTES = *mut WDF_OBJECT_ATTRIBUTES;

#[repr(C)]
pub struct WDF_FILEOBJECT_CONFIG {
    pub Size: ULONG,
    pub EvtDeviceFileCreate: PFN_WDF_DEVICE_FILE_CREATE,
    pub EvtFileClose: PFN_WDF_FILE_CLOSE,
    pub EvtFileCleanup: PFN_WDF_FILE_CLEANUP,
    pub AutoForwardCleanupClose: WDF_TRI_STATE,
    pub FileObjectClass: WDF_FILEOBJECT_CLASS,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1 {
    pub NumberOfPresentedRequests: ULONG,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union _WDF_IO_QUEUE_CONFIG__bindgen_ty_1 {
    pub Parallel: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1,
}

#[repr(C)]
pub struct WDF_IO_QUEUE_CONFIG {
    pub Size: ULONG,
    pub DispatchType: WDF_IO_QUEUE_DISPATCH_TYPE,
    pub PowerManaged: WDF_TRI_STATE,
    pub AllowZeroLengthRequests: BOOLEAN,
    pub DefaultQueue: BOOLEAN,
    pub EvtIoDefault: PFN_WDF_IO_QUEUE_IO_DEFAULT,
    pub EvtIoDeviceControl: PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    pub Settings: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1,
    pub Driver: WDFDRIVER,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_5 {
    pub OutputBufferLength: usize,
    pub InputBufferLength: usize,
    pub IoControlCode: ULONG,
    pub Type3InputBuffer: PVOID,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union _WDF_REQUEST_PARAMETERS__bindgen_ty_1 {
    pub DeviceIoControl: _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_5,
}

#[repr(C)]
pub struct WDF_REQUEST_PARAMETERS {
    pub Size: USHORT,
    pub MinorFunction: UCHAR,
    pub Type: WDF_REQUEST_TYPE,
    pub Parameters: _WDF_REQUEST_PARAMETERS__bindgen_ty_1,
}

zeroed_default!(
    UNICODE_STRING,
    LARGE_INTEGER,
    DRIVER_OBJECT,
    OBJECT_ATTRIBUTES,
    WDF_DRIVER_CONFIG,
    WDF_OBJECT_ATTRIBUTES,
    WDF_FILEOBJECT_CONFIG,
    WDF_IO_QUEUE_CONFIG,
    WDF_REQUEST_PARAMETERS
);

pub const PASSIVE_LEVEL: u32 = 0;
pub const APC_LEVEL: u32 = 1;
pub const DISPATCH_LEVEL: u32 = 2;
pub const OBJ_KERNEL_HANDLE: u32 = 512;
pub const SYNCHRONIZE: u32 = 1_048_576;
pub const FILE_DEVICE_SECURE_OPEN: u32 = 256;
pub const KEY_READ: u32 = 131_097;
pub const SECTION_QUERY: u32 = 1;
pub const SECTION_MAP_WRITE: u32 = 2;
pub const SECTION_MAP_READ: u32 = 4;
pub const PAGE_READWRITE: u32 = 4;
pub const SEC_COMMIT: u32 = 134_217_728;
pub const MDL_PAGES_LOCKED: u32 = 2;
pub const MDL_SOURCE_IS_NONPAGED_POOL: u32 = 4;
pub const MdlMappingNoExecute: u32 = 1_073_741_824;
pub const PLUGPLAY_REGKEY_DEVICE: u32 = 1;
pub const POOL_FLAG_NON_PAGED: POOL_FLAGS = 0x40;
pub const WDF_NO_OBJECT_ATTRIBUTES: PWDF_OBJECT_ATTRIBUTES = core::ptr::null_mut();
pub const WDF_NO_HANDLE: PVOID = core::ptr::null_mut();

pub const STATUS_SUCCESS: NTSTATUS = 0;
pub const STATUS_CANCELLED: NTSTATUS = 0xC000_0120_u32 as i32;
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as i32;
pub const STATUS_INVALID_HANDLE: NTSTATUS = 0xC000_0008_u32 as i32;
pub const STATUS_OBJECT_TYPE_MISMATCH: NTSTATUS = 0xC000_0024_u32 as i32;
pub const EVENT_MODIFY_STATE: u32 = 2;

/// The event object type: the address of an object type, which ObReferenceObjectByHandle
/// compares (its value is no pointer into anything).
static mut EVENT_OBJECT_TYPE: POBJECT_TYPE = 0xE7E7_0000 as POBJECT_TYPE;

/// `ExEventObjectType`: what wdk-sys declares as the kernel's exported `*mut POBJECT_TYPE`.
pub static mut ExEventObjectType: *mut POBJECT_TYPE = &raw mut EVENT_OBJECT_TYPE;

/// The value `*ExEventObjectType` points to.
pub(crate) fn event_object_type() -> POBJECT_TYPE {
    // SAFETY: a plain read of a static nobody writes.
    unsafe { *ExEventObjectType }
}
pub const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034_u32 as i32;
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009A_u32 as i32;
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = 0xC000_0023_u32 as i32;
pub const STATUS_ACCESS_VIOLATION: NTSTATUS = 0xC000_0005_u32 as i32;
pub const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = 0xC000_0010_u32 as i32;
