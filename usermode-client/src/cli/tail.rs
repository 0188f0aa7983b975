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

/// Prints records until the ring is empty (or, with `--follow`, until Ctrl-C), `-n` records
/// were printed, or standard output fails. Returns to the device exactly the space of the
/// records written to standard output, no more: the next consumer starts with the first one
/// not written. (A reader that exits early, such as `head`, may still leave unread records
/// that had reached its pipe.)
pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let interrupted = interrupt::install()?;
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
            // A short timeout lets Ctrl-C, a gone reader (`tail -f | head -2`) or a gone
            // device show up when idle.
            if super::stdout_closed() {
                break;
            }
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
            line.extend_from_slice(escape_text(payload, stdout_is_terminal()).as_bytes());
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
