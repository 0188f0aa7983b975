//! Property tests: random interleavings of reserve, submit, discard, consume and hostile
//! writes to the consumer page, against a plain reference model of the ring.

use std::collections::BTreeMap;
use std::vec::Vec;

use proptest::prelude::*;

use crate::layout::Capacity;
use crate::placement::HeapRing;
use crate::producer::{Reservation, ReserveError};
use crate::record::{LOCKED, padded_size};
use crate::sync::Ordering;

#[derive(Clone, Debug)]
enum Op {
    Reserve(usize),
    Submit(usize),
    Discard(usize),
    Consume(usize),
    /// Writes a value into the consumer page, as a hostile consumer process would.
    Hostile(HostileValue),
}

#[derive(Clone, Debug)]
enum HostileValue {
    Any(u64),
    AroundProducer(i64),
    AroundValidated(i64),
}

fn op(hostile: bool) -> BoxedStrategy<Op> {
    let honest = prop_oneof![
        4 => (1usize..700).prop_map(Op::Reserve),
        3 => any::<usize>().prop_map(Op::Submit),
        1 => any::<usize>().prop_map(Op::Discard),
        2 => (1usize..6).prop_map(Op::Consume),
    ];
    if hostile {
        prop_oneof![
            8 => honest,
            2 => prop_oneof![
                any::<u64>().prop_map(HostileValue::Any),
                (-64i64..64).prop_map(HostileValue::AroundProducer),
                (-64i64..600).prop_map(HostileValue::AroundValidated),
            ]
            .prop_map(Op::Hostile),
        ]
        .boxed()
    } else {
        honest.boxed()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Locked,
    Submitted,
    Discarded,
}

#[derive(Clone, Debug)]
struct ModelRecord {
    size: u64,
    id: u32,
    len: usize,
    state: State,
}

/// The reference: records by offset, the offsets, and the lazy validated offset.
#[derive(Default)]
struct Model {
    records: BTreeMap<u64, ModelRecord>,
    reserve: u64,
    validated: u64,
    consumer: u64,
    page: u64,
    dropped: u64,
}

impl Model {
    /// Walks committed records from the validated offset toward `min(hint, producer)`.
    fn advance(&mut self, hint: u64) {
        let target = hint.min(self.reserve);
        while self.validated < target {
            match self.records.get(&self.validated) {
                Some(r) if r.state != State::Locked && self.validated + r.size <= target => {
                    self.validated += r.size;
                }
                _ => break,
            }
        }
    }

    fn reserve(&mut self, len: usize, capacity: u64) -> Result<u64, ReserveError> {
        let size = padded_size(len as u32);
        if self.reserve + size > self.validated + capacity {
            self.advance(self.page);
            if self.reserve + size > self.validated + capacity {
                self.dropped += 1;
                return Err(ReserveError::Full);
            }
        }
        let start = self.reserve;
        self.reserve += size;
        Ok(start)
    }

    /// What the consumer's next batch holds, and where it ends.
    fn batch(&self, max: usize) -> (Vec<u32>, u64) {
        let mut out = Vec::new();
        let mut position = self.consumer;
        while out.len() < max {
            match self.records.get(&position) {
                Some(r) if r.state == State::Submitted => out.push(r.id),
                Some(r) if r.state == State::Discarded => {}
                _ => break,
            }
            position += self.records[&position].size;
        }
        (out, position)
    }
}

fn fill(id: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn run(ops: Vec<Op>, hostile: bool) -> Result<(), TestCaseError> {
    let capacity = Capacity::new(4096).unwrap();
    let cap = capacity.as_u64();
    let (ring, mut consumer) = HeapRing::new(capacity, ());
    let mut model = Model::default();
    let mut outstanding: Vec<(Reservation<'_>, u32)> = Vec::new();
    let mut next_id = 0u32;
    let mut last_validated = 0;
    for op in ops {
        match op {
            Op::Reserve(len) => {
                if outstanding.len() >= 4 {
                    continue;
                }
                let got = ring.reserve(len);
                if hostile {
                    // The model's laziness differs once the page lies; only invariants hold.
                    if let Ok(mut r) = got {
                        r.payload().copy_from_slice(&fill(next_id, len));
                        outstanding.push((r, next_id));
                        next_id += 1;
                    }
                } else {
                    let expected = model.reserve(len, cap);
                    match (got, expected) {
                        (Ok(mut r), Ok(start)) => {
                            prop_assert_eq!(r.offset(), start);
                            r.payload().copy_from_slice(&fill(next_id, len));
                            let size = padded_size(len as u32);
                            model.records.insert(
                                start,
                                ModelRecord {
                                    size,
                                    id: next_id,
                                    len,
                                    state: State::Locked,
                                },
                            );
                            outstanding.push((r, next_id));
                            next_id += 1;
                        }
                        (Err(e), Err(m)) => prop_assert_eq!(e, m),
                        (got, expected) => {
                            return Err(TestCaseError::fail(format!(
                                "reserve({len}): ring {:?}, model {expected:?}",
                                got.map(|r| r.offset())
                            )));
                        }
                    }
                }
            }
            Op::Submit(k) | Op::Discard(k) => {
                if outstanding.is_empty() {
                    continue;
                }
                let (r, _id) = outstanding.remove(k % outstanding.len());
                let offset = r.offset();
                let submit = matches!(op, Op::Submit(_));
                if submit {
                    r.submit();
                } else {
                    r.discard();
                }
                if let Some(m) = model.records.get_mut(&offset) {
                    m.state = if submit {
                        State::Submitted
                    } else {
                        State::Discarded
                    };
                }
            }
            Op::Consume(max) => {
                let batch = consumer.batch_up_to(max);
                let got: Vec<Vec<u8>> = batch.iter().map(|r| r.to_vec()).collect();
                for record in &got {
                    prop_assert!(record.len() as u64 <= cap);
                }
                if !hostile {
                    let (ids, end) = model.batch(max);
                    let expected: Vec<Vec<u8>> = ids
                        .iter()
                        .map(|id| {
                            let len = model.records.values().find(|r| r.id == *id).unwrap().len;
                            fill(*id, len)
                        })
                        .collect();
                    prop_assert_eq!(&got, &expected);
                    prop_assert_eq!(batch.end(), end);
                    model.consumer = end;
                    if end != batch.start() {
                        model.page = end;
                    }
                }
            }
            Op::Hostile(value) => {
                let value = match value {
                    HostileValue::Any(v) => v,
                    HostileValue::AroundProducer(d) => {
                        ring.producer_offset().wrapping_add_signed(d)
                    }
                    HostileValue::AroundValidated(d) => {
                        ring.validated_consumer_offset().wrapping_add_signed(d)
                    }
                };
                ring.hostile_store_consumer_page(value);
            }
        }

        // Invariants after every step.
        let producer = ring.producer_offset();
        let validated = ring.validated_consumer_offset();
        prop_assert_eq!(ring.reserve_offset(), producer, "no reserve is in flight");
        prop_assert!(validated <= producer);
        prop_assert!(producer - validated <= cap);
        prop_assert!(
            validated >= last_validated,
            "the validated offset never goes back"
        );
        last_validated = validated;
        for (r, id) in outstanding.iter_mut() {
            let header = ring.placement().data().header(r.offset());
            prop_assert_eq!(
                header.len.load(Ordering::Relaxed),
                LOCKED | r.len() as u32,
                "a reserved record's header stays LOCKED"
            );
            prop_assert!(r.offset() >= validated, "no locked record is returned");
            let expected = fill(*id, r.len());
            prop_assert_eq!(
                r.payload(),
                &expected[..],
                "a reserved record is never overwritten"
            );
        }
        if !hostile {
            prop_assert_eq!(ring.dropped(), model.dropped);
            prop_assert_eq!(producer, model.reserve);
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        // Under miri the cases are fixed: a few, the same in every run. With random ones a
        // CI run met an internal error of miri's weak-memory emulation ("cannot have empty
        // store buffer when previous write was atomic", nightly 2026-05-19) in one of them;
        // the random cases run natively, 256 a run.
        rng_seed: if cfg!(miri) {
            proptest::test_runner::RngSeed::Fixed(11)
        } else {
            proptest::test_runner::RngSeed::Random
        },
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn honest_interleavings_match_the_model(ops in proptest::collection::vec(op(false), 1..300)) {
        run(ops, false)?;
    }

    #[test]
    fn a_hostile_consumer_page_never_frees_a_locked_record(
        ops in proptest::collection::vec(op(true), 1..300)
    ) {
        run(ops, true)?;
    }
}
