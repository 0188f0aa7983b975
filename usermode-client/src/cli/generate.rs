//! `ringmap generate`: the device's built-in producer (GENERATE).

use std::path::Path;

use ringmap_client::{Error, GenerateRequest, Status};

use super::demo::{parse_payload, parse_producers};
use super::{CliError, CliResult, max_payload, open_device, outln};

/// Options of `ringmap generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Start the generator. Refused while it produces; a counted run that has finished
    /// counts as stopped.
    Start {
        /// Producer threads (1 to 64).
        #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_producers)]
        producers: u32,
        /// Payload bytes per record (at least 8, at most the ring's capacity less 8).
        #[arg(long, default_value_t = 64, value_name = "BYTES", value_parser = parse_payload)]
        payload: u32,
        /// Records per second of each producer; 0 for flat out.
        #[arg(long, default_value_t = 1000, value_name = "R")]
        rate: u64,
        /// Records each producer submits before it stops; 0 for no limit.
        #[arg(long, default_value_t = 0, value_name = "N")]
        count: u64,
    },
    /// Stop the generator and wait for its threads; succeeds when it is stopped already.
    Stop,
}

pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let device = open_device(socket)?;
    let busy = || {
        CliError::msg(
            "the device's generator is being started or stopped by another request; try again.",
        )
    };
    match args.action {
        Action::Start {
            producers,
            payload,
            rate,
            count,
        } => {
            let capacity = device.stats()?.capacity;
            let largest = max_payload(capacity);
            if u64::from(payload) > largest {
                return Err(CliError::msg(format!(
                    "--payload {payload} does not fit the device's ring: a {capacity}-byte ring holds records of at most {largest} bytes."
                )));
            }
            let running = device
                .generate(GenerateRequest::start(producers, payload, rate, count))
                .map_err(|error| match error {
                    Error::Status(Status::InvalidDeviceState) => CliError::msg(
                        "the generator is producing already, or being stopped; stop it first with `ringmap generate stop`.",
                    ),
                    Error::Status(Status::DeviceBusy) => busy(),
                    error => error.into(),
                })?;
            outln!("generator producers: {running}")?;
        }
        Action::Stop => {
            let running =
                device
                    .generate(GenerateRequest::stop())
                    .map_err(|error| match error {
                        Error::Status(Status::DeviceBusy) => busy(),
                        error => error.into(),
                    })?;
            outln!("generator producers: {running}")?;
        }
    }
    Ok(0)
}
