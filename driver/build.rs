//! Build script of `ringmap-driver`.
//!
//! `wdk_build::configure_wdk_binary_build` reads `[package.metadata.wdk.driver-model]`, checks
//! that the C runtime is linked statically (`.cargo/config.toml`), and emits the kernel-mode
//! linker arguments (`/DRIVER`, `/ENTRY:FxDriverEntry`, `/SUBSYSTEM:NATIVE`, ...) and library
//! search paths of the installed WDK. wdk-build compiles only on a Windows host, which is why this
//! crate is not in the workspace's `default-members`.

fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}
