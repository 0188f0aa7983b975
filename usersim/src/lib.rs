//! The ringmap device hosted in a user-mode process on Linux, the way microsoft/usersim runs
//! eBPF for Windows' kernel code in user mode.
//!
//! - [`ring`]: the ring's memory: two sealed `memfd`s (producer page, data) mapped in this
//!   process as `[producer page | data | data]`, and the kernel page in private anonymous
//!   memory that never leaves the process.
//! - [`consumer_page`]: a fresh consumer page (`memfd`) for every mapping.
//! - [`server`]: the [`Platform`](ringmap_core::device::Platform) of the device, and the Unix
//!   socket that carries requests ([`protocol`]); MAP replies carry the descriptors with
//!   `SCM_RIGHTS`.
//! - [`protocol`]: the framing of requests and replies, shared with the client.
//! - [`framing`]: cutting a connection's bytes into requests as they arrive.
#![cfg(target_os = "linux")]

pub mod consumer_page;
pub mod framing;
pub mod protocol;
pub mod ring;
pub mod server;

pub use protocol::default_socket_path;
pub use server::{Server, ServerConfig, serve_forever};
