//! The `ringmap` command: argument parsing and the subcommands.

mod bench;
mod demo;
mod generate;
mod interrupt;
mod revoke;
mod serve;
mod stat;
mod tail;
mod write;

use std::fmt;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringmap_client::{Device, Error, Status};

/// Run, watch and measure a ringmap ring buffer map.
///
/// On Linux the device is a usersim host (`ringmap serve`, or the one `ringmap demo` and
/// `ringmap bench` start themselves); on Windows it is the installed RingMap driver.
#[derive(Parser, Debug)]
// `about` and `long_about` come from the doc comment above (not the package's description,
// which is the library's).
#[command(
    name = "ringmap",
    version,
    propagate_version = true,
    after_help = EXIT_STATUS_HELP,
    after_long_help = EXIT_STATUS_HELP
)]
pub struct Cli {
    /// The usersim device's socket (Linux). Default: $RINGMAP_SOCKET, else
    /// $XDG_RUNTIME_DIR/ringmap.sock, else ringmap-$UID/ringmap.sock in $TMPDIR or /tmp
    /// (where `ringmap serve` listens). `demo` and `bench` start their own device and make it listen at PATH.
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
    ///
    /// Offsets count bytes since the ring was created (records with their 8-byte headers and
    /// padding to 8 bytes); they only grow, and an offset modulo the capacity is a place in
    /// the ring. Counters count since the device started.
    ///
    ///   mapped                yes while a consumer holds the ring's mapping (MAP).
    ///   mapping process       the id of the process whose handle holds the mapping (none
    ///                         while nothing is mapped).
    ///   capacity              the ring's data size in bytes.
    ///   producer offset       where committed-or-locked records end: every record below it
    ///                         is published to the consumer (it may still be LOCKED, being
    ///                         written, or DISCARDED).
    ///   reserve offset        where the next reservation starts: producer offset plus the
    ///                         records that producers have reserved and not yet published.
    ///   consumer offset       the validated consumer offset: how far the device trusts that
    ///                         the consumer has returned space. It moves only over committed
    ///                         records, and producers check free space against it, never
    ///                         against the consumer page.
    ///   consumer page offset  what the consumer's page says (written by the consumer, so
    ///                         untrusted); the device walks the consumer offset toward it.
    ///   used                  producer offset less consumer offset: bytes published and not
    ///                         yet returned.
    ///   produced              records submitted (WRITE and the generator).
    ///   consumed              submitted records whose space consumers returned (read and
    ///                         done with): what the consumer offset has passed, discarded
    ///                         records not counted.
    ///   discarded             records reserved and then discarded (the consumer skips them).
    ///   dropped               reservations refused because the ring was full. The generator
    ///                         retries a refused record, so these are not lost records; a
    ///                         WRITE whose reservation is refused fails with "no space".
    ///   queries               QUERY requests (a consumer waiting for its next record).
    ///   wakeups               QUERY requests that waited and were completed by a producer's
    ///                         commit (not answered at once).
    ///   generator producers   generator threads still producing (0 when it is stopped or its
    ///                         counted run has ended).
    ///   redelivered           records published but not returned when a mapping ended
    ///                         (UNMAP, close, the process died): the next consumer receives
    ///                         them, again if the one that ended had read them.
    ///
    /// With --watch each sample starts with its time (UTC) and, from the second sample on,
    /// the rates since the previous one: records/s (produced) and bytes/s (producer offset).
    /// --json prints the same fields, snake_case, one object per line (with --watch also
    /// `time`, `records_per_sec` and `bytes_per_sec`, null on the first sample).
    #[command(verbatim_doc_comment)]
    Stat(stat::Args),
    /// Write one record per line of standard input or a file (WRITE).
    ///
    /// Each line is one record, sent byte for byte (no UTF-8 check): a line ends at each
    /// 0x0a byte (LF) and at the end of the input, and the LF is not part of the record; a CR
    /// (0x0d) just before the LF is removed too, unless --keep-cr. No other byte is split on
    /// or removed. With --raw (-0) records end at NUL bytes (0x00) instead, and every other
    /// byte, CR and LF included, is kept. A record longer than the ring holds (its capacity
    /// less 8 bytes) is refused with its line number.
    Write(write::Args),
    /// Start or stop the device's built-in generator (GENERATE).
    Generate(generate::Args),
    /// Take the ring's mapping away from whichever process holds it (a stopped consumer
    /// blocks every other); only the device's owner (or root) may. The next MAP then works.
    Revoke(revoke::Args),
    /// Measure records per second and wake latency against in-process baselines.
    Bench(bench::Args),
    /// Print a shell completion script for ringmap to standard output.
    ///
    /// bash: `ringmap completions bash > ~/.local/share/bash-completion/completions/ringmap`;
    /// zsh: `ringmap completions zsh > ~/.zfunc/_ringmap` (with ~/.zfunc in $fpath); fish:
    /// `ringmap completions fish > ~/.config/fish/completions/ringmap.fish`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print ringmap's man page (roff) to standard output.
    ///
    /// `ringmap man > ~/.local/share/man/man1/ringmap.1`, then `man ringmap`; or read it at
    /// once with `ringmap man | man -l -`.
    Man,
}

/// The command line's definition, with the default socket of this environment named in
/// `--socket`'s long help.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let command = Cli::command();
    #[cfg(target_os = "linux")]
    let command = command.mut_arg("socket", |arg| {
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string());
        arg.long_help(format!(
            "{}.\nHere the default is {}.",
            help.unwrap_or_default().trim_end_matches('.'),
            ringmap_client::default_socket_path().display()
        ))
    });
    command
}

/// Exit status: success (and a closed standard output, as in `ringmap tail | head`).
pub const EXIT_OK: u8 = 0;
/// Exit status: the device refused, or an error (one sentence on standard error).
pub const EXIT_ERROR: u8 = 1;
/// Exit status: a usage error (an unknown option, a value out of range).
pub const EXIT_USAGE: u8 = 2;
/// Exit status of `ringmap demo`: records lost, duplicated, reordered or malformed.
pub const EXIT_RECORDS_WRONG: u8 = 3;
/// Exit status of `ringmap serve`: the driver broke a kernel rule or left something behind.
#[cfg(target_os = "linux")]
pub const EXIT_KERNEL_RULES: u8 = 70;
/// Exit status: interrupted by Ctrl-C (SIGINT) or SIGTERM (`ringmap demo`, after its partial
/// summary).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The exit statuses, as `ringmap help` shows them (the README's command section agrees).
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success; also when standard output is closed early (ringmap tail | head)
  1    the device refused a request, or another error (one sentence on standard error)
  2    usage error: an unknown option, or a value out of its range
  3    ringmap demo: records were lost, duplicated, reordered or malformed
  70   ringmap serve: the driver broke a kernel rule or left something behind (listed)
  130  ringmap demo interrupted by Ctrl-C or SIGTERM (after a partial summary)";

/// Parses the command line, runs the subcommand, and turns errors into a sentence on
/// standard error and the exit status they call for (see [`EXIT_STATUS_HELP`]).
pub fn main() -> ExitCode {
    use clap::FromArgMatches;
    // The child role of `ringmap bench`'s cross-process wake-up peer (never set by a user).
    #[cfg(target_os = "linux")]
    if let Ok(spec) = std::env::var(bench::WAKE_SENDER_ENV) {
        return ExitCode::from(bench::wake_sender(&spec));
    }
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let socket = cli.socket.as_deref();
    let result = match cli.command {
        Command::Demo(args) => demo::run(socket, args),
        Command::Serve(args) => serve::run(socket, args),
        Command::Tail(args) => tail::run(socket, args),
        Command::Stat(args) => stat::run(socket, args),
        Command::Write(args) => write::run(socket, args),
        Command::Generate(args) => generate::run(socket, args),
        Command::Revoke(args) => revoke::run(socket, args),
        Command::Bench(args) => bench::run(socket, args),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command_for_docs(), "ringmap", &mut out);
            write_stdout(&out)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command_for_docs())
                .render(&mut out)
                .map_err(CliError::Io)
                .and_then(|()| write_stdout(&out))
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // Whoever reads our output has gone (`| head`): nothing to say, and nothing failed.
        Err(CliError::Io(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_OK)
        }
        Err(error) => {
            // Ignored: with standard error closed there is nowhere left to say it.
            let _ = writeln!(std::io::stderr(), "ringmap: {error}");
            ExitCode::from(match error {
                CliError::Usage(_) => EXIT_USAGE,
                _ => EXIT_ERROR,
            })
        }
    }
}

impl Cli {
    /// The command line as completions and the man page describe it (no default socket of
    /// this machine in it).
    fn command_for_docs() -> clap::Command {
        <Cli as clap::CommandFactory>::command()
    }
}

/// Writes `bytes` to standard output at once (a closed one ends quietly, see `main`).
fn write_stdout(bytes: &[u8]) -> CliResult {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(CliError::Io)?;
    Ok(EXIT_OK)
}

/// `println!` that returns the error (for `?`) instead of panicking when standard output is
/// closed: `main` ends a broken pipe quietly with status 0.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::cli::CliError::Io)
    }};
}
pub(crate) use outln;

/// `eprintln!` that never panics (a closed standard error leaves nowhere to say it).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use errln;

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
    /// A usage error found after parsing (exit status 2), already a sentence.
    Usage(String),
}

impl CliError {
    pub fn msg(text: impl Into<String>) -> CliError {
        CliError::Message(text.into())
    }

    pub fn usage(text: impl Into<String>) -> CliError {
        CliError::Usage(text.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Device(Error::Status(status)) => {
                write!(f, "{}", status_sentence(*status))
            }
            CliError::Device(error) => write!(f, "{error}."),
            CliError::Io(error) => write!(f, "input or output failed: {error}."),
            CliError::Message(text) | CliError::Usage(text) => f.write_str(text),
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

/// A device's refusal in Linux words, the NTSTATUS name after it in parentheses.
pub fn status_sentence(status: Status) -> String {
    let what = match status {
        Status::InvalidParameter => {
            "the device refused the request: invalid argument (a size or value out of range)"
        }
        Status::DeviceBusy => {
            "the device is busy: another request of this kind is under way; try again"
        }
        Status::AccessDenied => {
            "permission denied: only the handle that holds the ring's mapping may query it (map it first)"
        }
        Status::InvalidDeviceRequest => {
            "the device does not support this request: operation not supported (client and device versions may differ)"
        }
        Status::BufferTooSmall => {
            "the device's reply did not fit: no buffer space (client and device versions may differ)"
        }
        Status::SharingViolation => {
            "the ring is mapped by another consumer already: stop the other consumer first"
        }
        Status::InsufficientResources => {
            "the device is out of space or memory: no space left on the device"
        }
        Status::Cancelled => "the request was cancelled: operation canceled",
        Status::InvalidDeviceState => {
            "the device is not in a state for this request: operation not permitted now"
        }
        Status::Success | Status::Pending => "the device answered with an unexpected status",
    };
    format!("{what} ({}).", status.name())
}

/// Whether standard output is a pipe (or socket) whose reader has gone, found without
/// writing: for a command that waits idle (`ringmap tail -f | head -2`), which would
/// otherwise notice only at its next record. `false` when unknown.
pub fn stdout_closed() -> bool {
    #[cfg(target_os = "linux")]
    return output_closed(std::io::stdout());
    #[cfg(not(target_os = "linux"))]
    false
}

/// Whether the write end `fd` of a pipe or socket reports its reader gone (POLLERR/POLLHUP).
#[cfg(target_os = "linux")]
fn output_closed(fd: impl std::os::fd::AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(&fd, PollFlags::empty())];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(1))
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

/// Opens the device: the usersim socket given, or the default device.
pub fn open_device(socket: Option<&Path>) -> Result<Device, CliError> {
    #[cfg(unix)]
    if let Some(socket) = socket {
        return Ok(Device::open_at(socket)?);
    }
    #[cfg(not(unix))]
    if socket.is_some() {
        return Err(CliError::usage(
            "--socket names a usersim device, which runs on Linux; on Windows leave it out to open the installed driver.",
        ));
    }
    Ok(Device::open()?)
}

/// Parses a size: a number of bytes, optionally with a K, M or G suffix (powers of 1024;
/// `KiB`, `MiB`, `GiB` and `k`/`m`/`g` are accepted too). A fraction is accepted when it is
/// a whole number of bytes (`1.5K` is 1536; `1.1K` is refused).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '_' && c != '.')
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(split);
    let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` is not a size: write bytes, optionally with a K, M or G suffix (powers of 1024), like 65536, 64K or 1M"
            ));
        }
    };
    let number = number.replace('_', "");
    let (whole, fraction) = number.split_once('.').unwrap_or((&number, ""));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(fraction.is_empty() || digits(fraction)) || number.ends_with('.') {
        return Err(format!(
            "`{text}` is not a size: write bytes, optionally with a K, M or G suffix (powers of 1024), like 65536, 64K or 1M"
        ));
    }
    let too_large = || {
        format!(
            "`{text}` is too large: a size is at most {} bytes",
            u64::MAX
        )
    };
    // whole * unit + fraction * unit / 10^digits, exactly, in 128 bits.
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole * u128::from(unit);
    if !fraction.is_empty() {
        if fraction.len() > 30 {
            return Err(format!("`{text}` is not a whole number of bytes"));
        }
        let scale = 10u128.pow(fraction.len() as u32);
        let part = fraction.parse::<u128>().map_err(|_| too_large())? * u128::from(unit);
        if part % scale != 0 {
            return Err(format!(
                "`{text}` is not a whole number of bytes: use a fraction of K, M or G that is, like 1.5K (1536), or write the bytes"
            ));
        }
        bytes += part / scale;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Parses a ring capacity: a size (see [`parse_size`]) that is a power of two from 4096
/// bytes (4K) to 1 GiB (1G).
pub fn parse_capacity(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    let (min, max) = (
        ringmap_core::layout::MIN_CAPACITY as u64,
        ringmap_core::layout::MAX_CAPACITY as u64,
    );
    if !(min..=max).contains(&bytes) || !bytes.is_power_of_two() {
        return Err(format!(
            "a ring's capacity is a power of two from {min} bytes (4K) to {max} bytes (1G), and `{text}` is {bytes} bytes"
        ));
    }
    Ok(bytes)
}

/// The largest payload a ring of `capacity` bytes holds: the ring less one record header.
pub fn max_payload(capacity: u64) -> u64 {
    capacity
        .saturating_sub(ringmap_core::record::HEADER_SIZE as u64)
        .min(u64::from(ringmap_core::record::MAX_PAYLOAD))
}

/// The host's monotonic clock in nanoseconds: the clock the generator stamps records with.
#[cfg(target_os = "linux")]
pub fn monotonic_ns() -> u64 {
    ringmap_usersim::protocol::now_ns()
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
        assert_eq!(parse_size("1_024"), Ok(1024));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size(".5K").is_err());
        assert!(parse_size("1.K").is_err());
        assert!(parse_size("1.2.3K").is_err());
        assert!(parse_size("99999999999999999999999G").is_err());
    }

    #[test]
    fn whole_fractions_of_a_unit_are_sizes_and_others_are_refused() {
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size("2.0"), Ok(2));
        let error = parse_size("1.1K").unwrap_err();
        assert!(error.contains("not a whole number of bytes"), "{error}");
        assert!(parse_size("0.5").is_err());
    }

    #[test]
    fn capacities_name_their_range() {
        assert_eq!(parse_capacity("4K"), Ok(4096));
        assert_eq!(parse_capacity("1G"), Ok(1 << 30));
        for refused in ["2G", "1.5M", "2048", "3M"] {
            let error = parse_capacity(refused).unwrap_err();
            assert!(
                error.contains("power of two from 4096 bytes (4K) to 1073741824 bytes (1G)"),
                "{refused}: {error}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pipe_whose_reader_is_gone_is_found_closed_without_writing() {
        let (reader, writer) = std::io::pipe().unwrap();
        assert!(!output_closed(&writer));
        drop(reader);
        assert!(output_closed(&writer));
    }

    #[test]
    fn device_statuses_read_as_sentences() {
        let text = status_sentence(Status::InvalidParameter);
        assert!(text.contains("invalid argument"), "{text}");
        assert!(text.ends_with("(STATUS_INVALID_PARAMETER)."), "{text}");
        assert!(!text.contains("0xC0"), "{text}");
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
