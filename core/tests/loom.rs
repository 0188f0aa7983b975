//! loom models of every atomic handshake of the ring. Run with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p ringmap-core --test loom`.
//!
//! Payload accesses are tracked by loom (see `SharedView::track_payload`): in the runs loom
//! explores, a payload write and a payload read (or two writes) that the ring's atomics do
//! not order fail the model. That catches only what the explored runs do, so every model
//! whose consumer reads while producers run keeps looking (`thread::yield_now`) until it
//! has a record, counts the runs in which it read one while a producer had not finished,
//! and fails if there were none. Why: a producer loads the producer offset just before it
//! stores it, and loom 0.7 gives such a load-then-store no backtracking against other
//! threads' earlier loads (tokio-rs/loom issues 166 and 392), so a consumer that looks a
//! fixed number of times sees nothing in most explored runs; one that keeps looking must be
//! scheduled after the commit it waits for, with the producer still running.
//! Each model prints how many runs loom explored (`-- --nocapture` shows it).
//!
//! loom's SeqCst fences are stronger than the memory model's: a fence joins everything every
//! thread had when it fenced before (loom 0.7, `seq_cst_fence`), and an acquire fence
//! acquires every store the thread has seen. The ring fences after each commit, each walk's
//! exchange and at each gate entry, so a weakened acquire or release goes unnoticed wherever a
//! fence follows it in the same thread. The models that show an ordering is needed therefore
//! let a *second* thread act on what the first one published, with no fence of its own
//! before it acts: a producer that reserves on the strength of another's walk (space returned
//! to two producers, a walk over a record being written), a retirement that frees the page a
//! walk read, a query check that finds the reused slot LOCKED.
//! `scripts/mutants.sh` checks that these models (and the unit tests) fail when an ordering
//! is weakened.
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use ringmap_core::{Capacity, Consumer, HeapRing, Hooks, ReserveError};

fn ring_of(bytes: u64) -> Capacity {
    Capacity::new(bytes).unwrap()
}

/// A ring of 64 bytes filled by four records of 8 payload bytes (16 each), ids 0 to 3, none
/// returned yet.
fn full_ring<H: Hooks>(hooks: H) -> (HeapRing<H>, Consumer) {
    let (ring, consumer) = HeapRing::new(ring_of(64), hooks);
    for id in 0..4u8 {
        ring.write(&[id; 8]).unwrap();
    }
    (ring, consumer)
}

/// Runs of one model: all of them, and those in which the consumer read a record while a
/// producer was still running (plain std atomics: they count across runs, outside loom).
#[derive(Default)]
struct Runs {
    all: AtomicUsize,
    concurrent: AtomicUsize,
}

impl Runs {
    fn new() -> &'static Runs {
        Box::leak(Box::default())
    }

    fn run(&self) {
        self.all.fetch_add(1, StdOrdering::Relaxed);
    }

    /// The consumer has just read a record; `producer_done` says whether a producer had
    /// finished (loaded after the read, so it adds no order to the read itself).
    fn read_while(&self, producer_done: &AtomicBool) {
        // Acquire: a `false` here means the producer's last store does not happen before
        // the read: it was still running.
        if !producer_done.load(Ordering::Acquire) {
            self.concurrent.fetch_add(1, StdOrdering::Relaxed);
        }
    }

    /// Prints the counts and fails if the consumer never read while a producer ran.
    fn report(&self, name: &str, consumer_reads: bool) {
        let all = self.all.load(StdOrdering::Relaxed);
        let concurrent = self.concurrent.load(StdOrdering::Relaxed);
        eprintln!(
            "{name}: {all} runs explored, {concurrent} with a record read while a producer ran"
        );
        if consumer_reads {
            assert!(
                concurrent > 0,
                "{name}: the consumer never read a record while a producer ran"
            );
        }
    }
}

fn builder(preemption_bound: usize) -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemption_bound);
    }
    builder.max_branches = 100_000;
    builder
}

/// Checks a model whose consumer reads no record while producers run (it prints the count).
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    model_bounded(name, 3, f);
}

/// As [`model`], with a preemption bound of its own (three threads that walk take minutes at 3).
fn model_bounded(name: &str, preemption_bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let runs = Runs::new();
    builder(preemption_bound).check(move || {
        runs.run();
        f();
    });
    runs.report(name, false);
}

/// Checks a model whose consumer reads while producers run: it must, in some run. Two
/// producers and a consumer that keeps looking take many minutes at a preemption bound of 2 or
/// 3, a second at 1.
fn model_reading(
    name: &str,
    preemption_bound: usize,
    f: impl Fn(&'static Runs) + Sync + Send + 'static,
) {
    let runs = Runs::new();
    builder(preemption_bound).check(move || {
        runs.run();
        f(runs);
    });
    runs.report(name, true);
}

/// Looks at the ring until a batch has at least one record (or `give_up` says to stop),
/// calling `each` on every record of that batch; returns how many there were.
fn look_until_a_record(
    consumer: &mut Consumer,
    give_up: impl Fn() -> bool,
    mut each: impl FnMut(&[u8]),
) -> usize {
    loop {
        let batch = consumer.batch();
        let mut records = 0;
        for record in &batch {
            each(&record);
            records += 1;
        }
        if records > 0 || give_up() {
            return records;
        }
        drop(batch);
        thread::yield_now();
    }
}

/// Two writers: the one whose claim is second finds the first unpublished in some runs and
/// leaves an offer, which the first takes (`core/src/publish.rs`).
#[test]
fn loom_two_producers_publish_in_reservation_order() {
    model_reading("two producers", 1, |runs| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        let ring = Arc::new(ring);
        let done = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|id| {
                let ring = ring.clone();
                let done = done.clone();
                thread::spawn(move || {
                    let offset = ring.write(&[id; 8]).unwrap();
                    // Release: see `Runs::read_while` (either producer finishing counts).
                    done.store(true, Ordering::Release);
                    offset
                })
            })
            .collect();
        // Keeps looking while the producers run until it has a record, then the rest once
        // they are done.
        let mut seen = Vec::new();
        look_until_a_record(
            &mut consumer,
            || false,
            |record| {
                assert!(*record == [1; 8] || *record == [2; 8], "{record:?}");
                seen.push(record[0]);
            },
        );
        runs.read_while(&done);
        let offsets: Vec<u64> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        seen.extend(consumer.batch().iter().map(|r| r[0]));
        assert_eq!(seen.len(), 2);
        // Delivered in the order of the offsets the reservations got.
        let first = if offsets[0] < offsets[1] { 1 } else { 2 };
        assert_eq!(seen[0], first);
        assert_eq!(ring.producer_offset(), 32);
    });
}

/// A batched write (`Ring::write_batch`: one claim, payloads and committed headers written,
/// one publish) beside a producer of single records: the consumer, looking while they run,
/// sees every record whole, the batch's two records together and in order, and nothing of
/// the batch before its publish (loom tracks the payload copies).
#[test]
fn loom_batch_is_published_whole_beside_a_single_producer() {
    model_reading("batch and single", 1, |runs| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        let ring = Arc::new(ring);
        let done = Arc::new(AtomicBool::new(false));
        let batcher = {
            let ring = ring.clone();
            let done = done.clone();
            thread::spawn(move || {
                let offset = ring.write_batch(&[&[1; 8], &[2; 8]]).unwrap();
                // Release: see `Runs::read_while`.
                done.store(true, Ordering::Release);
                offset
            })
        };
        let single = {
            let ring = ring.clone();
            let done = done.clone();
            thread::spawn(move || {
                let offset = ring.write(&[3; 8]).unwrap();
                // Release: see `Runs::read_while`.
                done.store(true, Ordering::Release);
                offset
            })
        };
        let mut seen = Vec::new();
        look_until_a_record(
            &mut consumer,
            || false,
            |record| {
                assert!(record.len() == 8 && record.iter().all(|&b| b == record[0]));
                seen.push(record[0]);
            },
        );
        runs.read_while(&done);
        let batch_at = batcher.join().unwrap();
        let single_at = single.join().unwrap();
        seen.extend(consumer.batch().iter().map(|r| r[0]));
        let expected = if batch_at < single_at {
            [1, 2, 3]
        } else {
            [3, 1, 2]
        };
        assert_eq!(
            seen, expected,
            "in claim order, the batch's records together"
        );
        assert_eq!(ring.producer_offset(), 48);
    });
}

/// A query armed for the head a batched write is about to commit: the batch's one check of
/// the armed word after its publish, or the query's re-check, completes it, exactly once.
#[test]
fn loom_batch_commit_and_arm_never_lose_a_wakeup() {
    model("batch and arm", || {
        let (ring, _consumer) = HeapRing::new(ring_of(64), Waking::default());
        let ring = Arc::new(ring);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || ring.write_batch(&[&[5; 8], &[6; 8]]).unwrap())
        };
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

/// Offers (`core/src/publish.rs`), with the offer table of two slots it has under loom:
/// claims at 0, 16 and 32 share slot 0. One producer writes two records, the other one: in
/// some runs the first producer's second claim finds its own first claim's offer in the slot
/// and waits, until the other producer publishes 0 and takes that offer. Every record is
/// published exactly once, in claim order, and no offer is left behind (the producer offset
/// ends at the reserve offset).
#[test]
fn loom_offer_slot_taken_the_producer_waits_and_every_claim_is_published() {
    model_bounded("offer collision", 2, || {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        let ring = Arc::new(ring);
        let two = {
            let ring = ring.clone();
            thread::spawn(move || [ring.write(&[1; 8]).unwrap(), ring.write(&[2; 8]).unwrap()])
        };
        let one = {
            let ring = ring.clone();
            thread::spawn(move || ring.write(&[3; 8]).unwrap())
        };
        let [first, second] = two.join().unwrap();
        let third = one.join().unwrap();
        assert_eq!(ring.producer_offset(), 48, "every claim published");
        assert_eq!(ring.reserve_offset(), 48);
        let mut expected = [(first, 1u8), (second, 2), (third, 3)];
        expected.sort();
        let seen: Vec<u8> = consumer.batch().iter().map(|r| r[0]).collect();
        assert_eq!(
            seen,
            expected.map(|(_, id)| id),
            "in claim order, each once"
        );
    });
}

/// Three writers, whose claims at 0, 16 and 32 share offer slot 0: the third joins the
/// second's offer when it finds the slot taken, while the second may be taking its offer
/// back (the producer offset reached it) and the first may be taking it to publish it. Each
/// take reads the offer as it is then, grown or not: every record is published once.
#[test]
fn loom_offer_joined_while_taken_back_or_taken_publishes_every_claim() {
    model_bounded("offer joined", 2, || {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        let ring = Arc::new(ring);
        let writers: Vec<_> = [1u8, 2, 3]
            .into_iter()
            .map(|id| {
                let ring = ring.clone();
                thread::spawn(move || (ring.write(&[id; 8]).unwrap(), id))
            })
            .collect();
        let mut claims: Vec<(u64, u8)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        claims.sort();
        assert_eq!(ring.producer_offset(), 48, "every claim published");
        let seen: Vec<u8> = consumer.batch().iter().map(|r| r[0]).collect();
        let expected: Vec<u8> = claims.iter().map(|&(_, id)| id).collect();
        assert_eq!(seen, expected, "in claim order, each once");
    });
}

/// The three-party meeting of `Ring::header_committed` (`core/src/publish.rs`): a written
/// record and a reservation race for the first two claims; the consumer reads the first
/// record and pends a query for the second while the producer of the first may be taking the
/// second's offer and publishing it, and its producer may be committing it. The query is
/// completed exactly once, and only once the record is committed and published: by the
/// query's own check, the publisher's or the committer's wake-up.
#[test]
fn loom_offer_published_by_another_and_committed_by_its_own_never_loses_a_wakeup() {
    model_reading("offer and wake", 4, |runs| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), Waking::default());
        let ring = Arc::new(ring);
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let ring = ring.clone();
            let done = done.clone();
            thread::spawn(move || {
                ring.write(&[1; 8]).unwrap();
                // Release: see `Runs::read_while`.
                done.store(true, Ordering::Release);
            })
        };
        let reserver = {
            let ring = ring.clone();
            let done = done.clone();
            thread::spawn(move || {
                let mut r = ring.reserve(8).unwrap();
                r.payload().fill(2);
                r.submit();
                // Release: see `Runs::read_while`.
                done.store(true, Ordering::Release);
            })
        };
        // Reads the whole first batch: when it holds both records, the one claimed second
        // may have been offered and published by the other producer, whose release passes
        // the offerer's payload on (loom tracks the payload accesses).
        let first = look_until_a_record(
            &mut consumer,
            || false,
            |record| assert!(record.len() == 8 && record.iter().all(|&b| b == record[0])),
        );
        runs.read_while(&done);
        if first == 1 {
            let head = consumer.position();
            pend_query(&ring, head);
            let slot = ring.hooks().slot.lock().unwrap();
            // A completion before the commit would be a wake-up for a LOCKED record.
            assert!(
                slot.completed == 0 || ring.is_committed(head),
                "completed before the head was committed and published"
            );
        }
        writer.join().unwrap();
        reserver.join().unwrap();
        let slot = ring.hooks().slot.lock().unwrap();
        if first == 1 {
            assert_eq!(
                slot.completed, 1,
                "the committed head completed the query once"
            );
            assert!(!slot.pending);
        }
    });
}

#[test]
fn loom_three_producers_reserve_disjoint_ranges() {
    // Three threads that wait for each other: a preemption bound of 1 keeps the model to
    // seconds (2 takes many minutes on two cores).
    let runs = Runs::new();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(1);
    builder.max_branches = 100_000;
    builder.check(move || {
        runs.run();
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
    runs.report("three producers", false);
}

#[test]
fn loom_locked_bit_hides_a_record_being_written() {
    model_reading("LOCKED bit", 3, |runs| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        let ring = Arc::new(ring);
        let done = Arc::new(AtomicBool::new(false));
        let producer = {
            let ring = ring.clone();
            let done = done.clone();
            thread::spawn(move || {
                let mut r = ring.reserve(16).unwrap();
                r.payload().copy_from_slice(&[7; 16]);
                r.submit();
                // Release: see `Runs::read_while`.
                done.store(true, Ordering::Release);
            })
        };
        // Keeps looking while the producer runs: what it sees is whole.
        let records = look_until_a_record(
            &mut consumer,
            || false,
            |record| {
                assert_eq!(*record, [7; 16]);
            },
        );
        assert_eq!(records, 1);
        runs.read_while(&done);
        producer.join().unwrap();
        assert_eq!(consumer.position(), 24);
        assert_eq!(consumer.batch().len(), 0);
    });
}

#[test]
fn loom_space_returned_by_the_consumer_versus_a_reserve() {
    model_reading("space returned", 3, |runs| {
        let (ring, mut consumer) = full_ring(());
        let ring = Arc::new(ring);
        let done = Arc::new(AtomicBool::new(false));
        let producer = {
            let ring = ring.clone();
            let done = done.clone();
            thread::spawn(move || {
                let reserved = match ring.reserve(8) {
                    Ok(mut r) => {
                        r.payload().fill(9);
                        r.submit();
                        true
                    }
                    Err(ReserveError::Full) => false,
                    Err(e) => panic!("{e}"),
                };
                // Release: see `Runs::read_while`.
                done.store(true, Ordering::Release);
                reserved
            })
        };
        {
            let batch = consumer.batch();
            let ids: Vec<u8> = batch.iter().map(|r| r[0]).collect();
            assert_eq!(ids, [0, 1, 2, 3], "nothing overwritten while lent");
        }
        // Keeps looking for the producer's record (in the space just returned) until it has
        // it or the producer is done.
        // Relaxed: only decides when to stop looking; the join below orders the rest.
        let finished = || done.load(Ordering::Relaxed);
        let read = look_until_a_record(&mut consumer, finished, |record| {
            assert_eq!(*record, [9; 8]);
        });
        if read > 0 {
            runs.read_while(&done);
        }
        let reserved = producer.join().unwrap();
        assert_eq!(ring.dropped(), u64::from(!reserved));
        if reserved && read == 0 {
            assert_eq!(*consumer.batch().iter().next().unwrap(), [9; 8]);
        }
    });
}

#[test]
fn loom_validated_offset_under_a_hostile_writer() {
    model("hostile writer", || {
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
    model("arm and commit", || {
        let (ring, _consumer) = HeapRing::new(ring_of(64), Waking::default());
        let ring = Arc::new(ring);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut r = ring.reserve(8).unwrap();
                r.payload().fill(5);
                r.submit();
            })
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
    model("cancel versus completion", || {
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
            // A producer wakes the query only for a committed, published head (its own loads
            // saw both; these loads come later in the same thread, so they see as much).
            assert!(
                ring.is_committed(head),
                "woken for a head not committed or published"
            );
            slot.pending = false;
            slot.completed += 1;
        }
    }
}

#[test]
fn loom_query_armed_on_a_head_whose_slot_is_reused_is_still_woken() {
    // Found by the TLA+ model RingBufferMP: the head is committed, then a full ring's walk
    // passes it and a new LOCKED record takes its slot while the query arms.
    query_on_a_reused_head_slot("reused head slot", false);
}

/// The head (0..32) is committed and read; a producer finds the ring full, walks past the
/// head and takes its slot for a newer record (discarded when the producer is done with it,
/// which is at once or, if `hold`, only once the query pends) while the query for the head
/// arms. The query must complete exactly once.
fn query_on_a_reused_head_slot(name: &str, hold: bool) {
    model(name, move || {
        let (ring, _consumer) = HeapRing::new(ring_of(64), Waking::default());
        ring.write(&[1; 24]).unwrap(); // 0..32, the head the query waits for
        ring.write(&[2; 24]).unwrap(); // 32..64
        ring.hostile_store_consumer_page(32); // the consumer has read the head
        let ring = Arc::new(ring);
        let queried = Arc::new(AtomicBool::new(false));
        let producer = {
            let ring = ring.clone();
            let queried = queried.clone();
            thread::spawn(move || {
                // Finds the ring full, walks past the head, takes its slot.
                let r = ring.reserve(24).unwrap();
                assert_eq!(r.offset(), 64);
                // Relaxed: only holds the slot LOCKED until the query is pending.
                while hold && !queried.load(Ordering::Relaxed) {
                    thread::yield_now();
                }
                drop(r); // discarded
            })
        };
        pend_query(&ring, 0);
        // Relaxed: see the producer's load.
        queried.store(true, Ordering::Relaxed);
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
    model("new mapping", || {
        let (ring, mut consumer) = full_ring(()); // 4 records of 16 bytes: full
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

/// What a producer's write came to: written, or refused because the ring was full.
fn write_or_full<H: Hooks>(ring: &HeapRing<H>, payload: &[u8]) -> bool {
    match ring.write(payload) {
        Ok(_) => true,
        Err(ReserveError::Full) => false,
        Err(e) => panic!("{e}"),
    }
}

/// The consumer returns a full ring's space while two producers find it full. One walks
/// (acquiring the consumer page) and frees the space for both; the other may reserve in it on
/// the strength of that walk's exchange alone: through its own first load of the validated
/// offset (reserve's acquire), or through its walk's load of `current` when the hint it loads
/// is still the old one. Its write into the returned space must come after the consumer's
/// reads of it; loom tracks both. Needs, one step weaker each failing it: the page walk's
/// acquire of the hint, the exchange's release, reserve's acquire, the walk's acquire of
/// `current`. (The walk that wins is safe without them: the SeqCst fence after its exchange
/// acquires what its loads read; the other producer is the one that needs them.)
#[test]
fn loom_space_returned_to_two_producers_comes_after_the_consumers_reads() {
    model_bounded("space returned to two producers", 2, || {
        let (ring, mut consumer) = full_ring(()); // 4 records of 16 bytes: full
        let ring = Arc::new(ring);
        let producers: Vec<_> = [5u8, 6]
            .into_iter()
            .map(|id| {
                let ring = ring.clone();
                thread::spawn(move || write_or_full(&ring, &[id; 8]))
            })
            .collect();
        {
            let batch = consumer.batch();
            let ids: Vec<u8> = batch.iter().map(|r| r[0]).collect();
            assert_eq!(ids, [0, 1, 2, 3], "nothing overwritten while lent");
        }
        let wrote: Vec<bool> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        let written = wrote.iter().filter(|&&w| w).count();
        assert_eq!(ring.dropped(), (2 - written) as u64);
        let ids: Vec<u8> = consumer.batch().iter().map(|r| r[0]).collect();
        assert_eq!(ids.len(), written);
    });
}

/// The consumer page claims everything was read (a hostile consumer); a producer writes a
/// record as large as the ring while two others find it full and walk. A walk must stop at
/// the record while it is LOCKED (the walk's acquire of the producer offset: below it every
/// header is written, so a stale, unlocked word is never read there), and a producer that
/// reuses the record's space on the strength of another's walk must come after the record's
/// writes (the walk's acquire of each header, released again by its exchange): loom tracks
/// the payload writes of all three.
#[test]
fn loom_a_walk_stops_at_a_record_being_written_and_orders_its_writes() {
    model_bounded("walk over a record being written", 3, || {
        let (ring, _consumer) = HeapRing::new(ring_of(64), ());
        ring.hostile_store_consumer_page(u64::MAX);
        let ring = Arc::new(ring);
        // The first reserves (its record LOCKED while written); the others write, copying
        // their payloads before their publish and its SeqCst fence, so that only the walk's
        // acquire of the header orders a copy into space it returned after the commit's
        // payload writes.
        let threads: Vec<_> = [(1u8, 56usize), (2, 8), (3, 8)]
            .into_iter()
            .map(|(id, len)| {
                let ring = ring.clone();
                thread::spawn(move || {
                    if id == 1 {
                        if let Ok(mut r) = ring.reserve(len) {
                            r.payload().fill(id);
                            r.submit();
                        }
                    } else {
                        let _ = ring.write(&[id; 8]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(ring.validated_consumer_offset() <= ring.producer_offset());
    });
}

/// A query for a head that a producer holds LOCKED must not complete before the commit: the
/// check reads the header only below the producer offset it acquired (below it, every header
/// is written; a stale, unlocked word there would complete the query for nothing).
#[test]
fn loom_query_on_a_record_being_written_waits_for_its_commit() {
    model("query on a record being written", || {
        let (ring, _consumer) = HeapRing::new(ring_of(64), Waking::default());
        let ring = Arc::new(ring);
        let may_commit = Arc::new(AtomicBool::new(false));
        let producer = {
            let ring = ring.clone();
            let may_commit = may_commit.clone();
            thread::spawn(move || {
                let mut r = ring.reserve(8).unwrap();
                r.payload().fill(1);
                // Relaxed: only holds the record back; it orders nothing the test checks.
                while !may_commit.load(Ordering::Relaxed) {
                    thread::yield_now();
                }
                r.submit();
            })
        };
        pend_query(&ring, 0);
        assert_eq!(
            ring.hooks().slot.lock().unwrap().completed,
            0,
            "completed before the head was committed"
        );
        // Relaxed: see the load above.
        may_commit.store(true, Ordering::Relaxed);
        producer.join().unwrap();
        assert_eq!(ring.hooks().slot.lock().unwrap().completed, 1);
    });
}

/// As `loom_query_armed_on_a_head_whose_slot_is_reused_is_still_woken`, but the producer holds
/// the reused slot LOCKED until the query is pending, so the query's check finds it LOCKED:
/// only the walk's wake-up completes the query then. The walk's store (its exchange) and load
/// (the armed word) against the query's store (the armed word) and load (the validated
/// offset): it needs SeqCst fences on both sides; an AcqRel fence after the walk loses it.
#[test]
fn loom_query_armed_while_a_newer_record_holds_the_head_slot_is_woken_by_the_walk() {
    query_on_a_reused_head_slot("head slot held by a newer record", true);
}

/// A producer walks from the consumer page while the mapping ends, and the host frees the old
/// page as soon as the retirement returns. The walk finds nothing to return (so no fence
/// follows it): only its release as it leaves the hint gate, acquired by the retirement's
/// wait, puts its load of the page before the free.
#[test]
fn loom_a_page_is_freed_only_after_every_walk_that_read_it() {
    model("page freed after the retirement", || {
        let (ring, consumer) = full_ring(()); // full, and the page returns nothing
        let ring = Arc::new(ring);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || write_or_full(&ring, &[9; 8]))
        };
        let (_b, stale, retired) = ring.remap(consumer);
        assert_eq!(retired.final_offset, 0);
        stale.free();
        assert!(!producer.join().unwrap(), "nothing was returned");
    });
}

/// Records of several sizes in a ring of 64 bytes: 5 and 20 payload bytes (13 and 28 with the
/// header, padded to 16 and 32), then a third of 20 that starts at 48 and wraps at the end of
/// the data into the space of the first, then a fourth of 8 in the space of the second. The
/// consumer returns the first record only; its QUERY then carries an offset that ends inside
/// the second, so the walk must stop before it. A producer that finds the ring full keeps
/// trying until the consumer has returned the space; the consumer keeps looking and must read
/// each record whole, in order, the third while the producer still works on the fourth.
#[test]
fn loom_records_of_several_sizes_padding_a_hint_inside_a_record_and_a_wrap() {
    model_reading("records of several sizes", 2, |runs| {
        let (ring, mut consumer) = HeapRing::new(ring_of(64), ());
        assert_eq!(ring.write(&[1; 5]).unwrap(), 0); // 0..16
        assert_eq!(ring.write(&[2; 20]).unwrap(), 16); // 16..48
        let ring = Arc::new(ring);
        let done = Arc::new(AtomicBool::new(false));
        let producer = {
            let ring = ring.clone();
            let done = done.clone();
            thread::spawn(move || {
                // 48..80 wraps into the first record's space; 80..96 takes the second's.
                for payload in [&[3u8; 20][..], &[4; 8]] {
                    while !write_or_full(&ring, payload) {
                        thread::yield_now();
                    }
                }
                // Release: see `Runs::read_while`.
                done.store(true, Ordering::Release);
            })
        };
        {
            let mut batch = consumer.batch();
            let sizes: Vec<usize> = batch.iter().map(|r| r.len()).collect();
            assert_eq!(sizes, [5, 20], "nothing overwritten while lent");
            batch.keep_first(1); // returns 0..16 only
        }
        // The consumer's QUERY, after its reads: 40 ends inside the second record.
        assert_eq!(ring.advance_consumer_offset_for(1, 40), Some(16));
        assert!(ring.validated_consumer_offset() <= 16);
        // Keeps looking, each batch returning its space, until it has all three.
        let mut seen: Vec<Vec<u8>> = Vec::new();
        while seen.len() < 3 {
            let had_third = seen.len() >= 2;
            look_until_a_record(
                &mut consumer,
                || false,
                |record| {
                    seen.push(record.to_vec());
                },
            );
            if !had_third && seen.len() >= 2 {
                runs.read_while(&done);
            }
        }
        assert_eq!(seen, [vec![2; 20], vec![3; 20], vec![4; 8]]);
        producer.join().unwrap();
        assert_eq!(ring.producer_offset(), 96);
    });
}

/// A producer finds the ring full just as the mapping ends: shut out of the hint gate, it
/// cannot walk, and reuses space on the strength of the validated offset alone, which the
/// consumer's own QUERY walked forward after its reads. The producer's write into that space
/// must come after those reads: the validated offset it loads once shut out must be acquired
/// (the retirement's fences do not order the consumer's reads for it: its walk returned
/// nothing, so no fence follows it). loom does not reach the run that needs that acquire (the
/// producer's gate fence would have to come before both the retirement's and the QUERY's,
/// and loom's fences join; see the module comment): this model checks the path, and the
/// acquire, shared with the walk's load of `current`, is checked by the models that catch
/// that one.
#[test]
fn loom_a_producer_shut_out_of_the_gate_reuses_space_only_after_the_consumers_reads() {
    model_bounded("producer shut out of the gate", 3, || {
        let (ring, mut consumer) = full_ring(()); // full
        let ring = Arc::new(ring);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || write_or_full(&ring, &[9; 8]))
        };
        let retirer = {
            let ring = ring.clone();
            thread::spawn(move || ring.retire_consumer_page(1))
        };
        {
            let batch = consumer.batch();
            let ids: Vec<u8> = batch.iter().map(|r| r[0]).collect();
            assert_eq!(ids, [0, 1, 2, 3], "nothing overwritten while lent");
        }
        // The consumer's QUERY carries what it has read (None: the mapping ended first).
        let _ = ring.advance_consumer_offset_for(1, 64);
        let retired = retirer.join().unwrap();
        let wrote = producer.join().unwrap();
        assert!(retired.final_offset <= ring.validated_consumer_offset());
        assert_eq!(ring.dropped(), u64::from(!wrote));
    });
}
