//! Unit tests of the ring: producer, consumer, validated consumer offset, query handshake.
//! They run under miri too (`cargo +nightly miri test -p ringmap-core`).

use std::sync::Mutex;
use std::vec::Vec;

use crate::layout::Capacity;
use crate::placement::HeapRing;
use crate::producer::{Hooks, ReserveError};
use crate::record::{DISCARDED, LOCKED, MAX_PAYLOAD, padded_size};
use crate::sync::Ordering;

fn page() -> Capacity {
    Capacity::new(4096).unwrap()
}

fn drain(consumer: &mut crate::Consumer) -> Vec<Vec<u8>> {
    let batch = consumer.batch();
    batch.iter().map(|r| r.to_vec()).collect()
}

#[test]
fn reserve_refuses_impossible_lengths_and_changes_nothing() {
    let (ring, _consumer) = HeapRing::new(page(), ());
    assert_eq!(ring.reserve(0).unwrap_err(), ReserveError::Empty);
    assert_eq!(
        ring.reserve(MAX_PAYLOAD as usize + 1).unwrap_err(),
        ReserveError::TooLong {
            len: MAX_PAYLOAD as usize + 1
        }
    );
    assert_eq!(
        ring.reserve(usize::MAX).unwrap_err(),
        ReserveError::TooLong { len: usize::MAX }
    );
    assert_eq!(
        ring.reserve(4089).unwrap_err(),
        ReserveError::LargerThanRing {
            len: 4089,
            capacity: page()
        }
    );
    assert_eq!(ring.reserve_offset(), 0);
    assert_eq!(ring.producer_offset(), 0);
    assert_eq!(ring.dropped(), 0);
}

#[test]
fn errors_are_sentences() {
    let (ring, _consumer) = HeapRing::new(page(), ());
    let text = ring.reserve(5000).unwrap_err().to_string();
    assert!(
        text.contains("5000") && text.contains("does not fit"),
        "{text}"
    );
    assert!(ReserveError::Full.to_string().contains("full"));
}

#[test]
fn a_submitted_record_comes_out_once() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    let offset = ring.write(b"hello").unwrap();
    assert_eq!(offset, 0);
    assert_eq!(ring.producer_offset(), padded_size(5));
    assert_eq!(drain(&mut consumer), [b"hello".to_vec()]);
    assert_eq!(consumer.position(), 16);
    assert!(drain(&mut consumer).is_empty());
}

#[test]
fn reserve_writes_a_locked_header_and_the_page_offset() {
    let (ring, _consumer) = HeapRing::new(Capacity::new(16384).unwrap(), ());
    // Move the reserve offset onto the third page.
    for _ in 0..2 {
        ring.write(&[0u8; 4088]).unwrap();
    }
    let r = ring.reserve(3).unwrap();
    let header = ring.placement().data().header(r.offset());
    assert_eq!(header.len.load(Ordering::Relaxed), LOCKED | 3);
    assert_eq!(header.page_offset.load(Ordering::Relaxed), 2);
    r.submit();
    assert_eq!(header.len.load(Ordering::Relaxed), 3);
}

#[test]
fn payloads_are_lent_from_the_ring_not_copied() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    ring.write(b"zero-copy").unwrap();
    let expected = ring.placement().data().payload_ptr(0) as *const u8;
    let batch = consumer.batch();
    let record = batch.iter().next().unwrap();
    assert_eq!(record.as_ptr(), expected);
}

#[test]
fn a_locked_head_stops_the_batch_and_order_is_kept() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    let mut first = ring.reserve(1).unwrap();
    let mut second = ring.reserve(1).unwrap();
    first.payload()[0] = 1;
    second.payload()[0] = 2;
    second.submit();
    assert!(drain(&mut consumer).is_empty(), "the head is still LOCKED");
    assert_eq!(consumer.position(), 0);
    first.submit();
    assert_eq!(drain(&mut consumer), [vec![1], vec![2]]);
}

#[test]
fn a_discarded_head_is_skipped_and_its_space_returned() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    ring.reserve(100).unwrap().discard();
    ring.write(b"kept").unwrap();
    assert_eq!(ring.discarded(), 1);
    let batch = consumer.batch();
    assert_eq!(batch.len(), 1);
    assert_eq!(
        batch.iter().map(|r| r.payload()).collect::<Vec<_>>(),
        [b"kept"]
    );
    assert_eq!(batch.end(), padded_size(100) + padded_size(4));
    drop(batch);
    assert_eq!(
        ring.consumer_page_offset(),
        padded_size(100) + padded_size(4)
    );
}

#[test]
fn a_dropped_reservation_is_discarded() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    {
        let mut r = ring.reserve(8).unwrap();
        r.payload().fill(7);
    }
    ring.write(b"after").unwrap();
    assert_eq!(drain(&mut consumer), [b"after".to_vec()]);
    let header = ring.placement().data().header(0);
    assert_eq!(header.len.load(Ordering::Relaxed), DISCARDED | 8);
    assert_eq!(ring.discarded(), 1);
}

#[test]
fn exactly_full_then_one_more_is_dropped() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    // 4096 bytes = 64 records of 56 payload bytes (64 bytes padded).
    for i in 0..64u8 {
        ring.write(&[i; 56]).unwrap();
    }
    assert_eq!(ring.producer_offset(), 4096);
    assert_eq!(ring.reserve(1).unwrap_err(), ReserveError::Full);
    assert_eq!(ring.dropped(), 1);
    assert_eq!(
        ring.reserve_offset(),
        4096,
        "a failed reserve moves nothing"
    );
    let records = drain(&mut consumer);
    assert_eq!(records.len(), 64);
    assert!(records.iter().enumerate().all(|(i, r)| r == &[i as u8; 56]));
    // The space comes back lazily, on the next reserve that finds the ring full.
    ring.write(b"again").unwrap();
    assert_eq!(ring.validated_consumer_offset(), 4096);
    assert_eq!(drain(&mut consumer), [b"again".to_vec()]);
}

#[test]
fn a_record_the_size_of_the_ring() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    let payload: Vec<u8> = (0..4088).map(|i| i as u8).collect();
    ring.write(&payload).unwrap();
    assert_eq!(ring.reserve(1).unwrap_err(), ReserveError::Full);
    assert_eq!(drain(&mut consumer), std::slice::from_ref(&payload));
    // Once more, now that the offsets are one lap further.
    ring.write(&payload).unwrap();
    assert_eq!(ring.producer_offset(), 8192);
    assert_eq!(drain(&mut consumer), [payload]);
}

#[test]
fn a_record_that_wraps_is_contiguous() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    ring.write(&[0u8; 4000]).unwrap(); // 4008 bytes, padded 4008
    assert_eq!(drain(&mut consumer).len(), 1);
    // Starts at index 4008, ends 200 bytes into the next lap.
    let payload: Vec<u8> = (0..280u32).map(|i| (i * 7) as u8).collect();
    let offset = ring.write(&payload).unwrap();
    assert_eq!(offset, 4008);
    assert!(ring.capacity().index(offset) + padded_size(280) as usize > 4096);
    assert_eq!(drain(&mut consumer), [payload]);
}

#[test]
fn batches_can_be_limited() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    for i in 0..5u8 {
        ring.write(&[i]).unwrap();
    }
    {
        let batch = consumer.batch_up_to(2);
        assert_eq!(
            batch.iter().map(|r| r.payload()).collect::<Vec<_>>(),
            [[0u8], [1u8]]
        );
    }
    assert_eq!(consumer.position(), 32);
    assert_eq!(consumer.consume(|_| {}), 3);
}

#[test]
fn space_is_returned_once_per_batch_when_it_ends() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    ring.write(b"a").unwrap();
    ring.write(b"b").unwrap();
    let batch = consumer.batch();
    assert_eq!(batch.len(), 2);
    assert_eq!(ring.consumer_page_offset(), 0, "not while records are lent");
    drop(batch);
    assert_eq!(ring.consumer_page_offset(), 32);
}

#[test]
fn an_empty_batch_writes_nothing() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    ring.hostile_store_consumer_page(12345);
    assert!(consumer.batch().is_empty());
    assert_eq!(ring.consumer_page_offset(), 12345);
}

#[test]
fn the_validated_offset_never_passes_the_producer_or_a_locked_record() {
    let (ring, _consumer) = HeapRing::new(page(), ());
    ring.write(&[1; 8]).unwrap(); // 0..16
    let locked = ring.reserve(8).unwrap(); // 16..32
    ring.write(&[3; 8]).unwrap(); // 32..48
    assert_eq!(ring.advance_consumer_offset(u64::MAX), 16);
    assert_eq!(ring.advance_consumer_offset(u64::MAX), 16);
    locked.submit();
    assert_eq!(
        ring.advance_consumer_offset(u64::MAX),
        48,
        "cut at the producer"
    );
    assert_eq!(ring.advance_consumer_offset(0), 48, "never backwards");
}

#[test]
fn a_walk_takes_at_most_one_ring_of_headers_even_past_a_corrupted_producer_offset() {
    let (ring, _consumer) = HeapRing::new(page(), ());
    // A producer page gone wrong: the producer offset a MiB ahead over unwritten (zero,
    // unlocked) headers. The walk stops one capacity past where it started.
    // Relaxed: single-threaded.
    ring.placement()
        .data()
        .producer_offset()
        .store(1 << 20, Ordering::Relaxed);
    assert_eq!(ring.advance_consumer_offset(u64::MAX), 4096);
    assert_eq!(ring.advance_consumer_offset(u64::MAX), 8192);
}

#[test]
fn the_validated_offset_stops_before_a_record_the_hint_cuts() {
    let (ring, _consumer) = HeapRing::new(page(), ());
    ring.write(&[1; 8]).unwrap(); // 0..16
    ring.write(&[2; 8]).unwrap(); // 16..32
    assert_eq!(ring.advance_consumer_offset(24), 16);
    assert_eq!(ring.advance_consumer_offset(31), 16);
    assert_eq!(ring.advance_consumer_offset(32), 32);
}

#[test]
fn a_hostile_consumer_page_cannot_free_a_locked_record() {
    let (ring, _consumer) = HeapRing::new(page(), ());
    let mut held = ring.reserve(2040).unwrap(); // 0..2048
    held.payload().fill(0xAA);
    ring.write(&[1; 2040]).unwrap(); // 2048..4096
    for hostile in [u64::MAX, 4096, 2048, 1 << 40, 8] {
        ring.hostile_store_consumer_page(hostile);
        assert_eq!(ring.reserve(8).unwrap_err(), ReserveError::Full);
        assert_eq!(ring.validated_consumer_offset(), 0);
    }
    assert!(held.payload().iter().all(|&b| b == 0xAA));
    held.submit();
    assert_eq!(ring.dropped(), 5);
}

#[test]
fn a_new_mapping_starts_at_the_validated_offset_on_a_fresh_page() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    ring.write(b"x").unwrap(); // 0..16
    ring.write(b"y").unwrap(); // 16..32
    let mut batch = consumer.batch();
    assert_eq!(batch.iter().count(), 2, "hands out both");
    batch.keep_first(1); // returns only the first
    drop(batch);
    let (consumer, stale, retired) = ring.remap(consumer);
    assert_eq!(
        retired,
        crate::Retired {
            final_offset: 16,
            redelivered: 1
        },
        "the last walk counts what the consumer returned; the record it was handed but did \
         not return is delivered again"
    );
    assert_eq!(consumer.position(), 16);
    assert_eq!(ring.consumer_page_offset(), 16);
    stale.store(u64::MAX);
    assert_eq!(ring.reserve(4096 - 8).unwrap_err(), ReserveError::Full);
    assert_eq!(
        ring.validated_consumer_offset(),
        16,
        "the former consumer's page moves nothing"
    );
}

#[derive(Default)]
struct RecordingHooks {
    woken: Mutex<Vec<u64>>,
}

impl Hooks for RecordingHooks {
    fn wake_query(&self, _ring: &crate::Ring<Self>, head: u64) {
        self.woken.lock().unwrap().push(head);
    }
}

#[test]
fn a_query_armed_for_the_head_is_woken_by_its_commit_only() {
    let (ring, _consumer) = HeapRing::new(page(), RecordingHooks::default());
    assert!(!ring.arm_query(0), "nothing published yet");
    assert_eq!(ring.armed_head(), Some(0));
    let head = ring.reserve(4).unwrap();
    let next = ring.reserve(4).unwrap();
    next.submit();
    assert!(ring.hooks().woken.lock().unwrap().is_empty());
    assert!(!ring.is_committed(0));
    head.submit();
    assert_eq!(*ring.hooks().woken.lock().unwrap(), [0]);
    assert!(ring.is_committed(0));
    assert!(ring.disarm_query_for(0));
    assert!(!ring.disarm_query_for(0), "exactly one side disarms");
    assert_eq!(ring.armed_head(), None);
}

#[test]
fn arming_on_a_committed_head_reports_it() {
    let (ring, _consumer) = HeapRing::new(page(), RecordingHooks::default());
    ring.reserve(4).unwrap().discard();
    assert!(ring.arm_query(0), "a discarded head is committed");
    assert!(ring.disarm_query());
    assert!(!ring.disarm_query());
}

#[test]
fn a_head_the_validated_offset_passed_is_committed_even_when_its_slot_holds_a_newer_record() {
    let (ring, _consumer) = HeapRing::new(page(), ());
    ring.write(&[1; 2040]).unwrap(); // 0..2048, the head
    ring.write(&[2; 2040]).unwrap(); // 2048..4096
    ring.hostile_store_consumer_page(2048); // the consumer has read the head
    let newer = ring.reserve(2040).unwrap(); // walks past the head, takes its slot
    assert_eq!(newer.offset(), 4096);
    assert!(ring.is_committed(0), "passed by the validated offset");
    assert!(ring.is_committed(2048), "published and not LOCKED");
    assert!(!ring.is_committed(4096), "LOCKED, and not passed");
    assert!(!ring.is_committed(6144), "not published");
    newer.submit();
    assert!(ring.is_committed(4096));
}

/// Sets the flag when dropped, so that producers stop if the consumer panics.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn many_producers_keep_their_order_and_lose_nothing() {
    const PRODUCERS: u64 = 3;
    #[cfg(miri)]
    const PER_PRODUCER: u64 = 30;
    #[cfg(not(miri))]
    const PER_PRODUCER: u64 = 20_000;
    let (ring, mut consumer) = HeapRing::new(page(), ());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut next = [0u64; PRODUCERS as usize];
    let mut failed_reserves = 0;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (ring, stop) = (&ring, &stop);
                s.spawn(move || {
                    let mut failed = 0u64;
                    let mut seq = 0u64;
                    while seq < PER_PRODUCER && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // 16 to 23 bytes: producer id, sequence number, a tail of varying length.
                        let mut payload = [0xEEu8; 23];
                        payload[..8].copy_from_slice(&p.to_le_bytes());
                        payload[8..16].copy_from_slice(&seq.to_le_bytes());
                        if p == 0 {
                            // Producer 0 writes batches of up to 3 records (`write_batch`).
                            let n = (PER_PRODUCER - seq).min(3);
                            let mut payloads = [payload; 3];
                            for (i, payload) in payloads.iter_mut().enumerate() {
                                payload[8..16].copy_from_slice(&(seq + i as u64).to_le_bytes());
                            }
                            let len = |i: u64| 16 + ((seq + i) % 8) as usize;
                            let batch = [
                                &payloads[0][..len(0)],
                                &payloads[1][..len(1)],
                                &payloads[2][..len(2)],
                            ];
                            match ring.write_batch(&batch[..n as usize]) {
                                Ok(_) => seq += n,
                                Err(ReserveError::Full) => {
                                    failed += n;
                                    std::thread::yield_now();
                                }
                                Err(e) => panic!("{e}"),
                            }
                            continue;
                        }
                        match ring.write(&payload[..16 + (seq % 8) as usize]) {
                            Ok(_) => seq += 1,
                            Err(ReserveError::Full) => {
                                failed += 1;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    failed
                })
            })
            .collect();
        let _stop_producers_if_this_panics = StopOnDrop(&stop);
        let mut received = 0;
        while received < PRODUCERS * PER_PRODUCER {
            let batch = consumer.batch();
            for record in &batch {
                let p = u64::from_le_bytes(record[..8].try_into().unwrap()) as usize;
                let seq = u64::from_le_bytes(record[8..16].try_into().unwrap());
                assert_eq!(
                    seq, next[p],
                    "producer {p}: order kept, nothing lost or twice"
                );
                assert_eq!(record.len(), 16 + (seq % 8) as usize);
                assert!(record[16..].iter().all(|&b| b == 0xEE));
                next[p] += 1;
                received += 1;
            }
            if batch.is_empty() {
                std::thread::yield_now();
            }
        }
        failed_reserves = handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>();
    });
    assert!(next.iter().all(|&n| n == PER_PRODUCER));
    assert_eq!(
        ring.dropped(),
        failed_reserves,
        "dropped counts exactly the failed reserves (a batch's records each)"
    );
}

#[test]
fn a_cut_batch_returns_only_the_records_before_the_cut() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    for byte in 0..4u8 {
        ring.write(&[byte; 8]).unwrap(); // 16 bytes each
    }
    let handled = consumer.consume_while(usize::MAX, |record| {
        if record[0] == 2 {
            core::ops::ControlFlow::Break(())
        } else {
            core::ops::ControlFlow::Continue(())
        }
    });
    assert_eq!(handled, 2, "the record it broke on is not handled");
    assert_eq!(consumer.position(), 32);
    assert_eq!(ring.consumer_page_offset(), 32);
    let offsets: Vec<u64> = consumer.batch().iter().map(|r| r.offset()).collect();
    assert_eq!(
        offsets,
        [32, 48],
        "the rest comes again, from the record broken on"
    );
}

#[test]
fn keep_first_zero_returns_only_the_discarded_records_before_the_first_kept() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    ring.reserve(8).unwrap().discard(); // 0..16
    ring.write(b"kept").unwrap(); // 16..32
    let mut batch = consumer.batch();
    assert_eq!(batch.len(), 1);
    batch.keep_first(0);
    drop(batch);
    assert_eq!(
        consumer.position(),
        16,
        "the discarded record's space goes back"
    );
    let mut batch = consumer.batch();
    batch.keep_first(1);
    drop(batch);
    assert_eq!(consumer.position(), 32);
}

#[test]
fn write_batch_refuses_what_cannot_be_written_and_changes_nothing() {
    let (ring, _consumer) = HeapRing::new(page(), ());
    assert_eq!(ring.write_batch(&[]).unwrap_err(), ReserveError::Empty);
    assert_eq!(
        ring.write_batch(&[b"ok", b""]).unwrap_err(),
        ReserveError::Empty
    );
    let big = std::vec![0u8; 4089];
    assert_eq!(
        ring.write_batch(&[b"ok", &big]).unwrap_err(),
        ReserveError::LargerThanRing {
            len: 4089,
            capacity: page()
        }
    );
    let half = std::vec![0u8; 2048];
    assert_eq!(
        ring.write_batch(&[&half, &half]).unwrap_err(),
        ReserveError::LargerThanRing {
            len: 4096,
            capacity: page()
        },
        "the whole batch must fit in the ring"
    );
    assert_eq!(ring.reserve_offset(), 0);
    assert_eq!(ring.producer_offset(), 0);
    assert_eq!(ring.dropped(), 0);
}

#[test]
fn a_batch_comes_out_whole_in_order_with_its_headers() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    ring.write(b"before").unwrap(); // 0..16
    assert_eq!(
        ring.write_batch(&[b"abc", b"12345678", b"thirteen byte"])
            .unwrap(),
        16
    );
    assert_eq!(ring.producer_offset(), 16 + 16 + 16 + 24);
    assert_eq!(ring.reserve_offset(), ring.producer_offset());
    let data = ring.placement().data();
    let words: Vec<u32> = [16, 32, 48]
        .iter()
        .map(|&at| data.header(at).len.load(Ordering::Relaxed))
        .collect();
    assert_eq!(
        words,
        [3, 8, 13],
        "committed headers, no LOCKED or DISCARDED bit"
    );
    let records: Vec<(u64, Vec<u8>)> = consumer
        .batch()
        .iter()
        .map(|r| (r.offset(), r.to_vec()))
        .collect();
    assert_eq!(
        records,
        [
            (0, b"before".to_vec()),
            (16, b"abc".to_vec()),
            (32, b"12345678".to_vec()),
            (48, b"thirteen byte".to_vec())
        ]
    );
}

#[test]
fn a_batch_that_wraps_is_contiguous_and_gets_its_page_offsets() {
    let capacity = Capacity::new(8192).unwrap();
    let (ring, mut consumer) = HeapRing::new(capacity, ());
    ring.write(&[0; 8192 - 8 - 16]).unwrap(); // 0..8176
    assert_eq!(consumer.consume(|_| ()), 1);
    let tail = [7u8; 40];
    // The first record's payload (8184..8200) crosses the end of the data.
    assert_eq!(ring.write_batch(&[&[1; 16], &tail]).unwrap(), 8176);
    let data = ring.placement().data();
    assert_eq!(data.header(8176).page_offset.load(Ordering::Relaxed), 1);
    assert_eq!(data.header(8200).page_offset.load(Ordering::Relaxed), 0);
    let records: Vec<Vec<u8>> = drain(&mut consumer);
    assert_eq!(records, [std::vec![1; 16], tail.to_vec()]);
}

#[test]
fn a_full_ring_refuses_the_whole_batch_and_counts_each_record() {
    let (ring, _consumer) = HeapRing::new(page(), ());
    ring.write(&[0; 4096 - 8 - 32]).unwrap(); // leaves 32 bytes: two 8-byte records
    assert_eq!(
        ring.write_batch(&[&[1; 8], &[2; 8], &[3; 8]]).unwrap_err(),
        ReserveError::Full
    );
    assert_eq!(ring.dropped(), 3);
    assert_eq!(ring.reserve_offset(), 4096 - 32, "nothing claimed");
    assert_eq!(ring.write_batch(&[&[1; 8], &[2; 8]]).unwrap(), 4096 - 32);
    assert_eq!(ring.producer_offset(), 4096);
}

#[test]
fn a_query_armed_for_any_record_of_a_batch_is_woken_once() {
    let (ring, mut consumer) = HeapRing::new(page(), RecordingHooks::default());
    assert!(!ring.arm_query(0));
    ring.write_batch(&[b"one", b"two"]).unwrap();
    assert_eq!(*ring.hooks().woken.lock().unwrap(), [0]);
    assert!(ring.disarm_query_for(0));
    // A head inside a batch (armed by hand; a QUERY arms the validated offset only).
    assert_eq!(consumer.consume(|_| ()), 2);
    assert!(!ring.arm_query(48));
    ring.write_batch(&[b"three", b"four", b"five"]).unwrap(); // 32..80
    assert_eq!(*ring.hooks().woken.lock().unwrap(), [0, 48]);
    assert!(ring.disarm_query_for(48));
    // Armed for a record past the batch: not woken.
    assert!(!ring.arm_query(96));
    ring.write_batch(&[b"six"]).unwrap(); // 80..96
    assert_eq!(ring.hooks().woken.lock().unwrap().len(), 2);
}

#[test]
fn a_consume_broken_off_counts_the_record_it_broke_on_as_handed_out() {
    let (ring, mut consumer) = HeapRing::new(page(), ());
    for byte in 0..4u8 {
        ring.write(&[byte; 8]).unwrap(); // 16 bytes each
    }
    let handled = consumer.consume_while(usize::MAX, |record| {
        if record[0] == 1 {
            core::ops::ControlFlow::Break(())
        } else {
            core::ops::ControlFlow::Continue(())
        }
    });
    assert_eq!(handled, 1);
    assert_eq!(consumer.position(), 16);
    let (_next, _stale, retired) = ring.remap(consumer);
    assert_eq!(retired.final_offset, 16);
    assert_eq!(
        retired.redelivered, 1,
        "the record broken on was handed out, not returned: it comes again"
    );
}

/// A producer that finds the producer offset at its start must acquire it: the earlier
/// producer's payloads reach the consumer only through that acquire when the consumer's first
/// look at the producer offset already sees the later producer's end. The threads are
/// sequenced by relaxed flags, which order nothing, so under miri the only orders are the
/// ring's own (miri reports the race if the acquire is weakened; scripts/mutants.txt).
#[test]
fn a_record_published_after_another_passes_the_earlier_payload_on() {
    use std::sync::atomic::{AtomicBool, Ordering as Std};
    for _ in 0..8 {
        let (ring, mut consumer) = HeapRing::new(page(), ());
        let (first_done, second_done) = (AtomicBool::new(false), AtomicBool::new(false));
        std::thread::scope(|s| {
            s.spawn(|| {
                ring.write(&[1; 8]).unwrap();
                first_done.store(true, Std::Relaxed);
            });
            s.spawn(|| {
                while !first_done.load(Std::Relaxed) {
                    std::thread::yield_now();
                }
                // The first record is published (the flag is set after it), but nothing
                // orders it before this thread's loads except the ring itself.
                while ring
                    .placement()
                    .data()
                    .producer_offset()
                    .load(Ordering::Relaxed)
                    != 16
                {
                    std::thread::yield_now();
                }
                ring.write(&[2; 8]).unwrap();
                second_done.store(true, Std::Relaxed);
            });
            while !second_done.load(Std::Relaxed) {
                std::thread::yield_now();
            }
            let mut seen = Vec::new();
            while seen.len() < 2 {
                consumer.consume(|record| seen.push(record.to_vec()));
            }
            assert_eq!(seen, [[1u8; 8].to_vec(), [2; 8].to_vec()]);
        });
    }
}

/// An offered record reaches the consumer through the offer alone: a claim is held
/// unpublished (claimed and written, its publish held back), a second producer writes a
/// record behind it and so offers it, then the first is published, taking the offer, and
/// then a third thread consumes both, in order. The threads are ordered by relaxed flags
/// only: under miri the ring's own orderings order the consumer's read of the offered
/// payload after its copy. (Weakening the offer's release or the take's acquire goes
/// unseen here: miri, like loom, joins each SeqCst fence with every earlier one, and the
/// publish fences next to both.)
#[test]
fn an_offered_payload_reaches_the_consumer_through_the_offer() {
    use std::sync::atomic::{AtomicBool, Ordering as Std};
    for _ in 0..4 {
        let (ring, mut consumer) = HeapRing::new(page(), ());
        let start = ring.claim(16, 1).unwrap();
        let end = ring.place(start, &[1; 8]);
        let (offered, published) = (AtomicBool::new(false), AtomicBool::new(false));
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(ring.write(&[2; 8]), Ok(16));
                offered.store(true, Std::Relaxed);
            });
            let reader = s.spawn(|| {
                while !published.load(Std::Relaxed) {
                    std::thread::yield_now();
                }
                let mut seen = Vec::new();
                while seen.len() < 2 {
                    consumer.consume(|record| seen.push(record.to_vec()));
                }
                seen
            });
            while !offered.load(Std::Relaxed) {
                std::thread::yield_now();
            }
            ring.publish(start, end);
            published.store(true, Std::Relaxed);
            assert_eq!(reader.join().unwrap(), [[1u8; 8].to_vec(), [2; 8].to_vec()]);
        });
    }
}
