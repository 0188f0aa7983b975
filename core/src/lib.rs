//! The ring buffer map of ringmap, without an operating system.
//!
//! This crate is what the Windows driver and the Linux user-mode simulation host (`usersim`)
//! share: the memory layout ([`layout`]), the record format ([`record`]), the producer side
//! ([`producer`]: reserve, submit, discard; [`publish`]: claims made visible in order, with
//! no producer waiting for another), the consumer side ([`consumer`]: batches of
//! borrowed records), the validated consumer offset that protects producers from a hostile
//! consumer ([`consumer_offset`]), the arm / check handshake of the asynchronous query
//! ([`notify`]), and where the ring's memory comes from ([`placement`]).
//!
//! The ring never allocates and never blocks on the consumer. Every `unsafe` block is in
//! [`placement`], [`producer`] or [`consumer`] and carries a `SAFETY:` argument; every memory
//! ordering is argued next to the operation that uses it.
#![cfg_attr(not(any(test, loom)), no_std)]

#[cfg(any(feature = "alloc", test, loom))]
extern crate alloc;

pub mod abi;
pub mod consumer;
pub mod consumer_offset;
pub mod device;
pub mod layout;
pub mod mapping;
pub mod notify;
pub mod placement;
pub mod producer;
mod publish;
pub mod record;
mod sync;

pub use consumer::{Batch, Consumer, Record, Records};
pub use layout::{Capacity, LayoutError, PAGE_SIZE};
pub use mapping::Retired;
pub use placement::{DataView, RingPlacement, SharedView};
pub use producer::{Hooks, Reservation, ReserveError, Ring};

#[cfg(any(feature = "alloc", test, loom))]
pub use placement::HeapRing;

#[cfg(all(test, loom))]
mod device_loom;
#[cfg(all(test, not(loom)))]
mod device_tests;
#[cfg(all(test, not(loom)))]
mod model_tests;
#[cfg(all(test, not(loom)))]
mod ring_tests;
