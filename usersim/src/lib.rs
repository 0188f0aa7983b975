//! The ringmap driver's own code (`ringmap-driver`) served in a user-mode process on Linux,
//! the way microsoft/usersim runs eBPF for Windows' kernel code in user mode, but with the
//! rules checked while it runs ([`wdk_usersim`]):
//!
//! - [`server`]: the I/O manager: the Unix socket's connections are file objects, its
//!   messages IRPs to the driver; MAP replies carry the section handles as descriptors with
//!   `SCM_RIGHTS`.
//! - [`protocol`]: the framing of requests and replies, shared with the client.
//! - [`framing`]: cutting a connection's bytes into requests as they arrive.
//! - [`view`]: the client's mapping of the descriptors a MAP reply carries.
#![cfg(target_os = "linux")]

pub mod framing;
pub mod protocol;
pub mod server;
pub mod view;

pub use protocol::default_socket_path;
pub use server::{Report, Server, ServerConfig, serve_forever};
