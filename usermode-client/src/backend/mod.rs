//! The operating-system side of a handle: a usersim socket on Linux, the driver on Windows.
//!
//! Each backend provides `Handle` (open, request, map, query), `PendingView` (what a MAP
//! reply hands over, not yet mapped), `View` (the mapped consumer view) and `monotonic_ns`.

#[cfg(target_os = "linux")]
mod usersim;
#[cfg(target_os = "linux")]
pub(crate) use usersim::{Event, Handle, View, monotonic_ns, new_event};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::{Event, Handle, View, monotonic_ns, new_event};
