//! Throughput of the ring: one producer thread, one consumer thread, side by side in one run
//! with its peers (ratios, not absolute times).
//!
//! `cargo bench -p ringmap-core` runs, for 8-byte and 4 KiB payloads:
//!
//! - `ringmap`: a 1 MiB ring (`Capacity::DEFAULT`). The producer reserves, writes the payload
//!   (a sequence number in its first 8 bytes) and submits, waiting on `ReserveError::Full`
//!   and counting those retries; the consumer takes batches (`Consumer::batch`) and checks
//!   each record's sequence number, so every record is touched and none may be lost.
//! - `rtrb`: rtrb 0.3, the single-producer single-consumer ring whose cached-offset idiom
//!   ringmap's consumer copies, with 1 MiB of slots. 8 bytes: `push` / `pop` of a `u64` (the
//!   sequence number). 4 KiB: a `u8` ring, one `write_chunk_uninit(4096)` and one
//!   `read_chunk(4096)` per record, with the same copy and the same check as ringmap.
//! - `memcpy`: one thread copying each payload (`copy_from_slice`) into a 1 MiB destination,
//!   cycling: the bound for the producer's copy, with no second thread and no handshake.
//!
//! Both sides wait the same way in ringmap and rtrb (`Backoff`): spins that double from 1 to
//! 64 spin hints, then `yield_now`. How eagerly a waiting consumer re-polls moves both rings'
//! numbers a lot (on a 2-core KVM guest, a consumer pausing ~300 spin hints after each empty
//! poll ran rtrb about 2x and ringmap about 3x faster than one that re-polls at once), so
//! compare ratios from one run, not numbers across policies.
//!
//! Each case first runs a short warm-up, whose rate fixes the case's record count (about
//! 300 ms of work, the same count in every rep); then the cases run `RINGMAP_BENCH_REPS`
//! times (default 7), interleaved, so that a noisy moment hits all of them. The table gives
//! the median, the range and the spread (half the range over the median). Ratios are taken
//! rep by rep (ringmap's rep i against the peer's rep i, run moments apart) and summarised
//! the same way. Bytes per second count payload bytes only.
//!
//! Goals (reported, not asserted): ringmap at least rtrb's records per second for 8 bytes,
//! and at least 70% of memcpy's bytes per second for 4 KiB.
//!
//! `cargo bench -p ringmap-core -- ringmap-8 memcpy` runs only the cases whose names contain
//! one of the words (for a profiler); `RINGMAP_BENCH_VERBOSE=1` prints every rep. The
//! "cores busy" column is the CPU time of a run's threads over its wall time (Linux): near 2,
//! producer and consumer ran at once; near 1, they took turns on one core (a busy machine),
//! and the run measured the scheduler as much as the ring. Under `cargo test --benches`
//! (`--test`, no `--bench`) every case runs once with few records, as a smoke test.

use std::hint::{black_box, spin_loop};
use std::mem::MaybeUninit;
use std::thread;
use std::time::{Duration, Instant};

use ringmap_core::{Capacity, HeapRing, ReserveError};

/// The ring's data capacity, and the peers' buffer size.
const RING_BYTES: usize = Capacity::DEFAULT.bytes();

/// Which implementation a case runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ringmap,
    Rtrb,
    Memcpy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ringmap => "ringmap",
            Kind::Rtrb => "rtrb",
            Kind::Memcpy => "memcpy",
        }
    }
}

/// One timed run: how long, and how often the producer found the ring full.
struct Run {
    elapsed: Duration,
    full_retries: u64,
    /// CPU time of the run's threads together, where the OS tells (Linux): over `elapsed`,
    /// how many cores the run had. Below 2 for two threads, they took turns on one core.
    cpu: Option<Duration>,
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

fn sum(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    Some(a? + b?)
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

/// The producer's source payload: `size` bytes, the sequence number in the first 8.
fn source(size: usize) -> Vec<u8> {
    (0..size).map(|i| i as u8).collect()
}

fn first_u64(payload: &[u8]) -> u64 {
    u64::from_le_bytes(
        payload[..8]
            .try_into()
            .expect("payloads are at least 8 bytes"),
    )
}

/// ringmap, one producer thread and one consumer thread (this one).
fn run_ringmap(size: usize, records: u64) -> Run {
    let (ring, mut consumer) = HeapRing::new(Capacity::DEFAULT, ());
    let ring = &ring;
    let start = Instant::now();
    let (full_retries, mismatches, cpu) = thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let cpu = thread_cpu();
            let mut src = source(size);
            let mut full = Backoff::default();
            for seq in 0..records {
                src[..8].copy_from_slice(&seq.to_le_bytes());
                loop {
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
            (full.total, cpu_since(cpu))
        });
        let cpu = thread_cpu();
        let mut expected = 0u64;
        let mut mismatches = 0u64;
        let mut empty = Backoff::default();
        while expected < records {
            let batch = consumer.batch();
            if batch.is_empty() {
                empty.wait();
                continue;
            }
            empty.reset();
            for payload in batch.iter() {
                mismatches += u64::from(first_u64(&payload) != expected);
                expected += 1;
            }
        }
        let consumer_cpu = cpu_since(cpu);
        let (full, producer_cpu) = producer.join().expect("the producer panicked");
        (full, mismatches, sum(producer_cpu, consumer_cpu))
    });
    let elapsed = start.elapsed();
    assert_eq!(mismatches, 0, "ringmap delivered records out of order");
    assert_eq!(
        ring.dropped(),
        full_retries,
        "dropped counts the failed reserves"
    );
    Run {
        elapsed,
        full_retries,
        cpu,
    }
}

/// rtrb with `u64` elements: push / pop, for the 8-byte case.
fn run_rtrb_u64(records: u64) -> Run {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<u64>::new(RING_BYTES / 8);
    let start = Instant::now();
    let (full_retries, mismatches, cpu) = thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let cpu = thread_cpu();
            let mut full = Backoff::default();
            for seq in 0..records {
                while producer.push(seq).is_err() {
                    full.wait();
                }
                full.reset();
            }
            (full.total, cpu_since(cpu))
        });
        let cpu = thread_cpu();
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
        let consumer_cpu = cpu_since(cpu);
        let (full, producer_cpu) = producer.join().expect("the producer panicked");
        (full, mismatches, sum(producer_cpu, consumer_cpu))
    });
    let elapsed = start.elapsed();
    assert_eq!(mismatches, 0, "rtrb delivered records out of order");
    Run {
        elapsed,
        full_retries,
        cpu,
    }
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
    let (mut producer, mut consumer) = rtrb::RingBuffer::<u8>::new(RING_BYTES);
    let start = Instant::now();
    let (full_retries, mismatches, cpu) = thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let cpu = thread_cpu();
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
                copy_into(chunk.as_mut_slices(), &src);
                // SAFETY: `copy_into` initialised every slot of the chunk.
                unsafe { chunk.commit_all() };
            }
            (full.total, cpu_since(cpu))
        });
        let cpu = thread_cpu();
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
        let consumer_cpu = cpu_since(cpu);
        let (full, producer_cpu) = producer.join().expect("the producer panicked");
        (full, mismatches, sum(producer_cpu, consumer_cpu))
    });
    let elapsed = start.elapsed();
    assert_eq!(mismatches, 0, "rtrb delivered records out of order");
    Run {
        elapsed,
        full_retries,
        cpu,
    }
}

/// One thread copying each payload into a ring-sized destination, cycling.
fn run_memcpy(size: usize, records: u64) -> Run {
    let mut src = source(size);
    // Written once first, so that page faults stay out of the timing.
    let mut dst = vec![1u8; RING_BYTES];
    let slots = RING_BYTES / size;
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
    }
}

fn run(kind: Kind, size: usize, records: u64) -> Run {
    match (kind, size) {
        (Kind::Ringmap, _) => run_ringmap(size, records),
        (Kind::Rtrb, 8) => run_rtrb_u64(records),
        (Kind::Rtrb, _) => run_rtrb_chunks(size, records),
        (Kind::Memcpy, _) => run_memcpy(size, records),
    }
}

/// One case: an implementation, a payload size, and its runs.
struct Case {
    kind: Kind,
    size: usize,
    records: u64,
    runs: Vec<Run>,
}

impl Case {
    fn records_per_sec(&self) -> Vec<f64> {
        self.runs
            .iter()
            .map(|run| self.records as f64 / run.elapsed.as_secs_f64())
            .collect()
    }

    fn bytes_per_sec(&self) -> Vec<f64> {
        self.records_per_sec()
            .into_iter()
            .map(|rate| rate * self.size as f64)
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
        (value, "")
    };
    format!("{scaled:.1}{prefix}")
}

/// `median [min .. max] unit`, and the spread: half the range over the median.
fn spread(values: &[f64], unit: &str) -> String {
    let (median, low, high) = summary(values);
    format!(
        "{}{unit} [{} .. {}] ±{:.0}%",
        si(median),
        si(low),
        si(high),
        50.0 * (high - low) / median
    )
}

fn size_name(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Prints the ratio of `ours` to `peer`, rep by rep, against a goal.
/// Also prints the ratio of the best reps: noise on a shared machine only ever slows a run
/// down, so the best rep is the closest to what the code can do.
fn print_ratio(what: &str, ours: &[f64], peer: &[f64], goal: f64) {
    let ratios: Vec<f64> = ours.iter().zip(peer).map(|(a, b)| a / b).collect();
    let (median, low, high) = summary(&ratios);
    let best = summary(ours).2 / summary(peer).2;
    let verdict = |ratio: f64| if ratio >= goal { "met" } else { "NOT met" };
    println!(
        "{what:<44} {median:>5.2} [{low:.2} .. {high:.2}] {:<7}   {best:>5.2} {:<7}   >= {goal:.2}",
        verdict(median),
        verdict(best),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--test") && !args.iter().any(|a| a == "--bench");
    // `cargo bench -p ringmap-core -- ringmap-8 memcpy` runs only the cases whose name
    // (`ringmap-8`, `rtrb-4096`, ...) contains one of the words; ratios need both sides.
    let filters: Vec<&str> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let selected = |kind: Kind, size: usize| {
        let name = format!("{}-{size}", kind.name());
        filters.is_empty() || filters.iter().any(|f| name.contains(f))
    };
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
    let probe = |size: usize| -> u64 {
        match (smoke, size) {
            (true, 8) => 20_000,
            (true, _) => 500,
            (false, 8) => 2_000_000,
            (false, _) => 50_000,
        }
    };

    let started = Instant::now();
    let parallelism = thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    println!(
        "ringmap throughput: 1 producer thread, 1 consumer thread, 1 MiB ring (Capacity::DEFAULT)"
    );
    println!(
        "{reps} reps of ~{} ms per case after a warm-up, cases interleaved; {parallelism} CPUs, \
         load average {load} at start",
        TARGET.as_millis()
    );

    let mut cases: Vec<Case> = Vec::new();
    for size in [8, 4096] {
        for kind in [Kind::Ringmap, Kind::Rtrb, Kind::Memcpy] {
            if !selected(kind, size) {
                continue;
            }
            let records = probe(size);
            let warm_up = run(kind, size, records);
            let records = if smoke {
                records
            } else {
                let rate = records as f64 / warm_up.elapsed.as_secs_f64();
                ((rate * TARGET.as_secs_f64()) as u64).max(records / 10)
            };
            cases.push(Case {
                kind,
                size,
                records,
                runs: Vec::new(),
            });
        }
    }
    // `RINGMAP_BENCH_VERBOSE=1` prints every rep: which ones ran on two cores at once.
    let verbose = std::env::var_os("RINGMAP_BENCH_VERBOSE").is_some();
    for rep in 0..reps {
        for case in &mut cases {
            let result = run(case.kind, case.size, case.records);
            if verbose {
                println!(
                    "rep {rep} {}-{}: {}/s, cores busy {}, waits on full {}",
                    case.kind.name(),
                    case.size,
                    si(case.records as f64 / result.elapsed.as_secs_f64()),
                    result.cpu.map_or_else(
                        || "?".to_owned(),
                        |cpu| format!("{:.2}", cpu.as_secs_f64() / result.elapsed.as_secs_f64())
                    ),
                    result.full_retries,
                );
            }
            case.runs.push(result);
        }
    }

    println!();
    println!(
        "payload impl      records  records/s: median [min .. max] ±spread  bytes/s    \
         cores busy [min .. max]  waits on full"
    );
    for case in &cases {
        let median = |values: &[f64]| summary(values).0;
        let full: Vec<f64> = case
            .runs
            .iter()
            .map(|run| run.full_retries as f64)
            .collect();
        let cores: Option<Vec<f64>> = case
            .runs
            .iter()
            .map(|run| Some(run.cpu?.as_secs_f64() / run.elapsed.as_secs_f64()))
            .collect();
        let cores = cores.map_or_else(
            || "?".to_owned(),
            |cores| {
                let (median, low, high) = summary(&cores);
                format!("{median:.2} [{low:.2} .. {high:.2}]")
            },
        );
        println!(
            "{:<7} {:<8} {:>8}  {:<38} {:<10} {:<24} {}",
            size_name(case.size),
            case.kind.name(),
            si(case.records as f64),
            spread(&case.records_per_sec(), "/s"),
            format!("{}B/s", si(median(&case.bytes_per_sec()))),
            cores,
            si(median(&full)),
        );
    }

    let find = |kind: Kind, size: usize| {
        cases
            .iter()
            .find(|case| case.kind == kind && case.size == size)
    };
    println!();
    println!(
        "ratio                                        rep by rep: median [min .. max]   \
         best / best     goal"
    );
    let ratios = [
        (
            "8 B:   ringmap / rtrb push-pop, records/s",
            8,
            Kind::Rtrb,
            1.0,
        ),
        ("4 KiB: ringmap / memcpy, bytes/s", 4096, Kind::Memcpy, 0.7),
        (
            "4 KiB: ringmap / rtrb chunks, bytes/s",
            4096,
            Kind::Rtrb,
            1.0,
        ),
    ];
    for (what, size, peer, goal) in ratios {
        if let (Some(ours), Some(peer)) = (find(Kind::Ringmap, size), find(peer, size)) {
            // For one payload size, records/s and bytes/s give the same ratio.
            print_ratio(what, &ours.records_per_sec(), &peer.records_per_sec(), goal);
        }
    }
    println!();
    println!(
        "payload bytes only (ringmap adds an 8-byte header per record); total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
