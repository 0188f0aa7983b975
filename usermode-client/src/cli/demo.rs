//! `ringmap demo`: a usersim device in this process, its generator threads producing, and
//! this thread consuming every record through the mapping and checking it.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use ringmap_client::{Device, Error, GenerateRequest, Status};
use ringmap_core::abi::{MAX_GENERATOR_PRODUCERS, MIN_GENERATED_PAYLOAD, generated};

use super::interrupt::{self, Interrupted};
use super::{
    CliError, CliResult, EXIT_INTERRUPTED, EXIT_RECORDS_WRONG, errln, format_us, max_payload,
    monotonic_ns, parse_capacity, percentile_us,
};

/// Options of `ringmap demo`; every one has a default.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Generator producer threads (1 to 64).
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = parse_producers)]
    producers: u32,
    /// Payload bytes per record (at least 8, at most the capacity less 8; 16 or more
    /// carries the submit time for the wake latency).
    #[arg(long, default_value_t = 64, value_name = "BYTES", value_parser = parse_payload)]
    payload: u32,
    /// Records each producer submits (1 to 288230376151711743, so that 64 producers' total
    /// fits in 64 bits).
    #[arg(long, default_value_t = 200_000, value_name = "N", value_parser = parse_records)]
    records: u64,
    /// Records per second of each producer; 0 for flat out.
    #[arg(long, default_value_t = 0, value_name = "R")]
    rate: u64,
    /// The ring's data capacity: a power of two from 4K to 1G (K, M, G suffixes).
    #[arg(long, default_value = "1M", value_parser = parse_capacity, value_name = "BYTES")]
    capacity: u64,
    /// Print the summary as one JSON object (the same fields, snake_case; latencies in
    /// microseconds, null without samples) instead of `name: value` lines.
    #[arg(long)]
    json: bool,
}

/// The most records per producer: 64 producers' total still fits in a `u64`.
const MAX_RECORDS: u64 = u64::MAX / MAX_GENERATOR_PRODUCERS as u64;

/// `--producers`: 1 to [`MAX_GENERATOR_PRODUCERS`].
pub fn parse_producers(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_GENERATOR_PRODUCERS).contains(&n) => Ok(n),
        _ => Err(format!(
            "the generator runs 1 to {MAX_GENERATOR_PRODUCERS} producer threads, not `{text}`"
        )),
    }
}

/// `--payload`: at least [`MIN_GENERATED_PAYLOAD`] bytes (a size: K and M suffixes work);
/// whether it fits the ring is checked against the ring.
pub fn parse_payload(text: &str) -> Result<u32, String> {
    let bytes = super::parse_size(text)?;
    let max = u64::from(ringmap_core::record::MAX_PAYLOAD);
    if bytes < u64::from(MIN_GENERATED_PAYLOAD) || bytes > max {
        return Err(format!(
            "a generated record's payload is {MIN_GENERATED_PAYLOAD} bytes (its producer and sequence number) to {max} bytes, and `{text}` is {bytes} bytes"
        ));
    }
    Ok(bytes as u32)
}

/// `--records`: 1 to [`MAX_RECORDS`].
fn parse_records(text: &str) -> Result<u64, String> {
    match text.trim().replace('_', "").parse::<u64>() {
        Ok(n) if (1..=MAX_RECORDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "--records takes 1 to {MAX_RECORDS} records per producer (so that {MAX_GENERATOR_PRODUCERS} producers' total fits in 64 bits), not `{text}`"
        )),
    }
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

pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    // First, so that a Ctrl-C from here on leaves nothing behind.
    let interrupted = interrupt::install()?;
    let largest = max_payload(args.capacity);
    if u64::from(args.payload) > largest {
        return Err(CliError::usage(format!(
            "--payload {} does not fit the ring: a {}-byte ring holds records of at most {largest} bytes; lower --payload or raise --capacity (at most 1G).",
            args.payload, args.capacity
        )));
    }
    #[cfg(target_os = "linux")]
    {
        // Our own directory for the socket, unless --socket names where to listen; both go
        // when the server and the directory are dropped, on every way out of here.
        let dir;
        let path = match socket {
            Some(path) => {
                use std::os::unix::fs::FileTypeExt;
                // A stale socket is replaced and a live one refused when listening; anything
                // else at PATH is not ours to touch.
                if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_socket()) {
                    return Err(CliError::msg(format!(
                        "{} exists and is not a socket: `ringmap demo` listens at --socket, so name a path where nothing is.",
                        path.display()
                    )));
                }
                path.to_path_buf()
            }
            None => {
                dir = super::TempDir::new("ringmap-demo")?;
                dir.path().join("ringmap.sock")
            }
        };
        let server = super::serve::start(&path, args.capacity)?;
        let device = Device::open_at(server.socket_path())?;
        let code = consume(&device, &args, &interrupted);
        drop(device);
        drop(server);
        code
    }
    #[cfg(not(target_os = "linux"))]
    {
        // On Windows the demo runs against the installed driver.
        if socket.is_some() {
            return Err(CliError::usage(
                "--socket names a usersim device, which runs on Linux; on Windows the demo uses the installed driver.",
            ));
        }
        let device = Device::open()?;
        consume(&device, &args, &interrupted)
    }
}

fn consume(device: &Device, args: &Args, interrupted: &Interrupted) -> CliResult {
    let mut mapping = device.map()?;
    let total = u64::from(args.producers) * args.records;
    let dropped_before = device.stats()?.dropped;
    device
        .generate(GenerateRequest::start(
            args.producers,
            args.payload,
            args.rate,
            args.records,
        ))
        .map_err(|error| match error {
            Error::Status(Status::InvalidDeviceState) => CliError::msg(
                "the device's generator is running already (another demo or `ringmap generate start`); stop it with `ringmap generate stop`.",
            ),
            error => error.into(),
        })?;
    let bar = super::progress_bar(total, "records");
    let started = Instant::now();
    let mut tally = Tally::new(args.producers);
    let mut woke = false;
    let mut idle_waits = 0u32;
    let mut last_produced = u64::MAX;
    // Relaxed: a flag with no data behind it, which the signal handler sets.
    let interrupted = || interrupted.is_set();
    while tally.records < total && !interrupted() {
        let consumer = mapping.consumer();
        let batch = consumer.batch();
        if batch.is_empty() {
            drop(batch);
            let position = consumer.position();
            // Wakes on the mapping's event (SET_EVENT), set in the step that completes the
            // QUERY.
            match mapping.wait_ready(Some(Duration::from_millis(100)))? {
                true => {
                    woke = true;
                    tally.wakeups += 1;
                    idle_waits = 0;
                }
                false => {
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
    let interrupted = interrupted();
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    // Hand the space back to the device, so a later consumer starts after these records.
    let _ = device.wait(
        mapping.consumer().position(),
        Some(Duration::from_millis(1)),
    );
    // Stop (and join) the generator even when its counted run ended by itself.
    let _ = device.generate(GenerateRequest::stop());
    let stats = device.stats()?;
    if !interrupted {
        // Records not produced when interrupted are not lost: only the gaps count then.
        tally.finish(args.records);
    }
    tally.latencies_ns.sort_unstable();
    let rate = tally.records as f64 / elapsed.as_secs_f64().max(1e-9);
    let mut summary = String::new();
    let mut line = |name: &str, value: &dyn std::fmt::Display| {
        summary.push_str(&format!("{name}: {value}\n"));
    };
    if interrupted {
        line("interrupted", &"yes");
    }
    line("records", &tally.records);
    line("bytes", &tally.bytes);
    line("seconds", &format_args!("{:.3}", elapsed.as_secs_f64()));
    line("records/s", &format_args!("{rate:.0}"));
    line("dropped", &(stats.dropped - dropped_before));
    line("lost", &tally.lost);
    line("duplicates", &tally.duplicates);
    line("malformed", &tally.malformed);
    line("wakeups", &tally.wakeups);
    let p50 = format_us(percentile_us(&tally.latencies_ns, 50.0));
    line("wake latency p50", &p50);
    let p99 = format_us(percentile_us(&tally.latencies_ns, 99.0));
    line("wake latency p99", &p99);
    let code = exit_code(&tally, interrupted);
    if args.json {
        let object = serde_json::json!({
            "interrupted": interrupted,
            "records": tally.records,
            "bytes": tally.bytes,
            "seconds": elapsed.as_secs_f64(),
            "records_per_sec": rate,
            "dropped": stats.dropped - dropped_before,
            "lost": tally.lost,
            "duplicates": tally.duplicates,
            "malformed": tally.malformed,
            "wakeups": tally.wakeups,
            "wake_latency_p50_us": percentile_us(&tally.latencies_ns, 50.0),
            "wake_latency_p99_us": percentile_us(&tally.latencies_ns, 99.0),
        });
        summary = format!("{object}\n");
    }
    match std::io::stdout().write_all(summary.as_bytes()) {
        // Nobody reads the summary (`| head -1`): the status still says how the run went.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        result => result?,
    }
    if code == EXIT_RECORDS_WRONG {
        errln!(
            "ringmap: the consumer saw {} lost, {} duplicated or reordered and {} malformed records.",
            tally.lost,
            tally.duplicates,
            tally.malformed
        );
    } else if code == EXIT_INTERRUPTED {
        errln!(
            "ringmap: interrupted after {} of {total} records; the summary covers those.",
            tally.records
        );
    }
    Ok(code)
}

/// The demo's exit status: [`EXIT_RECORDS_WRONG`] if a record was lost, duplicated,
/// reordered or malformed (even when interrupted), else [`EXIT_INTERRUPTED`] if it was
/// interrupted, else 0.
fn exit_code(tally: &Tally, interrupted: bool) -> u8 {
    if tally.lost > 0 || tally.duplicates > 0 || tally.malformed > 0 {
        EXIT_RECORDS_WRONG
    } else if interrupted {
        EXIT_INTERRUPTED
    } else {
        0
    }
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

    #[test]
    fn lost_or_duplicated_records_have_their_own_exit_status() {
        let mut tally = Tally::new(1);
        tally.record(&record(0, 0));
        assert_eq!(exit_code(&tally, false), 0);
        assert_eq!(exit_code(&tally, true), EXIT_INTERRUPTED);
        tally.record(&record(0, 0));
        assert_eq!(tally.duplicates, 1);
        assert_eq!(exit_code(&tally, false), EXIT_RECORDS_WRONG);
        assert_eq!(exit_code(&tally, true), EXIT_RECORDS_WRONG);
        let mut gap = Tally::new(1);
        gap.record(&record(0, 1));
        assert_eq!(exit_code(&gap, false), EXIT_RECORDS_WRONG);
        assert_eq!((EXIT_RECORDS_WRONG, super::super::EXIT_USAGE), (3, 2));
    }

    #[test]
    fn option_ranges_name_their_limits() {
        assert_eq!(parse_producers("64"), Ok(64));
        let error = parse_producers("65").unwrap_err();
        assert!(error.contains("1 to 64"), "{error}");
        assert!(parse_producers("0").is_err());
        assert_eq!(parse_payload("8"), Ok(8));
        assert_eq!(parse_payload("4K"), Ok(4096));
        assert!(parse_payload("7").unwrap_err().contains("8 bytes"));
        assert_eq!(parse_records("1"), Ok(1));
        assert_eq!(parse_records(&MAX_RECORDS.to_string()), Ok(MAX_RECORDS));
        let error = parse_records("9223372036854775808").unwrap_err();
        assert!(error.contains(&MAX_RECORDS.to_string()), "{error}");
        assert!(parse_records("0").is_err());
    }
}
