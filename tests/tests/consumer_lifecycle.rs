//! The consumer's whole lifecycle against `ringmap serve` in another process (issue 8): a
//! former consumer that keeps writing its old page, QUERYs from handles that are not the
//! mapping, takeovers racing the producers, and `ringmap tail` returning exactly what it
//! printed. The design is `models/ring_buffer/ConsumerHandover.tla`; `CONFORMANCE.md` says
//! where each of its steps lives.

#[cfg(unix)]
use std::io::Read;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringmap_core::abi::StatsReply;
use ringmap_tests::{
    Device, Error, GenerateRequest, SequenceCheck, Status, TestDevice, eventually, ringmap_binary,
    tagged_record,
};

const LIMIT: Duration = Duration::from_secs(30);

fn stats(device: &Device) -> StatsReply {
    device.stats().expect("stats")
}

/// Writes `records` tagged records (producer 0, sequences 0..) through `device`, retrying
/// while the ring is full.
fn write_records(device: &Device, records: u64, len: usize) {
    for sequence in 0..records {
        let record = tagged_record(0, sequence, len);
        let deadline = Instant::now() + LIMIT;
        loop {
            match device.write(&record) {
                Ok(_) => break,
                Err(Error::RingFull) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_micros(200))
                }
                Err(error) => panic!("write {sequence}: {error}"),
            }
        }
    }
}

/// Reads through `mapping` until `records` records arrived, checking each (in order, whole,
/// none twice, none missing).
fn read_all(mapping: &mut ringmap_tests::Mapping<'_>, check: &mut SequenceCheck, records: u64) {
    let deadline = Instant::now() + LIMIT;
    while check.records < records {
        assert!(
            Instant::now() < deadline,
            "only {} of {records} records arrived",
            check.records
        );
        if mapping.consumer().consume(|record| check.record(&record)) == 0 {
            mapping
                .wait(Some(Duration::from_millis(50)))
                .expect("the mapping's own wait");
        }
    }
    assert!(check.errors.is_empty(), "{:?}", check.errors);
}

/// A thread that writes hostile values into a former consumer's page until stopped.
fn scribble(page: *mut u64, stop: &AtomicBool) -> u64 {
    let page = AtomicPagePtr(page);
    let mut writes = 0u64;
    let mut value = 0x9E37_79B9_7F4A_7C15u64;
    while !stop.load(Ordering::Relaxed) {
        value = value.rotate_left(7) ^ writes;
        let hostile = match writes % 4 {
            0 => u64::MAX,
            1 => value,
            2 => value & 0xFFFF_FFF8,
            _ => 8,
        };
        page.store(hostile);
        writes += 1;
    }
    writes
}

/// The former consumer's page as its process still has it mapped.
struct AtomicPagePtr(*mut u64);

impl AtomicPagePtr {
    fn store(&self, value: u64) {
        // SAFETY: the page stays mapped for the rest of the process (the mapping's views were
        // kept on purpose) and is 8-aligned; an atomic store, as any writer of it makes.
        unsafe { AtomicU64::from_ptr(self.0) }.store(value, Ordering::Relaxed);
    }
}

/// A former consumer whose mapping ended (by UNMAP, or by closing its handle) keeps writing
/// its old page while the next one consumes: the next one loses nothing and gets nothing
/// torn, and starts where the former one returned space.
fn former_consumer_scribbles_while_the_next_consumes(close_instead_of_unmap: bool) {
    const RECORDS: u64 = 20_000;
    let server = TestDevice::start(64 << 10);
    let writer = server.open();
    let former = server.open();
    write_records(&writer, 100, 24);
    let mut check = SequenceCheck::new(1);
    let mut mapping = former.map().expect("map A");
    read_all(&mut mapping, &mut check, 40);
    let returned = mapping.consumer().position();
    let page = if close_instead_of_unmap {
        let page = mapping.consumer_page_ptr();
        // The process closes its handle and keeps its views (as a Windows process keeps a
        // section view after CloseHandle): no UNMAP.
        std::mem::forget(mapping);
        drop(former);
        page
    } else {
        mapping.unmap_keeping_views().expect("unmap A")
    };
    let next = server.open();
    let mut mapping = eventually(LIMIT, || match next.map() {
        Ok(mapping) => Some(mapping),
        Err(Error::AlreadyMapped) => None,
        Err(error) => panic!("map B: {error}"),
    })
    .expect("B maps once A's mapping is gone");
    assert_eq!(
        mapping.consumer().position(),
        returned,
        "B starts where A returned space"
    );
    let stop = AtomicBool::new(false);
    let page = page as usize;
    let writes = thread::scope(|scope| {
        let scribbler = scope.spawn(|| scribble(page as *mut u64, &stop));
        let producer = scope.spawn(move || write_records_from(&writer, 100, RECORDS, 24));
        read_all(&mut mapping, &mut check, RECORDS);
        producer.join().expect("producer");
        stop.store(true, Ordering::Relaxed);
        scribbler.join().expect("scribbler")
    });
    assert!(writes > 0);
    let stats = stats(&next);
    assert_eq!(stats.produced, RECORDS);
    assert!(stats.consumer_offset <= mapping.consumer().position());
}

/// As `write_records`, from sequence `from` up to `to`.
fn write_records_from(device: &Device, from: u64, to: u64, len: usize) {
    for sequence in from..to {
        let record = tagged_record(0, sequence, len);
        let deadline = Instant::now() + LIMIT;
        loop {
            match device.write(&record) {
                Ok(_) => break,
                Err(Error::RingFull) if Instant::now() < deadline => thread::yield_now(),
                Err(error) => panic!("write {sequence}: {error}"),
            }
        }
    }
}

#[test]
fn a_former_consumer_writing_its_old_page_after_unmap_moves_nothing() {
    former_consumer_scribbles_while_the_next_consumes(false);
}

#[test]
fn a_former_consumer_writing_its_old_page_after_close_moves_nothing() {
    former_consumer_scribbles_while_the_next_consumes(true);
}

#[test]
fn a_query_from_a_handle_that_is_not_the_mapping_is_refused_and_changes_nothing() {
    const RECORDS: u64 = 10_000;
    let server = TestDevice::start(64 << 10);
    let consumer = server.open();
    let writer = server.open();
    let foreign = server.open();
    // Refused before the mapping exists, and while it does; nothing counted, nothing moved.
    let before = stats(&foreign);
    for offset in [u64::MAX, 0, 16, u64::MAX - 8] {
        assert!(matches!(
            foreign.wait(offset, Some(Duration::from_millis(10))),
            Err(Error::Status(Status::AccessDenied))
        ));
    }
    assert_eq!(stats(&foreign).queries, before.queries);
    let mut mapping = consumer.map().expect("map");
    let mut check = SequenceCheck::new(1);
    let stop = AtomicBool::new(false);
    let refused = thread::scope(|scope| {
        let stop = &stop;
        let attacker = scope.spawn(move || {
            let mut refused = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match foreign.wait(u64::MAX, Some(Duration::from_millis(10))) {
                    Err(Error::Status(Status::AccessDenied)) => refused += 1,
                    other => panic!("a foreign QUERY: {other:?}"),
                }
            }
            refused
        });
        let producer = scope.spawn(move || {
            write_records(&writer, RECORDS, 24);
            writer
        });
        // The mapping's own QUERYs are never refused as busy by the attacker's.
        read_all(&mut mapping, &mut check, RECORDS);
        let writer = producer.join().expect("producer");
        stop.store(true, Ordering::Relaxed);
        (attacker.join().expect("attacker"), writer)
    });
    let (refused, writer) = refused;
    assert!(refused > 0);
    let after = stats(&writer);
    assert!(after.consumer_offset <= mapping.consumer().position());
    // Only the mapping's own QUERYs counted.
    let own = after.queries - before.queries;
    assert!(
        own < refused + RECORDS,
        "{own} QUERYs counted, {refused} foreign ones refused"
    );
}

#[test]
fn forty_takeovers_after_a_full_ring_start_where_the_last_consumer_returned_space() {
    const TAKEOVERS: usize = 40;
    const CAPACITY: u64 = 64 << 10;
    let server = TestDevice::start(CAPACITY);
    let control = server.open();
    // Two generator producers flat out: they find the ring full and walk the consumer pages
    // while consumers come and go.
    control
        .generate(GenerateRequest::start(2, 24, 0, 0))
        .expect("generator");
    let mut check = SequenceCheck::new(2);
    let mut returned = None;
    for takeover in 0..TAKEOVERS {
        let device = server.open();
        let mut mapping = eventually(LIMIT, || match device.map() {
            Ok(mapping) => Some(mapping),
            Err(Error::AlreadyMapped) => None,
            Err(error) => panic!("map {takeover}: {error}"),
        })
        .expect("the previous consumer's mapping is released");
        let start = mapping.consumer().position();
        if let Some(returned) = returned {
            assert_eq!(
                start, returned,
                "takeover {takeover}: where the last one left"
            );
        }
        // Read a full ring's worth, then end: by UNMAP or by closing the handle, in turn.
        let target = check.records + CAPACITY / 32;
        read_all(&mut mapping, &mut check, target);
        returned = Some(mapping.consumer().position());
        if takeover % 2 == 0 {
            drop(mapping);
        } else {
            std::mem::forget(mapping); // no UNMAP: the close does it
        }
        drop(device);
    }
    control
        .generate(GenerateRequest::stop())
        .expect("stop the generator");
    assert!(check.errors.is_empty(), "{:?}", check.errors);
    assert_eq!(stats(&control).redelivered, 0, "each returned all it read");
}

/// Runs `ringmap --socket S <args>` with its standard output to a pipe.
fn ringmap(server: &TestDevice, args: &[&str]) -> Command {
    let mut command = Command::new(ringmap_binary());
    if let Some(socket) = server.socket() {
        command.arg("--socket").arg(socket);
    }
    command.args(args);
    command
}

/// Fills a 1 MiB ring with 32,768 generated records of 24 bytes (exactly full).
fn fill(server: &TestDevice) -> Device {
    let control = server.open();
    control
        .generate(GenerateRequest::start(1, 24, 0, 32_768))
        .expect("generator");
    let full = eventually(LIMIT, || (stats(&control).produced == 32_768).then_some(()));
    assert!(full.is_some(), "the generator filled the ring");
    control
}

#[test]
fn tail_piped_into_head_returns_only_what_it_wrote() {
    let server = TestDevice::start(1 << 20);
    let control = fill(&server);
    // `ringmap tail | head -1`: head exits after one line; tail sees EPIPE and stops.
    let mut tail = ringmap(&server, &["tail"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringmap tail");
    let mut first = String::new();
    BufReader::new(tail.stdout.take().expect("piped"))
        .read_line(&mut first)
        .expect("one line");
    // Closing our end is what head's exit does.
    let status = tail.wait().expect("tail ends");
    assert!(
        status.success(),
        "a closed pipe ends tail quietly: {status:?}"
    );
    let stats = stats(&control);
    let consumed = stats.consumer_offset;
    assert!(
        consumed < (1 << 20) / 4,
        "tail returned {consumed} of {} bytes for the one line read",
        stats.producer_offset
    );
    // The next consumer starts where tail stopped: nothing it did not write is skipped.
    let mapping = control.map().expect("map after tail");
    drop(mapping);
}

/// The offsets of `ringmap tail --format json` lines.
#[cfg(unix)]
fn offsets(json_lines: &str) -> Vec<u64> {
    json_lines
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            value["offset"].as_u64().expect("an offset")
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn ctrl_c_of_tail_follow_then_tail_prints_no_record_twice() {
    const RECORDS: u64 = 20_000;
    let server = TestDevice::start(1 << 20);
    let control = server.open();
    let mut follow = ringmap(&server, &["tail", "--follow", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringmap tail -f");
    let mapped = eventually(LIMIT, || (stats(&control).mapped == 1).then_some(()));
    assert!(mapped.is_some(), "tail -f mapped the ring");
    control
        .generate(GenerateRequest::start(1, 24, 20_000, RECORDS))
        .expect("generator");
    let mut stdout = follow.stdout.take().expect("piped");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).expect("tail -f output");
        text
    });
    thread::sleep(Duration::from_millis(300));
    let interrupted = Command::new("kill")
        .args(["-INT", &follow.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(interrupted.success());
    assert!(follow.wait().expect("tail -f ends").success());
    let first = offsets(&reader.join().expect("reader"));
    let done = eventually(LIMIT, || {
        (stats(&control).generator_producers == 0).then_some(())
    });
    assert!(done.is_some(), "the generator finished");
    let rest = ringmap(&server, &["tail", "--format", "json"])
        .output()
        .expect("ringmap tail");
    assert!(rest.status.success());
    let second = offsets(&String::from_utf8(rest.stdout).expect("UTF-8"));
    assert!(
        !first.is_empty() && !second.is_empty(),
        "{} and {}",
        first.len(),
        second.len()
    );
    let mut all = first.clone();
    all.extend(&second);
    assert_eq!(all.len() as u64, RECORDS, "every record printed once");
    assert!(
        all.windows(2).all(|pair| pair[0] < pair[1]),
        "no record twice"
    );
}

#[test]
fn an_administrator_revokes_a_stopped_holder_and_the_next_map_works() {
    let server = TestDevice::start(64 << 10);
    let holder = server.open();
    let admin = server.open();
    let next = server.open();
    write_records(&holder, 10, 24);
    let mut mapping = holder.map().expect("map");
    mapping
        .consumer()
        .consume_while(4, |_| std::ops::ControlFlow::Continue(()));
    assert_eq!(stats(&admin).mapping_process, u64::from(std::process::id()));
    assert!(matches!(next.map(), Err(Error::AlreadyMapped)));
    let revoke = ringmap(&server, &["revoke"])
        .output()
        .expect("ringmap revoke");
    assert!(revoke.status.success(), "{revoke:?}");
    assert!(String::from_utf8_lossy(&revoke.stdout).contains("revoked"));
    let mut taken = next.map().expect("the next MAP works");
    assert_eq!(
        taken.consumer().position(),
        4 * 32,
        "where the holder returned space"
    );
    // The former holder is no longer the mapping: its QUERYs are refused.
    assert!(matches!(
        mapping.wait(Some(Duration::from_millis(10))),
        Err(Error::Status(Status::AccessDenied))
    ));
    assert!(matches!(admin.revoke(), Ok(())));
    assert!(matches!(
        admin.revoke(),
        Err(Error::Status(Status::InvalidDeviceState))
    ));
    drop(taken.consumer().batch());
}

#[cfg(target_os = "linux")]
#[test]
fn the_producer_and_consumer_examples_round_trip_records() {
    let server = TestDevice::start(64 << 10);
    let socket = server.socket().expect("a usersim socket").to_path_buf();
    let produced = Command::new(ringmap_tests::example_binary("producer"))
        .args(["one", "two", "three"])
        .env("RINGMAP_SOCKET", &socket)
        .output()
        .expect("the producer example");
    assert!(produced.status.success(), "{produced:?}");
    let consumed = Command::new(ringmap_tests::example_binary("consumer"))
        .arg("2")
        .env("RINGMAP_SOCKET", &socket)
        .output()
        .expect("the consumer example");
    assert!(consumed.status.success(), "{consumed:?}");
    assert_eq!(
        String::from_utf8_lossy(&consumed.stdout),
        "offset 0: one\noffset 16: two\n"
    );
    // It stopped at two: the third is still there for the next consumer.
    let device = server.open();
    let mut mapping = device.map().expect("map");
    let rest: Vec<Vec<u8>> = mapping
        .consumer()
        .batch()
        .iter()
        .map(|r| r.to_vec())
        .collect();
    assert_eq!(rest, [b"three".to_vec()]);
}

/// Whether `fd` is readable within `ms` milliseconds.
#[cfg(target_os = "linux")]
fn readable(fd: &impl std::os::fd::AsFd, ms: i64) -> bool {
    let timeout = rustix::event::Timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
    rustix::event::poll(&mut fds, Some(&timeout)).expect("poll") > 0
}

#[cfg(target_os = "linux")]
#[test]
fn the_mapping_descriptor_is_ready_exactly_while_a_record_waits() {
    use std::ops::ControlFlow;
    let server = TestDevice::start(64 << 10);
    let consumer = server.open();
    let writer = server.open();
    let mut mapping = consumer.map().expect("map");
    mapping.notify().expect("notify");
    assert!(!readable(&mapping, 50), "nothing committed yet");
    writer.write(b"one").expect("write");
    assert!(
        readable(&mapping, 5_000),
        "a committed record makes it ready"
    );
    // Other requests on the same handle read the readiness reply: it is armed again.
    stats(&consumer);
    assert!(readable(&mapping, 5_000), "still ready: level-triggered");
    let mut got = Vec::new();
    let handled = mapping
        .consume(|record| {
            got.push(record.to_vec());
            ControlFlow::Continue(())
        })
        .expect("consume");
    assert_eq!((handled, got), (1, vec![b"one".to_vec()]));
    assert!(
        !readable(&mapping, 50),
        "consumed: not ready until the next record"
    );
    writer.write(b"two").expect("write");
    assert!(readable(&mapping, 5_000));
    // A callback that stops early leaves a record: ready at once again.
    writer.write(b"three").expect("write");
    let handled = mapping
        .consume(|_| ControlFlow::Break(()))
        .expect("consume");
    assert_eq!(handled, 0);
    assert!(readable(&mapping, 5_000), "records left: ready");
    // poll in this mode waits on the same readiness.
    let handled = mapping
        .poll(Some(Duration::from_secs(5)), |_| ControlFlow::Continue(()))
        .expect("poll");
    assert_eq!(handled, 2);
    drop(mapping);
    assert_eq!(stats(&writer).mapped, 0);
}

#[cfg(target_os = "linux")]
#[test]
fn the_event_loop_example_reads_records_as_they_come() {
    let server = TestDevice::start(64 << 10);
    let socket = server.socket().expect("a usersim socket").to_path_buf();
    let control = server.open();
    let example = Command::new(ringmap_tests::example_binary("event_loop"))
        .arg("3")
        .env("RINGMAP_SOCKET", &socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the event loop example");
    let mapped = eventually(LIMIT, || (stats(&control).mapped == 1).then_some(()));
    assert!(mapped.is_some(), "the example mapped the ring");
    for record in ["a", "b", "c"] {
        control.write(record.as_bytes()).expect("write");
        thread::sleep(Duration::from_millis(20));
    }
    let output = example.wait_with_output().expect("the example ends");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "a\nb\nc\n");
}

#[test]
fn wait_ready_wakes_on_the_mappings_event_when_a_record_is_committed() {
    let server = TestDevice::start(64 << 10);
    let consumer = server.open();
    let writer = server.open();
    let mut mapping = consumer.map().expect("map");
    // Nothing committed: the wait times out (the QUERY is cancelled, nothing is left armed).
    assert!(
        !mapping
            .wait_ready(Some(Duration::from_millis(20)))
            .expect("wait_ready")
    );
    // A record written from another handle, while this one waits, wakes it.
    thread::scope(|scope| {
        let server = &server;
        scope.spawn(move || {
            let writer = server.open();
            thread::sleep(Duration::from_millis(20));
            writer.write(b"one").expect("write");
        });
        assert!(mapping.wait_ready(Some(LIMIT)).expect("wait_ready"));
    });
    let mut got = Vec::new();
    mapping
        .consume(|record| {
            got.push(record.to_vec());
            std::ops::ControlFlow::Continue(())
        })
        .expect("consume");
    assert_eq!(got, [b"one".to_vec()]);
    // A record already there: at once. Then, with it consumed, time out again.
    writer.write(b"two").expect("write");
    assert!(mapping.wait_ready(Some(LIMIT)).expect("wait_ready"));
    assert_eq!(
        mapping
            .consume(|_| std::ops::ControlFlow::Continue(()))
            .expect("consume"),
        1
    );
    assert!(
        !mapping
            .wait_ready(Some(Duration::from_millis(20)))
            .expect("wait_ready")
    );
    // Other requests on the handle meanwhile read the stale QUERY replies: no confusion.
    assert_eq!(stats(&consumer).mapped, 1);
    for round in 0..50u32 {
        writer.write(&round.to_le_bytes()).expect("write");
        assert!(mapping.wait_ready(Some(LIMIT)).expect("wait_ready"));
        assert_eq!(
            mapping
                .consume(|_| std::ops::ControlFlow::Continue(()))
                .expect("consume"),
            1,
            "round {round}"
        );
    }
}

#[test]
fn a_revoked_holder_waiting_on_its_event_learns_of_it() {
    let server = TestDevice::start(64 << 10);
    let holder = server.open();
    let mut mapping = holder.map().expect("map");
    thread::scope(|scope| {
        let server = &server;
        scope.spawn(move || {
            let admin = server.open();
            thread::sleep(Duration::from_millis(30));
            admin.revoke().expect("revoke");
        });
        // The mapping's end sets its event and cancels its QUERY: the wait ends, with the
        // cancellation or with the refusal of the next QUERY, not at the timeout.
        let started = Instant::now();
        let woke = mapping.wait_ready(Some(LIMIT));
        assert!(
            started.elapsed() < LIMIT,
            "the revoked holder waited out its timeout"
        );
        match woke {
            Ok(_) | Err(Error::Status(Status::Cancelled | Status::AccessDenied)) => {}
            other => panic!("{other:?}"),
        }
    });
    assert!(matches!(
        mapping.wait_ready(Some(Duration::from_millis(10))),
        Err(Error::Status(Status::AccessDenied))
    ));
}
