//! `ringmap tail`: map the ring and print its records.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use ringmap_core::record::HEADER_SIZE;

use super::{CliResult, open_device};

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

pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let device = open_device(socket)?;
    let mut mapping = device.map()?;
    let capacity = mapping.capacity();
    let data = mapping.data_ptr() as usize;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    'outer: while printed < limit {
        let consumer = mapping.consumer();
        let batch = consumer.batch_up_to((limit - printed).min(usize::MAX as u64) as usize);
        if batch.is_empty() {
            drop(batch);
            let position = consumer.position();
            if !args.follow {
                break;
            }
            out.flush()?;
            // A timeout lets a broken pipe or a gone device show up even when idle.
            device.wait(position, Some(Duration::from_secs(1)))?;
            continue;
        }
        let start = batch.start();
        let start_index = start % capacity;
        for payload in batch.iter() {
            // The payload lies in the data view (mapped twice): its header is just before it.
            let index = (payload.as_ptr() as usize - data - HEADER_SIZE) as u64;
            let offset = start + (index + capacity - start_index) % capacity;
            if let Err(error) = print_record(&mut out, args.format, offset, payload) {
                if error.kind() == std::io::ErrorKind::BrokenPipe {
                    break 'outer;
                }
                return Err(error.into());
            }
            printed += 1;
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    // Hand the space back to the device, so the next consumer starts after these records.
    let position = mapping.consumer().position();
    let _ = device.wait(position, Some(Duration::from_millis(1)));
    Ok(0)
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

fn print_record(
    out: &mut impl Write,
    format: Format,
    offset: u64,
    payload: &[u8],
) -> std::io::Result<()> {
    match format {
        Format::Hex => writeln!(out, "{offset} {} {}", payload.len(), hex(payload)),
        Format::Text => {
            out.write_all(String::from_utf8_lossy(payload).as_bytes())?;
            out.write_all(b"\n")
        }
        Format::Json => {
            let record = JsonRecord {
                offset,
                len: payload.len(),
                text: std::str::from_utf8(payload).ok(),
                hex: hex(payload),
            };
            serde_json::to_writer(&mut *out, &record)?;
            out.write_all(b"\n")
        }
    }
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
