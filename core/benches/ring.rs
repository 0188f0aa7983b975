//! Throughput of the ring, side by side in one run with its peers: one table of medians,
//! spreads and ratios (absolute times mean little on a shared machine; ratios measured
//! moments apart do).
//!
//! `cargo bench -p ringmap-core` runs these cases:
//!
//! - **8 B, 1 producer → 1 consumer.** `ringmap`: a 1 MiB ring (`Capacity::DEFAULT`); the
//!   producer writes each record with `Ring::write` (the payload, a sequence number, copied
//!   in before the publish), waiting on `ReserveError::Full`; `ringmap-reserve` reserves,
//!   writes into the reservation and submits instead (the zero-copy path: its record is
//!   published LOCKED, before its payload is written); the consumer takes records with `Consumer::consume` (one pass)
//!   and checks each sequence number, so every record is touched and none may be lost.
//!   Peers: `rtrb` 0.3 (`push` / `pop` of a `u64`, 1 MiB of slots) and crossbeam's
//!   `ArrayQueue` (`push` / `pop` of a `u64`, as many slots as the ring holds records), and
//!   the Linux BPF ringbuf (below).
//! - **4 KiB, 1 → 1.** `ringmap` as above with 4 KiB payloads, and `ringmap-batch`
//!   (`Ring::write_batch` of 16 such records per claim, 64 KiB); `rtrb` as a `u8` ring, one
//!   `write_chunk_uninit(4096)` / `read_chunk(4096)` per record with the same copy and check;
//!   `memcpy`: one thread copying each payload into a 1 MiB destination, cycling (the bound
//!   for the producer's copy, with no second thread and no handshake). The source payload
//!   starts half a page into its page and memcpy's destination is page-aligned, as the ring's
//!   data is, so that no peer's copy is the slow kind of `rep movsb` (`SOURCE_IN_PAGE`); the
//!   memcpy and rtrb cases assert so.
//! - **8 B, 2 and 4 producers → 1 consumer.** `ringmap` (one `write` per record),
//!   `ringmap-batch` (`Ring::write_batch` of 16 records per claim), crossbeam `ArrayQueue`
//!   with the same producers, and the BPF ringbuf with the same producers. Each producer
//!   writes its own sequence; the consumer checks every producer's order. A ringmap
//!   producer waits for an earlier one only when their claims meet in the offer table
//!   (`core/src/publish.rs`); ringmap's hooks (`YieldingHooks`) then yield after 64 spins,
//!   as a user-mode host with more producers than cores must.
//! - **wake, cross-process.** A plain eventfd ping-pong between this process and a forked
//!   child (each side blocked in `read` until the other writes): the time from one side's
//!   write to the other side's return, half a round trip. A peer number only: ringmap's own
//!   wake-up is measured by the host (usersim, `ringmap bench`), not by this crate.
//!
//! The Linux BPF ringbuf runs only where `bpf()` lets this process create a ringbuf map and
//! load a program (root, or CAP_BPF); otherwise its rows say "skipped: needs root / bpf()".
//! It needs neither libbpf nor clang: the program (reserve 8 bytes, store the sequence
//! number, submit with `BPF_RB_NO_WAKEUP`) is eight instructions assembled here, run by
//! `BPF_PROG_TEST_RUN` with `repeat`, and the consumer is libbpf's `ringbuf_process_ring`
//! loop written out over the map's mmap.
//!
//! Both sides wait the same way in every implementation (`Backoff`): spins that double from
//! 1 to 64 spin hints, then `yield_now`. How eagerly a waiting consumer re-polls moves every
//! ring's numbers a lot, so compare ratios from one run, not numbers across runs.
//!
//! Each case first runs a short warm-up, whose rate fixes the case's record count (about
//! 300 ms of work, the same count in every rep); then the cases run `RINGMAP_BENCH_REPS`
//! times (default 7), interleaved, so that a noisy moment hits all of them. The table gives
//! each case's median, range and spread (half the range over the median), and for each peer
//! the ratio of ringmap's records per second to the peer's, taken rep by rep (ringmap's rep
//! i against the peer's rep i, run moments apart) and summarised the same way, with the goal
//! and whether the median ratio meets it. Bytes per second count payload bytes only.
//!
//! Goals (issue 11; reported, not asserted): 8 B 1 → 1 at least 1.0x rtrb and crossbeam and
//! 5x the BPF ringbuf; 2 and 4 producers at least 1.0x crossbeam and 5x the BPF ringbuf with
//! the same producers; 4 KiB at least 0.7x memcpy's bytes per second. The instruction goals
//! (produce <= 40, consume <= 35 per record) are counted by `scripts/instructions.sh`.
//!
//! `cargo bench -p ringmap-core -- 8B-2p memcpy` runs only the cases whose names contain one
//! of the words (`ringmap-8B-1p`, `crossbeam-8B-4p`, `wake`, ...; a ratio needs both sides);
//! `RINGMAP_BENCH_VERBOSE=1` prints every rep, with how often its consumer found nothing to
//! take per record (a consumer that keeps up with its producer polls the lines the producer
//! writes next). The "cores" column is the CPU time of a run's threads over its wall time
//! (Linux): near 2, both sides ran at once on the 2-core machines; near 1, they took turns on
//! one core. Under `cargo test --benches` (`--test`, no `--bench`)
//! every case runs once with few records, as a smoke test.

use std::hint::{black_box, spin_loop};
use std::mem::MaybeUninit;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use ringmap_core::{Capacity, HeapRing, Hooks, ReserveError};

/// The ring's data capacity, and the peers' buffer size.
const RING_BYTES: usize = Capacity::DEFAULT.bytes();
/// Records a 1 MiB ring holds with 8-byte payloads (16 bytes each with the header): the
/// crossbeam queue gets as many slots.
const RING_RECORDS: usize = RING_BYTES / 16;
/// Records per `write_batch` in the `ringmap-batch` case.
const BATCH: usize = 16;

/// Which implementation a case runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ringmap,
    RingmapReserve,
    RingmapBatch,
    Rtrb,
    Crossbeam,
    Memcpy,
    Bpf,
    Wake,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ringmap => "ringmap",
            Kind::RingmapReserve => "ringmap-reserve",
            Kind::RingmapBatch => "ringmap-batch",
            Kind::Rtrb => "rtrb",
            Kind::Crossbeam => "crossbeam",
            Kind::Memcpy => "memcpy",
            Kind::Bpf => "bpf-ringbuf",
            Kind::Wake => "eventfd",
        }
    }
}

/// One timed run: how long, and how often a producer found the ring full.
struct Run {
    elapsed: Duration,
    full_retries: u64,
    /// CPU time of the run's threads together, where the OS tells (Linux): over `elapsed`,
    /// how many cores the run had.
    cpu: Option<Duration>,
    /// How often the consumer found nothing to take (its `Backoff` waits), where there is a
    /// consumer: a consumer that keeps catching up with its producer takes the lines the
    /// producer writes next away from it at every record (`RINGMAP_BENCH_VERBOSE=1`).
    empty_polls: Option<u64>,
}

/// The CPU time of the calling thread so far (Linux: `/proc/thread-self/schedstat`, in ns).
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The CPU time the calling thread spent since `since` (a `thread_cpu()` reading).
fn cpu_since(since: Option<Duration>) -> Option<Duration> {
    Some(thread_cpu()?.saturating_sub(since?))
}

/// What a thread does when the ring is full (producer) or empty (consumer), the same for
/// every implementation: spin 1, 2, 4, .. 64 CPU spin hints, then yield (crossbeam's
/// `Backoff::snooze`). Yielding lets the other side run when the machine has fewer free cores
/// than spinning threads (a shared 2-core machine).
#[derive(Default)]
struct Backoff {
    step: u32,
    /// Every failed attempt, for the report.
    total: u64,
}

impl Backoff {
    const SPIN_STEPS: u32 = 6;

    #[inline]
    fn wait(&mut self) {
        self.total += 1;
        if self.step <= Self::SPIN_STEPS {
            for _ in 0..1u32 << self.step {
                spin_loop();
            }
            self.step += 1;
        } else {
            thread::yield_now();
        }
    }

    #[inline]
    fn reset(&mut self) {
        self.step = 0;
    }
}

/// Where in its page the producers' source payload starts. Half a page away from where
/// glibc puts the start of a large `Vec` (16 bytes into a page): on some processors (AMD
/// Zen 3 here) glibc's `memcpy` of 4 KiB, a `rep movsb`, runs about 20 times slower when the
/// destination starts 8 to 24 bytes past the source modulo 4096 (a destination that aliases
/// the source's page offset). With the source wherever the heap put it, the memcpy peer and
/// rtrb landed there in some runs and not in others (4 KiB memcpy at 0.6 M/s against 10 M/s).
const SOURCE_IN_PAGE: usize = PAGE / 2;
const PAGE: usize = 4096;

/// A buffer whose first byte lies `in_page` bytes after a page boundary, whatever the heap
/// gives: a `Vec` with a page to spare, and the offset of the buffer in it.
struct Placed {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Placed {
    fn new(len: usize, in_page: usize, fill: impl Fn(usize) -> u8) -> Placed {
        let mut bytes = vec![0u8; len + PAGE];
        let start = (PAGE + in_page - bytes.as_ptr() as usize % PAGE) % PAGE;
        for (i, byte) in bytes[start..start + len].iter_mut().enumerate() {
            *byte = fill(i);
        }
        Placed { bytes, start, len }
    }
}

impl std::ops::Deref for Placed {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Placed {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// Whether a copy from `src` to `dst` is one of the slow ones (`SOURCE_IN_PAGE`): the
/// destination less than 64 bytes past the source modulo 4096.
fn aliases(dst: *const u8, src: *const u8) -> bool {
    let past = (dst as usize).wrapping_sub(src as usize) % PAGE;
    (1..64).contains(&past)
}

/// The producer's source payload: `size` bytes, the sequence number in the first 8, at
/// `SOURCE_IN_PAGE` in its page.
fn source(size: usize) -> Placed {
    Placed::new(size, SOURCE_IN_PAGE, |i| i as u8)
}

fn first_u64(payload: &[u8]) -> u64 {
    u64::from_le_bytes(
        payload[..8]
            .try_into()
            .expect("payloads are at least 8 bytes"),
    )
}

/// The 8-byte record producer `producer` writes as its `seq`-th: the producer in the top
/// byte, its sequence number below.
fn tagged(producer: usize, seq: u64) -> u64 {
    (producer as u64) << 56 | seq
}

/// The consumer's check of multi-producer records: every producer's sequence in order.
struct Order {
    next: Vec<u64>,
    mismatches: u64,
}

impl Order {
    fn new(producers: usize) -> Order {
        Order {
            next: vec![0; producers],
            mismatches: 0,
        }
    }

    #[inline]
    fn see(&mut self, value: u64) {
        let producer = (value >> 56) as usize;
        match self.next.get_mut(producer) {
            Some(next) => {
                self.mismatches += u64::from(value & ((1 << 56) - 1) != *next);
                *next += 1;
            }
            None => self.mismatches += 1,
        }
    }
}

/// Runs `producers` producer threads (each given its index, returning its full-retry count)
/// and the consumer (this thread, returning its mismatch count and how often it found
/// nothing), timing them together.
fn timed(
    producers: usize,
    produce: impl Fn(usize) -> u64 + Sync,
    consume: impl FnOnce() -> (u64, u64),
) -> Run {
    let start = Instant::now();
    let (full_retries, (mismatches, empty_polls), cpu) = thread::scope(|scope| {
        let produce = &produce;
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                scope.spawn(move || {
                    let cpu = thread_cpu();
                    let full = produce(p);
                    (full, cpu_since(cpu))
                })
            })
            .collect();
        let cpu = thread_cpu();
        let mismatches = consume();
        let mut cpu = cpu_since(cpu);
        let mut full = 0;
        for handle in handles {
            let (retries, producer_cpu) = handle.join().expect("a producer panicked");
            full += retries;
            cpu = cpu.zip(producer_cpu).map(|(a, b)| a + b);
        }
        (full, mismatches, cpu)
    });
    let elapsed = start.elapsed();
    assert_eq!(mismatches, 0, "records delivered out of order or lost");
    Run {
        elapsed,
        full_retries,
        cpu,
        empty_polls: Some(empty_polls),
    }
}

/// The hooks of a user-mode host with more producer threads than cores (4 producers on the
/// 2-core machines): a producer waiting for an earlier one to publish (only when its offer
/// slot is taken and no offer ends at its start, `core/src/publish.rs`) spins a little, then
/// yields, so that a preempted producer may get a core back.
struct YieldingHooks;

impl Hooks for YieldingHooks {
    fn relax(&self, spins: u32) {
        if spins < 64 {
            spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

/// How a ringmap producer writes its records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `Ring::write`: claim, copy, publish the committed record.
    Copy,
    /// `Ring::reserve`, write into the reservation's payload, `submit`: the zero-copy path,
    /// whose record is published LOCKED before its payload is written.
    Reserve,
    /// `Ring::write_batch` of [`BATCH`] records.
    Batch,
}

/// ringmap: `producers` threads write `records` records in all (each its share), as `how`
/// says.
fn run_ringmap(size: usize, producers: usize, records: u64, how: Write) -> Run {
    let (ring, mut consumer) = HeapRing::new(Capacity::DEFAULT, YieldingHooks);
    let ring = &ring;
    let share = records / producers as u64;
    let total = share * producers as u64;
    let run = timed(
        producers,
        |p| {
            let mut full = Backoff::default();
            if how == Write::Batch {
                let mut values: Vec<Placed> = (0..BATCH).map(|_| source(size)).collect();
                let mut seq = 0;
                while seq < share {
                    let n = (share - seq).min(BATCH as u64) as usize;
                    for (i, value) in values[..n].iter_mut().enumerate() {
                        value[..8].copy_from_slice(&tagged(p, seq + i as u64).to_le_bytes());
                    }
                    let payloads: [&[u8]; BATCH] = std::array::from_fn(|i| &values[i][..]);
                    loop {
                        match ring.write_batch(&payloads[..n]) {
                            Ok(_) => break,
                            Err(ReserveError::Full) => full.wait(),
                            Err(error) => panic!("write_batch: {error}"),
                        }
                    }
                    full.reset();
                    seq += n as u64;
                }
                return full.total;
            }
            let mut src = source(size);
            for seq in 0..share {
                src[..8].copy_from_slice(&tagged(p, seq).to_le_bytes());
                loop {
                    if how == Write::Copy {
                        match ring.write(&src) {
                            Ok(_) => break,
                            Err(ReserveError::Full) => full.wait(),
                            Err(error) => panic!("write({size}): {error}"),
                        }
                        continue;
                    }
                    match ring.reserve(size) {
                        Ok(mut reservation) => {
                            reservation.payload().copy_from_slice(&src);
                            reservation.submit();
                            break;
                        }
                        Err(ReserveError::Full) => full.wait(),
                        Err(error) => panic!("reserve({size}): {error}"),
                    }
                }
                full.reset();
            }
            full.total
        },
        || {
            let mut order = Order::new(producers);
            let mut seen = 0u64;
            let mut empty = Backoff::default();
            while seen < total {
                let got = consumer.consume(|payload| order.see(first_u64(&payload)));
                if got == 0 {
                    empty.wait();
                    continue;
                }
                empty.reset();
                seen += got as u64;
            }
            (order.mismatches, empty.total)
        },
    );
    if how != Write::Batch {
        assert_eq!(
            ring.dropped(),
            run.full_retries,
            "dropped counts the failed reserves"
        );
    }
    run
}

/// rtrb with `u64` elements: push / pop, for the 8-byte case.
fn run_rtrb_u64(records: u64) -> Run {
    let (producer, mut consumer) = rtrb::RingBuffer::<u64>::new(RING_BYTES / 8);
    let producer = std::sync::Mutex::new(Some(producer));
    timed(
        1,
        |_| {
            let mut producer = producer.lock().unwrap().take().expect("one producer");
            let mut full = Backoff::default();
            for seq in 0..records {
                while producer.push(seq).is_err() {
                    full.wait();
                }
                full.reset();
            }
            full.total
        },
        || {
            let mut expected = 0u64;
            let mut mismatches = 0u64;
            let mut empty = Backoff::default();
            while expected < records {
                match consumer.pop() {
                    Ok(value) => {
                        mismatches += u64::from(value != expected);
                        expected += 1;
                        empty.reset();
                    }
                    Err(_) => empty.wait(),
                }
            }
            (mismatches, empty.total)
        },
    )
}

/// Copies `src` into the (possibly split) uninitialised slots of a write chunk.
fn copy_into(dst: (&mut [MaybeUninit<u8>], &mut [MaybeUninit<u8>]), src: &[u8]) {
    let (first, second) = dst;
    assert_eq!(first.len() + second.len(), src.len());
    let (a, b) = src.split_at(first.len());
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; each destination is exactly as long
    // as its part of `src` (asserted above), and a chunk does not overlap the source.
    unsafe {
        core::ptr::copy_nonoverlapping(a.as_ptr(), first.as_mut_ptr().cast::<u8>(), a.len());
        core::ptr::copy_nonoverlapping(b.as_ptr(), second.as_mut_ptr().cast::<u8>(), b.len());
    }
}

/// rtrb with `u8` elements, one chunk of `size` per record, for the 4 KiB case.
fn run_rtrb_chunks(size: usize, records: u64) -> Run {
    let (producer, mut consumer) = rtrb::RingBuffer::<u8>::new(RING_BYTES);
    let producer = std::sync::Mutex::new(Some(producer));
    timed(
        1,
        |_| {
            let mut producer = producer.lock().unwrap().take().expect("one producer");
            let mut src = source(size);
            let mut full = Backoff::default();
            for seq in 0..records {
                src[..8].copy_from_slice(&seq.to_le_bytes());
                let mut chunk = loop {
                    match producer.write_chunk_uninit(size) {
                        Ok(chunk) => break chunk,
                        Err(_) => full.wait(),
                    }
                };
                full.reset();
                let slices = chunk.as_mut_slices();
                // rtrb's buffer starts where the heap put it and its chunks 4 KiB apart:
                // every copy is as far from its source as the first (`SOURCE_IN_PAGE`).
                if seq == 0 {
                    assert!(
                        !aliases(slices.0.as_ptr().cast(), src.as_ptr()),
                        "rtrb's chunks alias the source (SOURCE_IN_PAGE)"
                    );
                }
                copy_into(slices, &src);
                // SAFETY: `copy_into` initialised every slot of the chunk.
                unsafe { chunk.commit_all() };
            }
            full.total
        },
        || {
            let mut expected = 0u64;
            let mut mismatches = 0u64;
            let mut empty = Backoff::default();
            while expected < records {
                match consumer.read_chunk(size) {
                    Ok(chunk) => {
                        let (first, second) = chunk.as_slices();
                        let value = if first.len() >= 8 {
                            first_u64(first)
                        } else {
                            let mut bytes = [0u8; 8];
                            bytes[..first.len()].copy_from_slice(first);
                            bytes[first.len()..].copy_from_slice(&second[..8 - first.len()]);
                            u64::from_le_bytes(bytes)
                        };
                        mismatches += u64::from(value != expected);
                        expected += 1;
                        chunk.commit_all();
                        empty.reset();
                    }
                    Err(_) => empty.wait(),
                }
            }
            (mismatches, empty.total)
        },
    )
}

/// crossbeam's `ArrayQueue` of `u64`, `producers` threads pushing, this one popping.
fn run_crossbeam(producers: usize, records: u64) -> Run {
    let queue = ArrayQueue::<u64>::new(RING_RECORDS);
    let queue = &queue;
    let share = records / producers as u64;
    let total = share * producers as u64;
    timed(
        producers,
        |p| {
            let mut full = Backoff::default();
            for seq in 0..share {
                let mut value = tagged(p, seq);
                while let Err(back) = queue.push(value) {
                    value = back;
                    full.wait();
                }
                full.reset();
            }
            full.total
        },
        || {
            let mut order = Order::new(producers);
            let mut empty = Backoff::default();
            let mut seen = 0;
            while seen < total {
                match queue.pop() {
                    Some(value) => {
                        order.see(value);
                        seen += 1;
                        empty.reset();
                    }
                    None => empty.wait(),
                }
            }
            (order.mismatches, empty.total)
        },
    )
}

/// One thread copying each payload into a ring-sized destination, cycling.
fn run_memcpy(size: usize, records: u64) -> Run {
    let mut src = source(size);
    // Written once first, so that page faults stay out of the timing; page-aligned, as the
    // ring's data is.
    let mut dst = Placed::new(RING_BYTES, 0, |_| 1);
    let slots = RING_BYTES / size;
    // Every copy's destination is this far past the source modulo 4096 (`size` divides it).
    assert!(
        !aliases(dst.as_ptr(), src.as_ptr()),
        "memcpy's destination aliases its source (SOURCE_IN_PAGE)"
    );
    let cpu = thread_cpu();
    let start = Instant::now();
    for seq in 0..records {
        src[..8].copy_from_slice(&seq.to_le_bytes());
        let at = (seq as usize % slots) * size;
        dst[at..at + size].copy_from_slice(&src);
        black_box(&mut dst);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_since(cpu);
    black_box(&dst);
    Run {
        elapsed,
        full_retries: 0,
        cpu,
        empty_polls: None,
    }
}

#[cfg(target_os = "linux")]
#[path = "ring/linux.rs"]
mod linux;

fn run(kind: Kind, size: usize, producers: usize, records: u64) -> Option<Run> {
    Some(match (kind, size) {
        (Kind::Ringmap, _) => run_ringmap(size, producers, records, Write::Copy),
        (Kind::RingmapReserve, _) => run_ringmap(size, producers, records, Write::Reserve),
        (Kind::RingmapBatch, _) => run_ringmap(size, producers, records, Write::Batch),
        (Kind::Rtrb, 8) => run_rtrb_u64(records),
        (Kind::Rtrb, _) => run_rtrb_chunks(size, records),
        (Kind::Crossbeam, _) => run_crossbeam(producers, records),
        (Kind::Memcpy, _) => run_memcpy(size, records),
        #[cfg(target_os = "linux")]
        (Kind::Bpf, _) => return linux::run_bpf(producers, records),
        #[cfg(target_os = "linux")]
        (Kind::Wake, _) => return linux::run_eventfd_wake(records),
        #[cfg(not(target_os = "linux"))]
        (Kind::Bpf | Kind::Wake, _) => return None,
    })
}

/// Why a kind cannot run here, if it cannot.
fn unavailable(kind: Kind) -> Option<&'static str> {
    match kind {
        #[cfg(target_os = "linux")]
        Kind::Bpf => linux::bpf_unavailable(),
        #[cfg(not(target_os = "linux"))]
        Kind::Bpf => Some("skipped: Linux only"),
        #[cfg(not(target_os = "linux"))]
        Kind::Wake => Some("skipped: Linux only"),
        _ => None,
    }
}

/// One case: an implementation, a payload size, producers, and its runs.
struct Case {
    kind: Kind,
    size: usize,
    producers: usize,
    records: u64,
    runs: Vec<Run>,
    /// Why it did not run, if it did not.
    skipped: Option<String>,
}

impl Case {
    fn name(&self) -> String {
        match self.kind {
            Kind::Wake => "eventfd-wake".to_owned(),
            kind => format!(
                "{}-{}-{}p",
                kind.name(),
                size_name(self.size).replace(' ', ""),
                self.producers
            ),
        }
    }

    fn records_per_sec(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|run| self.records as f64 / run.elapsed.as_secs_f64())
            .collect()
    }
}

/// Median, minimum and maximum.
fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    (median, sorted[0], sorted[n - 1])
}

/// `value` with an SI prefix: `123.4 M`.
fn si(value: f64) -> String {
    let (scaled, prefix) = if value >= 1e9 {
        (value / 1e9, " G")
    } else if value >= 1e6 {
        (value / 1e6, " M")
    } else if value >= 1e3 {
        (value / 1e3, " k")
    } else {
        (value, " ")
    };
    format!("{scaled:.1}{prefix}")
}

fn size_name(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// A group of cases measured against each other: ringmap's cases, its peers, and the goal
/// of ringmap's first case against each peer.
struct Group {
    title: &'static str,
    size: usize,
    producers: usize,
    ours: &'static [Kind],
    peers: &'static [(Kind, f64)],
}

const GROUPS: &[Group] = &[
    Group {
        title: "8 B, 1 producer -> 1 consumer",
        size: 8,
        producers: 1,
        ours: &[Kind::Ringmap, Kind::RingmapReserve],
        peers: &[(Kind::Rtrb, 1.0), (Kind::Crossbeam, 1.0), (Kind::Bpf, 5.0)],
    },
    Group {
        title: "4 KiB, 1 producer -> 1 consumer (bytes/s = records/s x 4096)",
        size: 4096,
        producers: 1,
        ours: &[Kind::Ringmap, Kind::RingmapReserve, Kind::RingmapBatch],
        peers: &[(Kind::Memcpy, 0.7), (Kind::Rtrb, 1.0)],
    },
    Group {
        title: "8 B, 2 producers -> 1 consumer",
        size: 8,
        producers: 2,
        ours: &[Kind::Ringmap, Kind::RingmapBatch],
        peers: &[(Kind::Crossbeam, 1.0), (Kind::Bpf, 5.0)],
    },
    Group {
        title: "8 B, 4 producers -> 1 consumer",
        size: 8,
        producers: 4,
        ours: &[Kind::Ringmap, Kind::RingmapBatch],
        peers: &[(Kind::Crossbeam, 1.0), (Kind::Bpf, 5.0)],
    },
    Group {
        title: "wake, cross-process: write -> the blocked reader returns (peer only)",
        size: 8,
        producers: 1,
        ours: &[],
        peers: &[(Kind::Wake, 0.0)],
    },
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--test") && !args.iter().any(|a| a == "--bench");
    let filters: Vec<&str> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let reps: usize = if smoke {
        1
    } else {
        std::env::var("RINGMAP_BENCH_REPS")
            .ok()
            .and_then(|reps| reps.parse().ok())
            .filter(|&reps| reps > 0)
            .unwrap_or(7)
    };
    // Each case first runs `probe` records to warm up; its rate then fixes the case's record
    // count, the same for every rep, at about `TARGET` of run time.
    const TARGET: Duration = Duration::from_millis(300);
    let probe = |kind: Kind, size: usize| -> u64 {
        match (smoke, kind, size) {
            (true, Kind::Wake, _) => 100,
            (true, _, 8) => 20_000,
            (true, _, _) => 500,
            (false, Kind::Wake, _) => 2_000,
            (false, _, 8) => 2_000_000,
            (false, _, _) => 50_000,
        }
    };

    let started = Instant::now();
    let parallelism = thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    println!(
        "ringmap bench: {reps} reps of ~{} ms per case after a warm-up, cases interleaved; \
         1 MiB rings; {parallelism} CPUs, load average {load} at start",
        TARGET.as_millis()
    );

    let mut cases: Vec<Case> = Vec::new();
    for group in GROUPS {
        let kinds = group
            .ours
            .iter()
            .copied()
            .chain(group.peers.iter().map(|p| p.0));
        for kind in kinds {
            let mut case = Case {
                kind,
                size: group.size,
                producers: group.producers,
                records: 0,
                runs: Vec::new(),
                skipped: None,
            };
            if !filters.is_empty() && !filters.iter().any(|f| case.name().contains(f)) {
                continue;
            }
            if let Some(why) = unavailable(kind) {
                case.skipped = Some(why.to_owned());
                cases.push(case);
                continue;
            }
            let records = probe(kind, group.size);
            match run(kind, group.size, group.producers, records) {
                None => case.skipped = Some("skipped: could not run".to_owned()),
                Some(warm_up) => {
                    case.records = if smoke {
                        records
                    } else {
                        let rate = records as f64 / warm_up.elapsed.as_secs_f64();
                        ((rate * TARGET.as_secs_f64()) as u64).max(records / 10)
                    };
                }
            }
            cases.push(case);
        }
    }
    // `RINGMAP_BENCH_VERBOSE=1` prints every rep: which ones ran on two cores at once, and
    // how often each consumer caught up with its producers.
    let verbose = std::env::var_os("RINGMAP_BENCH_VERBOSE").is_some();
    for rep in 0..reps {
        for case in cases.iter_mut().filter(|case| case.skipped.is_none()) {
            let Some(result) = run(case.kind, case.size, case.producers, case.records) else {
                case.skipped = Some("skipped: failed during the reps".to_owned());
                continue;
            };
            if verbose {
                println!(
                    "rep {rep} {}: {}/s, cores {}, waits on full {}{}",
                    case.name(),
                    si(case.records as f64 / result.elapsed.as_secs_f64()),
                    result.cpu.map_or_else(
                        || "?".to_owned(),
                        |cpu| format!("{:.2}", cpu.as_secs_f64() / result.elapsed.as_secs_f64())
                    ),
                    result.full_retries,
                    result.empty_polls.map_or_else(String::new, |empty| format!(
                        ", consumer found nothing {:.3} times per record",
                        empty as f64 / case.records as f64
                    )),
                );
            }
            case.runs.push(result);
        }
    }

    println!();
    println!(
        "{:<20} {:<28} {:<14} {:>6}  {:<34} {:>7}  met?",
        "case",
        "records/s: median [min .. max]",
        "±spread",
        "cores",
        "ringmap / it: median [min .. max]",
        "goal",
    );
    let find = |kind: Kind, group: &Group| {
        cases.iter().find(|case| {
            case.kind == kind && case.size == group.size && case.producers == group.producers
        })
    };
    for group in GROUPS {
        let ours: Vec<&Case> = group
            .ours
            .iter()
            .filter_map(|&kind| find(kind, group))
            .collect();
        let peers: Vec<(&Case, f64)> = group
            .peers
            .iter()
            .filter_map(|&(kind, goal)| Some((find(kind, group)?, goal)))
            .collect();
        if ours.is_empty() && peers.is_empty() {
            continue;
        }
        println!("-- {}", group.title);
        for case in &ours {
            print_case(case, &[]);
        }
        for (peer, goal) in &peers {
            let ratios: Vec<(String, Vec<f64>, f64)> = ours
                .iter()
                .filter(|ours| ours.skipped.is_none())
                .map(|ours| {
                    let ratios = ours
                        .records_per_sec()
                        .iter()
                        .zip(peer.records_per_sec())
                        .map(|(a, b)| a / b)
                        .collect();
                    (ours.kind.name().to_owned(), ratios, *goal)
                })
                .collect();
            print_case(peer, &ratios);
        }
    }
    println!();
    println!(
        "ratios are ringmap's records/s over the peer's, rep by rep; \"met?\" judges the median \
         ratio. payload bytes only (ringmap adds an 8-byte header per record); total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// One row of the table: the case's rate, and for a peer, ringmap's ratio to it (one line
/// per ringmap case of the group).
fn print_case(case: &Case, ratios: &[(String, Vec<f64>, f64)]) {
    let name = case.name();
    if let Some(why) = &case.skipped {
        println!("{name:<20} {why}");
        return;
    }
    let rates = case.records_per_sec();
    let (median, low, high) = summary(&rates);
    let (rate, range) = if case.kind == Kind::Wake {
        // A wake is one record's time: print it as latency.
        let us = |rate: f64| 1e6 / rate;
        (
            format!("{:.1} µs per wake", us(median)),
            format!("[{:.1} .. {:.1}]", us(high), us(low)),
        )
    } else {
        (
            format!("{}/s", si(median)),
            format!("[{} .. {}]", si(low), si(high)),
        )
    };
    let cores: Vec<f64> = case
        .runs
        .iter()
        .filter_map(|run| Some(run.cpu?.as_secs_f64() / run.elapsed.as_secs_f64()))
        .collect();
    let cores = if cores.len() == case.runs.len() && !cores.is_empty() {
        format!("{:.2}", summary(&cores).0)
    } else {
        "?".to_owned()
    };
    let head = format!(
        "{name:<20} {:<28} {:<14} {cores:>6}",
        format!("{rate} {range}"),
        format!("±{:.0}%", 50.0 * (high - low) / median),
    );
    if ratios.is_empty() {
        println!("{head}");
        return;
    }
    for (i, (ours, ratios, goal)) in ratios.iter().enumerate() {
        let (median, low, high) = summary(ratios);
        let verdict = if median >= *goal { "met" } else { "NOT met" };
        let prefix = if i == 0 {
            head.clone()
        } else {
            " ".repeat(head.chars().count())
        };
        println!(
            "{prefix}  {:<34} {:>7}  {verdict}",
            format!("{ours}: {median:.2} [{low:.2} .. {high:.2}]"),
            format!(">= {goal:.1}"),
        );
    }
}
