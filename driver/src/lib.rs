//! ringmap's KMDF driver (Windows only): thin WDF glue around `ringmap_core::device::Device`.
//!
//! - `DriverEntry` (here) creates the WDF driver object;
//! - [`device`]: EvtDriverDeviceAdd, the device context and its cleanup;
//! - [`requests`]: EvtIoInCallerContext (MAP in the caller's process), EvtIoDeviceControl,
//!   EvtRequestCancel, EvtFileCleanup/EvtFileClose;
//! - [`platform`]: `ringmap_core::device::Platform` over WDF/WDM (lock, pending QUERY, section
//!   handles for the caller, clock, generator threads, DISPATCH_LEVEL for producers);
//! - [`memory`]: the ring's pages (pagefile-backed sections locked in memory, one composite MDL
//!   mapped once in system space) and `seh.c`, the one C function (`__try` around
//!   `MmProbeAndLockPages`).
//!
//! All request logic is in `ringmap-core`. On Windows this crate builds against the real
//! `wdk-sys`/`wdk` crates; on Linux against `wdk-usersim`, a user-mode kernel with the same
//! names that checks the rules while the driver runs (its tests are in `sim_tests`). Every
//! WDF/WDM name used here, and where it was checked, is listed in `driver/API_CHECKS.md`.

#![no_std]

// On Linux the user-mode kernel stands in for both `wdk_sys` and `wdk`.
#[cfg(test)]
extern crate std;
#[cfg(not(windows))]
extern crate wdk_usersim as wdk;
#[cfg(not(windows))]
extern crate wdk_usersim as wdk_sys;

mod device;
mod memory;
mod platform;
mod requests;
#[cfg(all(test, not(windows)))]
mod sim_tests;

// The panic handler of a kernel driver (wdk-panic 0.5.0: a breakpoint in debug builds, then
// KeBugCheckEx; there is no unwinding in the kernel, `panic = "abort"` in the workspace profiles).
#[cfg(windows)]
extern crate wdk_panic;

use wdk_sys::{
    DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, ULONG, WDF_DRIVER_CONFIG,
    WDF_NO_HANDLE, WDF_NO_OBJECT_ATTRIBUTES, WDFDRIVER, call_unsafe_wdf_function_binding,
};

/// Every allocation through `alloc` goes to `ExAllocatePool2` (non-paged), as in the samples.
#[cfg(windows)]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

/// The pool tag of everything ringmap allocates ("RMap" in pool dumps).
pub(crate) const POOL_TAG: ULONG = u32::from_le_bytes(*b"RMap");

/// `size_of::<T>()` as the `ULONG` every WDF `Size` field wants (`WDF_STRUCTURE_SIZE` is
/// `sizeof` for a driver built against the framework version it runs on, KMDF 1.33).
pub(crate) const fn wdf_size<T>() -> ULONG {
    let size = core::mem::size_of::<T>();
    assert!(size <= ULONG::MAX as usize);
    size as ULONG
}

/// Called by `FxDriverEntry` (WdfDriverEntry.lib, the linker entry point wdk-build sets).
///
/// # Safety
///
/// Called once by the system with a valid driver object and registry path.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(
    driver: &mut DRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    let mut config = WDF_DRIVER_CONFIG {
        Size: wdf_size::<WDF_DRIVER_CONFIG>(),
        EvtDriverDeviceAdd: Some(device::evt_driver_device_add),
        DriverPoolTag: POOL_TAG,
        ..WDF_DRIVER_CONFIG::default()
    };
    // SAFETY: the driver object and registry path come from the system; `config` lives across
    // the call; no driver attributes and no driver handle wanted (both optional).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver as PDRIVER_OBJECT,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut config,
            WDF_NO_HANDLE.cast::<WDFDRIVER>(),
        )
    }
}
