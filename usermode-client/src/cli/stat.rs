//! `ringmap stat`: the device's offsets and counters.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use ringmap_client::StatsReply;

use super::{CliError, CliResult, open_device};

/// Options of `ringmap stat`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print again every SECS seconds (default 1; 0.01 to 86400) until Ctrl-C.
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "1",
        allow_negative_numbers = true,
        value_parser = parse_interval
    )]
    watch: Option<Duration>,
    /// One JSON object per line instead of `name: value` lines.
    #[arg(long)]
    json: bool,
}

/// The shortest and longest `--watch` interval, in seconds.
const WATCH_SECS: (f64, f64) = (0.01, 86_400.0);

/// Parses `--watch`: seconds, a decimal number from 0.01 to 86400 (a day).
fn parse_interval(text: &str) -> Result<Duration, String> {
    let (min, max) = WATCH_SECS;
    let refused =
        || format!("--watch takes a number of seconds from {min} to {max} (a day), not `{text}`");
    let secs: f64 = text.trim().parse().map_err(|_| refused())?;
    if !(min..=max).contains(&secs) {
        return Err(refused());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| refused())
}

pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let device = open_device(socket)?;
    let mut previous: Option<Sample> = None;
    loop {
        let stats = device.stats()?;
        let sample = Sample {
            at: std::time::Instant::now(),
            wall: std::time::SystemTime::now(),
            produced: stats.produced,
            producer_offset: stats.producer_offset,
        };
        let rates = previous.as_ref().and_then(|p| sample.rates_since(p));
        // One write per report: a closed standard output (`| head`) ends the loop at once.
        let text = match (args.json, args.watch.is_some()) {
            (true, false) => format!("{}\n", to_json(&stats)),
            (true, true) => {
                let mut object = to_json(&stats);
                object["time"] = utc_timestamp(sample.wall).into();
                object["records_per_sec"] = rates.map(|r| r.0).into();
                object["bytes_per_sec"] = rates.map(|r| r.1).into();
                format!("{object}\n")
            }
            (false, false) => lines(&stats),
            (false, true) => {
                let rates = match rates {
                    Some((records, bytes)) => {
                        format!("rates: {records:.0} records/s, {bytes:.0} bytes/s\n")
                    }
                    None => "rates: n/a (first sample)\n".to_string(),
                };
                format!(
                    "time: {}\n{rates}{}\n",
                    utc_timestamp(sample.wall),
                    lines(&stats)
                )
            }
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(CliError::Io)?;
        match args.watch {
            Some(interval) => std::thread::sleep(interval),
            None => return Ok(0),
        }
        previous = Some(sample);
    }
}

/// One `--watch` sample: when, and the two counters the rates are taken from.
struct Sample {
    at: std::time::Instant,
    wall: std::time::SystemTime,
    produced: u64,
    producer_offset: u64,
}

impl Sample {
    /// (records/s, bytes/s) from `earlier` to this sample; `None` if no time passed.
    fn rates_since(&self, earlier: &Sample) -> Option<(f64, f64)> {
        let secs = self.at.duration_since(earlier.at).as_secs_f64();
        (secs > 0.0).then(|| {
            (
                self.produced.wrapping_sub(earlier.produced) as f64 / secs,
                self.producer_offset.wrapping_sub(earlier.producer_offset) as f64 / secs,
            )
        })
    }
}

/// `time` as `2026-12-01T22:30:05.123Z` (UTC, milliseconds).
pub fn utc_timestamp(time: std::time::SystemTime) -> String {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar), after Howard
    // Hinnant's `civil_from_days`.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The reply as a JSON object.
pub fn to_json(stats: &StatsReply) -> serde_json::Value {
    serde_json::json!({
        "mapped": stats.mapped != 0,
        "capacity": stats.capacity,
        "producer_offset": stats.producer_offset,
        "reserve_offset": stats.reserve_offset,
        "consumer_offset": stats.consumer_offset,
        "consumer_page_offset": stats.consumer_page_offset,
        "used": stats.producer_offset.wrapping_sub(stats.consumer_offset),
        "produced": stats.produced,
        "discarded": stats.discarded,
        "dropped": stats.dropped,
        "queries": stats.queries,
        "wakeups": stats.wakeups,
        "generator_producers": stats.generator_producers,
        "redelivered": stats.redelivered,
        "consumed": stats.consumed,
        "mapping_process": stats.mapping_process,
    })
}

/// The reply as `name: value` lines, each ending in a newline.
fn lines(stats: &StatsReply) -> String {
    let mut text = String::new();
    let mut line = |name: &str, value: &dyn std::fmt::Display| {
        text.push_str(&format!("{name}: {value}\n"));
    };
    if stats.mapped != 0 {
        line(
            "mapped",
            &format!("yes, by process {}", stats.mapping_process),
        );
    } else {
        line("mapped", &"no");
    }
    line("capacity", &stats.capacity);
    line("producer offset", &stats.producer_offset);
    line("reserve offset", &stats.reserve_offset);
    line("consumer offset", &stats.consumer_offset);
    line("consumer page offset", &stats.consumer_page_offset);
    line(
        "used",
        &stats.producer_offset.wrapping_sub(stats.consumer_offset),
    );
    line("produced", &stats.produced);
    line("consumed", &stats.consumed);
    line("discarded", &stats.discarded);
    line("dropped", &stats.dropped);
    line("queries", &stats.queries);
    line("wakeups", &stats.wakeups);
    line("generator producers", &stats.generator_producers);
    line("redelivered", &stats.redelivered);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789.
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(utc_timestamp(t), "2000-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(utc_timestamp(t), "2026-12-31T23:59:59.000Z");
    }

    #[test]
    fn rates_are_per_second_between_samples() {
        let at = std::time::Instant::now();
        let wall = std::time::SystemTime::now();
        let first = Sample {
            at,
            wall,
            produced: 10,
            producer_offset: 1000,
        };
        let second = Sample {
            at: at + Duration::from_millis(500),
            wall,
            produced: 60,
            producer_offset: 5000,
        };
        assert_eq!(second.rates_since(&first), Some((100.0, 8000.0)));
        assert_eq!(first.rates_since(&first), None);
    }

    #[test]
    fn watch_intervals_are_bounded() {
        assert_eq!(parse_interval("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_interval("86400"), Ok(Duration::from_secs(86_400)));
        for refused in ["1e300", "0", "-1", "0.001", "NaN", "inf", "x", "86401"] {
            let error = parse_interval(refused).unwrap_err();
            assert!(error.contains("from 0.01 to 86400"), "{refused}: {error}");
        }
    }
}
