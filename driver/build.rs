//! Build script of `ringmap-driver`.
//!
//! On Windows, for a Windows target, `wdk_build::configure_wdk_binary_build` reads
//! `[package.metadata.wdk.driver-model]`, checks that the C runtime is linked statically
//! (`.cargo/config.toml`), and emits the kernel-mode linker arguments (`/DRIVER`,
//! `/ENTRY:FxDriverEntry`, `/SUBSYSTEM:NATIVE`, ...) and library search paths of the installed
//! WDK. It also compiles `src/seh.c` (the `__try` around `MmProbeAndLockPages`, see
//! `src/memory.rs`) with MSVC through the `cc` crate: `/kernel` (kernel-mode code: no C++
//! exceptions or RTTI, checks kernel-safe intrinsics), `/GS-` (no stack cookie in a function
//! that has no buffers). `cc` emits `cargo:rustc-link-lib=static=ringmap_seh`;
//! `__C_specific_handler` comes from ntoskrnl.lib, which wdk-build links for KMDF.
//!
//! Anywhere else nothing runs: on Linux the driver builds against wdk-usersim (a user-mode
//! kernel, which provides `ringmap_probe_and_lock_pages` itself), and wdk-build and cc are
//! Windows-only build dependencies.

fn main() {
    println!("cargo::rerun-if-changed=src/seh.c");
    #[cfg(windows)]
    if std::env::var_os("CARGO_CFG_WINDOWS").is_some() {
        cc::Build::new()
            .file("src/seh.c")
            .flag("/kernel")
            .flag("/GS-")
            .warnings(true)
            .compile("ringmap_seh");
        if let Err(error) = wdk_build::configure_wdk_binary_build() {
            panic!("wdk-build: {error}");
        }
    }
}
