//! `ringmap serve` under attack and interruption: it never removes what is not its own stale
//! socket, and it removes its socket when told to stop (SIGINT, SIGTERM).
#![cfg(unix)]

use std::process::{Command, Stdio};
use std::time::Duration;

use ringmap_client::Device;
use ringmap_tests::{TempDir, eventually, ringmap_binary};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn serve_removes_its_socket_on_sigint_and_sigterm() {
    for signal in ["INT", "TERM"] {
        let dir = TempDir::new("serve-signal");
        let socket = dir.path().join("ringmap.sock");
        let serve = Command::new(ringmap_binary())
            .arg("--socket")
            .arg(&socket)
            .arg("serve")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringmap serve");
        eventually(LIMIT, || Device::open_at(&socket).ok()).expect("ringmap serve listens");
        let killed = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(serve.id().to_string())
            .status()
            .expect("run kill");
        assert!(killed.success());
        let output = serve.wait_with_output().expect("ringmap serve ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        println!("SIG{signal}: {} {stderr}", output.status);
        assert!(
            output.status.success(),
            "SIG{signal}: {}: {stderr}",
            output.status
        );
        assert!(
            !socket.exists(),
            "SIG{signal} left {} behind",
            socket.display()
        );
    }
}

#[test]
fn serve_refuses_to_replace_a_regular_file() {
    let dir = TempDir::new("serve-file");
    let file = dir.path().join("precious.txt");
    std::fs::write(&file, b"precious").unwrap();
    let output = Command::new(ringmap_binary())
        .arg("--socket")
        .arg(&file)
        .arg("serve")
        .stdin(Stdio::null())
        .output()
        .expect("run ringmap serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}
