//! A user-mode kernel for Linux: exactly the WDF and WDM functions, types, constants and macros
//! that `driver/src` uses, with the names and shapes of `wdk-sys` 0.5.2 and `wdk` 0.5.0, run in
//! one process and checked while they run, in the spirit of Driver Verifier:
//!
//! - **IRQL** (rule `IRQL`): a per-thread IRQL; every function checks its maximum IRQL from
//!   Microsoft's documentation; a spin lock raises to DISPATCH_LEVEL and must be released at it.
//! - **Request ownership** (rule `Request`): completed exactly once, never while cancelable;
//!   nothing touched after completion (which catches an Unmark after the cancel routine
//!   completed the request); a request whose MarkCancelableEx returned STATUS_CANCELLED must be
//!   completed by the driver.
//! - **Leaks** (rule `Leak`): references, kernel handles, pool, MDLs, mappings, threads and
//!   requests still alive when the driver is unloaded.
//! - **Threads** (rule `Thread`): a system thread must have ended, and been waited for, before
//!   the device context its start context points into is freed.
//! - **Handles** (rule `Handle`): `ZwClose` on a handle that is not a kernel handle,
//!   `ObCloseHandle` with the wrong mode, handles closed twice.
//!
//! A violation is recorded with its rule's name (see [`sim::Violation`]); the harness in
//! [`sim`] makes the test that caused it fail. Handles (WDF objects, requests, kernel
//! objects) are numbers, never pointers, so a stale one is found, not dereferenced.

#![cfg(target_os = "linux")]
#![allow(non_snake_case, clippy::missing_safety_doc)]

mod kernel;
pub mod ntddk;
pub mod sim;
mod types;
pub mod wdf;

pub use types::*;

/// `wdk::nt_success`: success and informational statuses.
pub fn nt_success(status: NTSTATUS) -> bool {
    status >= 0
}

/// `wdk::println!`: the driver's debug print (DbgPrint), to standard error.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::debug_print(::core::format_args!($($arg)*))
    };
}

/// What `println!` prints through (the caller may be `no_std`).
pub fn debug_print(arguments: core::fmt::Arguments<'_>) {
    std::eprintln!("{arguments}");
}

/// `wdk_sys::call_unsafe_wdf_function_binding!`: calls the WDF function of that name.
#[macro_export]
macro_rules! call_unsafe_wdf_function_binding {
    ($name:ident $(, $arg:expr)* $(,)?) => {
        $crate::wdf::$name($($arg),*)
    };
}
