//! `ringmap stat`: the device's offsets and counters.

use std::path::Path;
use std::time::Duration;

use ringmap_client::StatsReply;

use super::{CliResult, open_device};

/// Options of `ringmap stat`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print again every SECS seconds (default 1) until Ctrl-C.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
    watch: Option<f64>,
    /// One JSON object per line instead of `name: value` lines.
    #[arg(long)]
    json: bool,
}

pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let device = open_device(socket)?;
    let interval = match args.watch {
        Some(secs) if !(secs.is_finite() && secs > 0.0) => {
            return Err(super::CliError::msg(
                "--watch takes a positive number of seconds.",
            ));
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    loop {
        let stats = device.stats()?;
        if args.json {
            println!("{}", to_json(&stats));
        } else {
            print_lines(&stats);
        }
        match interval {
            Some(interval) => {
                if !args.json {
                    println!();
                }
                std::thread::sleep(interval);
            }
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
    })
}

fn print_lines(stats: &StatsReply) {
    println!("mapped: {}", if stats.mapped != 0 { "yes" } else { "no" });
    println!("capacity: {}", stats.capacity);
    println!("producer offset: {}", stats.producer_offset);
    println!("reserve offset: {}", stats.reserve_offset);
    println!("consumer offset: {}", stats.consumer_offset);
    println!("consumer page offset: {}", stats.consumer_page_offset);
    println!(
        "used: {}",
        stats.producer_offset.wrapping_sub(stats.consumer_offset)
    );
    println!("produced: {}", stats.produced);
    println!("discarded: {}", stats.discarded);
    println!("dropped: {}", stats.dropped);
    println!("queries: {}", stats.queries);
    println!("wakeups: {}", stats.wakeups);
    println!("generator producers: {}", stats.generator_producers);
}
