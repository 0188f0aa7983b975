//! The `ringmap` command: argument parsing and the subcommands.

mod bench;
mod demo;
mod generate;
mod interrupt;
mod serve;
mod stat;
mod tail;
mod write;

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringmap_client::{Device, Error};

/// Run, watch and measure a ringmap ring buffer map.
///
/// On Linux the device is a usersim host (`ringmap serve`, or the one `ringmap demo` and
/// `ringmap bench` start themselves); on Windows it is the installed RingMap driver.
#[derive(Parser, Debug)]
#[command(name = "ringmap", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// The usersim device's socket (Linux). Default: the socket `ringmap serve` listens on.
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a device, run its generator and consume every record through the mapping; print
    /// a summary (records, rate, dropped, lost, duplicates, wake latency).
    Demo(demo::Args),
    /// Run a usersim device until Ctrl-C (Linux).
    Serve(serve::Args),
    /// Map the ring and print its records (hex, text or JSON lines).
    Tail(tail::Args),
    /// Print the device's offsets and counters (STATS), once or repeatedly.
    Stat(stat::Args),
    /// Write one record per line of standard input or a file (WRITE).
    Write(write::Args),
    /// Start or stop the device's built-in generator (GENERATE).
    Generate(generate::Args),
    /// Measure records per second and wake latency against in-process baselines.
    Bench(bench::Args),
}

/// Parses the command line, runs the subcommand, and turns errors into a sentence on
/// standard error and exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.as_deref();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(socket, args),
        Command::Tail(args) => tail::run(socket, args),
        Command::Stat(args) => stat::run(socket, args),
        Command::Write(args) => write::run(socket, args),
        Command::Generate(args) => generate::run(socket, args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("ringmap: {error}");
            ExitCode::from(1)
        }
    }
}

/// What a subcommand returns: the exit status, or an error to print.
pub type CliResult = Result<u8, CliError>;

/// An error the command prints as one sentence.
#[derive(Debug)]
pub enum CliError {
    /// From the device or the client library.
    Device(Error),
    /// Reading input or writing output.
    Io(std::io::Error),
    /// Anything else, already a sentence.
    Message(String),
}

impl CliError {
    pub fn msg(text: impl Into<String>) -> CliError {
        CliError::Message(text.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Device(error) => write!(f, "{error}"),
            CliError::Io(error) => write!(f, "input or output failed: {error}."),
            CliError::Message(text) => f.write_str(text),
        }
    }
}

impl From<Error> for CliError {
    fn from(error: Error) -> CliError {
        CliError::Device(error)
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> CliError {
        CliError::Io(error)
    }
}

/// Opens the device: the usersim socket given, or the default device.
pub fn open_device(socket: Option<&Path>) -> Result<Device, CliError> {
    #[cfg(unix)]
    if let Some(socket) = socket {
        return Ok(Device::open_at(socket)?);
    }
    #[cfg(not(unix))]
    if socket.is_some() {
        return Err(CliError::msg(
            "--socket names a usersim device, which runs on Linux; on Windows leave it out to open the installed driver.",
        ));
    }
    Ok(Device::open()?)
}

/// Parses a size: a number of bytes, optionally with a K, M or G suffix (powers of 1024;
/// `KiB`, `MiB`, `GiB` and `k`/`m`/`g` are accepted too).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(split);
    let number: u64 = digits
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write bytes, like 65536 or 1M"))?;
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(format!("`{text}` has an unknown unit: use K, M or G")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The host's monotonic clock in nanoseconds: the clock the generator stamps records with.
#[cfg(target_os = "linux")]
pub fn monotonic_ns() -> u64 {
    ringmap_usersim::server::now_ns()
}

/// The host's monotonic clock in nanoseconds (here: since the first call; latencies measured
/// against a driver's timestamps need the driver's clock, which is not wired up yet).
#[cfg(not(target_os = "linux"))]
pub fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// A progress bar on standard error, hidden when standard error is not a terminal.
pub fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), target);
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:40}}] {{human_pos}}/{{human_len}} {what} ({{per_sec}})"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// A unique temporary directory for a socket, removed on drop.
#[cfg(target_os = "linux")]
pub struct TempDir(PathBuf);

#[cfg(target_os = "linux")]
impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir, CliError> {
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = base.join(format!(
                "{prefix}-{}-{nanos:x}-{attempt}",
                std::process::id()
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(CliError::msg(format!(
                        "cannot create a temporary directory in {}: {e}.",
                        base.display()
                    )));
                }
            }
        }
        Err(CliError::msg(
            "cannot create a temporary directory: every name tried exists.",
        ))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

#[cfg(target_os = "linux")]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Percentile `p` (0..=100) of sorted samples, in microseconds; `None` without samples.
pub fn percentile_us(sorted_ns: &[u64], p: f64) -> Option<f64> {
    if sorted_ns.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted_ns.len() - 1) as f64).round() as usize;
    Some(sorted_ns[rank.min(sorted_ns.len() - 1)] as f64 / 1000.0)
}

/// A latency for the summary: `12.3 us`, or `n/a`.
pub fn format_us(value: Option<f64>) -> String {
    match value {
        Some(us) => format!("{us:.1} us"),
        None => "n/a".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn percentiles() {
        let samples = [1000, 2000, 3000, 4000, 5000];
        assert_eq!(percentile_us(&samples, 50.0), Some(3.0));
        assert_eq!(percentile_us(&samples, 100.0), Some(5.0));
        assert_eq!(percentile_us(&[], 50.0), None);
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
