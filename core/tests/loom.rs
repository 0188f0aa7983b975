//! loom models of every atomic handshake of the ring. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p ringmap-core --test loom`.
//!
//! Payload accesses are tracked by loom (see `SharedView::track_payload`), so besides the
//! assertions below loom fails any run in which a payload write and a payload read, or two
//! writes, are not ordered by the ring's atomics.
#![cfg(loom)]

use loom::sync::{Arc, Mutex};
use loom::thread;
use ringmap_core::{Capacity, HeapRing, Hooks, ReserveError};

fn ring_of(bytes: u64) -> Capacity {
    Capacity::new(bytes).unwrap()
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.max_branches = 100_000;
    builder.check(f);
}

#[test]
fn loom_two_producers_publish_in_reservation_order() {
    model(|| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        let ring = Arc::new(ring);
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|id| {
                let ring = ring.clone();
                thread::spawn(move || ring.write(&[id; 8]).unwrap())
            })
            .collect();
        // Two looks while the producers run, then the rest once they are done.
        let mut seen = Vec::new();
        for _ in 0..2 {
            for record in &consumer.batch() {
                assert!(*record == [1; 8] || *record == [2; 8], "{record:?}");
                seen.push(record[0]);
            }
        }
        let offsets: Vec<u64> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        seen.extend(consumer.batch().iter().map(|r| r[0]));
        assert_eq!(seen.len(), 2);
        // Delivered in the order of the offsets the reservations got.
        let first = if offsets[0] < offsets[1] { 1 } else { 2 };
        assert_eq!(seen[0], first);
        assert_eq!(ring.producer_offset(), 32);
    });
}

#[test]
fn loom_three_producers_reserve_disjoint_ranges() {
    // Three threads that wait for each other: a preemption bound of 1 keeps the model to
    // seconds (2 takes many minutes on two cores).
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(1);
    builder.max_branches = 100_000;
    builder.check(|| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        let ring = Arc::new(ring);
        let producers: Vec<_> = [1u8, 2, 3]
            .into_iter()
            .map(|id| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut r = ring.reserve(4).unwrap();
                    r.payload().fill(id);
                    r.submit();
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut ids: Vec<u8> = consumer.batch().iter().map(|r| r[0]).collect();
        ids.sort();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(ring.producer_offset(), 48);
        assert_eq!(ring.reserve_offset(), 48);
    });
}

#[test]
fn loom_locked_bit_hides_a_record_being_written() {
    model(|| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        let ring = Arc::new(ring);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut r = ring.reserve(16).unwrap();
                r.payload().copy_from_slice(&[7; 16]);
                r.submit();
            })
        };
        // Whatever the consumer sees while the producer runs is whole.
        for _ in 0..2 {
            let batch = consumer.batch();
            for record in &batch {
                assert_eq!(*record, [7; 16]);
            }
        }
        producer.join().unwrap();
        let rest = consumer.batch().len();
        assert!(consumer.position() == 24 || rest == 0);
    });
}

#[test]
fn loom_space_returned_by_the_consumer_versus_a_reserve() {
    model(|| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        for id in 0..4u8 {
            ring.write(&[id; 8]).unwrap();
        }
        let ring = Arc::new(ring);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || match ring.reserve(8) {
                Ok(mut r) => {
                    r.payload().fill(9);
                    r.submit();
                    true
                }
                Err(ReserveError::Full) => false,
                Err(e) => panic!("{e}"),
            })
        };
        {
            let batch = consumer.batch();
            let ids: Vec<u8> = batch.iter().map(|r| r[0]).collect();
            assert_eq!(ids, [0, 1, 2, 3], "nothing overwritten while lent");
        }
        let reserved = producer.join().unwrap();
        assert_eq!(ring.dropped(), u64::from(!reserved));
        if reserved {
            assert_eq!(*consumer.batch().iter().next().unwrap(), [9; 8]);
        }
    });
}

#[test]
fn loom_validated_offset_under_a_hostile_writer() {
    model(|| {
        let (ring, _consumer) = HeapRing::new(ring_of(64), ());
        let ring = Arc::new(ring);
        // The hostile consumer claims to have read everything there could ever be.
        let hostile = {
            let ring = ring.clone();
            thread::spawn(move || ring.hostile_store_consumer_page(u64::MAX))
        };
        // A slow producer holds a record LOCKED while it writes.
        let slow = {
            let ring = ring.clone();
            thread::spawn(move || {
                // The fast producer may have taken the whole ring first: then this is full.
                if let Ok(mut r) = ring.reserve(24) {
                    r.payload().fill(1);
                    thread::yield_now();
                    let intact = r.payload().iter().all(|&b| b == 1);
                    assert!(intact, "overwritten while LOCKED");
                    r.submit();
                }
            })
        };
        // A fast producer fills the rest and then tries to lap the slow one.
        let fast = {
            let ring = ring.clone();
            thread::spawn(move || {
                let first = ring.reserve(24);
                if let Ok(mut r) = first {
                    r.payload().fill(2);
                    r.submit();
                }
                if let Ok(mut r) = ring.reserve(24) {
                    r.payload().fill(3);
                    r.submit();
                }
            })
        };
        hostile.join().unwrap();
        slow.join().unwrap();
        fast.join().unwrap();
        assert!(ring.validated_consumer_offset() <= ring.producer_offset());
    });
}

/// A host's query slot: the pending request and what happened to it.
#[derive(Default)]
struct Slot {
    pending: bool,
    completed: u32,
    cancelled: u32,
}

#[test]
fn loom_query_arm_and_commit_never_lose_a_wakeup() {
    model(|| {
        let (ring, _consumer) = HeapRing::new(ring_of(64), Waking::default());
        let ring = Arc::new(ring);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || ring.write(&[5; 8]).unwrap())
        };
        // The query for the head at offset 0, as the device makes it.
        pend_query(&ring, 0);
        producer.join().unwrap();
        let slot = ring.hooks().slot.lock().unwrap();
        assert_eq!(
            slot.completed, 1,
            "the committed head completed the query exactly once"
        );
        assert!(!slot.pending);
    });
}

#[test]
fn loom_query_cancel_versus_completion_exactly_one_wins() {
    model(|| {
        let (ring, _consumer) = HeapRing::new(ring_of(64), Waking::default());
        let ring = Arc::new(ring);
        {
            let mut slot = ring.hooks().slot.lock().unwrap();
            slot.pending = true;
            assert!(!ring.arm_query(0));
        }
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || ring.write(&[5; 8]).unwrap())
        };
        let canceller = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut slot = ring.hooks().slot.lock().unwrap();
                if slot.pending {
                    assert!(ring.disarm_query());
                    slot.pending = false;
                    slot.cancelled += 1;
                }
            })
        };
        producer.join().unwrap();
        canceller.join().unwrap();
        let slot = ring.hooks().slot.lock().unwrap();
        assert_eq!(slot.completed + slot.cancelled, 1);
        assert!(!slot.pending);
        assert_eq!(ring.armed_head(), None);
    });
}

/// Pends a query for the record at `head` as the device does: under the query lock, mark it
/// pending, arm, and complete it at once if the head is committed already and the disarm is
/// ours.
fn pend_query(ring: &HeapRing<Waking>, head: u64) {
    let mut slot = ring.hooks().slot.lock().unwrap();
    slot.pending = true;
    if ring.arm_query(head) && ring.disarm_query_for(head) {
        slot.pending = false;
        slot.completed += 1;
    }
}

/// Hooks that complete the pending query from the producer's side, as a device does.
#[derive(Default)]
struct Waking {
    slot: Mutex<Slot>,
}

impl Hooks for Waking {
    fn wake_query(&self, ring: &ringmap_core::Ring<Self>, head: u64) {
        // As a device does it: under the query lock, complete the query if it still waits
        // for this head.
        let mut slot = self.slot.lock().unwrap();
        if ring.disarm_query_for(head) {
            assert!(slot.pending);
            slot.pending = false;
            slot.completed += 1;
        }
    }
}

#[test]
fn loom_query_armed_on_a_head_whose_slot_is_reused_is_still_woken() {
    // Found by the TLA+ model RingBufferMP: the head is committed, then a full ring's walk
    // passes it and a new LOCKED record takes its slot while the query arms.
    model(|| {
        let (ring, _consumer) = HeapRing::new(ring_of(64), Waking::default());
        ring.write(&[1; 24]).unwrap(); // 0..32, the head the query waits for
        ring.write(&[2; 24]).unwrap(); // 32..64
        ring.hostile_store_consumer_page(32); // the consumer has read the head
        let ring = Arc::new(ring);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                // Finds the ring full, walks past the head, reuses its slot, discards.
                let r = ring.reserve(24).unwrap();
                assert_eq!(r.offset(), 64);
            })
        };
        pend_query(&ring, 0);
        producer.join().unwrap();
        let slot = ring.hooks().slot.lock().unwrap();
        assert_eq!(slot.completed, 1, "a committed head completes the query");
    });
}

/// MAP against a producer's page walk (issue 8's takeover race, `ConsumerHandover.tla`'s
/// `buggy_map_without_drain`): consumer A has returned the whole ring in its page; a producer
/// finds the ring full and walks from A's page while A's mapping ends (A's process writes
/// something else into its page meanwhile) and B's begins. B must start exactly at the
/// validated offset, and everything it returns must be what B itself read.
#[test]
fn loom_a_new_mapping_never_starts_behind_a_producers_walk() {
    model(|| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        for id in 0..4 {
            ring.write(&[id; 8]).unwrap(); // 4 records of 16 bytes: full
        }
        assert_eq!(consumer.consume(|_| ()), 4); // A's page says 64; nothing walked yet
        assert_eq!(ring.validated_consumer_offset(), 0);
        let ring = Arc::new(ring);
        let producer = {
            let ring = ring.clone();
            // Looks full: walks from A's page (or B's, if B is attached by then).
            thread::spawn(move || ring.write(&[9; 8]).is_ok())
        };
        // A's process goes back on its word before its mapping ends (hostile, or torn).
        ring.hostile_store_consumer_page(16);
        let (mut b, _stale, retired) = ring.remap(consumer);
        let wrote = producer.join().unwrap();
        assert_eq!(b.position(), retired.final_offset);
        assert!(
            ring.validated_consumer_offset() <= b.position(),
            "B starts behind the validated offset: {} < {}",
            b.position(),
            ring.validated_consumer_offset()
        );
        // B reads on from its start without a torn record: what it sees is whole.
        for record in &b.batch() {
            assert!(record.len() == 8 && record[0] < 10, "{record:?}");
        }
        let _ = wrote;
    });
}
