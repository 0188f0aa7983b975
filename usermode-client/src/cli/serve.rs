//! `ringmap serve`: the driver's own code on the simulated kernel, serving a Unix socket, until
//! SIGINT or SIGTERM (Linux); then it is unloaded, and the exit status says whether it broke a
//! kernel rule or left anything behind.

use std::path::Path;

use super::{CliResult, parse_capacity};

/// Options of `ringmap serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ring's data capacity: a power of two from 4K to 1G (K, M, G suffixes).
    #[arg(long, default_value = "1M", value_parser = parse_capacity, value_name = "BYTES")]
    capacity: u64,
    /// Also serve the members of this group (a name or a number), besides you and root. The
    /// socket is then made group-accessible; it must lie in a directory the group can enter
    /// (give --socket: the default directory is yours alone).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// The most clients served at once (more are refused); also bounded by the descriptor
    /// limit.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    max_connections: usize,
    /// Close a client that has nothing mapped or pending and sends nothing for this many
    /// seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    idle_timeout: u64,
}

#[cfg(target_os = "linux")]
pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    use signal_hook::consts::{SIGINT, SIGTERM};

    let socket_path = match socket {
        Some(path) => path.to_path_buf(),
        None => ringmap_client::default_socket_path(),
    };
    let group = match &args.group {
        None => None,
        Some(name) => Some(
            ringmap_usersim::server::group_id(name)
                .map_err(|error| super::CliError::msg(format!("--group {name}: {error}.")))?,
        ),
    };
    if args.idle_timeout == 0 {
        return Err(super::CliError::msg(
            "--idle-timeout must be at least 1 second.",
        ));
    }
    // Before the server starts: a signal from now on is seen here, not the default action
    // (which would end the process and leave the socket behind).
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|error| {
        super::CliError::msg(format!("cannot handle SIGINT and SIGTERM: {error}."))
    })?;
    raise_descriptor_limit();
    // The simulated kernel's memory is this process's: other processes of the same user may
    // not read or write it, nor open its descriptors, through /proc or ptrace (root still
    // can, as an administrator can debug a Windows kernel).
    if let Err(error) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        return Err(super::CliError::msg(format!(
            "cannot make this process undumpable (prctl PR_SET_DUMPABLE): {error}."
        )));
    }
    let capacity = capacity(args.capacity)?;
    let mut config = ringmap_usersim::ServerConfig::new(socket_path.clone());
    config.capacity = capacity;
    config.group = group;
    config.max_connections = args.max_connections.max(1);
    config.idle_timeout = std::time::Duration::from_secs(args.idle_timeout);
    let server = start_with(config)?;
    eprintln!(
        "ringmap: serving a {}-byte ring on {}; Ctrl-C stops it.",
        args.capacity,
        server.socket_path().display()
    );
    let signal = signals.forever().next();
    // Closes every connection, unloads the driver and removes the socket.
    let report = server.stop();
    if let Some(signal) = signal {
        eprintln!(
            "ringmap: {} received: stopped, {} removed.",
            if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            },
            socket_path.display()
        );
    }
    if !report.is_clean() {
        eprintln!("ringmap: {report}");
        return Ok(super::EXIT_KERNEL_RULES);
    }
    eprintln!("ringmap: {report}.");
    Ok(0)
}

/// Raises the soft descriptor limit to the hard one (each client costs a descriptor).
#[cfg(target_os = "linux")]
fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

#[cfg(not(target_os = "linux"))]
pub fn run(_socket: Option<&Path>, _args: Args) -> CliResult {
    Err(super::CliError::msg(
        "`ringmap serve` runs a usersim device, which needs Linux; on Windows install the driver (scripts/install.ps1).",
    ))
}

#[cfg(target_os = "linux")]
fn capacity(capacity: u64) -> Result<ringmap_core::Capacity, super::CliError> {
    ringmap_core::Capacity::new(capacity).map_err(|_| {
        super::CliError::msg(format!(
            "--capacity {capacity} is not a ring size: use a power of two of at least a page (4096 bytes)."
        ))
    })
}

/// Starts a usersim device listening on `socket`.
#[cfg(target_os = "linux")]
pub fn start(socket: &Path, capacity: u64) -> Result<ringmap_usersim::Server, super::CliError> {
    let mut config = ringmap_usersim::ServerConfig::new(socket.to_path_buf());
    config.capacity = self::capacity(capacity)?;
    start_with(config)
}

/// Starts a usersim device as `config` says.
#[cfg(target_os = "linux")]
fn start_with(
    config: ringmap_usersim::ServerConfig,
) -> Result<ringmap_usersim::Server, super::CliError> {
    let socket = config.socket_path.clone();
    ringmap_usersim::Server::start(config).map_err(|error| {
        super::CliError::msg(format!(
            "cannot start a usersim device on {}: {error}",
            socket.display()
        ))
    })
}
