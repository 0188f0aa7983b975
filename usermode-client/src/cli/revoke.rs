//! `ringmap revoke`: an administrator takes the ring's mapping away from whoever holds it.

use std::path::Path;

use super::{CliResult, open_device, outln};

/// Options of `ringmap revoke`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(socket: Option<&Path>, _args: Args) -> CliResult {
    let device = open_device(socket)?;
    let holder = device.stats()?.mapping_process;
    device.revoke()?;
    outln!("revoked the mapping of process {holder}; the next consumer may map the ring")?;
    Ok(0)
}
