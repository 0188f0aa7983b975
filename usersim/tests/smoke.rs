//! Smoke tests: a usersim server in this process, clients through the client library.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ringmap_client::{Device, Error, GenerateRequest, Status};
use ringmap_core::Capacity;
use ringmap_core::abi::generated;
use ringmap_usersim::{Server, ServerConfig};

fn server(capacity: u64) -> Server {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path: PathBuf = std::env::temp_dir().join(format!(
        "ringmap-smoke-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Server::start(ServerConfig {
        capacity: Capacity::new(capacity).unwrap(),
        ..ServerConfig::new(path)
    })
    .unwrap()
}

#[test]
fn write_map_and_read() {
    let server = server(1 << 16);
    let device = Device::open_at(server.socket_path()).unwrap();
    assert_eq!(device.write(b"hello").unwrap(), 0);
    let mut mapping = device.map().unwrap();
    assert_eq!(mapping.capacity(), 1 << 16);
    let mut records = Vec::new();
    mapping.consumer().consume(|r| records.push(r.to_vec()));
    assert_eq!(records, vec![b"hello".to_vec()]);
    let stats = device.stats().unwrap();
    assert_eq!((stats.produced, stats.mapped), (1, 1));
    // The space comes back with the next QUERY.
    let position = mapping.consumer().position();
    assert_eq!(
        device
            .wait(position, Some(Duration::from_millis(50)))
            .unwrap(),
        None
    );
    assert_eq!(device.stats().unwrap().consumer_offset, position);
    // Only the mapping's handle may QUERY.
    let other = Device::open_at(server.socket_path()).unwrap();
    assert!(matches!(
        other.wait(position, Some(Duration::from_millis(20))),
        Err(Error::Status(Status::AccessDenied))
    ));
    mapping.unmap().unwrap();
    assert_eq!(device.stats().unwrap().mapped, 0);
}

#[test]
fn wait_pends_until_a_write() {
    let server = server(1 << 16);
    let consumer = Device::open_at(server.socket_path()).unwrap();
    let mut mapping = consumer.map().unwrap();
    let path = server.socket_path().to_path_buf();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        Device::open_at(&path).unwrap().write(b"wake").unwrap()
    });
    let reply = consumer
        .wait(0, Some(Duration::from_secs(10)))
        .unwrap()
        .unwrap();
    assert!(reply.producer_offset > 0);
    assert_eq!(reply.dropped, 0);
    writer.join().unwrap();
    assert_eq!(
        mapping
            .consumer()
            .consume(|r| assert_eq!(r.payload(), b"wake")),
        1
    );
    assert_eq!(consumer.stats().unwrap().wakeups, 1);
}

#[test]
fn one_mapping_at_a_time_and_close_releases_it() {
    let server = server(1 << 16);
    let first = Device::open_at(server.socket_path()).unwrap();
    let second = Device::open_at(server.socket_path()).unwrap();
    let mapping = first.map().unwrap();
    assert!(matches!(second.map(), Err(Error::AlreadyMapped)));
    drop(mapping);
    drop(first);
    // The server notices the closed connection.
    let mut tries = 0;
    let _mapping = loop {
        match second.map() {
            Ok(mapping) => break mapping,
            Err(Error::AlreadyMapped) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
}

#[test]
fn shared_memory_is_read_only_for_the_client() {
    let server = server(1 << 16);
    let device = Device::open_at(server.socket_path()).unwrap();
    let mapping = device.map().unwrap();
    let prot = rustix::mm::MprotectFlags::READ | rustix::mm::MprotectFlags::WRITE;
    for (ptr, len) in [
        (mapping.producer_page_ptr(), 4096),
        (mapping.data_ptr(), 1 << 16),
    ] {
        // SAFETY: a failed mprotect changes nothing; should it succeed, the test fails
        // before anything writes.
        let result = unsafe { rustix::mm::mprotect(ptr as *mut _, len, prot) };
        assert_eq!(result, Err(rustix::io::Errno::ACCESS));
    }
    // The consumer page is writable.
    // SAFETY: the consumer page is mapped read-write and 8-aligned.
    unsafe { mapping.consumer_page_ptr().write_volatile(0) };
}

#[test]
fn bad_requests_get_statuses() {
    let server = server(1 << 16);
    let device = Device::open_at(server.socket_path()).unwrap();
    assert!(matches!(
        device.raw_request(99, &[], 64),
        Err(Error::Status(Status::InvalidDeviceRequest))
    ));
    assert!(matches!(
        device.raw_request(4, &[0; 7], 96),
        Err(Error::Status(Status::InvalidParameter))
    ));
    assert!(matches!(
        device.raw_request(4, &[8, 0, 0, 0, 0, 0, 0, 0], 95),
        Err(Error::Status(Status::BufferTooSmall))
    ));
    assert!(matches!(
        device.raw_request(1, &[8, 0, 0, 0, 0, 0, 0, 0], 0),
        Err(Error::Status(Status::InvalidDeviceState))
    ));
    assert!(matches!(
        device.write(&[0; 1 << 16]),
        Err(Error::Status(Status::InvalidParameter))
    ));
    // The connection still works.
    assert_eq!(device.stats().unwrap().produced, 0);
}

#[test]
fn generator_records_arrive_in_order() {
    let server = server(1 << 16);
    let device = Device::open_at(server.socket_path()).unwrap();
    let mut mapping = device.map().unwrap();
    const COUNT: u64 = 5000;
    assert_eq!(
        device
            .generate(GenerateRequest::start(2, 24, 0, COUNT))
            .unwrap(),
        2
    );
    let mut next = [0u64; 2];
    while next.iter().any(|&n| n < COUNT) {
        let position = mapping.consumer().position();
        device
            .wait(position, Some(Duration::from_secs(10)))
            .unwrap()
            .unwrap();
        mapping.consumer().consume(|record| {
            let (producer, sequence, _) = generated::parse(&record).unwrap();
            assert_eq!(sequence, next[producer as usize]);
            next[producer as usize] += 1;
        });
    }
    let stats = device.stats().unwrap();
    assert_eq!(stats.produced, 2 * COUNT);
    device.generate(GenerateRequest::stop()).unwrap();
}

#[test]
fn stop_makes_the_device_go_away() {
    let server = server(1 << 16);
    let device = Device::open_at(server.socket_path()).unwrap();
    let path = server.socket_path().to_path_buf();
    server.stop();
    assert!(matches!(device.stats(), Err(Error::DeviceGone)));
    assert!(matches!(
        Device::open_at(&path),
        Err(Error::NoDevice { .. })
    ));
}
