//! `ringmap write`: one record per line (WRITE).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use ringmap_client::Error;

use super::{CliError, CliResult, open_device};

/// Options of `ringmap write`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Read the lines from FILE instead of standard input.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Skip empty lines instead of refusing them (a record holds at least one byte).
    #[arg(long)]
    skip_empty: bool,
}

pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let device = open_device(socket)?;
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| CliError::msg(format!("cannot open {}: {e}.", path.display())))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut written = 0u64;
    for (number, line) in input.split(b'\n').enumerate() {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            if args.skip_empty {
                continue;
            }
            return Err(CliError::msg(format!(
                "line {} is empty and a record holds at least one byte; pass --skip-empty to leave such lines out ({written} records written).",
                number + 1
            )));
        }
        match device.write(&line) {
            Ok(_) => written += 1,
            Err(Error::RingFull) => {
                return Err(CliError::msg(format!(
                    "the ring is full at line {}: {written} records written; consume some (ringmap tail) and write the rest again.",
                    number + 1
                )));
            }
            Err(error) => return Err(error.into()),
        }
    }
    eprintln!("ringmap: {written} records written.");
    Ok(0)
}
