//! `ringmap bench`: the device's generator to a consumer through the mapping, next to the
//! in-process core ring, and the device's wake-up next to a plain pipe wake-up, measured in
//! the same run. Ratios, not absolute times, are the point.

use std::hint::spin_loop;
use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use ringmap_client::{Device, GenerateRequest, Mapping};
use ringmap_core::abi::generated;
use ringmap_core::{Capacity, HeapRing, ReserveError};

use super::{CliError, CliResult, format_us, monotonic_ns, outln, parse_capacity, percentile_us};

/// Options of `ringmap bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Records for the 8-byte runs (the 4 KiB runs use a sixteenth of it).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    records: u64,
    /// Wake-ups to measure for each of the device and the pipe.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    wakeups: u64,
    /// The ring's data capacity, for the device and the in-process ring: a power of two
    /// from 4K to 1G.
    #[arg(long, default_value = "1M", value_parser = parse_capacity, value_name = "BYTES")]
    capacity: u64,
    /// Repetitions of each throughput case (interleaved; the median is shown).
    #[arg(long, default_value_t = 5, value_name = "N")]
    reps: u32,
    /// Host the device in this process (its generator threads beside the consumer) instead
    /// of in a `ringmap serve` child process.
    #[arg(long)]
    in_process: bool,
    /// How long the idle measurement waits, in milliseconds: a consumer blocked on the
    /// mapping's event with no producer, and the CPU time and wake-ups that costs the
    /// device's host and the consumer over the middle half of the wait (0: not measured).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    idle_ms: u64,
    /// Print one JSON object (the device, both tables, and every rep's rates, sorted) instead
    /// of the tables.
    #[arg(long)]
    json: bool,
}

pub fn run(socket: Option<&std::path::Path>, args: Args) -> CliResult {
    let capacity = Capacity::new(args.capacity).map_err(|e| CliError::usage(format!("{e}.")))?;
    if args.records < 16 || args.wakeups == 0 || args.reps == 0 {
        return Err(CliError::usage(
            "--records must be at least 16, and --wakeups and --reps at least 1.",
        ));
    }
    #[cfg(target_os = "linux")]
    let dir;
    #[cfg(target_os = "linux")]
    let (device, host_process) = {
        // Our own directory for the socket, unless --socket names where to listen.
        let path = match socket {
            Some(path) => {
                if std::fs::symlink_metadata(path).is_ok() {
                    return Err(CliError::msg(format!(
                        "{} exists already: `ringmap bench` starts its own device and listens at --socket, so name a path where nothing is.",
                        path.display()
                    )));
                }
                path.to_path_buf()
            }
            None => {
                dir = super::TempDir::new("ringmap-bench")?;
                dir.path().join("ringmap.sock")
            }
        };
        if args.in_process {
            let server = super::serve::start(&path, args.capacity)?;
            (Device::open_at(&path)?, Host::InProcess(server))
        } else {
            let child = ChildServer::spawn(&path, args.capacity)?;
            (Device::open_at(&path)?, Host::Child(child))
        }
    };
    #[cfg(not(target_os = "linux"))]
    let device = {
        if socket.is_some() {
            return Err(CliError::usage(
                "--socket names a usersim device, which runs on Linux; on Windows the bench uses the installed driver.",
            ));
        }
        Device::open()?
    };
    let host = if cfg!(target_os = "linux") {
        if args.in_process {
            "usersim in this process"
        } else {
            "usersim in a `ringmap serve` child process"
        }
    } else {
        "the installed driver"
    };
    // With --json nothing is printed until the one object at the end.
    let table = !args.json;
    if table {
        outln!("device: {host}")?;
    }
    let mut mapping = device.map()?;
    if mapping.capacity() != capacity.as_u64() {
        return Err(CliError::msg(format!(
            "the device's ring holds {} bytes, not the {} asked for; pass --capacity {} to compare like with like.",
            mapping.capacity(),
            capacity.as_u64(),
            mapping.capacity()
        )));
    }
    if table {
        outln!(
            "throughput: one producer, one consumer, {} byte ring; median of {} interleaved reps",
            capacity.as_u64(),
            args.reps
        )?;
        outln!(
            "(median ratio: the median of each rep's device/in-process ratio, not the ratio of the two medians beside it)"
        )?;
        outln!(
            "{:<10} {:>16} {:>16} {:>13} {:>14}",
            "payload",
            "device rec/s",
            "in-process rec/s",
            "median ratio",
            "device drops"
        )?;
    }
    let mut throughput_json = Vec::new();
    for payload in [8u32, 4096] {
        let records = if payload == 8 {
            args.records
        } else {
            args.records / 16
        };
        // Interleaved reps, so that a noisy moment hits both sides; medians reported.
        let mut device_rates = Vec::new();
        let mut core_rates = Vec::new();
        let mut ratios = Vec::new();
        let mut dropped = 0;
        for _ in 0..args.reps {
            let (device_rate, drops) = device_throughput(&device, &mut mapping, payload, records)?;
            let core_rate = core_throughput(capacity, payload as usize, records)?;
            dropped += drops;
            device_rates.push(device_rate);
            core_rates.push(core_rate);
            ratios.push(device_rate / core_rate);
        }
        let (device_median, core_median) = (median(&mut device_rates), median(&mut core_rates));
        let median_ratio = median(&mut ratios);
        if table {
            outln!(
                "{:<10} {:>16.0} {:>16.0} {:>12.1}% {:>14}",
                format!("{payload} B"),
                device_median,
                core_median,
                100.0 * median_ratio,
                dropped
            )?;
        } else {
            throughput_json.push(serde_json::json!({
                "payload_bytes": payload,
                "records": records,
                "device_records_per_sec_median": device_median,
                "in_process_records_per_sec_median": core_median,
                "median_of_per_rep_ratios": median_ratio,
                "device_records_per_sec_sorted": device_rates,
                "in_process_records_per_sec_sorted": core_rates,
                "device_dropped": dropped,
            }));
        }
    }
    // Like with like: the device wakes a consumer in another process (or, in process, on
    // another thread), so the peer is a plain eventfd wake between two processes (Linux).
    // Interleaved: each rep measures its share of the wake-ups on the device, then on the
    // peer, and the p50 ratio of each rep is taken moments apart.
    #[cfg(target_os = "linux")]
    let peer_name = "eventfd";
    #[cfg(not(target_os = "linux"))]
    let peer_name = "pipe";
    let reps = u64::from(args.reps).clamp(1, args.wakeups.max(1));
    let per_rep = (args.wakeups / reps).max(1);
    let (mut device_wake, mut pipe_wake, mut p50_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut device_cpu, mut peer_cpu) = (Some(0u64), Some(0u64));
    for _ in 0..reps {
        let device_rep = device_wake_latency(&device, &mut mapping, per_rep)?;
        #[cfg(target_os = "linux")]
        let peer_rep = eventfd_wake_latency(per_rep)?;
        #[cfg(not(target_os = "linux"))]
        let peer_rep = pipe_wake_latency(per_rep)?;
        device_cpu = device_cpu.zip(device_rep.waiter_cpu_ns).map(|(a, b)| a + b);
        peer_cpu = peer_cpu.zip(peer_rep.waiter_cpu_ns).map(|(a, b)| a + b);
        let (device_rep, peer_rep) = (device_rep.latencies, peer_rep.latencies);
        if let (Some(d), Some(q)) = (
            percentile_us(&device_rep, 50.0),
            percentile_us(&peer_rep, 50.0),
        ) && q > 0.0
        {
            p50_ratios.push(d / q);
        }
        device_wake.extend(device_rep);
        pipe_wake.extend(peer_rep);
    }
    device_wake.sort_unstable();
    pipe_wake.sort_unstable();
    // `median` sorts them too, for the range and the JSON below.
    let p50_ratio = (!p50_ratios.is_empty()).then(|| median(&mut p50_ratios));
    // Each waiter's own CPU time per wake-up, over all reps.
    let cpu_us = |total: Option<u64>| total.map(|ns| ns as f64 / 1000.0 / (per_rep * reps) as f64);
    let (device_cpu_us, peer_cpu_us) = (cpu_us(device_cpu), cpu_us(peer_cpu));
    let wake_goal_met = p50_ratio.map(|ratio| ratio <= WAKE_GOAL);
    if table {
        outln!(
            "wake latency: submit to a blocked consumer's return, {} samples in {reps} interleaved reps",
            per_rep * reps
        )?;
        outln!(
            "{:<10} {:>12} {:>12} {:>14}",
            "",
            "device",
            peer_name,
            format!("device/{peer_name}")
        )?;
    }
    let mut wake_json = serde_json::Map::new();
    for p in [50.0, 99.0] {
        let d = percentile_us(&device_wake, p);
        let q = percentile_us(&pipe_wake, p);
        let ratio = match (d, q) {
            (Some(d), Some(q)) if q > 0.0 => format!("{:.2}x", d / q),
            _ => "n/a".to_string(),
        };
        if table {
            outln!(
                "{:<10} {:>12} {:>12} {:>14}",
                format!("p{p:.0}"),
                format_us(d),
                format_us(q),
                ratio
            )?;
        } else {
            wake_json.insert(
                format!("p{p:.0}"),
                serde_json::json!({
                    "device_us": d,
                    "peer": peer_name,
                    "peer_us": q,
                    "device_over_peer": match (d, q) {
                        (Some(d), Some(q)) if q > 0.0 => Some(d / q),
                        _ => None,
                    },
                }),
            );
        }
    }
    if table {
        let ratio = match (device_cpu_us, peer_cpu_us) {
            (Some(d), Some(q)) if q > 0.0 => format!("{:.2}x", d / q),
            _ => "n/a".to_string(),
        };
        outln!(
            "{:<10} {:>12} {:>12} {:>14}",
            "cpu/wake",
            format_us(device_cpu_us),
            format_us(peer_cpu_us),
            ratio
        )?;
        outln!(
            "(cpu/wake: the waiter's own CPU time per wake-up, the device's re-arming QUERY included; \
             whether a woken waiter runs at once, ahead of its waker, decides the latency more: \
             README, Performance)"
        )?;
    }
    if table && let (Some(ratio), Some(met)) = (p50_ratio, wake_goal_met) {
        outln!(
            "p50 ratio, rep by rep: median {ratio:.2}x [{:.2} .. {:.2}]; goal <= {WAKE_GOAL}x (issue 11): {}",
            p50_ratios[0],
            p50_ratios[p50_ratios.len() - 1],
            if met { "met" } else { "NOT met" }
        )?;
    }
    #[cfg(target_os = "linux")]
    let idle = (args.idle_ms > 0)
        .then(|| {
            idle_usage(
                &mut mapping,
                Duration::from_millis(args.idle_ms),
                &host_process.proc_dir(),
            )
        })
        .transpose()?;
    // On Windows the driver's time is the system's: not read here.
    #[cfg(not(target_os = "linux"))]
    let idle: Option<IdleRep> = None;
    if table && let Some(idle) = &idle {
        outln!(
            "idle: a consumer blocked on the mapping's event, no producer, over {:.2} s: device {}; consumer {}: {} of one core",
            idle.seconds,
            format_usage(idle.host),
            format_usage(idle.consumer),
            idle.percent_of_a_core()
                .map_or_else(|| "n/a".to_string(), |percent| format!("{percent:.3}%")),
        )?;
        outln!(
            "idle goal, 0% CPU (issue 11): {}",
            match idle.goal_met() {
                Some(true) =>
                    "met (the consumer did not run; the device ran only its once-a-second housekeeping)",
                Some(false) => "NOT met (more ran than the device's once-a-second housekeeping)",
                None => "not judged (the usage is not read here)",
            }
        )?;
    }
    if !table {
        let usage_json = |usage: Option<Usage>| {
            usage.map(|usage| {
                serde_json::json!({
                    "cpu_us": usage.cpu_ns as f64 / 1000.0,
                    "wakeups": usage.wakeups,
                })
            })
        };
        let idle_json = idle.as_ref().map(|idle| {
            serde_json::json!({
                "seconds": idle.seconds,
                "device": usage_json(idle.host),
                "consumer": usage_json(idle.consumer),
                "percent_of_a_core": idle.percent_of_a_core(),
                "goal_met": idle.goal_met(),
            })
        });
        let report = serde_json::json!({
            "device": host,
            "capacity": capacity.as_u64(),
            "reps": args.reps,
            "throughput": throughput_json,
            "wake_latency": {
                "samples": per_rep * reps,
                "reps": reps,
                "percentiles": wake_json,
                "p50_ratio_per_rep_sorted": p50_ratios,
                "p50_ratio_median": p50_ratio,
                "goal_max_p50_ratio": WAKE_GOAL,
                "goal_met": wake_goal_met,
                "waiter_cpu_us_per_wakeup": {
                    "device": device_cpu_us,
                    "peer": peer_cpu_us,
                },
            },
            "idle": idle_json,
        });
        outln!("{report}")?;
    }
    Ok(0)
}

/// The device's generator (one producer thread in the host) to this thread through the
/// mapping: records per second, from GENERATE start to the last record read.
fn device_throughput(
    device: &Device,
    mapping: &mut Mapping,
    payload: u32,
    records: u64,
) -> Result<(f64, u64), CliError> {
    let dropped_before = device.stats()?.dropped;
    let start = Instant::now();
    device.generate(GenerateRequest::start(1, payload, 0, records))?;
    let mut expected = 0u64;
    let mut mismatches = 0u64;
    let mut empty = 0u32;
    while expected < records {
        let consumer = mapping.consumer();
        let batch = consumer.batch();
        if batch.is_empty() {
            drop(batch);
            empty += 1;
            if empty < 64 {
                spin_loop();
            } else if empty < 128 {
                thread::yield_now();
            } else {
                if !mapping.wait_ready(Some(Duration::from_secs(2)))? {
                    // Two seconds without a record: the generator has stalled.
                    let _ = device.generate(GenerateRequest::stop());
                    return Err(CliError::msg(format!(
                        "the generator stopped after {expected} of {records} records."
                    )));
                }
            }
            continue;
        }
        empty = 0;
        for record in batch.iter() {
            let sequence = generated::parse(&record).map(|(_, s, _)| s);
            mismatches += u64::from(sequence != Some(expected));
            expected += 1;
        }
    }
    let elapsed = start.elapsed();
    // Return the space; stop the generator (its threads are done) so it can start again.
    let _ = device.wait(
        mapping.consumer().position(),
        Some(Duration::from_millis(1)),
    );
    device.generate(GenerateRequest::stop())?;
    if mismatches != 0 {
        return Err(CliError::msg(format!(
            "{mismatches} records came out of sequence through the device."
        )));
    }
    let dropped = device.stats()?.dropped - dropped_before;
    Ok((records as f64 / elapsed.as_secs_f64(), dropped))
}

/// The same work in one process: `HeapRing`, one producer thread filling records as the
/// generator does, this thread consuming.
fn core_throughput(capacity: Capacity, payload: usize, records: u64) -> Result<f64, CliError> {
    let (ring, mut consumer) = HeapRing::new(capacity, ());
    let ring = &ring;
    let start = Instant::now();
    let mismatches = thread::scope(|scope| {
        scope.spawn(move || {
            let mut full = 0u32;
            for sequence in 0..records {
                loop {
                    match ring.reserve(payload) {
                        Ok(mut reservation) => {
                            generated::fill(reservation.payload(), 0, sequence, monotonic_ns());
                            reservation.submit();
                            full = 0;
                            break;
                        }
                        Err(ReserveError::Full) => {
                            full += 1;
                            if full < 64 {
                                spin_loop();
                            } else {
                                thread::yield_now();
                            }
                        }
                        Err(_) => return,
                    }
                }
            }
        });
        let mut expected = 0u64;
        let mut mismatches = 0u64;
        let mut empty = 0u32;
        let deadline = Instant::now() + Duration::from_secs(120);
        while expected < records {
            let batch = consumer.batch();
            if batch.is_empty() {
                empty += 1;
                if empty < 64 {
                    spin_loop();
                } else {
                    thread::yield_now();
                    if Instant::now() > deadline {
                        return None;
                    }
                }
                continue;
            }
            empty = 0;
            for record in batch.iter() {
                let sequence = generated::parse(&record).map(|(_, s, _)| s);
                mismatches += u64::from(sequence != Some(expected));
                expected += 1;
            }
        }
        Some(mismatches)
    });
    let elapsed = start.elapsed();
    match mismatches {
        Some(0) => Ok(records as f64 / elapsed.as_secs_f64()),
        Some(n) => Err(CliError::msg(format!(
            "{n} records came out of sequence through the in-process ring."
        ))),
        None => Err(CliError::msg("the in-process ring stalled.")),
    }
}

/// The wake-up's goal: a blocked consumer returns within this many times a plain
/// cross-process eventfd wake-up measured in the same run (p50, issue 11).
const WAKE_GOAL: f64 = 1.5;

/// The generator submits one record every 500 us; this thread is blocked on the mapping's
/// event each time (a QUERY armed) and measures from the record's submit time to its return.
fn device_wake_latency(
    device: &Device,
    mapping: &mut Mapping,
    samples: u64,
) -> Result<WakeRep, CliError> {
    device.generate(GenerateRequest::start(1, 16, 2000, samples))?;
    let mut latencies = Vec::with_capacity(samples as usize);
    let cpu_start = thread_cpu_ns();
    let mut received = 0u64;
    let mut idle = 0u32;
    while received < samples {
        // On the mapping's event (SET_EVENT), which the device sets in the step that
        // completes the QUERY.
        let woke = mapping.wait_ready(Some(Duration::from_millis(200)))?;
        let now = monotonic_ns();
        let batch = mapping.consumer().batch();
        let mut first = true;
        for record in batch.iter() {
            if first
                && woke
                && let Some((_, _, Some(submitted))) = generated::parse(&record)
            {
                latencies.push(now.saturating_sub(submitted));
            }
            first = false;
            received += 1;
        }
        if batch.is_empty() && !woke {
            idle += 1;
            if idle > 25 {
                let _ = device.generate(GenerateRequest::stop());
                return Err(CliError::msg(
                    "the generator stopped before every wake-up was measured.",
                ));
            }
        } else {
            idle = 0;
        }
    }
    let waiter_cpu_ns = cpu_since(cpu_start);
    let _ = device.wait(
        mapping.consumer().position(),
        Some(Duration::from_millis(1)),
    );
    device.generate(GenerateRequest::stop())?;
    latencies.sort_unstable();
    Ok(WakeRep {
        latencies,
        waiter_cpu_ns,
    })
}

/// What a thread or a process used over an interval: CPU time, and how often it blocked
/// and was woken again (voluntary context switches: a preemption is not its doing).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Usage {
    cpu_ns: u64,
    wakeups: u64,
}

#[cfg(target_os = "linux")]
impl Usage {
    fn since(self, start: Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns.saturating_sub(start.cpu_ns),
            wakeups: self.wakeups.saturating_sub(start.wakeups),
        }
    }

    fn plus(self, other: Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns + other.cpu_ns,
            wakeups: self.wakeups + other.wakeups,
        }
    }
}

/// What the thread at `/proc/PID/task/TID` used so far (`schedstat`'s run time, `status`'s
/// voluntary context switches); `None` if it has ended or cannot be read.
#[cfg(target_os = "linux")]
fn task_usage(task: &std::path::Path) -> Option<Usage> {
    let schedstat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let status = std::fs::read_to_string(task.join("status")).ok()?;
    let key = "voluntary_ctxt_switches:";
    let switches = status.lines().find_map(|line| line.strip_prefix(key))?;
    Some(Usage {
        cpu_ns: schedstat.split_whitespace().next()?.parse().ok()?,
        wakeups: switches.trim().parse().ok()?,
    })
}

/// The sum of what the threads of the process at `/proc/PID` used so far, but for the
/// threads numbered in `except`. A thread that ends takes its share with it; the idle
/// measurement runs with the generator's threads joined, so the set does not change.
#[cfg(target_os = "linux")]
fn process_usage(process: &std::path::Path, except: &[u32]) -> Option<Usage> {
    let mut total = Usage::default();
    for task in std::fs::read_dir(process.join("task")).ok()? {
        let task = task.ok()?;
        let tid = task
            .file_name()
            .to_str()
            .and_then(|tid| tid.parse::<u32>().ok());
        if tid.is_some_and(|tid| except.contains(&tid)) {
            continue;
        }
        // One that ended meanwhile counts nothing.
        total = total.plus(task_usage(&task.path()).unwrap_or_default());
    }
    Some(total)
}

/// What an idle consumer costs: the device's host and the waiting thread over the middle
/// half of a wait with no producer (the wait's own start and end, a QUERY and its cancel,
/// fall outside it).
struct IdleRep {
    /// The window's length.
    seconds: f64,
    /// `None`: not read here (the installed driver's time is the system's).
    host: Option<Usage>,
    consumer: Option<Usage>,
}

impl IdleRep {
    /// The goal (issue 11: 0% CPU with a consumer waiting and no producer): the consumer
    /// does not run at all, and the host runs only its housekeeping, once a second
    /// (`ringmap serve` looks for idle connections to close). `None` if not read here.
    fn goal_met(&self) -> Option<bool> {
        let (host, consumer) = (self.host?, self.consumer?);
        Some(consumer.wakeups == 0 && host.wakeups <= self.seconds.ceil() as u64)
    }

    /// Both CPU times over the window, in percent of one core.
    fn percent_of_a_core(&self) -> Option<f64> {
        let total = self.host?.cpu_ns + self.consumer?.cpu_ns;
        Some(100.0 * total as f64 / 1e9 / self.seconds)
    }
}

/// Blocks on the mapping's event for `length` with no producer (the generator is stopped,
/// and what it left is read first), while a second thread reads what the host's threads
/// (`host`: `/proc/PID`) and this one used from a quarter to three quarters of the way.
/// In process, the reading thread and this one are left out of the host's share.
#[cfg(target_os = "linux")]
fn idle_usage(
    mapping: &mut Mapping,
    length: Duration,
    host: &std::path::Path,
) -> Result<IdleRep, CliError> {
    // What the wake-up measurement left, read, so that the wait below waits.
    while !mapping.consumer().batch().is_empty() {}
    let consumer_tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let consumer_task = std::path::PathBuf::from(format!("/proc/self/task/{consumer_tid}"));
    let start = Instant::now();
    let deadline = start + length;
    let (from, to) = (start + length / 4, start + length * 3 / 4);
    thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let reader_tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
            let except = [consumer_tid, reader_tid];
            let read = || Some((process_usage(host, &except)?, task_usage(&consumer_task)?));
            thread::sleep(from.saturating_duration_since(Instant::now()));
            let (first, at) = (read(), Instant::now());
            thread::sleep(to.saturating_duration_since(Instant::now()));
            let (second, until) = (read(), Instant::now());
            let seconds = (until - at).as_secs_f64();
            match first.zip(second) {
                Some(((host0, consumer0), (host1, consumer1))) => IdleRep {
                    seconds,
                    host: Some(host1.since(host0)),
                    consumer: Some(consumer1.since(consumer0)),
                },
                None => IdleRep {
                    seconds,
                    host: None,
                    consumer: None,
                },
            }
        });
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if mapping.wait_ready(Some(left))? && !mapping.consumer().batch().is_empty() {
                return Err(CliError::msg(
                    "a record came while the bench measured an idle consumer (is another producer writing to this device?).",
                ));
            }
        }
        Ok(reader.join().expect("the reading thread does not panic"))
    })
}

/// A usage for the idle line: `12 us CPU, 0 wake-ups`, or `n/a`.
fn format_usage(usage: Option<Usage>) -> String {
    usage.map_or_else(
        || "n/a".to_string(),
        |usage| format!("{} us CPU, {} wake-ups", usage.cpu_ns / 1000, usage.wakeups),
    )
}

/// One rep of a wake-up measurement.
struct WakeRep {
    /// Each wake-up's latency, in nanoseconds, sorted.
    latencies: Vec<u64>,
    /// The waiting thread's own CPU time over the rep's wake-ups (`None`: not read here).
    waiter_cpu_ns: Option<u64>,
}

/// The calling thread's CPU time in nanoseconds (Linux: `CLOCK_THREAD_CPUTIME_ID`; `None`
/// elsewhere).
fn thread_cpu_ns() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Some(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// This thread's CPU time since `start` (a [`thread_cpu_ns`] reading).
fn cpu_since(start: Option<u64>) -> Option<u64> {
    start
        .zip(thread_cpu_ns())
        .map(|(start, now)| now.saturating_sub(start))
}

/// A plain wake-up: one thread writes its send time into a pipe every 500 us, this one is
/// blocked in `read` and measures from that time to its return.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn pipe_wake_latency(samples: u64) -> Result<WakeRep, CliError> {
    let (mut reader, mut writer) = std::io::pipe()?;
    let sender = thread::spawn(move || -> std::io::Result<()> {
        paced(samples, || writer.write_all(&monotonic_ns().to_le_bytes()))
    });
    let mut latencies = Vec::with_capacity(samples as usize);
    let mut buffer = [0u8; 8];
    let cpu_start = thread_cpu_ns();
    for _ in 0..samples {
        reader.read_exact(&mut buffer)?;
        latencies.push(monotonic_ns().saturating_sub(u64::from_le_bytes(buffer)));
    }
    let waiter_cpu_ns = cpu_since(cpu_start);
    sender
        .join()
        .map_err(|_| CliError::msg("the pipe sender thread panicked."))??;
    latencies.sort_unstable();
    Ok(WakeRep {
        latencies,
        waiter_cpu_ns,
    })
}

/// The environment variable that makes `ringmap` the sender of [`eventfd_wake_latency`]:
/// `<eventfd number>,<samples>` (set only by the bench for its child).
#[cfg(target_os = "linux")]
pub const WAKE_SENDER_ENV: &str = "RINGMAP_BENCH_WAKE_SENDER";

/// A plain cross-process wake-up: a child process (this binary again, as
/// [`wake_sender`]) takes the time, sets an eventfd this process is blocked reading, then
/// sends the time through a pipe, every 500 us, as the generator paces the device's
/// wake-ups; this process measures from the stamp to its return from the eventfd's `read`.
#[cfg(target_os = "linux")]
fn eventfd_wake_latency(samples: u64) -> Result<WakeRep, CliError> {
    use std::os::fd::AsRawFd;
    // Inherited by the child (no CLOEXEC); blocking, as a waiter's is.
    let event = rustix::event::eventfd(0, rustix::event::EventfdFlags::empty())
        .map_err(|errno| CliError::msg(format!("cannot make an eventfd: {errno}.")))?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(WAKE_SENDER_ENV, format!("{},{samples}", event.as_raw_fd()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let mut stamps = child.stdout.take().expect("piped");
    let mut latencies = Vec::with_capacity(samples as usize);
    let mut count = [0u8; 8];
    let mut stamp = [0u8; 8];
    let mut waiter_cpu_ns = None;
    let result = (|| -> Result<(), CliError> {
        let cpu_start = thread_cpu_ns();
        let mut received = 0;
        while received < samples {
            rustix::io::read(&event, &mut count)
                .map_err(|errno| CliError::msg(format!("eventfd read: {errno}.")))?;
            let now = monotonic_ns();
            // Sets that came before this process ran are counted together: the first stamp
            // is the one that woke it (as the device's first record after a wake-up), the
            // others came with it.
            let sets = u64::from_ne_bytes(count).clamp(1, samples - received);
            for set in 0..sets {
                stamps.read_exact(&mut stamp)?;
                if set == 0 {
                    latencies.push(now.saturating_sub(u64::from_le_bytes(stamp)));
                }
            }
            received += sets;
        }
        waiter_cpu_ns = cpu_since(cpu_start);
        Ok(())
    })();
    let status = child.wait()?;
    result?;
    if !status.success() {
        return Err(CliError::msg(format!(
            "the eventfd wake sender ended: {status}."
        )));
    }
    latencies.sort_unstable();
    Ok(WakeRep {
        latencies,
        waiter_cpu_ns,
    })
}

/// The child's side of [`eventfd_wake_latency`] (`spec` is [`WAKE_SENDER_ENV`]'s value):
/// stamps, sets, then sends the stamp, paced. Returns the exit status.
#[cfg(target_os = "linux")]
pub fn wake_sender(spec: &str) -> u8 {
    use std::os::fd::{FromRawFd, OwnedFd};
    let Some((fd, samples)) = spec.split_once(',') else {
        return super::EXIT_USAGE;
    };
    let (Ok(fd), Ok(samples)) = (fd.parse::<i32>(), samples.parse::<u64>()) else {
        return super::EXIT_USAGE;
    };
    // SAFETY: the descriptor the parent made and left open for this process, used only here.
    let event = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = std::io::stdout().lock();
    // The stamp travels after the set, so that the wake-up measured is the eventfd's alone
    // (the waiter reads the stamp once it is awake).
    let sent = paced(samples, || {
        let stamp = monotonic_ns();
        rustix::io::write(&event, &1u64.to_ne_bytes())?;
        out.write_all(&stamp.to_le_bytes())?;
        out.flush()?;
        Ok(())
    });
    if sent.is_ok() {
        super::EXIT_OK
    } else {
        super::EXIT_ERROR
    }
}

/// Calls `send` `samples` times, one every 500 us (as the generator paces the device's
/// wake-ups), until it fails.
fn paced(samples: u64, mut send: impl FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
    let mut next = Instant::now();
    for _ in 0..samples {
        next += Duration::from_micros(500);
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        }
        send()?;
    }
    Ok(())
}

/// Where the usersim device runs; kept alive for the bench, and asked for its CPU time.
#[cfg(target_os = "linux")]
enum Host {
    InProcess(#[expect(dead_code, reason = "kept alive")] ringmap_usersim::Server),
    Child(ChildServer),
}

#[cfg(target_os = "linux")]
impl Host {
    /// Where the host's threads are listed: this process, or the child.
    fn proc_dir(&self) -> std::path::PathBuf {
        match self {
            Host::InProcess(_) => "/proc/self".into(),
            Host::Child(child) => format!("/proc/{}", child.0.id()).into(),
        }
    }
}

/// `ringmap serve` as a child process; killed on drop, and its socket removed.
#[cfg(target_os = "linux")]
struct ChildServer(std::process::Child, std::path::PathBuf);

#[cfg(target_os = "linux")]
impl ChildServer {
    fn spawn(socket: &std::path::Path, capacity: u64) -> Result<ChildServer, CliError> {
        let exe = std::env::current_exe()?;
        let child = std::process::Command::new(exe)
            .arg("--socket")
            .arg(socket)
            .arg("serve")
            .arg("--capacity")
            .arg(capacity.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| CliError::msg(format!("cannot start `ringmap serve`: {e}.")))?;
        let mut server = ChildServer(child, socket.to_path_buf());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Device::open_at(socket).is_err() {
            if let Ok(Some(status)) = server.0.try_wait() {
                return Err(CliError::msg(format!(
                    "`ringmap serve` exited ({status}) before listening."
                )));
            }
            if Instant::now() > deadline {
                return Err(CliError::msg(
                    "`ringmap serve` did not listen within 10 seconds.",
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
        Ok(server)
    }
}

#[cfg(target_os = "linux")]
impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // Killed, it could not remove its socket; it is ours (the path was free before).
        use std::os::unix::fs::FileTypeExt;
        if std::fs::symlink_metadata(&self.1).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.1);
        }
    }
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
