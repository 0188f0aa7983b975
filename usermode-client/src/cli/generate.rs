//! `ringmap generate`: the device's built-in producer (GENERATE).

use std::path::Path;

use ringmap_client::{Error, GenerateRequest, Status};

use super::{CliError, CliResult, open_device};

/// Options of `ringmap generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Start the generator (it must be stopped).
    Start {
        /// Producer threads (1 to 64).
        #[arg(long, default_value_t = 1, value_name = "N")]
        producers: u32,
        /// Payload bytes per record (at least 8).
        #[arg(long, default_value_t = 64, value_name = "BYTES")]
        payload: u32,
        /// Records per second of each producer; 0 for flat out.
        #[arg(long, default_value_t = 1000, value_name = "R")]
        rate: u64,
        /// Records each producer submits before it stops; 0 for no limit.
        #[arg(long, default_value_t = 0, value_name = "N")]
        count: u64,
    },
    /// Stop the generator (it must be running).
    Stop,
}

pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let device = open_device(socket)?;
    match args.action {
        Action::Start {
            producers,
            payload,
            rate,
            count,
        } => {
            let running = device
                .generate(GenerateRequest::start(producers, payload, rate, count))
                .map_err(|error| match error {
                    Error::Status(Status::InvalidDeviceState) => CliError::msg(
                        "the generator is running already; stop it first with `ringmap generate stop`.",
                    ),
                    Error::Status(Status::InvalidParameter) => CliError::msg(
                        "the device refused these settings: use 1 to 64 producers and a payload of at least 8 bytes that fits the ring.",
                    ),
                    error => error.into(),
                })?;
            println!("generator producers: {running}");
        }
        Action::Stop => {
            let running =
                device
                    .generate(GenerateRequest::stop())
                    .map_err(|error| match error {
                        Error::Status(Status::InvalidDeviceState) => {
                            CliError::msg("the generator is not running.")
                        }
                        error => error.into(),
                    })?;
            println!("generator producers: {running}");
        }
    }
    Ok(0)
}
