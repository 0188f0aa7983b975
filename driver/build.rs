//! Build script of `ringmap-driver`.
//!
//! `wdk_build::configure_wdk_binary_build` reads `[package.metadata.wdk.driver-model]`, checks
//! that the C runtime is linked statically (`.cargo/config.toml`), and emits the kernel-mode
//! linker arguments (`/DRIVER`, `/ENTRY:FxDriverEntry`, `/SUBSYSTEM:NATIVE`, ...) and library
//! search paths of the installed WDK. wdk-build compiles only on a Windows host, which is why this
//! crate is not in the workspace's `default-members`.
//!
//! It also compiles `src/seh.c` (the `__try` around `MmProbeAndLockPages`, see `src/memory.rs`)
//! with MSVC through the `cc` crate: `/kernel` (kernel-mode code: no C++ exceptions or RTTI,
//! checks kernel-safe intrinsics), `/GS-` (no stack cookie in a function that has no buffers).
//! `cc` emits `cargo:rustc-link-lib=static=ringmap_seh`; `__C_specific_handler` comes from
//! ntoskrnl.lib, which wdk-build links for KMDF.

fn main() -> Result<(), wdk_build::ConfigError> {
    println!("cargo::rerun-if-changed=src/seh.c");
    cc::Build::new()
        .file("src/seh.c")
        .flag("/kernel")
        .flag("/GS-")
        .warnings(true)
        .compile("ringmap_seh");
    wdk_build::configure_wdk_binary_build()
}
