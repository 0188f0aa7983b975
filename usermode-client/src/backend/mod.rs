//! The operating-system side of a handle: a usersim socket on Linux, the driver on Windows.
//!
//! Each backend provides `Handle` (open, request, map, query), `PendingView` (what a MAP
//! reply hands over, not yet mapped), `View` (the mapped consumer view) and `monotonic_ns`.

#[cfg(target_os = "linux")]
mod usersim;
#[cfg(target_os = "linux")]
pub(crate) use usersim::{Handle, View, monotonic_ns};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{Handle, View, monotonic_ns};

use ringmap_core::abi::Status;

use crate::Error;

/// A reply status as the device sent it: `Ok` for success, the status otherwise.
pub(crate) fn check_status(value: u32) -> Result<Result<(), Status>, Error> {
    match Status::from_ntstatus(value) {
        Some(Status::Success) => Ok(Ok(())),
        Some(Status::Pending) | None => Err(Error::Protocol(format!(
            "the device completed a request with status 0x{value:08X}"
        ))),
        Some(status) => Ok(Err(status)),
    }
}
