//! The C example (`examples/consumer.c`) compiles against `include/ringmap.h` and the static
//! library, and runs against a usersim device: libbpf's calls, a callback that stops early.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;

use ringmap_tests::TestDevice;

/// `target/<profile>`, from the test executable's path.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

#[test]
fn the_c_example_consumes_like_a_libbpf_consumer() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let profile = profile_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "-p", "ringmap-capi", "--lib"])
        .env("CARGO_TARGET_DIR", profile.parent().expect("target"));
    if profile.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(
        build.status().expect("cargo").success(),
        "cargo build -p ringmap-capi"
    );
    let library = profile.join("libringmap.a");
    assert!(library.exists(), "{} was not built", library.display());
    let binary = profile.join("ringmap-c-consumer");
    let compiled = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("examples/consumer.c"))
        .arg(&library)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&binary)
        .output()
        .expect("cc (install a C compiler: gcc)");
    assert!(
        compiled.status.success(),
        "the C example does not compile: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let server = TestDevice::start(64 << 10);
    let socket = server.socket().expect("a usersim socket");
    let run = Command::new(&binary)
        .arg(socket)
        .args(["one", "two", "stop", "three"])
        .output()
        .expect("run the C example");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        stdout, "record 0: one\nrecord 1: two\npoll: -1\nproduced 4 consumed 2\n",
        "the callback's -1 stops the poll and keeps \"stop\" and \"three\" in the ring"
    );
}
