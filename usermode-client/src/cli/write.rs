//! `ringmap write`: one record per line, or per NUL-terminated chunk (WRITE).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use ringmap_client::Error;

use super::{CliError, CliResult, errln, max_payload, open_device};

/// Options of `ringmap write` (how input is split: `ringmap help write`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Read FILE instead of standard input; `-` is standard input.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Records end at NUL bytes (0x00), not at line ends: binary-safe for anything but NUL;
    /// nothing is stripped.
    #[arg(long, short = '0')]
    raw: bool,
    /// Keep a CR (0x0d) before a line's LF in the record (by default a CRLF line end is
    /// removed whole).
    #[arg(long, conflicts_with = "raw")]
    keep_cr: bool,
    /// Skip empty records instead of refusing them (a record holds at least one byte).
    #[arg(long)]
    skip_empty: bool,
}

pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let device = open_device(socket)?;
    let capacity = device.stats()?.capacity;
    let largest = max_payload(capacity);
    let mut input: Box<dyn BufRead> = match &args.file {
        Some(path) if path.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| CliError::msg(format!("cannot open {}: {e}.", path.display())))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    let (separator, what) = if args.raw {
        (0u8, "record")
    } else {
        (b'\n', "line")
    };
    let mut written = 0u64;
    let mut record = Vec::new();
    for number in 1u64.. {
        // Read at most the largest record and its line end: a longer one is refused without
        // reading the rest of it into memory.
        record.clear();
        let limit = largest + 2;
        let read = input
            .by_ref()
            .take(limit)
            .read_until(separator, &mut record)?;
        if read == 0 {
            break;
        }
        let ended = record.last() == Some(&separator);
        if ended {
            record.pop();
        }
        if !args.raw && !args.keep_cr && ended && record.last() == Some(&b'\r') {
            record.pop();
        }
        if record.len() as u64 > largest || (!ended && read as u64 == limit) {
            return Err(CliError::msg(format!(
                "{what} {number} is longer than the largest record this ring holds: {largest} bytes (its capacity, {capacity} bytes, less an 8-byte header); {written} records written."
            )));
        }
        if record.is_empty() {
            if args.skip_empty {
                continue;
            }
            return Err(CliError::msg(format!(
                "{what} {number} is empty and a record holds at least one byte; pass --skip-empty to leave such {what}s out ({written} records written)."
            )));
        }
        match device.write(&record) {
            Ok(_) => written += 1,
            Err(Error::RingFull) => {
                return Err(CliError::msg(format!(
                    "the ring is full at {what} {number}: {written} records written; consume some (ringmap tail) and write the rest again."
                )));
            }
            Err(error) => {
                return Err(CliError::msg(format!(
                    "{what} {number} was refused: {}; {written} records written.",
                    CliError::from(error).to_string().trim_end_matches('.')
                )));
            }
        }
    }
    errln!("ringmap: {written} records written.");
    Ok(0)
}
