//! ringmap's KMDF driver (Windows only).
//!
//! Placeholder: the driver itself (`DriverEntry`, device add, queue, file-object callbacks, the
//! platform trait of `ringmap-core` over WDF/WDM) is written in the next phase, once the
//! device-logic API in `core/` exists. Every WDF/WDM name it will use, and where it was checked,
//! is listed in `driver/API_CHECKS.md`.
//!
//! This crate is never built on Linux: `wdk-build` refuses non-Windows hosts, so the crate is
//! outside the workspace's `default-members` and is built only by `cargo make` on Windows.

#![no_std]
