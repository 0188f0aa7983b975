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
    /// The payload as text, one record per line: a newline in a record prints as `\n`, a
    /// CR as `\r` and a backslash as `\\`. On a terminal, every other control character
    /// prints as `\xNN` (or `\u{NNNN}`), and so do bytes that are not UTF-8; elsewhere
    /// they are replaced by U+FFFD. `--format json` and `hex` give the exact bytes.
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
            let mut line = escape_text(payload, stdout_is_terminal());
            line.push('\n');
            out.write_all(line.as_bytes())
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

/// Whether standard output is a terminal (asked once).
fn stdout_is_terminal() -> bool {
    static TERMINAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TERMINAL.get_or_init(|| std::io::IsTerminal::is_terminal(&std::io::stdout()))
}

/// A record as one line of `--format text` (see [`Format::Text`]): newlines, CRs and
/// backslashes escaped always, so that a record never splits into two lines; for a
/// `terminal`, every control character and every byte that is not UTF-8 too, so that no
/// record can drive the terminal (an escape sequence that hides the cursor, a title change).
fn escape_text(payload: &[u8], terminal: bool) -> String {
    let mut text = String::with_capacity(payload.len());
    for chunk in payload.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => text.push_str("\\n"),
                '\r' => text.push_str("\\r"),
                '\\' => text.push_str("\\\\"),
                c if terminal && c.is_control() => {
                    // `\xNN` for an ASCII byte (as for bytes that are not UTF-8), `\u{..}`
                    // for a C1 control character, which is two bytes in UTF-8.
                    if c.is_ascii() {
                        text.push_str(&format!("\\x{:02x}", u32::from(c)));
                    } else {
                        text.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
                    }
                }
                c => text.push(c),
            }
        }
        if terminal {
            for byte in chunk.invalid() {
                text.push_str(&format!("\\x{byte:02x}"));
            }
        } else if !chunk.invalid().is_empty() {
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    text
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

    #[test]
    fn text_never_splits_a_record_and_drives_no_terminal() {
        let hostile = b"a\nb\rc\\d\x1b[?25l\x07\xffe\xc2\x9b";
        assert_eq!(
            escape_text(hostile, true),
            "a\\nb\\rc\\\\d\\x1b[?25l\\x07\\xffe\\u{009b}"
        );
        let piped = escape_text(hostile, false);
        assert_eq!(piped, "a\\nb\\rc\\\\d\x1b[?25l\x07\u{fffd}e\u{9b}");
        assert_eq!(
            escape_text("plain text, ü".as_bytes(), true),
            "plain text, ü"
        );
        let mut out = Vec::new();
        print_record(&mut out, Format::Text, 0, b"two\nlines").unwrap();
        assert_eq!(out, b"two\\nlines\n");
    }
}
