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
    loop {
        let stats = device.stats()?;
        // One write per report: a closed standard output (`| head`) ends the loop at once.
        let mut text = if args.json {
            format!("{}\n", to_json(&stats))
        } else {
            lines(&stats)
        };
        if args.watch.is_some() && !args.json {
            text.push('\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(CliError::Io)?;
        match args.watch {
            Some(interval) => std::thread::sleep(interval),
            None => return Ok(0),
        }
    }
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
    fn watch_intervals_are_bounded() {
        assert_eq!(parse_interval("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_interval("86400"), Ok(Duration::from_secs(86_400)));
        for refused in ["1e300", "0", "-1", "0.001", "NaN", "inf", "x", "86401"] {
            let error = parse_interval(refused).unwrap_err();
            assert!(error.contains("from 0.01 to 86400"), "{refused}: {error}");
        }
    }
}
