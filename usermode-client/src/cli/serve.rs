//! `ringmap serve`: a usersim device in this process until Ctrl-C (Linux).

use std::path::Path;

use super::{CliResult, parse_capacity};

/// Options of `ringmap serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ring's data capacity: a power of two from 4K to 1G (K, M, G suffixes).
    #[arg(long, default_value = "1M", value_parser = parse_capacity, value_name = "BYTES")]
    capacity: u64,
}

#[cfg(target_os = "linux")]
pub fn run(socket: Option<&Path>, args: Args) -> CliResult {
    let socket_path = match socket {
        Some(path) => path.to_path_buf(),
        None => ringmap_client::default_socket_path(),
    };
    let server = start(&socket_path, args.capacity)?;
    eprintln!(
        "ringmap: serving a {}-byte ring on {}; Ctrl-C stops it.",
        args.capacity,
        server.socket_path().display()
    );
    // The server's threads do the work; this one only waits for Ctrl-C, whose default
    // action ends the process (clients see the device gone).
    loop {
        std::thread::park();
    }
}

#[cfg(not(target_os = "linux"))]
pub fn run(_socket: Option<&Path>, _args: Args) -> CliResult {
    Err(super::CliError::msg(
        "`ringmap serve` runs a usersim device, which needs Linux; on Windows install the driver (scripts/install.ps1).",
    ))
}

/// Starts a usersim device listening on `socket`.
#[cfg(target_os = "linux")]
pub fn start(socket: &Path, capacity: u64) -> Result<ringmap_usersim::Server, super::CliError> {
    let capacity = ringmap_core::Capacity::new(capacity).map_err(|_| {
        super::CliError::msg(format!(
            "--capacity {capacity} is not a ring size: use a power of two of at least a page (4096 bytes)."
        ))
    })?;
    ringmap_usersim::Server::start(ringmap_usersim::ServerConfig {
        socket_path: socket.to_path_buf(),
        capacity,
    })
    .map_err(|error| {
        super::CliError::msg(format!(
            "cannot start a usersim device on {}: {error}",
            socket.display()
        ))
    })
}
