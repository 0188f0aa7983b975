//! `ringmap tail`: map the ring and print its records.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use super::{CliResult, interrupt, open_device};

/// How `ringmap tail` prints a record.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `offset len` then the payload in hex.
    Hex,
    /// The payload as text (invalid UTF-8 replaced), one record per line.
    Text,
    /// One JSON object per line: offset, len, and the payload as `text` (when it is UTF-8)
    /// and as `hex`.
    Json,
}

/// Options of `ringmap tail`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How to print each record.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Keep waiting for new records (until Ctrl-C) instead of exiting when the ring is empty.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
}

/// Prints records until the ring is empty (or, with `--follow`, until Ctrl-C), `-n` records
/// were printed, or standard output fails. Returns to the device exactly the space of the
/// records written to standard output, no more: the next consumer starts with the first one
/// not written. (A reader that exits early, such as `head`, may still leave unread records
/// that had reached its pipe.)
pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let interrupted = interrupt::install();
    let device = open_device(socket)?;
    let mut mapping = device.map()?;
    // Unbuffered beyond a line: a record counts as printed once `write` took all of it.
    let mut out = std::io::stdout().lock();
    let mut printed = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    let mut failed = None;
    while printed < limit && failed.is_none() && !interrupted.is_set() {
        let max = (limit - printed).min(usize::MAX as u64) as usize;
        let handled = mapping.consumer().consume_while(max, |record| {
            if interrupted.is_set() {
                return ControlFlow::Break(());
            }
            match print_record(&mut out, args.format, record.offset(), &record) {
                Ok(()) => ControlFlow::Continue(()),
                Err(error) => {
                    failed = Some(error);
                    ControlFlow::Break(())
                }
            }
        });
        printed += handled as u64;
        if handled == 0 && failed.is_none() && !interrupted.is_set() {
            if !args.follow {
                break;
            }
            // A short timeout lets Ctrl-C, a broken pipe or a gone device show up when idle.
            mapping.wait(Some(Duration::from_millis(200)))?;
        }
    }
    // Dropping the mapping returns the space of the records printed (UNMAP), and only theirs.
    drop(mapping);
    match failed {
        Some(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(0),
    }
}

/// A record as `ringmap tail --format json` prints it.
#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    offset: u64,
    len: usize,
    /// The payload, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    hex: String,
}

fn hex(payload: &[u8]) -> String {
    let mut text = String::with_capacity(payload.len() * 2);
    for byte in payload {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Writes one record as one line, with one `write_all`: it is either all written or failed.
fn print_record(
    out: &mut impl Write,
    format: Format,
    offset: u64,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(payload.len() * 2 + 32);
    match format {
        Format::Hex => writeln!(line, "{offset} {} {}", payload.len(), hex(payload))?,
        Format::Text => {
            line.extend_from_slice(String::from_utf8_lossy(payload).as_bytes());
            line.push(b'\n');
        }
        Format::Json => {
            let record = JsonRecord {
                offset,
                len: payload.len(),
                text: std::str::from_utf8(payload).ok(),
                hex: hex(payload),
            };
            serde_json::to_writer(&mut line, &record)?;
            line.push(b'\n');
        }
    }
    out.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_print_in_each_format() {
        let mut out = Vec::new();
        print_record(&mut out, Format::Hex, 16, b"hi").unwrap();
        print_record(&mut out, Format::Text, 16, b"hi").unwrap();
        print_record(&mut out, Format::Json, 16, b"hi").unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "16 2 6869");
        assert_eq!(lines[1], "hi");
        let json: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(json["offset"], 16);
        assert_eq!(json["len"], 2);
        assert_eq!(json["text"], "hi");
        assert_eq!(json["hex"], "6869");
    }
}
