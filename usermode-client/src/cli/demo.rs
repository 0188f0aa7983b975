//! `ringmap demo`: a usersim device in this process, its generator threads producing, and
//! this thread consuming every record through the mapping and checking it.

use std::time::{Duration, Instant};

use ringmap_client::{Device, GenerateRequest};
use ringmap_core::abi::generated;

use super::{CliError, CliResult, format_us, monotonic_ns, parse_size, percentile_us};

/// Options of `ringmap demo`; every one has a default.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Generator producer threads.
    #[arg(long, default_value_t = 2, value_name = "N")]
    producers: u32,
    /// Payload bytes per record (at least 8; 16 or more carries the submit time for the wake
    /// latency).
    #[arg(long, default_value_t = 64, value_name = "BYTES")]
    payload: u32,
    /// Records each producer submits.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    records: u64,
    /// Records per second of each producer; 0 for flat out.
    #[arg(long, default_value_t = 0, value_name = "R")]
    rate: u64,
    /// The ring's data capacity (a power of two; K, M, G suffixes).
    #[arg(long, default_value = "1M", value_parser = parse_size, value_name = "BYTES")]
    capacity: u64,
}

/// What the consumer saw.
#[derive(Default)]
pub struct Tally {
    pub records: u64,
    pub bytes: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub wakeups: u64,
    pub latencies_ns: Vec<u64>,
    next: Vec<u64>,
}

impl Tally {
    pub fn new(producers: u32) -> Tally {
        Tally {
            next: vec![0; producers as usize],
            ..Tally::default()
        }
    }

    /// Checks one generated record against the producer's next sequence number.
    pub fn record(&mut self, payload: &[u8]) -> Option<u64> {
        self.records += 1;
        self.bytes += payload.len() as u64;
        let Some((producer, sequence, time)) = generated::parse(payload) else {
            self.malformed += 1;
            return None;
        };
        let Some(next) = self.next.get_mut(producer as usize) else {
            self.malformed += 1;
            return None;
        };
        if sequence == *next {
            *next += 1;
        } else if sequence > *next {
            self.lost += sequence - *next;
            *next = sequence + 1;
        } else {
            // Seen already, or out of order: either breaks the per-producer order.
            self.duplicates += 1;
        }
        time
    }

    /// Counts the records a producer never delivered, given how many each one submits.
    pub fn finish(&mut self, per_producer: u64) {
        for next in &self.next {
            self.lost += per_producer.saturating_sub(*next);
        }
    }
}

pub fn run(args: Args) -> CliResult {
    if args.producers == 0 || args.records == 0 {
        return Err(CliError::msg(
            "--producers and --records must be at least 1.",
        ));
    }
    if args.payload < ringmap_core::abi::MIN_GENERATED_PAYLOAD {
        return Err(CliError::msg(format!(
            "--payload must be at least {} bytes: a generated record carries its producer and sequence number.",
            ringmap_core::abi::MIN_GENERATED_PAYLOAD
        )));
    }
    #[cfg(target_os = "linux")]
    {
        let dir = super::TempDir::new("ringmap-demo")?;
        let socket = dir.path().join("ringmap.sock");
        let server = super::serve::start(&socket, args.capacity)?;
        let device = Device::open_at(server.socket_path())?;
        let code = consume(&device, &args)?;
        drop(device);
        drop(server);
        Ok(code)
    }
    #[cfg(not(target_os = "linux"))]
    {
        // On Windows the demo runs against the installed driver.
        let device = Device::open()?;
        consume(&device, &args)
    }
}

fn consume(device: &Device, args: &Args) -> CliResult {
    let mut mapping = device.map()?;
    let total = u64::from(args.producers) * args.records;
    let dropped_before = device.stats()?.dropped;
    device.generate(GenerateRequest::start(
        args.producers,
        args.payload,
        args.rate,
        args.records,
    ))?;
    let bar = super::progress_bar(total, "records");
    let started = Instant::now();
    let mut tally = Tally::new(args.producers);
    let mut woke = false;
    let mut idle_waits = 0u32;
    let mut last_produced = u64::MAX;
    while tally.records < total {
        let consumer = mapping.consumer();
        let batch = consumer.batch();
        if batch.is_empty() {
            drop(batch);
            let position = consumer.position();
            match device.wait(position, Some(Duration::from_millis(100)))? {
                Some(_) => {
                    woke = true;
                    tally.wakeups += 1;
                    idle_waits = 0;
                }
                None => {
                    // Nothing for a while: stop once the producers have been idle for a second
                    // with the ring drained (the missing records then count as lost).
                    let stats = device.stats()?;
                    if stats.produced == last_produced && stats.producer_offset == position {
                        idle_waits += 1;
                        if idle_waits >= 10 {
                            break;
                        }
                    } else {
                        idle_waits = 0;
                        last_produced = stats.produced;
                    }
                }
            }
            continue;
        }
        let mut first = woke;
        for payload in batch.iter() {
            let time = tally.record(&payload);
            if first {
                first = false;
                if let Some(submitted) = time {
                    tally
                        .latencies_ns
                        .push(monotonic_ns().saturating_sub(submitted));
                }
            }
        }
        woke = false;
        drop(batch);
        bar.set_position(tally.records);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    // Hand the space back to the device, so a later consumer starts after these records.
    let _ = device.wait(
        mapping.consumer().position(),
        Some(Duration::from_millis(1)),
    );
    // Stop (and join) the generator even when its counted run ended by itself, so that the
    // next GENERATE start on this device is accepted.
    let _ = device.generate(GenerateRequest::stop());
    let stats = device.stats()?;
    tally.finish(args.records);
    tally.latencies_ns.sort_unstable();
    let rate = tally.records as f64 / elapsed.as_secs_f64().max(1e-9);
    println!("records: {}", tally.records);
    println!("bytes: {}", tally.bytes);
    println!("seconds: {:.3}", elapsed.as_secs_f64());
    println!("records/s: {rate:.0}");
    println!("dropped: {}", stats.dropped - dropped_before);
    println!("lost: {}", tally.lost);
    println!("duplicates: {}", tally.duplicates);
    println!("malformed: {}", tally.malformed);
    println!("wakeups: {}", tally.wakeups);
    println!(
        "wake latency p50: {}",
        format_us(percentile_us(&tally.latencies_ns, 50.0))
    );
    println!(
        "wake latency p99: {}",
        format_us(percentile_us(&tally.latencies_ns, 99.0))
    );
    if tally.lost > 0 || tally.duplicates > 0 || tally.malformed > 0 {
        eprintln!(
            "ringmap: the consumer saw {} lost, {} duplicated or reordered and {} malformed records.",
            tally.lost, tally.duplicates, tally.malformed
        );
        return Ok(1);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(producer: u16, sequence: u64) -> Vec<u8> {
        let mut payload = vec![0; 16];
        generated::fill(&mut payload, producer, sequence, 0);
        payload
    }

    #[test]
    fn the_tally_finds_gaps_and_repeats() {
        let mut tally = Tally::new(2);
        for (p, s) in [(0, 0), (1, 0), (0, 1), (0, 3), (0, 3), (1, 1)] {
            tally.record(&record(p, s));
        }
        tally.finish(4);
        // Producer 0: 2 missing in the gap; producer 1: 2 and 3 never came.
        assert_eq!(tally.lost, 3);
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.records, 6);
        tally.record(&record(7, 0));
        assert_eq!(tally.malformed, 1);
    }
}
