//! A single-thread workload for counting instructions per record with callgrind: one thread
//! produces `RECORDS` 8-byte records into a 1 MiB ring, then consumes them, `2 * ROUNDS`
//! times: one record per reserve (`Ring::write`) in even rounds, `Ring::write_batch` of 16
//! in odd rounds.
//! Producing, consuming and returning the space (the walk of the validated consumer offset,
//! which a QUERY or a producer that finds the ring full does) are separate non-inlined
//! functions, so callgrind's inclusive cost of each, over `ROUNDS * RECORDS`, is the cost of
//! one record (`scripts/instructions.sh` does all this):
//!
//! ```text
//! cargo build --release -p ringmap-core --example per_record_instructions
//! valgrind --tool=callgrind --callgrind-out-file=target/callgrind.out \
//!     target/release/examples/per_record_instructions
//! callgrind_annotate --inclusive=yes target/callgrind.out | grep -E 'produce_|consume_|return_space'
//! ```
//!
//! The example prints the record count to divide by. No timing: instruction counts are exact.

use std::hint::black_box;

use ringmap_core::{Capacity, Consumer, HeapRing, Ring};

/// Records per round: the 1 MiB ring holds 65536 records of 8 payload bytes (16 with header).
const RECORDS: u64 = 1 << 15;
const ROUNDS: u64 = 8;

/// Writes `RECORDS` records, each carrying its sequence number.
#[inline(never)]
fn produce_records(ring: &Ring, first: u64) {
    for seq in first..first + RECORDS {
        ring.write(&seq.to_le_bytes())
            .expect("the ring holds one round of records");
    }
}

/// Writes `RECORDS` records with `Ring::write_batch`, `BATCH` per claim.
#[inline(never)]
fn produce_batched(ring: &Ring, first: u64) {
    const BATCH: u64 = 16;
    for batch in (first..first + RECORDS).step_by(BATCH as usize) {
        let values: [[u8; 8]; BATCH as usize] =
            core::array::from_fn(|i| (batch + i as u64).to_le_bytes());
        let payloads: [&[u8]; BATCH as usize] = core::array::from_fn(|i| &values[i][..]);
        ring.write_batch(&payloads)
            .expect("the ring holds one round of records");
    }
}

/// Consumes every record there is; returns how many and the sum of their sequence numbers.
#[inline(never)]
fn consume_records(consumer: &mut Consumer) -> (u64, u64) {
    let mut count = 0u64;
    let mut sum = 0u64;
    consumer.consume(|record| {
        let seq: [u8; 8] = record.payload().try_into().expect("8-byte records");
        sum = sum.wrapping_add(u64::from_le_bytes(seq));
        count += 1;
    });
    (count, sum)
}

/// Returns the consumed space to producers, as a QUERY carrying the consumer's position does:
/// the walk of the validated consumer offset over every record consumed. Without it the
/// producer would walk when it finds the ring full, and its count would include the walk.
#[inline(never)]
fn return_space(ring: &Ring, generation: u64, position: u64) -> u64 {
    ring.advance_consumer_offset_for(generation, position)
        .expect("the heap ring's mapping is attached")
}

fn main() {
    let (ring, mut consumer) = HeapRing::new(Capacity::DEFAULT, ());
    let generation = ring
        .attached_generation()
        .expect("a heap ring starts attached");
    let mut total = 0u64;
    for round in 0..2 * ROUNDS {
        let first = round * RECORDS;
        // Even rounds write one record per reserve, odd rounds in batches.
        if round % 2 == 0 {
            produce_records(black_box(&ring), first);
        } else {
            produce_batched(black_box(&ring), first);
        }
        let (count, sum) = consume_records(black_box(&mut consumer));
        assert_eq!(count, RECORDS, "every record produced is consumed");
        assert_eq!(sum, (first..first + RECORDS).sum::<u64>());
        let validated = return_space(black_box(&ring), generation, consumer.position());
        assert_eq!(validated, consumer.position(), "all the space is returned");
        total += count;
    }
    // What scripts/instructions.sh divides by: records per producing function, then in all.
    println!(
        "records per producer function, consumed in all: {} {total}",
        ROUNDS * RECORDS
    );
}
