//! The framing of requests and replies over the usersim socket (a `SOCK_STREAM` Unix socket).
//!
//! A request is a [`RequestHeader`] (24 bytes, little-endian) followed by `input_len` bytes:
//! the same `#[repr(C)]` request structs the driver receives. A reply is a [`ReplyHeader`]
//! (16 bytes) followed by `len` bytes, the reply struct; a successful MAP reply carries the
//! three descriptors of the consumer view with `SCM_RIGHTS`, in the order of the indexes in
//! the reply (consumer page read-write, producer page read-only, data read-only).
//!
//! A SET_EVENT request carries one descriptor, an eventfd, with `SCM_RIGHTS` on its first
//! byte, and names it with `event_handle` 1 (0: no event); the server puts it in the
//! client's handle table for the driver, as a Windows client passes its event's handle. A
//! client may send at most a few descriptors ahead of the requests that take them, and
//! never more at once than one request takes: either ends the connection.
//!
//! Every request gets exactly one reply, with its `id`. A QUERY's reply may come later, after
//! replies to later requests; a [`CODE_CANCEL`] message names a QUERY by its `id` and makes
//! its one reply come at once (`STATUS_CANCELLED`, unless the completion won the race). A
//! CANCEL gets no reply of its own.
//!
//! On connecting, before sending anything, the client checks the server's credentials
//! (`SO_PEERCRED`: its own user, or root) and reads the server's greeting: a [`ReplyHeader`]
//! with id [`GREETING_ID`], status 0 if the connection is accepted, else [`REFUSED_ACCESS`]
//! or [`REFUSED_BUSY`] followed by `len` bytes of a sentence saying why (then the server
//! closes the connection).
//!
//! A stream rather than `SOCK_SEQPACKET`: WRITE payloads may be as large as the ring (up to
//! 1 GiB), more than one socket message can hold; the header carries the lengths instead.

use std::io;
use std::path::{Path, PathBuf};

/// The message code that cancels a pending QUERY (outside the range of request codes).
pub const CODE_CANCEL: u32 = 0x0000_CA9C;

/// The most reply bytes a request gets (every reply struct is smaller); a larger
/// `output_len` is cut to this.
pub const MAX_OUTPUT: u32 = 4096;

/// The id of the greeting the server sends first on every connection (clients number their
/// requests from 1).
pub const GREETING_ID: u64 = 0;

/// The greeting's status when the client's user may not use this device
/// (`STATUS_ACCESS_DENIED`).
pub const REFUSED_ACCESS: u32 = 0xC000_0022;

/// The greeting's status when the server has as many connections as it takes
/// (`STATUS_INSUFFICIENT_RESOURCES`).
pub const REFUSED_BUSY: u32 = 0xC000_009A;

/// How many descriptors travel with a MAP reply.
pub const MAP_FDS: usize = 3;

/// A request's header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestHeader {
    /// The request code (`Request as u32`) or [`CODE_CANCEL`].
    pub code: u32,
    /// Input bytes that follow the header.
    pub input_len: u32,
    /// Chosen by the client; the reply carries it back (for CANCEL: the QUERY to cancel).
    pub id: u64,
    /// The size of the client's output buffer.
    pub output_len: u32,
    /// Zero.
    pub reserved: u32,
}

impl RequestHeader {
    /// Its size on the wire.
    pub const SIZE: usize = 24;

    /// The wire bytes.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..4].copy_from_slice(&self.code.to_le_bytes());
        out[4..8].copy_from_slice(&self.input_len.to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..20].copy_from_slice(&self.output_len.to_le_bytes());
        out[20..24].copy_from_slice(&self.reserved.to_le_bytes());
        out
    }

    /// Reads the wire bytes.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> RequestHeader {
        RequestHeader {
            code: u32_at(bytes, 0),
            input_len: u32_at(bytes, 4),
            id: u64_at(bytes, 8),
            output_len: u32_at(bytes, 16),
            reserved: u32_at(bytes, 20),
        }
    }
}

/// A reply's header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyHeader {
    /// The request's `id`.
    pub id: u64,
    /// The NTSTATUS the request completed with.
    pub status: u32,
    /// Reply bytes that follow the header.
    pub len: u32,
}

impl ReplyHeader {
    /// Its size on the wire.
    pub const SIZE: usize = 16;

    /// The wire bytes.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..12].copy_from_slice(&self.status.to_le_bytes());
        out[12..16].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Reads the wire bytes.
    pub fn from_bytes(bytes: &[u8; Self::SIZE]) -> ReplyHeader {
        ReplyHeader {
            id: u64_at(bytes, 0),
            status: u32_at(bytes, 8),
            len: u32_at(bytes, 12),
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Where a usersim device listens unless told otherwise: `$RINGMAP_SOCKET`, else
/// `$XDG_RUNTIME_DIR/ringmap.sock`, else `ringmap.sock` in [`private_dir`] (which the server
/// creates, mode 0700).
pub fn default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RINGMAP_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(dir).join("ringmap.sock");
    }
    private_dir().join("ringmap.sock")
}

/// The directory of the default socket without `$XDG_RUNTIME_DIR`: `ringmap-$UID` in the
/// temporary directory (`$TMPDIR`, else `/tmp`). Only its owner may enter it: a socket in a
/// shared directory could be squatted by another user listening there first.
pub fn private_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ringmap-{}", rustix::process::geteuid().as_raw()))
}

/// Makes sure `dir` is a directory of this user that no one else may enter: creates it with
/// mode 0700 if it does not exist; refuses, with a sentence, one that is not a directory,
/// belongs to someone else, or lets group or others in.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!(
                    "cannot create the socket directory {}: {error}",
                    dir.display()
                ),
            ));
        }
    }
    // `symlink_metadata`: a symbolic link planted there by someone else is refused, not
    // followed.
    let meta = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "permission denied: the socket directory {} {why}; remove it (or set \
                 XDG_RUNTIME_DIR or --socket) and try again",
                dir.display()
            ),
        ))
    };
    if !meta.is_dir() {
        return refuse("is not a directory".into());
    }
    if meta.uid() != me {
        return refuse(format!(
            "belongs to uid {}, not to you (uid {me})",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return refuse(format!(
            "has mode {mode:04o}: others may enter it, only its owner should (0700)"
        ));
    }
    Ok(())
}

/// The clock records are stamped with and wake-ups are measured on: `CLOCK_MONOTONIC` in
/// nanoseconds, the simulated kernel's `KeQueryPerformanceCounter` (frequency 10^9).
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let request = RequestHeader {
            code: 3,
            input_len: 20,
            id: 0x1234_5678_9abc,
            output_len: 16,
            reserved: 0,
        };
        assert_eq!(RequestHeader::from_bytes(&request.to_bytes()), request);
        let reply = ReplyHeader {
            id: 7,
            status: 0xC000_0120,
            len: 32,
        };
        assert_eq!(ReplyHeader::from_bytes(&reply.to_bytes()), reply);
    }
}
