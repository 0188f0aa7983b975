//! End to end through the client API, with the device in another process: a usersim
//! `ringmap serve` started for each test, or the installed driver (`RINGMAP_BACKEND=driver`,
//! run with `--test-threads=1`). No timing assertions: every deadline below only turns a hang
//! into a failure.

#[cfg(unix)]
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use ringmap_core::abi::{
    EmptyRequest, GenerateRequest as Generate, QueryRequest, Request, StatsReply, Wire,
    WriteRequest,
};
use ringmap_tests::{
    Backend, Device, Error, GenerateRequest, Status, TestDevice, backend, child_open, child_role,
    consume, eventually, spawn_child, tagged_record,
};

const LIMIT: Duration = Duration::from_secs(30);

fn raw_unmap(device: &Device) -> Result<Vec<u8>, Error> {
    device.raw_request(Request::Unmap as u32, EmptyRequest::new().as_bytes(), 0)
}

fn stats(device: &Device) -> StatsReply {
    device.stats().expect("stats")
}

/// Stops the generator (its threads have submitted their count, or are told to stop) and
/// waits for its threads.
fn stop_generator(device: &Device) {
    device
        .generate(GenerateRequest::stop())
        .expect("stop the generator");
    assert_eq!(stats(device).generator_producers, 0);
}

fn run_generator(capacity: u64, producers: u32, payload: u32, rate: u64, per_producer: u64) {
    let server = TestDevice::start(capacity);
    let device = server.open();
    let mut mapping = device.map().expect("map");
    let before = stats(&device);
    device
        .generate(GenerateRequest::start(
            producers,
            payload,
            rate,
            per_producer,
        ))
        .expect("generate");
    let total = u64::from(producers) * per_producer;
    let check = consume(&device, &mut mapping, producers as usize, total, LIMIT);
    check.assert_complete(per_producer);
    stop_generator(&device);
    let after = stats(&device);
    assert_eq!(after.produced - before.produced, total);
    // The generator retries a refused reservation with the same sequence number: every
    // failed reserve is a drop, and nothing is lost.
    let reply = device
        .wait(
            mapping.consumer().position(),
            Some(Duration::from_millis(10)),
        )
        .expect("wait");
    if let Some(reply) = reply {
        assert_eq!(reply.dropped, after.dropped);
    }
    assert_eq!(after.producer_offset, mapping.consumer().position());
}

#[test]
fn one_generator_producer_delivers_every_record_once_in_order() {
    run_generator(16 << 10, 1, 24, 0, 20_000);
}

#[test]
fn several_generator_producers_deliver_every_record_once_in_order() {
    // A small ring, so producers find it full and drop (then retry).
    // Paced, so that four producers fit on a small machine; bursts still fill the small ring.
    run_generator(8 << 10, 4, 40, 20_000, 5_000);
}

/// Four producers flat out on a small ring, with more threads than processors: a producer
/// that waits for an earlier, preempted one yields (the usersim platform's `relax`).
#[test]
fn several_generator_producers_flat_out_on_a_small_ring() {
    run_generator(16 << 10, 4, 40, 0, 10_000);
}

fn run_writers(capacity: u64, producers: usize, per_producer: u64) {
    let server = TestDevice::start(capacity);
    let device = server.open();
    let mut mapping = device.map().expect("map");
    let before = stats(&device);
    let handles: Vec<Device> = (0..producers).map(|_| server.open()).collect();
    let (check, full) = thread::scope(|scope| {
        let writers: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(producer, handle)| {
                scope.spawn(move || {
                    let mut full = 0u64;
                    for sequence in 0..per_producer {
                        let record = tagged_record(producer as u16, sequence, 16 + producer);
                        loop {
                            match handle.write(&record) {
                                Ok(_) => break,
                                Err(Error::RingFull) => {
                                    full += 1;
                                    thread::yield_now();
                                }
                                Err(error) => panic!("write: {error}"),
                            }
                        }
                    }
                    full
                })
            })
            .collect();
        let total = producers as u64 * per_producer;
        let check = consume(&device, &mut mapping, producers, total, LIMIT);
        let full: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
        (check, full)
    });
    check.assert_complete(per_producer);
    let after = stats(&device);
    assert_eq!(
        after.dropped - before.dropped,
        full,
        "dropped counts exactly the WRITEs refused with a full ring"
    );
    assert_eq!(
        after.produced - before.produced,
        producers as u64 * per_producer
    );
}

#[test]
fn one_writer_delivers_every_record_once_in_order() {
    run_writers(8 << 10, 1, 3_000);
}

#[test]
fn several_writers_deliver_every_record_once_in_order_and_drops_are_counted() {
    run_writers(8 << 10, 4, 2_000);
}

/// Waits until the device has seen `queries` QUERY requests in all.
fn wait_queries(device: &Device, queries: u64) {
    eventually(LIMIT, || (stats(device).queries >= queries).then_some(()))
        .expect("the QUERY reached the device");
}

#[test]
fn wait_pends_on_an_empty_ring_and_completes_on_the_next_write() {
    let server = TestDevice::start(64 << 10);
    let consumer = server.open();
    let producer = server.open();
    let mut mapping = consumer.map().expect("map");
    let position = mapping.consumer().position();
    let queries = stats(&producer).queries;
    let reply = thread::scope(|scope| {
        let writer = scope.spawn(move || {
            wait_queries(&producer, queries + 1);
            producer.write(b"wake up").expect("write");
        });
        let reply = mapping.wait(Some(LIMIT));
        writer.join().expect("writer");
        reply
    });
    let reply = reply.expect("wait").expect("completed, not cancelled");
    assert!(reply.producer_offset > position);
    let batch = mapping.consumer().batch();
    let records: Vec<&[u8]> = batch.iter().map(|r| r.payload()).collect();
    assert_eq!(records, vec![&b"wake up"[..]]);
}

#[test]
fn wait_with_a_timeout_is_cancelled_and_the_next_wait_works() {
    let server = TestDevice::start(64 << 10);
    let consumer = server.open();
    let other = server.open();
    let mut mapping = consumer.map().expect("map");
    let position = mapping.consumer().position();
    let reply = mapping.wait(Some(Duration::from_millis(50))).expect("wait");
    assert!(
        reply.is_none(),
        "nothing to wait for: cancelled at the timeout"
    );
    // The cancelled QUERY is gone: the mapping may pend again.
    assert!(
        mapping
            .wait(Some(Duration::from_millis(20)))
            .expect("a second wait")
            .is_none()
    );
    other.write(b"x").expect("write");
    let reply = mapping
        .wait(Some(LIMIT))
        .expect("wait")
        .expect("a committed head record completes QUERY at once");
    assert!(reply.producer_offset > position);
    assert_eq!(mapping.consumer().batch().len(), 1);
}

#[test]
fn closing_a_handle_with_a_pending_wait_releases_it() {
    const TEST: &str = "closing_a_handle_with_a_pending_wait_releases_it";
    if let Some(role) = child_role() {
        assert_eq!(role, "wait");
        let device = child_open();
        let mapping = device.map().expect("map");
        println!("CHILD waiting");
        let _ = mapping.wait(None);
        println!("CHILD done");
        return;
    }
    let server = TestDevice::start(64 << 10);
    let device = server.open();
    let queries = stats(&device).queries;
    let mut child = spawn_child(TEST, "wait", &server);
    wait_queries(&device, queries + 1);
    assert_eq!(stats(&device).mapped, 1);
    // Close it the hard way: the process dies, its handle is cleaned up, with its mapping and
    // its pending QUERY.
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    let mapping = eventually(LIMIT, || match device.map() {
        Ok(mapping) => Some(mapping),
        Err(Error::AlreadyMapped) => None,
        Err(error) => panic!("map after the close: {error}"),
    })
    .expect("the dead handle's mapping was released");
    // And the device still works for everyone: a QUERY pends and is woken.
    let writer = server.open();
    let queries = stats(&writer).queries;
    let reply = thread::scope(|scope| {
        let waker = scope.spawn(move || {
            wait_queries(&writer, queries + 1);
            writer.write(b"after").expect("write");
        });
        let reply = mapping.wait(Some(LIMIT));
        waker.join().expect("waker");
        reply
    });
    assert!(reply.expect("wait").is_some());
}

#[cfg(unix)]
#[test]
fn a_consumer_killed_mid_batch_leaves_nothing_lost() {
    const TEST: &str = "a_consumer_killed_mid_batch_leaves_nothing_lost";
    if let Some(role) = child_role() {
        assert_eq!(role, "consume");
        let device = child_open();
        let mut mapping = device.map().expect("child: map");
        let mut returned = 0u64;
        for _ in 0..3 {
            let consumer = mapping.consumer();
            let batch = consumer.batch_up_to(100);
            returned += batch.len() as u64;
            drop(batch);
            // Return the space (and tell the device how far we are).
            let position = consumer.position();
            let _ = device.wait(position, Some(Duration::from_millis(1)));
            println!("CHILD returned {returned}");
        }
        let batch = mapping.consumer().batch_up_to(100);
        assert!(!batch.is_empty());
        let _ = batch.iter().count();
        println!("CHILD holding {returned}");
        loop {
            thread::park();
        }
    }
    let server = TestDevice::start(64 << 10);
    let device = server.open();
    const RECORDS: u64 = 1_000;
    for sequence in 0..RECORDS {
        device
            .write(&tagged_record(0, sequence, 24))
            .expect("write");
    }
    let mut child = spawn_child(TEST, "consume", &server);
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut returned = None;
    for line in stdout.lines() {
        let line = line.expect("child output");
        if let Some(count) = line.strip_prefix("CHILD holding ") {
            returned = Some(count.parse::<u64>().expect("a count"));
            break;
        }
    }
    let returned = returned.expect("the child took a batch and holds it");
    assert_eq!(returned, 300);
    child.kill().expect("SIGKILL the consumer");
    child.wait().expect("reap it");
    // The dead consumer's mapping is released (asynchronously): a new one maps.
    let mut mapping = eventually(LIMIT, || match device.map() {
        Ok(mapping) => Some(mapping),
        Err(Error::AlreadyMapped) => None,
        Err(error) => panic!("map after the consumer died: {error}"),
    })
    .expect("the dead consumer's mapping was released");
    let mut next = returned;
    loop {
        let batch = mapping.consumer().batch();
        if batch.is_empty() {
            break;
        }
        for payload in batch.iter() {
            let (producer, sequence, _) =
                ringmap_core::abi::generated::parse(&payload).expect("a tagged record");
            assert_eq!(
                (producer, sequence),
                (0, next),
                "carries on from the consumer offset"
            );
            next += 1;
        }
    }
    assert_eq!(next, RECORDS, "nothing lost");
}

#[test]
fn a_second_map_is_refused_while_the_first_lives() {
    let server = TestDevice::start(64 << 10);
    let first = server.open();
    let second = server.open();
    let mapping = first.map().expect("map");
    assert!(matches!(second.map(), Err(Error::AlreadyMapped)));
    assert!(matches!(first.map(), Err(Error::AlreadyMapped)));
    assert_eq!(stats(&second).mapped, 1);
    // Only the mapping's owner can undo it.
    assert!(matches!(
        raw_unmap(&second),
        Err(Error::Status(Status::InvalidDeviceState))
    ));
    // Dropping the mapping unmaps it before `drop` returns.
    drop(mapping);
    assert_eq!(stats(&second).mapped, 0);
    // UNMAP without a mapping is refused.
    assert!(matches!(
        raw_unmap(&first),
        Err(Error::Status(Status::InvalidDeviceState))
    ));
    let mapping = second.map().expect("map after the first mapping is gone");
    assert!(matches!(first.map(), Err(Error::AlreadyMapped)));
    // Closing the handle releases its mapping too.
    drop(mapping);
    drop(second);
    let mapping = eventually(LIMIT, || match first.map() {
        Ok(mapping) => Some(mapping),
        Err(Error::AlreadyMapped) => None,
        Err(error) => panic!("map after the mapper closed: {error}"),
    });
    assert!(mapping.is_some(), "a closed handle's mapping is released");
}

#[cfg(unix)]
#[test]
fn the_producer_page_and_the_data_are_read_only() {
    const TEST: &str = "the_producer_page_and_the_data_are_read_only";
    if let Some(role) = child_role() {
        let device = child_open();
        let mapping = device.map().expect("child: map");
        let target = match role.as_str() {
            "producer-page" => mapping.producer_page_ptr() as *mut u8,
            "data" => mapping.data_ptr() as *mut u8,
            "data-second-view" => {
                mapping.data_ptr().wrapping_add(mapping.capacity() as usize) as *mut u8
            }
            other => panic!("unknown role {other}"),
        };
        // SAFETY: none; this write must fault, and the parent checks that it does.
        unsafe { target.write_volatile(0x5A) };
        println!("CHILD survived");
        std::process::exit(0);
    }
    use std::os::unix::process::ExitStatusExt;
    let server = TestDevice::start(64 << 10);
    let device = server.open();
    device.write(b"data").expect("write");
    for role in ["producer-page", "data", "data-second-view"] {
        let child = spawn_child(TEST, role, &server);
        let output = child.wait_with_output().expect("child");
        assert_eq!(
            output.status.signal(),
            Some(11),
            "{role}: the write must die of SIGSEGV ({:?}, {})",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
        // The dead child's mapping is released before the next one maps.
        eventually(LIMIT, || (stats(&device).mapped == 0).then_some(()))
            .expect("the child's mapping was released");
    }
    let mut mapping = device.map().expect("map");
    let batch = mapping.consumer().batch();
    let records: Vec<&[u8]> = batch.iter().map(|r| r.payload()).collect();
    assert_eq!(records, vec![&b"data"[..]], "the record is unchanged");
}

#[test]
fn a_hostile_consumer_page_cannot_disturb_the_host_or_other_handles() {
    let server = TestDevice::start(16 << 10);
    let hostile = server.open();
    let observer = server.open();
    let writer = server.open();
    let mapping = hostile.map().expect("map");
    let page = mapping.consumer_page_ptr() as usize;
    let capacity = mapping.capacity();
    hostile
        .generate(GenerateRequest::start(2, 32, 50_000, 0))
        .expect("generate");
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let stop = &stop;
        let scribbler = scope.spawn(move || {
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            let mut stores = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // xorshift: any value, some near the real offsets, some wild.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let value = match state % 4 {
                    0 => state,
                    1 => state % (4 * capacity),
                    2 => u64::MAX - state % 64,
                    _ => (state % capacity) & !7,
                };
                // SAFETY: the consumer page is this process's to write (read-write mapping
                // owned by `mapping`, alive for this scope); any value is allowed there.
                unsafe { (page as *mut u64).write_volatile(value) };
                stores += 1;
            }
            stores
        });
        for _ in 0..50 {
            let s = stats(&observer);
            assert_eq!(s.capacity, capacity);
            assert!(s.producer_offset.wrapping_sub(s.consumer_offset) <= capacity);
            match writer.write(b"still here") {
                Ok(_) | Err(Error::RingFull) => {}
                Err(error) => panic!("write beside a hostile consumer: {error}"),
            }
            // QUERY with wild offsets is validated, never trusted.
            let _ = hostile.wait(u64::MAX - 8, Some(Duration::from_millis(1)));
            thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(scribbler.join().expect("scribbler") > 0);
    });
    hostile.generate(GenerateRequest::stop()).expect("stop");
    drop(mapping);
    drop(hostile);
    // A new consumer reads well-formed records only, each producer's in order.
    let mut mapping = eventually(LIMIT, || observer.map().ok()).expect("map");
    let mut last = [None::<u64>; 2];
    loop {
        let consumer = mapping.consumer();
        let batch = consumer.batch();
        if batch.is_empty() {
            break;
        }
        for payload in batch.iter() {
            if payload.payload() == b"still here" {
                continue;
            }
            let (producer, sequence, _) =
                ringmap_core::abi::generated::parse(&payload).expect("a generated record");
            assert_eq!(payload.len(), 32);
            let slot = &mut last[producer as usize];
            assert!(
                slot.is_none_or(|previous| sequence > previous),
                "order kept"
            );
            *slot = Some(sequence);
        }
    }
    let position = mapping.consumer().position();
    let _ = observer.wait(position, Some(Duration::from_millis(1)));
    writer
        .write(b"after")
        .expect("a write after the hostile consumer is gone");
    let batch = mapping.consumer().batch();
    assert_eq!(
        batch.iter().map(|r| r.payload()).collect::<Vec<_>>(),
        vec![&b"after"[..]]
    );
}

fn bytes_with(mut bytes: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
    bytes[at] = value;
    bytes
}

#[test]
fn malformed_requests_get_their_status_and_change_nothing() {
    let server = TestDevice::start(64 << 10);
    let device = server.open();
    device.write(b"existing").expect("write");
    let before = stats(&device);
    let empty = EmptyRequest::new().as_bytes().to_vec();
    let query = QueryRequest::new(0).as_bytes().to_vec();
    let mut write = WriteRequest::new(3).as_bytes().to_vec();
    write.extend_from_slice(b"abc");
    let generate = Generate::start(1, 16, 0, 1).as_bytes().to_vec();
    let stats_code = Request::Stats as u32;
    let cases: Vec<(&str, u32, Vec<u8>, usize, Status)> = vec![
        (
            "STATS truncated",
            stats_code,
            empty[..7].to_vec(),
            96,
            Status::InvalidParameter,
        ),
        (
            "STATS too long",
            stats_code,
            [&empty[..], &[0]].concat(),
            96,
            Status::InvalidParameter,
        ),
        (
            "STATS wrong size field",
            stats_code,
            bytes_with(empty.clone(), 0, 16),
            96,
            Status::InvalidParameter,
        ),
        (
            "STATS reserved",
            stats_code,
            bytes_with(empty.clone(), 4, 1),
            96,
            Status::InvalidParameter,
        ),
        (
            "STATS output too small",
            stats_code,
            empty.clone(),
            95,
            Status::BufferTooSmall,
        ),
        (
            "MAP truncated",
            Request::Map as u32,
            empty[..4].to_vec(),
            48,
            Status::InvalidParameter,
        ),
        (
            "MAP reserved",
            Request::Map as u32,
            bytes_with(empty.clone(), 7, 1),
            48,
            Status::InvalidParameter,
        ),
        (
            "MAP output too small",
            Request::Map as u32,
            empty.clone(),
            47,
            Status::BufferTooSmall,
        ),
        (
            "UNMAP without a mapping",
            Request::Unmap as u32,
            empty.clone(),
            0,
            Status::InvalidDeviceState,
        ),
        (
            "UNMAP reserved",
            Request::Unmap as u32,
            bytes_with(empty.clone(), 4, 1),
            0,
            Status::InvalidParameter,
        ),
        (
            "QUERY truncated",
            Request::Query as u32,
            query[..15].to_vec(),
            32,
            Status::InvalidParameter,
        ),
        (
            "QUERY reserved",
            Request::Query as u32,
            bytes_with(query.clone(), 4, 1),
            32,
            Status::InvalidParameter,
        ),
        (
            "QUERY output too small",
            Request::Query as u32,
            query.clone(),
            31,
            Status::BufferTooSmall,
        ),
        (
            "WRITE payload short",
            Request::Write as u32,
            write[..18].to_vec(),
            16,
            Status::InvalidParameter,
        ),
        (
            "WRITE payload long",
            Request::Write as u32,
            [&write[..], b"d"].concat(),
            16,
            Status::InvalidParameter,
        ),
        (
            "WRITE length zero",
            Request::Write as u32,
            WriteRequest::new(0).as_bytes().to_vec(),
            16,
            Status::InvalidParameter,
        ),
        (
            "WRITE reserved2",
            Request::Write as u32,
            bytes_with(write.clone(), 12, 1),
            16,
            Status::InvalidParameter,
        ),
        (
            "WRITE output too small",
            Request::Write as u32,
            write.clone(),
            15,
            Status::BufferTooSmall,
        ),
        (
            "WRITE larger than the ring",
            Request::Write as u32,
            {
                let mut big = WriteRequest::new(1 << 20).as_bytes().to_vec();
                big.resize(16 + (1 << 20), 7);
                big
            },
            16,
            Status::InvalidParameter,
        ),
        (
            "GENERATE no producers",
            Request::Generate as u32,
            Generate::start(0, 16, 0, 1).as_bytes().to_vec(),
            8,
            Status::InvalidParameter,
        ),
        (
            "GENERATE payload too small",
            Request::Generate as u32,
            Generate::start(1, 7, 0, 1).as_bytes().to_vec(),
            8,
            Status::InvalidParameter,
        ),
        (
            "GENERATE payload larger than the ring",
            Request::Generate as u32,
            Generate::start(1, 1 << 20, 0, 1).as_bytes().to_vec(),
            8,
            Status::InvalidParameter,
        ),
        (
            "GENERATE unknown action",
            Request::Generate as u32,
            bytes_with(generate.clone(), 4, 2),
            8,
            Status::InvalidParameter,
        ),
        (
            "GENERATE truncated",
            Request::Generate as u32,
            generate[..31].to_vec(),
            8,
            Status::InvalidParameter,
        ),
        (
            "GENERATE output too small",
            Request::Generate as u32,
            generate.clone(),
            7,
            Status::BufferTooSmall,
        ),
        (
            "SET_EVENT from a handle that holds no mapping",
            Request::SetEvent as u32,
            ringmap_core::abi::SetEventRequest::new(0)
                .as_bytes()
                .to_vec(),
            0,
            Status::AccessDenied,
        ),
        (
            "unknown code 8",
            8,
            empty.clone(),
            64,
            Status::InvalidDeviceRequest,
        ),
        (
            "unknown code 0x7fff",
            0x7fff,
            empty.clone(),
            64,
            Status::InvalidDeviceRequest,
        ),
    ];
    for (name, code, input, output_len, status) in cases {
        match device.raw_request(code, &input, output_len) {
            Err(Error::Status(got)) => assert_eq!(got, status, "{name}"),
            other => panic!("{name}: {other:?}, expected {status}"),
        }
        assert_eq!(stats(&device), before, "{name} changed nothing");
    }
    // The well-formed requests still work.
    let reply = device
        .raw_request(stats_code, &empty, StatsReply::SIZE as usize)
        .expect("a well-formed STATS");
    assert_eq!(
        StatsReply::read_exact(&reply).expect("a STATS reply"),
        before
    );
}

#[test]
fn requests_after_the_server_dies_say_the_device_is_gone() {
    if backend() == Backend::Driver {
        return;
    }
    let mut server = TestDevice::start(64 << 10);
    let device = server.open();
    device.write(b"x").expect("write");
    server.server().expect("usersim").kill();
    match device.stats() {
        Err(Error::DeviceGone) => {}
        other => panic!("stats from a dead device: {other:?}"),
    }
    assert!(server.try_open().is_err());
}

/// A well-formed request of `code` to mutate, if it is a known code.
fn well_formed(code: u32) -> Option<Vec<u8>> {
    Some(match Request::from_code(code)? {
        Request::Map | Request::Unmap | Request::Stats | Request::Revoke => {
            EmptyRequest::new().as_bytes().to_vec()
        }
        Request::Query => QueryRequest::new(0).as_bytes().to_vec(),
        Request::Write => [WriteRequest::new(4).as_bytes(), b"fuzz"].concat(),
        Request::Generate => Generate::stop().as_bytes().to_vec(),
        // No descriptor comes with it: the device refuses it, whatever the mutation.
        Request::SetEvent => ringmap_core::abi::SetEventRequest::new(1)
            .as_bytes()
            .to_vec(),
    })
}

#[test]
fn fuzzed_requests_never_crash_the_device() {
    use proptest::test_runner::{Config, TestRunner};
    let mut server = TestDevice::start(16 << 10);
    let device = server.open();
    let request = (
        0u32..9,
        proptest::collection::vec(any::<u8>(), 0..48),
        0usize..128,
        proptest::option::of((any::<usize>(), any::<u8>())),
    );
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(request, 1..8), |requests| {
            for (code, random, output_len, mutation) in requests {
                // Random bytes, or a well-formed request with one byte changed.
                let mut input = match (well_formed(code), mutation) {
                    (Some(mut bytes), Some((at, value))) => {
                        let at = at % bytes.len();
                        // A well-formed QUERY may pend for ever: change its header only.
                        let at = if code == Request::Query as u32 {
                            at % 8
                        } else {
                            at
                        };
                        bytes[at] = value;
                        bytes
                    }
                    _ => random,
                };
                // A well-formed MAP or QUERY is not hostile input: keep those malformed.
                let exact = match Request::from_code(code) {
                    Some(Request::Map) => well_formed(code),
                    Some(Request::Query) => Some(QueryRequest::new(0).as_bytes().to_vec()),
                    _ => None,
                };
                let size_ok = match Request::from_code(code) {
                    Some(Request::Map) => input.len() == EmptyRequest::SIZE as usize,
                    Some(Request::Query) => input.len() == QueryRequest::SIZE as usize,
                    _ => false,
                };
                if size_ok && exact.is_some_and(|exact| input[..8] == exact[..8]) {
                    input.push(0);
                }
                match device.raw_request(code, &input, output_len) {
                    Ok(_) | Err(Error::Status(_)) | Err(Error::RingFull) => {}
                    Err(error) => {
                        return Err(proptest::test_runner::TestCaseError::fail(format!(
                            "code {code}, input {input:?}: {error}"
                        )));
                    }
                }
            }
            Ok(())
        })
        .expect("every fuzzed request gets a status");
    let _ = device.generate(GenerateRequest::stop());
    let stats = device.stats().expect("the device still answers");
    assert_eq!(stats.mapped, 0);
    if let Some(process) = server.server() {
        assert!(process.is_running(), "the server survived");
    }
    // And it still works (the fuzz may have filled the ring with well-formed WRITEs).
    match device.write(b"after the fuzz") {
        Ok(_) | Err(Error::RingFull) => {}
        Err(error) => panic!("write after the fuzz: {error}"),
    }
}

#[test]
fn consumer_and_writers_in_different_processes_agree_on_every_record() {
    const TEST: &str = "consumer_and_writers_in_different_processes_agree_on_every_record";
    if let Some(role) = child_role() {
        let producer: u16 = role.parse().expect("a producer number");
        let device = child_open();
        for sequence in 0..2_000 {
            let record = tagged_record(producer, sequence, 48);
            while let Err(error) = device.write(&record) {
                assert!(matches!(error, Error::RingFull), "{error}");
                thread::yield_now();
            }
        }
        return;
    }
    let server = TestDevice::start(8 << 10);
    let device = server.open();
    let mut mapping = device.map().expect("map");
    let children: Vec<_> = (0..2)
        .map(|p| spawn_child(TEST, &p.to_string(), &server))
        .collect();
    let check = consume(&device, &mut mapping, 2, 4_000, LIMIT);
    for child in children {
        assert!(child.wait_with_output().expect("child").status.success());
    }
    check.assert_complete(2_000);
}

#[test]
fn ringmap_demo_reports_every_record_and_nothing_lost() {
    if backend() == Backend::Driver {
        return;
    }
    let output = std::process::Command::new(ringmap_tests::ringmap_binary())
        .args([
            "demo",
            "--producers",
            "2",
            "--records",
            "5000",
            "--rate",
            "50000",
        ])
        .args(["--capacity", "16K", "--payload", "32"])
        .output()
        .expect("run ringmap demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ringmap demo failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = |name: &str| -> String {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no `{name}:` line in {stdout}"))
            .to_string()
    };
    assert_eq!(value("records"), "10000");
    assert_eq!(value("bytes"), "320000");
    assert_eq!(value("lost"), "0");
    assert_eq!(value("duplicates"), "0");
    for name in ["records/s", "dropped", "wakeups"] {
        value(name).parse::<f64>().expect("a number");
    }
    assert!(value("wake latency p50").ends_with(" us"));
    assert!(value("wake latency p99").ends_with(" us"));
}

#[test]
fn ringmap_write_then_tail_round_trips_lines() {
    use std::io::Write;
    if backend() == Backend::Driver {
        return;
    }
    let server = TestDevice::start(64 << 10);
    let socket = server.socket().expect("usersim");
    let mut write = std::process::Command::new(ringmap_tests::ringmap_binary())
        .arg("--socket")
        .arg(socket)
        .arg("write")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run ringmap write");
    write
        .stdin
        .take()
        .expect("piped")
        .write_all(b"first line\nsecond line\n")
        .expect("feed ringmap write");
    assert!(write.wait().expect("ringmap write").success());
    let tail = std::process::Command::new(ringmap_tests::ringmap_binary())
        .arg("--socket")
        .arg(socket)
        .args(["tail", "--format", "text"])
        .output()
        .expect("run ringmap tail");
    assert!(tail.status.success());
    assert_eq!(
        String::from_utf8_lossy(&tail.stdout),
        "first line\nsecond line\n"
    );
    // tail returned the space: the device's consumer offset is past both records, and a new
    // consumer sees nothing.
    let device = server.open();
    let s = stats(&device);
    assert_eq!(s.consumer_offset, s.producer_offset);
    // The exited tail's handle is closed (asynchronously): its mapping goes with it.
    let mut mapping = eventually(LIMIT, || device.map().ok()).expect("map");
    assert!(mapping.consumer().batch().is_empty());
}
