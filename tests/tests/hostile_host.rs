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

/// A full ring that nobody consumes costs the generator bounded work: its producers back off
/// to one try a millisecond each, instead of retrying every few microseconds for ever. The
/// work is counted, not timed: every try on a full ring is one refused reservation (STATS
/// `dropped`).
#[test]
fn a_full_ring_with_no_consumer_costs_the_generator_bounded_tries() {
    const PRODUCERS: u32 = 8;
    let server = ringmap_tests::TestDevice::start(64 << 10);
    let device = server.open();
    device
        .generate(ringmap_client::GenerateRequest::start(PRODUCERS, 24, 0, 0))
        .expect("start the generator");
    // Full once `produced` stops moving.
    let mut last = u64::MAX;
    let full = eventually(LIMIT, || {
        std::thread::sleep(Duration::from_millis(100));
        let produced = device.stats().expect("stats").produced;
        let settled = produced == last && produced > 0;
        last = produced;
        settled.then_some(())
    });
    assert!(full.is_some(), "the ring filled up");
    // Let every producer reach its longest pause, then count a second of tries.
    std::thread::sleep(Duration::from_millis(500));
    let before = device.stats().expect("stats").dropped;
    std::thread::sleep(Duration::from_secs(1));
    let tries = device.stats().expect("stats").dropped - before;
    device
        .generate(ringmap_client::GenerateRequest::stop())
        .expect("stop the generator");
    println!("{tries} tries on a full ring in about a second by {PRODUCERS} producers");
    assert!(
        tries < u64::from(PRODUCERS) * 3_000,
        "{tries} tries in a second: the generator does not back off"
    );
}
