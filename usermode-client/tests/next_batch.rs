//! `Mapping::next_batch` on a tokio runtime (feature `tokio`):
//! `cargo test -p ringmap-client --features tokio --test next_batch`.
#![cfg(all(feature = "tokio", target_os = "linux"))]

use std::time::Duration;

use ringmap_client::Device;
use ringmap_core::Capacity;
use ringmap_usersim::{Server, ServerConfig};

#[test]
fn next_batch_waits_without_blocking_the_runtime() {
    let dir = std::env::temp_dir().join(format!("ringmap-next-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("ringmap.sock");
    let server = Server::start(ServerConfig {
        socket_path: socket.clone(),
        capacity: Capacity::new(1 << 16).unwrap(),
        ..ServerConfig::default()
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let writer_socket = socket.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let device = Device::open_at(&writer_socket).unwrap();
        device.write(b"first").unwrap();
        device.write(b"second").unwrap();
    });
    let records = runtime.block_on(async {
        let device = Device::open_at(&socket).unwrap();
        let mut mapping = device.map().unwrap();
        let mut records = Vec::new();
        while records.len() < 2 {
            let batch = mapping.next_batch().await.unwrap();
            records.extend(batch.iter().map(|r| r.to_vec()));
        }
        records
    });
    writer.join().unwrap();
    assert_eq!(records, [b"first".to_vec(), b"second".to_vec()]);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
